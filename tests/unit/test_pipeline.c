/* test_pipeline: reply order (PROTOCOL.md rule 1) through the pipeline's
 * reply slots. Inline replies go straight to out while no worker job is
 * pending; once a job slot is reserved, later replies are held behind it and
 * move to out, in request order, when the jobs before them complete (in any
 * order). Pushes bypass the order. Also unreserve, -ENOENT for unknown
 * sequence numbers, the latency bookkeeping (t0_ns, lat_idx) that complete
 * hands back, the codec a reply or push may use around HELLO, a randomized
 * run against a model, and pipeline_free.
 *
 * These functions touch neither pl->env nor pl->proto, so both stay NULL. */
#include "pipeline.h"
#include "test.h"

#include <errno.h>

static void pl_init(struct pipeline *pl)
{
    memset(pl, 0, sizeof *pl);
    pl->env = NULL;
    pl->proto = NULL;
    pl->out = (struct buffer)BUFFER_INIT;
}

/* pipeline_reserve with latency bookkeeping derived from the sequence
 * number the slot will get, so that pl_complete can check it comes back. */
static long pl_reserve(struct pipeline *pl)
{
    uint32_t seq = pl->next_seq;
    return pipeline_reserve(pl, 1000000ULL + seq, (int)(seq % 7));
}

/* pipeline_complete, checking the t0_ns/lat_idx it hands back: the values
 * given at reserve on success, untouched on failure. */
static int pl_complete(struct pipeline *pl, uint32_t seq, struct buffer *reply)
{
    uint64_t t0 = 7777;
    int lat = -77;
    int rc = pipeline_complete(pl, seq, reply, &t0, &lat);
    if (rc == 0) {
        CHECK_EQ(t0, 1000000ULL + seq);
        CHECK_EQ(lat, (int)(seq % 7));
    } else {
        CHECK_EQ(t0, 7777);
        CHECK_EQ(lat, -77);
    }
    return rc;
}

/* out holds exactly the string s. */
static void check_out(const struct pipeline *pl, const char *s)
{
    size_t n = strlen(s), have = buffer_readable(&pl->out);
    if (have != n)
        TEST_FAIL("out holds %zu bytes (\"%.*s\"), want %zu (\"%s\")", have, (int)have,
                  have ? (const char *)buffer_peek(&pl->out) : "", n, s);
    if (n && memcmp(buffer_peek(&pl->out), s, n) != 0)
        TEST_FAIL("out holds \"%.*s\", want \"%s\"", (int)n, (const char *)buffer_peek(&pl->out), s);
}

static void write_str(struct pipeline *pl, const char *s)
{
    pipeline_write(pl, s, strlen(s));
}

/* Completes job seq with the reply s; expects 0. */
static void complete_str(struct pipeline *pl, uint32_t seq, const char *s)
{
    struct buffer b = BUFFER_INIT;
    CHECK_EQ(buffer_append(&b, s, strlen(s)), 0);
    CHECK_EQ(pl_complete(pl, seq, &b), 0);
    /* the reply's buffer was taken over and emptied */
    CHECK(b.data == NULL);
    CHECK_EQ(buffer_readable(&b), 0);
    buffer_free(&b);
}

static uint32_t reserve(struct pipeline *pl)
{
    long seq = pl_reserve(pl);
    CHECK(seq >= 0);
    return (uint32_t)seq;
}

/* Number of slots on the list, checking the tail pointer on the way. */
static int slot_count(const struct pipeline *pl)
{
    int n = 0;
    const struct pipeline_slot *last = NULL;
    for (const struct pipeline_slot *s = pl->slots_head; s; s = s->next) {
        last = s;
        n++;
    }
    CHECK(pl->slots_tail == last);
    return n;
}

TEST(new_pipeline_is_idle)
{
    struct pipeline pl;
    pl_init(&pl);
    CHECK(pipeline_idle(&pl));
    CHECK_EQ(pipeline_pending(&pl), 0);
    pipeline_free(&pl);
    CHECK(pipeline_idle(&pl));
}

TEST(write_without_slots_goes_to_out)
{
    struct pipeline pl;
    pl_init(&pl);
    write_str(&pl, "abc");
    check_out(&pl, "abc");
    CHECK(pl.slots_head == NULL);
    CHECK_EQ(pl.held_bytes, 0);
    CHECK_EQ(pipeline_pending(&pl), 3);
    CHECK(!pipeline_idle(&pl));
    write_str(&pl, "de");
    check_out(&pl, "abcde");
    CHECK(pl.slots_head == NULL);
    CHECK_EQ(pl.flags, 0);
    /* the socket took everything: idle again */
    buffer_consume(&pl.out, buffer_readable(&pl.out));
    CHECK(pipeline_idle(&pl));
    CHECK_EQ(pipeline_pending(&pl), 0);
    pipeline_free(&pl);
}

TEST(write2_without_slots_concatenates)
{
    struct pipeline pl;
    pl_init(&pl);
    pipeline_write2(&pl, "head", 4, "body", 4);
    pipeline_write2(&pl, "h2", 2, NULL, 0);
    pipeline_write2(&pl, "X", 1, "YZ", 2);
    check_out(&pl, "headbodyh2XYZ");
    CHECK(pl.slots_head == NULL);
    CHECK_EQ(pl.flags, 0);
    pipeline_free(&pl);
}

TEST(reserve_numbers_increase)
{
    struct pipeline pl;
    pl_init(&pl);
    CHECK_EQ(pl_reserve(&pl), 0);
    CHECK_EQ(pl_reserve(&pl), 1);
    CHECK_EQ(pl_reserve(&pl), 2);
    CHECK_EQ(pl.jobs_pending, 3);
    CHECK_EQ(slot_count(&pl), 3);
    CHECK(!pipeline_idle(&pl)); /* owes replies though out is empty */
    CHECK_EQ(pipeline_pending(&pl), 0);
    pipeline_free(&pl);
}

TEST(reserve_holds_later_inline_replies)
{
    struct pipeline pl;
    pl_init(&pl);
    write_str(&pl, "r0|");                 /* before the job: straight out */
    uint32_t job = reserve(&pl);
    check_out(&pl, "r0|");
    write_str(&pl, "r2|");
    pipeline_write2(&pl, "r3", 2, "|", 1);
    check_out(&pl, "r0|");                 /* out unchanged */
    CHECK_EQ(pl.held_bytes, 6);
    CHECK_EQ(pipeline_pending(&pl), 9);
    CHECK(!pipeline_idle(&pl));
    /* the socket takes out; still not idle: a job and held replies remain */
    buffer_consume(&pl.out, 3);
    CHECK(!pipeline_idle(&pl));
    CHECK_EQ(pipeline_pending(&pl), 6);
    CHECK_EQ(pl.jobs_pending, 1);
    (void)job;
    pipeline_free(&pl);
}

TEST(complete_releases_job_then_inline_in_order)
{
    struct pipeline pl;
    pl_init(&pl);
    write_str(&pl, "A");
    uint32_t job = reserve(&pl);
    write_str(&pl, "C");
    write_str(&pl, "D");
    check_out(&pl, "A");
    complete_str(&pl, job, "B");
    check_out(&pl, "ABCD");
    CHECK_EQ(pl.held_bytes, 0);
    CHECK_EQ(pl.jobs_pending, 0);
    CHECK(pl.slots_head == NULL && pl.slots_tail == NULL);
    CHECK_EQ(pipeline_pending(&pl), 4);
    /* back on the fast path */
    write_str(&pl, "E");
    check_out(&pl, "ABCDE");
    CHECK(pl.slots_head == NULL);
    buffer_consume(&pl.out, 5);
    CHECK(pipeline_idle(&pl));
    CHECK_EQ(pl.flags, 0);
    pipeline_free(&pl);
}

/* The job completes while out is empty (the socket took everything): the
 * slot's buffer may be swapped in. Replies larger than the buffer's first
 * allocation. */
TEST(complete_into_empty_out_with_large_replies)
{
    struct pipeline pl;
    pl_init(&pl);
    enum { BIG = 5000 };
    uint8_t *job_reply = malloc(BIG), *inline_reply = malloc(BIG * 2), *want = malloc(BIG * 3);
    CHECK(job_reply && inline_reply && want);
    for (size_t i = 0; i < BIG; i++)
        job_reply[i] = (uint8_t)(i * 7 + 1);
    for (size_t i = 0; i < BIG * 2; i++)
        inline_reply[i] = (uint8_t)(i * 13 + 5);
    uint32_t job = reserve(&pl);
    pipeline_write(&pl, inline_reply, BIG * 2);
    CHECK_EQ(buffer_readable(&pl.out), 0);
    CHECK_EQ(pl.held_bytes, BIG * 2);
    struct buffer b = BUFFER_INIT;
    CHECK_EQ(buffer_append(&b, job_reply, BIG), 0);
    CHECK_EQ(pl_complete(&pl, job, &b), 0);
    CHECK_EQ(buffer_readable(&pl.out), BIG * 3);
    memcpy(want, job_reply, BIG);
    memcpy(want + BIG, inline_reply, BIG * 2);
    CHECK_MEM(buffer_peek(&pl.out), want, BIG * 3);
    CHECK_EQ(pl.held_bytes, 0);
    CHECK(pl.slots_head == NULL);
    /* the same again with out not empty */
    job = reserve(&pl);
    pipeline_write(&pl, inline_reply, 10);
    CHECK_EQ(buffer_append(&b, job_reply, BIG), 0);
    CHECK_EQ(pl_complete(&pl, job, &b), 0);
    CHECK_EQ(buffer_readable(&pl.out), BIG * 4 + 10);
    CHECK_MEM(buffer_peek(&pl.out) + BIG * 3, job_reply, BIG);
    CHECK_MEM(buffer_peek(&pl.out) + BIG * 4, inline_reply, 10);
    buffer_free(&b);
    free(job_reply);
    free(inline_reply);
    free(want);
    pipeline_free(&pl);
}

/* Requests: job1, inline "i1", job2, inline "i2". Job 2 completes first:
 * nothing moves until job 1 completes, then everything in request order. */
TEST(out_of_order_completion_waits_for_first)
{
    struct pipeline pl;
    pl_init(&pl);
    uint32_t j1 = reserve(&pl);
    write_str(&pl, "i1,");
    uint32_t j2 = reserve(&pl);
    write_str(&pl, "i2,");
    CHECK(j1 != j2);
    CHECK_EQ(pl.jobs_pending, 2);
    complete_str(&pl, j2, "J2,");
    check_out(&pl, "");
    CHECK_EQ(pl.jobs_pending, 1);
    CHECK_EQ(pl.held_bytes, 9);
    CHECK_EQ(pipeline_pending(&pl), 9);
    CHECK(!pipeline_idle(&pl));
    write_str(&pl, "i3,");                 /* still held */
    check_out(&pl, "");
    complete_str(&pl, j1, "J1,");
    check_out(&pl, "J1,i1,J2,i2,i3,");
    CHECK_EQ(pl.jobs_pending, 0);
    CHECK_EQ(pl.held_bytes, 0);
    CHECK(pl.slots_head == NULL && pl.slots_tail == NULL);
    CHECK_EQ(pl.flags, 0);
    pipeline_free(&pl);
}

/* Three jobs back to back, completed 3, 1, 2: after 1 only job 1's reply may
 * leave; after 2 the rest. */
TEST(three_jobs_completed_out_of_order)
{
    struct pipeline pl;
    pl_init(&pl);
    uint32_t j1 = reserve(&pl), j2 = reserve(&pl), j3 = reserve(&pl);
    write_str(&pl, "x");
    complete_str(&pl, j3, "3");
    check_out(&pl, "");
    complete_str(&pl, j1, "1");
    check_out(&pl, "1");
    CHECK_EQ(pl.jobs_pending, 1);
    CHECK_EQ(pl.held_bytes, 2);            /* "3" and "x" */
    write_str(&pl, "y");
    check_out(&pl, "1");
    complete_str(&pl, j2, "2");
    check_out(&pl, "123xy");
    CHECK(pipeline_pending(&pl) == 5 && pl.held_bytes == 0 && pl.slots_head == NULL);
    pipeline_free(&pl);
}

/* An empty job reply (cmd_delay_run leaves the result empty when it cannot
 * allocate) still releases what is behind it, without undefined behaviour:
 * the empty reply buffer has data == NULL. */
TEST(empty_job_reply_releases_followers)
{
    struct pipeline pl;
    pl_init(&pl);
    write_str(&pl, "before");
    uint32_t j = reserve(&pl);
    write_str(&pl, "after");
    struct buffer b = BUFFER_INIT;
    CHECK_EQ(pl_complete(&pl, j, &b), 0);
    check_out(&pl, "beforeafter");
    CHECK(pl.slots_head == NULL);
    CHECK_EQ(pl.held_bytes, 0);
    pipeline_free(&pl);
}

TEST(push_bypasses_held_replies)
{
    struct pipeline pl;
    pl_init(&pl);
    write_str(&pl, "r0,");
    uint32_t j = reserve(&pl);
    write_str(&pl, "r2,");
    pipeline_push2(&pl, "PING", 4, ",", 1);
    check_out(&pl, "r0,PING,");            /* at once, before the held reply */
    CHECK_EQ(pl.held_bytes, 3);
    pipeline_push2(&pl, "MSG,", 4, NULL, 0);
    check_out(&pl, "r0,PING,MSG,");
    complete_str(&pl, j, "r1,");
    check_out(&pl, "r0,PING,MSG,r1,r2,");
    /* with no slots, a push simply appends */
    pipeline_push2(&pl, "GOAWAY", 6, "", 0);
    check_out(&pl, "r0,PING,MSG,r1,r2,GOAWAY");
    CHECK_EQ(pl.flags, 0);
    pipeline_free(&pl);
}

TEST(unreserve_last_restores_fast_path)
{
    struct pipeline pl;
    pl_init(&pl);
    write_str(&pl, "a");
    uint32_t j = reserve(&pl);
    CHECK_EQ(pl.jobs_pending, 1);
    pipeline_unreserve(&pl, j);
    CHECK_EQ(pl.jobs_pending, 0);
    CHECK(pl.slots_head == NULL && pl.slots_tail == NULL);
    CHECK_EQ(pl.held_bytes, 0);
    /* e.g. the OVERLOADED reply for the request that could not be queued */
    write_str(&pl, "b");
    check_out(&pl, "ab");
    CHECK(pl.slots_head == NULL);
    /* its number is gone */
    struct buffer b = BUFFER_INIT;
    CHECK_EQ(buffer_append(&b, "late", 4), 0);
    CHECK_EQ(pl_complete(&pl, j, &b), -ENOENT);
    CHECK_EQ(buffer_readable(&b), 4); /* the caller keeps its buffer */
    buffer_free(&b);
    check_out(&pl, "ab");
    pipeline_free(&pl);
}

/* Unreserving the last of several slots keeps the earlier ones; a reply
 * written next is held behind them, then released in order. */
TEST(unreserve_behind_other_slots)
{
    struct pipeline pl;
    pl_init(&pl);
    uint32_t j1 = reserve(&pl);
    write_str(&pl, "i1,");
    uint32_t j2 = reserve(&pl);
    CHECK_EQ(slot_count(&pl), 3);
    pipeline_unreserve(&pl, j2);
    CHECK_EQ(slot_count(&pl), 2);
    CHECK_EQ(pl.jobs_pending, 1);
    write_str(&pl, "E2,");                 /* the refusal for request 2, held */
    check_out(&pl, "");
    CHECK_EQ(pl.held_bytes, 6);
    uint32_t j3 = reserve(&pl);
    pipeline_unreserve(&pl, j3);
    write_str(&pl, "E3,");
    complete_str(&pl, j1, "J1,");
    check_out(&pl, "J1,i1,E2,E3,");
    CHECK(pl.slots_head == NULL);
    CHECK_EQ(pl.jobs_pending, 0);
    CHECK_EQ(pl.held_bytes, 0);
    pipeline_free(&pl);
}

/* Unreserve of anything but the last reserved, still waiting slot changes
 * nothing. */
TEST(unreserve_other_seq_is_noop)
{
    struct pipeline pl;
    pl_init(&pl);
    pipeline_unreserve(&pl, 0);            /* no slots at all */
    CHECK(pl.slots_head == NULL);
    uint32_t j1 = reserve(&pl), j2 = reserve(&pl);
    pipeline_unreserve(&pl, j1);           /* not the last */
    pipeline_unreserve(&pl, 99);           /* unknown */
    CHECK_EQ(slot_count(&pl), 2);
    CHECK_EQ(pl.jobs_pending, 2);
    complete_str(&pl, j2, "2");
    pipeline_unreserve(&pl, j2);           /* completed: no longer waiting */
    CHECK_EQ(slot_count(&pl), 2);
    CHECK_EQ(pl.jobs_pending, 1);
    complete_str(&pl, j1, "1");
    check_out(&pl, "12");
    pipeline_free(&pl);
}

/* The latency bookkeeping given at reserve comes back from complete, per
 * slot, whatever the completion order. */
TEST(complete_returns_reserve_timing)
{
    struct pipeline pl;
    pl_init(&pl);
    long a = pipeline_reserve(&pl, 123456789012ULL, 3);
    long b = pipeline_reserve(&pl, 42, 0);
    CHECK(a >= 0 && b >= 0 && a != b);
    struct buffer r = BUFFER_INIT;
    uint64_t t0 = 0;
    int lat = -1;
    CHECK_EQ(buffer_append(&r, "B", 1), 0);
    CHECK_EQ(pipeline_complete(&pl, (uint32_t)b, &r, &t0, &lat), 0);
    CHECK_EQ(t0, 42);
    CHECK_EQ(lat, 0);
    CHECK_EQ(buffer_append(&r, "A", 1), 0);
    CHECK_EQ(pipeline_complete(&pl, (uint32_t)a, &r, &t0, &lat), 0);
    CHECK(t0 == 123456789012ULL);
    CHECK_EQ(lat, 3);
    check_out(&pl, "AB");
    buffer_free(&r);
    pipeline_free(&pl);
}

TEST(complete_unknown_seq_is_enoent)
{
    struct pipeline pl;
    pl_init(&pl);
    struct buffer b = BUFFER_INIT;
    CHECK_EQ(buffer_append(&b, "x", 1), 0);
    CHECK_EQ(pl_complete(&pl, 0, &b), -ENOENT);   /* no slots */
    uint32_t j = reserve(&pl);
    write_str(&pl, "held");
    CHECK_EQ(pl_complete(&pl, j + 1, &b), -ENOENT);
    CHECK_EQ(pl_complete(&pl, j + 1000, &b), -ENOENT);
    /* nothing changed */
    CHECK_EQ(buffer_readable(&b), 1);
    CHECK_EQ(pl.jobs_pending, 1);
    CHECK_EQ(pl.held_bytes, 4);
    check_out(&pl, "");
    /* completing twice: the second is unknown */
    uint32_t j2 = reserve(&pl);
    complete_str(&pl, j2, "J2");
    CHECK_EQ(pl_complete(&pl, j2, &b), -ENOENT);
    CHECK_EQ(buffer_readable(&b), 1);
    complete_str(&pl, j, "J1");
    check_out(&pl, "J1heldJ2");
    CHECK_EQ(pl_complete(&pl, j, &b), -ENOENT);
    check_out(&pl, "J1heldJ2");
    buffer_free(&b);
    pipeline_free(&pl);
}

/* Frees held replies, job slots and out; ASan's leak check at exit proves it. */
TEST(free_releases_everything)
{
    struct pipeline pl;
    pl_init(&pl);
    write_str(&pl, "out bytes");
    uint32_t j1 = reserve(&pl);
    char big[3000];
    memset(big, 'z', sizeof big);
    pipeline_write(&pl, big, sizeof big);
    uint32_t j2 = reserve(&pl);
    (void)reserve(&pl);
    write_str(&pl, "more");
    complete_str(&pl, j2, "job two");      /* completed but held behind j1 */
    (void)j1;
    CHECK_EQ(slot_count(&pl), 5);
    pipeline_free(&pl);
    CHECK(pl.slots_head == NULL && pl.slots_tail == NULL);
    CHECK(pl.out.data == NULL);
    CHECK_EQ(pl.held_bytes, 0);
    CHECK_EQ(pl.jobs_pending, 0);
    CHECK(pipeline_idle(&pl));
    CHECK_EQ(pipeline_pending(&pl), 0);
    pipeline_free(&pl);                    /* twice is harmless */
}

/* A job opened before HELLO agreed a codec keeps its reply plain, and holds
 * pushes plain until it is done; jobs opened after may use the codec. */
TEST(codec_follows_the_order_of_hello)
{
    struct pipeline pl;
    pl_init(&pl);
    CHECK_EQ(pipeline_push_codec(&pl), 0);
    uint32_t before = reserve(&pl);
    pl.codec = 1;                          /* HELLO handled behind the job */
    uint32_t after = reserve(&pl);
    CHECK_EQ(pipeline_slot_codec(&pl, before), 0);
    CHECK_EQ(pipeline_slot_codec(&pl, after), 1);
    CHECK_EQ(pipeline_slot_codec(&pl, after + 1), 0); /* no such slot */
    CHECK_EQ(pipeline_push_codec(&pl), 0); /* HELLO's reply is still held */
    complete_str(&pl, before, "plain");
    CHECK_EQ(pipeline_push_codec(&pl), 1); /* only jobs from after HELLO are out */
    complete_str(&pl, after, "maybe compressed");
    CHECK_EQ(pipeline_push_codec(&pl), 1);
    check_out(&pl, "plainmaybe compressed");
    pipeline_free(&pl);
}

/* A held push (one compressed elsewhere) keeps data pushes behind it, in
 * order; control pushes still go straight out; it is not timed. */
TEST(held_push_keeps_data_pushes_in_order)
{
    struct pipeline pl;
    pl_init(&pl);
    pipeline_push_data2(&pl, "d0", 2, NULL, 0); /* nothing held: straight out */
    check_out(&pl, "d0");
    long seq = pipeline_reserve_push(&pl);
    CHECK(seq >= 0);
    CHECK_EQ(pl.push_holds, 1);
    pipeline_push_data2(&pl, "d1", 2, NULL, 0);
    pipeline_push2(&pl, "ping", 4, NULL, 0);   /* control: not held */
    write_str(&pl, "r1");
    pipeline_push_data2(&pl, "d2", 2, NULL, 0);
    check_out(&pl, "d0ping");
    struct buffer b = BUFFER_INIT;
    CHECK_EQ(buffer_append(&b, "P", 1), 0);
    uint64_t t0 = 1;
    int lat = 0;
    CHECK_EQ(pipeline_complete(&pl, (uint32_t)seq, &b, &t0, &lat), 0);
    CHECK_EQ(lat, -1);
    CHECK_EQ(pl.push_holds, 0);
    check_out(&pl, "d0pingPd1r1d2");
    pipeline_push_data2(&pl, "d3", 2, NULL, 0);
    check_out(&pl, "d0pingPd1r1d2d3");
    /* Given back unused: data pushes go straight out again. */
    seq = pipeline_reserve_push(&pl);
    CHECK(seq >= 0);
    pipeline_unreserve(&pl, (uint32_t)seq);
    CHECK_EQ(pl.push_holds, 0);
    pipeline_push_data2(&pl, "d4", 2, NULL, 0);
    check_out(&pl, "d0pingPd1r1d2d3d4");
    buffer_free(&b);
    pipeline_free(&pl);
}

/* A new output buffer starts as big as the last one, but a connection whose
 * last one held one huge frame does not take that much for a small reply. */
TEST(output_buffer_remembers_size_up_to_a_bound)
{
    struct pipeline pl;
    pl_init(&pl);
    pl.out_class = (uint8_t)buffer_class(64 * 1024);
    write_str(&pl, "small");
    CHECK_EQ(pl.out.cap, 64 * 1024);
    pipeline_free(&pl);
    pl_init(&pl);
    pl.out_class = (uint8_t)buffer_class(8u << 20); /* after a 4 MiB reply */
    write_str(&pl, "small");
    CHECK_EQ(pl.out.cap, 256 * 1024);
    check_out(&pl, "small");
    pipeline_free(&pl);
}

/* ---- randomized run against a model ---- */

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rng_state >> 33) % n;
}

#define REQS 3000

/* Request r's reply: its number, then filler bytes that depend on it. */
static size_t make_reply(uint8_t *p, uint32_t r, size_t len)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)(r * 31u + i * 7u);
    memcpy(p, &r, len < 4 ? len : 4);
    return len;
}

struct model {
    uint8_t *stream;       /* what the client must receive, in order */
    size_t stream_len;
    size_t sent;           /* stream bytes the "socket" took from out */
    /* per request: its reply bytes (known once inline or completed) */
    uint8_t *reply[REQS];
    size_t reply_len[REQS];
    bool known[REQS];
    bool is_job[REQS];
    uint32_t seq[REQS];
    uint32_t next_release; /* the first request whose reply is not in out */
    uint32_t nreq;
};

/* Moves every reply now in order into the model's out. */
static void model_release(struct model *m)
{
    while (m->next_release < m->nreq && m->known[m->next_release]) {
        uint32_t r = m->next_release++;
        memcpy(m->stream + m->stream_len, m->reply[r], m->reply_len[r]);
        m->stream_len += m->reply_len[r];
    }
}

static void model_check(const struct pipeline *pl, const struct model *m)
{
    size_t want = m->stream_len - m->sent, have = buffer_readable(&pl->out);
    if (have != want)
        TEST_FAIL("out: %zu bytes, model %zu (next in order: request %u)", have, want,
                  m->next_release);
    if (want && memcmp(buffer_peek(&pl->out), m->stream + m->sent, want) != 0)
        TEST_FAIL("out bytes differ from the request order (next in order: request %u)",
                  m->next_release);
    size_t held = 0;
    uint32_t pending = 0;
    for (uint32_t r = m->next_release; r < m->nreq; r++) {
        if (m->known[r])
            held += m->reply_len[r];
        else
            pending++;
    }
    CHECK_EQ(pl->held_bytes, held);
    CHECK_EQ(pl->jobs_pending, pending);
    CHECK_EQ(pipeline_pending(pl), want + held);
    CHECK_EQ(pipeline_idle(pl), want == 0 && m->next_release == m->nreq);
    CHECK_EQ(pl->slots_head == NULL, m->next_release == m->nreq);
    CHECK_EQ(pl->flags, 0);
}

static void run_random(uint64_t seed)
{
    rng_state = seed;
    struct pipeline pl;
    pl_init(&pl);
    struct model *m = calloc(1, sizeof *m);
    CHECK(m != NULL);
    size_t cap = (size_t)REQS * 2100 + 100000;
    m->stream = malloc(cap);
    CHECK(m->stream != NULL);
    uint32_t open[REQS];   /* requests whose job is out */
    uint32_t nopen = 0;
    uint8_t tmp[2100];
    while (m->nreq < REQS || nopen > 0) {
        uint32_t op = rnd(100);
        if (m->nreq < REQS && op < 30) {                 /* inline reply */
            uint32_t r = m->nreq++;
            size_t len = 1 + rnd(rnd(10) == 0 ? 2000 : 60);
            m->reply[r] = malloc(len);
            CHECK(m->reply[r] != NULL);
            m->reply_len[r] = make_reply(m->reply[r], r, len);
            m->known[r] = true;
            if (rnd(2)) {
                pipeline_write(&pl, m->reply[r], len);
            } else {
                size_t cut = rnd((uint32_t)len + 1);
                pipeline_write2(&pl, m->reply[r], cut, m->reply[r] + cut, len - cut);
            }
            model_release(m);
        } else if (m->nreq < REQS && op < 55) {          /* a worker job */
            uint32_t r = m->nreq++;
            long seq = pl_reserve(&pl);
            CHECK(seq >= 0);
            m->is_job[r] = true;
            m->seq[r] = (uint32_t)seq;
            if (rnd(8) == 0) {
                /* the queue was full: give the place back and refuse inline */
                pipeline_unreserve(&pl, (uint32_t)seq);
                m->is_job[r] = false;
                size_t len = 8 + rnd(20);
                m->reply[r] = malloc(len);
                CHECK(m->reply[r] != NULL);
                m->reply_len[r] = make_reply(m->reply[r], r, len);
                m->known[r] = true;
                pipeline_write(&pl, m->reply[r], len);
                model_release(m);
            } else {
                open[nopen++] = r;
            }
        } else if (nopen > 0 && op < 85) {               /* a job comes back */
            uint32_t i = rnd(nopen), r = open[i];
            open[i] = open[--nopen];
            /* (an empty job reply has its own test, empty_job_reply_*) */
            size_t len = 1 + rnd(rnd(10) == 0 ? 2000 : 60);
            m->reply[r] = malloc(len);
            CHECK(m->reply[r] != NULL);
            m->reply_len[r] = make_reply(m->reply[r], r, len);
            m->known[r] = true;
            struct buffer b = BUFFER_INIT;
            CHECK_EQ(buffer_append(&b, m->reply[r], len), 0);
            CHECK_EQ(pl_complete(&pl, m->seq[r], &b), 0);
            CHECK(b.data == NULL);
            CHECK_EQ(pl_complete(&pl, m->seq[r], &b), -ENOENT);
            model_release(m);
        } else if (op < 90) {                            /* a server push */
            size_t len = 1 + rnd(40);
            memset(tmp, 0xEE, len);
            tmp[0] = (uint8_t)rnd(256);
            size_t cut = rnd((uint32_t)len + 1);
            pipeline_push2(&pl, tmp, cut, tmp + cut, len - cut);
            memcpy(m->stream + m->stream_len, tmp, len);
            m->stream_len += len;
        } else {                                         /* the socket writes */
            size_t have = buffer_readable(&pl.out);
            size_t n = rnd(3) == 0 ? have : rnd((uint32_t)have + 1);
            buffer_consume(&pl.out, n);
            m->sent += n;
        }
        CHECK(m->stream_len <= cap);
        model_check(&pl, m);
    }
    /* everything came back: out holds the rest of the stream, in order */
    CHECK_EQ(m->next_release, REQS);
    CHECK(pl.slots_head == NULL);
    CHECK_EQ(pl.held_bytes, 0);
    CHECK_EQ(pl.jobs_pending, 0);
    /* and the stream is every reply in request order, pushes in between */
    size_t pos = 0;
    for (uint32_t r = 0; r < REQS; r++) {
        while (pos < m->stream_len && m->reply_len[r] > 0 &&
               memcmp(m->stream + pos, m->reply[r], m->reply_len[r]) != 0)
            pos++; /* skip push bytes */
        CHECK(pos + m->reply_len[r] <= m->stream_len);
        pos += m->reply_len[r];
    }
    for (uint32_t r = 0; r < REQS; r++)
        free(m->reply[r]);
    free(m->stream);
    free(m);
    pipeline_free(&pl);
}

TEST(randomized_order_matches_requests)
{
    run_random(0x5eed1234ULL);
    run_random(42);
    run_random(7);
}

int main(int argc, char **argv) { return test_main(argc, argv); }
