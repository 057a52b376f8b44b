/* msgclient_tls: OpenSSL beneath a client connection: the context, a
 * handshake bounded by a deadline, and non-blocking send and recv. */
#include "msgclient_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

static const char *reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(buf, len, "%s", r ? r : "unknown OpenSSL error");
    ERR_clear_error();
    return buf;
}

struct ssl_ctx_st *msgclient_tls_ctx_new(const char *cafile, const char *certfile,
                                         const char *keyfile, char *err, size_t errlen)
{
    char why[200];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(err, errlen, "TLS: %s", reason(why, sizeof why));
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    static const unsigned char alpn[] = "\x06msgp/1";
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1);
    if ((cafile ? SSL_CTX_load_verify_locations(ctx, cafile, NULL)
                : SSL_CTX_set_default_verify_paths(ctx)) != 1) {
        snprintf(err, errlen, "--cacert %s: %s", cafile ? cafile : "(system)",
                 reason(why, sizeof why));
        goto fail;
    }
    if ((certfile != NULL) != (keyfile != NULL)) {
        snprintf(err, errlen, "--cert and --key go together");
        goto fail;
    }
    if (certfile && SSL_CTX_use_certificate_chain_file(ctx, certfile) != 1) {
        snprintf(err, errlen, "--cert %s: %s", certfile, reason(why, sizeof why));
        goto fail;
    }
    if (keyfile && (SSL_CTX_use_PrivateKey_file(ctx, keyfile, SSL_FILETYPE_PEM) != 1 ||
                    SSL_CTX_check_private_key(ctx) != 1)) {
        snprintf(err, errlen, "--key %s: %s", keyfile, reason(why, sizeof why));
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

void msgclient_tls_ctx_free(struct ssl_ctx_st *ctx) { SSL_CTX_free(ctx); }

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct ssl_st *msgclient_tls_new(struct ssl_ctx_st *ctx, int fd, const char *host,
                                 void *session, char *err, size_t errlen)
{
    char why[200];
    ERR_clear_error();
    SSL *ssl = SSL_new(ctx);
    if (!ssl || SSL_set_fd(ssl, fd) != 1) {
        snprintf(err, errlen, "TLS: %s", reason(why, sizeof why));
        SSL_free(ssl);
        return NULL;
    }
    unsigned char ip[16];
    X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
    if (host && (inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1)) {
        X509_VERIFY_PARAM_set1_ip_asc(vp, host);
    } else if (host) {
        SSL_set_tlsext_host_name(ssl, host);
        X509_VERIFY_PARAM_set1_host(vp, host, 0);
    }
    if (session)
        SSL_set_session(ssl, session);
    SSL_set_connect_state(ssl);
    return ssl;
}

int msgclient_tls_step(struct ssl_st *ssl, short *events, char *err, size_t errlen)
{
    char why[200];
    ERR_clear_error();
    int rc = SSL_do_handshake(ssl);
    if (rc == 1)
        return 1;
    int e = SSL_get_error(ssl, rc);
    *events = e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
    if (*events)
        return 0;
    long vr = SSL_get_verify_result(ssl);
    if (vr != X509_V_OK)
        snprintf(err, errlen, "TLS handshake: %s", X509_verify_cert_error_string(vr));
    else if (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN)
        snprintf(err, errlen, "TLS handshake: the server closed the connection");
    else
        snprintf(err, errlen, "TLS handshake: %s", reason(why, sizeof why));
    ERR_clear_error();
    return -1;
}

struct ssl_st *msgclient_tls_handshake(struct ssl_ctx_st *ctx, int fd, const char *host,
                                       int64_t deadline_ms, void *session, char *err,
                                       size_t errlen)
{
    SSL *ssl = msgclient_tls_new(ctx, fd, host, session, err, errlen);
    if (!ssl)
        return NULL;
    for (;;) {
        short ev = 0;
        int rc = msgclient_tls_step(ssl, &ev, err, errlen);
        if (rc == 1)
            return ssl;
        if (rc < 0) {
            SSL_free(ssl);
            return NULL;
        }
        int64_t left = deadline_ms < 0 ? -1 : deadline_ms - mono_ms();
        if (deadline_ms >= 0 && left <= 0) {
            snprintf(err, errlen, "TLS handshake: timed out");
            SSL_free(ssl);
            return NULL;
        }
        struct pollfd pfd = {fd, ev, 0};
        if (poll(&pfd, 1, left < 0 ? -1 : (int)left) < 0 && errno != EINTR) {
            snprintf(err, errlen, "TLS handshake: poll: %s", strerror(errno));
            SSL_free(ssl);
            return NULL;
        }
    }
}

void *msgclient_tls_session(struct ssl_st *ssl) { return SSL_get1_session(ssl); }

void msgclient_tls_session_free(void *session) { SSL_SESSION_free(session); }

bool msgclient_tls_resumed(struct ssl_st *ssl) { return SSL_session_reused(ssl) == 1; }

ssize_t msgclient_tls_send(struct ssl_st *ssl, const void *p, size_t n)
{
    size_t w = 0;
    ERR_clear_error();
    if (SSL_write_ex(ssl, p, n, &w) == 1)
        return (ssize_t)w;
    int e = SSL_get_error(ssl, 0);
    ERR_clear_error();
    errno = e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? EAGAIN : EPIPE;
    return -1;
}

ssize_t msgclient_tls_recv(struct ssl_st *ssl, void *p, size_t n)
{
    size_t got = 0;
    ERR_clear_error();
    if (SSL_read_ex(ssl, p, n, &got) == 1)
        return (ssize_t)got;
    int e = SSL_get_error(ssl, 0);
    ERR_clear_error();
    if (e == SSL_ERROR_ZERO_RETURN)
        return 0;
    errno = e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? EAGAIN : ECONNRESET;
    return -1;
}

bool msgclient_tls_pending(struct ssl_st *ssl) { return SSL_pending(ssl) > 0; }

void msgclient_tls_free(struct ssl_st *ssl)
{
    if (!ssl)
        return;
    if (SSL_is_init_finished(ssl))
        SSL_shutdown(ssl); /* close_notify, best effort */
    ERR_clear_error();
    SSL_free(ssl);
}
