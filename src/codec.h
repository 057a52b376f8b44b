/* codec: the payload codecs HELLO may agree (PROTOCOL.md "Compression"):
 * zstd (one complete zstd frame, RFC 8878) and deflate (one complete zlib
 * stream, RFC 1950). Decompression is bounded before anything is produced:
 * output past the bound is never allocated. A struct codec_ctx holds one
 * thread's reusable (de)compression state. Base layer: no logging. */
#ifndef MSGD_CODEC_H
#define MSGD_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buffer.h"

enum codec_id {
    CODEC_NONE = 0,
    CODEC_ZSTD = 1,
    CODEC_DEFLATE = 2,
    CODEC_COUNT = 3,
};

/* A list of codecs, best first (the [msg] compress key; HELLO's compress). */
struct codec_list {
    uint8_t n;
    uint8_t id[CODEC_COUNT - 1];
};

struct codec_ctx;

/* The codec's name ("zstd", "deflate", "none"). */
const char *codec_name(enum codec_id id);

/* The codec named by the len bytes at s, or CODEC_NONE when none is. */
enum codec_id codec_by_name(const char *s, size_t len);

/* Parses a comma-separated list of codec names (spaces allowed around them)
 * into *out, best first. With strict, an unknown name or one named twice is
 * -EINVAL (the configuration); without, unknown names are skipped (a
 * client's HELLO). Returns 0 or -EINVAL. Thread-safe. */
int codec_parse_list(const char *s, size_t len, bool strict, struct codec_list *out);

/* The first codec of want that offer also has, or CODEC_NONE. */
enum codec_id codec_choose(const struct codec_list *want, const struct codec_list *offer);

/* A thread's (de)compression state. NULL when out of memory. The context is
 * for one thread at a time. */
struct codec_ctx *codec_ctx_new(void);
void codec_ctx_free(struct codec_ctx *ctx);

/* The most bytes compressing n bytes may produce. */
size_t codec_bound(enum codec_id id, size_t n);

/* Compresses n bytes at src with codec id at level (zstd 1..19; deflate
 * clamped to 1..9) and appends the result to out. Returns the compressed
 * length, or -ENOMEM. */
long codec_compress(struct codec_ctx *ctx, enum codec_id id, int level, const void *src, size_t n,
                    struct buffer *out);

/* About how many bytes the n bytes at src decompress to: a zstd frame's
 * declared content size when it has one (*declared true), else a guess of 4
 * times n. Cheap (reads a header at most); for choosing where to
 * decompress, never for bounding it. Thread-safe. */
size_t codec_size_hint(enum codec_id id, const void *src, size_t n, bool *declared);

/* Decompresses the n bytes at src (one whole zstd frame or zlib stream) and
 * appends the result to out, never producing more than max bytes: returns
 * the decompressed length, -EFBIG when the result would pass max (nothing
 * past max is allocated), -EBADMSG when the input is not one whole valid
 * frame or stream (truncated, garbage, trailing bytes), or -ENOMEM. out is
 * left as it was on failure. */
long codec_decompress(struct codec_ctx *ctx, enum codec_id id, const void *src, size_t n,
                      size_t max, struct buffer *out);

#endif
