/* test_outq: the shared-payload queue. Receivers are modelled as a struct
 * buffer of their own bytes plus an outq, drained through outq_iov and
 * outq_consume the way conn.c's flush does, with writes cut short at chosen
 * sizes. Checks: many receivers share one copy; own bytes and pieces keep
 * their order across partial writes; a slow receiver keeps the payload
 * alive; a receiver closing mid-queue gives its references back; the
 * reference count returns to zero and releases exactly once; a drained
 * queue is freed. */
#include "outq.h"
#include "test.h"

#include <pthread.h>

/* An owner of shared bytes, counting its releases. */
struct owner {
    struct outq_ref ref;
    uint8_t data[8192];
    int released;
};

static void owner_release(struct outq_ref *r)
{
    ((struct owner *)(void *)r)->released++;
}

static void owner_init(struct owner *o, unsigned seed)
{
    memset(o, 0, sizeof *o);
    outq_ref_init(&o->ref, 1, owner_release); /* the creator's reference */
    for (size_t i = 0; i < sizeof o->data; i++)
        o->data[i] = (uint8_t)(i * 31u + seed * 7u);
}

static uint32_t refs(const struct owner *o) { return atomic_load(&o->ref.refs); }

/* A receiver: its own output, its queue, and what it should send (model). */
struct rcv {
    struct buffer out;
    struct outq *q;
    uint8_t *want;
    size_t nwant, cap;
};

static void model_add(struct rcv *r, const void *p, size_t n)
{
    if (r->nwant + n > r->cap) {
        r->cap = (r->nwant + n) * 2;
        r->want = realloc(r->want, r->cap);
        CHECK(r->want != NULL);
    }
    memcpy(r->want + r->nwant, p, n);
    r->nwant += n;
}

static void own(struct rcv *r, const void *p, size_t n)
{
    CHECK_EQ(buffer_append(&r->out, p, n), 0);
    model_add(r, p, n);
}

static void piece(struct rcv *r, struct owner *o, size_t off, size_t n)
{
    CHECK_EQ(outq_push(&r->q, &r->out, &o->ref, o->data + off, n), 0);
    model_add(r, o->data + off, n);
}

static size_t pending(const struct rcv *r) { return buffer_readable(&r->out) + outq_shared(r->q); }

/* One write of at most limit bytes: copies what outq_iov lists into got (as
 * the socket would take it) and consumes it. Returns the bytes written. */
static size_t write_some(struct rcv *r, size_t limit, uint8_t *got, size_t *ngot)
{
    struct iovec iov[OUTQ_IOV_MAX];
    int n = outq_iov(r->q, &r->out, iov, OUTQ_IOV_MAX);
    size_t w = 0;
    for (int i = 0; i < n && w < limit; i++) {
        size_t take = iov[i].iov_len < limit - w ? iov[i].iov_len : limit - w;
        CHECK(take > 0);
        memcpy(got + *ngot + w, iov[i].iov_base, take);
        w += take;
    }
    outq_consume(&r->q, &r->out, w);
    *ngot += w;
    return w;
}

/* Drains r in writes of the sizes in sizes[] (cycled) and checks the bytes
 * against the model; the queue is freed at the end. */
static void drain_check(struct rcv *r, const size_t *sizes, size_t nsizes)
{
    uint8_t *got = malloc(r->nwant + 1);
    CHECK(got != NULL);
    size_t ngot = 0;
    for (size_t i = 0; pending(r) > 0; i++) {
        size_t before = pending(r);
        size_t w = write_some(r, sizes[i % nsizes], got, &ngot);
        CHECK(w > 0);
        CHECK_EQ(pending(r), before - w);
        CHECK(ngot <= r->nwant);
    }
    CHECK_EQ(ngot, r->nwant);
    CHECK(memcmp(got, r->want, ngot) == 0);
    CHECK(r->q == NULL);
    CHECK_EQ(buffer_readable(&r->out), 0);
    free(got);
    r->nwant = 0;
}

static void rcv_free(struct rcv *r)
{
    outq_free(&r->q);
    buffer_free(&r->out);
    free(r->want);
    memset(r, 0, sizeof *r);
}

TEST(many_receivers_share_one_copy)
{
    enum { N = 100 };
    static struct owner o;
    owner_init(&o, 1);
    static struct rcv r[N];
    for (int i = 0; i < N; i++) {
        memset(&r[i], 0, sizeof r[i]);
        piece(&r[i], &o, 0, 4096);
    }
    CHECK_EQ(refs(&o), N + 1);
    /* Every receiver's output points at the one payload: nothing copied. */
    for (int i = 0; i < N; i++) {
        struct iovec iov[OUTQ_IOV_MAX];
        CHECK_EQ(outq_iov(r[i].q, &r[i].out, iov, OUTQ_IOV_MAX), 1);
        CHECK(iov[0].iov_base == (void *)o.data);
        CHECK_EQ(iov[0].iov_len, 4096);
        CHECK(r[i].out.data == NULL);
    }
    static const size_t sizes[] = {1000, 3, 65536};
    for (int i = 0; i < N; i++) {
        drain_check(&r[i], sizes, 3);
        CHECK_EQ(refs(&o), N - i);
    }
    CHECK_EQ(o.released, 0);
    outq_ref_put(&o.ref); /* the creator's */
    CHECK_EQ(o.released, 1);
    for (int i = 0; i < N; i++)
        rcv_free(&r[i]);
}

TEST(own_bytes_and_pieces_keep_their_order)
{
    struct owner a, b;
    owner_init(&a, 2);
    owner_init(&b, 3);
    struct rcv r = {0};
    own(&r, "head", 4);
    piece(&r, &a, 10, 3000);
    own(&r, "mid1", 4);
    own(&r, "mid2", 4);
    piece(&r, &b, 0, 2048);
    piece(&r, &a, 100, 2500);
    own(&r, "tail", 4);
    struct iovec iov[OUTQ_IOV_MAX];
    int n = outq_iov(r.q, &r.out, iov, OUTQ_IOV_MAX);
    CHECK_EQ(n, 6); /* head, a, mid1+mid2, b, a, tail */
    CHECK_EQ(iov[0].iov_len, 4);
    CHECK(iov[1].iov_base == (void *)(a.data + 10));
    CHECK_EQ(iov[2].iov_len, 8);
    CHECK(iov[3].iov_base == (void *)b.data);
    CHECK_EQ(iov[5].iov_len, 4);
    static const size_t sizes[] = {1, 5, 7, 4096, 2, 3001};
    drain_check(&r, sizes, 6);
    CHECK_EQ(refs(&a), 1);
    CHECK_EQ(refs(&b), 1);
    rcv_free(&r);
}

TEST(partial_writes_in_a_random_mix)
{
    struct owner o[3];
    for (unsigned i = 0; i < 3; i++)
        owner_init(&o[i], 10 + i);
    uint32_t seed = 12345;
    for (int round = 0; round < 200; round++) {
        struct rcv r = {0};
        uint8_t ownbytes[300];
        for (int step = 0; step < 40; step++) {
            seed = seed * 1103515245u + 12345u;
            uint32_t x = seed >> 8;
            if (x % 3 == 0) {
                struct owner *w = &o[(x >> 4) % 3];
                size_t off = (x >> 6) % 4000, len = 1 + (x >> 12) % 4000;
                piece(&r, w, off, len);
            } else {
                size_t len = 1 + (x >> 4) % sizeof ownbytes;
                for (size_t i = 0; i < len; i++)
                    ownbytes[i] = (uint8_t)(x + i);
                own(&r, ownbytes, len);
            }
            /* Sometimes write a little in between, as a socket would. */
            if ((x >> 20) % 4 == 0 && pending(&r) > 0) {
                uint8_t *tmp = malloc(pending(&r));
                size_t ntmp = 0, limit = 1 + (x >> 10) % 5000;
                size_t w = write_some(&r, limit, tmp, &ntmp);
                CHECK(memcmp(tmp, r.want, w) == 0);
                memmove(r.want, r.want + w, r.nwant - w);
                r.nwant -= w;
                free(tmp);
            }
        }
        size_t sizes[] = {1 + seed % 97, 1 + seed % 4099, 65536};
        drain_check(&r, sizes, 3);
        rcv_free(&r);
        for (unsigned i = 0; i < 3; i++)
            CHECK_EQ(refs(&o[i]), 1);
    }
}

TEST(a_slow_receiver_keeps_the_payload)
{
    struct owner o;
    owner_init(&o, 4);
    struct rcv fast = {0}, slow = {0};
    for (int i = 0; i < 5; i++) {
        piece(&fast, &o, (size_t)i * 1000, 3000);
        piece(&slow, &o, (size_t)i * 1000, 3000);
    }
    CHECK_EQ(refs(&o), 11);
    static const size_t sizes[] = {65536};
    drain_check(&fast, sizes, 1);
    outq_ref_put(&o.ref); /* the creator is done with it */
    CHECK_EQ(refs(&o), 5);
    CHECK_EQ(o.released, 0);
    /* The slow one sends a little at a time; the last byte releases. */
    static const size_t slow_sizes[] = {700};
    drain_check(&slow, slow_sizes, 1);
    CHECK_EQ(refs(&o), 0);
    CHECK_EQ(o.released, 1);
    rcv_free(&fast);
    rcv_free(&slow);
}

TEST(a_receiver_closing_mid_queue_gives_its_references_back)
{
    struct owner o;
    owner_init(&o, 5);
    struct rcv r = {0};
    own(&r, "x", 1);
    piece(&r, &o, 0, 5000);
    own(&r, "y", 1);
    piece(&r, &o, 5000, 3000);
    uint8_t got[16];
    size_t ngot = 0;
    CHECK_EQ(write_some(&r, 10, got, &ngot), 10); /* into the first piece */
    CHECK_EQ(refs(&o), 3);
    outq_free(&r.q);
    CHECK(r.q == NULL);
    CHECK_EQ(refs(&o), 1);
    CHECK_EQ(o.released, 0);
    outq_ref_put(&o.ref);
    CHECK_EQ(o.released, 1);
    rcv_free(&r);
}

TEST(more_pieces_than_one_write_takes)
{
    struct owner o;
    owner_init(&o, 6);
    struct rcv r = {0};
    for (int i = 0; i < 3 * OUTQ_IOV_MAX; i++) {
        piece(&r, &o, (size_t)i, 2048);
        own(&r, "z", 1);
    }
    struct iovec iov[OUTQ_IOV_MAX];
    CHECK_EQ(outq_iov(r.q, &r.out, iov, OUTQ_IOV_MAX), OUTQ_IOV_MAX);
    static const size_t sizes[] = {1 << 20};
    drain_check(&r, sizes, 1);
    CHECK_EQ(refs(&o), 1);
    rcv_free(&r);
}

TEST(no_queue_means_plain_output)
{
    struct rcv r = {0};
    own(&r, "plain", 5);
    struct iovec iov[OUTQ_IOV_MAX];
    CHECK_EQ(outq_iov(NULL, &r.out, iov, OUTQ_IOV_MAX), 1);
    CHECK_EQ(iov[0].iov_len, 5);
    CHECK_EQ(outq_shared(NULL), 0);
    static const size_t sizes[] = {2};
    drain_check(&r, sizes, 1);
    rcv_free(&r);
}

/* References dropped from many threads at once release exactly once. */
static struct owner shared_owner;

static void *put_many(void *arg)
{
    for (int i = 0; i < 10000; i++)
        outq_ref_put(&shared_owner.ref);
    (void)arg;
    return NULL;
}

TEST(references_dropped_on_many_threads_release_once)
{
    owner_init(&shared_owner, 7);
    for (int i = 0; i < 4 * 10000 - 1; i++)
        outq_ref_get(&shared_owner.ref);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        CHECK_EQ(pthread_create(&t[i], NULL, put_many, NULL), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CHECK_EQ(refs(&shared_owner), 0);
    CHECK_EQ(shared_owner.released, 1);
}

int main(int argc, char **argv) { return test_main(argc, argv); }
