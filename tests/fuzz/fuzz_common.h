/* fuzz_common: shared pieces of the libFuzzer targets: a checked abort, a
 * small deterministic PRNG for chunk sizes, a connection emulator that
 * feeds a byte stream to a protocol's split/handle/violation through the
 * same frame loop as src/conn.c (feed_bytes(), feed.h), with conn.c's
 * on_readable(), process_buffered() and settle() around it, minus the
 * socket, the event loop and the timers, and a reactor emulator: the
 * services a reactor lends its pipelines (struct pipeline_host_ops) for the
 * one emulated connection, and the reactor's mailbox, whose items (fan-out
 * visits and reports, late replies) run as the production code defines them
 * (mailbox_run). Header-only: each fuzz target is one translation unit
 * linked with the src/ files it needs. */
#ifndef MSGD_FUZZ_COMMON_H
#define MSGD_FUZZ_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buffer.h"
#include "feed.h"
#include "mailbox.h"
#include "pipeline.h"
#include "stats.h"

/* An invariant failed: say which and abort, so libFuzzer saves the input. */
__attribute__((noreturn, format(printf, 3, 4))) static void
fuzz_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "\n==FUZZ INVARIANT FAILED== %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

#define FUZZ_CHECK(cond, ...) \
    do { \
        if (!(cond)) \
            fuzz_fail(__FILE__, __LINE__, "(" #cond ") " __VA_ARGS__); \
    } while (0)

/* xorshift32: chunk sizes and scheduling choices from a seed in the input. */
struct fuzz_rng {
    uint32_t s;
};

static inline uint32_t fuzz_rng_next(struct fuzz_rng *r)
{
    uint32_t x = r->s ? r->s : 0x9E3779B9u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    r->s = x;
    return x;
}

/* A chunk size in 1..max. */
static inline size_t fuzz_rng_chunk(struct fuzz_rng *r, size_t max)
{
    return max <= 1 ? 1 : 1 + fuzz_rng_next(r) % max;
}

/* The readable bytes of b; unlike buffer_peek() also fine on a buffer that
 * never held anything (NULL data: NULL + 0 is undefined in C). */
static inline const uint8_t *fuzz_bytes(const struct buffer *b)
{
    return b->data ? b->data + b->rpos : (const uint8_t *)"";
}

/* ---- the connection emulator ------------------------------------------ */

/* conn.c's per-turn frame cap. The caps only decide when a turn ends, never
 * what is produced. */
#define FUZZ_CONN_FRAMES_PER_TURN FEED_FRAMES_PER_TURN
#define FUZZ_CONN_KEEP_BUFFER (16 * 1024)

struct fuzz_conn {
    struct pipeline *pl;
    struct buffer in;        /* conn.c's c->in */
    struct buffer wire;      /* everything "sent": pl->out flushed here, in order */
    unsigned frames_per_turn;
    uint64_t high;           /* cfg->out_high_water */
    size_t drain_mark;       /* conn.c's c->drain_mark (0: read after any drain) */
    bool more;               /* conn.c's CONN_MORE */
    uint64_t frames_in;      /* what conn.c adds to STATS_FRAMES_IN */
    uint64_t bytes_fed;      /* bytes given to the connection (read) */
    uint64_t bytes_used;     /* bytes consumed by feed_bytes() */
    uint64_t turns;
    /* Optional: the reactor's mailbox turn (worker results, fan-outs), run
     * at every settle; it may add output or complete held reply slots. */
    void (*poll)(struct fuzz_conn *fc);
};

static inline bool fuzz_conn_closed(const struct fuzz_conn *fc)
{
    return (fc->pl->flags & (PIPELINE_CLOSE | PIPELINE_FAILED)) != 0;
}

/* conn.c's process(): feed_bytes() with the emulator's caps, and the checks
 * on what it reports. */
static inline size_t fuzz_conn_process(struct fuzz_conn *fc, const uint8_t *p, size_t n)
{
    struct pipeline *pl = fc->pl;
    struct stats *st = pl->env ? pl->env->stats : NULL;
    uint64_t counted = st ? stats_get(st, STATS_FRAMES_IN) : 0;
    size_t mark = fc->drain_mark;
    fc->turns++;
    struct feed_result r = feed_bytes(pl, p, n, &fc->drain_mark, fc->frames_per_turn, fc->high);
    FUZZ_CHECK(r.used <= n, "consumed %zu of %zu bytes", r.used, n);
    FUZZ_CHECK(r.frames <= fc->frames_per_turn && r.frames <= r.used,
               "%u frames in %zu bytes (cap %u)", r.frames, r.used, fc->frames_per_turn);
    FUZZ_CHECK(!r.more || (r.used < n && !fuzz_conn_closed(fc) &&
                           (r.frames == fc->frames_per_turn || pipeline_pending(pl) > fc->high)),
               "more after %zu of %zu bytes, %u frames, %zu pending", r.used, n, r.frames,
               pipeline_pending(pl));
    FUZZ_CHECK(fc->drain_mark <= mark, "the drain mark grew from %zu to %zu", mark,
               fc->drain_mark);
    if (st)
        FUZZ_CHECK(stats_get(st, STATS_FRAMES_IN) - counted == r.frames,
                   "frames_in grew by %llu for %u frames",
                   (unsigned long long)(stats_get(st, STATS_FRAMES_IN) - counted), r.frames);
    fc->more = r.more;
    fc->frames_in += r.frames;
    fc->bytes_used += r.used;
    return r.used;
}

/* conn.c's process_buffered(). */
static inline void fuzz_conn_process_buffered(struct fuzz_conn *fc)
{
    size_t avail = buffer_readable(&fc->in);
    size_t used = fuzz_conn_process(fc, fuzz_bytes(&fc->in), avail);
    FUZZ_CHECK(used <= avail, "consumed %zu of %zu buffered bytes", used, avail);
    buffer_consume(&fc->in, used);
    buffer_shrink(&fc->in, FUZZ_CONN_KEEP_BUFFER);
}

/* The socket took everything: pl->out and the shared pieces among it
 * (outq.h) move to the wire in order, as conn.c's write_out sends them. */
static inline void fuzz_conn_flush(struct fuzz_conn *fc)
{
    struct buffer *out = &fc->pl->out;
    while (pipeline_has_output(fc->pl)) {
        struct iovec iov[OUTQ_IOV_MAX];
        int k = outq_iov(fc->pl->outq, out, iov, OUTQ_IOV_MAX);
        size_t n = 0;
        for (int i = 0; i < k; i++) {
            FUZZ_CHECK(iov[i].iov_len > 0, "an empty piece of output");
            FUZZ_CHECK(buffer_append(&fc->wire, iov[i].iov_base, iov[i].iov_len) == 0,
                       "out of memory");
            n += iov[i].iov_len;
        }
        outq_consume(&fc->pl->outq, out, n);
    }
    buffer_shrink(out, FUZZ_CONN_KEEP_BUFFER);
}

/* One read of n bytes: conn.c's on_readable() after readv(). A closed
 * connection reads nothing more (update_events drops EV_READ). */
static inline void fuzz_conn_read(struct fuzz_conn *fc, const uint8_t *p, size_t n)
{
    if (fuzz_conn_closed(fc) || n == 0)
        return;
    fc->bytes_fed += n;
    if (buffer_readable(&fc->in) > 0) {
        FUZZ_CHECK(buffer_append(&fc->in, p, n) == 0, "out of memory");
        fuzz_conn_process_buffered(fc);
    } else {
        size_t used = fuzz_conn_process(fc, p, n);
        if (used < n && !fuzz_conn_closed(fc))
            FUZZ_CHECK(buffer_append(&fc->in, p + used, n - used) == 0, "out of memory");
    }
    FUZZ_CHECK(fc->bytes_used <= fc->bytes_fed, "consumed %llu of %llu bytes fed",
               (unsigned long long)fc->bytes_used, (unsigned long long)fc->bytes_fed);
}

/* The backlog turns (conn.c's backlog_check_cb) until no input is left that
 * could hold a frame, with the mailbox turns and the flushes in between (a
 * paused connection resumes once its output drained). */
static inline void fuzz_conn_settle(struct fuzz_conn *fc)
{
    if (fc->poll)
        fc->poll(fc);
    fuzz_conn_flush(fc);
    unsigned guard = 0;
    while (fc->more && !fuzz_conn_closed(fc)) {
        FUZZ_CHECK(++guard < 1000000, "the backlog makes no progress");
        fuzz_conn_process_buffered(fc);
        if (fc->poll)
            fc->poll(fc);
        fuzz_conn_flush(fc);
    }
}

/* Feeds the whole stream: in chunks of 1..max_chunk bytes (rng), with the
 * backlog turns and the flushes sometimes deferred past the next read, as
 * when a read event comes before the ev_check turn. max_chunk == 0: one read. */
static inline void fuzz_conn_feed(struct fuzz_conn *fc, const uint8_t *p, size_t n, size_t max_chunk,
                           struct fuzz_rng *rng)
{
    size_t off = 0;
    while (off < n && !fuzz_conn_closed(fc)) {
        size_t k = max_chunk ? fuzz_rng_chunk(rng, max_chunk) : n - off;
        if (k > n - off)
            k = n - off;
        fuzz_conn_read(fc, p + off, k);
        off += k;
        if (!max_chunk || (fuzz_rng_next(rng) & 3) != 0)
            fuzz_conn_settle(fc);
    }
    fuzz_conn_settle(fc);
}

/* The caps of a run, as the text targets (admin, http) take them from their
 * first parameter byte: bits 0-1 the largest read (1, 5, 100 or 4096
 * bytes), bit 2 output_high_water = 64 (turns end on back-pressure), bit 3
 * two frames per turn (turns end at the cap). */
struct fuzz_turns {
    size_t max_chunk;
    uint64_t high;
    unsigned per_turn;
};

static inline struct fuzz_turns fuzz_turns_of(uint8_t b)
{
    static const size_t max_chunks[4] = {1, 5, 100, 4096};
    return (struct fuzz_turns){.max_chunk = max_chunks[b & 3],
                               .high = b & 4 ? 64 : 1u << 20,
                               .per_turn = b & 8 ? 2 : FUZZ_CONN_FRAMES_PER_TURN};
}

static inline void fuzz_conn_free(struct fuzz_conn *fc)
{
    buffer_free(&fc->in);
    buffer_free(&fc->wire);
}

/* ---- the reactor emulator --------------------------------------------- */

/* One reactor with one connection (fc). The target's struct pipeline_env
 * points at it: .ops = fuzz_host_ops(), .host = the fuzz_host, and its
 * mailbox runs with that env as ctx, as reactor.c runs its own. */
struct fuzz_host {
    struct fuzz_conn *fc;
    const struct pipeline_env *env;  /* the reactor's env: its items' ctx */
    struct mailbox box;              /* the reactor's mailbox */
    bool gone;                       /* the connection closed: lookup finds nothing */
    uint64_t kicks, defers;          /* ops->kick / ops->defer calls */
    uint64_t strays;                 /* lookups of an id that never was the connection's */
    size_t noted;                    /* readable bytes of pl->out at the last kick/defer */
};

static inline struct fuzz_host *fuzz_host_of(const struct pipeline *pl)
{
    return (struct fuzz_host *)pl->env->host;
}

static inline struct pipeline *fuzz_host_lookup(void *host, uint64_t conn_id)
{
    struct fuzz_host *h = host;
    if (conn_id != h->fc->pl->conn_id) {
        h->strays++;
        return NULL;
    }
    return h->gone ? NULL : h->fc->pl;
}

/* kick and defer: the emulator flushes at its settle, after the mailbox
 * turn; they only note that output was queued outside the connection's own
 * callbacks, for the check in fuzz_host_turn. */
static inline void fuzz_host_note(struct pipeline *pl)
{
    struct fuzz_host *h = fuzz_host_of(pl);
    FUZZ_CHECK(pl == h->fc->pl && !h->gone, "kick or defer of a pipeline that is not the open "
               "connection's");
    h->noted = buffer_readable(&pl->out) + outq_shared(pl->outq);
}

static inline void fuzz_host_kick(struct pipeline *pl)
{
    fuzz_host_note(pl);
    fuzz_host_of(pl)->kicks++;
}

static inline void fuzz_host_defer(struct pipeline *pl)
{
    fuzz_host_note(pl);
    fuzz_host_of(pl)->defers++;
}

static inline void fuzz_host_each(void *host, pipeline_each_fn fn, void *arg)
{
    struct fuzz_host *h = host;
    if (!h->gone)
        fn(h->fc->pl, arg);
}

/* A fixed description: what does not depend on how the input was chunked. */
static inline void fuzz_host_describe(struct pipeline *pl, struct pipeline_info *info)
{
    memset(info, 0, sizeof *info);
    info->id = pl->conn_id;
    snprintf(info->peer, sizeof info->peer, "-");
    info->proto = pl->proto->name;
    info->reactor = pl->env->reactor;
}

static inline const struct pipeline_host_ops *fuzz_host_ops(void)
{
    static const struct pipeline_host_ops ops = {
        .lookup = fuzz_host_lookup,
        .kick = fuzz_host_kick,
        .defer = fuzz_host_defer,
        .each = fuzz_host_each,
        .describe = fuzz_host_describe,
    };
    return &ops;
}

static inline void fuzz_host_init(struct fuzz_host *h, struct fuzz_conn *fc,
                                  const struct pipeline_env *env)
{
    *h = (struct fuzz_host){.fc = fc, .env = env};
    FUZZ_CHECK(mailbox_init(&h->box) == 0, "mailbox_init");
}

/* Whether mb has items and the rng lets them run now (s == 0: always). One
 * thread: the list can be looked at without the lock, which spares the
 * eventfd read of an empty mailbox_take(). */
static inline bool fuzz_mailbox_due(const struct mailbox *mb, struct fuzz_rng *rng)
{
    return mb->head && (rng->s == 0 || (fuzz_rng_next(rng) & 1));
}

/* One turn of the reactor's mailbox, as its eventfd callback runs it.
 * Output an item queued for the connection must have been followed by a
 * kick or defer, or in the server it would wait for the next unrelated
 * event. Returns how many items ran. */
static inline unsigned fuzz_host_turn(struct fuzz_host *h)
{
    const struct pipeline *pl = h->fc->pl;
    h->noted = buffer_readable(&pl->out) + outq_shared(pl->outq);
    unsigned n = mailbox_run(&h->box, (void *)h->env);
    if (!h->gone) {
        size_t now = buffer_readable(&pl->out) + outq_shared(pl->outq);
        FUZZ_CHECK(now == h->noted, "a mailbox item queued %zu bytes of output with no kick or "
                   "defer after them", now - h->noted);
    }
    return n;
}

/* The connection closes (conn.c's conn_close): the protocol's state goes
 * and its id names nothing any more. */
static inline void fuzz_host_close(struct fuzz_host *h)
{
    struct pipeline *pl = h->fc->pl;
    if (pl->proto->free)
        pl->proto->free(pl);
    h->gone = true;
}

/* Drops what is left in the mailbox (each item's drop) and checks that no
 * item named a connection that never was. */
static inline void fuzz_host_free(struct fuzz_host *h)
{
    mailbox_destroy(&h->box);
    FUZZ_CHECK(h->strays == 0, "%llu lookups of an unknown connection id",
               (unsigned long long)h->strays);
}

#endif
