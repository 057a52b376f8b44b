/* proto_msg_codec: the codec HELLO agreed on a msg connection (PROTOCOL.md
 * "Compression"): frames written to it compressed when that pays, COMPRESSED
 * requests decompressed within their bound, and push frames that many
 * receivers share encoded once per codec in use. */
#include "proto_msg.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include "codec.h"
#include "config.h"
#include "msg.h"
#include "stats.h"

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

void proto_msg_write_frame(struct pipeline *pl, uint32_t word, const void *p, size_t len, bool push)
{
    const struct pipeline_env *env = pl->env;
    struct buffer z = BUFFER_INIT;
    if (pl->codec && !(word & MSG_FLAG_ERROR) && compress_smaller(env, pl->codec, p, len, &z)) {
        word |= MSG_FLAG_COMPRESSED;
        p = buffer_peek(&z);
        len = buffer_readable(&z);
    }
    uint8_t h[MSG_HEADER_LEN];
    msg_header_encode(h, word, (uint32_t)len);
    if (push)
        pipeline_push2(pl, h, sizeof h, p, len);
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
    size_t n = buffer_readable(frame);
    const uint8_t *f = buffer_peek(frame);
    if (pl && pl->codec && f && n > MSG_HEADER_LEN) {
        uint32_t word = msg_get_u32(f + 8);
        struct buffer z = BUFFER_INIT;
        if (!(word & (MSG_FLAG_ERROR | MSG_FLAG_COMPRESSED)) &&
            compress_smaller(env, pl->codec, f + MSG_HEADER_LEN, n - MSG_HEADER_LEN, &z)) {
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
