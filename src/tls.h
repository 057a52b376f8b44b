/* tls: an OpenSSL transport beneath a connection. A server context built from
 * [tls] (certificate, key, optional client CA, lowest version, ALPN msgp/1,
 * session resumption), and per connection a non-blocking handshake, reads
 * into iovecs and writes, each reporting what it waits for so the reactor can
 * map it onto its ev_io events. A context is refcounted: the main thread
 * builds a new one on reload, and each connection holds its own reference. */
#ifndef MSGD_TLS_H
#define MSGD_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "config.h"

struct ssl_ctx_st;  /* OpenSSL's SSL_CTX */
struct tls_conn;
struct ev_loop;

#define TLS_ALPN "msgp/1"

/* The longest a handshake may take, in seconds, whatever idle_timeout says
 * (a shorter idle_timeout bounds it sooner: CONFIG.md). */
#define TLS_HANDSHAKE_S 10.0

/* What a failed handshake was (for the counters). */
enum tls_fail {
    TLS_FAIL_PROTOCOL = 1,  /* not TLS (plaintext), a version below min_version, a bad message */
    TLS_FAIL_CERT,          /* the client certificate was missing or not signed by [tls] ca */
    TLS_FAIL_ABORTED,       /* the peer closed or reset the connection halfway */
};

/* tls_conn_want()'s bits: the socket events the last call waits for. */
enum { TLS_WANT_READ = 1, TLS_WANT_WRITE = 2 };

/* Builds a server context from cfg's [tls] keys, paths relative to the
 * folder of the configuration file at cfgpath. Returns it (one reference),
 * or NULL with "PATH: [tls] KEY FILE: why" in err. Main thread (it reads
 * files). MSGD_TLS_KTLS=1 in the environment asks OpenSSL for kernel TLS. */
struct ssl_ctx_st *tls_ctx_new(const struct config *cfg, const char *cfgpath, char *err,
                               size_t errlen);

/* Takes another reference to ctx and returns it. Any thread. */
struct ssl_ctx_st *tls_ctx_ref(struct ssl_ctx_st *ctx);

/* Drops a reference (NULL is fine). Any thread. */
void tls_ctx_unref(struct ssl_ctx_st *ctx);

/* The server side of a connection on fd, its handshake not yet started.
 * Returns NULL when out of memory. The thread that owns fd. */
struct tls_conn *tls_conn_new(struct ssl_ctx_st *ctx, int fd);

/* Puts t's handshake under a deadline on loop (its reactor's): expired(arg)
 * is called when the handshake is not done TLS_HANDSHAKE_S after this call
 * (it must free t). Without this call the handshake has no deadline. */
void tls_conn_watch(struct tls_conn *t, struct ev_loop *loop, void (*expired)(void *arg),
                    void *arg);

/* Frees t (the fd stays open). */
void tls_conn_free(struct tls_conn *t);

/* Advances the handshake. Returns 1 when it is done, 0 when it waits
 * (tls_conn_want says for what), or -enum tls_fail. A failure has sent the
 * peer a fatal alert where there is one to send (TLS_FAIL_PROTOCOL always:
 * protocol_version for input that is not TLS at all), so close gracefully
 * (write side first) for the peer to read it. */
int tls_conn_handshake(struct tls_conn *t);

/* Whether the handshake is done. */
bool tls_conn_ready(const struct tls_conn *t);

/* Whether the session was resumed (after the handshake). */
bool tls_conn_resumed(const struct tls_conn *t);

/* Reads plaintext into iov in order until they are full or no more has
 * arrived. Returns the bytes read (> 0), 0 at the peer's end of stream, or -1
 * with errno EAGAIN (nothing yet) or ECONNRESET (a broken stream). */
ssize_t tls_conn_readv(struct tls_conn *t, const struct iovec *iov, int iovcnt);

/* Whether decrypted or buffered input is left that the socket will not
 * announce: the last read stopped because the buffers were full. */
bool tls_conn_pending(const struct tls_conn *t);

/* Writes up to n bytes. Returns how many were taken (> 0), or -1 with errno
 * EAGAIN (try again on tls_conn_want's events) or EPIPE. */
ssize_t tls_conn_send(struct tls_conn *t, const void *p, size_t n);

/* The events the handshake, or a read or write that could not go on, waits
 * for: TLS_WANT_* bits. */
int tls_conn_want(const struct tls_conn *t);

/* Sends close_notify (best effort, never blocks). */
void tls_conn_shutdown(struct tls_conn *t);

#endif
