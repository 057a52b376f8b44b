/* conn: one connection's I/O. Reads with readv (or through TLS) into the
 * input buffer plus a stack buffer, feeds whole frames to the protocol, writes
 * the output with back-pressure, and gives each connection a bounded turn.
 * Reactor thread only. */
#include "conn.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "config.h"
#include "feed.h"
#include "msg.h"
#include "net.h"
#include "proxy.h"
#include "stats.h"
#include "tls.h"

#define CONN_READ_EXTRA (64 * 1024)     /* the stack buffer behind the input buffer */
#define CONN_READ_MIN 4096              /* least room offered in a non-empty input buffer */
#define CONN_POOL_BYTES (8u << 20)      /* the reactor's pool of emptied buffers keeps at */
#define CONN_POOL_ITEM (4u << 20)       /* most this much, and no buffer larger than this
                                         * (or more: pool_bounds) */
#define CONN_WRITE_EARLY (32 * 1024)    /* queued output written at once, not at the turn's end */
#define CONN_POOL_TRIM_S 1.0            /* what it kept unused this long is freed */
#define CONN_LINGER_READS 4             /* discarding reads per turn while lingering */

enum {
    CONN_MORE = 1u << 8,                /* stopped at a cap with input left: needs a turn */
    CONN_IDLE_HELD = 1u << 9,           /* the idle timeout came while input was held */
};

static void settle(struct conn *c);

/* ---- watcher and backlog bookkeeping ---- */

/* Whether c reads: not paused, not at the peer's end, not closing. */
static bool reads(const struct conn *c)
{
    return !(c->state & (CONN_PAUSED | CONN_PEER_EOF)) &&
           !(c->pl.flags & (PIPELINE_CLOSE | PIPELINE_HOLD));
}

/* The events TLS waits for beyond the usual ones (the handshake's, or a
 * read that must write first, or a write that must read first). */
static int tls_events(const struct conn *c)
{
    int w = tls_conn_want(c->tls);
    return (w & TLS_WANT_READ ? EV_READ : 0) | (w & TLS_WANT_WRITE ? EV_WRITE : 0);
}

/* The PROXY header: consumed from the socket only as far as it goes, so
 * what follows it (the client's first frames, a TLS ClientHello) stays in
 * the kernel for the usual path. Bytes known to be part of it are read
 * into hdr; the rest is only peeked. */
struct conn_proxy {
    ev_timer deadline;                 /* the header's own bound (PROXY_HEADER_S) */
    bool pending;                      /* still waiting for the header */
    bool has_peer;                     /* the header gave the client's address */
    size_t n;                          /* header bytes consumed so far */
    uint8_t *hdr;                      /* 16 + PROXY_V2_MAX bytes while pending */
    struct sockaddr_storage peer;
};

static bool proxy_pending(const struct conn *c) { return c->proxy && c->proxy->pending; }

static void update_events(struct conn *c)
{
    int want = 0;
    if (proxy_pending(c)) {
        want = EV_READ;
    } else if (c->tls && !tls_conn_ready(c->tls)) {
        want = tls_events(c);
    } else {
        if (reads(c))
            want |= EV_READ;
        if (pipeline_has_output(&c->pl))
            want |= EV_WRITE;
        if (c->tls)
            want |= tls_events(c);
    }
    if (want == c->events)
        return;
    struct ev_loop *loop = c->host->loop;
    if (c->events)
        ev_io_stop(loop, &c->io);
    if (want) {
        ev_io_set(&c->io, c->fd, want);
        ev_io_start(loop, &c->io);
    }
    c->events = want;
}

static void backlog_push(struct conn *c)
{
    struct conn_host *h = c->host;
    if (c->state & CONN_IN_BACKLOG)
        return;
    c->state |= CONN_IN_BACKLOG;
    c->backlog_next = NULL;
    if (h->backlog_tail)
        h->backlog_tail->backlog_next = c;
    else
        h->backlog = c;
    h->backlog_tail = c;
    if (!ev_is_active(&h->backlog_idle))
        ev_idle_start(h->loop, &h->backlog_idle);
}

static struct conn *backlog_pop(struct conn_host *h)
{
    struct conn *c = h->backlog;
    if (!c)
        return NULL;
    h->backlog = c->backlog_next;
    if (!h->backlog)
        h->backlog_tail = NULL;
    c->state &= ~(uint32_t)CONN_IN_BACKLOG;
    return c;
}

static void backlog_remove(struct conn *c)
{
    struct conn_host *h = c->host;
    struct conn *prev = NULL;
    for (struct conn *it = h->backlog; it; prev = it, it = it->backlog_next) {
        if (it != c)
            continue;
        if (prev)
            prev->backlog_next = c->backlog_next;
        else
            h->backlog = c->backlog_next;
        if (h->backlog_tail == c)
            h->backlog_tail = prev;
        break;
    }
    c->state &= ~(uint32_t)CONN_IN_BACKLOG;
}

/* ---- buffer memory ---- */

/* Keeps the pool's trim timer running while the pool holds anything. */
static void watch_pool(struct conn_host *h)
{
    stats_set(h->env.stats, STATS_BUFFER_POOL_BYTES, h->bufs.bytes);
    if (h->bufs.bytes > 0 && !ev_is_active(&h->bufs_trim))
        ev_timer_again(h->loop, &h->bufs_trim);
}

/* Gives c's emptied buffers back to the reactor's pool. */
static void release_buffers(struct conn *c)
{
    if (c->pl.out.data && buffer_readable(&c->pl.out) == 0)
        c->pl.out_class = (uint8_t)buffer_class(c->pl.out.cap);
    buffer_pool_put(&c->host->bufs, &c->pl.out);
    buffer_pool_put(&c->host->bufs, &c->in);
    watch_pool(c->host);
}

/* Frees what the pool kept unused since the last trim; stops once empty. */
static void bufs_trim_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct conn_host *h = w->data;
    buffer_pool_trim(&h->bufs);
    stats_set(h->env.stats, STATS_BUFFER_POOL_BYTES, h->bufs.bytes);
    if (h->bufs.bytes == 0)
        ev_timer_stop(loop, w);
}

/* ---- input ---- */

/* Feeds the whole frames at p to the protocol (feed.h) until the input runs
 * out or a cap is reached. Returns the bytes consumed; everything after a
 * violation is consumed (discarded). Sets CONN_MORE when it stopped with
 * frames possibly left. */
static size_t process(struct conn *c, const uint8_t *p, size_t n)
{
    struct feed_result r = feed_bytes(&c->pl, p, n, &c->drain_mark, FEED_FRAMES_PER_TURN,
                                      c->host->env.cfg->out_high_water);
    c->state &= ~(uint32_t)CONN_MORE;
    if (r.more)
        c->state |= CONN_MORE;
    return r.used;
}

/* Processes what the input buffer holds. */
static void process_buffered(struct conn *c)
{
    size_t used = process(c, buffer_peek(&c->in), buffer_readable(&c->in));
    buffer_consume(&c->in, used);
    buffer_pool_put(&c->host->bufs, &c->in);
}

/* One read: into the input buffer's free room (only when it already holds a
 * partial frame) and a 64 KiB stack buffer, so one syscall can bring many
 * frames, and an idle connection's input buffer stays unallocated. Returns 0
 * when nothing was there to read (c untouched), else 1 (c settled or closed). */
static int on_readable(struct conn *c)
{
    uint8_t extra[CONN_READ_EXTRA];
    struct iovec iov[2];
    int iovcnt = 0;
    size_t room = 0;
    bool buffered = buffer_readable(&c->in) > 0;
    if (buffered) {
        if (buffer_pool_reserve(&c->host->bufs, &c->in, CONN_READ_MIN) < 0) {
            conn_close(c);
            return 1;
        }
        room = buffer_writable(&c->in);
        iov[iovcnt++] = (struct iovec){buffer_tail(&c->in), room};
    }
    iov[iovcnt++] = (struct iovec){extra, sizeof extra};
    ssize_t n = c->tls ? tls_conn_readv(c->tls, iov, iovcnt) : readv(c->fd, iov, iovcnt);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return 0;
        stats_add(c->host->env.stats, STATS_CLOSED_RESET, 1);
        conn_close(c);
        return 1;
    }
    if (n == 0) {
        c->state |= CONN_PEER_EOF;
        settle(c);
        return 1;
    }
    c->bytes_in += (uint64_t)n;
    stats_add(c->host->env.stats, STATS_BYTES_IN, (uint64_t)n);
    timer_activity(c->timer, &c->te);
    if (buffered) {
        size_t first = (size_t)n < room ? (size_t)n : room;
        buffer_commit(&c->in, first);
        if ((size_t)n > first &&
            buffer_pool_append(&c->host->bufs, &c->in, extra, (size_t)n - first) < 0) {
            conn_close(c);
            return 1;
        }
        process_buffered(c);
    } else {
        size_t used = process(c, extra, (size_t)n);
        if (used < (size_t)n && !(c->pl.flags & (PIPELINE_CLOSE | PIPELINE_FAILED))) {
            if (buffer_pool_append(&c->host->bufs, &c->in, extra + used, (size_t)n - used) < 0) {
                conn_close(c);
                return 1;
            }
        }
    }
    settle(c);
    return 1;
}

/* ---- output ---- */

/* Sends the output listed in iov (n entries, len bytes): TLS takes one
 * entry at a time (a record each), a socket all of them in one call. */
static ssize_t send_iov(struct conn *c, struct iovec *iov, int n, size_t *len)
{
    if (c->tls) {
        *len = iov[0].iov_len;
        return tls_conn_send(c->tls, iov[0].iov_base, iov[0].iov_len);
    }
    if (n == 1)
        return send(c->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
    return sendmsg(c->fd, &mh, MSG_NOSIGNAL);
}

/* Writes as much output as the socket takes: the connection's own bytes
 * and the shared pieces among them (outq.h), in order, one writev a round.
 * Returns 0, or -1 when the socket failed (c is left open: the caller
 * closes it). */
static int write_out(struct conn *c)
{
    struct pipeline *pl = &c->pl;
    if (c->tls && !tls_conn_ready(c->tls))
        return 0; /* output waits for the handshake */
    while (pipeline_has_output(pl)) {
        struct iovec iov[OUTQ_IOV_MAX];
        int n = outq_iov(pl->outq, &pl->out, iov, OUTQ_IOV_MAX);
        size_t len = 0;
        for (int i = 0; i < n; i++)
            len += iov[i].iov_len;
        ssize_t w = send_iov(c, iov, n, &len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            stats_add(c->host->env.stats, STATS_CLOSED_RESET, 1);
            return -1;
        }
        c->bytes_out += (uint64_t)w;
        stats_add(c->host->env.stats, STATS_BYTES_OUT, (uint64_t)w);
        outq_consume(&pl->outq, &pl->out, (size_t)w);
        if ((size_t)w < len && !c->tls)
            break; /* the socket is full; EV_WRITE says when it has room (TLS
                    * takes a record at a time: it says EAGAIN when full) */
    }
    return 0;
}

/* write_out, closing c when its socket failed. Returns 0, or -1 when c was
 * closed. */
static int flush(struct conn *c)
{
    if (write_out(c) == 0)
        return 0;
    conn_close(c);
    return -1;
}

/* Reads and discards what the peer sends while lingering. Returns 1 when
 * the peer has closed (or the socket failed): time to close. */
static int linger_drain(struct conn *c)
{
    uint8_t sink[CONN_READ_EXTRA];
    for (int i = 0; i < CONN_LINGER_READS; i++) {
        ssize_t n = recv(c->fd, sink, sizeof sink, MSG_DONTWAIT);
        if (n == 0)
            return 1;
        if (n < 0)
            return !(errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
    }
    return 0;
}

/* Closes after the last reply without losing it. close() on a socket with
 * unread input answers with a RST, and a RST makes the peer's kernel throw
 * away the replies it has not read yet. So: shut the write side (a FIN after
 * the last byte), then linger, reading and discarding, until the peer closes
 * too or the linger time (timer.h) passes. */
static void close_gracefully(struct conn *c)
{
    if (c->tls)
        tls_conn_shutdown(c->tls); /* close_notify before the FIN */
    shutdown(c->fd, SHUT_WR);
    release_buffers(c);
    if (linger_drain(c)) {
        conn_close(c);
        return;
    }
    c->state |= CONN_LINGER;
    c->pl.flags |= PIPELINE_CLOSE; /* no more pushes (MESSAGE) either */
    if (c->state & CONN_IN_BACKLOG)
        backlog_remove(c);
    timer_linger(c->timer, &c->te);
    if (c->events != EV_READ) {
        if (c->events)
            ev_io_stop(c->host->loop, &c->io);
        ev_io_set(&c->io, c->fd, EV_READ);
        ev_io_start(c->host->loop, &c->io);
        c->events = EV_READ;
    }
}

/* Decides what happens next after input was processed or output drained:
 * flush, enforce the output limits, pause or resume reading, schedule another
 * turn, or close. */
static void settle(struct conn *c)
{
    struct pipeline *pl = &c->pl;
    const struct config *cfg = c->host->env.cfg;
    if (c->state & CONN_LINGER)
        return; /* nothing more goes out; io_cb and the timer close it */
    if (pl->flags & PIPELINE_FAILED) {
        conn_close(c);
        return;
    }
    if ((c->state & CONN_IDLE_HELD) && !(pl->flags & PIPELINE_HOLD)) {
        c->state &= ~(uint32_t)CONN_IDLE_HELD;
        timer_activity(c->timer, &c->te); /* its silence counts from the release */
    }
    if (flush(c) < 0)
        return;
    size_t pending = pipeline_pending(pl);
    bool owes_nothing = pipeline_idle(pl);
    if (pending > cfg->out_hard_limit) {
        stats_add(c->host->env.stats, STATS_CLOSED_HARD_LIMIT, 1);
        conn_close(c);
        return;
    }
    if (pl->flags & PIPELINE_CLOSE) {
        if (owes_nothing) {
            close_gracefully(c);
            return;
        }
    } else if (!(c->state & CONN_PAUSED) && pending > cfg->out_high_water) {
        c->state |= CONN_PAUSED;
        stats_add(c->host->env.stats, STATS_READ_PAUSES, 1);
    } else if ((c->state & CONN_PAUSED) && pending < cfg->out_low_water) {
        c->state &= ~(uint32_t)CONN_PAUSED;
        if (buffer_readable(&c->in) > 0)
            c->state |= CONN_MORE;
    }
    if (c->host->env.draining && !pl->proto->serves_drain && owes_nothing &&
        !(c->state & CONN_MORE)) {
        close_gracefully(c); /* rule 6: closed as soon as it owes nothing */
        return;
    }
    if (c->tls && tls_conn_pending(c->tls) && reads(c))
        c->state |= CONN_MORE; /* TLS holds input the socket will not announce */
    bool more = (c->state & CONN_MORE) && !(c->state & CONN_PAUSED) &&
                !(pl->flags & PIPELINE_CLOSE);
    if (more)
        backlog_push(c);
    else if ((c->state & CONN_PEER_EOF) && owes_nothing && !(c->state & CONN_PAUSED)) {
        /* Half-closed and owed nothing more: any partial frame left is dropped. */
        conn_close(c);
        return;
    }
    update_events(c);
    release_buffers(c);
}

void conn_drain(struct conn *c, uint32_t ms_left)
{
    if ((c->state & CONN_LINGER) || c->pl.proto->serves_drain)
        return; /* already closing, or it keeps serving until the process exits */
    if (proxy_pending(c)) {
        conn_close(c); /* nothing read yet, nothing owed */
        return;
    }
    c->drain_mark = buffer_readable(&c->in);
    if (c->pl.proto->goaway)
        c->pl.proto->goaway(&c->pl, ms_left);
    else
        pipeline_close_after_flush(&c->pl);
    settle(c);
}

void conn_defer(struct conn *c)
{
    if (c->state & CONN_LINGER)
        return; /* nothing more goes out */
    /* A turn that queues a lot to one connection (a burst of MESSAGEs to a
     * subscriber) writes it as it goes, so its output buffer stays below
     * CONN_WRITE_EARLY: memory the pool can keep, instead of one buffer per
     * subscriber regrown every turn. A failed socket is closed by the
     * backlog, never here (the caller may be walking a list holding c). */
    if (buffer_readable(&c->pl.out) >= CONN_WRITE_EARLY && !(c->pl.flags & PIPELINE_FAILED) &&
        write_out(c) < 0)
        c->pl.flags |= PIPELINE_FAILED;
    backlog_push(c); /* the backlog's turn processes (nothing) and settles */
}

/* The PROXY header did not come within PROXY_HEADER_S (a shorter
 * idle_timeout ends the wait in idle_cb first). */
static void proxy_expired(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct conn *c = w->data;
    stats_add(c->host->env.stats, STATS_CLOSED_PROXY, 1);
    conn_close(c);
}

/* The header is whole, or the connection is going: its bound is no more. */
static void proxy_done(struct conn *c)
{
    struct conn_proxy *p = c->proxy;
    ev_timer_stop(c->host->loop, &p->deadline);
    p->pending = false;
    free(p->hdr);
    p->hdr = NULL;
}

int conn_expect_proxy(struct conn *c)
{
    struct conn_proxy *p = calloc(1, sizeof *p);
    uint8_t *hdr = p ? malloc(16 + PROXY_V2_MAX) : NULL;
    if (!hdr) {
        free(p);
        return -ENOMEM;
    }
    p->hdr = hdr;
    p->pending = true;
    ev_timer_init(&p->deadline, proxy_expired, PROXY_HEADER_S, 0.);
    p->deadline.data = c;
    ev_timer_start(c->host->loop, &p->deadline);
    c->proxy = p;
    update_events(c);
    return 0;
}

int conn_peer_name(const struct conn *c, char *out, size_t outlen)
{
    if (c->proxy && c->proxy->has_peer)
        return proxy_format(&c->proxy->peer, out, outlen) == 0 ? 0 : -1;
    return net_peer_name(c->fd, out, outlen) < 0 ? -1 : 0;
}

static void handshake(struct conn *c);

/* Reads what it can of the PROXY header. Once it is whole, the connection
 * goes on as any other (TLS first where there is one) with what follows. */
static void proxy_step(struct conn *c)
{
    struct conn_proxy *p = c->proxy;
    struct stats *st = c->host->env.stats;
    size_t room = 16 + PROXY_V2_MAX - p->n;
    ssize_t got = recv(c->fd, p->hdr + p->n, room, MSG_PEEK);
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (got <= 0) { /* closed or reset before the header was whole */
        stats_add(st, STATS_CLOSED_PROXY, 1);
        conn_close(c);
        return;
    }
    struct proxy_header h;
    long r = proxy_parse(p->hdr, p->n + (size_t)got, &h);
    if (r < 0) {
        stats_add(st, STATS_CLOSED_PROXY, 1);
        conn_close(c);
        return;
    }
    /* Consume what belongs to the header: all of it when it is not whole
     * yet (every byte so far is the header's), else exactly its rest. */
    size_t take = r == 0 ? (size_t)got : (size_t)r - p->n;
    ssize_t t = recv(c->fd, p->hdr + p->n, take, 0);
    if (t != (ssize_t)take) {
        stats_add(st, STATS_CLOSED_PROXY, 1);
        conn_close(c);
        return;
    }
    p->n += take;
    c->bytes_in += take;
    if (r == 0)
        return;
    stats_add(st, STATS_PROXY_HEADERS, 1);
    proxy_done(c);
    if (!h.local && (h.src.ss_family == AF_INET || h.src.ss_family == AF_INET6)) {
        p->peer = h.src;
        p->has_peer = true;
    }
    update_events(c);
    if (c->tls && !tls_conn_ready(c->tls))
        handshake(c);
    else if (!on_readable(c))
        settle(c);
}

/* One step of the TLS handshake; once it is done, the input that came with
 * its last flight is read. */
static void handshake(struct conn *c)
{
    struct stats *st = c->host->env.stats;
    int rc = tls_conn_handshake(c->tls);
    if (rc < 0) {
        stats_add(st, rc == -TLS_FAIL_CERT      ? STATS_TLS_FAILED_CERT
                      : rc == -TLS_FAIL_ABORTED ? STATS_TLS_FAILED_ABORTED
                                                : STATS_TLS_FAILED_PROTOCOL, 1);
        if (rc == -TLS_FAIL_ABORTED)
            conn_close(c);
        else
            close_gracefully(c); /* the alert is read, not lost to a reset */
        return;
    }
    update_events(c);
    if (rc == 0)
        return;
    stats_add(st, STATS_TLS_HANDSHAKES, 1);
    if (tls_conn_resumed(c->tls))
        stats_add(st, STATS_TLS_RESUMED, 1);
    if (!on_readable(c))
        settle(c); /* output queued meanwhile (a drain's GOAWAY) */
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    struct conn *c = w->data;
    if (c->state & CONN_LINGER) {
        if (linger_drain(c))
            conn_close(c);
        return;
    }
    if (proxy_pending(c)) {
        proxy_step(c);
        return;
    }
    if (c->tls && !tls_conn_ready(c->tls)) {
        handshake(c);
        return;
    }
    /* A TLS read that had to write first goes on once the socket takes it. */
    bool read_now = (revents & EV_READ) ||
                    (c->tls && (tls_conn_want(c->tls) & TLS_WANT_WRITE) && (revents & EV_WRITE));
    if (read_now && on_readable(c))
        return; /* it settled, which flushes too */
    if (revents & EV_WRITE)
        settle(c);
}

/* Gives every connection that was left with input one more turn. */
static void backlog_check_cb(struct ev_loop *loop, ev_check *w, int revents)
{
    (void)revents;
    struct conn_host *h = w->data;
    /* Only those queued now: a connection put back gets its turn next time. */
    struct conn *last = h->backlog_tail;
    for (struct conn *c; last && (c = backlog_pop(h)) != NULL;) {
        bool was_last = c == last;
        /* TLS input left behind by a read that filled its buffers is read
         * now; otherwise (or when it was not there after all) the frames
         * already buffered get their turn. */
        if (!(c->tls && tls_conn_pending(c->tls) && reads(c) && on_readable(c))) {
            process_buffered(c);
            settle(c);
        }
        if (was_last)
            break;
    }
    if (!h->backlog)
        ev_idle_stop(loop, &h->backlog_idle);
}

static void backlog_idle_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    /* Nothing to do: being active keeps the loop from blocking while the
     * backlog waits for its ev_check turn. */
    (void)loop;
    (void)w;
    (void)revents;
}

/* ---- heartbeat and idle ---- */

#define CONN_OF_ENTRY(e) ((struct conn *)((char *)(e) - offsetof(struct conn, te)))

static void heartbeat_cb(struct timer *t, struct timer_entry *e)
{
    (void)t;
    struct conn *c = CONN_OF_ENTRY(e);
    if ((c->pl.flags & PIPELINE_CLOSE) || (c->tls && !tls_conn_ready(c->tls)) ||
        proxy_pending(c))
        return;
    c->pl.proto->heartbeat(&c->pl);
    stats_add(c->host->env.stats, STATS_HEARTBEATS, 1);
    if (flush(c) < 0)
        return;
    settle(c);
}

/* A closing connection lingered long enough: close it now. */
static void linger_cb(struct timer *t, struct timer_entry *e)
{
    (void)t;
    conn_close(CONN_OF_ENTRY(e));
}

static void idle_cb(struct timer *t, struct timer_entry *e)
{
    struct conn *c = CONN_OF_ENTRY(e);
    if (c->pl.flags & PIPELINE_HOLD) {
        /* Its input waits on a worker (a big compression or decompression),
         * so what it sent since, heartbeat answers included, is unread: the
         * silence is ours. Counted again from the release (settle). */
        c->state |= CONN_IDLE_HELD;
        timer_activity(t, e);
        return;
    }
    timer_remove(t, e);
    if (proxy_pending(c)) {
        stats_add(c->host->env.stats, STATS_CLOSED_PROXY, 1);
        conn_close(c); /* the header never came: nothing to say in the protocol */
        return;
    }
    if (c->tls && !tls_conn_ready(c->tls)) {
        stats_add(c->host->env.stats, STATS_TLS_FAILED_TIMEOUT, 1);
        conn_close(c); /* a stalled handshake: nothing to say in the protocol */
        return;
    }
    stats_add(c->host->env.stats, STATS_CLOSED_IDLE, 1);
    if (c->pl.proto->idle)
        c->pl.proto->idle(&c->pl);
    if (flush(c) < 0)
        return;
    close_gracefully(c); /* whatever the socket did not take is dropped */
}

static ev_tstamp ms_to_s(uint64_t ms) { return (ev_tstamp)ms / 1000.0; }

/* The listener sections with their own timeouts (CONFIG.md): timers[i]
 * serves the protocol named timer_sections[i]; the last timer, any other. */
static const char *const timer_sections[CONN_TIMERS - 1] = {"msg", "echo", "admin", "http"};

static struct timer *timer_for(struct conn_host *h, const struct proto *proto)
{
    for (int i = 0; i < CONN_TIMERS - 1; i++)
        if (proto->name && strcmp(proto->name, timer_sections[i]) == 0)
            return &h->timers[i];
    return &h->timers[CONN_TIMERS - 1];
}

/* timers[i]'s heartbeat and idle intervals in seconds. */
static void timer_intervals(const struct conn_host *h, int i, ev_tstamp *hb, ev_tstamp *idle)
{
    uint64_t hb_ms, idle_ms;
    config_listener_timeouts(h->env.cfg, i < CONN_TIMERS - 1 ? timer_sections[i] : "",
                             &hb_ms, &idle_ms);
    *hb = ms_to_s(hb_ms);
    *idle = ms_to_s(idle_ms);
}

/* The pool's bounds for max_frame: CONN_POOL_BYTES and CONN_POOL_ITEM, or
 * more, so that a client sending frames of max_frame reuses memory instead
 * of taking fresh pages each time: an item as big as such a frame needs (a
 * power of two past it), and room for three of them (the input, the
 * reply's output, and the smaller buffers the input grew through, which
 * add up to one more). Fresh pages are faulted in one by one, and on this
 * VM that made a 4 MiB ECHO cost its reactor 40 ms (docs/BENCHMARKS.md).
 * Past BUFFER_POOL_ITEM_MAX they are not kept. */
static void pool_bounds(const struct conn_host *h, size_t *bytes, size_t *item)
{
    size_t need = (size_t)h->env.cfg->max_frame + MSG_HEADER_LEN + BUFFER_PREPEND + CONN_READ_MIN;
    size_t frame = CONN_POOL_ITEM / 4;
    while (frame < need && frame < BUFFER_POOL_ITEM_MAX)
        frame *= 2;
    *item = frame > CONN_POOL_ITEM ? frame : CONN_POOL_ITEM;
    *bytes = 3 * frame > CONN_POOL_BYTES ? 3 * frame : CONN_POOL_BYTES;
}

void conn_host_reload(struct conn_host *h)
{
    size_t bytes, item;
    pool_bounds(h, &bytes, &item);
    buffer_pool_set_bounds(&h->bufs, bytes, item);
    watch_pool(h); /* the gauge, at once */
    for (int i = 0; i < CONN_TIMERS; i++) {
        ev_tstamp hb, idle;
        timer_intervals(h, i, &hb, &idle);
        timer_set_intervals(&h->timers[i], hb, idle);
    }
}

/* ---- lifetime ---- */

void conn_host_init(struct conn_host *h, struct ev_loop *loop)
{
    for (int i = 0; i < CONN_TIMERS; i++) {
        ev_tstamp hb, idle;
        timer_intervals(h, i, &hb, &idle);
        timer_init(&h->timers[i], loop, hb, idle, heartbeat_cb, idle_cb);
        h->timers[i].on_linger = linger_cb;
    }
    h->loop = loop;
    h->backlog = h->backlog_tail = NULL;
    size_t bytes, item;
    pool_bounds(h, &bytes, &item);
    buffer_pool_init(&h->bufs, bytes, item);
    h->env.bufs = &h->bufs;
    ev_init(&h->bufs_trim, bufs_trim_cb);
    h->bufs_trim.repeat = CONN_POOL_TRIM_S;
    h->bufs_trim.data = h;
    ev_check_init(&h->backlog_check, backlog_check_cb);
    h->backlog_check.data = h;
    /* libev runs a turn's pending callbacks by priority: at the lowest, the
     * backlog runs after every socket and mailbox callback of the turn, so
     * all a connection was given during the turn (pushes, late replies)
     * leaves in one write. */
    ev_set_priority(&h->backlog_check, EV_MINPRI);
    ev_check_start(loop, &h->backlog_check);
    ev_idle_init(&h->backlog_idle, backlog_idle_cb);
    h->backlog_idle.data = h;
}

void conn_host_stop(struct conn_host *h)
{
    buffer_pool_free(&h->bufs);
    ev_timer_stop(h->loop, &h->bufs_trim);
    for (int i = 0; i < CONN_TIMERS; i++)
        timer_stop(&h->timers[i]);
    ev_check_stop(h->loop, &h->backlog_check);
    ev_idle_stop(h->loop, &h->backlog_idle);
}

struct conn *conn_open(struct conn_host *h, int fd, const struct proto *proto, uint64_t id)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return NULL;
    }
    c->id = id;
    c->fd = fd;
    c->host = h;
    c->pl.proto = proto;
    c->pl.env = &h->env;
    c->pl.conn_id = id;
    c->created = ev_now(h->loop);
    ev_io_init(&c->io, io_cb, fd, EV_READ);
    c->io.data = c;
    ev_io_start(h->loop, &c->io);
    c->events = EV_READ;
    c->timer = timer_for(h, proto);
    timer_add(c->timer, &c->te, proto->heartbeat != NULL);
    return c;
}

/* The handshake's own deadline (tls.h TLS_HANDSHAKE_S) passed; a shorter
 * idle_timeout ends it in idle_cb first. */
static void handshake_expired(void *arg)
{
    struct conn *c = arg;
    stats_add(c->host->env.stats, proxy_pending(c) ? STATS_CLOSED_PROXY : STATS_TLS_FAILED_TIMEOUT,
              1);
    conn_close(c);
}

void conn_start_tls(struct conn *c, struct tls_conn *tls)
{
    c->tls = tls;
    c->pl.secure = true;
    tls_conn_watch(tls, c->host->loop, handshake_expired, c);
    update_events(c);
}

void conn_close(struct conn *c)
{
    struct conn_host *h = c->host;
    if (c->events)
        ev_io_stop(h->loop, &c->io);
    if (c->state & CONN_IN_BACKLOG)
        backlog_remove(c);
    timer_remove(c->timer, &c->te);
    tls_conn_free(c->tls);
    if (c->proxy)
        proxy_done(c);
    free(c->proxy);
    close(c->fd);
    c->pl.flags |= PIPELINE_GONE;
    if (c->pl.proto->free)
        c->pl.proto->free(&c->pl);
    h->closed(h, c);
    buffer_pool_put(&h->bufs, &c->in);
    buffer_free(&c->in);
    pipeline_free(&c->pl);
    free(c);
    watch_pool(h);
}
