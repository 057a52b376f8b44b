/* proto_msg: the msg protocol (PROTOCOL.md) on a pipeline: its splitter,
 * its decoder and dispatch through the command table, and its encoders.
 * Reactor thread only. */
#ifndef MSGD_PROTO_MSG_H
#define MSGD_PROTO_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "pipeline.h"

extern const struct proto proto_msg;

/* The largest payload a client may send before it has authenticated. */
#define PROTO_MSG_PREAUTH_MAX (16u * 1024u)

/* Queues the reply to request command cmd: REPLY | cmd, then payload. */
void proto_msg_reply(struct pipeline *pl, uint32_t cmd, const void *payload, size_t len);

/* Queues an error reply to cmd: REPLY | ERROR | cmd, u32 code, text. */
void proto_msg_error(struct pipeline *pl, uint32_t cmd, uint32_t code, const char *text);

/* Queues the connection-level error (command 0xC0000000) and asks for the
 * connection to close once its output is flushed. */
void proto_msg_conn_error(struct pipeline *pl, uint32_t code, const char *text);

#endif
