/* fuzz_common: shared pieces of the libFuzzer targets: a checked abort, a
 * small deterministic PRNG for chunk sizes, and a connection emulator that
 * feeds a byte stream to a protocol's split/handle/violation through the
 * same frame loop as src/conn.c (feed_bytes(), feed.h), with conn.c's
 * on_readable(), process_buffered() and settle() around it, minus the
 * socket, the event loop and the timers. Header-only: each fuzz
 * target is one translation unit linked with the src/ files it needs. */
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

/* The socket took everything: pl->out moves to the wire. */
static inline void fuzz_conn_flush(struct fuzz_conn *fc)
{
    struct buffer *out = &fc->pl->out;
    size_t n = buffer_readable(out);
    if (n) {
        FUZZ_CHECK(buffer_append(&fc->wire, fuzz_bytes(out), n) == 0, "out of memory");
        buffer_consume(out, n);
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

static inline void fuzz_conn_free(struct fuzz_conn *fc)
{
    buffer_free(&fc->in);
    buffer_free(&fc->wire);
}

#endif
