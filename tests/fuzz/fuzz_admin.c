/* fuzz_admin: the admin text protocol (proto_admin's split/handle/violation)
 * fed through the conn.c emulator of fuzz_common.h, with the reactor's and
 * the main thread's mailbox turns for `conns` (a fan-out) and `reload`.
 *
 * Input: 3 parameter bytes, then the bytes an operator sends.
 *   [0] bits 0-1  largest read: 1, 5, 100 or 4096 bytes
 *       bit 2     output_high_water = 64 (turns end on back-pressure)
 *       bit 3     2 lines per turn (turns end at the cap)
 *       bit 4     reload fails ("ERR reload failed: ...")
 *   [1..2]        seed of the read sizes and of when the mailboxes turn
 * stall_command stays off (`stall MS` would put the fuzzer to sleep).
 *
 * Invariants (abort on violation):
 *  - split agrees with a reference line splitter: it never returns more than
 *    n, a line it returns ends at its first newline and is at most 1025 bytes
 *    with it, and 1025 bytes without a newline are a violation;
 *  - the lines handled are exactly the stream's bytes, in order;
 *  - the output is a sequence of responses, one per handled non-blank line,
 *    in order, each complete lines ending with the line "END" (and no other
 *    "END" line): "quit" gets just "END" and closes; a line that is not an
 *    admin command of PROTOCOL.md gets one "ERR ..." line; a violation gets
 *    "ERR ..." and closes; nothing is handled after a close and nothing is
 *    sent after the last response;
 *  - the result does not depend on the chunking.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buffer.h"
#include "config.h"
#include "pipeline.h"
#include "proto_admin.h"
#include "stats.h"

#if __has_include("fanout.h")
#define FUZZ_FANOUT 1
#include "fanout.h"
#include "mailbox.h"
#else
#define FUZZ_FANOUT 0
#endif

#include "fuzz_common.h"

#define PARAM_BYTES 3

static const size_t max_chunks[4] = {1, 5, 100, 4096};

enum exp_kind {
    EXP_ANY,      /* a known command: lines, then END */
    EXP_QUIT,     /* just END, then the close */
    EXP_ERR,      /* one "ERR ..." line, then END */
};

struct run {
    const uint8_t *stream;
    size_t stream_len;
    size_t handled_off;
    bool closed, violated, volatile_text; /* volatile: stats/metrics text */
    bool reload_fails;
    long last_split;
    uint64_t lines;
    enum exp_kind *exps;
    size_t nexps;
    struct fuzz_rng rng;
};

static struct run *cur;

static long ref_split(const uint8_t *p, size_t n)
{
    size_t look = n < PROTO_ADMIN_LINE_MAX + 1 ? n : PROTO_ADMIN_LINE_MAX + 1;
    for (size_t i = 0; i < look; i++)
        if (p[i] == '\n')
            return (long)i + 1;
    return n > PROTO_ADMIN_LINE_MAX ? -1 : 0;
}

/* ---- the mailbox turns (reactor.c's fanout_visit/fanout_done for
 * FANOUT_CONNS and FANOUT_MSG_REPLY, server.c's answer to a reload) ---- */

#if FUZZ_FANOUT
static struct mailbox box, main_box;
static struct mailbox *boxes[1];

static void complete(struct pipeline *pl, uint32_t seq, struct buffer *reply)
{
    uint64_t t0;
    int idx;
    FUZZ_CHECK(pipeline_complete(pl, seq, reply, &t0, &idx) == 0, "no reply slot %u", seq);
}

static void mailbox_turn(struct fuzz_conn *fc)
{
    struct pipeline *pl = fc->pl;
    for (bool busy = true; busy;) {
        busy = false;
        /* The main thread: an admin reload is answered with one line + END. */
        for (struct mailbox_item *it = mailbox_take(&main_box), *next; it; it = next) {
            next = it->next;
            busy = true;
            FUZZ_CHECK(it->kind == MAIN_MSG_RELOAD, "main mailbox item of kind %d", it->kind);
            struct main_request *q = (struct main_request *)it;
            FUZZ_CHECK(q->reactor == 0 && q->conn_id == pl->conn_id, "reload request");
            struct fanout_reply *rep = fanout_reply_new(q->conn_id, q->seq);
            const char *line = cur->reload_fails ? "ERR reload failed: fuzz.ini:1: no" : "OK reloaded";
            FUZZ_CHECK(rep && buffer_append(&rep->bytes, line, strlen(line)) == 0 &&
                           buffer_append(&rep->bytes, "\nEND\n", 5) == 0, "out of memory");
            mailbox_post(&box, &rep->item);
            free(q);
        }
        /* The reactor. */
        for (struct mailbox_item *it = mailbox_take(&box), *next; it; it = next) {
            next = it->next;
            busy = true;
            if (it->kind == FANOUT_MSG_REPLY) {
                struct fanout_reply *rep = (struct fanout_reply *)it;
                FUZZ_CHECK(rep->conn_id == pl->conn_id, "a reply for another connection");
                complete(pl, rep->seq, &rep->bytes);
                fanout_reply_free(rep);
                continue;
            }
            FUZZ_CHECK(it->kind == FANOUT_MSG_VISIT || it->kind == FANOUT_MSG_DONE,
                       "mailbox item of kind %d", it->kind);
            struct fanout *f = ((struct fanout_item *)it)->f;
            FUZZ_CHECK(f->kind == FANOUT_CONNS && f->nreactors == 1 && f->origin == 0 &&
                           f->conn_id == pl->conn_id && f->results, "a fan-out that is not conns");
            if (it->kind == FANOUT_MSG_VISIT) {
                char line[128];
                int n = snprintf(line, sizeof line,
                                 "%016llx peer=- proto=%s reactor=0 age=0.0s idle=0.0s in=0 out=0 "
                                 "pending=0\n",
                                 (unsigned long long)pl->conn_id, pl->proto->name);
                FUZZ_CHECK(buffer_append(&f->results[0], line, (size_t)n) == 0, "out of memory");
                fanout_visited(f);
                fanout_release(f);
            } else {
                struct buffer reply = BUFFER_INIT;
                FUZZ_CHECK(buffer_append(&reply, fuzz_bytes(&f->results[0]),
                                         buffer_readable(&f->results[0])) == 0 &&
                               buffer_append(&reply, "END\n", 4) == 0, "out of memory");
                complete(pl, f->seq, &reply);
                buffer_free(&reply);
                fanout_release(f);
            }
        }
    }
}

/* In the chunked run the mailbox turns sometimes wait a read or two. */
static void maybe_mailbox_turn(struct fuzz_conn *fc)
{
    /* One thread: the lists can be looked at without the lock, which spares
     * the eventfd read of an empty mailbox_take(). */
    if (!box.head && !main_box.head)
        return;
    if (cur->rng.s == 0 || (fuzz_rng_next(&cur->rng) & 1))
        mailbox_turn(fc);
}
#endif

/* ---- wrappers around the real proto_admin ------------------------------- */

static long split_w(struct pipeline *pl, const uint8_t *p, size_t n)
{
    struct run *r = cur;
    FUZZ_CHECK(!r->closed, "split after the close");
    FUZZ_CHECK(n <= r->stream_len - r->handled_off, "split sees %zu bytes, %zu unhandled", n,
               r->stream_len - r->handled_off);
    size_t cmp = n < 16 ? n : 16;
    FUZZ_CHECK(memcmp(p, r->stream + r->handled_off, cmp) == 0, "split sees foreign bytes");
    long got = proto_admin.split(pl, p, n);
    long want = ref_split(p, n);
    FUZZ_CHECK(got <= (long)n, "split returned %ld > n %zu", got, n);
    FUZZ_CHECK((got < 0) == (want < 0) && (got < 0 || got == want),
               "split of %zu bytes: got %ld, want %ld", n, got, want);
    if (got > 0)
        FUZZ_CHECK(got <= PROTO_ADMIN_LINE_MAX + 1 && p[got - 1] == '\n' &&
                       memchr(p, '\n', (size_t)got - 1) == NULL, "split returned a bad line");
    r->last_split = got;
    return got;
}

static bool is_word(const char *line, const char *w) { return strcmp(line, w) == 0; }

static void handle_w(struct pipeline *pl, const uint8_t *frame, size_t len)
{
    struct run *r = cur;
    FUZZ_CHECK(!r->closed, "line handled after the close");
    FUZZ_CHECK(r->last_split == (long)len, "handle(%zu) after split %ld", len, r->last_split);
    FUZZ_CHECK(len <= r->stream_len - r->handled_off &&
                   memcmp(frame, r->stream + r->handled_off, len) == 0,
               "the line handled is not the stream's next %zu bytes", len);
    r->handled_off += len;
    r->last_split = 0;
    r->lines++;

    /* The command as the operator meant it: blanks and CR/LF trimmed. A line
     * holding a NUL byte is refused with an ERR line. */
    size_t a = 0, b = len;
    while (b > 0 && (frame[b - 1] == '\n' || frame[b - 1] == '\r' || frame[b - 1] == ' ' ||
                     frame[b - 1] == '\t'))
        b--;
    while (a < b && (frame[a] == ' ' || frame[a] == '\t'))
        a++;
    char line[PROTO_ADMIN_LINE_MAX + 2];
    memcpy(line, frame + a, b - a);
    line[b - a] = '\0';

    if (b == a) {
        /* a blank line: no command, no response */
    } else if (memchr(frame + a, '\0', b - a)) {
        r->exps[r->nexps++] = EXP_ERR;
    } else if (is_word(line, "quit")) {
        r->exps[r->nexps++] = EXP_QUIT;
        r->closed = true;
    } else if (is_word(line, "help") || is_word(line, "stats") || is_word(line, "conns") ||
               is_word(line, "reload") || is_word(line, "metrics")) {
        r->exps[r->nexps++] = EXP_ANY;
        if (is_word(line, "stats") || is_word(line, "metrics"))
            r->volatile_text = true;
    } else {
        r->exps[r->nexps++] = EXP_ERR;
    }

    proto_admin.handle(pl, frame, len);
    FUZZ_CHECK(!(pl->flags & PIPELINE_FAILED), "pipeline failed");
    FUZZ_CHECK(!!(pl->flags & PIPELINE_CLOSE) == r->closed, "'%s': close flag %d, model %d", line,
               !!(pl->flags & PIPELINE_CLOSE), r->closed);
}

static void violation_w(struct pipeline *pl, long code)
{
    struct run *r = cur;
    FUZZ_CHECK(!r->closed && !r->violated, "violation after the close");
    FUZZ_CHECK(code == r->last_split && code < 0, "violation(%ld) after split %ld", code,
               r->last_split);
    proto_admin.violation(pl, code);
    FUZZ_CHECK(pl->flags & PIPELINE_CLOSE, "violation did not close");
    r->exps[r->nexps++] = EXP_ERR;
    r->closed = r->violated = true;
}

static const struct proto checked_admin = {
    .name = "admin",
    .counted = false,
    .split = split_w,
    .handle = handle_w,
    .violation = violation_w,
};

/* The output: one response per expectation, each lines ending "END\n". */
static void check_output(const struct run *r, const struct buffer *wire)
{
    const uint8_t *w = fuzz_bytes(wire);
    size_t wn = buffer_readable(wire), off = 0, k = 0;
    while (off < wn) {
        FUZZ_CHECK(k < r->nexps, "output after the last response (%zu responses)", r->nexps);
        /* One response: up to the first line "END". */
        size_t start = off, nlines = 0, first_len = 0;
        bool ended = false;
        while (off < wn) {
            const uint8_t *nl = memchr(w + off, '\n', wn - off);
            FUZZ_CHECK(nl != NULL, "output ends inside a line");
            size_t ll = (size_t)(nl - (w + off));
            if (nlines == 0)
                first_len = ll;
            nlines++;
            bool end = ll == 3 && memcmp(w + off, "END", 3) == 0;
            off += ll + 1;
            if (end) {
                ended = true;
                break;
            }
        }
        FUZZ_CHECK(ended, "response %zu does not end with END", k);
        switch (r->exps[k]) {
        case EXP_QUIT:
            FUZZ_CHECK(nlines == 1, "quit answered with %zu lines", nlines);
            FUZZ_CHECK(off == wn, "output after quit");
            break;
        case EXP_ERR:
            FUZZ_CHECK(nlines == 2 && first_len > 4 && memcmp(w + start, "ERR ", 4) == 0,
                       "response %zu: not one ERR line and END", k);
            break;
        case EXP_ANY:
            break;
        }
        k++;
    }
    FUZZ_CHECK(k == r->nexps, "%zu responses for %zu commands", k, r->nexps);
}

struct result {
    struct buffer wire;
    size_t handled;
    bool closed, violated, volatile_text;
};

static void run_stream(const uint8_t *s, size_t n, size_t max_chunk, unsigned per_turn,
                       uint64_t high, uint32_t seed, bool reload_fails, struct result *res)
{
    struct stats_registry reg;
    FUZZ_CHECK(stats_registry_init(&reg, 1) == 0, "out of memory");
    struct config cfg;
    config_defaults(&cfg);
    cfg.stall_command = false; /* `stall MS` would sleep the fuzzer */
    struct pipeline_env env = {
        .cfg = &cfg, .stats = &reg.reactors[0], .all = &reg, .reactor = 0,
#if FUZZ_FANOUT
        .nreactors = 1, .boxes = boxes, .main_box = &main_box,
#endif
    };
    struct pipeline pl = {.proto = &checked_admin, .env = &env, .conn_id = 0x0100000000000001ull};
    struct fuzz_conn fc = {.pl = &pl, .frames_per_turn = per_turn, .high = high};
    struct run r = {.stream = s, .stream_len = n, .reload_fails = reload_fails};
    struct fuzz_rng rng = {seed};
    r.exps = malloc(sizeof *r.exps * (n + 1));
    FUZZ_CHECK(r.exps != NULL, "out of memory");
#if FUZZ_FANOUT
    r.rng.s = max_chunk ? seed ^ 0x5A5A5A5Au : 0;
    fc.poll = maybe_mailbox_turn;
#endif
    cur = &r;

    fuzz_conn_feed(&fc, s, n, max_chunk, &rng);
#if FUZZ_FANOUT
    mailbox_turn(&fc); /* every late answer comes back before the end */
    fuzz_conn_flush(&fc);
#endif

    if (!r.closed) {
        long left = ref_split(s + r.handled_off, n - r.handled_off);
        FUZZ_CHECK(left == 0, "input left at %zu of %zu with split %ld unprocessed", r.handled_off,
                   n, left);
    }
    FUZZ_CHECK(fc.bytes_used <= fc.bytes_fed && fc.bytes_fed <= n, "consumed more than given");
    FUZZ_CHECK(fc.frames_in == r.lines, "frames_in");
    FUZZ_CHECK(!!(pl.flags & PIPELINE_CLOSE) == r.closed, "close flag disagrees");
    FUZZ_CHECK(pl.slots_head == NULL && pl.held_bytes == 0, "reply slots left");
    check_output(&r, &fc.wire);

    res->wire = fc.wire;
    fc.wire = (struct buffer)BUFFER_INIT;
    res->handled = r.handled_off;
    res->closed = r.closed;
    res->violated = r.violated;
    res->volatile_text = r.volatile_text;
    fuzz_conn_free(&fc);
    pipeline_free(&pl);
    stats_registry_free(&reg);
    free(r.exps);
    cur = NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < PARAM_BYTES)
        return 0;
#if FUZZ_FANOUT
    if (!boxes[0]) {
        FUZZ_CHECK(mailbox_init(&box) == 0 && mailbox_init(&main_box) == 0, "mailbox_init");
        boxes[0] = &box;
    }
#endif
    size_t max_chunk = max_chunks[data[0] & 3];
    uint64_t high = data[0] & 4 ? 64 : 1u << 20;
    unsigned per_turn = data[0] & 8 ? 2 : FUZZ_CONN_FRAMES_PER_TURN;
    bool reload_fails = data[0] & 16;
    uint32_t seed = (uint32_t)data[1] << 8 | data[2] | 0x10000u;
    const uint8_t *s = data + PARAM_BYTES;
    size_t n = size - PARAM_BYTES;

    struct result chunked, whole;
    run_stream(s, n, max_chunk, per_turn, high, seed, reload_fails, &chunked);
    run_stream(s, n, 0, FUZZ_CONN_FRAMES_PER_TURN, 1u << 20, seed, reload_fails, &whole);
    FUZZ_CHECK(chunked.handled == whole.handled && chunked.closed == whole.closed &&
                   chunked.violated == whole.violated,
               "chunked: %zu bytes handled, closed %d; one piece: %zu, closed %d", chunked.handled,
               chunked.closed, whole.handled, whole.closed);
    if (!chunked.volatile_text) /* STATS/metrics text holds the uptime */
        FUZZ_CHECK(buffer_readable(&chunked.wire) == buffer_readable(&whole.wire) &&
                       memcmp(fuzz_bytes(&chunked.wire), fuzz_bytes(&whole.wire),
                              buffer_readable(&whole.wire)) == 0,
                   "chunked and one-piece outputs differ");
    buffer_free(&chunked.wire);
    buffer_free(&whole.wire);
    return 0;
}
