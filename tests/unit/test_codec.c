/* test_codec: zstd and deflate round trips; decompression bounded by max
 * (exactly max passes, one byte more is -EFBIG, and a bomb never grows the
 * output past the bound); truncated, garbage and trailing input is
 * -EBADMSG; a zstd frame without a content size; codec lists. */
#include "codec.h"
#include "test.h"

#include <errno.h>
#include <zstd.h>

#define MIB (1024u * 1024u)

static void fill_text(uint8_t *p, size_t n)
{
    static const char words[] = "the quick brown fox jumps over the lazy dog ";
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)words[(i * 7 + i / 13) % (sizeof words - 1)];
}

static void round_trip(enum codec_id id, size_t n)
{
    struct codec_ctx *ctx = codec_ctx_new();
    uint8_t *src = malloc(n + 1);
    fill_text(src, n);
    struct buffer z = BUFFER_INIT, back = BUFFER_INIT;
    long zn = codec_compress(ctx, id, 3, src, n, &z);
    CHECK(zn > 0);
    CHECK((size_t)zn <= codec_bound(id, n));
    if (n > 1000)
        CHECK((size_t)zn < n / 2); /* text compresses */
    CHECK_EQ(codec_decompress(ctx, id, buffer_peek(&z), (size_t)zn, n, &back), (long)n);
    CHECK_MEM(buffer_peek(&back), src, n);
    /* The same context again: nothing carried over. */
    buffer_consume(&back, buffer_readable(&back));
    CHECK_EQ(codec_decompress(ctx, id, buffer_peek(&z), (size_t)zn, n, &back), (long)n);
    /* One byte less than needed: refused, and out left as it was. */
    buffer_consume(&back, buffer_readable(&back));
    CHECK_EQ(codec_decompress(ctx, id, buffer_peek(&z), (size_t)zn, n - 1, &back), -EFBIG);
    CHECK_EQ(buffer_readable(&back), 0);
    /* Cut short, and with a byte after the end. */
    CHECK_EQ(codec_decompress(ctx, id, buffer_peek(&z), (size_t)zn - 1, n, &back), -EBADMSG);
    CHECK(buffer_reserve(&z, 1) == 0);
    buffer_append(&z, "x", 1);
    CHECK_EQ(codec_decompress(ctx, id, buffer_peek(&z), (size_t)zn + 1, n, &back), -EBADMSG);
    CHECK_EQ(buffer_readable(&back), 0);
    buffer_free(&z);
    buffer_free(&back);
    free(src);
    codec_ctx_free(ctx);
}

TEST(zstd_round_trips) { round_trip(CODEC_ZSTD, 100); round_trip(CODEC_ZSTD, 300000); }

TEST(deflate_round_trips) { round_trip(CODEC_DEFLATE, 100); round_trip(CODEC_DEFLATE, 300000); }

TEST(empty_payloads)
{
    struct codec_ctx *ctx = codec_ctx_new();
    for (int id = 1; id < CODEC_COUNT; id++) {
        struct buffer z = BUFFER_INIT, back = BUFFER_INIT;
        long zn = codec_compress(ctx, (enum codec_id)id, 1, "", 0, &z);
        CHECK(zn > 0);
        CHECK_EQ(codec_decompress(ctx, (enum codec_id)id, buffer_peek(&z), (size_t)zn, 0, &back), 0);
        buffer_free(&z);
        buffer_free(&back);
    }
    codec_ctx_free(ctx);
}

/* 64 MiB of zeros, cut at 1 MiB: -EFBIG, and the output never held more
 * than the bound (its capacity stays near it). */
static void bomb(enum codec_id id, bool content_size)
{
    size_t n = 64u * MIB;
    uint8_t *zeros = calloc(1, n);
    struct buffer z = BUFFER_INIT, back = BUFFER_INIT;
    if (id == CODEC_ZSTD && !content_size) {
        ZSTD_CCtx *cc = ZSTD_createCCtx();
        ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0);
        CHECK(buffer_reserve(&z, ZSTD_compressBound(n)) == 0);
        size_t r = ZSTD_compress2(cc, buffer_tail(&z), ZSTD_compressBound(n), zeros, n);
        CHECK(!ZSTD_isError(r));
        buffer_commit(&z, r);
        CHECK_EQ(ZSTD_getFrameContentSize(buffer_peek(&z), r), ZSTD_CONTENTSIZE_UNKNOWN);
        ZSTD_freeCCtx(cc);
    } else {
        struct codec_ctx *c = codec_ctx_new();
        CHECK(codec_compress(c, id, 9, zeros, n, &z) > 0);
        codec_ctx_free(c);
    }
    CHECK(buffer_readable(&z) < 200000); /* a real bomb: 1:300 or more */
    struct codec_ctx *ctx = codec_ctx_new();
    CHECK_EQ(codec_decompress(ctx, id, buffer_peek(&z), buffer_readable(&z), MIB, &back), -EFBIG);
    CHECK_EQ(buffer_readable(&back), 0);
    CHECK(back.cap <= MIB + 1 + BUFFER_PREPEND);
    /* Exactly the size is fine when the bound allows it. */
    CHECK_EQ(codec_decompress(ctx, id, buffer_peek(&z), buffer_readable(&z), n, &back), (long)n);
    codec_ctx_free(ctx);
    buffer_free(&z);
    buffer_free(&back);
    free(zeros);
}

TEST(zstd_bomb_with_content_size) { bomb(CODEC_ZSTD, true); }
TEST(zstd_bomb_without_content_size) { bomb(CODEC_ZSTD, false); }
TEST(deflate_bomb) { bomb(CODEC_DEFLATE, false); }

TEST(garbage_is_refused)
{
    struct codec_ctx *ctx = codec_ctx_new();
    struct buffer back = BUFFER_INIT;
    static const uint8_t junk[] = "this is not compressed at all, not even a little";
    CHECK_EQ(codec_decompress(ctx, CODEC_ZSTD, junk, sizeof junk, MIB, &back), -EBADMSG);
    CHECK_EQ(codec_decompress(ctx, CODEC_DEFLATE, junk, sizeof junk, MIB, &back), -EBADMSG);
    CHECK_EQ(codec_decompress(ctx, CODEC_ZSTD, junk, 0, MIB, &back), -EBADMSG);
    CHECK_EQ(codec_decompress(ctx, CODEC_DEFLATE, junk, 0, MIB, &back), -EBADMSG);
    CHECK_EQ(buffer_readable(&back), 0);
    buffer_free(&back);
    codec_ctx_free(ctx);
}

TEST(lists)
{
    struct codec_list l, offer;
    CHECK_EQ(codec_parse_list(" zstd , deflate", 15, true, &l), 0);
    CHECK_EQ(l.n, 2);
    CHECK_EQ(l.id[0], CODEC_ZSTD);
    CHECK_EQ(l.id[1], CODEC_DEFLATE);
    CHECK_EQ(codec_parse_list("deflate,zstd,deflate", 20, true, &l), -EINVAL);
    CHECK_EQ(codec_parse_list("lz4,deflate", 11, true, &l), -EINVAL);
    CHECK_EQ(codec_parse_list("lz4,deflate,,zstd", 17, false, &l), 0);
    CHECK_EQ(l.n, 2);
    CHECK_EQ(l.id[0], CODEC_DEFLATE);
    CHECK_EQ(codec_parse_list("", 0, true, &l), 0);
    CHECK_EQ(l.n, 0);
    codec_parse_list("zstd", 4, true, &offer);
    codec_parse_list("deflate,zstd", 12, true, &l);
    CHECK_EQ(codec_choose(&l, &offer), CODEC_ZSTD);
    codec_parse_list("deflate", 7, true, &l);
    CHECK_EQ(codec_choose(&l, &offer), CODEC_NONE);
    CHECK_STR(codec_name(CODEC_DEFLATE), "deflate");
    CHECK_EQ(codec_by_name("zstd", 4), CODEC_ZSTD);
    CHECK_EQ(codec_by_name("zst", 3), CODEC_NONE);
}

int main(int argc, char **argv) { return test_main(argc, argv); }
