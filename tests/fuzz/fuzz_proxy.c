/* fuzz_proxy: the PROXY protocol v1/v2 header parser (proxy.c), what a
 * load balancer (or anyone allowed by proxy_from) sends first.
 *
 * Input: the stream's first bytes.
 *
 * Invariants (abort on violation):
 *  - the result is > 0 (never past the bytes given), 0, -EPROTO or -E2BIG;
 *  - reads stay inside the bytes given (each call gets an exact-size copy,
 *    so ASan sees any read past it);
 *  - the answer does not depend on how the bytes arrive: a header of k
 *    bytes is "need more" for every shorter prefix that is not already
 *    refused, k for every longer one; a refusal stays a refusal as more
 *    bytes come;
 *  - "need more" never lasts past the caps (107 bytes for v1, 16 + 2048
 *    for v2);
 *  - a parsed header has version 1 or 2, and its source address (unless
 *    local) is IPv4 or IPv6 and formats. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

#define FUZZ_CHECK(cond, ...)                                                  \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz_proxy: " __VA_ARGS__);                       \
            fputc('\n', stderr);                                               \
            abort();                                                           \
        }                                                                      \
    } while (0)

static long parse_copy(const uint8_t *data, size_t n, struct proxy_header *h)
{
    uint8_t *copy = malloc(n ? n : 1);
    FUZZ_CHECK(copy, "out of memory");
    memcpy(copy, data, n);
    long r = proxy_parse(copy, n, h);
    free(copy);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 16 + PROXY_V2_MAX + 64)
        size = 16 + PROXY_V2_MAX + 64;
    struct proxy_header h;
    long full = parse_copy(data, size, &h);
    FUZZ_CHECK(full == 0 || full == -EPROTO || full == -E2BIG || (full > 0 && (size_t)full <= size),
               "result %ld for %zu bytes", full, size);
    if (full == 0)
        FUZZ_CHECK(size < 16 + PROXY_V2_MAX, "still asking for more after %zu bytes", size);
    if (full > 0) {
        FUZZ_CHECK(h.version == 1 || h.version == 2, "version %d", h.version);
        if (!h.local) {
            char s[64];
            FUZZ_CHECK(h.src.ss_family == AF_INET || h.src.ss_family == AF_INET6, "family %d",
                       h.src.ss_family);
            FUZZ_CHECK(proxy_format(&h.src, s, sizeof s) == 0, "cannot format the source");
        }
        if (h.version == 1)
            FUZZ_CHECK(full <= PROXY_V1_MAX, "a v1 line of %ld bytes", full);
    }
    /* Every prefix agrees. */
    for (size_t m = 0; m < size; m++) {
        struct proxy_header hp;
        long r = parse_copy(data, m, &hp);
        if (full > 0) {
            FUZZ_CHECK(m < (size_t)full ? r == 0 : r == full,
                       "prefix %zu gives %ld, the whole gives %ld", m, r, full);
        } else if (full == 0) {
            FUZZ_CHECK(r == 0, "prefix %zu gives %ld, the whole needs more", m, r);
        } else {
            FUZZ_CHECK(r <= 0, "prefix %zu parsed (%ld) but the whole is refused", m, r);
            if (r < 0)
                FUZZ_CHECK(r == full || (r == -EPROTO || r == -E2BIG),
                           "prefix %zu refused as %ld", m, r);
        }
    }
    return 0;
}
