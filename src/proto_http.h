/* proto_http: HTTP/1.1 for monitoring (PROTOCOL.md "The other protocols"):
 * GET and HEAD of /metrics, /healthz and /readyz, keep-alive and pipelining,
 * no request bodies. Its connections serve through a drain (/readyz says
 * 503 then) and do not count in max_connections. Reactor thread only. */
#ifndef MSGD_PROTO_HTTP_H
#define MSGD_PROTO_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "pipeline.h"

/* The largest request head (request line, header lines and the blank line
 * that ends them); a longer one is answered 431 and the connection closed. */
#define PROTO_HTTP_HEAD_MAX 8192

/* split's error: no end of the head within PROTO_HTTP_HEAD_MAX bytes. */
#define PROTO_HTTP_ERR_HEAD_TOO_LARGE (-431L)

extern const struct proto proto_http;

/* The splitter: the length of the first whole request head at p (up to and
 * including the empty line that ends it; a lone empty line before a request
 * is a head of its own, which the handler ignores), 0 when more bytes are
 * needed, or PROTO_HTTP_ERR_HEAD_TOO_LARGE. Lines end in CRLF or LF. Looks
 * at no more than PROTO_HTTP_HEAD_MAX bytes. Any thread (pure). */
long proto_http_split(const uint8_t *p, size_t n);

#endif
