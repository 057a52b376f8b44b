/* tls: the OpenSSL server context of [tls] and the per-connection transport
 * (handshake, reads, writes, close_notify) with OpenSSL's WANT_READ and
 * WANT_WRITE kept for the reactor's ev_io events. */
#include "tls.h"

#include <errno.h>
#include <pthread.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>
#ifdef __GLIBC__
#endif
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "log.h"

#define TLS_SESSION_CACHE 20480       /* server-side sessions kept for resumption */
#define TLS_TICKET_ROTATE_S 3600     /* a new ticket key this often; tickets of the */
#define TLS_TICKET_KEYS 3             /* last 2 still resume (they live 2 h: OpenSSL's
                                       * default session timeout) */

struct tls_conn {
    SSL *ssl;
    bool ready;                       /* the handshake is done */
    bool more;                        /* the last read stopped with its buffers full */
    int want;                         /* TLS_WANT_* of the last call that could not go on */
    /* tls_conn_watch: the handshake's deadline. */
    struct ev_loop *loop;
    ev_timer timer;
    void (*expired)(void *arg);
    void *arg;
};

/* ---- the context ---- */

/* ALPN: msgp/1 when the client offers it; a client that offers only other
 * protocols still gets a connection, without ALPN. */
static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    static const unsigned char ours[] = "\x06" TLS_ALPN;
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, ours, sizeof ours - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* ---- session tickets ----
 *
 * The keys that encrypt session tickets belong to the process, not to a
 * context: a reload builds a new context, and tickets issued before it must
 * still resume. keys[0] encrypts new tickets; every TLS_TICKET_ROTATE_S a
 * fresh one takes its place and the older ones, still accepted, move down
 * (a ticket under an older key gets a new ticket). Made on first use. Any
 * reactor thread, under ticket_lock (once per handshake). */
struct ticket_key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
    bool set;
};

static pthread_mutex_t ticket_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ticket_key ticket_keys[TLS_TICKET_KEYS];
static double ticket_rotated;         /* CLOCK_MONOTONIC seconds of keys[0] */

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Copies the key to encrypt with (enc) or the one named name into *out,
 * rotating first when keys[0] is due. Returns 1 for keys[0], 2 for an
 * older key, 0 when there is none (or no randomness). */
static int ticket_key_get(int enc, const unsigned char *name, struct ticket_key *out)
{
    int rc = 0;
    pthread_mutex_lock(&ticket_lock);
    double now = mono_s();
    if (!ticket_keys[0].set || now - ticket_rotated >= TLS_TICKET_ROTATE_S) {
        struct ticket_key k = {.set = true};
        if (RAND_bytes(k.name, sizeof k.name) == 1 && RAND_bytes(k.aes, sizeof k.aes) == 1 &&
            RAND_priv_bytes(k.hmac, sizeof k.hmac) == 1) {
            OPENSSL_cleanse(&ticket_keys[TLS_TICKET_KEYS - 1], sizeof ticket_keys[0]);
            memmove(&ticket_keys[1], &ticket_keys[0], sizeof ticket_keys[0] * (TLS_TICKET_KEYS - 1));
            ticket_keys[0] = k;
            ticket_rotated = now;
        }
        OPENSSL_cleanse(&k, sizeof k);
    }
    for (int i = 0; i < TLS_TICKET_KEYS; i++) {
        if (!ticket_keys[i].set || (!enc && memcmp(name, ticket_keys[i].name, 16) != 0))
            continue;
        *out = ticket_keys[i];
        rc = i == 0 ? 1 : 2;
        break;
    }
    pthread_mutex_unlock(&ticket_lock);
    return rc;
}

/* SSL_CTX_set_tlsext_ticket_key_evp_cb's callback: AES-256-CBC and
 * HMAC-SHA256 under the process's keys, as OpenSSL's own default does, and
 * as it does, a resumed TLS 1.3 session gets a new ticket (2: renew; TLS 1.3
 * clients use a ticket once), a TLS 1.2 one only when its key is an older
 * one. */
static int ticket_cb(SSL *ssl, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
                     EVP_MAC_CTX *hctx, int enc)
{
    struct ticket_key k;
    int rc = ticket_key_get(enc, name, &k);
    if (rc == 0)
        return 0; /* encrypting: no ticket; decrypting: a full handshake */
    char sha256[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof k.hmac),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, sha256, 0),
        OSSL_PARAM_construct_end(),
    };
    int ok;
    if (enc) {
        memcpy(name, k.name, 16);
        ok = RAND_bytes(iv, 16) == 1 &&
             EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) == 1;
    } else {
        ok = EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) == 1;
    }
    ok = ok && EVP_MAC_CTX_set_params(hctx, params) == 1;
    OPENSSL_cleanse(&k, sizeof k);
    if (!enc && SSL_version(ssl) >= TLS1_3_VERSION)
        rc = 2;
    return ok ? rc : -1;
}

/* The session id context: sessions (and tickets) resume only in a context
 * that verifies clients the same way: "msgd" without [tls] ca, else a
 * SHA-256 of "msgd" and the CA file's bytes, so a reload that changes the CAs
 * does not let a session made under the old ones resume. Returns 0 or -1. */
static int set_sid_ctx(SSL_CTX *ctx, const char *ca)
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (!ca)
        return SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"msgd", 4) == 1 ? 0 : -1;
    FILE *f = fopen(ca, "re");
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    int ok = f && h && EVP_DigestInit_ex(h, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(h, "msgd", 4) == 1;
    char buf[4096];
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof buf, f)) > 0)
        ok = EVP_DigestUpdate(h, buf, n) == 1;
    ok = ok && !ferror(f) && EVP_DigestFinal_ex(h, md, &mdlen) == 1 &&
         SSL_CTX_set_session_id_context(ctx, md, mdlen) == 1;
    EVP_MD_CTX_free(h);
    if (f)
        fclose(f);
    return ok ? 0 : -1;
}

/* OpenSSL's reason for the last failure, and the queue emptied. */
static const char *ssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(buf, len, "%s", r ? r : "unknown OpenSSL error");
    ERR_clear_error();
    return buf;
}

/* Checks that file can be opened for reading, for a plain error before
 * OpenSSL's. Returns 0 or -1 with err set. */
static int readable(const char *cfgpath, const char *key, const char *file, char *err,
                    size_t errlen)
{
    FILE *f = fopen(file, "re");
    if (f) {
        fclose(f);
        return 0;
    }
    int e = errno;
    char eb[128], who[160] = "";
    if (e == EACCES && geteuid() != 0) {
        /* After the privilege drop a reload reads as [server] user. */
        struct passwd pw, *p = NULL;
        char pwbuf[1024];
        if (getpwuid_r(geteuid(), &pw, pwbuf, sizeof pwbuf, &p) == 0 && p)
            snprintf(who, sizeof who, " (msgd runs as user %s: let it or its group read the file)",
                     p->pw_name);
        else
            snprintf(who, sizeof who, " (msgd runs as uid %u: let it read the file)",
                     (unsigned)geteuid());
    }
    snprintf(err, errlen, "%s: [tls] %s %s: %s%s", cfgpath, key, file,
             strerror_r(e, eb, sizeof eb), who);
    return -1;
}

struct ssl_ctx_st *tls_ctx_new(const struct config *cfg, const char *cfgpath, char *err,
                               size_t errlen)
{
    char cert[512], key[512], ca[512], why[256];
    if (!cfg->tls_cert[0] || !cfg->tls_key[0]) {
        snprintf(err, errlen, "%s: [tls] cert and key are needed for tls_listen", cfgpath);
        return NULL;
    }
    if (config_resolve_path(cfgpath, cfg->tls_cert, cert, sizeof cert) < 0 ||
        config_resolve_path(cfgpath, cfg->tls_key, key, sizeof key) < 0 ||
        config_resolve_path(cfgpath, cfg->tls_ca[0] ? cfg->tls_ca : "", ca, sizeof ca) < 0) {
        snprintf(err, errlen, "%s: [tls] a path is too long", cfgpath);
        return NULL;
    }
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, errlen, "%s: [tls]: %s", cfgpath, ssl_reason(why, sizeof why));
        return NULL;
    }
    if (readable(cfgpath, "cert", cert, err, errlen) < 0)
        goto fail;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        snprintf(err, errlen, "%s: [tls] cert %s: %s", cfgpath, cert, ssl_reason(why, sizeof why));
        goto fail;
    }
    if (readable(cfgpath, "key", key, err, errlen) < 0)
        goto fail;
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        snprintf(err, errlen, "%s: [tls] key %s: %s", cfgpath, key, ssl_reason(why, sizeof why));
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "%s: [tls] key %s does not match cert %s: %s", cfgpath, key, cert,
                 ssl_reason(why, sizeof why));
        goto fail;
    }
    if (cfg->tls_ca[0]) {
        if (readable(cfgpath, "ca", ca, err, errlen) < 0)
            goto fail;
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);
        if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1 || !names) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            snprintf(err, errlen, "%s: [tls] ca %s: %s", cfgpath, ca, ssl_reason(why, sizeof why));
            goto fail;
        }
        SSL_CTX_set_client_CA_list(ctx, names); /* takes names over */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    SSL_CTX_set_min_proto_version(ctx, cfg->tls_min_version == 13 ? TLS1_3_VERSION
                                                                  : TLS1_2_VERSION);
    uint64_t opts = SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION |
                    SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION;
    const char *ktls = getenv("MSGD_TLS_KTLS");
    if (ktls && strcmp(ktls, "1") == 0)
        opts |= SSL_OP_ENABLE_KTLS;
    SSL_CTX_set_options(ctx, opts);
    /* Release buffers (as nginx does): an idle TLS connection holds no
     * record buffer. Keeping them while a connection talks and freeing them
     * once it is quiet was measured (docs/BENCHMARKS.md "TLS"): the same CPU
     * per request, about 4% more requests/s, 2.6 KB more RSS per idle
     * connection and a malloc_trim in the reactors; not kept. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                          SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_read_ahead(ctx, 1);
    /* Resumption: a session cache for TLS 1.2 ids (this context's: a reload
     * starts an empty one), tickets for 1.2 and 1.3 under the process's
     * keys (they survive reloads). */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, TLS_SESSION_CACHE);
    if (set_sid_ctx(ctx, cfg->tls_ca[0] ? ca : NULL) < 0 ||
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb) != 1) {
        snprintf(err, errlen, "%s: [tls] %s%s: %s", cfgpath, cfg->tls_ca[0] ? "ca " : "session tickets",
                 cfg->tls_ca[0] ? ca : "", ssl_reason(why, sizeof why));
        goto fail;
    }
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return NULL;
}

struct ssl_ctx_st *tls_ctx_ref(struct ssl_ctx_st *ctx)
{
    if (ctx)
        SSL_CTX_up_ref(ctx);
    return ctx;
}

void tls_ctx_unref(struct ssl_ctx_st *ctx)
{
    SSL_CTX_free(ctx);
}

/* ---- one connection ---- */

struct tls_conn *tls_conn_new(struct ssl_ctx_st *ctx, int fd)
{
    struct tls_conn *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->ssl = SSL_new(ctx);
    if (!t->ssl || SSL_set_fd(t->ssl, fd) != 1) {
        SSL_free(t->ssl);
        free(t);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_accept_state(t->ssl);
    t->want = TLS_WANT_READ;
    return t;
}

void tls_conn_free(struct tls_conn *t)
{
    if (!t)
        return;
    if (t->loop)
        ev_timer_stop(t->loop, &t->timer);
    SSL_free(t->ssl);
    free(t);
}

/* The handshake's deadline passed. */
static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct tls_conn *t = w->data;
    t->expired(t->arg); /* frees t */
}

void tls_conn_watch(struct tls_conn *t, struct ev_loop *loop, void (*expired)(void *arg),
                    void *arg)
{
    t->loop = loop;
    t->expired = expired;
    t->arg = arg;
    ev_init(&t->timer, timer_cb);
    t->timer.data = t;
    if (t->ready)
        return;
    ev_timer_set(&t->timer, TLS_HANDSHAKE_S, 0.);
    ev_timer_start(loop, &t->timer);
}

/* A fatal protocol_version alert, for a first record that is not TLS at
 * all (plaintext, HTTP): OpenSSL closes those without a word, while a TLS
 * client (of a wrong version, say) that gets an alert can say why, and a
 * plaintext client sees 7 bytes that are not its protocol, then the end. */
static void alert_not_tls(struct tls_conn *t)
{
    static const unsigned char alert[] = {0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46};
    if (BIO_number_written(SSL_get_wbio(t->ssl)) == 0) /* OpenSSL sent nothing */
        (void)!send(SSL_get_fd(t->ssl), alert, sizeof alert, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* Sorts a failed handshake, logging OpenSSL's reason at debug; a protocol
 * failure that OpenSSL did not answer gets its alert; the deadline stops. */
static int classify(struct tls_conn *t, int e)
{
    if (t->loop)
        ev_timer_stop(t->loop, &t->timer);
    unsigned long err = ERR_peek_last_error();
    int reason = ERR_GET_REASON(err);
    int kind = TLS_FAIL_PROTOCOL;
    if (e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL ||
        reason == SSL_R_UNEXPECTED_EOF_WHILE_READING)
        kind = TLS_FAIL_ABORTED;
    else if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED ||
             reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE ||
             reason == SSL_R_NO_CERTIFICATES_RETURNED)
        kind = TLS_FAIL_CERT;
    if (log_enabled(LOG_DEBUG)) {
        char why[256];
        long vr = SSL_get_verify_result(t->ssl);
        log_debug("tls handshake failed: %s%s%s", err ? ssl_reason(why, sizeof why)
                                                      : e == SSL_ERROR_SYSCALL ? "connection closed or reset"
                                                                               : "closed",
                  kind == TLS_FAIL_CERT && vr != X509_V_OK ? ": " : "",
                  kind == TLS_FAIL_CERT && vr != X509_V_OK ? X509_verify_cert_error_string(vr) : "");
    }
    ERR_clear_error();
    if (kind == TLS_FAIL_PROTOCOL)
        alert_not_tls(t);
    return -kind;
}

int tls_conn_handshake(struct tls_conn *t)
{
    ERR_clear_error();
    int rc = SSL_do_handshake(t->ssl);
    if (rc == 1) {
        t->ready = true;
        t->want = 0;
        if (t->loop)
            ev_timer_stop(t->loop, &t->timer); /* the deadline */
        return 1;
    }
    int e = SSL_get_error(t->ssl, rc);
    if (e == SSL_ERROR_WANT_READ) {
        t->want = TLS_WANT_READ;
        return 0;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        t->want = TLS_WANT_WRITE;
        return 0;
    }
    return classify(t, e);
}

bool tls_conn_ready(const struct tls_conn *t) { return t->ready; }

bool tls_conn_resumed(const struct tls_conn *t) { return SSL_session_reused(t->ssl) == 1; }

bool tls_conn_pending(const struct tls_conn *t) { return t->more; }

int tls_conn_want(const struct tls_conn *t) { return t->want; }

ssize_t tls_conn_readv(struct tls_conn *t, const struct iovec *iov, int iovcnt)
{
    size_t total = 0;
    t->more = false;
    t->want &= ~TLS_WANT_WRITE;
    for (int i = 0; i < iovcnt; i++) {
        size_t off = 0;
        while (off < iov[i].iov_len) {
            size_t got = 0;
            ERR_clear_error();
            if (SSL_read_ex(t->ssl, (char *)iov[i].iov_base + off, iov[i].iov_len - off, &got) == 1) {
                off += got;
                total += got;
                /* Nothing buffered: the socket announces what comes next,
                 * so spare the read that would only say EAGAIN. */
                if (!SSL_has_pending(t->ssl))
                    return (ssize_t)total;
                continue;
            }
            int e = SSL_get_error(t->ssl, 0);
            if (total > 0) {
                ERR_clear_error(); /* an end or an error shows again on the next read */
                if (e == SSL_ERROR_WANT_WRITE)
                    t->want = TLS_WANT_WRITE;
                return (ssize_t)total;
            }
            if (e == SSL_ERROR_ZERO_RETURN)
                return 0;
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                if (e == SSL_ERROR_WANT_WRITE) /* reading waits for EV_READ anyway */
                    t->want |= TLS_WANT_WRITE;
                errno = EAGAIN;
                return -1;
            }
            ERR_clear_error();
            errno = ECONNRESET;
            return -1;
        }
    }
    t->more = true;
    return (ssize_t)total;
}

ssize_t tls_conn_send(struct tls_conn *t, const void *p, size_t n)
{
    size_t w = 0;
    t->want &= ~TLS_WANT_READ;
    ERR_clear_error();
    if (SSL_write_ex(t->ssl, p, n, &w) == 1)
        return (ssize_t)w;
    int e = SSL_get_error(t->ssl, 0);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        if (e == SSL_ERROR_WANT_READ) /* writing waits for EV_WRITE anyway */
            t->want |= TLS_WANT_READ;
        errno = EAGAIN;
        return -1;
    }
    ERR_clear_error();
    errno = EPIPE;
    return -1;
}

void tls_conn_shutdown(struct tls_conn *t)
{
    if (!t->ready)
        return;
    ERR_clear_error();
    SSL_shutdown(t->ssl);
    ERR_clear_error();
}
