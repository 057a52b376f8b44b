/* proto_msg_decompress: big COMPRESSED requests decompressed on the worker
 * pool, so that one client's 1 MiB deflate payload (about 3 ms to
 * decompress here) does not hold every other connection of its reactor. The
 * sender's input is held meanwhile, so its requests keep their order. */
#include "proto_msg.h"

#include <errno.h>
#include <string.h>

#include "config.h"
#include "latency.h"
#include "stats.h"
#include "worker.h"

/* A request whose payload looks like it decompresses to at least this much
 * (codec_size_hint, within the bound) goes to the workers. deflate: from 64
 * KiB, where one decompression costs a reactor about 0.2 ms (3 ms for 1
 * MiB). zstd is four times faster: at 1 MiB (0.7 ms) the worker hop cost
 * more than it saved on this machine, at 4 MiB (14 ms, with the page faults
 * of fresh memory) it saved nearly all of it (docs/BENCHMARKS.md "Big
 * decompressions off the reactor"); 2 MiB is between. */
static const size_t offload_min[CODEC_COUNT] = {
    [CODEC_ZSTD] = 2048u * 1024u,
    [CODEC_DEFLATE] = 64u * 1024u,
};

/* What the job carries before the compressed payload; n is the worker's
 * outcome (codec_decompress's), written back in place. */
struct djob_args {
    uint32_t cmd;
    uint8_t codec;
    size_t max;
    uint64_t t0_ns;                    /* when the request was decoded */
    long n;
};

/* On a worker thread: job->result gets the plain payload. */
static void djob_run(struct worker_pool *pool, struct worker_job *job)
{
    (void)pool;
    struct djob_args a;
    memcpy(&a, job->payload, sizeof a);
    struct codec_ctx *ctx = proto_msg_worker_codec();
    a.n = ctx ? codec_decompress(ctx, a.codec, job->payload + sizeof a, job->len - sizeof a, a.max,
                                 &job->result)
              : -ENOMEM;
    memcpy(job->payload, &a, sizeof a);
}

/* Back on the reactor: the request is handled in its place (unless its
 * connection has gone or is closing), then the held input goes on. */
static void djob_back(struct mailbox_item *it, void *ctx)
{
    const struct pipeline_env *env = ctx;
    struct worker_job *job = (struct worker_job *)it;
    struct pipeline *pl = env->ops->lookup(env->host, job->conn_id);
    if (!pl) {
        stats_add(env->stats, STATS_RESULTS_DROPPED, 1);
    } else {
        struct djob_args a;
        memcpy(&a, job->payload, sizeof a);
        pl->flags &= ~(uint32_t)PIPELINE_HOLD;
        if (!(pl->flags & (PIPELINE_CLOSE | PIPELINE_FAILED))) {
            pl->req_t0 = a.t0_ns; /* its latency includes the trip */
            proto_msg_decompressed(pl, a.cmd, a.n, &job->result);
        }
        env->ops->defer(pl); /* its output goes out and its held input is handled this turn */
    }
    buffer_consume(&job->result, buffer_readable(&job->result));
    buffer_pool_put(env->bufs, &job->result); /* the room goes back where it came from */
    worker_job_free(job);
}

bool proto_msg_decompress_offload(struct pipeline *pl, uint32_t cmd, const uint8_t *p, size_t len,
                                  size_t max)
{
    const struct pipeline_env *env = pl->env;
    unsigned id = pl->codec;
    if (!env->pool || !env->ops || id == CODEC_NONE || id >= CODEC_COUNT)
        return false;
    /* The work is bounded by max (the pre-auth cap before AUTH); a zstd
     * frame that declares more than max fails at once, on the reactor. */
    bool declared;
    size_t hint = codec_size_hint(id, p, len, &declared);
    size_t work = hint < max ? hint : max;
    if (work < offload_min[id] || (declared && hint > max))
        return false;
    struct djob_args a = {.cmd = cmd, .codec = (uint8_t)id, .max = max, .t0_ns = pl->req_t0};
    struct worker_job *job = worker_job_new(pl->conn_id, 0, 0, djob_run, djob_back, NULL,
                                            sizeof a + len);
    if (!job)
        return false;
    memcpy(job->payload, &a, sizeof a);
    memcpy(job->payload + sizeof a, p, len);
    /* The plain payload is made in room from the reactor's pool, as big as
     * it should need: a fresh buffer grown on the worker would be mmap'd,
     * faulted in page by page and munmap'd for every request (ten times
     * the decompression itself here). */
    if (buffer_pool_get_fit(env->bufs, &job->result, work) < 0 ||
        worker_submit(env->pool, job) < 0) {
        buffer_pool_put(env->bufs, &job->result);
        worker_job_free(job);
        return false;
    }
    stats_add(env->stats, STATS_DECOMPRESSIONS, 1); /* counted when handed over */
    pl->flags |= PIPELINE_HOLD;
    return true;
}
