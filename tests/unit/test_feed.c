/* test_feed: the socket-free frame loop of feed.h on a tiny line protocol of
 * its own (no proto_msg): whole frames, frames split across calls, the frame
 * cap ending a turn with `more`, back-pressure on everything pending (held
 * replies too, not only out), the drain mark (frames read before the drain
 * answered as usual, later ones not), a violation consuming the rest, a
 * closed or failed pipeline reading nothing, and STATS_FRAMES_IN.
 *
 * The line protocol: a frame is a line ending in '\n'; a line starting with
 * '!' breaks the protocol. Each frame is answered with itself, prefixed by
 * '+' when it was read before the drain (pl->read_before_drain). The frame
 * "J\n" reserves a reply slot (a worker job that never comes back), so every
 * reply after it is held; "Q\n" answers "bye" and closes (a QUIT). */
#include "feed.h"
#include "pipeline.h"
#include "stats.h"
#include "test.h"

#define LINE_ERR (-1)

static unsigned handled;    /* frames handle saw */
static unsigned violations; /* violation calls */

static long line_split(struct pipeline *pl, const uint8_t *p, size_t n)
{
    (void)pl;
    if (n > 0 && p[0] == '!')
        return LINE_ERR;
    const uint8_t *nl = memchr(p, '\n', n);
    return nl ? (long)(nl - p + 1) : 0;
}

static void line_handle(struct pipeline *pl, const uint8_t *frame, size_t len)
{
    handled++;
    if (len == 2 && frame[0] == 'J') {
        CHECK(pipeline_reserve(pl, pl->req_t0, 0) >= 0);
        return;
    }
    if (len == 2 && frame[0] == 'Q') {
        pipeline_write(pl, "bye\n", 4);
        pipeline_close_after_flush(pl);
        return;
    }
    if (pl->read_before_drain)
        pipeline_write(pl, "+", 1);
    pipeline_write(pl, frame, len);
}

static void line_violation(struct pipeline *pl, long code)
{
    CHECK_EQ(code, LINE_ERR);
    violations++;
    pipeline_write(pl, "ERR\n", 4);
    pipeline_close_after_flush(pl);
}

static const struct proto line_proto = {
    .name = "line",
    .split = line_split,
    .handle = line_handle,
    .violation = line_violation,
};

/* A pipeline on line_proto with one reactor's counters. */
struct fixture {
    struct stats_registry reg;
    struct pipeline_env env;
    struct pipeline pl;
    size_t mark;            /* the drain mark */
};

static void fx_init(struct fixture *f)
{
    memset(f, 0, sizeof *f);
    CHECK_EQ(stats_registry_init(&f->reg, 1), 0);
    f->env.stats = &f->reg.reactors[0];
    f->env.all = &f->reg;
    f->pl.proto = &line_proto;
    f->pl.env = &f->env;
    f->pl.out = (struct buffer)BUFFER_INIT;
    handled = violations = 0;
}

static void fx_free(struct fixture *f)
{
    pipeline_free(&f->pl);
    stats_registry_free(&f->reg);
}

static uint64_t frames_in(const struct fixture *f)
{
    return stats_get(f->env.stats, STATS_FRAMES_IN);
}

/* feed_bytes on the string s, with the drain mark of f. */
static struct feed_result feed_str(struct fixture *f, const char *s, unsigned max_frames,
                                   uint64_t high)
{
    return feed_bytes(&f->pl, (const uint8_t *)s, strlen(s), &f->mark, max_frames, high);
}

/* out holds exactly the string s. */
static void check_out(const struct pipeline *pl, const char *s)
{
    size_t n = strlen(s), have = buffer_readable(&pl->out);
    if (have != n || (n && memcmp(buffer_peek(&pl->out), s, n) != 0))
        TEST_FAIL("out holds \"%.*s\" (%zu bytes), want \"%s\"", (int)have,
                  have ? (const char *)buffer_peek(&pl->out) : "", have, s);
}

#define BIG (1u << 20)

/* What one feed_bytes call reported: bytes used, frames, more. */
#define CHECK_FEED(r, want_used, want_frames, want_more) \
    do { \
        CHECK_EQ((r).used, want_used); \
        CHECK_EQ((r).frames, want_frames); \
        CHECK_EQ((r).more, want_more); \
    } while (0)

TEST(whole_frames)
{
    struct fixture f;
    fx_init(&f);
    struct feed_result r = feed_str(&f, "a\nbb\nccc\n", FEED_FRAMES_PER_TURN, BIG);
    CHECK_FEED(r, 9, 3, false);
    CHECK_EQ(handled, 3);
    CHECK_EQ(frames_in(&f), 3);
    CHECK(f.pl.req_t0 > 0);
    CHECK(!f.pl.read_before_drain);
    check_out(&f.pl, "a\nbb\nccc\n");
    fx_free(&f);
}

TEST(empty_input)
{
    struct fixture f;
    fx_init(&f);
    struct feed_result r = feed_bytes(&f.pl, (const uint8_t *)"", 0, &f.mark, 4, BIG);
    CHECK_FEED(r, 0, 0, false);
    CHECK_EQ(handled, 0);
    fx_free(&f);
}

/* The caller keeps what was not consumed and feeds it again with what comes
 * next, as conn.c does with its input buffer. */
TEST(split_frames_across_calls)
{
    struct fixture f;
    fx_init(&f);
    struct feed_result r = feed_str(&f, "hel", FEED_FRAMES_PER_TURN, BIG);
    CHECK_FEED(r, 0, 0, false); /* an incomplete frame is no cap: wait for input */
    r = feed_str(&f, "hello\nwo", FEED_FRAMES_PER_TURN, BIG);
    CHECK_FEED(r, 6, 1, false);
    r = feed_str(&f, "world\n", FEED_FRAMES_PER_TURN, BIG);
    CHECK_FEED(r, 6, 1, false);
    check_out(&f.pl, "hello\nworld\n");
    CHECK_EQ(frames_in(&f), 2);
    fx_free(&f);
}

TEST(frame_cap_stops_with_more)
{
    struct fixture f;
    fx_init(&f);
    const char *s = "1\n2\n3\n4\n5\n";
    struct feed_result r = feed_str(&f, s, 2, BIG);
    CHECK_FEED(r, 4, 2, true);
    r = feed_str(&f, s + 4, 2, BIG);
    CHECK_FEED(r, 4, 2, true);
    r = feed_str(&f, s + 8, 2, BIG);
    CHECK_FEED(r, 2, 1, false);
    check_out(&f.pl, s);
    CHECK_EQ(frames_in(&f), 5);
    fx_free(&f);
}

/* Reaching the cap exactly at the end of the input owes no further turn. */
TEST(frame_cap_at_end_is_not_more)
{
    struct fixture f;
    fx_init(&f);
    struct feed_result r = feed_str(&f, "1\n2\n", 2, BIG);
    CHECK_FEED(r, 4, 2, false);
    /* but a partial frame after the cap still does: it may complete later */
    r = feed_str(&f, "3\n4\n5", 2, BIG);
    CHECK_FEED(r, 4, 2, true);
    fx_free(&f);
}

TEST(back_pressure_on_out)
{
    struct fixture f;
    fx_init(&f);
    struct feed_result r = feed_str(&f, "aaaa\nb\n", FEED_FRAMES_PER_TURN, 3);
    CHECK_FEED(r, 5, 1, true); /* the first reply (5 bytes) is above 3 */
    /* still above: nothing more, and still owed a turn */
    r = feed_str(&f, "b\n", FEED_FRAMES_PER_TURN, 3);
    CHECK_FEED(r, 0, 0, true);
    /* the socket took the output: the rest goes through */
    buffer_consume(&f.pl.out, buffer_readable(&f.pl.out));
    r = feed_str(&f, "b\n", FEED_FRAMES_PER_TURN, 3);
    CHECK_FEED(r, 2, 1, false);
    check_out(&f.pl, "b\n");
    fx_free(&f);
}

/* Replies held behind a pending job count as pending output: out stays
 * empty, yet the turn ends once they are above the high-water mark (the
 * fuzzers' old copy looked at out alone); exactly at the mark it goes on. */
TEST(back_pressure_counts_held_replies)
{
    static const struct {
        const char *in;
        size_t used;
        unsigned frames;
        bool more;
        size_t pending;
    } cases[] = {
        {"J\naaaa\nb\nc\n", 7, 2, true, 5},  /* "aaaa\n" held: 5 > 3, stop */
        {"J\naa\nb\n", 7, 3, false, 5},      /* "aa\n" held: 3 is not above 3 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct fixture f;
        fx_init(&f);
        struct feed_result r = feed_str(&f, cases[i].in, FEED_FRAMES_PER_TURN, 3);
        CHECK_FEED(r, cases[i].used, cases[i].frames, cases[i].more);
        CHECK_EQ(buffer_readable(&f.pl.out), 0);
        CHECK_EQ(f.pl.held_bytes, cases[i].pending);
        CHECK_EQ(pipeline_pending(&f.pl), cases[i].pending);
        fx_free(&f);
    }
}

/* One call of a drain-mark scenario: its input (what the caller still
 * holds), its frame cap, and what it should report and leave as the mark. */
struct drain_step {
    const char *in;
    unsigned max_frames;
    size_t used;
    unsigned frames;
    bool more;
    size_t mark;
};

/* Frames wholly within the drain mark are answered as usual ('+'), later
 * ones not; the mark shrinks by each frame handled, holds across calls, and
 * an incomplete frame leaves it alone (it covers the front of the input,
 * which is fed again). */
TEST(drain_mark)
{
    static const struct {
        size_t mark;            /* the drain mark before the first call */
        struct drain_step steps[4]; /* up to an empty one (in NULL) */
        const char *out;
    } cases[] = {
        /* "ab\n" and two bytes of "cd\n" read before the drain */
        {5, {{"ab\ncd\nef\n", FEED_FRAMES_PER_TURN, 9, 3, false, 0}}, "+ab\ncd\nef\n"},
        /* the mark on a frame boundary, across calls ended by the cap */
        {6,
         {{"ab\ncd\nef\n", 1, 3, 1, true, 3},
          {"cd\nef\n", 1, 3, 1, true, 0},
          {"ef\n", 1, 3, 1, false, 0}},
         "+ab\n+cd\nef\n"},
        /* an incomplete frame first */
        {4,
         {{"abc", FEED_FRAMES_PER_TURN, 0, 0, false, 4},
          {"abc\nd\n", FEED_FRAMES_PER_TURN, 6, 2, false, 0}},
         "+abc\nd\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct fixture f;
        fx_init(&f);
        f.mark = cases[i].mark;
        for (const struct drain_step *st = cases[i].steps; st->in; st++) {
            struct feed_result r = feed_str(&f, st->in, st->max_frames, BIG);
            if (r.used != st->used || r.frames != st->frames || r.more != st->more ||
                f.mark != st->mark)
                TEST_FAIL("case %zu, \"%s\": used %zu, frames %u, more %d, mark %zu; "
                          "want %zu, %u, %d, %zu", i, st->in, r.used, r.frames, r.more, f.mark,
                          st->used, st->frames, st->more, st->mark);
        }
        check_out(&f.pl, cases[i].out);
        CHECK(!f.pl.read_before_drain); /* the last frame came after the drain */
        fx_free(&f);
    }
}

TEST(violation_consumes_everything)
{
    struct fixture f;
    fx_init(&f);
    const char *s = "a\n!xyz\nb\nc";
    struct feed_result r = feed_str(&f, s, FEED_FRAMES_PER_TURN, BIG);
    CHECK_FEED(r, strlen(s), 1, false);
    CHECK_EQ(violations, 1);
    CHECK_EQ(handled, 1);
    CHECK(f.pl.flags & PIPELINE_CLOSE);
    check_out(&f.pl, "a\nERR\n");
    CHECK_EQ(frames_in(&f), 1);
    /* closed: nothing more is read or handled */
    r = feed_str(&f, "d\n", FEED_FRAMES_PER_TURN, BIG);
    CHECK_FEED(r, 0, 0, false);
    CHECK_EQ(handled, 1);
    CHECK_EQ(violations, 1);
    fx_free(&f);
}

/* A frame that closes the pipeline (QUIT) ends the call at once, with the
 * rest left unconsumed and no turn owed. */
TEST(quit_stops)
{
    struct fixture f;
    fx_init(&f);
    struct feed_result r = feed_str(&f, "a\nQ\nb\n", FEED_FRAMES_PER_TURN, BIG);
    CHECK_FEED(r, 4, 2, false);
    CHECK_EQ(handled, 2);
    check_out(&f.pl, "a\nbye\n");
    fx_free(&f);
}

/* A failed pipeline (out of memory) reads nothing more. */
TEST(failed_reads_nothing)
{
    struct fixture f;
    fx_init(&f);
    f.pl.flags |= PIPELINE_FAILED;
    struct feed_result r = feed_str(&f, "a\n", FEED_FRAMES_PER_TURN, BIG);
    CHECK_FEED(r, 0, 0, false);
    CHECK_EQ(handled, 0);
    CHECK_EQ(frames_in(&f), 0);
    fx_free(&f);
}

/* Without counters (env->stats NULL) it counts nothing and still runs. */
TEST(no_stats)
{
    struct fixture f;
    fx_init(&f);
    f.env.stats = NULL;
    struct feed_result r = feed_str(&f, "a\nb\n", FEED_FRAMES_PER_TURN, BIG);
    CHECK_FEED(r, 4, 2, false);
    CHECK_EQ(stats_get(&f.reg.reactors[0], STATS_FRAMES_IN), 0);
    fx_free(&f);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
