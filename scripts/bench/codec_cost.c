/* codec_cost: what src/codec.c costs per payload on this machine, in
 * process (no sockets): compress and decompress of one payload at a time,
 * for each codec and size, over two payload kinds (random letters a-z, and
 * text: words with a number now and then, like msgbench --payload text).
 * Prints one line per case: the median of RUNS rounds of the mean time per
 * call. Used by scripts/bench.sh for docs/BENCHMARKS.md ("Compression"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buffer.h"
#include "codec.h"

#define RUNS 5

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static unsigned long long rng = 0x9E3779B97F4A7C15ull;

static unsigned long long next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void fill(unsigned char *p, size_t n, int text)
{
    static const char *const words[] = {
        "the", "of", "and", "message", "server", "client", "reactor", "payload", "frame",
        "connection", "request", "reply", "status", "ok", "error", "timeout", "user", "id",
        "topic", "level", "info", "debug", "value", "count", "time", "node", "queue", "data"};
    size_t at = 0;
    while (at < n) {
        unsigned long long w = next();
        if (!text) {
            p[at++] = (unsigned char)('a' + w % 26);
            continue;
        }
        char tok[32];
        int k = w % 8 == 0 ? snprintf(tok, sizeof tok, "%u ", (unsigned)(w >> 32) % 100000)
                           : snprintf(tok, sizeof tok, "%s%s", words[(w >> 8) % 28],
                                      (w >> 16) % 12 == 0 ? "\n" : " ");
        for (int i = 0; i < k && at < n; i++)
            p[at++] = (unsigned char)tok[i];
    }
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(void)
{
    static const size_t sizes[] = {1024, 16 * 1024, 64 * 1024, 1024 * 1024};
    static const enum codec_id ids[] = {CODEC_ZSTD, CODEC_DEFLATE};
    struct codec_ctx *ctx = codec_ctx_new();
    struct buffer z = BUFFER_INIT, out = BUFFER_INIT;
    printf("%-7s %-8s %9s %9s %12s %12s\n", "codec", "payload", "bytes", "ratio", "compress_ms",
           "decompress_ms");
    for (int kind = 0; kind < 2; kind++)
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
            for (size_t c = 0; c < 2; c++) {
                size_t n = sizes[s];
                unsigned char *p = malloc(n);
                fill(p, n, kind);
                int iters = (int)(64 * 1024 * 1024 / n / (ids[c] == CODEC_DEFLATE ? 8 : 1));
                if (iters > 2000)
                    iters = 2000;
                double tc[RUNS], td[RUNS];
                long zn = 0;
                for (int r = 0; r < RUNS; r++) {
                    double t0 = now_s();
                    for (int i = 0; i < iters; i++) {
                        buffer_consume(&z, buffer_readable(&z));
                        zn = codec_compress(ctx, ids[c], 1, p, n, &z);
                    }
                    double t1 = now_s();
                    for (int i = 0; i < iters; i++) {
                        buffer_consume(&out, buffer_readable(&out));
                        if (codec_decompress(ctx, ids[c], buffer_peek(&z), (size_t)zn, n,
                                             &out) != (long)n)
                            return fprintf(stderr, "round trip failed\n"), 1;
                    }
                    double t2 = now_s();
                    tc[r] = (t1 - t0) / iters * 1e3;
                    td[r] = (t2 - t1) / iters * 1e3;
                }
                qsort(tc, RUNS, sizeof tc[0], cmp);
                qsort(td, RUNS, sizeof td[0], cmp);
                printf("%-7s %-8s %9zu %9.2f %12.4f %12.4f\n", codec_name(ids[c]),
                       kind ? "text" : "letters", n, (double)n / (double)zn, tc[RUNS / 2],
                       td[RUNS / 2]);
                free(p);
            }
    buffer_free(&z);
    buffer_free(&out);
    codec_ctx_free(ctx);
    return 0;
}
