/* msgfanout: a pub/sub fan-out load generator and checker, for msgd (the msg
 * protocol's SUBSCRIBE, PUBLISH and MESSAGE) and for redis-server (RESP
 * SUBSCRIBE and PUBLISH), the same client for both (docs/BENCHMARKS.md
 * "Fan-out against redis", scripts/bench/fanout.py).
 *
 * S subscribers each subscribe to one of T topics (subscriber i to topic
 * i % T) and P publishers each publish to one topic (publisher p to topic
 * p % T), closed loop (at most --outstanding PUBLISH requests per publisher
 * awaiting their reply) or open loop (--rate publishes/s in all, message i
 * due at t0 + i / rate, sent whatever the replies do).
 *
 * Every message is --size bytes: u32 publisher, u32 size, u64 sequence, u64
 * intended send time (CLOCK_MONOTONIC ns; in the closed loop the actual send
 * time), then filler. Each subscriber checks every delivery: its topic, its
 * size, and per publisher that sequences only go up (a repeat or a step back
 * is an error; a step forward is a gap, counted). At the end the deliveries
 * received must equal the sum of the PUBLISH replies' counts (the
 * subscribers the server says it queued each message to): what the server
 * skipped (msgd's slow-consumer rule) is reported as dropped, anything else
 * missing is an error.
 *
 * One thread, one epoll loop, one shared receive buffer (a connection keeps
 * only the tail of a frame cut by a read). Latency is the receive time (one
 * clock read per recv) minus the intended send time, for messages intended
 * within the measured window. With --server-pid the server's CPU time
 * (utime + stime) and minor page faults over the window come from
 * /proc/PID/stat, and its VmRSS and VmHWM at the end from /proc/PID/status.
 *
 * Exit status: 0 when every delivery checked out and nothing went missing
 * beyond what the server reported; 1 otherwise; 2 for a bad option. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "buffer.h"
#include "client/msgclient.h"
#include "msg.h"

#define EXIT_FAIL 1
#define EXIT_USAGE 2
#define BODY_HEAD 24u                  /* u32 publisher, u32 size, u64 seq, u64 time */
#define SIZE_MAX_MSG (1u << 20)        /* --size limit */
#define RBUF_SPACE (1u << 20)          /* bytes one recv may fill */
#define MAX_EVENTS 1024
#define LATE_NS 1000000ull             /* open loop: a send this late is counted */
#define OUT_LIMIT (64u << 20)          /* a publisher's unsent bytes, at most */
#define ERRORS_SHOWN 5                 /* error lines printed in full */
#define NS 1000000000ull

enum proto { PROTO_MSG, PROTO_RESP };
enum role { ROLE_SUB, ROLE_PUB };

struct opts {
    enum proto proto;
    const char *addr;
    const char *token;
    const char *prefix;
    unsigned pubs, topics, subs, size, outstanding;
    double rate, seconds, warmup, drain, timeout;
    uint64_t messages;                 /* per publisher; 0: run for --seconds */
    long server_pid;
    bool json;
};

struct conn {
    int fd;
    enum role role;
    unsigned idx;                      /* subscriber or publisher number */
    unsigned topic;
    char tname[208];                   /* the topic's name */
    size_t tname_len;
    unsigned hs_pending;               /* handshake replies still owed (AUTH, SUBSCRIBE) */
    bool closed;
    uint8_t *left;                     /* the cut frame kept from the last read */
    size_t left_len, left_cap;
    /* subscriber */
    uint64_t *next_seq;                /* per publisher */
    uint64_t received;
    /* publisher */
    struct buffer out;
    bool want_out;                     /* EPOLLOUT armed */
    uint64_t sent, replies, queued;
    uint8_t *prefix;                   /* the frame up to the message bytes */
    size_t prefix_len;
};

/* ---- latency: 1 us steps to 65 ms, then 1 ms steps to 65 s, then one overflow bucket */

#define LAT_FINE 65536u
#define LAT_COARSE 65536u

struct latency {
    uint64_t fine[LAT_FINE];           /* [i us, i+1 us) */
    uint64_t coarse[LAT_COARSE];       /* [i ms, i+1 ms) */
    uint64_t over, n, max_ns;
};

static void lat_add(struct latency *l, uint64_t ns)
{
    uint64_t us = ns / 1000;
    if (us < LAT_FINE)
        l->fine[us]++;
    else if (us / 1000 < LAT_COARSE)
        l->coarse[us / 1000]++;
    else
        l->over++;
    l->n++;
    if (ns > l->max_ns)
        l->max_ns = ns;
}

/* The upper edge (us) of the bucket holding quantile q, capped at the maximum. */
static double lat_quantile_us(const struct latency *l, double q)
{
    if (l->n == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)l->n);
    if (rank >= l->n)
        rank = l->n - 1;
    double max_us = (double)l->max_ns / 1000.0, v = max_us;
    uint64_t seen = 0;
    for (unsigned i = 0; i < LAT_FINE; i++) {
        seen += l->fine[i];
        if (seen > rank) {
            v = i + 1;
            goto done;
        }
    }
    for (unsigned i = 0; i < LAT_COARSE; i++) {
        seen += l->coarse[i];
        if (seen > rank) {
            v = (i + 1) * 1000.0;
            goto done;
        }
    }
done:
    return v < max_us ? v : max_us;
}

/* ---- state ------------------------------------------------------------------- */

struct proc_sample {
    bool ok;
    double cpu_s;
    uint64_t minflt;
};

struct run {
    struct opts o;
    int ep, tfd;
    struct conn *subs, *pubs;
    unsigned *topic_subs;              /* subscribers per topic */
    uint8_t *rbuf;
    size_t rbuf_cap;
    uint64_t now;
    bool publishing;
    uint64_t t_start, w0, w1;          /* the run's start, the measured window */
    bool in_window, window_done;
    uint64_t recv_total, recv_w0, recv_w1, replies_w0, replies_w1;
    struct proc_sample ps0, ps1;
    double self0, self1;               /* this process's CPU seconds at w0, w1 */
    uint64_t sent_total;               /* open loop: messages made due so far */
    uint64_t next_due;                 /* open loop: when message sent_total is due */
    uint64_t late, late_max_ns;
    uint64_t gaps;
    /* errors */
    uint64_t err_seq, err_size, err_topic, err_body, err_proto, err_reply, err_closed,
             err_backlog, err_incomplete;
    unsigned errors_shown;
    char first_error[300];
    struct latency lat;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static void put_u64(uint8_t *p, uint64_t v)
{
    msg_put_u32(p, (uint32_t)(v >> 32));
    msg_put_u32(p + 4, (uint32_t)v);
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)msg_get_u32(p) << 32 | msg_get_u32(p + 4);
}

static void problem(struct run *r, uint64_t *counter, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Counts one error; the first few are printed, the first is kept for the report. */
static void problem(struct run *r, uint64_t *counter, const char *fmt, ...)
{
    char line[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    (*counter)++;
    if (!r->first_error[0])
        snprintf(r->first_error, sizeof r->first_error, "%s", line);
    if (r->errors_shown++ < ERRORS_SHOWN)
        fprintf(stderr, "msgfanout: error: %s\n", line);
}

static uint64_t error_count(const struct run *r)
{
    return r->err_seq + r->err_size + r->err_topic + r->err_body + r->err_proto + r->err_reply +
           r->err_closed + r->err_backlog + r->err_incomplete;
}

/* ---- /proc ------------------------------------------------------------------- */

static double self_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
           ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
}

static struct proc_sample proc_sample(long pid)
{
    struct proc_sample s = {false, 0, 0};
    if (pid <= 0)
        return s;
    char path[64], text[2048];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return s;
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    char *p = strrchr(text, ')');
    if (!p)
        return s;
    /* Field 3 (state) follows ") "; minflt is field 10, utime 14, stime 15. */
    unsigned long long v[16] = {0};
    char *save = NULL;
    int field = 3;
    for (char *tok = strtok_r(p + 2, " ", &save); tok && field <= 15;
         tok = strtok_r(NULL, " ", &save), field++)
        v[field] = strtoull(tok, NULL, 10);
    if (field <= 15)
        return s;
    double hz = (double)sysconf(_SC_CLK_TCK);
    s.ok = true;
    s.minflt = v[10];
    s.cpu_s = (double)(v[14] + v[15]) / hz;
    return s;
}

/* A "Name:   N kB" line of /proc/PID/status, in kB; -1 when absent. */
static long proc_status_kb(long pid, const char *name)
{
    char path[64], line[256];
    long kb = -1;
    size_t len = strlen(name);
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = pid > 0 ? fopen(path, "r") : NULL;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, name, len) == 0 && line[len] == ':') {
            kb = strtol(line + len + 1, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

/* ---- connections ------------------------------------------------------------- */

static int set_events(struct run *r, struct conn *c, bool out)
{
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0u), .data.ptr = c};
    c->want_out = out;
    return epoll_ctl(r->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static int open_conn(struct run *r, const struct msgclient_addr *a, struct conn *c)
{
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct timeval tv = {.tv_sec = (time_t)r->o.timeout,
                         .tv_usec = (suseconds_t)((r->o.timeout - (double)(time_t)r->o.timeout) * 1e6)};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);   /* bounds connect() */
    if (connect(fd, (const struct sockaddr *)&a->ss, a->len) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    int one = 1;
    if (a->ss.ss_family != AF_UNIX)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    c->fd = fd;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(r->ep, EPOLL_CTL_ADD, fd, &ev) < 0)
        return -errno;
    return 0;
}

static void close_conn(struct run *r, struct conn *c, const char *why)
{
    if (c->closed)
        return;
    c->closed = true;
    epoll_ctl(r->ep, EPOLL_CTL_DEL, c->fd, NULL);
    problem(r, &r->err_closed, "%s %u: connection %s", c->role == ROLE_SUB ? "subscriber"
            : "publisher", c->idx, why);
}

/* Sends what the publisher has queued; arms EPOLLOUT while some is left. */
static void flush_out(struct run *r, struct conn *c)
{
    while (!c->closed && buffer_readable(&c->out) > 0) {
        ssize_t n = send(c->fd, buffer_peek(&c->out), buffer_readable(&c->out), MSG_NOSIGNAL);
        if (n > 0) {
            buffer_consume(&c->out, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->want_out)
                set_events(r, c, true);
            return;
        }
        close_conn(r, c, n < 0 ? strerror(errno) : "refused the write");
        return;
    }
    if (c->want_out)
        set_events(r, c, false);
}

static int queue_bytes(struct conn *c, const void *p, size_t n)
{
    return buffer_append(&c->out, p, n);
}

/* A RESP command of up to three arguments. */
static int queue_resp(struct conn *c, const char *a0, const char *a1, size_t a1_len)
{
    char head[64];
    int n = snprintf(head, sizeof head, "*%d\r\n$%zu\r\n%s\r\n", a1 ? 2 : 1, strlen(a0), a0);
    if (queue_bytes(c, head, (size_t)n) < 0)
        return -ENOMEM;
    if (!a1)
        return 0;
    n = snprintf(head, sizeof head, "$%zu\r\n", a1_len);
    if (queue_bytes(c, head, (size_t)n) < 0 || queue_bytes(c, a1, a1_len) < 0 ||
        queue_bytes(c, "\r\n", 2) < 0)
        return -ENOMEM;
    return 0;
}

static int queue_frame(struct conn *c, uint32_t cmd, const void *p, size_t n)
{
    uint8_t h[MSG_HEADER_LEN];
    msg_header_encode(h, cmd, (uint32_t)n);
    if (queue_bytes(c, h, sizeof h) < 0 || (n && queue_bytes(c, p, n) < 0))
        return -ENOMEM;
    return 0;
}

/* The handshake: AUTH when a token is given, then SUBSCRIBE on a subscriber. */
static int queue_handshake(struct run *r, struct conn *c)
{
    const char *topic = c->tname;
    int rc = 0;
    c->hs_pending = 0;
    if (r->o.token) {
        rc |= r->o.proto == PROTO_MSG
                  ? queue_frame(c, MSG_CMD_AUTH, r->o.token, strlen(r->o.token))
                  : queue_resp(c, "AUTH", r->o.token, strlen(r->o.token));
        c->hs_pending++;
    }
    if (c->role == ROLE_SUB) {
        rc |= r->o.proto == PROTO_MSG ? queue_frame(c, MSG_CMD_SUBSCRIBE, topic, c->tname_len)
                                      : queue_resp(c, "SUBSCRIBE", topic, c->tname_len);
        c->hs_pending++;
    }
    return rc;
}

/* The bytes in front of each message: the msg header (its length fixed, as
 * every message has --size bytes) with the topic, or RESP's PUBLISH up to the
 * message's bulk length. */
static int make_prefix(struct run *r, struct conn *c)
{
    const char *topic = c->tname;
    size_t tl = c->tname_len;
    c->prefix = malloc(MSG_HEADER_LEN + 1 + tl + 64);
    if (!c->prefix)
        return -ENOMEM;
    if (r->o.proto == PROTO_MSG) {
        msg_header_encode(c->prefix, MSG_CMD_PUBLISH, (uint32_t)(1 + tl + r->o.size));
        c->prefix[MSG_HEADER_LEN] = (uint8_t)tl;
        memcpy(c->prefix + MSG_HEADER_LEN + 1, topic, tl);
        c->prefix_len = MSG_HEADER_LEN + 1 + tl;
    } else {
        c->prefix_len = (size_t)sprintf((char *)c->prefix, "*3\r\n$7\r\nPUBLISH\r\n$%zu\r\n%s\r\n$%u\r\n",
                                        tl, topic, r->o.size);
    }
    return 0;
}

/* Queues publisher c's next message, intended at time t (ns). */
static int publish_one(struct run *r, struct conn *c, uint64_t t)
{
    size_t need = c->prefix_len + r->o.size + 2;
    if (buffer_readable(&c->out) + need > OUT_LIMIT) {
        problem(r, &r->err_backlog, "publisher %u: over %u MiB unsent (the server stopped "
                "reading)", c->idx, OUT_LIMIT >> 20);
        r->publishing = false;
        return -ENOBUFS;
    }
    if (buffer_reserve(&c->out, need) < 0)
        return -ENOMEM;
    uint8_t *p = buffer_tail(&c->out);
    memcpy(p, c->prefix, c->prefix_len);
    p += c->prefix_len;
    msg_put_u32(p, c->idx);
    msg_put_u32(p + 4, r->o.size);
    put_u64(p + 8, c->sent);
    put_u64(p + 16, t);
    memset(p + BODY_HEAD, 'f', r->o.size - BODY_HEAD);
    p += r->o.size;
    size_t n = c->prefix_len + r->o.size;
    if (r->o.proto == PROTO_RESP) {
        memcpy(p, "\r\n", 2);
        n += 2;
    }
    buffer_commit(&c->out, n);
    c->sent++;
    return 0;
}

/* Closed loop: tops publisher c up to --outstanding unanswered messages. */
static void refill(struct run *r, struct conn *c)
{
    if (!r->publishing || c->closed || c->hs_pending)
        return;
    while (c->sent - c->replies < r->o.outstanding &&
           (r->o.messages == 0 || c->sent < r->o.messages))
        if (publish_one(r, c, r->now) < 0)
            return;
    flush_out(r, c);
}

/* Open loop: sends every message due by now (message i at t0 + i / rate, to
 * publisher i % P). */
static void open_loop_tick(struct run *r)
{
    if (!r->publishing)
        return;
    double per_ns = r->o.rate / 1e9;
    uint64_t due = (uint64_t)((double)(r->now - r->t_start) * per_ns) + 1;
    if (r->o.messages && due > r->o.messages * r->o.pubs)
        due = r->o.messages * r->o.pubs;
    for (; r->sent_total < due && r->publishing; r->sent_total++) {
        uint64_t t = r->t_start + (uint64_t)((double)r->sent_total / per_ns);
        struct conn *c = &r->pubs[r->sent_total % r->o.pubs];
        if (c->closed)
            continue;
        if (r->now > t + LATE_NS)
            r->late++;
        if (r->now > t && r->now - t > r->late_max_ns)
            r->late_max_ns = r->now - t;
        publish_one(r, c, t);
    }
    r->next_due = r->t_start + (uint64_t)((double)r->sent_total / per_ns);
    for (unsigned i = 0; i < r->o.pubs; i++)
        flush_out(r, &r->pubs[i]);
}

/* ---- deliveries and replies ------------------------------------------------- */

static void delivery(struct run *r, struct conn *c, const uint8_t *topic, size_t tl,
                     const uint8_t *data, size_t n)
{
    c->received++;
    r->recv_total++;
    if (tl != c->tname_len || memcmp(topic, c->tname, tl) != 0) {
        problem(r, &r->err_topic, "subscriber %u: a message on topic %.*s, subscribed to %s",
                c->idx, (int)(tl > 64 ? 64 : tl), (const char *)topic, c->tname);
        return;
    }
    if (n != r->o.size) {
        problem(r, &r->err_size, "subscriber %u: a message of %zu bytes, expected %u", c->idx, n,
                r->o.size);
        if (n < BODY_HEAD)
            return;
    }
    uint32_t pub = msg_get_u32(data), size = msg_get_u32(data + 4);
    uint64_t seq = get_u64(data + 8), t = get_u64(data + 16);
    if (pub >= r->o.pubs || size != r->o.size) {
        problem(r, &r->err_body, "subscriber %u: a message body naming publisher %u, size %u",
                c->idx, pub, size);
        return;
    }
    uint64_t next = c->next_seq[pub];
    if (seq < next) {
        problem(r, &r->err_seq, "subscriber %u: publisher %u sequence %" PRIu64 " after %" PRIu64
                " (%s)", c->idx, pub, seq, next - 1, seq == next - 1 ? "repeated" : "reordered");
        return;
    }
    r->gaps += seq - next;
    c->next_seq[pub] = seq + 1;
    if (t >= r->w0 && t < r->w1)
        lat_add(&r->lat, r->now > t ? r->now - t : 0);
}

static void handshake_reply(struct run *r, struct conn *c, bool ok, const char *what)
{
    if (!c->hs_pending) {
        problem(r, &r->err_proto, "%s %u: an unexpected %s", c->role == ROLE_SUB ? "subscriber"
                : "publisher", c->idx, what);
        return;
    }
    c->hs_pending--;
    if (!ok)
        problem(r, &r->err_reply, "%s %u: handshake refused: %s", c->role == ROLE_SUB
                ? "subscriber" : "publisher", c->idx, what);
}

static void publish_reply(struct run *r, struct conn *c, bool ok, uint64_t count, const char *err)
{
    if (c->hs_pending) {
        handshake_reply(r, c, ok, ok ? "reply" : err);
        return;
    }
    if (c->replies >= c->sent) {
        problem(r, &r->err_proto, "publisher %u: a reply to nothing", c->idx);
        return;
    }
    c->replies++;
    if (!ok) {
        problem(r, &r->err_reply, "publisher %u: PUBLISH refused: %s", c->idx, err);
        return;
    }
    c->queued += count;
}

/* One msg frame (whole, checked by msg_split) on connection c. */
static void msg_frame(struct run *r, struct conn *c, const uint8_t *f, const struct msg_header *h)
{
    const uint8_t *p = f + MSG_HEADER_LEN;
    uint32_t cmd = h->command, len = h->length;
    char text[200];
    if (cmd == MSG_CMD_MESSAGE && c->role == ROLE_SUB) {
        if (len < 1 || (uint32_t)p[0] + 1 > len) {
            problem(r, &r->err_proto, "subscriber %u: a malformed MESSAGE", c->idx);
            return;
        }
        delivery(r, c, p + 1, p[0], p + 1 + p[0], len - 1 - p[0]);
        return;
    }
    if (cmd == MSG_CMD_PING) {                 /* a server heartbeat: answer it */
        uint8_t hdr[MSG_HEADER_LEN];
        msg_header_encode(hdr, MSG_FLAG_REPLY | MSG_CMD_PING, len);
        if (send(c->fd, hdr, sizeof hdr, MSG_NOSIGNAL) < 0 || send(c->fd, p, len, MSG_NOSIGNAL) < 0)
            close_conn(r, c, "lost answering a PING");
        return;
    }
    if (cmd & MSG_FLAG_ERROR) {
        uint32_t code = len >= 4 ? msg_get_u32(p) : 0;
        snprintf(text, sizeof text, "%s (%.*s)", msg_error_name(code), (int)(len >= 4 ? len - 4 : 0),
                 (const char *)p + 4);
        if ((cmd & MSG_CMD_MASK) == 0)
            problem(r, &r->err_proto, "connection error %s", text);
        else if (c->role == ROLE_PUB)
            publish_reply(r, c, false, 0, text);
        else
            handshake_reply(r, c, false, text);
        return;
    }
    if (cmd == (MSG_FLAG_REPLY | MSG_CMD_PUBLISH) && c->role == ROLE_PUB && len == 4) {
        publish_reply(r, c, true, msg_get_u32(p), NULL);
        return;
    }
    if (cmd == (MSG_FLAG_REPLY | MSG_CMD_AUTH) ||
        (cmd == (MSG_FLAG_REPLY | MSG_CMD_SUBSCRIBE) && c->role == ROLE_SUB)) {
        handshake_reply(r, c, true, cmd == (MSG_FLAG_REPLY | MSG_CMD_AUTH) ? "AUTH reply"
                        : "SUBSCRIBE reply");
        return;
    }
    if (cmd == MSG_CMD_GOAWAY) {
        close_conn(r, c, "sent away (GOAWAY)");
        return;
    }
    problem(r, &r->err_proto, "%s %u: an unexpected frame 0x%08x (%u bytes)",
            c->role == ROLE_SUB ? "subscriber" : "publisher", c->idx, cmd, len);
}

/* ---- RESP ------------------------------------------------------------------- */

struct resp_item {
    char type;                         /* '+', '-', ':', '$' */
    int64_t num;
    const uint8_t *s;
    size_t len;
};

struct resp_value {
    struct resp_item top;              /* type '*' for an array */
    unsigned count;
    struct resp_item el[3];
};

/* A "<digits>\r\n" number at p (the type byte already passed): 1 and *next set,
 * 0 incomplete, -1 malformed. */
static int resp_number(const uint8_t *p, const uint8_t *end, int64_t *out, const uint8_t **next)
{
    const uint8_t *cr = memchr(p, '\r', (size_t)(end - p));
    if (!cr || cr + 1 >= end)
        return cr || end - p < 24 ? 0 : -1;
    if (cr[1] != '\n' || cr == p)
        return -1;
    bool neg = *p == '-';
    int64_t v = 0;
    for (const uint8_t *q = p + neg; q < cr; q++) {
        if (*q < '0' || *q > '9' || v > (INT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (*q - '0');
    }
    *out = neg ? -v : v;
    *next = cr + 2;
    return 1;
}

/* One scalar at *pp: 1 (and *pp advanced), 0 incomplete, -1 malformed. */
static int resp_scalar(const uint8_t **pp, const uint8_t *end, struct resp_item *it)
{
    const uint8_t *p = *pp;
    if (p >= end)
        return 0;
    it->type = (char)*p;
    if (*p == '+' || *p == '-') {
        const uint8_t *cr = memchr(p, '\r', (size_t)(end - p));
        if (!cr || cr + 1 >= end)
            return 0;
        it->s = p + 1;
        it->len = (size_t)(cr - p - 1);
        *pp = cr + 2;
        return 1;
    }
    if (*p != ':' && *p != '$')
        return -1;
    int rc = resp_number(p + 1, end, &it->num, &p);
    if (rc <= 0)
        return rc;
    if (it->type == '$') {
        if (it->num < 0 || it->num > (int64_t)SIZE_MAX_MSG + 4096)
            return -1;
        if ((size_t)(end - p) < (size_t)it->num + 2)
            return 0;
        it->s = p;
        it->len = (size_t)it->num;
        p += it->len;
        if (p[0] != '\r' || p[1] != '\n')
            return -1;
        p += 2;
    }
    *pp = p;
    return 1;
}

/* One top-level value at p (n bytes): its length, 0 incomplete, -1 malformed
 * (arrays of more than 3 elements, nested arrays and nil are malformed here). */
static long resp_parse(const uint8_t *p, size_t n, struct resp_value *v)
{
    const uint8_t *q = p, *end = p + n;
    if (n == 0)
        return 0;
    v->count = 0;
    if (*p != '*') {
        int rc = resp_scalar(&q, end, &v->top);
        return rc <= 0 ? rc : (long)(q - p);
    }
    v->top.type = '*';
    int rc = resp_number(p + 1, end, &v->top.num, &q);
    if (rc <= 0)
        return rc;
    if (v->top.num < 1 || v->top.num > 3)
        return -1;
    for (; v->count < (unsigned)v->top.num; v->count++)
        if ((rc = resp_scalar(&q, end, &v->el[v->count])) <= 0)
            return rc;
    return (long)(q - p);
}

static bool resp_is(const struct resp_item *it, const char *word)
{
    size_t n = strlen(word);
    return it->type == '$' && it->len == n && strncasecmp((const char *)it->s, word, n) == 0;
}

static void resp_value(struct run *r, struct conn *c, const struct resp_value *v)
{
    char text[200] = "";
    const struct resp_item *t = &v->top;
    if (t->type == '-')
        snprintf(text, sizeof text, "%.*s", (int)(t->len > 150 ? 150 : t->len), (const char *)t->s);
    if (c->role == ROLE_SUB) {
        if (t->type == '*' && v->count == 3 && resp_is(&v->el[0], "message") &&
            v->el[1].type == '$' && v->el[2].type == '$') {
            delivery(r, c, v->el[1].s, v->el[1].len, v->el[2].s, v->el[2].len);
            return;
        }
        if (t->type == '*' && v->count == 3 && resp_is(&v->el[0], "subscribe")) {
            handshake_reply(r, c, true, "subscribe confirmation");
            return;
        }
        if (t->type == '+' || t->type == '-') {
            handshake_reply(r, c, t->type == '+', t->type == '+' ? "+ reply" : text);
            return;
        }
    } else if (t->type == ':' || t->type == '-' || t->type == '+') {
        if (t->type == '+' && !c->hs_pending)
            problem(r, &r->err_proto, "publisher %u: an unexpected + reply", c->idx);
        else
            publish_reply(r, c, t->type != '-', t->type == ':' ? (uint64_t)t->num : 0, text);
        return;
    }
    problem(r, &r->err_proto, "%s %u: an unexpected RESP value (type %c)",
            c->role == ROLE_SUB ? "subscriber" : "publisher", c->idx, t->type);
}

/* ---- reading ----------------------------------------------------------------- */

/* Parses the whole frames in buf (n bytes); returns how many bytes they took,
 * or -1 after a framing error (the connection is then closed). */
static long parse(struct run *r, struct conn *c, const uint8_t *buf, size_t n)
{
    size_t off = 0;
    while (off < n && !c->closed) {
        long used;
        if (r->o.proto == PROTO_MSG) {
            struct msg_header h;
            used = msg_split(buf + off, n - off, SIZE_MAX_MSG + 4096, &h);
            if (used > 0)
                msg_frame(r, c, buf + off, &h);
        } else {
            struct resp_value v;
            used = resp_parse(buf + off, n - off, &v);
            if (used > 0)
                resp_value(r, c, &v);
        }
        if (used == 0)
            break;
        if (used < 0) {
            problem(r, &r->err_proto, "%s %u: a malformed frame from the server",
                    c->role == ROLE_SUB ? "subscriber" : "publisher", c->idx);
            close_conn(r, c, "broken framing");
            return -1;
        }
        off += (size_t)used;
    }
    return (long)off;
}

static void on_readable(struct run *r, struct conn *c)
{
    for (;;) {
        size_t have = c->left_len;
        if (have)
            memcpy(r->rbuf, c->left, have);
        ssize_t n = recv(c->fd, r->rbuf + have, r->rbuf_cap - have, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            close_conn(r, c, n == 0 ? "closed by the server" : strerror(errno));
            return;
        }
        r->now = now_ns();
        size_t total = have + (size_t)n;
        long used = parse(r, c, r->rbuf, total);
        if (used < 0 || c->closed)
            return;
        c->left_len = total - (size_t)used;
        if (c->left_len > c->left_cap) {
            uint8_t *nl = realloc(c->left, c->left_len);
            if (!nl) {
                close_conn(r, c, "out of memory");
                return;
            }
            c->left = nl;
            c->left_cap = c->left_len;
        }
        if (c->left_len)
            memcpy(c->left, r->rbuf + used, c->left_len);
        if (c->role == ROLE_PUB && r->o.rate == 0)
            refill(r, c);
        if ((size_t)n < r->rbuf_cap - have)
            return;                    /* the socket is drained */
    }
}

/* ---- phases ---------------------------------------------------------------- */

static bool handshakes_done(const struct run *r)
{
    for (unsigned i = 0; i < r->o.subs; i++)
        if (r->subs[i].hs_pending && !r->subs[i].closed)
            return false;
    for (unsigned i = 0; i < r->o.pubs; i++)
        if (r->pubs[i].hs_pending && !r->pubs[i].closed)
            return false;
    return true;
}

static uint64_t replies_total(const struct run *r)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < r->o.pubs; i++)
        n += r->pubs[i].replies;
    return n;
}

static bool drained(const struct run *r)
{
    uint64_t queued = 0;
    for (unsigned i = 0; i < r->o.pubs; i++) {
        const struct conn *c = &r->pubs[i];
        if (!c->closed && c->replies < c->sent)
            return false;
        queued += c->queued;
    }
    return r->recv_total >= queued;
}

/* One epoll turn of at most timeout_ms. */
static void turn(struct run *r, int timeout_ms)
{
    struct epoll_event ev[MAX_EVENTS];
    int n = epoll_wait(r->ep, ev, MAX_EVENTS, timeout_ms);
    r->now = now_ns();
    for (int i = 0; i < n; i++) {
        if (ev[i].data.ptr == NULL) {
            uint64_t ticks;
            if (read(r->tfd, &ticks, sizeof ticks) < 0 && errno != EAGAIN)
                perror("msgfanout: timerfd");
            open_loop_tick(r);
            continue;
        }
        struct conn *c = ev[i].data.ptr;
        if (c->closed)
            continue;
        if (ev[i].events & EPOLLOUT)
            flush_out(r, c);
        if (ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
            on_readable(r, c);
        /* A turn reading many subscribers can take a while: what fell due
         * meanwhile goes out now, not after the turn (the timer catches up). */
        if (r->o.rate > 0 && r->publishing && r->now >= r->next_due)
            open_loop_tick(r);
    }
}

static int ms_until(uint64_t now, uint64_t t)
{
    if (t <= now)
        return 0;
    uint64_t ms = (t - now + 999999) / 1000000;
    return ms > 1000 ? 1000 : (int)ms;
}

static void stop_publishing(struct run *r)
{
    r->publishing = false;
    if (r->tfd >= 0) {
        struct itimerspec off = {{0, 0}, {0, 0}};
        timerfd_settime(r->tfd, 0, &off, NULL);
    }
}

/* Runs everything after the connections are up; returns the exit status. */
static int run_all(struct run *r)
{
    uint64_t deadline = now_ns() + (uint64_t)(r->o.timeout * 1e9);
    for (unsigned i = 0; i < r->o.subs; i++)
        flush_out(r, &r->subs[i]);
    for (unsigned i = 0; i < r->o.pubs; i++)
        flush_out(r, &r->pubs[i]);
    while (!handshakes_done(r) && r->now < deadline)
        turn(r, ms_until(r->now, deadline));
    if (!handshakes_done(r)) {
        problem(r, &r->err_proto, "not every SUBSCRIBE (or AUTH) was confirmed within %.1f s",
                r->o.timeout);
        return EXIT_FAIL;
    }
    if (error_count(r))
        return EXIT_FAIL;

    r->t_start = r->now = now_ns();
    bool timed = r->o.messages == 0;
    r->w0 = timed ? r->t_start + (uint64_t)(r->o.warmup * 1e9) : r->t_start;
    r->w1 = timed ? r->w0 + (uint64_t)(r->o.seconds * 1e9) : UINT64_MAX;
    uint64_t pub_end = r->t_start + (uint64_t)((timed ? r->o.warmup + r->o.seconds : r->o.seconds)
                                               * 1e9);
    r->publishing = true;
    if (!timed || r->o.warmup <= 0) {
        r->ps0 = proc_sample(r->o.server_pid);
        r->self0 = self_cpu();
        r->recv_w0 = 0;
        r->in_window = true;
    }
    if (r->o.rate > 0) {
        uint64_t step = (uint64_t)(1e9 / r->o.rate);
        if (step < 20000)
            step = 20000;              /* at most 50,000 wake-ups/s; each sends what is due */
        struct itimerspec its = {{(time_t)(step / NS), (long)(step % NS)},
                                 {(time_t)(step / NS), (long)(step % NS)}};
        timerfd_settime(r->tfd, 0, &its, NULL);
        open_loop_tick(r);
    } else {
        for (unsigned i = 0; i < r->o.pubs; i++)
            refill(r, &r->pubs[i]);
    }
    /* Publishing: until the window ends (or every publisher sent --messages). */
    while (r->publishing) {
        if (!r->in_window && !r->window_done && r->now >= r->w0) {
            r->ps0 = proc_sample(r->o.server_pid);
        r->self0 = self_cpu();
            r->recv_w0 = r->recv_total;
            r->replies_w0 = replies_total(r);
            r->in_window = true;
        }
        if (timed && r->now >= r->w1) {
            r->ps1 = proc_sample(r->o.server_pid);
        r->self1 = self_cpu();
            r->recv_w1 = r->recv_total;
            r->replies_w1 = replies_total(r);
            r->w1 = r->now;            /* the window's true end */
            r->window_done = true;
            break;
        }
        if (!timed) {
            bool all = true;
            for (unsigned i = 0; i < r->o.pubs; i++)
                all &= r->pubs[i].closed || r->pubs[i].sent >= r->o.messages;
            if (all)
                break;
        }
        if (r->now >= pub_end) {
            if (!timed)
                problem(r, &r->err_backlog, "not every message was published within %.1f s",
                        r->o.seconds);
            break;
        }
        uint64_t next = timed ? (r->in_window ? r->w1 : r->w0) : pub_end;
        turn(r, ms_until(r->now, next < pub_end ? next : pub_end));
    }
    stop_publishing(r);
    /* Draining: every reply, and every delivery the replies promised. */
    uint64_t drain_end = r->now + (uint64_t)(r->o.drain * 1e9);
    while (!drained(r) && r->now < drain_end)
        turn(r, ms_until(r->now, drain_end));
    if (!timed) {
        r->ps1 = proc_sample(r->o.server_pid);
        r->self1 = self_cpu();
        r->recv_w1 = r->recv_total;
        r->replies_w1 = replies_total(r);
        r->w0 = r->t_start;
        r->w1 = r->now;
    }
    return 0;
}

/* ---- report ------------------------------------------------------------------ */

static void report(struct run *r, bool drain_ok)
{
    const struct opts *o = &r->o;
    uint64_t sent = 0, replies = 0, queued = 0, expected = 0;
    for (unsigned i = 0; i < o->pubs; i++) {
        const struct conn *c = &r->pubs[i];
        sent += c->sent;
        replies += c->replies;
        queued += c->queued;
        expected += c->sent * r->topic_subs[c->topic];
    }
    double secs = r->w1 > r->w0 ? (double)(r->w1 - r->w0) / 1e9 : 0;
    uint64_t dwin = r->recv_w1 - r->recv_w0;
    double rate = secs > 0 ? (double)dwin / secs : 0;
    double pub_rate = secs > 0 ? (double)(r->replies_w1 - r->replies_w0) / secs : 0;
    double completeness = expected ? (double)r->recv_total / (double)expected : 1.0;
    uint64_t dropped = expected > queued ? expected - queued : 0;
    bool have_proc = r->ps0.ok && r->ps1.ok;
    double cpu = have_proc ? r->ps1.cpu_s - r->ps0.cpu_s : 0;
    double cpu_us = have_proc && dwin ? cpu * 1e6 / (double)dwin : 0;
    double faults = have_proc && dwin ? (double)(r->ps1.minflt - r->ps0.minflt) * 1000.0 / (double)dwin
                                      : 0;
    double client_share = secs > 0 ? (r->self1 - r->self0) / secs : 0;
    long rss = proc_status_kb(o->server_pid, "VmRSS"), hwm = proc_status_kb(o->server_pid, "VmHWM");
    double p50 = lat_quantile_us(&r->lat, 0.50), p90 = lat_quantile_us(&r->lat, 0.90),
           p99 = lat_quantile_us(&r->lat, 0.99), p999 = lat_quantile_us(&r->lat, 0.999),
           max = (double)r->lat.max_ns / 1000.0;
    if (o->json) {
        printf("{\"proto\":\"%s\",\"publishers\":%u,\"topics\":%u,\"subscribers\":%u,\"size\":%u,"
               "\"outstanding\":%u,\"rate\":%.0f,\"seconds\":%.6f,\"published\":%" PRIu64 ","
               "\"replies\":%" PRIu64 ",\"expected\":%" PRIu64 ",\"queued\":%" PRIu64 ","
               "\"dropped_by_server\":%" PRIu64 ",\"received\":%" PRIu64 ",\"gaps\":%" PRIu64 ","
               "\"completeness\":%.6f,\"drained\":%s,\"window_deliveries\":%" PRIu64 ","
               "\"deliveries_per_s\":%.1f,\"publishes_per_s\":%.1f,"
               "\"latency_us\":{\"samples\":%" PRIu64 ",\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,"
               "\"p99_9\":%.1f,\"max\":%.1f},\"late_sends\":%" PRIu64 ",\"late_max_us\":%.1f,\"client_cpu_share\":%.3f,",
               o->proto == PROTO_MSG ? "msg" : "resp", o->pubs, o->topics, o->subs, o->size,
               o->outstanding, o->rate, secs, sent, replies, expected, queued, dropped,
               r->recv_total, r->gaps, completeness, drain_ok ? "true" : "false", dwin, rate,
               pub_rate, r->lat.n, p50, p90, p99, p999, max, r->late,
               (double)r->late_max_ns / 1000.0, client_share);
        if (have_proc)
            printf("\"server\":{\"pid\":%ld,\"cpu_s\":%.3f,\"cpu_us_per_delivery\":%.4f,"
                   "\"minflt\":%" PRIu64 ",\"faults_per_1000\":%.3f,\"rss_kb\":%ld,\"hwm_kb\":%ld},",
                   o->server_pid, cpu, cpu_us, r->ps1.minflt - r->ps0.minflt, faults, rss, hwm);
        printf("\"errors\":{\"sequence\":%" PRIu64 ",\"size\":%" PRIu64 ",\"topic\":%" PRIu64
               ",\"body\":%" PRIu64 ",\"protocol\":%" PRIu64 ",\"error_replies\":%" PRIu64
               ",\"closed\":%" PRIu64 ",\"backlog\":%" PRIu64 ",\"incomplete\":%" PRIu64
               "},\"first_error\":\"",
               r->err_seq, r->err_size, r->err_topic, r->err_body, r->err_proto, r->err_reply,
               r->err_closed, r->err_backlog, r->err_incomplete);
        for (const char *p = r->first_error; *p; p++)
            if (*p == '"' || *p == '\\')
                printf("\\%c", *p);
            else if ((unsigned char)*p >= 0x20)
                putchar(*p);
        printf("\"}\n");
    } else {
        printf("msgfanout %s: %u publisher(s) -> %u topic(s) -> %u subscriber(s), %u B, %s\n",
               o->proto == PROTO_MSG ? "msg" : "resp", o->pubs, o->topics, o->subs, o->size,
               o->rate > 0 ? "open loop" : "closed loop");
        printf("window:       %.3f s, %" PRIu64 " deliveries, %.0f deliveries/s, %.0f publishes/s\n",
               secs, dwin, rate, pub_rate);
        printf("published:    %" PRIu64 " (%" PRIu64 " replies); this client used %.0f%% of a CPU\n",
               sent, replies, client_share * 100);
        printf("completeness: %.4f%% (%" PRIu64 " received of %" PRIu64 " expected; the server "
               "queued %" PRIu64 ", dropped %" PRIu64 "; gaps seen %" PRIu64 ")%s\n",
               completeness * 100, r->recv_total, expected, queued, dropped, r->gaps,
               drain_ok ? "" : " NOT DRAINED");
        printf("latency:      p50 %.1f us, p90 %.1f us, p99 %.1f us, p99.9 %.1f us, max %.1f us "
               "(%" PRIu64 " samples, from the intended send time)\n", p50, p90, p99, p999, max,
               r->lat.n);
        if (o->rate > 0)
            printf("open loop:    %" PRIu64 " sends over 1 ms late, the latest %.1f us late\n",
                   r->late, (double)r->late_max_ns / 1000.0);
        if (have_proc)
            printf("server:       pid %ld, %.3f s CPU, %.4f us CPU per delivery, %.3f minor faults "
                   "per 1000 deliveries, VmRSS %ld kB, VmHWM %ld kB\n", o->server_pid, cpu, cpu_us,
                   faults, rss, hwm);
        printf("errors:       %" PRIu64 " (sequence %" PRIu64 ", size %" PRIu64 ", topic %" PRIu64
               ", body %" PRIu64 ", protocol %" PRIu64 ", error replies %" PRIu64 ", closed %" PRIu64
               ", backlog %" PRIu64 ", incomplete %" PRIu64 ")%s%s\n", error_count(r), r->err_seq,
               r->err_size, r->err_topic, r->err_body, r->err_proto, r->err_reply, r->err_closed,
               r->err_backlog, r->err_incomplete,
               r->first_error[0] ? "; first: " : "", r->first_error);
    }
    fflush(stdout);
}

/* ---- options ----------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: msgfanout --addr ADDR [options]\n"
            "  --addr ADDR          host:port or unix:/path of the server\n"
            "  --proto msg|resp     msgd's protocol (default) or redis's RESP\n"
            "  --token TOKEN        AUTH TOKEN first on every connection\n"
            "  --publishers N       publishers (1); publisher p publishes to topic p %% T\n"
            "  --topics T           topics (1); subscriber i subscribes to topic i %% T\n"
            "  --subscribers N      subscribers in all (100)\n"
            "  --size B             message bytes after the topic (64; %u..%u)\n"
            "  --outstanding N      closed loop: PUBLISH requests awaiting a reply, per publisher (64)\n"
            "  --rate R             open loop instead: R publishes/s in all\n"
            "  --seconds S          the measured window (5); with --messages, the publishing limit\n"
            "  --warmup S           published but not measured, before the window (0.5)\n"
            "  --messages N         each publisher sends N messages, then the run drains and ends\n"
            "  --drain S            wait at most S for the last replies and deliveries (10)\n"
            "  --timeout S          connect and SUBSCRIBE confirmation limit (10)\n"
            "  --server-pid PID     read the server's CPU, page faults and RSS from /proc\n"
            "  --topic-prefix STR   topic names are STR0, STR1, ... (fan)\n"
            "  --json               one JSON object instead of the text report\n",
            BODY_HEAD, SIZE_MAX_MSG);
}

static bool num_arg(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
    static const struct option lo[] = {
        {"addr", 1, 0, 'a'}, {"proto", 1, 0, 'P'}, {"token", 1, 0, 'k'},
        {"publishers", 1, 0, 'p'}, {"topics", 1, 0, 'T'}, {"subscribers", 1, 0, 's'},
        {"size", 1, 0, 'b'}, {"outstanding", 1, 0, 'o'}, {"rate", 1, 0, 'r'},
        {"seconds", 1, 0, 'd'}, {"warmup", 1, 0, 'w'}, {"messages", 1, 0, 'n'},
        {"drain", 1, 0, 'D'}, {"timeout", 1, 0, 't'}, {"server-pid", 1, 0, 'S'},
        {"topic-prefix", 1, 0, 'x'}, {"json", 0, 0, 'j'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    *o = (struct opts){.proto = PROTO_MSG, .prefix = "fan", .pubs = 1, .topics = 1, .subs = 100,
                       .size = 64, .outstanding = 64, .seconds = 5, .warmup = 0.5, .drain = 10,
                       .timeout = 10};
    int ch;
    double v;
    while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        bool ok = true;
        switch (ch) {
        case 'a': o->addr = optarg; break;
        case 'P':
            ok = strcmp(optarg, "msg") == 0 || strcmp(optarg, "resp") == 0;
            o->proto = strcmp(optarg, "resp") == 0 ? PROTO_RESP : PROTO_MSG;
            break;
        case 'k': o->token = optarg; break;
        case 'p': ok = num_arg(optarg, 1, 10000, &v); o->pubs = (unsigned)v; break;
        case 'T': ok = num_arg(optarg, 1, 100000, &v); o->topics = (unsigned)v; break;
        case 's': ok = num_arg(optarg, 1, 100000, &v); o->subs = (unsigned)v; break;
        case 'b': ok = num_arg(optarg, BODY_HEAD, SIZE_MAX_MSG, &v); o->size = (unsigned)v; break;
        case 'o': ok = num_arg(optarg, 1, 1 << 20, &v); o->outstanding = (unsigned)v; break;
        case 'r': ok = num_arg(optarg, 1, 1e8, &o->rate); break;
        case 'd': ok = num_arg(optarg, 0.01, 3600, &o->seconds); break;
        case 'w': ok = num_arg(optarg, 0, 600, &o->warmup); break;
        case 'n': ok = num_arg(optarg, 1, 1e12, &v); o->messages = (uint64_t)v; break;
        case 'D': ok = num_arg(optarg, 0, 600, &o->drain); break;
        case 't': ok = num_arg(optarg, 0.01, 600, &o->timeout); break;
        case 'S': ok = num_arg(optarg, 1, 1e9, &v); o->server_pid = (long)v; break;
        case 'x': o->prefix = optarg; ok = strlen(optarg) <= 190; break;
        case 'j': o->json = true; break;
        case 'h': usage(stdout); exit(0);
        default: ok = false;
        }
        if (!ok) {
            if (ch != '?')
                fprintf(stderr, "msgfanout: bad option value: %s\n", optarg);
            usage(stderr);
            return -1;
        }
    }
    if (optind < argc || !o->addr) {
        fprintf(stderr, "msgfanout: %s\n", o->addr ? "unexpected arguments" : "--addr is required");
        usage(stderr);
        return -1;
    }
    return 0;
}

static void raise_nofile(unsigned need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < need) {
        rl.rlim_cur = rl.rlim_max < need ? rl.rlim_max : need;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void free_run(struct run *r)
{
    struct conn *sets[2] = {r->subs, r->pubs};
    unsigned counts[2] = {r->o.subs, r->o.pubs};
    for (int k = 0; k < 2; k++)
        for (unsigned i = 0; sets[k] && i < counts[k]; i++) {
            struct conn *c = &sets[k][i];
            if (c->fd >= 0)
                close(c->fd);
            free(c->left);
            free(c->next_seq);
            free(c->prefix);
            buffer_free(&c->out);
        }
    free(r->subs);
    free(r->pubs);
    free(r->topic_subs);
    free(r->rbuf);
    if (r->tfd >= 0)
        close(r->tfd);
    if (r->ep >= 0)
        close(r->ep);
    free(r);
}

int main(int argc, char **argv)
{
    struct run *r = calloc(1, sizeof *r);
    if (!r) {
        perror("msgfanout");
        return EXIT_FAIL;
    }
    r->ep = r->tfd = -1;
    if (parse_opts(argc, argv, &r->o) < 0) {
        free(r);
        return EXIT_USAGE;
    }
    struct opts *o = &r->o;
    struct msgclient_addr addr[MSGCLIENT_ADDRS_MAX];
    char err[256];
    if (msgclient_resolve(o->addr, addr, MSGCLIENT_ADDRS_MAX, err, sizeof err) < 1) {
        fprintf(stderr, "msgfanout: %s: %s\n", o->addr, err);
        free(r);
        return EXIT_USAGE;
    }
    raise_nofile(o->subs + o->pubs + 64);
    r->rbuf_cap = RBUF_SPACE + SIZE_MAX_MSG + 8192;
    r->rbuf = malloc(r->rbuf_cap);
    r->subs = calloc(o->subs, sizeof *r->subs);
    r->pubs = calloc(o->pubs, sizeof *r->pubs);
    r->topic_subs = calloc(o->topics, sizeof *r->topic_subs);
    r->ep = epoll_create1(EPOLL_CLOEXEC);
    r->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    int rc = EXIT_FAIL;
    if (!r->rbuf || !r->subs || !r->pubs || !r->topic_subs || r->ep < 0 || r->tfd < 0) {
        perror("msgfanout: setup");
        goto out;
    }
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(r->ep, EPOLL_CTL_ADD, r->tfd, &tev);
    for (unsigned i = 0; i < o->subs + o->pubs; i++) {
        bool sub = i < o->subs;
        struct conn *c = sub ? &r->subs[i] : &r->pubs[i - o->subs];
        c->fd = -1;
        c->role = sub ? ROLE_SUB : ROLE_PUB;
        c->idx = sub ? i : i - o->subs;
        c->topic = c->idx % o->topics;
        c->tname_len = (size_t)snprintf(c->tname, sizeof c->tname, "%s%u", o->prefix, c->topic);
        if (sub) {
            r->topic_subs[c->topic]++;
            c->next_seq = calloc(o->pubs, sizeof *c->next_seq);
        }
        int e = open_conn(r, &addr[0], c);
        if (e < 0 || (sub && !c->next_seq) || (!sub && make_prefix(r, c) < 0) ||
            queue_handshake(r, c) < 0) {
            fprintf(stderr, "msgfanout: %s %u: %s\n", sub ? "subscriber" : "publisher", c->idx,
                    e < 0 ? strerror(-e) : "out of memory");
            goto out;
        }
    }
    r->now = now_ns();
    if (run_all(r) != 0) {
        report(r, false);
        goto out;
    }
    bool drain_ok = drained(r);
    uint64_t queued = 0;
    for (unsigned i = 0; i < o->pubs; i++)
        queued += r->pubs[i].queued;
    if (!drain_ok || r->recv_total != queued)
        problem(r, &r->err_incomplete, "incomplete: received %" PRIu64 " deliveries, the server "
                "reported queueing %" PRIu64 "%s", r->recv_total, queued,
                drain_ok ? "" : " (not drained in time)");
    report(r, drain_ok);
    rc = error_count(r) ? EXIT_FAIL : 0;
out:
    free_run(r);
    return rc;
}
