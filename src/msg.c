/* msg: the msg protocol's wire format: headers, the splitter's checks, error payloads. */
#include "msg.h"

#include <string.h>

void msg_header_encode(uint8_t out[MSG_HEADER_LEN], uint32_t command, uint32_t length)
{
    msg_put_u32(out, MSG_MAGIC);
    msg_put_u32(out + 4, MSG_VERSION);
    msg_put_u32(out + 8, command);
    msg_put_u32(out + 12, length);
}

void msg_header_decode(const uint8_t in[MSG_HEADER_LEN], struct msg_header *h)
{
    h->magic = msg_get_u32(in);
    h->version = msg_get_u32(in + 4);
    h->command = msg_get_u32(in + 8);
    h->length = msg_get_u32(in + 12);
}

/* Compares the first n (< 4) bytes of a big-endian field with want's. */
static int prefix_matches(const uint8_t *p, size_t n, uint32_t want)
{
    uint8_t w[4];
    msg_put_u32(w, want);
    return memcmp(p, w, n) == 0;
}

long msg_split(const uint8_t *p, size_t n, uint32_t max_frame, struct msg_header *h)
{
    if (n < 4)
        return prefix_matches(p, n, MSG_MAGIC) ? 0 : -MSG_ERR_BAD_MAGIC;
    if (msg_get_u32(p) != MSG_MAGIC)
        return -MSG_ERR_BAD_MAGIC;
    if (n < 8)
        return prefix_matches(p + 4, n - 4, MSG_VERSION) ? 0 : -MSG_ERR_BAD_VERSION;
    if (msg_get_u32(p + 4) != MSG_VERSION)
        return -MSG_ERR_BAD_VERSION;
    if (n < MSG_HEADER_LEN)
        return 0;
    msg_header_decode(p, h);
    if (h->length > max_frame)
        return -MSG_ERR_TOO_LARGE;
    size_t total = MSG_HEADER_LEN + (size_t)h->length;
    return n >= total ? (long)total : 0;
}

size_t msg_error_payload(uint8_t *out, size_t cap, uint32_t code, const char *text)
{
    if (cap < 4)
        return 0;
    msg_put_u32(out, code);
    size_t len = text ? strlen(text) : 0;
    if (len > cap - 4)
        len = cap - 4;
    if (len)
        memcpy(out + 4, text, len);
    return 4 + len;
}

size_t msg_encode_error(uint8_t *out, size_t cap, uint32_t word, uint32_t code, const char *text)
{
    size_t n = msg_error_payload(out + MSG_HEADER_LEN, cap - MSG_HEADER_LEN, code, text);
    msg_header_encode(out, word, (uint32_t)n);
    return MSG_HEADER_LEN + n;
}

static const char *const error_names[MSG_ERR_MAX + 1] = {
    [MSG_ERR_UNKNOWN_COMMAND] = "UNKNOWN_COMMAND",
    [MSG_ERR_BAD_PAYLOAD] = "BAD_PAYLOAD",
    [MSG_ERR_NOT_AUTHENTICATED] = "NOT_AUTHENTICATED",
    [MSG_ERR_TOO_LARGE] = "TOO_LARGE",
    [MSG_ERR_BAD_MAGIC] = "BAD_MAGIC",
    [MSG_ERR_BAD_VERSION] = "BAD_VERSION",
    [MSG_ERR_OVERLOADED] = "OVERLOADED",
    [MSG_ERR_SHUTTING_DOWN] = "SHUTTING_DOWN",
    [MSG_ERR_DISABLED] = "DISABLED",
    [MSG_ERR_IDLE_TIMEOUT] = "IDLE_TIMEOUT",
    [MSG_ERR_AUTH_FAILED] = "AUTH_FAILED",
    [MSG_ERR_LIMIT_EXCEEDED] = "LIMIT_EXCEEDED",
};

const char *msg_error_name(uint32_t code)
{
    return code >= 1 && code <= MSG_ERR_MAX ? error_names[code] : "UNKNOWN";
}

const char *msg_command_name(uint32_t command)
{
    switch (command) {
    case MSG_CMD_PING: return "PING";
    case MSG_CMD_ECHO: return "ECHO";
    case MSG_CMD_AUTH: return "AUTH";
    case MSG_CMD_STATS: return "STATS";
    case MSG_CMD_DELAY: return "DELAY";
    case MSG_CMD_HELLO: return "HELLO";
    case MSG_CMD_SUBSCRIBE: return "SUBSCRIBE";
    case MSG_CMD_UNSUBSCRIBE: return "UNSUBSCRIBE";
    case MSG_CMD_PUBLISH: return "PUBLISH";
    case MSG_CMD_MESSAGE: return "MESSAGE";
    case MSG_CMD_GOAWAY: return "GOAWAY";
    default: return NULL;
    }
}
