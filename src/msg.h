/* msg: the msg protocol's wire format (PROTOCOL.md): header encode/decode, the
 * splitter's header checks, error payloads and names. No I/O, no allocation. */
#ifndef MSGD_MSG_H
#define MSGD_MSG_H

#include <stddef.h>
#include <stdint.h>

#define MSG_MAGIC 0x4D534750u          /* "MSGP" */
#define MSG_VERSION 1u
#define MSG_HEADER_LEN 16u
#define MSG_FLAG_REPLY 0x80000000u
#define MSG_FLAG_ERROR 0x40000000u
#define MSG_FLAG_COMPRESSED 0x20000000u
#define MSG_CMD_MASK 0x1FFFFFFFu  /* bits 0..28: the command number */
#define MSG_CONN_ERROR (MSG_FLAG_REPLY | MSG_FLAG_ERROR) /* command 0: the connection */

enum msg_command {
    MSG_CMD_PING = 1,
    MSG_CMD_ECHO = 2,
    MSG_CMD_AUTH = 3,
    MSG_CMD_STATS = 4,
    MSG_CMD_DELAY = 5,
    MSG_CMD_HELLO = 6,
    MSG_CMD_SUBSCRIBE = 16,
    MSG_CMD_UNSUBSCRIBE = 17,
    MSG_CMD_PUBLISH = 18,
    MSG_CMD_MESSAGE = 19,
    MSG_CMD_GOAWAY = 20,
    MSG_CMD_DIRECT = 21,
    MSG_CMD_DELIVER = 22,
};

enum msg_error {
    MSG_ERR_UNKNOWN_COMMAND = 1,
    MSG_ERR_BAD_PAYLOAD = 2,
    MSG_ERR_NOT_AUTHENTICATED = 3,
    MSG_ERR_TOO_LARGE = 4,
    MSG_ERR_BAD_MAGIC = 5,
    MSG_ERR_BAD_VERSION = 6,
    MSG_ERR_OVERLOADED = 7,
    MSG_ERR_SHUTTING_DOWN = 8,
    MSG_ERR_DISABLED = 9,
    MSG_ERR_IDLE_TIMEOUT = 10,
    MSG_ERR_AUTH_FAILED = 11,
    MSG_ERR_LIMIT_EXCEEDED = 12,
    MSG_ERR_MAX = 12,
};

struct msg_header {
    uint32_t magic;
    uint32_t version;
    uint32_t command;
    uint32_t length;
};

static inline uint32_t msg_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void msg_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Writes a version-1 header for (command, length) into out[16]. */
void msg_header_encode(uint8_t out[MSG_HEADER_LEN], uint32_t command, uint32_t length);

/* Reads a header from in[16] without checking it. */
void msg_header_decode(const uint8_t in[MSG_HEADER_LEN], struct msg_header *h);

/* The splitter. Looks at the n bytes at p, the start of a frame:
 *   > 0  a whole frame of that many bytes (16 + length) is there; *h is filled;
 *   0    more bytes are needed (nothing wrong so far);
 *   < 0  a violation, as -MSG_ERR_BAD_MAGIC, -MSG_ERR_BAD_VERSION or
 *        -MSG_ERR_TOO_LARGE (length > max_frame).
 * The magic and the version are refused at their first wrong byte, so
 * garbage is refused early; a too-large payload is refused from its header
 * alone.
 * The result never exceeds n. */
long msg_split(const uint8_t *p, size_t n, uint32_t max_frame, struct msg_header *h);

/* Writes an error payload (u32 code, then text) into out (cap bytes), text
 * cut to fit. Returns its length. */
size_t msg_error_payload(uint8_t *out, size_t cap, uint32_t code, const char *text);

/* Writes a whole error frame (header with command word word, then u32 code
 * and text) into out (cap >= MSG_HEADER_LEN + 4), text cut to fit.
 * Returns the frame's length. */
size_t msg_encode_error(uint8_t *out, size_t cap, uint32_t word, uint32_t code, const char *text);

/* The name of an error code ("UNKNOWN_COMMAND"), or "UNKNOWN" for others. */
const char *msg_error_name(uint32_t code);

/* The name of a command number ("PING"), or NULL when it has none. */
const char *msg_command_name(uint32_t command);

#endif
