/* test_worker: the bounded worker pool. Jobs run on the pool's threads and
 * come back to the pool's home mailbox, each exactly once with conn_id and
 * seq intact; one thread serves its queue in order; the queue limit refuses
 * with -EAGAIN and worker_set_limit changes it; worker_sleep runs its full
 * time unless the pool stops, and then returns early so that stopping is
 * quick; stopping frees waiting jobs unrun and refuses new ones with
 * -ESHUTDOWN; worker threads start with every signal blocked.
 *
 * The test thread waits on the mailbox's eventfd with poll() and a timeout;
 * anything shared with the workers outside the pool's and mailbox's locks is
 * atomic, so the file runs clean under TSan as well. */
#include "worker.h"
#include "mailbox.h"
#include "test.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/eventfd.h>
#include <time.h>

#define WAIT_MS 5000 /* the longest any wait in these tests may take */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the trip back: finished jobs are posted to the pool's home ---- */

static struct mailbox mb;
static int taken; /* jobs taken from mb so far */

/* Jobs posted to mb so far: those taken plus those still queued. */
static int posted(void)
{
    int n = taken;
    pthread_mutex_lock(&mb.mu);
    for (struct mailbox_item *it = mb.head; it; it = it->next)
        n++;
    pthread_mutex_unlock(&mb.mu);
    return n;
}

/* Waits up to ms for the mailbox to be readable; returns the taken list. */
static struct worker_job *take_jobs(int ms)
{
    struct pollfd p = {.fd = mb.efd, .events = POLLIN};
    int rc;
    do {
        rc = poll(&p, 1, ms);
    } while (rc < 0 && errno == EINTR);
    CHECK(rc >= 0);
    if (rc == 0)
        return NULL;
    struct mailbox_item *list = mailbox_take(&mb);
    for (struct mailbox_item *it = list; it; it = it->next)
        taken++;
    return (struct worker_job *)list;
}

/* The job's trip home ends in the tests' hands: they take the items and
 * check them, never run them. */
static void back_unused(struct mailbox_item *it, void *ctx)
{
    (void)it;
    (void)ctx;
    abort();
}

/* ---- a "started" signal from a running job ---- */

static int started_fd = -1;

static void signal_started(void)
{
    uint64_t one = 1;
    CHECK(write(started_fd, &one, sizeof one) == (ssize_t)sizeof one);
}

static void wait_started(void)
{
    struct pollfd p = {.fd = started_fd, .events = POLLIN};
    int rc = poll(&p, 1, WAIT_MS);
    if (rc != 1)
        TEST_FAIL("the job did not start within %d ms", WAIT_MS);
    uint64_t v;
    CHECK(read(started_fd, &v, sizeof v) == (ssize_t)sizeof v);
}

/* The running job signalled just before calling worker_sleep; give it time
 * to get into the wait, so that stopping has to wake it (not merely be seen
 * on entry). There is no way to observe that from outside, hence the pause. */
static void let_it_sleep(void)
{
    poll(NULL, 0, 50);
}

static void setup(void)
{
    CHECK_EQ(mailbox_init(&mb), 0);
    started_fd = eventfd(0, EFD_CLOEXEC);
    CHECK(started_fd >= 0);
}

static void teardown(void)
{
    mailbox_destroy(&mb); /* drops (frees) jobs never taken */
    taken = 0;
    close(started_fd);
}

/* ---- job bodies ---- */

#define NJOBS 200

static _Atomic int ran[NJOBS];
static _Atomic int running, max_running;

/* Payload: the job's index (u32). Result: conn_id, seq, index. */
static void run_record(struct worker_pool *pool, struct worker_job *job)
{
    (void)pool;
    uint32_t idx;
    CHECK_EQ(job->len, sizeof idx);
    memcpy(&idx, job->payload, sizeof idx);
    CHECK(idx < NJOBS);
    int r = atomic_fetch_add(&running, 1) + 1;
    int m = atomic_load(&max_running);
    while (r > m && !atomic_compare_exchange_weak(&max_running, &m, r))
        ;
    atomic_fetch_add(&ran[idx], 1);
    CHECK_EQ(buffer_append(&job->result, &job->conn_id, sizeof job->conn_id), 0);
    CHECK_EQ(buffer_append(&job->result, &job->seq, sizeof job->seq), 0);
    CHECK_EQ(buffer_append(&job->result, &idx, sizeof idx), 0);
    if (idx % 8 == 0)
        worker_sleep(pool, 1); /* let the other thread overlap */
    atomic_fetch_sub(&running, 1);
}

static struct worker_job *new_record_job(uint32_t idx)
{
    struct worker_job *j =
        worker_job_new(1000 + idx, idx * 3 + 1, 5, run_record, back_unused, &idx, sizeof idx);
    CHECK(j != NULL);
    return j;
}

/* Checks a returned record job and returns its index. */
static uint32_t check_record_job(const struct worker_job *j)
{
    uint32_t idx;
    CHECK_EQ(j->len, sizeof idx);
    memcpy(&idx, j->payload, sizeof idx);
    CHECK(idx < NJOBS);
    CHECK_EQ(j->conn_id, 1000 + idx);
    CHECK_EQ(j->seq, idx * 3 + 1);
    CHECK_EQ(j->command, 5);
    CHECK(j->run == run_record);
    uint8_t want[sizeof(uint64_t) + 2 * sizeof(uint32_t)];
    uint64_t cid = 1000 + idx;
    uint32_t seq = idx * 3 + 1;
    memcpy(want, &cid, sizeof cid);
    memcpy(want + sizeof cid, &seq, sizeof seq);
    memcpy(want + sizeof cid + sizeof seq, &idx, sizeof idx);
    CHECK_EQ(buffer_readable(&j->result), sizeof want);
    CHECK_MEM(buffer_peek(&j->result), want, sizeof want);
    return idx;
}

/* ---- tests ---- */

TEST(job_new_copies_payload)
{
    const char msg[] = "payload bytes";
    struct worker_job *j = worker_job_new(77, 9, 5, run_record, back_unused, msg, sizeof msg);
    CHECK(j != NULL);
    CHECK_EQ(j->conn_id, 77);
    CHECK_EQ(j->seq, 9);
    CHECK_EQ(j->command, 5);
    CHECK(j->run == run_record);
    CHECK_EQ(j->len, sizeof msg);
    CHECK(j->next == NULL);
    CHECK(j->payload != (const uint8_t *)msg);
    CHECK_MEM(j->payload, msg, sizeof msg);
    CHECK(j->result.data == NULL);
    CHECK_EQ(buffer_readable(&j->result), 0);
    CHECK_EQ(buffer_append(&j->result, "r", 1), 0);
    worker_job_free(j); /* frees the result too (leak check) */
    struct worker_job *e = worker_job_new(1, 2, 3, run_record, back_unused, NULL, 0);
    CHECK(e != NULL);
    CHECK_EQ(e->len, 0);
    worker_job_free(e);
    worker_job_free(NULL);
}

/* 2 threads, a queue of 3, 200 jobs: each runs once and comes back once. */
TEST(every_job_comes_back_once)
{
    setup();
    struct worker_pool pool;
    CHECK_EQ(worker_pool_start(&pool, 2, 3, &mb), 0);
    CHECK_EQ(pool.nthreads, 2);
    int back[NJOBS] = {0};
    int received = 0, refused = 0;
    uint32_t next = 0;
    struct worker_job *pending = NULL;
    double deadline = now_s() + WAIT_MS / 1000.0;
    while (received < NJOBS) {
        /* submit until the queue is full */
        while (next < NJOBS) {
            if (!pending)
                pending = new_record_job(next);
            int rc = worker_submit(&pool, pending);
            if (rc == -EAGAIN) {
                refused++;
                break;
            }
            CHECK_EQ(rc, 0);
            pending = NULL;
            next++;
        }
        struct worker_job *j = take_jobs(100);
        while (j) {
            struct worker_job *nx = (struct worker_job *)j->item.next;
            uint32_t idx = check_record_job(j);
            back[idx]++;
            received++;
            worker_job_free(j);
            j = nx;
        }
        if (now_s() > deadline)
            TEST_FAIL("only %d of %d jobs came back within %d ms", received, NJOBS, WAIT_MS);
    }
    CHECK(pending == NULL);
    for (int i = 0; i < NJOBS; i++) {
        if (back[i] != 1)
            TEST_FAIL("job %d came back %d times", i, back[i]);
        if (atomic_load(&ran[i]) != 1)
            TEST_FAIL("job %d ran %d times", i, atomic_load(&ran[i]));
    }
    CHECK_EQ(posted(), NJOBS);
    CHECK(atomic_load(&max_running) >= 1);
    CHECK(atomic_load(&max_running) <= 2);
    /* the queue refused at least once: 200 jobs do not fit into 3 places */
    CHECK(refused > 0);
    /* nothing more comes */
    CHECK(take_jobs(20) == NULL);
    worker_pool_stop(&pool);
    CHECK_EQ(posted(), NJOBS);
    teardown();
}

/* One thread serves its queue first in, first out. */
TEST(one_thread_runs_jobs_in_order)
{
    setup();
    struct worker_pool pool;
    CHECK_EQ(worker_pool_start(&pool, 1, 100, &mb), 0);
    for (uint32_t i = 0; i < 50; i++)
        CHECK_EQ(worker_submit(&pool, new_record_job(i)), 0);
    uint32_t want = 0;
    double deadline = now_s() + WAIT_MS / 1000.0;
    while (want < 50) {
        struct worker_job *j = take_jobs(100);
        while (j) {
            struct worker_job *nx = (struct worker_job *)j->item.next;
            uint32_t idx = check_record_job(j);
            if (idx != want)
                TEST_FAIL("job %u came back where %u was due", idx, want);
            want++;
            worker_job_free(j);
            j = nx;
        }
        if (now_s() > deadline)
            TEST_FAIL("only %u of 50 jobs came back", want);
    }
    worker_pool_stop(&pool);
    teardown();
}

/* A job that sleeps in worker_sleep until the pool stops (or 5 s). */
static _Atomic int sleep_result = -1;      /* worker_sleep's return value */
static _Atomic int submit_after_stop = 1;  /* worker_submit's rc from inside */
static struct worker_job *extra_job;       /* submitted from inside the job */

static void run_blocker(struct worker_pool *pool, struct worker_job *job)
{
    (void)job;
    signal_started();
    bool finished = worker_sleep(pool, 5000);
    atomic_store(&sleep_result, finished ? 1 : 0);
    if (extra_job) {
        /* the pool is stopping but its lock still lives until every thread
         * has been joined: a submit now must be refused */
        atomic_store(&submit_after_stop, worker_submit(pool, extra_job));
    }
}

static _Atomic int unrun_ran;

static void run_must_not_run(struct worker_pool *pool, struct worker_job *job)
{
    (void)pool;
    (void)job;
    atomic_fetch_add(&unrun_ran, 1);
}

static uint32_t pool_waiting(struct worker_pool *pool)
{
    pthread_mutex_lock(&pool->mu);
    uint32_t w = pool->waiting;
    pthread_mutex_unlock(&pool->mu);
    return w;
}

/* 1 thread busy, a queue of 3: the 4th waiting job is refused until
 * worker_set_limit raises the limit; lowering it refuses again. */
TEST(queue_limit_and_set_limit)
{
    setup();
    struct worker_pool pool;
    CHECK_EQ(worker_pool_start(&pool, 1, 3, &mb), 0);
    struct worker_job *blocker = worker_job_new(1, 0, 5, run_blocker, back_unused, NULL, 0);
    CHECK(blocker != NULL);
    CHECK_EQ(worker_submit(&pool, blocker), 0);
    wait_started();                         /* the thread is now busy */
    let_it_sleep();
    CHECK_EQ(pool_waiting(&pool), 0);
    struct worker_job *w[8];
    for (int i = 0; i < 8; i++) {
        w[i] = worker_job_new(2, (uint32_t)i + 1, 5, run_must_not_run, back_unused, NULL, 0);
        CHECK(w[i] != NULL);
    }
    for (int i = 0; i < 3; i++)
        CHECK_EQ(worker_submit(&pool, w[i]), 0);
    CHECK_EQ(pool_waiting(&pool), 3);
    CHECK_EQ(worker_submit(&pool, w[3]), -EAGAIN);
    CHECK_EQ(worker_submit(&pool, w[3]), -EAGAIN);
    CHECK_EQ(pool_waiting(&pool), 3);
    worker_set_limit(&pool, 5);
    CHECK_EQ(worker_submit(&pool, w[3]), 0);
    CHECK_EQ(worker_submit(&pool, w[4]), 0);
    CHECK_EQ(worker_submit(&pool, w[5]), -EAGAIN);
    CHECK_EQ(pool_waiting(&pool), 5);
    /* lowered below what is waiting: nothing is dropped, new ones refused */
    worker_set_limit(&pool, 2);
    CHECK_EQ(worker_submit(&pool, w[5]), -EAGAIN);
    CHECK_EQ(pool_waiting(&pool), 5);
    CHECK_EQ(atomic_load(&unrun_ran), 0);
    CHECK_EQ(posted(), 0);
    /* the refused jobs stay the caller's */
    for (int i = 5; i < 8; i++)
        worker_job_free(w[i]);
    double t0 = now_s();
    worker_pool_stop(&pool);
    double took = now_s() - t0;
    if (took >= 1.0)
        TEST_FAIL("worker_pool_stop took %.3f s", took);
    CHECK_EQ(atomic_load(&sleep_result), 0);
    CHECK_EQ(atomic_load(&unrun_ran), 0);
    teardown(); /* frees the blocker, which came back to the mailbox */
}

/* Stopping ends a running job's worker_sleep early, comes back to the mailbox
 * for that job, frees the waiting jobs unrun (ASan's leak check at exit), and
 * refuses a submit made while stopping with -ESHUTDOWN.
 *
 * A submit after worker_pool_stop has returned is not tested: stop destroys
 * the pool's mutex, so that call would lock a destroyed mutex (undefined);
 * the -ESHUTDOWN case is exercised from inside the running job instead, while
 * stop is joining the threads and the mutex is still alive. */
TEST(stop_ends_sleep_and_frees_waiting_jobs)
{
    setup();
    struct worker_pool pool;
    CHECK_EQ(worker_pool_start(&pool, 1, 10, &mb), 0);
    extra_job = worker_job_new(3, 99, 5, run_must_not_run, back_unused, NULL, 0);
    CHECK(extra_job != NULL);
    struct worker_job *blocker = worker_job_new(1, 7, 5, run_blocker, back_unused, "b", 1);
    CHECK(blocker != NULL);
    CHECK_EQ(worker_submit(&pool, blocker), 0);
    wait_started();
    let_it_sleep();
    for (uint32_t i = 0; i < 6; i++) {
        struct worker_job *j = worker_job_new(2, i, 5, run_must_not_run, back_unused, "waiting", 7);
        CHECK(j != NULL);
        CHECK_EQ(buffer_append(&j->result, "partial", 7), 0); /* freed with it */
        CHECK_EQ(worker_submit(&pool, j), 0);
    }
    CHECK_EQ(pool_waiting(&pool), 6);
    double t0 = now_s();
    worker_pool_stop(&pool);
    double took = now_s() - t0;
    if (took >= 1.0)
        TEST_FAIL("worker_pool_stop took %.3f s (worker_sleep did not end early)", took);
    CHECK_EQ(atomic_load(&sleep_result), 0);  /* ended early */
    CHECK_EQ(atomic_load(&submit_after_stop), -ESHUTDOWN);
    CHECK_EQ(atomic_load(&unrun_ran), 0);
    /* only the running job came back */
    CHECK_EQ(posted(), 1);
    struct worker_job *j = take_jobs(0);
    CHECK(j != NULL);
    CHECK(j == blocker);
    CHECK(j->item.next == NULL);
    CHECK_EQ(j->conn_id, 1);
    CHECK_EQ(j->seq, 7);
    worker_job_free(j);
    CHECK(pool.threads == NULL);
    CHECK_EQ(pool.nthreads, 0);
    CHECK(pool.head == NULL && pool.tail == NULL);
    CHECK_EQ(pool.waiting, 0);
    worker_job_free(extra_job); /* refused: still ours */
    extra_job = NULL;
    teardown();
}

/* Without a stop, worker_sleep sleeps its full time and returns true. */
static _Atomic long slept_us = -1;

static void run_short_sleep(struct worker_pool *pool, struct worker_job *job)
{
    (void)job;
    double t0 = now_s();
    bool finished = worker_sleep(pool, 30);
    atomic_store(&slept_us, (long)((now_s() - t0) * 1e6));
    atomic_store(&sleep_result, finished ? 1 : 0);
}

TEST(sleep_runs_full_time_without_stop)
{
    setup();
    struct worker_pool pool;
    CHECK_EQ(worker_pool_start(&pool, 1, 3, &mb), 0);
    struct worker_job *j = worker_job_new(1, 1, 5, run_short_sleep, back_unused, NULL, 0);
    CHECK(j != NULL);
    CHECK_EQ(worker_submit(&pool, j), 0);
    struct worker_job *back = take_jobs(WAIT_MS);
    CHECK(back == j);
    CHECK_EQ(atomic_load(&sleep_result), 1);
    long us = atomic_load(&slept_us);
    if (us < 30000 || us > 1000000)
        TEST_FAIL("worker_sleep(30 ms) took %ld us", us);
    worker_job_free(back);
    worker_pool_stop(&pool);
    teardown();
}

/* A pool with idle threads stops at once. */
TEST(stop_idle_pool_is_quick)
{
    setup();
    struct worker_pool pool;
    CHECK_EQ(worker_pool_start(&pool, 4, 8, &mb), 0);
    CHECK_EQ(pool.nthreads, 4);
    double t0 = now_s();
    worker_pool_stop(&pool);
    CHECK(now_s() - t0 < 1.0);
    CHECK_EQ(posted(), 0);
    teardown();
}

/* Worker threads start with every signal blocked (they must never take the
 * daemon's SIGTERM/SIGHUP), and the caller's own mask is left as it was. */
static _Atomic int mask_ok = -1;

static void run_check_mask(struct worker_pool *pool, struct worker_job *job)
{
    (void)pool;
    (void)job;
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    int ok = sigismember(&cur, SIGTERM) == 1 && sigismember(&cur, SIGINT) == 1 &&
             sigismember(&cur, SIGHUP) == 1 && sigismember(&cur, SIGUSR1) == 1 &&
             sigismember(&cur, SIGPIPE) == 1;
    atomic_store(&mask_ok, ok);
}

TEST(worker_threads_block_signals)
{
    setup();
    sigset_t before, after;
    sigemptyset(&before);
    sigaddset(&before, SIGUSR2);
    pthread_sigmask(SIG_SETMASK, &before, NULL);
    struct worker_pool pool;
    CHECK_EQ(worker_pool_start(&pool, 1, 3, &mb), 0);
    pthread_sigmask(SIG_BLOCK, NULL, &after);
    CHECK_EQ(sigismember(&after, SIGUSR2), 1);
    CHECK_EQ(sigismember(&after, SIGTERM), 0);
    CHECK_EQ(sigismember(&after, SIGHUP), 0);
    struct worker_job *j = worker_job_new(1, 1, 5, run_check_mask, back_unused, NULL, 0);
    CHECK(j != NULL);
    CHECK_EQ(worker_submit(&pool, j), 0);
    struct worker_job *back = take_jobs(WAIT_MS);
    CHECK(back == j);
    CHECK_EQ(atomic_load(&mask_ok), 1);
    worker_job_free(back);
    worker_pool_stop(&pool);
    teardown();
}

int main(int argc, char **argv) { return test_main(argc, argv); }
