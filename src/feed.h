/* feed: a connection's frame loop without the socket: bytes in, whole frames
 * through the protocol's split/handle (or its violation), stopping at the
 * per-turn frame cap or at back-pressure. conn.c and the fuzz targets call
 * this one function. Reactor thread only. */
#ifndef MSGD_FEED_H
#define MSGD_FEED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pipeline;

/* Frames handled per connection per loop turn (conn.c's cap), so that one
 * connection cannot hold its reactor. */
#define FEED_FRAMES_PER_TURN 1024

/* What one call did. */
struct feed_result {
    size_t used;        /* bytes consumed: the whole frames handled, or all of
                         * the input after a violation (the rest is discarded) */
    unsigned frames;    /* frames handled */
    bool more;          /* stopped at a cap (max_frames, or pipeline_pending()
                         * above high_water) with input left: the caller owes
                         * the connection another turn */
};

/* Feeds the n bytes at p to pl's protocol: splits off whole frames and
 * handles them in order until the input runs out, a frame is incomplete,
 * the pipeline is marked PIPELINE_CLOSE or PIPELINE_FAILED, max_frames (> 0)
 * frames were handled, or pipeline_pending(pl) (output plus held replies)
 * is above high_water. A split error goes to the protocol's violation and
 * consumes the rest of the input.
 *
 * *drain_mark is the caller's count of input bytes read before the drain
 * began and not yet processed, counted from p: a frame lying wholly inside
 * it is handled with pl->read_before_drain set (answered as usual, rule 6),
 * and the mark shrinks by each frame handled. Pass a mark of 0 when not
 * draining.
 *
 * Sets pl->req_t0 (the latency start of the batch) and adds the frames to
 * STATS_FRAMES_IN of pl->env->stats when there is one. p stays the caller's;
 * only the pipeline and *drain_mark are written. Reactor thread only. */
struct feed_result feed_bytes(struct pipeline *pl, const uint8_t *p, size_t n, size_t *drain_mark,
                              unsigned max_frames, uint64_t high_water);

#endif
