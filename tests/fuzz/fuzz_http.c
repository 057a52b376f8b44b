/* fuzz_http: the http protocol (proto_http's split/handle/violation) fed
 * through the conn.c emulator of fuzz_common.h, in chunks and in one piece.
 *
 * Input: 2 parameter bytes, then the bytes a client sends.
 *   [0] bits 0-1  largest read: 1, 5, 100 or 4096 bytes
 *       bit 2     output_high_water = 64 (turns end on back-pressure)
 *       bit 3     2 requests per turn (turns end at the cap)
 *       bit 4     the server is draining (/readyz answers 503)
 *   [1]           seed of the read sizes
 *
 * Invariants (abort on violation):
 *  - split agrees with a reference splitter (a head ends at its first empty
 *    line, CRLF or LF; none within 8 KiB is the one error) and never
 *    returns more than n;
 *  - the heads handled are exactly the stream's bytes, in order, and
 *    nothing is handled after a close;
 *  - the output is a sequence of well-formed HTTP/1.1 responses: one per
 *    handled head that is not a lone empty line, plus one (431) for a
 *    violation, in order; each has a status line, field lines, a
 *    Content-Length and exactly that much body, none when answering HEAD;
 *  - statuses are 200, 404, 405 (with Allow: GET, HEAD), 503 (only while
 *    draining), or 400, 413, 431, 505, which say Connection: close and are
 *    the last response; a response saying Connection: close is the last,
 *    and the connection is closed exactly when the last one says so;
 *  - the statuses, the bytes handled and the close do not depend on the
 *    chunking (the Date field and the metrics text may).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buffer.h"
#include "config.h"
#include "pipeline.h"
#include "proto_http.h"
#include "stats.h"

#include "fuzz_common.h"

#define PARAM_BYTES 2
#define MAX_STATUSES 4096

struct run {
    const uint8_t *stream;
    size_t stream_len;
    size_t handled_off;
    bool closed, violated, draining;
    long last_split;
    bool *head_req;              /* per expected response: it answers a HEAD */
    size_t nexp;
};

static struct run *cur;

static long ref_split(const uint8_t *p, size_t n)
{
    size_t start = 0;
    for (size_t i = 0; i < n && i < PROTO_HTTP_HEAD_MAX; i++) {
        if (p[i] != '\n')
            continue;
        if (i == start || (i == start + 1 && p[start] == '\r'))
            return (long)i + 1;
        start = i + 1;
    }
    return n >= PROTO_HTTP_HEAD_MAX ? -1 : 0;
}

static long split_w(struct pipeline *pl, const uint8_t *p, size_t n)
{
    struct run *r = cur;
    FUZZ_CHECK(!r->closed, "split after the close");
    FUZZ_CHECK(n <= r->stream_len - r->handled_off &&
                   memcmp(p, r->stream + r->handled_off, n < 16 ? n : 16) == 0,
               "split sees bytes that are not the stream's next");
    long got = proto_http.split(pl, p, n);
    long want = ref_split(p, n);
    FUZZ_CHECK(got <= (long)n, "split returned %ld > n %zu", got, n);
    FUZZ_CHECK((got < 0) == (want < 0) && (got < 0 || got == want),
               "split of %zu bytes: got %ld, want %ld", n, got, want);
    r->last_split = got;
    return got;
}

static void handle_w(struct pipeline *pl, const uint8_t *frame, size_t len)
{
    struct run *r = cur;
    FUZZ_CHECK(!r->closed, "a head handled after the close");
    FUZZ_CHECK(r->last_split == (long)len, "handle(%zu) after split %ld", len, r->last_split);
    FUZZ_CHECK(memcmp(frame, r->stream + r->handled_off, len) == 0,
               "the head handled is not the stream's next %zu bytes", len);
    r->handled_off += len;
    r->last_split = 0;
    bool blank = len <= 2 && (frame[0] == '\n' || frame[0] == '\r');
    if (!blank)
        r->head_req[r->nexp++] = len >= 5 && memcmp(frame, "HEAD ", 5) == 0;
    proto_http.handle(pl, frame, len);
    if (pl->flags & PIPELINE_CLOSE)
        r->closed = true;
}

static void violation_w(struct pipeline *pl, long code)
{
    struct run *r = cur;
    FUZZ_CHECK(!r->closed && r->last_split < 0 && code == r->last_split,
               "violation %ld after split %ld", code, r->last_split);
    r->violated = true;
    r->head_req[r->nexp++] = false;
    proto_http.violation(pl, code);
    FUZZ_CHECK(pl->flags & PIPELINE_CLOSE, "a violation that does not close");
    r->closed = true;
}

static const struct proto checked_http = {
    .name = "http",
    .serves_drain = true,
    .split = split_w,
    .handle = handle_w,
    .violation = violation_w,
};

/* ---- reading the responses back ---- */

/* The field value of name in the head [h, h + n) (after "\r\n"), or NULL. */
static const char *field(const char *h, size_t n, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    for (const char *p = h; p && p < h + n;) {
        const char *eol = memmem(p, (size_t)(h + n - p), "\r\n", 2);
        size_t len = eol ? (size_t)(eol - p) : (size_t)(h + n - p);
        if (len > nl + 1 && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            *vlen = len - (size_t)(v - p);
            return v;
        }
        p = eol ? eol + 2 : NULL;
    }
    return NULL;
}

static bool value_is(const char *v, size_t n, const char *want)
{
    return v && n == strlen(want) && memcmp(v, want, n) == 0;
}

/* Checks the wire and writes the statuses to out (at most MAX_STATUSES). */
static size_t check_output(const struct run *r, const struct buffer *wire, int *out)
{
    const char *w = (const char *)fuzz_bytes(wire);
    size_t n = buffer_readable(wire), off = 0, count = 0;
    bool last_closes = false;
    while (off < n) {
        FUZZ_CHECK(count < r->nexp, "a response no request asked for at %zu", off);
        FUZZ_CHECK(!last_closes, "a response after one that said Connection: close");
        const char *h = w + off;
        const char *end = memmem(h, n - off, "\r\n\r\n", 4);
        FUZZ_CHECK(end != NULL, "a response head without its end");
        size_t hn = (size_t)(end - h) + 2; /* up to and with the last field's CRLF */
        FUZZ_CHECK(hn > 14 && memcmp(h, "HTTP/1.1 ", 9) == 0 && h[12] == ' ',
                   "bad status line %.40s", h);
        int st = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
        size_t vlen;
        const char *cl = field(h, hn, "Content-Length", &vlen);
        FUZZ_CHECK(cl != NULL, "a response without Content-Length");
        size_t blen = strtoul(cl, NULL, 10);
        size_t body = r->head_req[count] ? 0 : blen;
        off += (size_t)(end - h) + 4;
        FUZZ_CHECK(body <= n - off, "body of %zu bytes cut at %zu", body, n - off);
        const char *conn = field(h, hn, "Connection", &vlen);
        last_closes = value_is(conn, vlen, "close");
        switch (st) {
        case 200:
            if (!r->head_req[count] && body == 6)
                FUZZ_CHECK(!r->draining || memcmp(w + off, "ready\n", 6) != 0,
                           "ready while draining");
            break;
        case 503:
            FUZZ_CHECK(r->draining, "503 while not draining");
            break;
        case 404:
            break;
        case 405: {
            size_t al;
            const char *allow = field(h, hn, "Allow", &al);
            FUZZ_CHECK(value_is(allow, al, "GET, HEAD"), "405 without Allow: GET, HEAD");
            break;
        }
        case 400:
        case 413:
        case 431:
        case 505:
            FUZZ_CHECK(last_closes, "%d without Connection: close", st);
            break;
        default:
            FUZZ_CHECK(false, "unexpected status %d", st);
        }
        off += body;
        if (count < MAX_STATUSES)
            out[count] = st;
        count++;
    }
    FUZZ_CHECK(count == r->nexp, "%zu responses for %zu requests", count, r->nexp);
    FUZZ_CHECK(last_closes == r->closed, "closed %d, but the last response says close %d",
               r->closed, last_closes);
    return count;
}

struct result {
    size_t handled, count;
    bool closed, violated;
    int *statuses;
};

static void run_stream(const uint8_t *s, size_t n, size_t max_chunk, unsigned per_turn,
                       uint64_t high, uint32_t seed, bool draining, struct result *res)
{
    struct stats_registry reg;
    FUZZ_CHECK(stats_registry_init(&reg, 1) == 0, "out of memory");
    struct config cfg;
    config_defaults(&cfg);
    struct buffer_pool bufs;
    buffer_pool_init(&bufs, 1u << 20, 256u << 10);
    struct run r = {.stream = s, .stream_len = n, .draining = draining};
    r.head_req = malloc(n + 1);
    FUZZ_CHECK(r.head_req != NULL, "out of memory");
    struct pipeline_env env = {
        .cfg = &cfg, .stats = &reg.reactors[0], .all = &reg, .reactor = 0, .nreactors = 1,
        .bufs = &bufs, .draining = draining,
    };
    struct pipeline pl = {.proto = &checked_http, .env = &env, .conn_id = 1};
    struct fuzz_conn fc = {.pl = &pl, .frames_per_turn = per_turn, .high = high};
    struct fuzz_rng rng = {seed};
    cur = &r;
    fuzz_conn_feed(&fc, s, n, max_chunk, &rng);
    fuzz_conn_settle(&fc);
    fuzz_conn_flush(&fc);
    if (!r.closed)
        FUZZ_CHECK(ref_split(s + r.handled_off, n - r.handled_off) == 0,
                   "input left at %zu of %zu that holds a whole head", r.handled_off, n);
    FUZZ_CHECK(pl.slots_head == NULL && pl.held_bytes == 0, "reply slots left");
    FUZZ_CHECK(!(pl.flags & PIPELINE_FAILED), "out of memory");
    res->statuses = calloc(MAX_STATUSES, sizeof *res->statuses);
    FUZZ_CHECK(res->statuses != NULL, "out of memory");
    res->count = check_output(&r, &fc.wire, res->statuses);
    res->handled = r.handled_off;
    res->closed = r.closed;
    res->violated = r.violated;
    pipeline_free(&pl);
    fuzz_conn_free(&fc);
    buffer_pool_free(&bufs);
    stats_registry_free(&reg);
    free(r.head_req);
    cur = NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < PARAM_BYTES)
        return 0;
    struct fuzz_turns t = fuzz_turns_of(data[0]); /* bits 0-3 */
    bool draining = data[0] & 16;
    uint32_t seed = (uint32_t)data[1] | 0x10000u;
    const uint8_t *s = data + PARAM_BYTES;
    size_t n = size - PARAM_BYTES;

    struct result chunked, whole;
    run_stream(s, n, t.max_chunk, t.per_turn, t.high, seed, draining, &chunked);
    run_stream(s, n, 0, FUZZ_CONN_FRAMES_PER_TURN, 1u << 20, seed, draining, &whole);
    FUZZ_CHECK(chunked.handled == whole.handled && chunked.closed == whole.closed &&
                   chunked.violated == whole.violated && chunked.count == whole.count,
               "chunked: %zu bytes handled, %zu answers, closed %d; one piece: %zu, %zu, %d",
               chunked.handled, chunked.count, chunked.closed, whole.handled, whole.count,
               whole.closed);
    size_t k = chunked.count < MAX_STATUSES ? chunked.count : MAX_STATUSES;
    FUZZ_CHECK(memcmp(chunked.statuses, whole.statuses, k * sizeof *whole.statuses) == 0,
               "chunked and one-piece statuses differ");
    free(chunked.statuses);
    free(whole.statuses);
    return 0;
}
