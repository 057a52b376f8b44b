/* test_mailbox: the MPSC mailbox: FIFO order, empty takes, the eventfd
 * wake-up (set by a post to an empty mailbox, cleared by take, written once
 * per burst), many producer threads against one polling consumer (every item
 * exactly once, per-producer order kept), run calling each item's own run
 * with the consumer's context, and destroy dropping what is left through
 * each item's own drop. */
#include "mailbox.h"
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>

struct item {
    struct mailbox_item base; /* first member */
    int producer;
    int seq;
};

/* A run that marks items in the tests that only take them (never called). */
static void tag_run(struct mailbox_item *it, void *ctx)
{
    (void)it;
    (void)ctx;
    abort();
}

struct run_log;
struct run_ctx {
    struct run_log *log;
    struct mailbox *mb;
};

/* poll() on the eventfd: 1 when readable within timeout_ms, 0 when not. */
static int efd_readable(const struct mailbox *mb, int timeout_ms)
{
    struct pollfd pfd = {.fd = mb->efd, .events = POLLIN, .revents = 0};
    int r;
    do {
        r = poll(&pfd, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    CHECK(r >= 0);
    if (r == 1)
        CHECK(pfd.revents & POLLIN);
    return r;
}

/* The length of a taken list; fails on a cycle (a stale next pointer). */
static size_t list_len(const struct mailbox_item *it)
{
    size_t n = 0;
    for (; it; it = it->next)
        if (++n > 1000000)
            TEST_FAIL("list does not end: a next pointer was not reset");
    return n;
}

TEST(init_creates_nonblocking_cloexec_eventfd)
{
    struct mailbox mb;
    CHECK_EQ(mailbox_init(&mb), 0);
    CHECK(mb.efd >= 0);
    int fl = fcntl(mb.efd, F_GETFL);
    CHECK(fl >= 0);
    CHECK(fl & O_NONBLOCK);
    int fdfl = fcntl(mb.efd, F_GETFD);
    CHECK(fdfl >= 0);
    CHECK(fdfl & FD_CLOEXEC);
    CHECK_EQ(efd_readable(&mb, 0), 0);
    int efd = mb.efd;
    mailbox_destroy(&mb);
    CHECK_EQ(mb.efd, -1);
    errno = 0;
    CHECK_EQ(fcntl(efd, F_GETFD), -1); /* closed */
    CHECK_EQ(errno, EBADF);
}

TEST(take_on_empty_returns_null)
{
    struct mailbox mb;
    CHECK_EQ(mailbox_init(&mb), 0);
    CHECK(mailbox_take(&mb) == NULL);
    CHECK(mailbox_take(&mb) == NULL);
    struct item a = {.producer = 0, .seq = 1};
    mailbox_post(&mb, &a.base);
    CHECK(mailbox_take(&mb) == &a.base);
    CHECK(mailbox_take(&mb) == NULL);
    mailbox_destroy(&mb);
}

TEST(post_take_fifo_one_thread)
{
    enum { N = 100 };
    struct mailbox mb;
    struct item items[N];
    CHECK_EQ(mailbox_init(&mb), 0);
    for (int i = 0; i < N; i++) {
        items[i].base.next = (struct mailbox_item *)&items[0]; /* post must reset it */
        items[i].base.run = tag_run;
        items[i].base.drop = NULL;
        items[i].producer = 0;
        items[i].seq = i;
        mailbox_post(&mb, &items[i].base);
    }
    struct mailbox_item *list = mailbox_take(&mb);
    CHECK_EQ(list_len(list), N);
    int i = 0;
    for (struct mailbox_item *it = list; it; it = it->next, i++) {
        struct item *x = (struct item *)it;
        CHECK(x == &items[i]);
        CHECK_EQ(x->seq, i);
        CHECK(it->run == tag_run); /* run and drop are left alone */
    }
    CHECK(items[N - 1].base.next == NULL);
    CHECK(mailbox_take(&mb) == NULL);

    /* Interleaved posts and takes keep order within each batch. */
    mailbox_post(&mb, &items[5].base);
    mailbox_post(&mb, &items[3].base);
    list = mailbox_take(&mb);
    CHECK(list == &items[5].base);
    CHECK(list->next == &items[3].base);
    CHECK(list->next->next == NULL);
    mailbox_post(&mb, &items[7].base);
    list = mailbox_take(&mb);
    CHECK(list == &items[7].base);
    CHECK(list->next == NULL);
    mailbox_destroy(&mb);
}

TEST(eventfd_readable_after_post_cleared_by_take)
{
    struct mailbox mb;
    struct item a = {.seq = 1}, b = {.seq = 2}, c = {.seq = 3};
    CHECK_EQ(mailbox_init(&mb), 0);
    CHECK_EQ(efd_readable(&mb, 0), 0);

    mailbox_post(&mb, &a.base);
    CHECK_EQ(efd_readable(&mb, 0), 1);
    CHECK_EQ(efd_readable(&mb, 1000), 1);
    mailbox_post(&mb, &b.base); /* still readable with more queued */
    CHECK_EQ(efd_readable(&mb, 0), 1);

    CHECK_EQ(list_len(mailbox_take(&mb)), 2);
    CHECK_EQ(efd_readable(&mb, 0), 0);
    CHECK(mailbox_take(&mb) == NULL);
    CHECK_EQ(efd_readable(&mb, 0), 0);

    /* Empty again: the next post wakes again. */
    mailbox_post(&mb, &c.base);
    CHECK_EQ(efd_readable(&mb, 1000), 1);
    CHECK(mailbox_take(&mb) == &c.base);
    CHECK_EQ(efd_readable(&mb, 0), 0);
    mailbox_destroy(&mb);
}

TEST(burst_of_posts_writes_eventfd_once)
{
    struct mailbox mb;
    struct item it[5];
    CHECK_EQ(mailbox_init(&mb), 0);
    for (int i = 0; i < 5; i++)
        mailbox_post(&mb, &it[i].base);
    uint64_t count = 0;
    CHECK_EQ(read(mb.efd, &count, sizeof count), (long long)sizeof count);
    CHECK_EQ(count, 1); /* only the empty -> non-empty post wrote */
    CHECK_EQ(list_len(mailbox_take(&mb)), 5); /* take copes with a cleared counter */
    CHECK_EQ(efd_readable(&mb, 0), 0);
    mailbox_destroy(&mb);
}

/* ---- many producers, one consumer ---- */

enum { PRODUCERS = 8, PER_PRODUCER = 20000 };

struct mp_shared {
    struct mailbox mb;
    pthread_barrier_t start;
    struct item *items;             /* PRODUCERS * PER_PRODUCER */
    /* written by the consumer only, read after join */
    long received;
    long wakeups;
    long empty_takes;
    long timeouts;
    char error[256];
};

struct producer_arg {
    struct mp_shared *s;
    int id;
};

static void *producer_main(void *p)
{
    struct producer_arg *a = p;
    struct mp_shared *s = a->s;
    pthread_barrier_wait(&s->start);
    for (int i = 0; i < PER_PRODUCER; i++) {
        struct item *x = &s->items[a->id * PER_PRODUCER + i];
        x->producer = a->id;
        x->seq = i;
        x->base.run = tag_run;
        mailbox_post(&s->mb, &x->base);
        if ((i & 1023) == 0)
            sched_yield(); /* let the consumer drain now and then */
    }
    return NULL;
}

static void *consumer_main(void *p)
{
    struct mp_shared *s = p;
    int next_seq[PRODUCERS] = {0};
    const long total = (long)PRODUCERS * PER_PRODUCER;
    pthread_barrier_wait(&s->start);
    int idle = 0;
    while (s->received < total) {
        struct pollfd pfd = {.fd = s->mb.efd, .events = POLLIN, .revents = 0};
        int r = poll(&pfd, 1, 1000);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(s->error, sizeof s->error, "poll: errno %d", errno);
            return NULL;
        }
        if (r == 0) {
            s->timeouts++;
            /* Items queued but no wake-up for 30 s: a lost wake-up. */
            if (++idle >= 30) {
                snprintf(s->error, sizeof s->error,
                         "no wake-up for %d s with %ld of %ld items received", idle,
                         s->received, total);
                return NULL;
            }
            continue;
        }
        idle = 0;
        s->wakeups++;
        struct mailbox_item *list = mailbox_take(&s->mb);
        if (!list)
            s->empty_takes++;
        for (struct mailbox_item *it = list; it; it = it->next) {
            struct item *x = (struct item *)it;
            if (x->producer < 0 || x->producer >= PRODUCERS || it->run != tag_run) {
                snprintf(s->error, sizeof s->error, "corrupt item: producer %d",
                         x->producer);
                return NULL;
            }
            if (x->seq != next_seq[x->producer] ||
                x != &s->items[x->producer * PER_PRODUCER + x->seq]) {
                snprintf(s->error, sizeof s->error,
                         "producer %d: got seq %d, want %d (duplicate, lost or reordered)",
                         x->producer, x->seq, next_seq[x->producer]);
                return NULL;
            }
            next_seq[x->producer]++;
            s->received++;
        }
    }
    for (int i = 0; i < PRODUCERS; i++) {
        if (next_seq[i] != PER_PRODUCER) {
            snprintf(s->error, sizeof s->error, "producer %d: %d of %d items", i, next_seq[i],
                     PER_PRODUCER);
            return NULL;
        }
    }
    return NULL;
}

TEST(many_producers_one_polling_consumer)
{
    static struct mp_shared s;
    s.items = calloc((size_t)PRODUCERS * PER_PRODUCER, sizeof *s.items);
    CHECK(s.items != NULL);
    for (long i = 0; i < (long)PRODUCERS * PER_PRODUCER; i++)
        s.items[i].producer = -1;
    CHECK_EQ(mailbox_init(&s.mb), 0);
    CHECK_EQ(pthread_barrier_init(&s.start, NULL, PRODUCERS + 1), 0);

    pthread_t consumer, producers[PRODUCERS];
    struct producer_arg args[PRODUCERS];
    CHECK_EQ(pthread_create(&consumer, NULL, consumer_main, &s), 0);
    for (int i = 0; i < PRODUCERS; i++) {
        args[i] = (struct producer_arg){&s, i};
        CHECK_EQ(pthread_create(&producers[i], NULL, producer_main, &args[i]), 0);
    }
    for (int i = 0; i < PRODUCERS; i++)
        CHECK_EQ(pthread_join(producers[i], NULL), 0);
    CHECK_EQ(pthread_join(consumer, NULL), 0);

    if (s.error[0])
        TEST_FAIL("%s", s.error);
    CHECK_EQ(s.received, (long)PRODUCERS * PER_PRODUCER);
    CHECK(s.wakeups >= 1);
    /* Everything was taken: nothing is left behind. (The eventfd may still hold
     * a harmless spurious wake-up: a post can land between take's read of the
     * eventfd and its swap of the list.) */
    CHECK(mailbox_take(&s.mb) == NULL);
    printf("  (%ld wake-ups, %ld empty takes, %ld poll timeouts)\n", s.wakeups, s.empty_takes,
           s.timeouts);
    pthread_barrier_destroy(&s.start);
    mailbox_destroy(&s.mb);
    free(s.items);
}

/* ---- destroy ---- */

static int freed_count;
static int freed_sum;

static void count_and_free(struct mailbox_item *it)
{
    struct item *x = (struct item *)it;
    freed_count++;
    freed_sum += x->seq;
    free(x);
}

static struct item *new_item(int seq)
{
    struct item *x = calloc(1, sizeof *x);
    CHECK(x != NULL);
    x->seq = seq;
    x->base.run = tag_run;
    x->base.drop = count_and_free;
    return x;
}

TEST(destroy_frees_leftovers)
{
    struct mailbox mb;
    CHECK_EQ(mailbox_init(&mb), 0);
    int want_sum = 0;
    for (int i = 0; i < 57; i++) {
        mailbox_post(&mb, &new_item(i)->base);
        want_sum += i;
    }
    freed_count = freed_sum = 0;
    mailbox_destroy(&mb); /* LeakSanitizer checks the rest */
    CHECK_EQ(freed_count, 57);
    CHECK_EQ(freed_sum, want_sum);
    CHECK_EQ(mb.efd, -1);
    CHECK(mb.head == NULL);
}

TEST(destroy_frees_only_what_was_not_taken)
{
    struct mailbox mb;
    CHECK_EQ(mailbox_init(&mb), 0);
    for (int i = 0; i < 10; i++)
        mailbox_post(&mb, &new_item(1000)->base);
    struct mailbox_item *list = mailbox_take(&mb);
    CHECK_EQ(list_len(list), 10);
    while (list) {
        struct mailbox_item *next = list->next;
        free(list);
        list = next;
    }
    for (int i = 1; i <= 5; i++)
        mailbox_post(&mb, &new_item(i)->base);
    freed_count = freed_sum = 0;
    mailbox_destroy(&mb);
    CHECK_EQ(freed_count, 5);
    CHECK_EQ(freed_sum, 1 + 2 + 3 + 4 + 5);

    /* An empty mailbox: no drop is called. */
    CHECK_EQ(mailbox_init(&mb), 0);
    freed_count = 0;
    mailbox_destroy(&mb);
    CHECK_EQ(freed_count, 0);
}

TEST(destroy_skips_items_without_drop)
{
    struct mailbox mb;
    struct item a = {.base = {.run = tag_run}}, b = {.base = {.run = tag_run}};
    CHECK_EQ(mailbox_init(&mb), 0);
    mailbox_post(&mb, &a.base);
    mailbox_post(&mb, &b.base);
    mailbox_destroy(&mb); /* the poster owns these (drop NULL): nothing touched */
    CHECK_EQ(mb.efd, -1);
}

/* ---- run ---- */

struct run_log {
    int n;
    int seq[16];
    void *ctx[16];
};

static void log_run(struct mailbox_item *it, void *ctx)
{
    struct run_log *log = ((struct run_ctx *)ctx)->log;
    struct item *x = (struct item *)it;
    log->seq[log->n] = x->seq;
    log->ctx[log->n++] = ctx;
    free(x); /* run owns the item */
}

/* The item that runs posts another: it runs in the next turn, not this one. */
static void repost_run(struct mailbox_item *it, void *ctx)
{
    struct run_ctx *c = ctx;
    struct item *x = (struct item *)it;
    x->base.run = log_run;
    x->seq += 100;
    mailbox_post(c->mb, &x->base);
}

TEST(run_calls_each_items_own_run_in_order_with_the_context)
{
    struct mailbox mb;
    CHECK_EQ(mailbox_init(&mb), 0);
    struct run_log log = {0};
    struct run_ctx ctx = {&log, &mb};
    CHECK_EQ(mailbox_run(&mb, &ctx), 0);
    for (int i = 0; i < 4; i++) {
        struct item *x = new_item(i);
        x->base.run = i == 2 ? repost_run : log_run;
        mailbox_post(&mb, &x->base);
    }
    CHECK_EQ(efd_readable(&mb, 0), 1);
    CHECK_EQ(mailbox_run(&mb, &ctx), 4);
    CHECK_EQ(log.n, 3);
    CHECK_EQ(log.seq[0], 0);
    CHECK_EQ(log.seq[1], 1);
    CHECK_EQ(log.seq[2], 3);
    CHECK(log.ctx[0] == &ctx && log.ctx[2] == &ctx);
    CHECK_EQ(efd_readable(&mb, 0), 1);         /* the repost woke the mailbox again */
    CHECK_EQ(mailbox_run(&mb, &ctx), 1);
    CHECK_EQ(log.n, 4);
    CHECK_EQ(log.seq[3], 102);
    CHECK_EQ(efd_readable(&mb, 0), 0);
    mailbox_destroy(&mb);
}

int main(int argc, char **argv) { return test_main(argc, argv); }
