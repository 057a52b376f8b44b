/* msgbench: a load generator for msgd. msg requests (or raw RFC 862 echo) over
 * many connections, one libev loop per thread, closed-loop with a pipeline
 * depth or open-loop at a fixed rate; every echoed byte is checked. Latency
 * goes into per-thread log-bucket histograms that are merged at the end. */
#include <errno.h>
#include <ev.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "buffer.h"
#include "client/msgclient.h"
#include "client/msgclient_tls.h"
#include "codec.h"
#include "msg.h"

#define NS_PER_S 1000000000ull
#define READ_CHUNK 65536
#define TICK_S 0.1                 /* stop flag, stall check and progress snapshot */
#define PING_MAX 1024u             /* the server's PING payload limit */
#define BENCH_TOPIC "msgbench"
#define BENCH_IDENTITY "msgbench"  /* --cmd direct's default target (--to) */
#define EXIT_ERRORS 1
#define EXIT_USAGE 2

/* ---- error kinds: the protocol's codes 1..12, then the client's own -------- */

enum {
    ERR_OTHER_CODE = 0,            /* an error code outside 1..12 */
    ERR_BAD_REPLY = MSG_ERR_MAX + 1, /* wrong bytes, wrong length, wrong command, unasked */
    ERR_CLOSED,                    /* a request lost to a closed connection */
    ERR_CONNECT,                   /* a connection that could not be made */
    ERR_TIMEOUT,                   /* a request with no answer within --timeout */
    ERR_PROTOCOL,                  /* the server broke the framing */
    ERR_GOAWAY,                    /* a connection the server sent away */
    ERR_NOT_SENT,                  /* a request never sent: no connection left */
    ERR_TLS,                       /* a TLS handshake that failed (--tls) */
    ERR_KINDS
};

static const char *error_kind_name(int k)
{
    switch (k) {
    case ERR_OTHER_CODE: return "OTHER_ERROR_CODE";
    case ERR_BAD_REPLY: return "BAD_REPLY";
    case ERR_CLOSED: return "CLOSED";
    case ERR_CONNECT: return "CONNECT";
    case ERR_TIMEOUT: return "TIMEOUT";
    case ERR_PROTOCOL: return "PROTOCOL";
    case ERR_GOAWAY: return "GOAWAY";
    case ERR_NOT_SENT: return "NOT_SENT";
    case ERR_TLS: return "TLS";
    default: return msg_error_name((uint32_t)k);
    }
}

/* ---- configuration (written by main before the threads start, then read-only) */

enum bench_proto { PROTO_MSG, PROTO_ECHO };
enum bench_cmd { BCMD_ECHO, BCMD_PING, BCMD_DELAY, BCMD_PUBLISH, BCMD_DIRECT };

struct bench_config {
    char addr_text[300];
    struct sockaddr_storage addr;
    socklen_t addrlen;
    const char *token;
    int threads;
    int conns;
    int pipeline;
    size_t size;
    double duration;               /* seconds; used when requests == 0 */
    uint64_t requests;             /* -n; 0: run for duration */
    double rate;                   /* --rate; 0: closed loop */
    enum bench_proto proto;
    enum bench_cmd cmd;
    uint32_t delay_ms;
    const char *to;                /* --cmd direct: the target identity */
    size_t to_len;
    double timeout;                /* seconds without an answer before giving up */
    bool json;
    bool text;                     /* --payload text: compressible words, not random bytes */
    const char *compress_arg;      /* --compress as given; NULL: no HELLO */
    struct codec_list compress;    /* --compress parsed: codecs HELLO offers */
    uint32_t max_frame;            /* largest frame accepted from the server */
    bool tls;                      /* --tls: every connection inside TLS */
    struct ssl_ctx_st *tls_ctx;    /* --tls: shared by the threads (read-only) */
    char tls_host[256];            /* what the server's certificate must name; "": none */
    uint64_t start_ns;
};

static struct bench_config cfg;
static atomic_int stop_requested;
static atomic_int tls_error_said;  /* the first handshake failure is printed, once */

static const char *cmd_name(enum bench_cmd c)
{
    switch (c) {
    case BCMD_ECHO: return "echo";
    case BCMD_PING: return "ping";
    case BCMD_DELAY: return "delay";
    case BCMD_PUBLISH: return "publish";
    case BCMD_DIRECT: return "direct";
    }
    return "?";
}

static uint32_t cmd_number(enum bench_cmd c)
{
    switch (c) {
    case BCMD_ECHO: return MSG_CMD_ECHO;
    case BCMD_PING: return MSG_CMD_PING;
    case BCMD_DELAY: return MSG_CMD_DELAY;
    case BCMD_PUBLISH: return MSG_CMD_PUBLISH;
    case BCMD_DIRECT: return MSG_CMD_DIRECT;
    }
    return 0;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* ---- payload pattern: every request's bytes depend on (connection, seq) ---- */

static uint64_t mix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t pattern_key(int conn_index, uint64_t seq)
{
    return mix64(((uint64_t)(unsigned)conn_index << 40) ^ seq);
}

/* Payloads: one template of cfg.size bytes made once, with the request's
 * 8-byte key stamped at the start of every 4 KiB block. A flipped byte
 * anywhere differs from the template, and a reply carrying another request's
 * payload has the wrong keys; checking is a memcmp per block. */
#define PATTERN_BLOCK 4096

static uint8_t *pattern_tmpl; /* cfg.size bytes, read-only once the threads run */

/* --payload text: words from a short list with a number now and then, about
 * what a log line or a JSON document compresses to (zstd level 1: ~4x). */
static void pattern_text(uint8_t *p, size_t size)
{
    static const char *const words[] = {
        "the", "of", "and", "message", "server", "client", "reactor", "payload", "frame",
        "connection", "request", "reply", "status", "ok", "error", "timeout", "user", "id",
        "topic", "level", "info", "debug", "value", "count", "time", "node", "queue", "data"};
    size_t at = 0;
    uint64_t w = 0x9E3779B97F4A7C15ull;
    while (at < size) {
        char tok[32];
        w = mix64(w);
        int k = w % 8 == 0 ? snprintf(tok, sizeof tok, "%u ", (unsigned)(w >> 32) % 100000)
                           : snprintf(tok, sizeof tok, "%s%s",
                                      words[(w >> 8) % (sizeof words / sizeof words[0])],
                                      (w >> 16) % 12 == 0 ? "\n" : " ");
        for (int i = 0; i < k && at < size; i++)
            p[at++] = (uint8_t)tok[i];
    }
}

static int pattern_init(size_t size)
{
    pattern_tmpl = malloc(size ? size : 1);
    if (!pattern_tmpl)
        return -ENOMEM;
    if (cfg.text) {
        pattern_text(pattern_tmpl, size);
        return 0;
    }
    uint64_t w = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < size; i++) {
        if (i % 8 == 0)
            w = mix64(w + i);
        pattern_tmpl[i] = (uint8_t)(w >> (8 * (i % 8)));
    }
    return 0;
}

static void key_bytes(uint64_t key, uint8_t out[8])
{
    for (int b = 0; b < 8; b++)
        out[b] = (uint8_t)(key >> (8 * b));
}

/* Fills a whole payload of n (== cfg.size) bytes for key. */
static void pattern_fill(uint8_t *p, size_t n, uint64_t key)
{
    uint8_t k8[8];
    key_bytes(key, k8);
    memcpy(p, pattern_tmpl, n);
    for (size_t at = 0; at + 8 <= n; at += PATTERN_BLOCK)
        memcpy(p + at, k8, 8);
}

/* Checks n bytes that should sit at offset off of key's payload. */
static bool pattern_check(const uint8_t *p, size_t n, uint64_t key, size_t off)
{
    uint8_t k8[8];
    key_bytes(key, k8);
    size_t pos = off, end = off + n;
    while (pos < end) {
        size_t block = pos / PATTERN_BLOCK * PATTERN_BLOCK;
        size_t upto;
        const uint8_t *want;
        if (block + 8 <= cfg.size && pos < block + 8) {   /* inside a stamp */
            upto = end < block + 8 ? end : block + 8;
            want = k8 + (pos - block);
        } else {
            upto = end < block + PATTERN_BLOCK ? end : block + PATTERN_BLOCK;
            want = pattern_tmpl + pos;
        }
        if (memcmp(p + (pos - off), want, upto - pos) != 0)
            return false;
        pos = upto;
    }
    return true;
}

/* ---- log-bucket latency histogram (nanoseconds, ~3% resolution) ----------- */

#define HIST_SUB_BITS 5
#define HIST_SUB (1u << HIST_SUB_BITS)           /* sub-buckets per power of two */
#define HIST_MAX_BITS 42                          /* values up to 2^42 ns (~73 min) */
#define HIST_BUCKETS ((HIST_MAX_BITS - HIST_SUB_BITS) * HIST_SUB + 2 * HIST_SUB)

struct hist {
    uint64_t counts[HIST_BUCKETS];
    uint64_t total;
    uint64_t min;
    uint64_t max;
    double sum;
};

static unsigned hist_index(uint64_t v)
{
    if (v < 2 * HIST_SUB)
        return (unsigned)v;
    if (v >= (1ull << HIST_MAX_BITS))
        v = (1ull << HIST_MAX_BITS) - 1;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - HIST_SUB_BITS;                 /* >= 1 */
    return shift * HIST_SUB + (unsigned)(v >> shift);     /* top is 32..63 */
}

/* The largest value that lands in bucket i. */
static uint64_t hist_upper(unsigned i)
{
    if (i < 2 * HIST_SUB)
        return i;
    unsigned shift = i / HIST_SUB - 1;
    uint64_t top = i - shift * HIST_SUB;
    return ((top + 1) << shift) - 1;
}

static void hist_add(struct hist *h, uint64_t v)
{
    h->counts[hist_index(v)]++;
    if (h->total == 0 || v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->total++;
    h->sum += (double)v;
}

static void hist_merge(struct hist *into, const struct hist *from)
{
    if (from->total == 0)
        return;
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        into->counts[i] += from->counts[i];
    if (into->total == 0 || from->min < into->min)
        into->min = from->min;
    if (from->max > into->max)
        into->max = from->max;
    into->total += from->total;
    into->sum += from->sum;
}

/* The value at quantile q (0..1): the upper edge of its bucket, within [min, max]. */
static uint64_t hist_quantile(const struct hist *h, double q)
{
    if (h->total == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->total + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > h->total)
        rank = h->total;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t v = hist_upper(i);
            return v > h->max ? h->max : v < h->min ? h->min : v;
        }
    }
    return h->max;
}

/* ---- threads and connections -------------------------------------------------- */

struct inflight {
    uint64_t seq;
    uint64_t t0;                   /* intended (open loop) or actual send time, ns */
};

struct bench_thread;

struct bench_conn {
    struct bench_thread *th;
    int index;                     /* global connection number */
    int fd;
    ev_io rio;
    ev_io wio;
    struct buffer in;
    struct buffer out;
    struct inflight *q;            /* ring of requests waiting for replies */
    size_t qcap, qhead, qlen;
    uint64_t next_seq;
    size_t echo_off;               /* echo protocol: bytes of the head reply checked */
    bool echo_bad;                 /* echo protocol: the head reply has a wrong byte */
    bool connecting;
    bool handshaking;              /* --tls: connected, the handshake under way */
    struct ssl_st *ssl;            /* --tls: the session, or NULL */
    bool dead;
    bool goaway;
    bool auth_pending;             /* AUTH sent, its reply not read yet */
    bool hello_pending;            /* HELLO sent, its reply not read yet */
    enum codec_id codec;           /* what HELLO agreed */
    size_t compress_min;           /* the server's, from HELLO */
    uint64_t last_rx;              /* last progress: a byte received, the connect
                                    * started, or the first owed reply queued (ns) */
};

struct bench_thread {
    int id;
    pthread_t tid;
    struct ev_loop *loop;
    struct bench_conn *conns;
    int nconns;
    int live;                      /* connections not dead */
    uint64_t inflight;             /* sum of qlen over the connections */
    uint64_t budget;               /* requests to issue (UINT64_MAX: until the deadline) */
    uint64_t issued;               /* issued, or given up as NOT_SENT */
    uint64_t end_ns;               /* stop issuing here (0: no deadline) */
    double rate;                   /* requests/s for this thread; 0: closed loop */
    uint64_t rate_k;               /* open loop: index of the next request */
    int rr;                        /* open loop: next connection to use */
    bool issuing_done;
    bool finished;
    /* The output buffer lent to the connection being served while it has
     * nothing queued (conn_read_cb): requests are built in memory that stays
     * hot in the cache instead of in one buffer per connection. */
    struct buffer scratch;
    struct codec_ctx *zctx;        /* --compress: this thread's codec state */
    struct buffer zplain;          /* a request's payload before compression */
    struct buffer zin;             /* a reply's payload after decompression */
    ev_timer rate_timer;
    ev_timer deadline_timer;
    ev_timer tick_timer;
    /* results, this thread's only until it is done */
    uint64_t answered;             /* replies read (good, bad or error) */
    uint64_t ok;
    uint64_t errors[ERR_KINDS];
    uint64_t bytes_out;
    uint64_t bytes_in;
    uint64_t server_pings;
    uint64_t messages;
    uint64_t delivers;             /* DELIVER pushes received (well formed) */
    uint64_t compressed_out;       /* requests sent compressed */
    uint64_t compressed_in;        /* frames received compressed */
    uint64_t connected;            /* connections that came up */
    uint64_t finish_ns;
    struct hist hist;
    /* progress snapshot for the main thread */
    _Atomic uint64_t p_answered;
    _Atomic uint64_t p_errors;
    _Atomic uint64_t p_bytes;
};

static pthread_mutex_t done_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cond;
static int done_threads;

static uint64_t error_total(const struct bench_thread *th)
{
    uint64_t n = 0;
    for (int k = 0; k < ERR_KINDS; k++)
        n += th->errors[k];
    return n;
}

static void thread_publish(struct bench_thread *th)
{
    atomic_store_explicit(&th->p_answered, th->answered, memory_order_relaxed);
    atomic_store_explicit(&th->p_errors, error_total(th), memory_order_relaxed);
    atomic_store_explicit(&th->p_bytes, th->bytes_in + th->bytes_out, memory_order_relaxed);
}

static void maybe_finish(struct bench_thread *th)
{
    if (th->finished)
        return;
    if (!th->issuing_done) {
        if (th->live == 0 || th->issued >= th->budget)
            th->issuing_done = true;
        else
            return;
    }
    if (th->inflight > 0 && th->live > 0)
        return;
    th->finished = true;
    th->finish_ns = now_ns();
    ev_break(th->loop, EVBREAK_ALL);
}

static int inflight_push(struct bench_conn *c, uint64_t seq, uint64_t t0)
{
    if (c->qlen == c->qcap) {
        size_t ncap = c->qcap ? c->qcap * 2 : 16;
        struct inflight *nq = malloc(ncap * sizeof *nq);
        if (!nq)
            return -ENOMEM;
        for (size_t i = 0; i < c->qlen; i++)
            nq[i] = c->q[(c->qhead + i) % c->qcap];
        free(c->q);
        c->q = nq;
        c->qcap = ncap;
        c->qhead = 0;
    }
    if (c->qlen == 0)
        c->last_rx = now_ns();          /* the stall clock starts with the first owed reply */
    c->q[(c->qhead + c->qlen) % c->qcap] = (struct inflight){seq, t0};
    c->qlen++;
    c->th->inflight++;
    return 0;
}

static struct inflight inflight_pop(struct bench_conn *c)
{
    struct inflight f = c->q[c->qhead];
    c->qhead = (c->qhead + 1) % c->qcap;
    c->qlen--;
    c->th->inflight--;
    return f;
}

/* Closes c; requests it still owed count as `kind` (none: not counted). */
static void conn_kill(struct bench_conn *c, int kind)
{
    if (c->dead)
        return;
    struct bench_thread *th = c->th;
    if (kind >= 0)
        th->errors[kind] += c->qlen;
    th->inflight -= c->qlen;
    c->qlen = 0;
    c->dead = true;
    if (c->fd >= 0) {
        ev_io_stop(th->loop, &c->rio);
        ev_io_stop(th->loop, &c->wio);
        msgclient_tls_free(c->ssl);
        c->ssl = NULL;
        close(c->fd);
        c->fd = -1;
    }
    buffer_free(&c->in);
    buffer_free(&c->out);
    th->live--;
    maybe_finish(th);
}

/* The server closed c or an I/O call on it failed. */
static void conn_lost(struct bench_conn *c)
{
    struct bench_thread *th = c->th;
    if (c->qlen == 0 && !c->goaway && !th->issuing_done)
        th->errors[ERR_CLOSED]++;       /* lost the connection itself mid-run */
    conn_kill(c, ERR_CLOSED);
}

/* send(2) and recv(2), or their TLS counterparts (same results). */
static ssize_t conn_send(struct bench_conn *c, const void *p, size_t n)
{
    if (c->ssl)
        return msgclient_tls_send(c->ssl, p, n);
    return send(c->fd, p, n, MSG_NOSIGNAL);
}

static ssize_t conn_recv(struct bench_conn *c, void *p, size_t n)
{
    if (c->ssl)
        return msgclient_tls_recv(c->ssl, p, n);
    return recv(c->fd, p, n, 0);
}

static void conn_flush(struct bench_conn *c)
{
    if (c->dead || c->connecting || c->handshaking)
        return;
    while (buffer_readable(&c->out) > 0) {
        ssize_t n = conn_send(c, buffer_peek(&c->out), buffer_readable(&c->out));
        if (n > 0) {
            c->th->bytes_out += (uint64_t)n;
            buffer_consume(&c->out, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ev_io_start(c->th->loop, &c->wio);
            return;
        }
        conn_lost(c);
        return;
    }
    ev_io_stop(c->th->loop, &c->wio);
    buffer_shrink(&c->out, 1 << 20);
}

/* A msg request's payload: the command's prefix (pre bytes), then the
 * pattern for key. */
static void payload_fill(uint8_t *p, size_t pre, uint64_t key)
{
    if (cfg.cmd == BCMD_DELAY) {
        msg_put_u32(p, cfg.delay_ms);
    } else if (cfg.cmd == BCMD_PUBLISH) {
        p[0] = (uint8_t)strlen(BENCH_TOPIC);
        memcpy(p + 1, BENCH_TOPIC, strlen(BENCH_TOPIC));
    } else if (cfg.cmd == BCMD_DIRECT) {
        msgclient_encode_direct(p, pre, cfg.to, cfg.to_len, NULL, 0); /* the message follows */
    }
    pattern_fill(p + pre, cfg.size, key);
}

/* Appends a request compressed with c's codec (plain when that is not
 * smaller). Returns 0 or -ENOMEM. */
static int conn_issue_compressed(struct bench_conn *c, size_t pre, uint64_t key)
{
    struct bench_thread *th = c->th;
    size_t len = pre + cfg.size;
    buffer_consume(&th->zplain, buffer_readable(&th->zplain));
    if (buffer_reserve(&th->zplain, len) < 0)
        return -ENOMEM;
    payload_fill(buffer_tail(&th->zplain), pre, key);
    buffer_commit(&th->zplain, len);
    size_t at = buffer_readable(&c->out);
    if (buffer_reserve(&c->out, MSG_HEADER_LEN + codec_bound(c->codec, len)) < 0)
        return -ENOMEM;
    buffer_commit(&c->out, MSG_HEADER_LEN);
    long n = codec_compress(th->zctx, c->codec, 1, buffer_peek(&th->zplain), len, &c->out);
    if (n == -ENOMEM)
        return -ENOMEM;
    uint32_t word = cmd_number(cfg.cmd);
    if (n < 0 || (size_t)n >= len) {        /* not smaller: plain */
        c->out.wpos = c->out.rpos + at + MSG_HEADER_LEN;
        buffer_append(&c->out, buffer_peek(&th->zplain), len);
        n = (long)len;
    } else {
        word |= MSG_FLAG_COMPRESSED;
        th->compressed_out++;
    }
    msg_header_encode(buffer_peek(&c->out) + at, word, (uint32_t)n);
    return 0;
}

/* Appends one request to c's output and its in-flight queue. */
static int conn_issue(struct bench_conn *c, uint64_t t0)
{
    uint64_t seq = c->next_seq++;
    uint64_t key = pattern_key(c->index, seq);
    size_t s = cfg.size;
    if (cfg.proto == PROTO_ECHO) {
        if (buffer_reserve(&c->out, s) < 0)
            return -ENOMEM;
        pattern_fill(buffer_tail(&c->out), s, key);
        buffer_commit(&c->out, s);
    } else {
        size_t pre = 0;
        if (cfg.cmd == BCMD_DELAY)
            pre = 4;
        else if (cfg.cmd == BCMD_PUBLISH)
            pre = 1 + strlen(BENCH_TOPIC);
        else if (cfg.cmd == BCMD_DIRECT)
            pre = 1 + cfg.to_len;
        if (c->codec != CODEC_NONE && pre + s >= c->compress_min) {
            if (conn_issue_compressed(c, pre, key) < 0)
                return -ENOMEM;
        } else {
            if (buffer_reserve(&c->out, MSG_HEADER_LEN + pre + s) < 0)
                return -ENOMEM;
            uint8_t *p = buffer_tail(&c->out);
            msg_header_encode(p, cmd_number(cfg.cmd), (uint32_t)(pre + s));
            payload_fill(p + MSG_HEADER_LEN, pre, key);
            buffer_commit(&c->out, MSG_HEADER_LEN + pre + s);
        }
    }
    if (inflight_push(c, seq, t0) < 0)
        return -ENOMEM;
    c->th->issued++;
    return 0;
}

/* Closed loop: a connection takes requests once it is up and authenticated.
 * Open loop: as soon as it exists (the bytes wait behind the connect and the
 * AUTH, and that wait counts in the latency). */
static bool conn_can_issue(const struct bench_conn *c)
{
    if (c->dead || c->goaway)
        return false;
    return c->th->rate > 0 ||
           (!c->auth_pending && !c->hello_pending && !c->connecting && !c->handshaking);
}

/* Closed loop: keeps the pipeline of c full while there is work left. */
static void conn_refill(struct bench_conn *c)
{
    struct bench_thread *th = c->th;
    if (th->rate > 0 || th->issuing_done)
        return;
    uint64_t now = 0;
    while (conn_can_issue(c) && c->qlen < (size_t)cfg.pipeline &&
           th->issued < th->budget) {
        if (!now) {
            now = now_ns();
            if (th->end_ns && now >= th->end_ns) {
                th->issuing_done = true;
                break;
            }
        }
        if (conn_issue(c, now) < 0) {
            conn_kill(c, ERR_CLOSED);
            return;
        }
    }
}

/* The value of key in HELLO's key=value lines, or NULL (*vlen its length). */
static const uint8_t *hello_value(const uint8_t *p, size_t len, const char *key, size_t *vlen)
{
    size_t klen = strlen(key), i = 0;
    while (i < len) {
        const uint8_t *nl = memchr(p + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - p) : len;
        if (end - i > klen && p[i + klen] == '=' && memcmp(p + i, key, klen) == 0) {
            *vlen = end - i - klen - 1;
            return p + i + klen + 1;
        }
        i = end + 1;
    }
    return NULL;
}

/* Takes the codec and compress_min from HELLO's reply. */
static void hello_apply(struct bench_conn *c, const uint8_t *p, size_t len)
{
    size_t vlen;
    const uint8_t *v = hello_value(p, len, "compress", &vlen);
    c->codec = v ? codec_by_name((const char *)v, vlen) : CODEC_NONE;
    c->compress_min = 1024;
    v = hello_value(p, len, "compress_min", &vlen);
    if (v && vlen > 0 && vlen < 20) {
        char num[24];
        memcpy(num, v, vlen);
        num[vlen] = '\0';
        c->compress_min = (size_t)strtoull(num, NULL, 10);
    }
}

/* One msg-protocol reply for the head request. */
static void conn_msg_reply(struct bench_conn *c, uint32_t cmd, const uint8_t *p, size_t len)
{
    struct bench_thread *th = c->th;
    uint32_t want = cmd_number(cfg.cmd);
    if (c->hello_pending) {
        /* HELLO's reply (an error reply: a server older than HELLO, no codec) */
        c->hello_pending = false;
        if (cmd == (MSG_FLAG_REPLY | MSG_CMD_HELLO))
            hello_apply(c, p, len);
        return;
    }
    if (c->auth_pending) {
        c->auth_pending = false;
        if (cmd == (MSG_FLAG_REPLY | MSG_CMD_AUTH))
            return;
        uint32_t code = len >= 4 ? msg_get_u32(p) : 0;
        th->errors[cmd == (MSG_FLAG_REPLY | MSG_FLAG_ERROR | MSG_CMD_AUTH) && code >= 1 &&
                   code <= MSG_ERR_MAX ? (int)code : ERR_BAD_REPLY]++;
        conn_kill(c, ERR_CLOSED);
        return;
    }
    if (c->qlen == 0) {
        th->errors[ERR_BAD_REPLY]++;    /* a reply nobody asked for */
        return;
    }
    struct inflight f = inflight_pop(c);
    th->answered++;
    if (cmd == (MSG_FLAG_REPLY | MSG_FLAG_ERROR | want)) {
        uint32_t code = len >= 4 ? msg_get_u32(p) : 0;
        th->errors[code >= 1 && code <= MSG_ERR_MAX ? (int)code : ERR_OTHER_CODE]++;
        return;
    }
    bool good = cmd == (MSG_FLAG_REPLY | want);
    if (good) {
        if (cfg.cmd == BCMD_PUBLISH) {
            good = len == 4;
        } else if (cfg.cmd == BCMD_DIRECT) {
            uint32_t local, remote;
            good = msgclient_decode_direct_reply(p, len, &local, &remote) == 0;
        } else
            good = len == cfg.size && pattern_check(p, len, pattern_key(c->index, f.seq), 0);
    }
    if (!good) {
        th->errors[ERR_BAD_REPLY]++;
        return;
    }
    th->ok++;
    uint64_t now = now_ns();
    hist_add(&th->hist, now > f.t0 ? now - f.t0 : 0);
}

/* Handles every whole frame in c's input. */
static void conn_msg_input(struct bench_conn *c)
{
    struct bench_thread *th = c->th;
    while (!c->dead && buffer_readable(&c->in) > 0) {
        struct msg_header h;
        long r = msg_split(buffer_peek(&c->in), buffer_readable(&c->in), cfg.max_frame, &h);
        if (r == 0)
            break;
        if (r < 0) {
            th->errors[ERR_PROTOCOL]++;
            conn_kill(c, ERR_CLOSED);
            return;
        }
        const uint8_t *p = buffer_peek(&c->in) + MSG_HEADER_LEN;
        uint32_t cmd = h.command;
        size_t len = h.length;
        if (cmd & MSG_FLAG_COMPRESSED) {
            buffer_consume(&th->zin, buffer_readable(&th->zin));
            long n = c->codec == CODEC_NONE ? -EBADMSG :
                     codec_decompress(th->zctx, c->codec, p, len, cfg.max_frame, &th->zin);
            if (n < 0) {
                th->errors[ERR_PROTOCOL]++;
                conn_kill(c, ERR_CLOSED);
                return;
            }
            th->compressed_in++;
            cmd &= ~MSG_FLAG_COMPRESSED;
            p = buffer_peek(&th->zin);
            len = (size_t)n;
        }
        if (cmd == MSG_CMD_PING) {
            uint8_t hdr[MSG_HEADER_LEN];
            msg_header_encode(hdr, MSG_FLAG_REPLY | MSG_CMD_PING, (uint32_t)len);
            if (buffer_append(&c->out, hdr, sizeof hdr) < 0 ||
                buffer_append(&c->out, p, len) < 0) {
                conn_kill(c, ERR_CLOSED);
                return;
            }
            th->server_pings++;
        } else if (cmd == MSG_CMD_MESSAGE) {
            th->messages++;
        } else if (cmd == MSG_CMD_DELIVER) {
            /* u8 sender length (0: none), sender, message: a length past
             * the end is a wrong frame from the server */
            if (len >= 1 && 1 + (size_t)p[0] <= len)
                th->delivers++;
            else
                th->errors[ERR_BAD_REPLY]++;
        } else if (cmd == MSG_CMD_GOAWAY) {
            if (!c->goaway)
                th->errors[ERR_GOAWAY]++;
            c->goaway = true;
        } else if (cmd == MSG_CONN_ERROR) {
            uint32_t code = len >= 4 ? msg_get_u32(p) : 0;
            th->errors[code >= 1 && code <= MSG_ERR_MAX ? (int)code : ERR_OTHER_CODE]++;
            c->goaway = true;           /* the close that follows is not news */
        } else if (cmd & MSG_FLAG_REPLY) {
            conn_msg_reply(c, cmd, p, len);
        } else {
            th->errors[ERR_BAD_REPLY]++; /* a push we do not know */
        }
        if (!c->dead)
            buffer_consume(&c->in, (size_t)r);
    }
}

/* Echo protocol: checks received bytes against the requests in flight. */
static void conn_echo_input(struct bench_conn *c, const uint8_t *p, size_t n)
{
    struct bench_thread *th = c->th;
    while (n > 0 && !c->dead) {
        if (c->qlen == 0) {
            th->errors[ERR_BAD_REPLY]++;    /* bytes nobody sent */
            conn_kill(c, ERR_CLOSED);
            return;
        }
        struct inflight *f = &c->q[c->qhead];
        size_t take = cfg.size - c->echo_off;
        if (take > n)
            take = n;
        if (!c->echo_bad && !pattern_check(p, take, pattern_key(c->index, f->seq), c->echo_off))
            c->echo_bad = true;
        c->echo_off += take;
        p += take;
        n -= take;
        if (c->echo_off == cfg.size) {
            struct inflight done = inflight_pop(c);
            th->answered++;
            if (c->echo_bad) {
                th->errors[ERR_BAD_REPLY]++;
            } else {
                th->ok++;
                uint64_t now = now_ns();
                hist_add(&th->hist, now > done.t0 ? now - done.t0 : 0);
            }
            c->echo_off = 0;
            c->echo_bad = false;
        }
    }
}

/* Swaps c's empty output buffer with the thread's scratch one. Returns true
 * when it did (out_return must follow). */
static bool out_lend(struct bench_conn *c)
{
    if (buffer_readable(&c->out) > 0)
        return false;
    struct buffer t = c->out;
    c->out = c->th->scratch;
    c->th->scratch = t;
    return true;
}

/* Swaps back once what was written went out; bytes the socket did not take
 * stay with c, and c's own buffer becomes the thread's scratch. */
static void out_return(struct bench_conn *c)
{
    if (c->dead || buffer_readable(&c->out) > 0)
        return;
    struct buffer t = c->out;
    c->out = c->th->scratch;
    c->th->scratch = t;
}

static void conn_handshake(struct bench_conn *c);

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct bench_conn *c = w->data;
    struct bench_thread *th = c->th;
    if (c->handshaking) {
        conn_handshake(c);
        return;
    }
    for (int round = 0; round < 4 && !c->dead; round++) {
        ssize_t n;
        if (cfg.proto == PROTO_ECHO) {
            uint8_t buf[READ_CHUNK];
            n = conn_recv(c, buf, sizeof buf);
            if (n > 0) {
                th->bytes_in += (uint64_t)n;
                c->last_rx = now_ns();
                conn_echo_input(c, buf, (size_t)n);
            }
        } else {
            if (buffer_reserve(&c->in, READ_CHUNK) < 0) {
                conn_kill(c, ERR_CLOSED);
                return;
            }
            n = conn_recv(c, buffer_tail(&c->in), buffer_writable(&c->in));
            if (n > 0) {
                th->bytes_in += (uint64_t)n;
                c->last_rx = now_ns();
                buffer_commit(&c->in, (size_t)n);
                conn_msg_input(c);
            }
        }
        if (n == 0) {
            conn_lost(c);
            return;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            conn_lost(c);
            return;
        }
        if ((size_t)n < READ_CHUNK && !c->ssl)
            break;                  /* (TLS hands over one record per read) */
    }
    if (c->dead)
        return;
    if (c->ssl && msgclient_tls_pending(c->ssl))
        ev_feed_event(loop, &c->rio, EV_READ);  /* decrypted already: libev cannot see it */
    bool lent = out_lend(c);
    conn_refill(c);
    conn_flush(c);
    if (lent)
        out_return(c);
    if (!c->dead)
        buffer_shrink(&c->in, 1 << 20);
    maybe_finish(th);
}

/* Up (and through TLS when --tls): requests may flow. */
static void conn_ready(struct bench_conn *c)
{
    c->th->connected++;
    ev_io_start(c->th->loop, &c->rio);
    conn_refill(c);
    conn_flush(c);
}

/* --tls: one step of the handshake, without blocking: it waits on rio or
 * wio as OpenSSL asks, and a failure kills the connection (ERR_TLS; the
 * first failure's reason goes to stderr). The stall check (--timeout)
 * covers a handshake that stops halfway. */
static void conn_handshake(struct bench_conn *c)
{
    struct bench_thread *th = c->th;
    char err[256];
    short ev = 0;
    int rc = msgclient_tls_step(c->ssl, &ev, err, sizeof err);
    if (rc < 0) {
        if (atomic_exchange(&tls_error_said, 1) == 0)
            fprintf(stderr, "%s: %s: %s\n", "msgbench", cfg.addr_text, err);
        th->errors[ERR_TLS]++;
        conn_kill(c, ERR_CLOSED);
        return;
    }
    if (rc == 0) {
        c->last_rx = now_ns();
        if (ev & POLLIN) {
            ev_io_stop(th->loop, &c->wio);
            ev_io_start(th->loop, &c->rio);
        } else {
            ev_io_stop(th->loop, &c->rio);
            ev_io_start(th->loop, &c->wio);
        }
        return;
    }
    c->handshaking = false;
    ev_io_stop(th->loop, &c->wio);
    conn_ready(c);
}

static void conn_connected(struct bench_conn *c)
{
    c->connecting = false;
    if (!cfg.tls) {
        conn_ready(c);
        return;
    }
    char err[256];
    c->ssl = msgclient_tls_new(cfg.tls_ctx, c->fd, cfg.tls_host[0] ? cfg.tls_host : NULL,
                               NULL, err, sizeof err);
    if (!c->ssl) {
        if (atomic_exchange(&tls_error_said, 1) == 0)
            fprintf(stderr, "%s: %s\n", "msgbench", err);
        c->th->errors[ERR_TLS]++;
        conn_kill(c, ERR_CLOSED);
        return;
    }
    c->handshaking = true;
    conn_handshake(c);
}

static void conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct bench_conn *c = w->data;
    if (c->handshaking) {
        conn_handshake(c);
        return;
    }
    if (c->connecting) {
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
            soerr = errno;
        if (soerr == EINPROGRESS)
            return;
        if (soerr) {
            c->th->errors[ERR_CONNECT]++;
            conn_kill(c, ERR_CLOSED);
            return;
        }
        ev_io_stop(c->th->loop, &c->wio);
        conn_connected(c);
        return;
    }
    conn_flush(c);
}

static void conn_start(struct bench_conn *c)
{
    struct bench_thread *th = c->th;
    c->fd = -1;
    c->last_rx = now_ns();
    int fd = socket(cfg.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        th->errors[ERR_CONNECT]++;
        conn_kill(c, -1);
        return;
    }
    if (cfg.addr.ss_family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    c->fd = fd;
    ev_io_init(&c->rio, conn_read_cb, fd, EV_READ);
    ev_io_init(&c->wio, conn_write_cb, fd, EV_WRITE);
    c->rio.data = c;
    c->wio.data = c;
    if (cfg.compress_arg && cfg.proto == PROTO_MSG) {
        char hello[128];
        int hl = snprintf(hello, sizeof hello, "client=msgbench\ncompress=");
        for (int i = 0; i < cfg.compress.n; i++)
            hl += snprintf(hello + hl, sizeof hello - (size_t)hl, "%s%s", i ? "," : "",
                           codec_name((enum codec_id)cfg.compress.id[i]));
        hl += snprintf(hello + hl, sizeof hello - (size_t)hl, "\n");
        uint8_t h[MSG_HEADER_LEN];
        msg_header_encode(h, MSG_CMD_HELLO, (uint32_t)hl);
        if (buffer_append(&c->out, h, sizeof h) < 0 ||
            buffer_append(&c->out, hello, (size_t)hl) < 0) {
            th->errors[ERR_CONNECT]++;
            conn_kill(c, -1);
            return;
        }
        c->hello_pending = true;
    }
    if (cfg.token && cfg.proto == PROTO_MSG) {
        uint8_t h[MSG_HEADER_LEN];
        size_t tl = strlen(cfg.token);
        msg_header_encode(h, MSG_CMD_AUTH, (uint32_t)tl);
        if (buffer_append(&c->out, h, sizeof h) < 0 || buffer_append(&c->out, cfg.token, tl) < 0) {
            th->errors[ERR_CONNECT]++;
            conn_kill(c, -1);
            return;
        }
        c->auth_pending = true;
    }
    if (connect(fd, (const struct sockaddr *)&cfg.addr, cfg.addrlen) == 0) {
        conn_connected(c);
        return;
    }
    if (errno == EINPROGRESS || errno == EAGAIN) {
        c->connecting = true;
        ev_io_start(th->loop, &c->wio);
        return;
    }
    th->errors[ERR_CONNECT]++;
    conn_kill(c, -1);
}

/* Open loop: sends every request whose intended time has come, then sleeps
 * until the next one is due. */
static void rate_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct bench_thread *th = w->data;
    if (th->issuing_done)
        return;
    uint64_t now = now_ns();
    uint64_t next = 0;
    while (th->issued < th->budget) {
        uint64_t t = cfg.start_ns + (uint64_t)((double)th->rate_k * 1e9 / th->rate);
        if (th->end_ns && t >= th->end_ns) {
            th->issuing_done = true;
            break;
        }
        if (t > now) {
            next = t;
            break;
        }
        struct bench_conn *c = NULL;
        for (int i = 0; i < th->nconns; i++) {
            struct bench_conn *cand = &th->conns[(th->rr + i) % th->nconns];
            if (conn_can_issue(cand)) {
                c = cand;
                th->rr = (th->rr + i + 1) % th->nconns;
                break;
            }
        }
        th->rate_k++;
        if (!c) {
            th->errors[ERR_NOT_SENT]++;     /* due, but no connection can take it */
            th->issued++;
            continue;
        }
        if (conn_issue(c, t) < 0)
            conn_kill(c, ERR_CLOSED);
    }
    for (int i = 0; i < th->nconns; i++)
        if (!th->conns[i].dead && buffer_readable(&th->conns[i].out) > 0)
            conn_flush(&th->conns[i]);
    if (next && !th->issuing_done && !th->finished) {
        uint64_t after = next - now;
        ev_timer_set(w, (double)after / 1e9, 0.);
        ev_timer_start(loop, w);
    }
    maybe_finish(th);
}

static void deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct bench_thread *th = w->data;
    uint64_t now = now_ns();
    if (now < th->end_ns) {             /* libev's clock may run a little ahead of ours */
        ev_timer_set(w, (double)(th->end_ns - now) / 1e9, 0.);
        ev_timer_start(loop, w);
        return;
    }
    th->issuing_done = true;
    maybe_finish(th);
}

/* Every TICK_S: the stop flag, connections with nothing received for too long,
 * and the progress snapshot. */
static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct bench_thread *th = w->data;
    if (atomic_load_explicit(&stop_requested, memory_order_relaxed))
        th->issuing_done = true;
    uint64_t now = now_ns();
    uint64_t limit = (uint64_t)(cfg.timeout * 1e9);
    for (int i = 0; i < th->nconns; i++) {
        struct bench_conn *c = &th->conns[i];
        if (c->dead || (c->qlen == 0 && !c->connecting && !c->handshaking &&
                        !c->auth_pending && !c->hello_pending))
            continue;
        if (now - c->last_rx < limit)
            continue;
        if (c->handshaking)
            th->errors[ERR_TLS]++;
        else if (c->connecting || c->auth_pending || c->hello_pending)
            th->errors[ERR_CONNECT]++;
        conn_kill(c, ERR_TIMEOUT);
    }
    thread_publish(th);
    maybe_finish(th);
}

static void *thread_main(void *arg)
{
    struct bench_thread *th = arg;
    th->live = th->nconns;
    if (cfg.compress_arg && !(th->zctx = codec_ctx_new())) {
        for (int i = 0; i < th->nconns; i++)
            conn_kill(&th->conns[i], -1);
        th->finished = true;
    }
    for (int i = 0; i < th->nconns && !th->finished; i++)
        conn_start(&th->conns[i]);
    ev_now_update(th->loop);            /* the connects took time: timers count from now */
    ev_timer_init(&th->tick_timer, tick_cb, TICK_S, TICK_S);
    th->tick_timer.data = th;
    ev_timer_start(th->loop, &th->tick_timer);
    if (th->end_ns && th->rate == 0) {  /* open loop: rate_cb stops at end_ns itself */
        uint64_t now = now_ns();
        ev_timer_init(&th->deadline_timer, deadline_cb,
                      th->end_ns > now ? (double)(th->end_ns - now) / 1e9 : 0., 0.);
        th->deadline_timer.data = th;
        ev_timer_start(th->loop, &th->deadline_timer);
    }
    if (th->rate > 0) {
        ev_timer_init(&th->rate_timer, rate_cb, 0., 0.);
        th->rate_timer.data = th;
        ev_timer_start(th->loop, &th->rate_timer);
    }
    maybe_finish(th);
    if (!th->finished) {
        ev_now_update(th->loop);
        ev_run(th->loop, 0);
    }
    if (!th->finished)
        th->finish_ns = now_ns();
    for (int i = 0; i < th->nconns; i++)
        conn_kill(&th->conns[i], ERR_CLOSED);
    if (th->budget != UINT64_MAX && th->issued < th->budget)
        th->errors[ERR_NOT_SENT] += th->budget - th->issued;
    ev_timer_stop(th->loop, &th->tick_timer);
    ev_timer_stop(th->loop, &th->deadline_timer);
    ev_timer_stop(th->loop, &th->rate_timer);
    thread_publish(th);
    pthread_mutex_lock(&done_lock);
    done_threads++;
    pthread_cond_signal(&done_cond);
    pthread_mutex_unlock(&done_lock);
    return NULL;
}

/* ---- command line ---------------------------------------------------------------- */

static const char *prog = "msgbench";

static void usage(FILE *f)
{
    fprintf(f,
        "usage: msgbench [-h HOST] [-p PORT] [-u unix:/path] [-a TOKEN]\n"
        "                [-t THREADS] [-c CONNECTIONS] [-P PIPELINE] [-s BYTES]\n"
        "                [-d SECONDS | -n REQUESTS] [--rate N]\n"
        "                [--cmd echo|ping|delay|publish|direct] [--to IDENTITY]\n"
        "                [--protocol msg|echo] [--compress CODEC] [--payload random|text]\n"
        "                [--json] [--delay-ms N] [--timeout SECONDS]\n"
        "                [--tls] [--cacert FILE] [--cert FILE --key FILE]\n"
        "\n"
        "  -h HOST           server host (default 127.0.0.1)\n"
        "  -p PORT           server port (default 7700)\n"
        "  -u unix:/path     connect to a unix socket instead\n"
        "  -a TOKEN          AUTH with TOKEN on each connection first (msg protocol)\n"
        "  -t THREADS        threads, one event loop each (default 1; at most CONNECTIONS)\n"
        "  -c CONNECTIONS    connections, spread over the threads (default 10)\n"
        "  -P PIPELINE       requests in flight per connection, closed loop (default 1)\n"
        "  -s BYTES          payload bytes per request (default 64; ping: at most 1024)\n"
        "  -d SECONDS        run this long (default 5), then wait for the replies owed\n"
        "  -n REQUESTS       or send exactly this many requests in all\n"
        "  --rate N          open loop: N requests/s in all, sent on schedule whatever the\n"
        "                    replies do; latency counts from each request's intended send\n"
        "                    time (no coordinated omission); -P is then not a limit\n"
        "  --cmd C           echo (default), ping, delay (DELAY, see --delay-ms), publish\n"
        "                    (PUBLISH to topic \"" BENCH_TOPIC "\") or direct (DIRECT to the\n"
        "                    identity --to; needs -a TOKEN, as DIRECT needs an identity).\n"
        "                    A DIRECT reply must be 8 bytes (two u32 counts)\n"
        "  --to IDENTITY     --cmd direct's target (default \"" BENCH_IDENTITY "\"). Run\n"
        "                    msgcli -a TOKEN listen as that identity to receive them; or\n"
        "                    name the bench's own identity and every DIRECT comes back as\n"
        "                    a DELIVER to each of its connections (-c times the traffic).\n"
        "                    DELIVERs received are counted in the summary\n"
        "  --delay-ms N      the DELAY command's milliseconds (default 0)\n"
        "  --protocol P      msg (default), or echo: raw RFC 862 ping-pong of -s bytes\n"
        "  --compress CODEC  send HELLO offering CODEC (zstd, deflate, a list such as\n"
        "                    zstd,deflate, or none) first on each connection; with a codec\n"
        "                    agreed, requests of at least the server's compress_min go\n"
        "                    compressed (level 1) and compressed replies are decompressed\n"
        "                    and checked. Bytes sent/received count what is on the wire\n"
        "  --payload KIND    random (default: incompressible bytes) or text (words, about\n"
        "                    4x compressible with zstd level 1)\n"
        "  --tls             speak TLS (a tls_listen port): a non-blocking handshake per\n"
        "                    connection, then the protocol inside it; the server's\n"
        "                    certificate is checked against --cacert (or the system's\n"
        "                    CAs) and -h. Bytes sent/received count the plaintext\n"
        "  --cacert FILE     the CA to check the server's certificate with (implies --tls)\n"
        "  --cert FILE --key FILE\n"
        "                    a client certificate and its key (implies --tls)\n"
        "  --timeout SECONDS give up on a connection that answers nothing this long (default 10)\n"
        "  --json            print the summary as one JSON object on stdout\n"
        "  --help            print this and exit\n"
        "\n"
        "Progress goes to stderr once a second; the summary (requests/s, MiB/s sent +\n"
        "received, latency percentiles, errors by code) to stdout. Every echoed byte is\n"
        "checked. Exit status: 0 when every request got a correct reply, 1 when any\n"
        "did not (error replies, wrong bytes, lost connections), 2 for a bad command\n"
        "line or when no connection could be made.\n");
}

__attribute__((format(printf, 1, 2)))
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: usage error: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(try msgbench --help)\n");
    return EXIT_USAGE;
}

static int parse_count(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (!*s || *s == '-' || *s == '+' || *s == ' ')
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

static int parse_seconds(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v > 0) || v > 1e7)
        return -EINVAL;
    *out = v;
    return 0;
}

/* Resolves the target into cfg.addr (the first address msgclient_resolve
 * gives). Returns 0 or -1 (said why). */
static int resolve(const char *host, unsigned port, const char *unix_path)
{
    int rc = msgclient_target(host, port, unix_path, cfg.addr_text, sizeof cfg.addr_text);
    if (rc == -EINVAL) {
        usage_error("-u wants unix:/path (at most %d bytes), not '%s'", MSGCLIENT_UNIX_PATH_MAX,
                    unix_path);
        return -1;
    }
    if (rc < 0) {
        usage_error("-h wants a host name or address, not '%.64s...'", host);
        return -1;
    }
    struct msgclient_addr a;
    char err[512];
    if (msgclient_resolve(cfg.addr_text, &a, 1, err, sizeof err) < 0) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return -1;
    }
    memcpy(&cfg.addr, &a.ss, sizeof cfg.addr);
    cfg.addrlen = a.len;
    return 0;
}

/* ---- reporting -------------------------------------------------------------------- */

struct bench_totals {
    uint64_t answered, ok, errors[ERR_KINDS], error_sum, bytes_out, bytes_in;
    uint64_t server_pings, messages, delivers, connected, issued;
    uint64_t compressed_out, compressed_in;
    double elapsed;
    struct hist hist;
};

static double ms(uint64_t ns) { return (double)ns / 1e6; }

static void print_json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

/* --compress as offered ("zstd,deflate"), or "none". */
static const char *compress_text(void)
{
    static char buf[64];
    size_t at = 0;
    buf[0] = '\0';
    for (int i = 0; i < cfg.compress.n; i++)
        at += (size_t)snprintf(buf + at, sizeof buf - at, "%s%s", i ? "," : "",
                               codec_name((enum codec_id)cfg.compress.id[i]));
    return at ? buf : "none";
}

static void report(const struct bench_totals *t)
{
    double el = t->elapsed > 0 ? t->elapsed : 1e-9;
    double rps = (double)t->answered / el;
    double mibs = (double)(t->bytes_in + t->bytes_out) / el / (1024.0 * 1024.0);
    const struct hist *h = &t->hist;
    static const double qs[] = {0.50, 0.90, 0.99, 0.999};
    static const char *const qnames[] = {"p50", "p90", "p99", "p99_9"};
    static const char *const qlabels[] = {"p50", "p90", "p99", "p99.9"};
    const char *what = cfg.proto == PROTO_ECHO ? "echo" : cmd_name(cfg.cmd);
    if (cfg.json) {
        printf("{\"target\":");
        print_json_string(cfg.addr_text);
        printf(",\"protocol\":\"%s\",\"cmd\":\"%s\",\"threads\":%d,\"connections\":%d,"
               "\"pipeline\":%d,\"payload_bytes\":%zu,\"mode\":\"%s\",\"rate\":%.3f,"
               "\"tls\":%s,",
               cfg.proto == PROTO_ECHO ? "echo" : "msg", what, cfg.threads, cfg.conns,
               cfg.pipeline, cfg.size, cfg.rate > 0 ? "open" : "closed", cfg.rate,
               cfg.tls ? "true" : "false");
        printf("\"duration_s\":%.6f,\"requests\":%llu,\"ok\":%llu,\"errors\":%llu,"
               "\"requests_per_sec\":%.3f,\"mib_per_sec\":%.6f,\"bytes_sent\":%llu,"
               "\"bytes_received\":%llu,\"connections_made\":%llu,\"server_pings\":%llu,"
               "\"delivers\":%llu,\"payload\":\"%s\",\"compress\":\"%s\","
               "\"compressed_sent\":%llu,\"compressed_received\":%llu,",
               t->elapsed, (unsigned long long)t->answered, (unsigned long long)t->ok,
               (unsigned long long)t->error_sum, rps, mibs,
               (unsigned long long)t->bytes_out, (unsigned long long)t->bytes_in,
               (unsigned long long)t->connected, (unsigned long long)t->server_pings,
               (unsigned long long)t->delivers, cfg.text ? "text" : "random", compress_text(),
               (unsigned long long)t->compressed_out, (unsigned long long)t->compressed_in);
        printf("\"latency_ms\":{");
        for (int i = 0; i < 4; i++)
            printf("\"%s\":%.6f,", qnames[i], ms(hist_quantile(h, qs[i])));
        printf("\"max\":%.6f,\"min\":%.6f,\"mean\":%.6f,\"samples\":%llu},", ms(h->max),
               ms(h->min), h->total ? h->sum / (double)h->total / 1e6 : 0.0,
               (unsigned long long)h->total);
        printf("\"errors_by_code\":{");
        bool first = true;
        for (int k = 0; k < ERR_KINDS; k++) {
            if (!t->errors[k])
                continue;
            printf("%s\"%s\":%llu", first ? "" : ",", error_kind_name(k),
                   (unsigned long long)t->errors[k]);
            first = false;
        }
        printf("}}\n");
        return;
    }
    printf("msgbench: %s %s to %s%s, %zu-byte %spayloads, %d connection%s on %d thread%s, ",
           cfg.proto == PROTO_ECHO ? "raw" : "msg", what, cfg.addr_text,
           cfg.tls ? " over TLS" : "", cfg.size,
           cfg.text ? "text " : "", cfg.conns,
           cfg.conns == 1 ? "" : "s", cfg.threads, cfg.threads == 1 ? "" : "s");
    if (cfg.rate > 0)
        printf("open loop at %.0f requests/s\n", cfg.rate);
    else
        printf("pipeline %d\n", cfg.pipeline);
    printf("requests:   %llu answered in %.3f s (%llu ok, %llu errors)\n",
           (unsigned long long)t->answered, t->elapsed, (unsigned long long)t->ok,
           (unsigned long long)t->error_sum);
    printf("throughput: %.1f requests/s, %.2f MiB/s (sent %llu + received %llu bytes)\n", rps,
           mibs, (unsigned long long)t->bytes_out, (unsigned long long)t->bytes_in);
    if (cfg.compress_arg)
        printf("compress:   %s offered; %llu requests sent compressed, %llu replies and pushes "
               "received compressed (bytes above are on the wire)\n", compress_text(),
               (unsigned long long)t->compressed_out, (unsigned long long)t->compressed_in);
    printf("latency:   ");
    for (int i = 0; i < 4; i++)
        printf(" %s %.3f ms,", qlabels[i], ms(hist_quantile(h, qs[i])));
    printf(" max %.3f ms (%llu samples)\n", ms(h->max), (unsigned long long)h->total);
    if (cfg.proto == PROTO_MSG && cfg.cmd == BCMD_DIRECT)
        printf("delivers:   %llu DELIVER pushes received (direct to %s)\n",
               (unsigned long long)t->delivers, cfg.to);
    printf("errors:    ");
    if (t->error_sum == 0)
        printf(" none");
    bool first = true;
    for (int k = 0; k < ERR_KINDS; k++) {
        if (!t->errors[k])
            continue;
        printf("%s %s %llu", first ? "" : ",", error_kind_name(k),
               (unsigned long long)t->errors[k]);
        first = false;
    }
    printf("\n");
}

static void on_signal(int sig)
{
    atomic_store(&stop_requested, 1);
    signal(sig, SIG_DFL);                 /* a second one stops at once */
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *unix_path = NULL;
    unsigned port = 7700;
    uint64_t v;
    bool have_d = false, have_n = false, have_cmd = false;
    cfg.threads = 1;
    cfg.conns = 10;
    cfg.pipeline = 1;
    cfg.size = 64;
    cfg.duration = 5;
    cfg.timeout = 10;
    cfg.proto = PROTO_MSG;
    cfg.cmd = BCMD_ECHO;
    enum { OPT_HELP = 256, OPT_RATE, OPT_CMD, OPT_PROTOCOL, OPT_JSON, OPT_DELAY_MS, OPT_TIMEOUT,
           OPT_TO, OPT_COMPRESS, OPT_PAYLOAD, OPT_TLS, OPT_CACERT, OPT_CERT, OPT_KEY };
    const char *cafile = NULL, *certfile = NULL, *keyfile = NULL;
    static const struct option longopts[] = {
        {"help", no_argument, NULL, OPT_HELP},
        {"rate", required_argument, NULL, OPT_RATE},
        {"cmd", required_argument, NULL, OPT_CMD},
        {"protocol", required_argument, NULL, OPT_PROTOCOL},
        {"json", no_argument, NULL, OPT_JSON},
        {"delay-ms", required_argument, NULL, OPT_DELAY_MS},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"to", required_argument, NULL, OPT_TO},
        {"compress", required_argument, NULL, OPT_COMPRESS},
        {"payload", required_argument, NULL, OPT_PAYLOAD},
        {"tls", no_argument, NULL, OPT_TLS},
        {"cacert", required_argument, NULL, OPT_CACERT},
        {"cert", required_argument, NULL, OPT_CERT},
        {"key", required_argument, NULL, OPT_KEY},
        {NULL, 0, NULL, 0},
    };
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":h:p:u:a:t:c:P:s:d:n:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p':
            if (parse_count(optarg, 1, 65535, &v) < 0)
                return usage_error("-p wants a port 1..65535, not '%s'", optarg);
            port = (unsigned)v;
            break;
        case 'u': unix_path = optarg; break;
        case 'a': cfg.token = optarg; break;
        case 't':
            if (parse_count(optarg, 1, 1024, &v) < 0)
                return usage_error("-t wants threads 1..1024, not '%s'", optarg);
            cfg.threads = (int)v;
            break;
        case 'c':
            if (parse_count(optarg, 1, 1000000, &v) < 0)
                return usage_error("-c wants connections 1..1000000, not '%s'", optarg);
            cfg.conns = (int)v;
            break;
        case 'P':
            if (parse_count(optarg, 1, 1000000, &v) < 0)
                return usage_error("-P wants a pipeline depth 1..1000000, not '%s'", optarg);
            cfg.pipeline = (int)v;
            break;
        case 's':
            if (parse_count(optarg, 0, 256u << 20, &v) < 0)
                return usage_error("-s wants bytes 0..268435456, not '%s'", optarg);
            cfg.size = (size_t)v;
            break;
        case 'd':
            if (parse_seconds(optarg, &cfg.duration) < 0)
                return usage_error("-d wants seconds (> 0), not '%s'", optarg);
            have_d = true;
            break;
        case 'n':
            if (parse_count(optarg, 1, UINT64_MAX / 2, &v) < 0)
                return usage_error("-n wants a request count >= 1, not '%s'", optarg);
            cfg.requests = v;
            have_n = true;
            break;
        case OPT_RATE: {
            char *end;
            errno = 0;
            cfg.rate = strtod(optarg, &end);
            if (errno || end == optarg || *end || !(cfg.rate > 0) || cfg.rate > 1e9)
                return usage_error("--rate wants requests/s (> 0), not '%s'", optarg);
            break;
        }
        case OPT_CMD:
            have_cmd = true;
            if (strcmp(optarg, "echo") == 0)
                cfg.cmd = BCMD_ECHO;
            else if (strcmp(optarg, "ping") == 0)
                cfg.cmd = BCMD_PING;
            else if (strcmp(optarg, "delay") == 0)
                cfg.cmd = BCMD_DELAY;
            else if (strcmp(optarg, "publish") == 0)
                cfg.cmd = BCMD_PUBLISH;
            else if (strcmp(optarg, "direct") == 0)
                cfg.cmd = BCMD_DIRECT;
            else
                return usage_error("--cmd wants echo, ping, delay, publish or direct, not '%s'",
                                   optarg);
            break;
        case OPT_PROTOCOL:
            if (strcmp(optarg, "msg") == 0)
                cfg.proto = PROTO_MSG;
            else if (strcmp(optarg, "echo") == 0)
                cfg.proto = PROTO_ECHO;
            else
                return usage_error("--protocol wants msg or echo, not '%s'", optarg);
            break;
        case OPT_JSON: cfg.json = true; break;
        case OPT_TLS: cfg.tls = true; break;
        case OPT_CACERT: cafile = optarg; break;
        case OPT_CERT: certfile = optarg; break;
        case OPT_KEY: keyfile = optarg; break;
        case OPT_COMPRESS:
            cfg.compress_arg = optarg;
            if (strcmp(optarg, "none") != 0 &&
                codec_parse_list(optarg, strlen(optarg), true, &cfg.compress) < 0)
                return usage_error("--compress wants zstd, deflate, none or a comma-separated "
                                   "list, not '%s'", optarg);
            break;
        case OPT_PAYLOAD:
            if (strcmp(optarg, "random") == 0)
                cfg.text = false;
            else if (strcmp(optarg, "text") == 0)
                cfg.text = true;
            else
                return usage_error("--payload wants random or text, not '%s'", optarg);
            break;
        case OPT_TO:
            if (strlen(optarg) < 1 || strlen(optarg) > 255)
                return usage_error("--to wants an identity of 1..255 bytes, not '%s'", optarg);
            cfg.to = optarg;
            break;
        case OPT_DELAY_MS:
            if (parse_count(optarg, 0, 60000, &v) < 0)
                return usage_error("--delay-ms wants 0..60000, not '%s'", optarg);
            cfg.delay_ms = (uint32_t)v;
            break;
        case OPT_TIMEOUT:
            if (parse_seconds(optarg, &cfg.timeout) < 0)
                return usage_error("--timeout wants seconds (> 0), not '%s'", optarg);
            break;
        case OPT_HELP: usage(stdout); return 0;
        case ':':
            if (optopt && optopt < 256)
                return usage_error("-%c needs an argument", optopt);
            return usage_error("%s needs an argument", argv[optind - 1]);
        default:
            if (optopt)
                return usage_error("unknown option -%c", optopt);
            return usage_error("unknown option %s", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    if (have_d && have_n)
        return usage_error("%s", "-d and -n exclude each other");
    if ((certfile != NULL) != (keyfile != NULL))
        return usage_error("%s", "--cert and --key go together");
    cfg.tls = cfg.tls || cafile || certfile;
    if (cfg.proto == PROTO_ECHO && have_cmd)
        return usage_error("%s", "--cmd is for --protocol msg");
    if (cfg.proto == PROTO_ECHO && cfg.compress_arg)
        return usage_error("%s", "--compress is for --protocol msg");
    if (cfg.proto == PROTO_ECHO && cfg.size == 0)
        return usage_error("%s", "--protocol echo needs -s of at least 1 byte");
    if (cfg.proto == PROTO_MSG && cfg.cmd == BCMD_PING && cfg.size > PING_MAX)
        return usage_error("ping payloads are at most %u bytes (-s)", PING_MAX);
    if (cfg.delay_ms && cfg.cmd != BCMD_DELAY)
        return usage_error("%s", "--delay-ms is for --cmd delay");
    if (cfg.to && cfg.cmd != BCMD_DIRECT)
        return usage_error("%s", "--to is for --cmd direct");
    if (cfg.proto == PROTO_MSG && cfg.cmd == BCMD_DIRECT && !cfg.token)
        return usage_error("%s", "--cmd direct needs -a TOKEN: DIRECT needs an identity, "
                           "and AUTH is what gives one");
    if (!cfg.to)
        cfg.to = BENCH_IDENTITY;
    cfg.to_len = strlen(cfg.to);
    if (cfg.threads > cfg.conns)
        cfg.threads = cfg.conns;
    uint64_t need = (uint64_t)cfg.size + 1 + 255 + (1u << 20);
    cfg.max_frame = need > UINT32_MAX ? UINT32_MAX : (uint32_t)need;
    if (resolve(host, port, unix_path) < 0)
        return EXIT_USAGE;
    if (cfg.tls) {
        /* the certificate must name -h (no name to check over a unix socket) */
        size_t hl = strlen(host);
        const char *h = host;
        if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']')
            h++, hl -= 2;
        if (!unix_path)
            snprintf(cfg.tls_host, sizeof cfg.tls_host, "%.*s", (int)hl, h);
        char err[512];
        cfg.tls_ctx = msgclient_tls_ctx_new(cafile, certfile, keyfile, err, sizeof err);
        if (!cfg.tls_ctx) {
            fprintf(stderr, "%s: %s\n", prog, err);
            return EXIT_USAGE;
        }
    }

    signal(SIGPIPE, SIG_IGN);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&done_cond, &ca);
    pthread_condattr_destroy(&ca);

    struct bench_thread *ths = calloc((size_t)cfg.threads, sizeof *ths);
    struct bench_conn *conns = calloc((size_t)cfg.conns, sizeof *conns);
    if (!ths || !conns || pattern_init(cfg.size) < 0) {
        fprintf(stderr, "%s: out of memory\n", prog);
        return EXIT_USAGE;
    }
    /* connection i goes to thread i % T: thread t gets a contiguous slice here */
    int ci = 0;
    for (int t = 0; t < cfg.threads; t++) {
        struct bench_thread *th = &ths[t];
        th->id = t;
        th->nconns = cfg.conns / cfg.threads + (t < cfg.conns % cfg.threads ? 1 : 0);
        th->conns = conns + ci;
        for (int i = 0; i < th->nconns; i++) {
            th->conns[i].th = th;
            th->conns[i].index = ci + i;
            th->conns[i].fd = -1;
        }
        ci += th->nconns;
        double share = (double)th->nconns / cfg.conns;
        th->rate = cfg.rate * share;
        th->budget = UINT64_MAX;
        th->loop = ev_loop_new(EVFLAG_AUTO);
        if (!th->loop) {
            fprintf(stderr, "%s: cannot create an event loop\n", prog);
            return EXIT_USAGE;
        }
    }
    if (have_n) {
        uint64_t given = 0;
        for (int t = 0; t < cfg.threads; t++) {
            ths[t].budget = cfg.requests * (uint64_t)ths[t].nconns / (uint64_t)cfg.conns;
            given += ths[t].budget;
        }
        for (int t = 0; given < cfg.requests; t = (t + 1) % cfg.threads) {
            ths[t].budget++;
            given++;
        }
    }

    /* signals go to the main thread only */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    cfg.start_ns = now_ns();
    uint64_t end_ns = have_n ? 0 : cfg.start_ns + (uint64_t)(cfg.duration * 1e9);
    int started = 0;
    for (int t = 0; t < cfg.threads; t++) {
        ths[t].end_ns = end_ns;
        int rc = pthread_create(&ths[t].tid, NULL, thread_main, &ths[t]);
        if (rc != 0) {
            fprintf(stderr, "%s: pthread_create: %s\n", prog, strerror(rc));
            atomic_store(&stop_requested, 1);
            break;
        }
        started++;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    /* progress once a second until every thread is done */
    uint64_t last_answered = 0, last_bytes = 0, tick = 0;
    pthread_mutex_lock(&done_lock);
    while (done_threads < started) {
        struct timespec ts;
        uint64_t due = cfg.start_ns + (tick + 1) * NS_PER_S;
        ts.tv_sec = (time_t)(due / NS_PER_S);
        ts.tv_nsec = (long)(due % NS_PER_S);
        int rc = pthread_cond_timedwait(&done_cond, &done_lock, &ts);
        if (rc != ETIMEDOUT || done_threads >= started)
            continue;
        tick++;
        uint64_t a = 0, e = 0, b = 0;
        for (int t = 0; t < started; t++) {
            a += atomic_load_explicit(&ths[t].p_answered, memory_order_relaxed);
            e += atomic_load_explicit(&ths[t].p_errors, memory_order_relaxed);
            b += atomic_load_explicit(&ths[t].p_bytes, memory_order_relaxed);
        }
        fprintf(stderr, "%s: %3llus: %llu requests/s, %.2f MiB/s, %llu answered, %llu errors%s\n",
                prog, (unsigned long long)tick, (unsigned long long)(a - last_answered),
                (double)(b - last_bytes) / (1024.0 * 1024.0), (unsigned long long)a,
                (unsigned long long)e,
                atomic_load(&stop_requested) ? " (stopping)" : "");
        last_answered = a;
        last_bytes = b;
    }
    pthread_mutex_unlock(&done_lock);

    struct bench_totals *tot = calloc(1, sizeof *tot);
    if (!tot) {
        fprintf(stderr, "%s: out of memory\n", prog);
        return EXIT_USAGE;
    }
    uint64_t last_finish = cfg.start_ns;
    for (int t = 0; t < started; t++) {
        struct bench_thread *th = &ths[t];
        pthread_join(th->tid, NULL);
        tot->answered += th->answered;
        tot->ok += th->ok;
        for (int k = 0; k < ERR_KINDS; k++)
            tot->errors[k] += th->errors[k];
        tot->bytes_out += th->bytes_out;
        tot->bytes_in += th->bytes_in;
        tot->server_pings += th->server_pings;
        tot->messages += th->messages;
        tot->delivers += th->delivers;
        tot->compressed_out += th->compressed_out;
        tot->compressed_in += th->compressed_in;
        tot->connected += th->connected;
        tot->issued += th->issued;
        hist_merge(&tot->hist, &th->hist);
        if (th->finish_ns > last_finish)
            last_finish = th->finish_ns;
    }
    for (int t = started; t < cfg.threads; t++)
        tot->errors[ERR_NOT_SENT] += ths[t].budget == UINT64_MAX ? 0 : ths[t].budget;
    for (int k = 0; k < ERR_KINDS; k++)
        tot->error_sum += tot->errors[k];
    tot->elapsed = (double)(last_finish - cfg.start_ns) / 1e9;
    report(tot);
    fflush(stdout);

    int status = tot->error_sum ? EXIT_ERRORS : 0;
    if (tot->connected == 0) {
        fprintf(stderr, "%s: could not connect to %s\n", prog, cfg.addr_text);
        status = EXIT_USAGE;
    } else if (tot->ok == 0 && status == 0) {
        status = EXIT_ERRORS;
    }
    for (int t = 0; t < cfg.threads; t++) {
        struct bench_thread *th = &ths[t];
        for (int i = 0; i < th->nconns; i++) {
            free(th->conns[i].q);
            buffer_free(&th->conns[i].in);
            buffer_free(&th->conns[i].out);
        }
        buffer_free(&th->scratch);
        buffer_free(&th->zplain);
        buffer_free(&th->zin);
        codec_ctx_free(th->zctx);
        ev_loop_destroy(th->loop);
    }
    free(tot);
    free(conns);
    free(ths);
    free(pattern_tmpl);
    msgclient_tls_ctx_free(cfg.tls_ctx);
    pthread_cond_destroy(&done_cond);
    return status;
}
