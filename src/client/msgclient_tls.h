/* msgclient_tls: the client side of TLS for msgclient, msgcli and msgbench
 * (OpenSSL 3): a context that checks the server's certificate (against a CA
 * file, or the system's store) and offers ALPN msgp/1, a handshake bounded by
 * a deadline, and non-blocking reads and writes. One thread per session. */
#ifndef MSGCLIENT_TLS_H
#define MSGCLIENT_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct ssl_ctx_st;
struct ssl_st;

/* A client context: cafile (NULL: the system's CAs), and a client
 * certificate and key (both NULL: none). NULL with the reason in err. */
struct ssl_ctx_st *msgclient_tls_ctx_new(const char *cafile, const char *certfile,
                                         const char *keyfile, char *err, size_t errlen);
void msgclient_tls_ctx_free(struct ssl_ctx_st *ctx);

/* Runs the handshake on fd (connected, non-blocking) for host (its name or
 * address is what the certificate must match), waiting with poll(2) until
 * deadline_ms (CLOCK_MONOTONIC ms; < 0: none). session: one to resume, or
 * NULL. Returns the session, or NULL with the reason in err. */
struct ssl_st *msgclient_tls_handshake(struct ssl_ctx_st *ctx, int fd, const char *host,
                                       int64_t deadline_ms, void *session, char *err,
                                       size_t errlen);

/* The two halves of msgclient_tls_handshake, for a caller with an event
 * loop of its own (msgbench): msgclient_tls_new makes the session on fd for
 * host, as above (NULL with the reason in err); msgclient_tls_step advances
 * the handshake without blocking: 1 when it is done, 0 when it must wait
 * for *events (POLLIN or POLLOUT) on fd, -1 when it failed (the reason in
 * err: a certificate that does not verify says why). Free the session with
 * msgclient_tls_free either way. */
struct ssl_st *msgclient_tls_new(struct ssl_ctx_st *ctx, int fd, const char *host,
                                 void *session, char *err, size_t errlen);
int msgclient_tls_step(struct ssl_st *ssl, short *events, char *err, size_t errlen);

/* The session to resume next time (a reference; free it with
 * msgclient_tls_session_free), or NULL. */
void *msgclient_tls_session(struct ssl_st *ssl);
void msgclient_tls_session_free(void *session);
bool msgclient_tls_resumed(struct ssl_st *ssl);

/* Like send(2)/recv(2) on a non-blocking socket: bytes, 0 at the peer's
 * end (recv), or -1 with errno (EAGAIN when it must wait). */
ssize_t msgclient_tls_send(struct ssl_st *ssl, const void *p, size_t n);
ssize_t msgclient_tls_recv(struct ssl_st *ssl, void *p, size_t n);

/* Whether decrypted input waits that poll(2) will not announce. */
bool msgclient_tls_pending(struct ssl_st *ssl);

/* Frees the session (the fd stays open), after a close_notify when the
 * handshake had finished. */
void msgclient_tls_free(struct ssl_st *ssl);

#endif
