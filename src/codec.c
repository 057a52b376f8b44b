/* codec: zstd and deflate over struct buffer, with decompression bounded
 * before it produces anything past the bound. */
#include "codec.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#define STEP (64u * 1024u) /* output grows by this much when the size is not known */

struct codec_ctx {
    ZSTD_CCtx *zc;
    ZSTD_DCtx *zd;
    z_stream def, inf;
    bool def_ready, inf_ready;
    int def_level;
};

static const char *const names[CODEC_COUNT] = {"none", "zstd", "deflate"};

const char *codec_name(enum codec_id id)
{
    return (unsigned)id < CODEC_COUNT ? names[id] : "none";
}

enum codec_id codec_by_name(const char *s, size_t len)
{
    for (int i = 1; i < CODEC_COUNT; i++)
        if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0)
            return (enum codec_id)i;
    return CODEC_NONE;
}

static bool is_space(char c) { return c == ' ' || c == '\t'; }

int codec_parse_list(const char *s, size_t len, bool strict, struct codec_list *out)
{
    out->n = 0;
    size_t i = 0;
    while (i < len) {
        size_t start = i;
        while (i < len && s[i] != ',')
            i++;
        size_t a = start, b = i;
        while (a < b && is_space(s[a]))
            a++;
        while (b > a && is_space(s[b - 1]))
            b--;
        i++; /* past the comma */
        if (a == b)
            continue;
        enum codec_id id = codec_by_name(s + a, b - a);
        bool twice = false;
        for (int k = 0; k < out->n; k++)
            twice |= out->id[k] == id;
        if (id == CODEC_NONE || twice) {
            if (strict)
                return -EINVAL;
            continue;
        }
        out->id[out->n++] = (uint8_t)id;
    }
    return 0;
}

enum codec_id codec_choose(const struct codec_list *want, const struct codec_list *offer)
{
    for (int i = 0; i < want->n; i++)
        for (int k = 0; k < offer->n; k++)
            if (want->id[i] == offer->id[k])
                return (enum codec_id)want->id[i];
    return CODEC_NONE;
}

struct codec_ctx *codec_ctx_new(void) { return calloc(1, sizeof(struct codec_ctx)); }

void codec_ctx_free(struct codec_ctx *ctx)
{
    if (!ctx)
        return;
    ZSTD_freeCCtx(ctx->zc);
    ZSTD_freeDCtx(ctx->zd);
    if (ctx->def_ready)
        deflateEnd(&ctx->def);
    if (ctx->inf_ready)
        inflateEnd(&ctx->inf);
    free(ctx);
}

size_t codec_bound(enum codec_id id, size_t n)
{
    if (id == CODEC_ZSTD)
        return ZSTD_compressBound(n);
    return (size_t)compressBound((uLong)n);
}

/* ---- compression ---- */

static long zstd_compress(struct codec_ctx *ctx, int level, const void *src, size_t n,
                          struct buffer *out)
{
    if (!ctx->zc && !(ctx->zc = ZSTD_createCCtx()))
        return -ENOMEM;
    size_t bound = ZSTD_compressBound(n);
    if (buffer_reserve(out, bound) < 0)
        return -ENOMEM;
    size_t r = ZSTD_compressCCtx(ctx->zc, buffer_tail(out), bound, src, n, level);
    if (ZSTD_isError(r))
        return -ENOMEM; /* with a bound-sized buffer only memory can fail */
    buffer_commit(out, r);
    return (long)r;
}

static long deflate_compress(struct codec_ctx *ctx, int level, const void *src, size_t n,
                             struct buffer *out)
{
    level = level < 1 ? 1 : level > 9 ? 9 : level;
    if (ctx->def_ready && ctx->def_level != level) {
        deflateEnd(&ctx->def);
        ctx->def_ready = false;
    }
    if (!ctx->def_ready) {
        memset(&ctx->def, 0, sizeof ctx->def);
        if (deflateInit(&ctx->def, level) != Z_OK)
            return -ENOMEM;
        ctx->def_ready = true;
        ctx->def_level = level;
    } else if (deflateReset(&ctx->def) != Z_OK) {
        return -ENOMEM;
    }
    size_t bound = (size_t)deflateBound(&ctx->def, (uLong)n);
    if (n > UINT32_MAX || buffer_reserve(out, bound) < 0)
        return -ENOMEM;
    ctx->def.next_in = (Bytef *)(uintptr_t)src;
    ctx->def.avail_in = (uInt)n;
    ctx->def.next_out = buffer_tail(out);
    ctx->def.avail_out = (uInt)bound;
    if (deflate(&ctx->def, Z_FINISH) != Z_STREAM_END)
        return -ENOMEM;
    size_t produced = bound - ctx->def.avail_out;
    buffer_commit(out, produced);
    return (long)produced;
}

long codec_compress(struct codec_ctx *ctx, enum codec_id id, int level, const void *src, size_t n,
                    struct buffer *out)
{
    if (id == CODEC_ZSTD)
        return zstd_compress(ctx, level, src, n, out);
    if (id == CODEC_DEFLATE)
        return deflate_compress(ctx, level, src, n, out);
    return -EINVAL;
}

/* ---- bounded decompression ---- */

/* Makes room for the next chunk of output, never past max + 1 in all (the
 * one byte more tells "exactly max" from "more than max"), and never a
 * capacity past that either. */
static int grow(struct buffer *out, size_t start, size_t max, size_t *room)
{
    size_t have = buffer_readable(out) - start;
    size_t want = max + 1 - have;
    if (want > STEP)
        want = STEP;
    size_t limit = BUFFER_PREPEND + start + max + 1;
    if (buffer_writable(out) < want && buffer_reserve_upto(out, want, limit) < 0)
        return -ENOMEM;
    *room = buffer_writable(out) < max + 1 - have ? buffer_writable(out) : max + 1 - have;
    return 0;
}

static long zstd_decompress(struct codec_ctx *ctx, const void *src, size_t n, size_t max,
                            struct buffer *out)
{
    /* Exactly one frame, and nothing after it. */
    size_t fsize = ZSTD_findFrameCompressedSize(src, n);
    if (ZSTD_isError(fsize) || fsize != n)
        return -EBADMSG;
    unsigned long long declared = ZSTD_getFrameContentSize(src, n);
    if (declared == ZSTD_CONTENTSIZE_ERROR)
        return -EBADMSG;
    if (declared != ZSTD_CONTENTSIZE_UNKNOWN && declared > max)
        return -EFBIG;
    if (!ctx->zd && !(ctx->zd = ZSTD_createDCtx()))
        return -ENOMEM;
    ZSTD_DCtx_reset(ctx->zd, ZSTD_reset_session_only);
    size_t start = buffer_readable(out);
    ZSTD_inBuffer in = {src, n, 0};
    for (;;) {
        size_t room;
        if (grow(out, start, max, &room) < 0) {
            out->wpos = out->rpos + start;
            return -ENOMEM;
        }
        ZSTD_outBuffer o = {buffer_tail(out), room, 0};
        size_t r = ZSTD_decompressStream(ctx->zd, &o, &in);
        buffer_commit(out, o.pos);
        size_t have = buffer_readable(out) - start;
        if (ZSTD_isError(r) || have > max) {
            out->wpos = out->rpos + start;
            return ZSTD_isError(r) ? -EBADMSG : -EFBIG;
        }
        if (r == 0) /* the frame is complete */
            return in.pos == n ? (long)have : -EBADMSG;
        if (in.pos == n && o.pos < o.size) {
            out->wpos = out->rpos + start; /* input ended inside the frame */
            return -EBADMSG;
        }
    }
}

static long deflate_decompress(struct codec_ctx *ctx, const void *src, size_t n, size_t max,
                               struct buffer *out)
{
    if (n > UINT32_MAX)
        return -EBADMSG;
    if (!ctx->inf_ready) {
        memset(&ctx->inf, 0, sizeof ctx->inf);
        if (inflateInit(&ctx->inf) != Z_OK)
            return -ENOMEM;
        ctx->inf_ready = true;
    } else if (inflateReset(&ctx->inf) != Z_OK) {
        return -ENOMEM;
    }
    size_t start = buffer_readable(out);
    ctx->inf.next_in = (Bytef *)(uintptr_t)src;
    ctx->inf.avail_in = (uInt)n;
    for (;;) {
        size_t room;
        if (grow(out, start, max, &room) < 0) {
            out->wpos = out->rpos + start;
            return -ENOMEM;
        }
        ctx->inf.next_out = buffer_tail(out);
        ctx->inf.avail_out = (uInt)room;
        int r = inflate(&ctx->inf, Z_NO_FLUSH);
        buffer_commit(out, room - ctx->inf.avail_out);
        size_t have = buffer_readable(out) - start;
        if (have > max) {
            out->wpos = out->rpos + start;
            return -EFBIG;
        }
        if (r == Z_STREAM_END)
            return ctx->inf.avail_in == 0 ? (long)have : (out->wpos = out->rpos + start, -EBADMSG);
        if (r == Z_MEM_ERROR) {
            out->wpos = out->rpos + start;
            return -ENOMEM;
        }
        if (r != Z_OK || (ctx->inf.avail_in == 0 && ctx->inf.avail_out > 0)) {
            out->wpos = out->rpos + start; /* garbage, or the stream was cut short */
            return -EBADMSG;
        }
    }
}

size_t codec_size_hint(enum codec_id id, const void *src, size_t n, bool *declared)
{
    *declared = false;
    if (id == CODEC_ZSTD) {
        unsigned long long size = ZSTD_getFrameContentSize(src, n);
        if (size != ZSTD_CONTENTSIZE_ERROR && size != ZSTD_CONTENTSIZE_UNKNOWN) {
            *declared = true;
            return size < SIZE_MAX ? (size_t)size : SIZE_MAX;
        }
    }
    return n <= SIZE_MAX / 4 ? n * 4 : SIZE_MAX;
}

long codec_decompress(struct codec_ctx *ctx, enum codec_id id, const void *src, size_t n,
                      size_t max, struct buffer *out)
{
    if (id == CODEC_ZSTD)
        return zstd_decompress(ctx, src, n, max, out);
    if (id == CODEC_DEFLATE)
        return deflate_decompress(ctx, src, n, max, out);
    return -EINVAL;
}
