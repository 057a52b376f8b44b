/* fuzz_codec: the bounded decompression of COMPRESSED payloads (codec.c),
 * what a peer controls once HELLO has agreed a codec: valid frames,
 * truncated ones, trailing bytes, frames that declare a wrong size, and
 * bombs, against a small bound.
 *
 * Input: 1 parameter byte, then the compressed payload.
 *   [0] bit 0     codec: zstd (0) or deflate (1)
 *       bits 1-3  the bound: 0, 1, 100, 4096, 65536, 65537, 1 MiB or 4 MiB
 *
 * Invariants (abort on violation):
 *  - the result is the decompressed length (<= the bound), -EFBIG, -EBADMSG
 *    or -ENOMEM; the output holds exactly the result's bytes on success and
 *    nothing on failure;
 *  - the output's capacity never passes the bound (+1 and the prepend room),
 *    whatever the input claims;
 *  - a success decompresses again (a fresh context) to the same bytes, and
 *    compressed again by codec.c it round-trips;
 *  - -EFBIG means more than the bound: with a bound 4 times larger (up to
 *    4 MiB) the input is never a success of at most the bound;
 *  - a success stays a success with any larger bound;
 *  - codec_size_hint: a size it calls declared (zstd only) is the size a
 *    success decompresses to; otherwise it is 4 times the input.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

#define FUZZ_CHECK(cond, ...)                                                  \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz_codec: " __VA_ARGS__);                       \
            fputc('\n', stderr);                                               \
            abort();                                                           \
        }                                                                      \
    } while (0)

static const size_t bounds[8] = {0, 1, 100, 4096, 65536, 65537, 1u << 20, 4u << 20};

static struct codec_ctx *ctx, *ctx2;

static long run(struct codec_ctx *c, enum codec_id id, const uint8_t *p, size_t n, size_t max,
                struct buffer *out)
{
    long r = codec_decompress(c, id, p, n, max, out);
    FUZZ_CHECK(r >= 0 || r == -EFBIG || r == -EBADMSG || r == -ENOMEM, "result %ld", r);
    FUZZ_CHECK(r < 0 || (size_t)r <= max, "%ld bytes past the bound %zu", r, max);
    FUZZ_CHECK(buffer_readable(out) == (r > 0 ? (size_t)r : 0), "output %zu for result %ld",
               buffer_readable(out), r);
    FUZZ_CHECK(out->cap <= max + 1 + BUFFER_PREPEND || out->cap <= 2048,
               "capacity %zu for a bound of %zu", out->cap, max);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (!ctx) {
        ctx = codec_ctx_new();
        ctx2 = codec_ctx_new();
        FUZZ_CHECK(ctx && ctx2, "out of memory");
    }
    enum codec_id id = (data[0] & 1) ? CODEC_DEFLATE : CODEC_ZSTD;
    size_t max = bounds[(data[0] >> 1) & 7];
    const uint8_t *p = data + 1;
    size_t n = size - 1;

    /* The size hint (which decides where a big request is decompressed)
     * reads the same bytes: a size it says was declared is the true one. */
    bool declared;
    size_t hint = codec_size_hint(id, p, n, &declared);
    FUZZ_CHECK(declared || hint == (n <= SIZE_MAX / 4 ? n * 4 : SIZE_MAX),
               "an undeclared hint of %zu for %zu bytes", hint, n);
    FUZZ_CHECK(!declared || id == CODEC_ZSTD, "a declared size for deflate");

    struct buffer out = BUFFER_INIT;
    long r = run(ctx, id, p, n, max, &out);
    FUZZ_CHECK(!declared || r < 0 || (size_t)r == hint, "declared %zu, decompressed %ld", hint, r);
    if (r >= 0) {
        struct buffer again = BUFFER_INIT, z = BUFFER_INIT, back = BUFFER_INIT;
        FUZZ_CHECK(run(ctx2, id, p, n, max, &again) == r, "a fresh context disagrees");
        FUZZ_CHECK(r == 0 || memcmp(buffer_peek(&out), buffer_peek(&again), (size_t)r) == 0,
                   "a fresh context decompressed other bytes");
        size_t bigger = max * 4 < (4u << 20) ? max * 4 + 1 : (4u << 20);
        buffer_consume(&again, buffer_readable(&again));
        if (bigger > max)
            FUZZ_CHECK(run(ctx2, id, p, n, bigger, &again) == r, "a larger bound disagrees");
        long zn = codec_compress(ctx2, id, 1, buffer_peek(&out) ? buffer_peek(&out) : (const uint8_t *)"",
                                 (size_t)r, &z);
        FUZZ_CHECK(zn > 0, "compressing %ld bytes failed", r);
        FUZZ_CHECK(run(ctx2, id, buffer_peek(&z), (size_t)zn, (size_t)r, &back) == r,
                   "round trip of %ld bytes failed", r);
        FUZZ_CHECK(r == 0 || memcmp(buffer_peek(&back), buffer_peek(&out), (size_t)r) == 0,
                   "round trip changed the bytes");
        buffer_free(&again);
        buffer_free(&z);
        buffer_free(&back);
    } else if (r == -EFBIG && max < (4u << 20)) {
        struct buffer more = BUFFER_INIT;
        size_t bigger = max * 4 < (4u << 20) ? max * 4 + 1 : (4u << 20);
        long r2 = run(ctx2, id, p, n, bigger, &more);
        FUZZ_CHECK(r2 < 0 || (size_t)r2 > max, "-EFBIG at %zu, but %ld bytes at %zu", max, r2,
                   bigger);
        buffer_free(&more);
    }
    buffer_free(&out);
    return 0;
}
