/* msgclient: one blocking msg-protocol connection driven by poll(2): connect,
 * HELLO and compression, AUTH, request queue and in-order replies, server
 * PING answers, MESSAGE, DELIVER and GOAWAY pushes, DIRECT, reconnect with
 * back-off. Owns its fd, buffers, queues and codec state. */
#include "client/msgclient.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "buffer.h"
#include "client/msgclient_tls.h"
#include "codec.h"
#include "msg.h"
#include "net.h"
#include "version.h"

#define READ_CHUNK 65536
#define EAGER_WRITE 262144      /* send() tries a non-blocking write past this much output */
#define DEFAULT_TIMEOUT_MS 5000
#define DEFAULT_MAX_FRAME (256u * 1024 * 1024)
#define DEFAULT_HEARTBEAT_MS 30000
#define DEFAULT_DEAD_AFTER_MS 90000
#define HEARTBEAT_PAYLOAD "hb"
#define DEFAULT_COMPRESS_MIN 1024 /* when a HELLO reply has no compress_min */
#define HELLO_REPLY_MAX 4096    /* HELLO reply bytes kept */

/* A queued reply, or the failure that stands in for one (result < 0). */
struct msgclient_rnode {
    struct msgclient_rnode *next;
    int result;                     /* 0, MSGCLIENT_ERROR_REPLY or -errno */
    struct msgclient_reply r;
};

/* A queued push (MESSAGE or DELIVER): buf holds the key (topic or sender)
 * and the data, each followed by a NUL. */
struct msgclient_pnode {
    struct msgclient_pnode *next;
    uint8_t *buf;
    size_t key_len;
    size_t data_len;
};

struct msgclient_pushq {
    struct msgclient_pnode *head, *tail;
    size_t n;
};

struct msgclient {
    struct msgclient_options o;     /* addr and token point at the copies below */
    char *addr;
    char *token;
    int fd;                         /* -1: not connected */
    struct ssl_ctx_st *tls_ctx;     /* o.tls: the context (NULL: it failed, see tls_err) */
    struct ssl_st *tls;             /* the connection's TLS session, or NULL */
    char tls_err[200];
    bool write_dead;                /* a write failed: output is discarded */
    bool goaway;
    uint32_t goaway_ms;
    char goaway_reason[MSGCLIENT_TEXT_MAX];
    bool conn_error;                /* the connection-level error arrived */
    int64_t last_rx_ms;             /* when the connection last received a byte */
    uint64_t conn_bytes_in;         /* received on this connection */
    bool hb_owed;                   /* our heartbeat PING awaits its reply */
    int hb_ms;                      /* the heartbeat in force on this connection */
    size_t hb_ahead;                /* replies owed to requests sent before it */
    struct buffer in;
    struct buffer out;
    size_t pending;                 /* requests queued or sent with no reply read yet */
    struct msgclient_rnode *rhead, *rtail;
    size_t nreplies;                /* nodes in the reply queue */
    struct msgclient_pushq messages;
    struct msgclient_pushq delivers;
    uint64_t rng;
    uint64_t pings;
    uint64_t dropped;
    uint64_t messages_dropped;
    uint64_t delivers_dropped;
    uint64_t reconnects;
    uint64_t heartbeats;
    uint64_t deaths;
    /* HELLO and compression: offer is o.compress parsed; codec and
     * compress_min are what the current connection's HELLO agreed. */
    char *compress;
    struct codec_list offer;
    enum codec_id codec;
    size_t compress_min;
    char *hello;                    /* the HELLO reply, NUL-terminated; NULL: none */
    struct codec_ctx *zctx;         /* made on first use */
    struct buffer zin;              /* a decompressed payload, while it is handled */
    uint64_t compressed_out;
    uint64_t compressed_in;
    char err[MSGCLIENT_TEXT_MAX + 128];
};

/* ---- small helpers ------------------------------------------------------ */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t deadline_after(int timeout_ms)
{
    return timeout_ms < 0 ? INT64_MAX : now_ms() + timeout_ms;
}

/* Milliseconds left until deadline as a poll(2) timeout (-1: none). */
static int poll_wait(int64_t deadline)
{
    if (deadline == INT64_MAX)
        return -1;
    int64_t left = deadline - now_ms();
    if (left <= 0)
        return 0;
    return left > INT_MAX ? INT_MAX : (int)left;
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static uint64_t mix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void set_err(struct msgclient *c, const char *what, int neg_errno)
{
    snprintf(c->err, sizeof c->err, "%s: %s", what, strerror(-neg_errno));
}

/* Puts prefix in front of the error text (cutting its end to fit). */
static void prefix_err(struct msgclient *c, const char *prefix)
{
    size_t pl = strlen(prefix), el = strlen(c->err);
    if (pl >= sizeof c->err)
        return;
    if (pl + el >= sizeof c->err)
        el = sizeof c->err - 1 - pl;
    memmove(c->err + pl, c->err, el);
    memcpy(c->err, prefix, pl);
    c->err[pl + el] = '\0';
}

unsigned msgclient_backoff_ms(unsigned attempt, unsigned initial_ms, unsigned max_ms,
                              uint64_t *rng)
{
    uint64_t cap = initial_ms ? initial_ms : 1;
    for (unsigned i = 0; i < attempt && cap < max_ms; i++)
        cap *= 2;
    if (cap > max_ms)
        cap = max_ms;
    uint64_t half = cap / 2;
    return (unsigned)(half + rng_next(rng) % (cap - half + 1));
}

int msgclient_decode_error(const uint8_t *p, size_t len, uint32_t *code, char *text,
                           size_t textlen)
{
    if (textlen)
        text[0] = '\0';
    if (len < 4) {
        *code = 0;
        return -EINVAL;
    }
    *code = msg_get_u32(p);
    if (!textlen)
        return 0;
    size_t n = len - 4;
    if (n > textlen - 1)
        n = textlen - 1;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = p[4 + i];
        text[i] = b < 0x20 || b == 0x7f ? '?' : (char)b;
    }
    text[n] = '\0';
    return 0;
}

int msgclient_split_hostport(const char *addr, char *host, size_t hostlen, char *port,
                             size_t portlen)
{
    const char *h = addr, *hend, *colon;
    if (addr[0] == '[') {
        hend = strchr(addr, ']');
        if (!hend || hend[1] != ':')
            return -EINVAL;
        h = addr + 1;
        colon = hend + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon)
            return -EINVAL;
        hend = colon;
    }
    size_t hl = (size_t)(hend - h);
    const char *ps = colon + 1;
    size_t pl = strlen(ps);
    if (hl == 0 || hl >= hostlen || pl == 0 || pl >= portlen || pl > 5)
        return -EINVAL;
    unsigned long v = 0;
    for (size_t i = 0; i < pl; i++) {
        if (ps[i] < '0' || ps[i] > '9')
            return -EINVAL;
        v = v * 10 + (unsigned long)(ps[i] - '0');
    }
    if (v < 1 || v > 65535)
        return -EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    memcpy(port, ps, pl + 1);
    return 0;
}

_Static_assert(MSGCLIENT_UNIX_PATH_MAX + 1 == sizeof ((struct sockaddr_un *)NULL)->sun_path,
               "MSGCLIENT_UNIX_PATH_MAX is sun_path less its NUL");

int msgclient_resolve(const char *text, struct msgclient_addr *out, int max, char *err,
                      size_t errlen)
{
    if (!text || !*text || max < 1) {
        snprintf(err, errlen, "no address to connect to");
        return -EINVAL;
    }
    char host[256], port[8];
    struct in_addr legacy;
    bool is_unix = strncmp(text, "unix:", 5) == 0;
    bool split = !is_unix && msgclient_split_hostport(text, host, sizeof host, port,
                                                      sizeof port) == 0;
    /* The daemon's own grammar first: what it binds, the client reaches. */
    if ((is_unix || split) && net_parse_addr(text, &out[0].ss, &out[0].len) == 0)
        return 1;
    if (is_unix) {
        snprintf(err, errlen, "bad unix socket path in %s (want unix:/path of at most %d bytes)",
                 text, MSGCLIENT_UNIX_PATH_MAX);
        return -EINVAL;
    }
    /* Past the grammar only DNS names: not a bad IPv6 literal, and not the
     * old numeric forms ("127.1", "0x7f.1") getaddrinfo would still take. */
    if (!split || text[0] == '[' || inet_aton(host, &legacy)) {
        snprintf(err, errlen, "bad address %s (want IPV4:PORT, [IPV6]:PORT, NAME:PORT with "
                 "PORT 1..65535, or unix:/path)", text);
        return -EINVAL;
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    int g = getaddrinfo(host, port, &hints, &res);
    if (g != 0 || !res) {
        int e = g == EAI_SYSTEM ? errno : 0;
        snprintf(err, errlen, "cannot resolve %s: %s", host, g ? gai_strerror(g) : "no address");
        if (res)
            freeaddrinfo(res);
        return e > 0 ? -e : -EHOSTUNREACH;
    }
    int n = 0;
    for (struct addrinfo *ai = res; ai && n < max; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof out[n].ss)
            continue;
        memcpy(&out[n].ss, ai->ai_addr, ai->ai_addrlen);
        out[n].len = ai->ai_addrlen;
        n++;
    }
    freeaddrinfo(res);
    if (n == 0) {
        snprintf(err, errlen, "cannot resolve %s: no usable address", host);
        return -EHOSTUNREACH;
    }
    return n;
}

int msgclient_target(const char *host, unsigned port, const char *unix_path, char *out,
                     size_t outlen)
{
    int n;
    if (unix_path) {
        const char *path = strncmp(unix_path, "unix:", 5) == 0 ? unix_path + 5 : unix_path;
        n = snprintf(out, outlen, "unix:%s", path);
    } else if (strchr(host, ':') && host[0] != '[') {
        n = snprintf(out, outlen, "[%s]:%u", host, port);
    } else {
        n = snprintf(out, outlen, "%s:%u", host, port);
    }
    if (n < 0 || (size_t)n >= outlen)
        return -ENAMETOOLONG;
    struct sockaddr_storage ss;
    socklen_t len;
    if (unix_path && net_parse_addr(out, &ss, &len) < 0)
        return -EINVAL;
    return 0;
}

/* ---- options, lifetime -------------------------------------------------- */

void msgclient_options_init(struct msgclient_options *o)
{
    memset(o, 0, sizeof *o);
    o->connect_timeout_ms = DEFAULT_TIMEOUT_MS;
    o->timeout_ms = DEFAULT_TIMEOUT_MS;
    o->backoff_initial_ms = 100;
    o->backoff_max_ms = 5000;
    o->reconnect_attempts = 8;
    o->max_frame = DEFAULT_MAX_FRAME;
    o->heartbeat_ms = MSGCLIENT_HEARTBEAT_SERVER;
    o->dead_after_ms = DEFAULT_DEAD_AFTER_MS;
    o->compress = NULL;
    o->compress_level = 1;
}

/* Parses the compress option: "" and "none" offer nothing. Returns 0 or
 * -EINVAL (an unknown or repeated name). */
static int parse_offer(const char *s, struct codec_list *out)
{
    out->n = 0;
    size_t len = strlen(s);
    while (len && (s[0] == ' ' || s[0] == '\t')) {
        s++;
        len--;
    }
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    if (len == 4 && memcmp(s, "none", 4) == 0)
        return 0;
    return codec_parse_list(s, len, true, out);
}

struct msgclient *msgclient_new(const struct msgclient_options *o)
{
    struct msgclient *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->o = *o;
    c->fd = -1;
    c->addr = o->addr ? strdup(o->addr) : NULL;
    c->token = o->token ? strdup(o->token) : NULL;
    c->compress = o->compress ? strdup(o->compress) : NULL;
    int bad = 0;
    if ((o->addr && !c->addr) || (o->token && !c->token) || (o->compress && !c->compress))
        bad = ENOMEM;
    else if (o->compress && parse_offer(o->compress, &c->offer) < 0)
        bad = EINVAL;
    if (bad) {
        free(c->addr);
        free(c->token);
        free(c->compress);
        free(c);
        errno = bad;
        return NULL;
    }
    c->o.addr = c->addr;
    c->o.token = c->token;
    c->o.compress = c->compress;
    if (c->o.compress_level <= 0)
        c->o.compress_level = 1;
    if (o->tls)
        c->tls_ctx = msgclient_tls_ctx_new(o->tls_cafile, o->tls_certfile, o->tls_keyfile,
                                           c->tls_err, sizeof c->tls_err);
    c->o.tls_cafile = c->o.tls_certfile = c->o.tls_keyfile = NULL; /* not kept */
    if (c->o.reconnect_attempts == 0)
        c->o.reconnect_attempts = 1;
    if (c->o.max_frame == 0)
        c->o.max_frame = DEFAULT_MAX_FRAME;
    if (c->o.backoff_max_ms < c->o.backoff_initial_ms)
        c->o.backoff_max_ms = c->o.backoff_initial_ms;
    uint64_t seed = o->seed;
    if (seed == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = mix64((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^
                     ((uint64_t)getpid() << 40) ^ (uint64_t)(uintptr_t)c);
    }
    c->rng = seed ? seed : 1;
    c->hb_ms = c->o.heartbeat_ms < 0 ? DEFAULT_HEARTBEAT_MS : c->o.heartbeat_ms;
    return c;
}

void msgclient_reply_free(struct msgclient_reply *r)
{
    if (!r)
        return;
    free(r->payload);
    memset(r, 0, sizeof *r);
}

void msgclient_message_free(struct msgclient_message *m)
{
    if (!m)
        return;
    free(m->buf);
    memset(m, 0, sizeof *m);
}

void msgclient_deliver_free(struct msgclient_deliver *d)
{
    if (!d)
        return;
    free(d->buf);
    memset(d, 0, sizeof *d);
}

static void pushq_clear(struct msgclient_pushq *q)
{
    while (q->head) {
        struct msgclient_pnode *n = q->head;
        q->head = n->next;
        free(n->buf);
        free(n);
    }
    q->tail = NULL;
    q->n = 0;
}

/* Removes the oldest push; NULL when there is none. */
static struct msgclient_pnode *pushq_take(struct msgclient_pushq *q)
{
    struct msgclient_pnode *n = q->head;
    if (n) {
        q->head = n->next;
        if (!q->head)
            q->tail = NULL;
        q->n--;
    }
    return n;
}

static void drop_queues(struct msgclient *c)
{
    while (c->rhead) {
        struct msgclient_rnode *n = c->rhead;
        c->rhead = n->next;
        msgclient_reply_free(&n->r);
        free(n);
    }
    c->rtail = NULL;
    c->nreplies = 0;
    pushq_clear(&c->messages);
    pushq_clear(&c->delivers);
}

/* Closes the socket; each request still owed a reply gets `result` in its
 * place in the reply queue. */
static void conn_lost(struct msgclient *c, int result)
{
    msgclient_tls_free(c->tls);
    c->tls = NULL;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    buffer_free(&c->in);
    buffer_free(&c->out);
    buffer_free(&c->zin);
    c->codec = CODEC_NONE;
    c->write_dead = false;
    c->hb_owed = false;
    c->hb_ahead = 0;
    while (c->pending > 0) {
        struct msgclient_rnode *n = calloc(1, sizeof *n);
        if (!n) {
            c->pending = 0; /* out of memory: the requests are simply forgotten */
            break;
        }
        n->result = result;
        if (c->rtail)
            c->rtail->next = n;
        else
            c->rhead = n;
        c->rtail = n;
        c->nreplies++;
        c->pending--;
    }
}

void msgclient_close(struct msgclient *c)
{
    conn_lost(c, -ECONNRESET);
}

void msgclient_free(struct msgclient *c)
{
    if (!c)
        return;
    msgclient_tls_free(c->tls);
    msgclient_tls_ctx_free(c->tls_ctx);
    if (c->fd >= 0)
        close(c->fd);
    buffer_free(&c->in);
    buffer_free(&c->out);
    buffer_free(&c->zin);
    drop_queues(c);
    codec_ctx_free(c->zctx);
    free(c->hello);
    free(c->addr);
    free(c->token);
    free(c->compress);
    free(c);
}

/* ---- state -------------------------------------------------------------- */

bool msgclient_connected(const struct msgclient *c) { return c->fd >= 0; }
size_t msgclient_pending(const struct msgclient *c) { return c->pending + c->nreplies; }
const char *msgclient_error(const struct msgclient *c) { return c->err; }
uint64_t msgclient_pings_answered(const struct msgclient *c) { return c->pings; }
uint64_t msgclient_frames_dropped(const struct msgclient *c) { return c->dropped; }
uint64_t msgclient_messages_dropped(const struct msgclient *c) { return c->messages_dropped; }
uint64_t msgclient_delivers_dropped(const struct msgclient *c) { return c->delivers_dropped; }
uint64_t msgclient_reconnects(const struct msgclient *c) { return c->reconnects; }
uint64_t msgclient_heartbeats_sent(const struct msgclient *c) { return c->heartbeats; }
int msgclient_heartbeat_ms(const struct msgclient *c) { return c->hb_ms; }
uint64_t msgclient_dead_declared(const struct msgclient *c) { return c->deaths; }
uint64_t msgclient_conn_bytes_in(const struct msgclient *c) { return c->conn_bytes_in; }
const char *msgclient_codec(const struct msgclient *c) { return codec_name(c->codec); }
const char *msgclient_hello_reply(const struct msgclient *c) { return c->hello; }
uint64_t msgclient_compressed_sent(const struct msgclient *c) { return c->compressed_out; }
uint64_t msgclient_compressed_received(const struct msgclient *c) { return c->compressed_in; }

bool msgclient_going_away(const struct msgclient *c, uint32_t *ms_left, const char **reason)
{
    if (ms_left)
        *ms_left = c->goaway_ms;
    if (reason)
        *reason = c->goaway_reason;
    return c->goaway;
}

/* ---- frames in ---------------------------------------------------------- */

static int queue_reply(struct msgclient *c, uint32_t cmd, const uint8_t *p, size_t len)
{
    struct msgclient_rnode *n = calloc(1, sizeof *n);
    if (!n)
        return -ENOMEM;
    if (len) {
        n->r.payload = malloc(len);
        if (!n->r.payload) {
            free(n);
            return -ENOMEM;
        }
        memcpy(n->r.payload, p, len);
    }
    n->r.command = cmd;
    n->r.len = len;
    n->result = 0;
    if ((cmd & (MSG_FLAG_REPLY | MSG_FLAG_ERROR)) == (MSG_FLAG_REPLY | MSG_FLAG_ERROR)) {
        n->result = MSGCLIENT_ERROR_REPLY;
        if (msgclient_decode_error(p, len, &n->r.error_code, n->r.error_text,
                                   sizeof n->r.error_text) < 0)
            snprintf(n->r.error_text, sizeof n->r.error_text, "(malformed error payload)");
    }
    if (c->rtail)
        c->rtail->next = n;
    else
        c->rhead = n;
    c->rtail = n;
    c->nreplies++;
    return 0;
}

/* Queues a push whose payload is u8 key length, key, data (MESSAGE: the
 * topic; DELIVER: the sender). A key length past the payload's end is
 * dropped and counted; so is an empty key when allow_empty is false. */
static int handle_push(struct msgclient *c, const uint8_t *p, size_t len, bool allow_empty,
                       msgclient_message_fn fn, struct msgclient_pushq *q, size_t max,
                       uint64_t *full_drops)
{
    if (len < 1 || (p[0] == 0 && !allow_empty) || (size_t)p[0] + 1 > len) {
        c->dropped++;
        return 0;
    }
    size_t klen = p[0];
    const uint8_t *key = p + 1;
    const uint8_t *data = p + 1 + klen;
    size_t dlen = len - 1 - klen;
    if (fn) {
        fn(c->o.user, key, klen, data, dlen);
        return 0;
    }
    if (q->n >= max) {
        (*full_drops)++;
        return 0;
    }
    struct msgclient_pnode *n = calloc(1, sizeof *n);
    uint8_t *buf = malloc(klen + dlen + 2);
    if (!n || !buf) {
        free(n);
        free(buf);
        return -ENOMEM;
    }
    if (klen)
        memcpy(buf, key, klen);
    buf[klen] = '\0';
    if (dlen)
        memcpy(buf + klen + 1, data, dlen);
    buf[klen + 1 + dlen] = '\0';
    n->buf = buf;
    n->key_len = klen;
    n->data_len = dlen;
    if (q->tail)
        q->tail->next = n;
    else
        q->head = n;
    q->tail = n;
    q->n++;
    return 0;
}

static int handle_frame(struct msgclient *c, uint32_t cmd, const uint8_t *p, size_t len)
{
    if (cmd == MSG_CMD_PING) {
        /* a server heartbeat: answer it at once, same payload */
        uint8_t h[MSG_HEADER_LEN];
        msg_header_encode(h, MSG_FLAG_REPLY | MSG_CMD_PING, (uint32_t)len);
        if (!c->write_dead) {
            if (buffer_append(&c->out, h, sizeof h) < 0 || buffer_append(&c->out, p, len) < 0)
                return -ENOMEM;
        }
        c->pings++;
        return 0;
    }
    if (cmd == MSG_CMD_MESSAGE)
        return handle_push(c, p, len, false, c->o.on_message, &c->messages,
                           MSGCLIENT_MESSAGES_MAX, &c->messages_dropped);
    if (cmd == MSG_CMD_DELIVER)     /* the sender may have no identity: length 0 */
        return handle_push(c, p, len, true, c->o.on_deliver, &c->delivers,
                           MSGCLIENT_DELIVERS_MAX, &c->delivers_dropped);
    if (cmd == MSG_CMD_GOAWAY) {
        c->goaway = true;
        c->goaway_ms = len >= 4 ? msg_get_u32(p) : 0;
        if (len > 4) {
            uint32_t dummy;
            uint8_t tmp[MSGCLIENT_TEXT_MAX + 4];
            size_t n = len > sizeof tmp ? sizeof tmp : len;
            memcpy(tmp, p, n);
            msgclient_decode_error(tmp, n, &dummy, c->goaway_reason, sizeof c->goaway_reason);
        } else {
            c->goaway_reason[0] = '\0';
        }
        return 0;
    }
    if (cmd == MSG_CONN_ERROR) {
        uint32_t code = 0;
        char text[MSGCLIENT_TEXT_MAX];
        msgclient_decode_error(p, len, &code, text, sizeof text);
        /* The same word with UNKNOWN_COMMAND is the ordinary error reply to
         * a request with command 0 (PROTOCOL.md rule 4): the connection goes
         * on, and UNKNOWN_COMMAND is never connection-level. */
        if (code == MSG_ERR_UNKNOWN_COMMAND && c->pending > 0) {
            if (c->hb_owed && c->hb_ahead > 0)
                c->hb_ahead--;
            c->pending--;
            return queue_reply(c, cmd, p, len);
        }
        snprintf(c->err, sizeof c->err, "connection error %s (%u): %s",
                 msg_error_name(code), code, text);
        c->conn_error = true;
        if (c->pending == 0)
            return 0;
        c->pending--;
        return queue_reply(c, cmd, p, len);
    }
    if (cmd & MSG_FLAG_REPLY) {
        if (c->hb_owed) {
            /* replies come in request order: the heartbeat's is the one
             * after those owed to the requests sent before it */
            if (c->hb_ahead == 0) {
                c->hb_owed = false;
                return 0;
            }
            c->hb_ahead--;
        }
        if (c->pending == 0) {
            c->dropped++;   /* a reply nobody asked for (or to our PING reply?) */
            return 0;
        }
        c->pending--;
        return queue_reply(c, cmd, p, len);
    }
    c->dropped++;           /* a push this client does not know */
    return 0;
}

/* Decompresses a COMPRESSED frame's payload into c->zin, within max_frame.
 * Returns 0, or -EPROTO (no codec agreed, garbage, or past max_frame) /
 * -ENOMEM, with the reason in c->err. */
static int decompress_frame(struct msgclient *c, uint32_t cmd, const uint8_t *p, size_t len)
{
    if (c->codec == CODEC_NONE) {
        snprintf(c->err, sizeof c->err, "the server sent frame 0x%08X compressed, but no "
                 "codec was agreed", cmd);
        return -EPROTO;
    }
    if (!c->zctx && !(c->zctx = codec_ctx_new()))
        return -ENOMEM;
    buffer_consume(&c->zin, buffer_readable(&c->zin));
    long n = codec_decompress(c->zctx, c->codec, p, len, c->o.max_frame, &c->zin);
    if (n == -ENOMEM) {
        set_err(c, "decompressing a frame", -ENOMEM);
        return -ENOMEM;
    }
    if (n < 0) {
        snprintf(c->err, sizeof c->err, "the server sent frame 0x%08X (%zu bytes, %s) that %s",
                 cmd, len, codec_name(c->codec), n == -EFBIG ?
                 "decompresses past max_frame" : "does not decompress");
        return -EPROTO;
    }
    c->compressed_in++;
    return 0;
}

/* Handles every whole frame in the input buffer. Returns 0 or -EPROTO /
 * -ENOMEM (the caller then drops the connection). */
static int process_input(struct msgclient *c)
{
    while (buffer_readable(&c->in) > 0) {
        struct msg_header h;
        long r = msg_split(buffer_peek(&c->in), buffer_readable(&c->in), c->o.max_frame, &h);
        if (r == 0)
            return 0;
        if (r < 0) {
            snprintf(c->err, sizeof c->err, "the server broke the framing: %s",
                     msg_error_name((uint32_t)-r));
            return -EPROTO;
        }
        const uint8_t *p = buffer_peek(&c->in) + MSG_HEADER_LEN;
        size_t len = h.length;
        uint32_t cmd = h.command;
        if (cmd & MSG_FLAG_COMPRESSED) {
            int zrc = decompress_frame(c, cmd, p, len);
            if (zrc < 0)
                return zrc;
            cmd &= ~MSG_FLAG_COMPRESSED;
            p = buffer_peek(&c->zin);
            len = buffer_readable(&c->zin);
        }
        int rc = handle_frame(c, cmd, p, len);
        buffer_consume(&c->zin, buffer_readable(&c->zin));
        buffer_shrink(&c->zin, 1u << 20);
        if (rc < 0) {
            set_err(c, "reading a frame", rc);
            return rc;
        }
        buffer_consume(&c->in, (size_t)r);
    }
    return 0;
}

/* ---- I/O ----------------------------------------------------------------- */

/* Writes as much output as the socket takes now. A failed write marks the
 * write side dead and discards the output; the read side then finds out why. */
static void write_some(struct msgclient *c)
{
    while (buffer_readable(&c->out) > 0 && !c->write_dead) {
        ssize_t n = c->tls ? msgclient_tls_send(c->tls, buffer_peek(&c->out), buffer_readable(&c->out))
                           : send(c->fd, buffer_peek(&c->out), buffer_readable(&c->out), MSG_NOSIGNAL);
        if (n > 0) {
            buffer_consume(&c->out, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        set_err(c, "write", n < 0 ? -errno : -EPIPE);
        c->write_dead = true;
        buffer_free(&c->out);
    }
}

/* Reads once. Returns 0, or the loss (-ECONNRESET, -ECONNABORTED after the
 * connection-level error, -EPROTO) after which the connection is closed. */
static int read_some(struct msgclient *c)
{
    int rc = buffer_reserve(&c->in, READ_CHUNK);
    if (rc < 0) {
        set_err(c, "read", rc);
        conn_lost(c, rc);
        return rc;
    }
    ssize_t n = c->tls ? msgclient_tls_recv(c->tls, buffer_tail(&c->in), buffer_writable(&c->in))
                       : recv(c->fd, buffer_tail(&c->in), buffer_writable(&c->in), 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    int lost = 0;
    if (n > 0) {
        buffer_commit(&c->in, (size_t)n);
        c->last_rx_ms = now_ms();
        c->conn_bytes_in += (uint64_t)n;
    } else {
        lost = n == 0 ? -ECONNRESET : -errno;
        if (lost == -EPIPE || lost == -ENOTCONN)
            lost = -ECONNRESET;
    }
    rc = process_input(c);
    if (rc < 0) {
        conn_lost(c, rc);
        return rc;
    }
    if (lost) {
        if (c->conn_error) {
            lost = -ECONNABORTED;
        } else if (n == 0) {
            snprintf(c->err, sizeof c->err, "the server closed the connection%s",
                     c->goaway ? " (after GOAWAY)" : "");
        } else {
            set_err(c, "read", lost);
        }
        conn_lost(c, lost == -ECONNABORTED ? -ECONNRESET : lost);
        return lost;
    }
    return 0;
}

/* The heartbeat before a wait: declares the server dead after dead_after_ms
 * of silence (-ETIMEDOUT, the connection closed), or queues a PING after
 * heartbeat_ms of it. Returns 0 or -ETIMEDOUT; *wake is lowered to when the
 * heartbeat next needs to look. */
static int heartbeat(struct msgclient *c, int64_t *wake)
{
    int hb = c->hb_ms, dead = c->o.dead_after_ms;
    if (hb <= 0 && dead <= 0)
        return 0;
    int64_t now = now_ms(), silent = now - c->last_rx_ms;
    if (dead > 0 && silent >= dead) {
        snprintf(c->err, sizeof c->err, "the server sent nothing for %lld ms (dead after %d ms): "
                 "connection dropped", (long long)silent, dead);
        c->deaths++;
        conn_lost(c, -ETIMEDOUT);
        return -ETIMEDOUT;
    }
    if (hb > 0 && silent >= hb && !c->hb_owed && !c->write_dead) {
        uint8_t h[MSG_HEADER_LEN];
        size_t pl = sizeof HEARTBEAT_PAYLOAD - 1;
        msg_header_encode(h, MSG_CMD_PING, (uint32_t)pl);
        if (buffer_append(&c->out, h, sizeof h) == 0 &&
            buffer_append(&c->out, HEARTBEAT_PAYLOAD, pl) == 0) {
            c->hb_owed = true;
            c->hb_ahead = c->pending;
            c->heartbeats++;
        }
    }
    int64_t next = INT64_MAX;
    if (hb > 0 && !c->hb_owed)
        next = c->last_rx_ms + hb;
    if (dead > 0 && c->last_rx_ms + dead < next)
        next = c->last_rx_ms + dead;
    if (next < *wake)
        *wake = next;
    return 0;
}

/* One round: write what can go, wait for the socket until deadline (or the
 * heartbeat's next look), read. Returns 0, -ETIMEDOUT (the deadline passed,
 * or the server was declared dead: then the connection is closed), -EINTR,
 * -ENOTCONN, or a loss from read_some. */
static int io_step(struct msgclient *c, int64_t deadline)
{
    if (c->fd < 0)
        return -ENOTCONN;
    int64_t wake = deadline;
    int rc = heartbeat(c, &wake);
    if (rc < 0)
        return rc;
    write_some(c);
    if (c->tls && msgclient_tls_pending(c->tls))
        return read_some(c); /* decrypted already: poll would not say so */
    struct pollfd pfd = {c->fd, POLLIN, 0};
    if (buffer_readable(&c->out) > 0 && !c->write_dead)
        pfd.events |= POLLOUT;
    int n = poll(&pfd, 1, poll_wait(wake));
    if (n < 0) {
        if (errno == EINTR)
            return -EINTR;
        set_err(c, "poll", -errno);
        return -errno;
    }
    if (n == 0) {
        if (wake < deadline)
            return 0;               /* the heartbeat's turn, not the caller's deadline */
        snprintf(c->err, sizeof c->err, "timed out");
        return -ETIMEDOUT;
    }
    if (pfd.revents & POLLOUT)
        write_some(c);
    if (pfd.revents & (POLLIN | POLLHUP | POLLERR))
        return read_some(c);
    return 0;
}

/* ---- connecting ------------------------------------------------------------ */

/* Waits for a non-blocking connect on fd. Returns 0 or -errno. */
static int connect_wait(int fd, int64_t deadline)
{
    for (;;) {
        struct pollfd pfd = {fd, POLLOUT, 0};
        int n = poll(&pfd, 1, poll_wait(deadline));
        if (n < 0)
            return -errno;
        if (n == 0)
            return -ETIMEDOUT;
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
            return -errno;
        return soerr ? -soerr : 0;
    }
}

/* One socket connected to sa. Returns the fd or -errno. */
static int connect_one(const struct sockaddr *sa, socklen_t salen, int timeout_ms)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int rc = 0;
    if (connect(fd, sa, salen) < 0) {
        if (errno == EINPROGRESS || errno == EAGAIN)
            rc = connect_wait(fd, deadline_after(timeout_ms));
        else
            rc = -errno;
    }
    if (rc < 0) {
        close(fd);
        return rc;
    }
    if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

/* Connects to addr. Returns the fd or -errno with the reason in c->err. */
static int connect_addr(struct msgclient *c)
{
    const char *addr = c->o.addr;
    struct msgclient_addr to[MSGCLIENT_ADDRS_MAX];
    int n = msgclient_resolve(addr, to, MSGCLIENT_ADDRS_MAX, c->err, sizeof c->err);
    if (n < 0)
        return n;
    int fd = -EHOSTUNREACH;
    for (int i = 0; i < n && fd < 0; i++)
        fd = connect_one((const struct sockaddr *)&to[i].ss, to[i].len, c->o.connect_timeout_ms);
    if (fd < 0)
        snprintf(c->err, sizeof c->err, "connect %s: %s", addr,
                 fd == -ETIMEDOUT ? "timed out" : strerror(-fd));
    return fd;
}

static void reset_conn_state(struct msgclient *c, int fd)
{
    if (c->fd >= 0)
        conn_lost(c, -ECONNRESET);
    c->fd = fd;
    c->write_dead = false;
    c->goaway = false;
    c->goaway_ms = 0;
    c->goaway_reason[0] = '\0';
    c->conn_error = false;
    c->last_rx_ms = now_ms();
    c->conn_bytes_in = 0;
    c->hb_owed = false;
    c->hb_ahead = 0;
    c->hb_ms = c->o.heartbeat_ms < 0 ? DEFAULT_HEARTBEAT_MS : c->o.heartbeat_ms;
    c->codec = CODEC_NONE;
    c->compress_min = DEFAULT_COMPRESS_MIN;
    free(c->hello);
    c->hello = NULL;
    buffer_free(&c->in);
    buffer_free(&c->out);
}

int msgclient_adopt(struct msgclient *c, int fd)
{
    if (fd < 0)
        return -EINVAL;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -EINVAL;
    reset_conn_state(c, fd);
    return 0;
}

/* Removes and returns the newest node of the reply queue. */
static struct msgclient_rnode *take_tail(struct msgclient *c)
{
    struct msgclient_rnode *prev = NULL, *n = c->rhead;
    if (!n)
        return NULL;
    while (n->next) {
        prev = n;
        n = n->next;
    }
    if (prev)
        prev->next = NULL;
    else
        c->rhead = NULL;
    c->rtail = prev;
    c->nreplies--;
    return n;
}

/* One request on a fresh connection (nothing else owed on it) and its
 * reply: the newest node in the queue once nothing is pending (older nodes
 * are replies from an earlier connection that the caller has not received
 * yet). Returns the node (the caller frees it), or NULL with *rc set and
 * the connection closed. */
static struct msgclient_rnode *setup_call(struct msgclient *c, uint32_t cmd, const void *p,
                                          size_t len, const char *what, int *rc)
{
    *rc = msgclient_send(c, cmd, p, len);
    if (*rc < 0)
        return NULL;
    int64_t deadline = deadline_after(c->o.timeout_ms);
    while (c->pending > 0) {
        *rc = io_step(c, deadline);
        if ((*rc == -ETIMEDOUT && c->fd >= 0) || *rc == -EINTR || *rc == -ENOTCONN) {
            c->pending = 0;
            conn_lost(c, -ECONNRESET);
            prefix_err(c, what);
            return NULL;
        }
    }
    struct msgclient_rnode *n = take_tail(c);
    if (!n)
        *rc = -ENOMEM;
    return n;
}

/* The value of key in HELLO's key=value lines (NUL-terminated text), or
 * NULL; *vlen is its length. */
static const char *hello_value(const char *text, const char *key, size_t *vlen)
{
    size_t klen = strlen(key);
    for (const char *line = text; *line;) {
        const char *eol = strchr(line, '\n');
        size_t ll = eol ? (size_t)(eol - line) : strlen(line);
        if (ll > klen && line[klen] == '=' && memcmp(line, key, klen) == 0) {
            *vlen = ll - klen - 1;
            if (*vlen && line[klen + *vlen] == '\r')
                (*vlen)--;
            return line + klen + 1;
        }
        if (!eol)
            break;
        line = eol + 1;
    }
    return NULL;
}

/* The unsigned decimal value of key in HELLO's reply, or -1 when it is
 * missing or not a number below 2^63. */
static long long hello_number(const char *text, const char *key)
{
    size_t vlen = 0;
    const char *v = hello_value(text, key, &vlen);
    if (!v || vlen == 0 || vlen >= 19)
        return -1;
    long long m = 0;
    for (size_t i = 0; i < vlen; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        m = m * 10 + (v[i] - '0');
    }
    return m;
}

/* heartbeat_ms MSGCLIENT_HEARTBEAT_SERVER: the server's heartbeat_ms from
 * its HELLO reply when it has one (not 0), at most a third of dead_after_ms
 * so that a PING can still be answered in time. */
static void adopt_server_heartbeat(struct msgclient *c)
{
    if (c->o.heartbeat_ms >= 0 || !c->hello)
        return;
    long long hb = hello_number(c->hello, "heartbeat_ms");
    if (hb <= 0)
        return;
    if (c->o.dead_after_ms > 0 && hb > c->o.dead_after_ms / 3)
        hb = c->o.dead_after_ms / 3 > 0 ? c->o.dead_after_ms / 3 : 1;
    c->hb_ms = hb > INT_MAX ? INT_MAX : (int)hb;
}

/* HELLO on a fresh connection: offers o.compress and takes the server's
 * choice (and its heartbeat, see adopt_server_heartbeat). An error reply (a server older than HELLO) leaves the connection
 * uncompressed. Returns 0, -EPROTO (a codec that was not offered; the
 * connection is closed) or what setup_call returns. */
static int hello_exchange(struct msgclient *c)
{
    char req[256];
    size_t at = (size_t)snprintf(req, sizeof req, "client=msgclient/%s\n", MSGD_VERSION);
    if (c->offer.n > 0) {
        at += (size_t)snprintf(req + at, sizeof req - at, "compress=");
        for (int i = 0; i < c->offer.n; i++)
            at += (size_t)snprintf(req + at, sizeof req - at, "%s%s", i ? "," : "",
                                   codec_name((enum codec_id)c->offer.id[i]));
        at += (size_t)snprintf(req + at, sizeof req - at, "\n");
    }
    int rc;
    struct msgclient_rnode *n = setup_call(c, MSG_CMD_HELLO, req, at, "HELLO: ", &rc);
    if (!n)
        return rc;
    rc = n->result;
    if (rc == 0 && n->r.command == (MSG_FLAG_REPLY | MSG_CMD_HELLO)) {
        size_t len = n->r.len < HELLO_REPLY_MAX ? n->r.len : HELLO_REPLY_MAX;
        c->hello = malloc(len + 1);
        if (c->hello) {
            if (len)
                memcpy(c->hello, n->r.payload, len);
            c->hello[len] = '\0';
        }
        size_t vlen = 0;
        const char *v = c->hello ? hello_value(c->hello, "compress", &vlen) : NULL;
        enum codec_id chosen = v ? codec_by_name(v, vlen) : CODEC_NONE;
        bool offered = false;
        for (int i = 0; i < c->offer.n; i++)
            offered |= c->offer.id[i] == chosen;
        if (v && chosen == CODEC_NONE && !(vlen == 4 && memcmp(v, "none", 4) == 0))
            offered = false;
        else if (chosen == CODEC_NONE)
            offered = true;
        if (!offered) {
            snprintf(c->err, sizeof c->err, "HELLO: the server chose codec \"%.*s\", which was "
                     "not offered", (int)(vlen > 32 ? 32 : vlen), v ? v : "");
            rc = -EPROTO;
        } else {
            c->codec = chosen;
            long long m = hello_number(c->hello, "compress_min");
            if (m >= 0)
                c->compress_min = (size_t)m;
            adopt_server_heartbeat(c);
        }
    } else if (rc >= 0) {
        rc = 0;     /* an error reply: no HELLO on this server, no compression */
    } else {
        prefix_err(c, "HELLO: ");
    }
    msgclient_reply_free(&n->r);
    free(n);
    if (rc < 0)
        conn_lost(c, -ECONNRESET);
    return rc;
}

/* AUTH on a fresh connection (nothing else owed on it). */
static int auth_exchange(struct msgclient *c, struct msgclient_reply *reply)
{
    int rc;
    struct msgclient_rnode *n = setup_call(c, MSG_CMD_AUTH, c->o.token, strlen(c->o.token),
                                           "AUTH: ", &rc);
    if (!n)
        return rc;
    rc = n->result;
    if (rc == MSGCLIENT_ERROR_REPLY)
        snprintf(c->err, sizeof c->err, "AUTH: %s (%u): %s", msg_error_name(n->r.error_code),
                 n->r.error_code, n->r.error_text);
    else if (rc < 0)
        prefix_err(c, "AUTH: ");
    if (rc >= 0 && reply)
        *reply = n->r;
    else
        msgclient_reply_free(&n->r);
    free(n);
    return rc;
}

int msgclient_connect(struct msgclient *c, struct msgclient_reply *reply)
{
    if (c->fd >= 0)
        conn_lost(c, -ECONNRESET);
    if (c->o.tls && !c->tls_ctx) {
        snprintf(c->err, sizeof c->err, "%s", c->tls_err);
        return -EINVAL;
    }
    int fd = connect_addr(c);
    if (fd < 0)
        return fd;
    reset_conn_state(c, fd);
    if (c->o.tls) {
        /* The certificate must match the host of addr ("HOST:PORT", "[V6]:PORT"). */
        char host[256];
        const char *colon = strrchr(c->o.addr, ':');
        size_t hl = colon ? (size_t)(colon - c->o.addr) : strlen(c->o.addr);
        const char *h = c->o.addr;
        if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']')
            h++, hl -= 2;
        snprintf(host, sizeof host, "%.*s", (int)hl, h);
        c->tls = msgclient_tls_handshake(c->tls_ctx, fd, host,
                                         deadline_after(c->o.connect_timeout_ms), NULL, c->err,
                                         sizeof c->err);
        if (!c->tls) {
            conn_lost(c, -ECONNRESET);
            return -EPROTO;
        }
    }
    if (c->o.compress) {
        int rc = hello_exchange(c);
        if (rc < 0)
            return rc;
    }
    if (!c->o.token)
        return 0;
    return auth_exchange(c, reply);
}

int msgclient_reconnect(struct msgclient *c, struct msgclient_reply *reply)
{
    if (c->fd >= 0)
        conn_lost(c, -ECONNRESET);
    int rc = -ENOTCONN;
    for (unsigned i = 0; i < c->o.reconnect_attempts; i++) {
        unsigned wait = msgclient_backoff_ms(i, c->o.backoff_initial_ms, c->o.backoff_max_ms,
                                             &c->rng);
        if (wait > INT_MAX)
            wait = INT_MAX;
        if (wait > 0 && poll(NULL, 0, (int)wait) < 0 && errno == EINTR)
            return -EINTR;
        rc = msgclient_connect(c, reply);
        if (rc >= 0) {
            c->reconnects++;
            return rc;
        }
        if (rc == -EINTR || rc == -EINVAL)
            return rc;
    }
    return rc;
}

/* ---- requests and replies ------------------------------------------------- */

/* Connects again before a send when the connection is gone, or going away
 * with nothing owed, and reconnect is on. */
static int ensure_connection(struct msgclient *c)
{
    bool need = c->fd < 0 || (c->goaway && c->pending == 0);
    if (!need)
        return 0;
    if (!c->o.reconnect) {
        if (c->fd >= 0)
            return 0;   /* going away, but no reconnecting: use it while it lasts */
        snprintf(c->err, sizeof c->err, "not connected");
        return -ENOTCONN;
    }
    struct msgclient_reply r;
    memset(&r, 0, sizeof r);
    int rc = msgclient_reconnect(c, &r);
    msgclient_reply_free(&r);
    if (rc == MSGCLIENT_ERROR_REPLY)
        return -EACCES;
    return rc;
}

/* Appends the request compressed with the agreed codec when that makes it
 * smaller. Returns 0 when it did; -1 (nothing appended) when the caller
 * should send it plain. */
static int append_compressed(struct msgclient *c, uint32_t cmd, const void *payload, size_t len)
{
    if (!c->zctx && !(c->zctx = codec_ctx_new()))
        return -1;
    size_t at = buffer_readable(&c->out);
    if (buffer_reserve(&c->out, MSG_HEADER_LEN + codec_bound(c->codec, len)) < 0)
        return -1;
    buffer_commit(&c->out, MSG_HEADER_LEN);
    long n = codec_compress(c->zctx, c->codec, c->o.compress_level, payload, len, &c->out);
    if (n < 0 || (size_t)n >= len) {
        c->out.wpos = c->out.rpos + at;     /* not smaller: plain */
        return -1;
    }
    msg_header_encode(buffer_peek(&c->out) + at, cmd | MSG_FLAG_COMPRESSED, (uint32_t)n);
    c->compressed_out++;
    return 0;
}

int msgclient_send(struct msgclient *c, uint32_t cmd, const void *payload, size_t len)
{
    if (cmd & MSG_FLAG_REPLY) {
        snprintf(c->err, sizeof c->err, "0x%08X is a reply, not a request", cmd);
        return -EINVAL;
    }
    if (len > UINT32_MAX)
        return -EMSGSIZE;
    int rc = ensure_connection(c);
    if (rc < 0)
        return rc;
    if (c->write_dead) {
        /* the write side failed: the loss shows up on the read side soon */
        c->pending++;
        return 0;
    }
    uint8_t h[MSG_HEADER_LEN];
    if (c->codec != CODEC_NONE && len >= c->compress_min && !(cmd & MSG_FLAG_COMPRESSED) &&
        append_compressed(c, cmd, payload, len) == 0) {
        c->pending++;
        if (buffer_readable(&c->out) >= EAGER_WRITE)
            write_some(c);
        return 0;
    }
    msg_header_encode(h, cmd, (uint32_t)len);
    if (buffer_reserve(&c->out, sizeof h + len) < 0)
        return -ENOMEM;
    buffer_append(&c->out, h, sizeof h);
    if (len)
        buffer_append(&c->out, payload, len);
    c->pending++;
    if (buffer_readable(&c->out) >= EAGER_WRITE)
        write_some(c);
    return 0;
}

int msgclient_flush(struct msgclient *c)
{
    int64_t deadline = deadline_after(c->o.timeout_ms);
    for (;;) {
        if (c->fd < 0)
            return -ENOTCONN;
        if (c->write_dead)
            return -EPIPE;
        write_some(c);
        if (buffer_readable(&c->out) == 0)
            return c->write_dead ? -EPIPE : 0;
        int rc = io_step(c, deadline);
        if (rc < 0)
            return rc;
    }
}

int msgclient_recv(struct msgclient *c, struct msgclient_reply *reply)
{
    int64_t deadline = deadline_after(c->o.timeout_ms);
    for (;;) {
        struct msgclient_rnode *n = c->rhead;
        if (n) {
            c->rhead = n->next;
            if (!c->rhead)
                c->rtail = NULL;
            c->nreplies--;
            int result = n->result;
            if (result >= 0)
                *reply = n->r;
            free(n);
            return result;
        }
        if (c->pending == 0) {
            snprintf(c->err, sizeof c->err, "no request is waiting for a reply");
            return -ENOMSG;
        }
        int rc = io_step(c, deadline);
        if ((rc == -ETIMEDOUT && c->fd >= 0) || rc == -EINTR || rc == -ENOTCONN)
            return rc;
        /* on a loss (a dead server included) the owed requests are queued as
         * failures: loop to them */
    }
}

int msgclient_call(struct msgclient *c, uint32_t cmd, const void *payload, size_t len,
                   struct msgclient_reply *reply)
{
    int rc = msgclient_send(c, cmd, payload, len);
    if (rc < 0)
        return rc;
    return msgclient_recv(c, reply);
}

/* Waits up to timeout_ms for a push in q (queued ones first). */
static struct msgclient_pnode *recv_push(struct msgclient *c, struct msgclient_pushq *q,
                                         int timeout_ms, int *rc)
{
    int64_t deadline = deadline_after(timeout_ms);
    for (;;) {
        struct msgclient_pnode *n = pushq_take(q);
        if (n) {
            *rc = 0;
            return n;
        }
        if (c->fd < 0) {
            snprintf(c->err, sizeof c->err, "not connected");
            *rc = -ENOTCONN;
            return NULL;
        }
        *rc = io_step(c, deadline);
        if (*rc < 0)
            return NULL;
    }
}

int msgclient_recv_message(struct msgclient *c, struct msgclient_message *m, int timeout_ms)
{
    if (c->o.on_message)
        return -EINVAL;
    int rc;
    struct msgclient_pnode *n = recv_push(c, &c->messages, timeout_ms, &rc);
    if (!n)
        return rc;
    m->buf = n->buf;
    m->topic = n->buf;
    m->topic_len = n->key_len;
    m->data = n->buf + n->key_len + 1;
    m->data_len = n->data_len;
    free(n);
    return 0;
}

int msgclient_recv_deliver(struct msgclient *c, struct msgclient_deliver *d, int timeout_ms)
{
    if (c->o.on_deliver)
        return -EINVAL;
    int rc;
    struct msgclient_pnode *n = recv_push(c, &c->delivers, timeout_ms, &rc);
    if (!n)
        return rc;
    d->buf = n->buf;
    d->sender = n->buf;
    d->sender_len = n->key_len;
    d->data = n->buf + n->key_len + 1;
    d->data_len = n->data_len;
    free(n);
    return 0;
}

/* ---- DIRECT ----------------------------------------------------------------- */

long msgclient_encode_direct(uint8_t *out, size_t outlen, const void *identity,
                             size_t identity_len, const void *message, size_t len)
{
    if (identity_len < 1 || identity_len > 255)
        return -EINVAL;
    if (len > LONG_MAX - 256 || outlen < 1 + identity_len + len)
        return -ENOSPC;
    out[0] = (uint8_t)identity_len;
    memcpy(out + 1, identity, identity_len);
    if (len)
        memcpy(out + 1 + identity_len, message, len);
    return (long)(1 + identity_len + len);
}

int msgclient_decode_direct_reply(const uint8_t *p, size_t len, uint32_t *local,
                                  uint32_t *remote)
{
    if (len != MSGCLIENT_DIRECT_REPLY_LEN)
        return -EBADMSG;
    *local = msg_get_u32(p);
    *remote = msg_get_u32(p + 4);
    return 0;
}

int msgclient_direct(struct msgclient *c, const void *identity, size_t identity_len,
                     const void *message, size_t len, uint32_t *local, uint32_t *remote,
                     struct msgclient_reply *reply)
{
    if (identity_len < 1 || identity_len > 255) {
        snprintf(c->err, sizeof c->err, "an identity is 1..255 bytes, not %zu", identity_len);
        return -EINVAL;
    }
    if (len > UINT32_MAX - 256)
        return -EMSGSIZE;
    size_t plen = 1 + identity_len + len;
    uint8_t *p = malloc(plen);
    if (!p)
        return -ENOMEM;
    msgclient_encode_direct(p, plen, identity, identity_len, message, len);
    int rc = msgclient_call(c, MSG_CMD_DIRECT, p, plen, reply);
    free(p);
    if (rc != 0)
        return rc;
    if (reply->command != (MSG_FLAG_REPLY | MSG_CMD_DIRECT) ||
        msgclient_decode_direct_reply(reply->payload, reply->len, local, remote) < 0) {
        snprintf(c->err, sizeof c->err, "DIRECT: unexpected reply 0x%08X with %zu bytes "
                 "(want 0x%08X with %d)", reply->command, reply->len,
                 MSG_FLAG_REPLY | MSG_CMD_DIRECT, MSGCLIENT_DIRECT_REPLY_LEN);
        return -EBADMSG;
    }
    return 0;
}
