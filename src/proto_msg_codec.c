/* proto_msg_codec: the codec HELLO agreed on a msg connection (PROTOCOL.md
 * "Compression"): frames written to it compressed when that pays, COMPRESSED
 * requests decompressed within their bound, and push frames that many
 * receivers share encoded once per codec in use. */
#include "proto_msg.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "config.h"
#include "msg.h"
#include "stats.h"
#include "worker.h"

/* How many connections use each codec now: a fan-out compresses its frame
 * only for codecs someone uses. Any thread. */
static _Atomic uint32_t users[CODEC_COUNT];

void proto_msg_codec_set(struct pipeline *pl, unsigned id)
{
    if (pl->codec)
        atomic_fetch_sub_explicit(&users[pl->codec], 1, memory_order_relaxed);
    pl->codec = (uint8_t)id;
    if (id)
        atomic_fetch_add_explicit(&users[id], 1, memory_order_relaxed);
}

/* Compresses len bytes at p with codec id into out (empty) when env
 * compresses and the result is smaller. Returns true when out holds it. */
static bool compress_smaller(const struct pipeline_env *env, unsigned id, const void *p, size_t len,
                             struct buffer *out)
{
    if (id == CODEC_NONE || !env->codec || len < env->cfg->compress_min)
        return false;
    if (buffer_pool_reserve(env->bufs, out, codec_bound(id, len)) < 0)
        return false;
    long n = codec_compress(env->codec, id, env->cfg->compress_level, p, len, out);
    stats_add(env->stats, STATS_COMPRESSIONS, 1);
    if (n >= 0 && (size_t)n < len)
        return true;
    buffer_consume(out, buffer_readable(out));
    return false;
}

/* ---- big replies compressed on the worker pool ---- */

/* A reply whose payload is at least this big (and compress_min) is compressed
 * on the reactor's worker pool, not on the reactor, which would make every
 * other connection it serves wait that long (issue 13). Per codec, at
 * compress_level 1 (docs/BENCHMARKS.md "Compression", codec_cost): below
 * these sizes one compression costs a reactor at most about 0.15 ms (zstd
 * under 64 KiB: 0.06 to 0.15 ms; deflate under 16 KiB: 0.05 to 0.1 ms), a
 * few times the worker hop (a copy of the payload, a job, two wake-ups);
 * above them it grows to 13 ms for 1 MiB with deflate. */
static const size_t offload_min[CODEC_COUNT] = {
    [CODEC_ZSTD] = 64u * 1024u,
    [CODEC_DEFLATE] = 16u * 1024u,
};

/* What a compression job takes along, besides the frame (job->result). */
struct zjob_args {
    uint8_t codec;
    int level;
};

/* A worker thread's compression state, made the first time it compresses
 * and freed when the thread exits: its codec context and the room the
 * compressed payload is made in (kept up to ZSCRATCH_KEEP bytes). */
#define ZSCRATCH_KEEP (4u << 20)

struct zthread {
    struct codec_ctx *ctx;
    struct buffer scratch;
};

static pthread_key_t zkey;
static bool zkey_ok;
static pthread_once_t zonce = PTHREAD_ONCE_INIT;

static void zthread_free(void *p)
{
    struct zthread *t = p;
    codec_ctx_free(t->ctx);
    buffer_free(&t->scratch);
    free(t);
}

static void zkey_make(void) { zkey_ok = pthread_key_create(&zkey, zthread_free) == 0; }

/* The calling thread's compression state, or NULL when out of memory. */
static struct zthread *zthread_get(void)
{
    pthread_once(&zonce, zkey_make);
    if (!zkey_ok)
        return NULL;
    struct zthread *t = pthread_getspecific(zkey);
    if (t)
        return t;
    if (!(t = calloc(1, sizeof *t)) || !(t->ctx = codec_ctx_new()) ||
        pthread_setspecific(zkey, t) != 0) {
        if (t)
            codec_ctx_free(t->ctx);
        free(t);
        return NULL;
    }
    return t;
}

struct codec_ctx *proto_msg_worker_codec(void)
{
    struct zthread *t = zthread_get();
    return t ? t->ctx : NULL;
}

/* On a worker thread: job->result holds one whole plain frame; when its
 * payload compresses smaller it is replaced, in the same memory, by the
 * COMPRESSED frame. Otherwise (or out of memory) it goes out plain. */
static void zjob_run(struct worker_pool *pool, struct worker_job *job)
{
    (void)pool;
    struct zjob_args a;
    memcpy(&a, job->payload, sizeof a);
    struct buffer *f = &job->result;
    size_t n = buffer_readable(f);
    struct zthread *t = zthread_get();
    if (!t || n <= MSG_HEADER_LEN)
        return;
    const uint8_t *p = buffer_peek(f);
    size_t plen = n - MSG_HEADER_LEN;
    long zn = codec_compress(t->ctx, a.codec, a.level, p + MSG_HEADER_LEN, plen, &t->scratch);
    if (zn >= 0 && (size_t)zn < plen) {
        uint8_t h[MSG_HEADER_LEN];
        msg_header_encode(h, msg_get_u32(p + 8) | MSG_FLAG_COMPRESSED, (uint32_t)zn);
        buffer_consume(f, n); /* smaller: fits the memory the plain frame had */
        buffer_append(f, h, sizeof h);
        buffer_append(f, buffer_peek(&t->scratch), (size_t)zn);
    }
    buffer_consume(&t->scratch, buffer_readable(&t->scratch));
    buffer_shrink(&t->scratch, ZSCRATCH_KEEP);
}

/* Back on the reactor: the frame takes the place held for it, or is dropped
 * when its connection has gone. */
static void zjob_back(struct mailbox_item *it, void *ctx)
{
    const struct pipeline_env *env = ctx;
    struct worker_job *job = (struct worker_job *)it;
    if (pipeline_complete_late(env, job->conn_id, job->seq, &job->result) < 0)
        stats_add(env->stats, STATS_RESULTS_DROPPED, 1);
    worker_job_free(job);
}

/* Whether a reply payload of len bytes for codec id goes to the workers. */
static bool offloads(const struct pipeline_env *env, unsigned id, size_t len)
{
    return env->pool && env->ops && env->codec && id > CODEC_NONE && id < CODEC_COUNT &&
           len >= offload_min[id] && len >= env->cfg->compress_min;
}

/* Hands the whole plain frame in *frame, the reply for slot seq of
 * connection conn_id, to env's workers to compress with codec id: returns 0
 * with *frame taken over (left empty), or -ENOMEM or worker_submit's error
 * (the queue is full, the pool stops) with *frame as it was. */
static int offload(const struct pipeline_env *env, unsigned id, uint64_t conn_id, uint32_t seq,
                   struct buffer *frame)
{
    struct zjob_args a = {.codec = (uint8_t)id, .level = env->cfg->compress_level};
    struct worker_job *job = worker_job_new(conn_id, seq, 0, zjob_run, zjob_back, &a, sizeof a);
    if (!job)
        return -ENOMEM;
    job->result = *frame;
    int rc = worker_submit(env->pool, job);
    if (rc < 0) {
        job->result = (struct buffer)BUFFER_INIT;
        worker_job_free(job);
        return rc;
    }
    *frame = (struct buffer)BUFFER_INIT; /* the job is the worker's now: not touched again */
    stats_add(env->stats, STATS_COMPRESSIONS, 1); /* counted when handed over */
    return 0;
}

/* A big reply or data push on pl, to compress with codec: holds its place
 * (in the reply order; a push also ahead of later data pushes) and sends a
 * copy of it to the workers. False (nothing held) when that cannot be done
 * now: the caller then compresses it inline, so the frame is never lost. */
static bool write_offloaded(struct pipeline *pl, uint32_t word, const void *p, size_t len,
                            unsigned codec, bool push)
{
    const struct pipeline_env *env = pl->env;
    const struct cmd_def *def = cmdtab_find(word & MSG_CMD_MASK);
    long seq = push ? pipeline_reserve_push(pl)
                    : pipeline_reserve(pl, pl->req_t0, def ? def->slot : 0);
    if (seq < 0)
        return false;
    struct buffer f = BUFFER_INIT;
    uint8_t h[MSG_HEADER_LEN];
    msg_header_encode(h, word, (uint32_t)len);
    if (buffer_pool_reserve(env->bufs, &f, sizeof h + len) == 0) {
        buffer_append(&f, h, sizeof h);
        buffer_append(&f, p, len);
        if (offload(env, codec, pl->conn_id, (uint32_t)seq, &f) == 0)
            return true;
        buffer_consume(&f, buffer_readable(&f));
        buffer_pool_put(env->bufs, &f);
        buffer_free(&f);
    }
    pipeline_unreserve(pl, (uint32_t)seq);
    return false;
}

/* ---- fan-out frames compressed on the worker pool ---- */

/* What a frames job takes along, before the caller's data. */
struct fjob_args {
    proto_msg_frames_ready_fn ready;
    size_t off;                        /* the payload's start in the data */
    int level;
    bool codec[CODEC_COUNT];           /* compress with these */
};

/* On a worker thread: job->result becomes, for each codec 1.., a u32 length
 * (0: not compressed, or not smaller) and that many bytes. */
static void fjob_run(struct worker_pool *pool, struct worker_job *job)
{
    (void)pool;
    struct fjob_args a;
    memcpy(&a, job->payload, sizeof a);
    const uint8_t *p = job->payload + sizeof a + a.off;
    size_t plen = job->len - sizeof a - a.off;
    struct zthread *t = zthread_get();
    for (unsigned id = 1; id < CODEC_COUNT; id++) {
        long zn = -1;
        if (t && a.codec[id])
            zn = codec_compress(t->ctx, id, a.level, p, plen, &t->scratch);
        uint8_t n[4];
        msg_put_u32(n, zn >= 0 && (size_t)zn < plen ? (uint32_t)zn : 0);
        if (buffer_append(&job->result, n, sizeof n) < 0 ||
            (msg_get_u32(n) && buffer_append(&job->result, buffer_peek(&t->scratch), (size_t)zn) < 0)) {
            buffer_free(&job->result); /* out of memory: all plain */
            break;
        }
        if (t)
            buffer_consume(&t->scratch, buffer_readable(&t->scratch));
    }
    if (t)
        buffer_shrink(&t->scratch, ZSCRATCH_KEEP);
}

/* Back on the reactor: the caller's ready runs with the frames, then the
 * sender's input is let go. */
static void fjob_back(struct mailbox_item *it, void *ctx)
{
    const struct pipeline_env *env = ctx;
    struct worker_job *job = (struct worker_job *)it;
    struct fjob_args a;
    memcpy(&a, job->payload, sizeof a);
    struct proto_msg_frames fr;
    memset(&fr, 0, sizeof fr);
    const uint8_t *r = buffer_peek(&job->result);
    size_t left = buffer_readable(&job->result);
    for (unsigned id = 1; id < CODEC_COUNT && left >= 4; id++) {
        size_t n = msg_get_u32(r);
        r += 4;
        left -= 4;
        if (n == 0 || n > left)
            continue;
        fr.used[id] = true;
        /* A view of the job's memory: read, never freed, as the contract says. */
        fr.z[id] = (struct buffer){.data = (uint8_t *)(uintptr_t)r, .cap = n, .rpos = 0, .wpos = n};
        r += n;
        left -= n;
    }
    a.ready(env, job->conn_id, job->seq, job->payload + sizeof a, job->len - sizeof a, &fr);
    struct pipeline *pl = env->ops->lookup(env->host, job->conn_id);
    if (pl) {
        pl->flags &= ~(uint32_t)PIPELINE_HOLD;
        env->ops->defer(pl); /* its held input is handled this turn */
    }
    worker_job_free(job);
}

bool proto_msg_frames_big(const struct pipeline_env *env, size_t len)
{
    if (!env->pool || !env->ops || !env->codec || len < env->cfg->compress_min)
        return false;
    for (unsigned id = 1; id < CODEC_COUNT; id++)
        if (len >= offload_min[id] && atomic_load_explicit(&users[id], memory_order_relaxed) > 0)
            return true;
    return false;
}

bool proto_msg_frames_offload(struct pipeline *pl, uint32_t seq, const struct iovec *data,
                              int ndata, size_t off, proto_msg_frames_ready_fn ready)
{
    const struct pipeline_env *env = pl->env;
    if (!env->pool)
        return false;
    struct fjob_args a = {.ready = ready, .off = off, .level = env->cfg->compress_level};
    for (unsigned id = 1; id < CODEC_COUNT; id++)
        a.codec[id] = atomic_load_explicit(&users[id], memory_order_relaxed) > 0;
    size_t len = 0;
    for (int i = 0; i < ndata; i++)
        len += data[i].iov_len;
    struct worker_job *job = worker_job_new(pl->conn_id, seq, 0, fjob_run, fjob_back, NULL,
                                            sizeof a + len);
    if (!job)
        return false;
    memcpy(job->payload, &a, sizeof a);
    uint8_t *w = job->payload + sizeof a;
    for (int i = 0; i < ndata; i++) {
        memcpy(w, data[i].iov_base, data[i].iov_len);
        w += data[i].iov_len;
    }
    if (worker_submit(env->pool, job) < 0) {
        worker_job_free(job);
        return false;
    }
    for (unsigned id = 1; id < CODEC_COUNT; id++)
        if (a.codec[id])
            stats_add(env->stats, STATS_COMPRESSIONS, 1); /* counted when handed over */
    pl->flags |= PIPELINE_HOLD;
    return true;
}

/* ---- frames written to a connection ---- */

void proto_msg_write_frame(struct pipeline *pl, uint32_t word, const void *p, size_t len, bool push)
{
    const struct pipeline_env *env = pl->env;
    unsigned codec = push ? pipeline_push_codec(pl) : pl->codec;
    if (codec && !(word & MSG_FLAG_ERROR) && offloads(env, codec, len) &&
        write_offloaded(pl, word, p, len, codec, push)) {
        stats_add(env->stats, STATS_FRAMES_OUT, 1);
        return;
    }
    struct buffer z = BUFFER_INIT;
    if (codec && !(word & MSG_FLAG_ERROR) && compress_smaller(env, codec, p, len, &z)) {
        word |= MSG_FLAG_COMPRESSED;
        p = buffer_peek(&z);
        len = buffer_readable(&z);
    }
    uint8_t h[MSG_HEADER_LEN];
    msg_header_encode(h, word, (uint32_t)len);
    if (push)
        pipeline_push_data2(pl, h, sizeof h, p, len);
    else
        pipeline_write2(pl, h, sizeof h, p, len);
    stats_add(env->stats, STATS_FRAMES_OUT, 1);
    buffer_consume(&z, buffer_readable(&z));
    buffer_pool_put(env->bufs, &z);
    buffer_free(&z);
}

int proto_msg_complete(const struct pipeline_env *env, uint64_t conn_id, uint32_t seq,
                       struct buffer *frame)
{
    struct pipeline *pl = env->ops ? env->ops->lookup(env->host, conn_id) : NULL;
    unsigned codec = pl ? pipeline_slot_codec(pl, seq) : 0;
    size_t n = buffer_readable(frame);
    const uint8_t *f = buffer_peek(frame);
    if (codec && f && n > MSG_HEADER_LEN) {
        uint32_t word = msg_get_u32(f + 8);
        if (word & (MSG_FLAG_ERROR | MSG_FLAG_COMPRESSED))
            return pipeline_complete_late(env, conn_id, seq, frame);
        if (offloads(env, codec, n - MSG_HEADER_LEN) && offload(env, codec, conn_id, seq, frame) == 0)
            return 0;
        struct buffer z = BUFFER_INIT;
        if (compress_smaller(env, codec, f + MSG_HEADER_LEN, n - MSG_HEADER_LEN, &z)) {
            uint8_t h[MSG_HEADER_LEN];
            msg_header_encode(h, word | MSG_FLAG_COMPRESSED, (uint32_t)buffer_readable(&z));
            buffer_consume(frame, n); /* the frame's memory takes the smaller one */
            buffer_append(frame, h, sizeof h);
            buffer_append(frame, buffer_peek(&z), buffer_readable(&z));
            buffer_consume(&z, buffer_readable(&z));
        }
        buffer_pool_put(env->bufs, &z);
        buffer_free(&z);
    }
    return pipeline_complete_late(env, conn_id, seq, frame);
}

long proto_msg_decompress(struct pipeline *pl, const uint8_t *p, size_t len, size_t max,
                          struct buffer *out)
{
    if (!pl->codec || !pl->env->codec)
        return -EBADMSG;
    stats_add(pl->env->stats, STATS_DECOMPRESSIONS, 1);
    return codec_decompress(pl->env->codec, pl->codec, p, len, max, out);
}

/* ---- push frames shared by many receivers ---- */

void proto_msg_frames_prepare(const struct pipeline_env *env, struct proto_msg_frames *fr,
                              const void *payload, size_t len)
{
    memset(fr, 0, sizeof *fr);
    for (unsigned id = 1; id < CODEC_COUNT; id++)
        if (atomic_load_explicit(&users[id], memory_order_relaxed) > 0)
            fr->used[id] = compress_smaller(env, id, payload, len, &fr->z[id]);
}

bool proto_msg_frames_wanted(const struct pipeline_env *env, size_t len)
{
    if (!env->codec || len < env->cfg->compress_min)
        return false;
    for (unsigned id = 1; id < CODEC_COUNT; id++)
        if (atomic_load_explicit(&users[id], memory_order_relaxed) > 0)
            return true;
    return false;
}

size_t proto_msg_frames_size(const struct proto_msg_frames *fr, size_t len)
{
    size_t n = 4 * CODEC_COUNT + MSG_HEADER_LEN + len;
    for (unsigned id = 1; id < CODEC_COUNT; id++)
        if (fr->used[id])
            n += MSG_HEADER_LEN + buffer_readable(&fr->z[id]);
    return n;
}

uint8_t *proto_msg_frames_write(uint8_t *dst, uint32_t word, const struct proto_msg_frames *fr,
                                size_t len)
{
    uint8_t *frame = dst + 4 * CODEC_COUNT;
    msg_put_u32(dst, (uint32_t)(MSG_HEADER_LEN + len));
    msg_header_encode(frame, word, (uint32_t)len);
    uint8_t *plain = frame + MSG_HEADER_LEN, *next = plain + len;
    for (unsigned id = 1; id < CODEC_COUNT; id++) {
        size_t zn = fr->used[id] ? buffer_readable(&fr->z[id]) : 0;
        msg_put_u32(dst + 4 * id, zn ? (uint32_t)(MSG_HEADER_LEN + zn) : 0);
        if (!zn)
            continue;
        msg_header_encode(next, word | MSG_FLAG_COMPRESSED, (uint32_t)zn);
        memcpy(next + MSG_HEADER_LEN, buffer_peek(&fr->z[id]), zn);
        next += MSG_HEADER_LEN + zn;
    }
    return plain;
}

void proto_msg_frames_free(const struct pipeline_env *env, struct proto_msg_frames *fr)
{
    for (unsigned id = 1; id < CODEC_COUNT; id++) {
        buffer_consume(&fr->z[id], buffer_readable(&fr->z[id]));
        buffer_pool_put(env->bufs, &fr->z[id]);
        buffer_free(&fr->z[id]);
    }
}

void proto_msg_frames_view(const uint8_t *block, struct pubsub_frames *out)
{
    const uint8_t *next = block + 4 * CODEC_COUNT;
    for (unsigned id = 0; id < CODEC_COUNT; id++) {
        out->n[id] = msg_get_u32(block + 4 * id);
        out->p[id] = out->n[id] ? next : NULL;
        next += out->n[id];
    }
    out->owner = NULL;
}
