/* fuzz_admin: the admin text protocol (proto_admin's split/handle/violation)
 * fed through the conn.c emulator of fuzz_common.h, with the reactor's and
 * the main thread's mailbox turns for `conns` (a fan-out) and `reload`. The
 * reactor is fuzz_common.h's emulator (its pipeline_host_ops serve the one
 * connection, its mailbox runs with the env as ctx); the main thread's
 * mailbox runs with a struct reload_hub whose start answers at once with
 * reload_hub_answer(). So the items that run are the production ones:
 * proto_admin.c's `conns` fan-out visit and report, reload.c's request and
 * pipeline.c's late reply item.
 *
 * Input: 3 parameter bytes, then the bytes an operator sends.
 *   [0] bits 0-1  largest read: 1, 5, 100 or 4096 bytes
 *       bit 2     output_high_water = 64 (turns end on back-pressure)
 *       bit 3     2 lines per turn (turns end at the cap)
 *       bit 4     reload fails ("ERR reload failed: ...")
 *       bit 5     a third run: the operator hangs up once the stream is sent,
 *                 before the late answers come back (they find no
 *                 connection; what is left in the mailboxes is dropped)
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
 *    sent after the last response; `conns` lists the one connection;
 *  - every `reload` reaches the main thread once and is answered (one late
 *    reply each, as for every `conns`, each followed by a kick), and output
 *    a mailbox item queues is followed by a kick;
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
#include "mailbox.h"
#include "pipeline.h"
#include "proto_admin.h"
#include "reload.h"
#include "stats.h"

#include "fuzz_common.h"

#define PARAM_BYTES 3

enum exp_kind {
    EXP_ANY,      /* a known command: lines, then END */
    EXP_QUIT,     /* just END, then the close */
    EXP_ERR,      /* one "ERR ..." line, then END */
    EXP_CONNS,    /* the one connection's line, then END */
    EXP_RELOAD,   /* the reload's answer line, then END */
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
    uint64_t conns, reloads;     /* commands that are answered late */
    uint64_t reloads_started;    /* the hub's start calls */
    struct fuzz_rng rng;         /* when the mailboxes turn */
    struct fuzz_host host;       /* the reactor: its services and its mailbox */
    struct mailbox main_box;     /* the main thread's mailbox */
    struct reload_hub hub;       /* the main thread's items' ctx */
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

/* ---- the mailbox turns: the reactor's (fuzz_common.h) and the main
 * thread's, whose reload is over at once ---- */

/* server.c's reload, reduced to its answer: OK, or ERR when the input says
 * the configuration is bad. */
static void hub_start(struct reload_hub *hub)
{
    struct run *r = cur;
    FUZZ_CHECK(hub->waiters != NULL, "a reload started with no one waiting");
    r->reloads_started++;
    const char *line = r->reload_fails ? "ERR reload failed: fuzz.ini:1: no" : "OK reloaded";
    FUZZ_CHECK(reload_hub_answer(hub, line) == 0, "reload waiters left unanswered");
}

static unsigned main_turn(struct run *r) { return mailbox_run(&r->main_box, &r->hub); }

/* In the chunked run the mailbox turns sometimes wait a read or two. */
static void maybe_mailbox_turn(struct fuzz_conn *fc)
{
    struct run *r = cur;
    (void)fc;
    if (fuzz_mailbox_due(&r->main_box, &r->rng))
        main_turn(r);
    if (fuzz_mailbox_due(&r->host.box, &r->rng))
        fuzz_host_turn(&r->host);
}

/* Both mailboxes until every late answer came back. */
static void drain(struct run *r, struct fuzz_conn *fc)
{
    do {
        while (main_turn(r) + fuzz_host_turn(&r->host) > 0)
            ;
        fuzz_conn_settle(fc);
    } while (r->main_box.head || r->host.box.head);
    fuzz_conn_flush(fc);
}

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
    } else if (is_word(line, "conns")) {
        r->exps[r->nexps++] = EXP_CONNS;
        r->conns++;
    } else if (is_word(line, "reload")) {
        r->exps[r->nexps++] = EXP_RELOAD;
        r->reloads++;
    } else if (is_word(line, "help") || is_word(line, "stats") || is_word(line, "metrics")) {
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
        case EXP_CONNS: {
            char want[64];
            int wn = snprintf(want, sizeof want, "%016llx peer=- proto=%s reactor=0 ",
                              (unsigned long long)r->host.fc->pl->conn_id, checked_admin.name);
            FUZZ_CHECK(nlines == 2 && first_len > (size_t)wn &&
                           memcmp(w + start, want, (size_t)wn) == 0,
                       "response %zu: not the connection's line and END", k);
            break;
        }
        case EXP_RELOAD: {
            const char *want = r->reload_fails ? "ERR reload failed: fuzz.ini:1: no" : "OK reloaded";
            FUZZ_CHECK(nlines == 2 && first_len == strlen(want) &&
                           memcmp(w + start, want, first_len) == 0,
                       "response %zu: not the reload's answer and END", k);
            break;
        }
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

/* hangup: the operator's connection closes once the stream is sent, before
 * the mailboxes turn: conn.c's conn_close, then up to two turns of each
 * mailbox whose answers find no connection, then the threads stop and drop
 * what is left. Only the bookkeeping is checked then, not the output. */
static void run_stream(const uint8_t *s, size_t n, size_t max_chunk, unsigned per_turn,
                       uint64_t high, uint32_t seed, bool reload_fails, bool hangup,
                       struct result *res)
{
    struct stats_registry reg;
    FUZZ_CHECK(stats_registry_init(&reg, 1) == 0, "out of memory");
    struct config cfg;
    config_defaults(&cfg);
    cfg.stall_command = false; /* `stall MS` would sleep the fuzzer */
    struct buffer_pool bufs;
    buffer_pool_init(&bufs, 1u << 20, 256u << 10);
    struct run r = {.stream = s, .stream_len = n, .reload_fails = reload_fails};
    struct mailbox *boxes[1] = {&r.host.box};
    struct pipeline_env env = {
        .cfg = &cfg, .stats = &reg.reactors[0], .all = &reg, .reactor = 0,
        .nreactors = 1, .boxes = boxes, .main_box = &r.main_box, .bufs = &bufs,
        .ops = fuzz_host_ops(), .host = &r.host,
    };
    struct pipeline pl = {.proto = &checked_admin, .env = &env, .conn_id = 0x0100000000000001ull};
    struct fuzz_conn fc = {.pl = &pl, .frames_per_turn = per_turn, .high = high};
    struct fuzz_rng rng = {seed};
    fuzz_host_init(&r.host, &fc, &env);
    FUZZ_CHECK(mailbox_init(&r.main_box) == 0, "mailbox_init");
    r.hub = (struct reload_hub){.boxes = boxes, .start = hub_start};
    r.exps = malloc(sizeof *r.exps * (n + 1));
    FUZZ_CHECK(r.exps != NULL, "out of memory");
    r.rng.s = max_chunk ? seed ^ 0x5A5A5A5Au : 0;
    fc.poll = maybe_mailbox_turn;
    cur = &r;

    fuzz_conn_feed(&fc, s, n, max_chunk, &rng);
    if (hangup) {
        fuzz_host_close(&r.host);
        pipeline_free(&pl);
        for (uint32_t turns = fuzz_rng_next(&rng) % 3; turns > 0; turns--) {
            main_turn(&r);
            fuzz_host_turn(&r.host);
        }
    } else {
        drain(&r, &fc);
    }

    if (!r.closed && !hangup) {
        long left = ref_split(s + r.handled_off, n - r.handled_off);
        FUZZ_CHECK(left == 0, "input left at %zu of %zu with split %ld unprocessed", r.handled_off,
                   n, left);
    }
    FUZZ_CHECK(fc.bytes_used <= fc.bytes_fed && fc.bytes_fed <= n, "consumed more than given");
    FUZZ_CHECK(fc.frames_in == r.lines, "frames_in");
    FUZZ_CHECK(r.host.defers == 0, "%llu defers: nothing of admin's walks a structure",
               (unsigned long long)r.host.defers);
    FUZZ_CHECK(r.reloads_started <= r.reloads && r.host.kicks <= r.conns + r.reloads,
               "%llu reloads started for %llu asked; %llu kicks for %llu late answers",
               (unsigned long long)r.reloads_started, (unsigned long long)r.reloads,
               (unsigned long long)r.host.kicks, (unsigned long long)(r.conns + r.reloads));
    if (!hangup) {
        FUZZ_CHECK(!!(pl.flags & PIPELINE_CLOSE) == r.closed, "close flag disagrees");
        FUZZ_CHECK(pl.slots_head == NULL && pl.held_bytes == 0, "reply slots left");
        FUZZ_CHECK(r.reloads_started == r.reloads && r.host.kicks == r.conns + r.reloads,
                   "%llu reloads started for %llu asked; %llu kicks for %llu late answers",
                   (unsigned long long)r.reloads_started, (unsigned long long)r.reloads,
                   (unsigned long long)r.host.kicks, (unsigned long long)(r.conns + r.reloads));
        check_output(&r, &fc.wire);
        fuzz_host_close(&r.host);
        pipeline_free(&pl);
    }
    /* The threads stop: the main thread's mailbox first (its items post
     * nothing when dropped), then the reactor's. */
    mailbox_destroy(&r.main_box);
    reload_hub_free(&r.hub);
    fuzz_host_free(&r.host);

    if (res) {
        res->wire = fc.wire;
        fc.wire = (struct buffer)BUFFER_INIT;
        res->handled = r.handled_off;
        res->closed = r.closed;
        res->violated = r.violated;
        res->volatile_text = r.volatile_text;
    }
    fuzz_conn_free(&fc);
    buffer_pool_free(&bufs);
    stats_registry_free(&reg);
    free(r.exps);
    cur = NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < PARAM_BYTES)
        return 0;
    struct fuzz_turns t = fuzz_turns_of(data[0]);
    size_t max_chunk = t.max_chunk;
    uint64_t high = t.high;
    unsigned per_turn = t.per_turn;
    bool reload_fails = data[0] & 16;
    uint32_t seed = (uint32_t)data[1] << 8 | data[2] | 0x10000u;
    const uint8_t *s = data + PARAM_BYTES;
    size_t n = size - PARAM_BYTES;

    struct result chunked, whole;
    run_stream(s, n, max_chunk, per_turn, high, seed, reload_fails, false, &chunked);
    run_stream(s, n, 0, FUZZ_CONN_FRAMES_PER_TURN, 1u << 20, seed, reload_fails, false, &whole);
    if (data[0] & 32)
        run_stream(s, n, max_chunk, per_turn, high, seed, reload_fails, true, NULL);
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
