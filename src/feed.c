/* feed: one connection's frame loop (split, handle, violation, drain mark,
 * per-turn cap, back-pressure) on bytes given, without socket or event loop.
 * Owns nothing: it works on the caller's pipeline and bytes. */
#include "feed.h"

#include "latency.h"
#include "pipeline.h"
#include "stats.h"

struct feed_result feed_bytes(struct pipeline *pl, const uint8_t *p, size_t n, size_t *drain_mark,
                              unsigned max_frames, uint64_t high_water)
{
    struct feed_result res = {0};
    pl->req_t0 = latency_now_ns();
    while (res.used < n && !(pl->flags & (PIPELINE_CLOSE | PIPELINE_FAILED | PIPELINE_HOLD))) {
        if (res.frames >= max_frames || pipeline_pending(pl) > high_water) {
            res.more = true;
            break;
        }
        long r = pl->proto->split(pl, p + res.used, n - res.used);
        if (r == 0)
            break;
        if (r < 0) {
            pl->proto->violation(pl, r);
            res.used = n;
            break;
        }
        /* A frame wholly read before the drain began is answered as usual;
         * the mark only covers the front of the input. */
        pl->read_before_drain = *drain_mark >= (size_t)r;
        *drain_mark = *drain_mark > (size_t)r ? *drain_mark - (size_t)r : 0;
        pl->proto->handle(pl, p + res.used, (size_t)r);
        res.used += (size_t)r;
        res.frames++;
    }
    if (pl->env && pl->env->stats)
        stats_add(pl->env->stats, STATS_FRAMES_IN, res.frames);
    return res;
}
