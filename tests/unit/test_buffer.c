/* test_buffer: the growable byte buffer: no memory until the first write,
 * append/peek/consume, rewinding when emptied, reserve (compact or double),
 * large contents, the prependable room, shrink, free, and a randomized run
 * against a plain reference array. */
#include "buffer.h"
#include "test.h"

#include <errno.h>

/* Deterministic byte pattern: byte i of stream `seed`. */
static uint8_t pat(size_t i, unsigned seed)
{
    return (uint8_t)((i * 131u + seed * 7u + (i >> 8) * 13u) ^ (i >> 16));
}

static void fill(uint8_t *p, size_t n, size_t start, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = pat(start + i, seed);
}

/* The buffer's invariants, whatever its state. */
static void check_invariants(const struct buffer *b)
{
    CHECK(b->rpos <= b->wpos);
    CHECK(b->wpos <= b->cap);
    if (b->data == NULL) {
        CHECK_EQ(b->cap, 0);
        CHECK_EQ(b->rpos, 0);
        CHECK_EQ(b->wpos, 0);
    }
    CHECK_EQ(buffer_readable(b), b->wpos - b->rpos);
    CHECK_EQ(buffer_writable(b), b->cap - b->wpos);
}

/* Appends n pattern bytes numbered from start. */
static void append_pat(struct buffer *b, size_t n, size_t start, unsigned seed)
{
    uint8_t *tmp = malloc(n ? n : 1);
    CHECK(tmp != NULL);
    fill(tmp, n, start, seed);
    CHECK_EQ(buffer_append(b, tmp, n), 0);
    free(tmp);
}

/* The readable bytes are pattern bytes start..start+n-1. */
static void check_pat(const struct buffer *b, size_t n, size_t start, unsigned seed)
{
    CHECK_EQ(buffer_readable(b), n);
    const uint8_t *p = buffer_peek(b);
    for (size_t i = 0; i < n; i++)
        if (p[i] != pat(start + i, seed))
            TEST_FAIL("byte %zu: got 0x%02x, want 0x%02x", i, p[i], pat(start + i, seed));
}

TEST(new_buffer_holds_no_memory)
{
    struct buffer b = BUFFER_INIT;
    CHECK(b.data == NULL);
    CHECK_EQ(b.cap, 0);
    CHECK_EQ(buffer_readable(&b), 0);
    CHECK_EQ(buffer_writable(&b), 0);
    /* Nothing to consume or append does not allocate either. */
    buffer_consume(&b, 0);
    CHECK(b.data == NULL);
    CHECK_EQ(b.rpos, 0);
    CHECK_EQ(b.wpos, 0);
    CHECK_EQ(buffer_append(&b, "x", 0), 0);
    CHECK(b.data == NULL);
    CHECK_EQ(b.cap, 0);
    CHECK_EQ(buffer_shrink(&b, 0), 0);
    buffer_free(&b);
    CHECK(b.data == NULL);
    check_invariants(&b);
}

TEST(append_peek_consume)
{
    struct buffer b = BUFFER_INIT;
    CHECK_EQ(buffer_append(&b, "hello", 5), 0);
    CHECK(b.data != NULL);
    check_invariants(&b);
    CHECK_EQ(b.rpos, BUFFER_PREPEND); /* the prependable room is kept in front */
    CHECK_EQ(buffer_readable(&b), 5);
    CHECK_MEM(buffer_peek(&b), "hello", 5);
    CHECK(buffer_tail(&b) == buffer_peek(&b) + 5);

    CHECK_EQ(buffer_append(&b, ", world", 7), 0);
    CHECK_EQ(buffer_readable(&b), 12);
    CHECK_MEM(buffer_peek(&b), "hello, world", 12);

    buffer_consume(&b, 7);
    CHECK_EQ(buffer_readable(&b), 5);
    CHECK_MEM(buffer_peek(&b), "world", 5);
    check_invariants(&b);

    CHECK_EQ(buffer_append(&b, "!", 1), 0);
    CHECK_MEM(buffer_peek(&b), "world!", 6);

    /* reserve + commit writes at the tail. */
    CHECK_EQ(buffer_reserve(&b, 3), 0);
    CHECK(buffer_writable(&b) >= 3);
    memcpy(buffer_tail(&b), "abc", 3);
    buffer_commit(&b, 3);
    CHECK_EQ(buffer_readable(&b), 9);
    CHECK_MEM(buffer_peek(&b), "world!abc", 9);
    check_invariants(&b);
    buffer_free(&b);
}

TEST(consume_to_empty_rewinds)
{
    struct buffer b = BUFFER_INIT;
    append_pat(&b, 100, 0, 1);
    uint8_t *data = b.data;
    size_t cap = b.cap;
    size_t w0 = buffer_writable(&b);
    CHECK_EQ(w0, cap - BUFFER_PREPEND - 100);

    buffer_consume(&b, 40);
    CHECK_EQ(buffer_writable(&b), w0); /* partial consume does not rewind */
    check_pat(&b, 60, 40, 1);

    buffer_consume(&b, 60);
    CHECK_EQ(buffer_readable(&b), 0);
    CHECK(b.data == data);              /* memory kept */
    CHECK_EQ(b.cap, cap);
    CHECK_EQ(b.rpos, BUFFER_PREPEND);   /* rewound to the prepend mark */
    CHECK_EQ(b.wpos, BUFFER_PREPEND);
    CHECK_EQ(buffer_writable(&b), cap - BUFFER_PREPEND); /* writable grew back */
    CHECK(buffer_writable(&b) > w0);
    check_invariants(&b);

    /* The next write starts at the front and needs no new memory. */
    append_pat(&b, cap - BUFFER_PREPEND, 0, 2);
    CHECK(b.data == data);
    CHECK_EQ(b.cap, cap);
    check_pat(&b, cap - BUFFER_PREPEND, 0, 2);
    CHECK_EQ(buffer_writable(&b), 0);
    buffer_free(&b);
}

TEST(reserve_noop_when_room)
{
    struct buffer b = BUFFER_INIT;
    append_pat(&b, 200, 0, 3);
    buffer_consume(&b, 50);
    uint8_t *data = b.data;
    size_t cap = b.cap, rpos = b.rpos, wpos = b.wpos;
    CHECK_EQ(buffer_reserve(&b, buffer_writable(&b)), 0);
    CHECK_EQ(buffer_reserve(&b, 0), 0);
    CHECK(b.data == data);
    CHECK_EQ(b.cap, cap);
    CHECK_EQ(b.rpos, rpos);
    CHECK_EQ(b.wpos, wpos);
    check_pat(&b, 150, 50, 3);
    buffer_free(&b);
}

TEST(reserve_compacts_when_front_consumed)
{
    struct buffer b = BUFFER_INIT;
    append_pat(&b, 100, 0, 4);
    size_t cap = b.cap;
    /* Fill to the end of the allocation. */
    append_pat(&b, cap - BUFFER_PREPEND - 100, 100, 4);
    CHECK_EQ(b.cap, cap);
    CHECK_EQ(buffer_writable(&b), 0);
    size_t total = cap - BUFFER_PREPEND;

    size_t dropped = total / 2;
    buffer_consume(&b, dropped);
    size_t readable = total - dropped;
    CHECK_EQ(b.rpos, BUFFER_PREPEND + dropped);

    uint8_t *data = b.data;
    size_t want = dropped - 10; /* fits once the readable bytes move to the front */
    CHECK_EQ(buffer_reserve(&b, want), 0);
    CHECK(b.data == data);              /* compacted in place, no reallocation */
    CHECK_EQ(b.cap, cap);
    CHECK_EQ(b.rpos, BUFFER_PREPEND);
    CHECK_EQ(b.wpos, BUFFER_PREPEND + readable);
    CHECK(buffer_writable(&b) >= want);
    check_pat(&b, readable, dropped, 4);
    check_invariants(&b);

    /* Exactly all the consumed room: still compaction. */
    struct buffer c = BUFFER_INIT;
    append_pat(&c, 1, 0, 5);
    size_t ccap = c.cap;
    append_pat(&c, ccap - BUFFER_PREPEND - 1, 1, 5);
    buffer_consume(&c, 300);
    uint8_t *cdata = c.data;
    CHECK_EQ(buffer_reserve(&c, 300), 0);
    CHECK(c.data == cdata);
    CHECK_EQ(c.cap, ccap);
    CHECK_EQ(buffer_writable(&c), 300);
    check_pat(&c, ccap - BUFFER_PREPEND - 300, 300, 5);
    buffer_free(&c);
    buffer_free(&b);
}

TEST(reserve_grows_by_doubling)
{
    struct buffer b = BUFFER_INIT;
    append_pat(&b, 100, 0, 6);
    size_t cap = b.cap;
    CHECK(cap >= BUFFER_PREPEND + 100);
    append_pat(&b, cap - BUFFER_PREPEND - 100, 100, 6);
    size_t total = cap - BUFFER_PREPEND;
    buffer_consume(&b, 10);
    size_t readable = total - 10;

    /* 10 bytes free at the front is not enough for 11: grow, once. */
    CHECK_EQ(buffer_reserve(&b, 11), 0);
    CHECK_EQ(b.cap, cap * 2);
    CHECK_EQ(b.rpos, BUFFER_PREPEND);
    check_pat(&b, readable, 10, 6);
    CHECK(buffer_writable(&b) >= 11);
    check_invariants(&b);

    /* A big reserve doubles as many times as needed, and no more. */
    size_t cap2 = b.cap;
    size_t n = cap2 * 5;
    size_t need = BUFFER_PREPEND + readable + n;
    CHECK_EQ(buffer_reserve(&b, n), 0);
    CHECK(buffer_writable(&b) >= n);
    CHECK(b.cap >= need);
    CHECK(b.cap / 2 < need);
    size_t k = b.cap / cap2;
    CHECK_EQ(k * cap2, b.cap);
    CHECK_EQ(k & (k - 1), 0); /* a power of two times the old capacity */
    check_pat(&b, readable, 10, 6);
    buffer_free(&b);
}

TEST(reserve_grows_when_compaction_not_enough)
{
    struct buffer b = BUFFER_INIT;
    append_pat(&b, 500, 0, 7);
    size_t cap = b.cap;
    buffer_consume(&b, 200); /* rpos well past the prepend mark */
    size_t readable = 300;
    size_t room = cap - BUFFER_PREPEND - readable;
    CHECK_EQ(buffer_reserve(&b, room + 1), 0);
    CHECK(b.cap > cap);
    CHECK_EQ(b.cap % cap, 0);
    CHECK_EQ(b.rpos, BUFFER_PREPEND);
    CHECK(buffer_writable(&b) >= room + 1);
    check_pat(&b, readable, 200, 7);
    buffer_free(&b);
}

TEST(reserve_huge_fails_cleanly)
{
    struct buffer b = BUFFER_INIT;
    append_pat(&b, 50, 0, 8);
    uint8_t *data = b.data;
    size_t cap = b.cap;
    CHECK_EQ(buffer_reserve(&b, SIZE_MAX), -ENOMEM);
    CHECK_EQ(buffer_reserve(&b, SIZE_MAX / 2), -ENOMEM);
    CHECK(b.data == data);
    CHECK_EQ(b.cap, cap);
    check_pat(&b, 50, 0, 8);
    buffer_free(&b);
}

TEST(large_append_keeps_content)
{
    const size_t MiB = 1024 * 1024;
    struct buffer b = BUFFER_INIT;
    append_pat(&b, MiB, 0, 9);
    check_pat(&b, MiB, 0, 9);
    CHECK(b.cap >= MiB + BUFFER_PREPEND);
    check_invariants(&b);

    /* Another MiB in odd-sized pieces, then consume part of it. */
    size_t off = MiB;
    while (off < 2 * MiB) {
        size_t n = 4093;
        if (n > 2 * MiB - off)
            n = 2 * MiB - off;
        append_pat(&b, n, off, 9);
        off += n;
    }
    check_pat(&b, 2 * MiB, 0, 9);
    buffer_consume(&b, MiB + 17);
    check_pat(&b, MiB - 17, MiB + 17, 9);
    /* And one more MiB: it fits by compaction or growth; content stays. */
    append_pat(&b, MiB, 2 * MiB, 9);
    check_pat(&b, 2 * MiB - 17, MiB + 17, 9);
    buffer_free(&b);
}

TEST(prepend_after_append)
{
    struct buffer b = BUFFER_INIT;
    CHECK_EQ(buffer_append(&b, "payload", 7), 0);
    uint8_t hdr[BUFFER_PREPEND];
    for (size_t i = 0; i < sizeof hdr; i++)
        hdr[i] = (uint8_t)(0xA0 + i);
    CHECK_EQ(buffer_prepend(&b, hdr, sizeof hdr), 0);
    CHECK_EQ(buffer_readable(&b), 16 + 7);
    CHECK_MEM(buffer_peek(&b), hdr, 16);
    CHECK_MEM(buffer_peek(&b) + 16, "payload", 7);
    CHECK_EQ(b.rpos, 0);

    /* No room left: refused, buffer unchanged. */
    uint8_t *data = b.data;
    CHECK_EQ(buffer_prepend(&b, "x", 1), -ENOSPC);
    CHECK(b.data == data);
    CHECK_EQ(buffer_readable(&b), 16 + 7);
    CHECK_MEM(buffer_peek(&b), hdr, 16);
    CHECK_MEM(buffer_peek(&b) + 16, "payload", 7);
    buffer_free(&b);

    /* In pieces: 4 then 12 fit, then 1 does not. */
    struct buffer c = BUFFER_INIT;
    CHECK_EQ(buffer_append(&c, "P", 1), 0);
    CHECK_EQ(buffer_prepend(&c, "abcd", 4), 0);
    CHECK_EQ(buffer_prepend(&c, "0123456789AB", 12), 0);
    CHECK_EQ(buffer_prepend(&c, "z", 1), -ENOSPC);
    CHECK_EQ(buffer_readable(&c), 17);
    CHECK_MEM(buffer_peek(&c), "0123456789ABabcdP", 17);

    /* 17 bytes at once into a 16-byte room: refused, unchanged. */
    struct buffer d = BUFFER_INIT;
    CHECK_EQ(buffer_append(&d, "Q", 1), 0);
    uint8_t big[17] = {0};
    CHECK_EQ(buffer_prepend(&d, big, sizeof big), -ENOSPC);
    CHECK_EQ(buffer_readable(&d), 1);
    CHECK_MEM(buffer_peek(&d), "Q", 1);
    buffer_free(&d);
    buffer_free(&c);
}

TEST(prepend_without_room_fails)
{
    struct buffer b = BUFFER_INIT;
    CHECK_EQ(buffer_prepend(&b, "x", 1), -ENOSPC);
    CHECK_EQ(buffer_prepend(&b, "0123456789abcdef", 16), -ENOSPC);
    CHECK(b.data == NULL);
    CHECK_EQ(buffer_readable(&b), 0);

    /* Freed again: no room either. */
    CHECK_EQ(buffer_append(&b, "y", 1), 0);
    buffer_free(&b);
    CHECK_EQ(buffer_prepend(&b, "x", 1), -ENOSPC);
    CHECK(b.data == NULL);
}

TEST(prepend_after_rewind_and_compaction)
{
    struct buffer b = BUFFER_INIT;
    append_pat(&b, 64, 0, 10);
    buffer_consume(&b, 64); /* rewound: the full room is back */
    CHECK_EQ(buffer_prepend(&b, "0123456789abcdef", 16), 0);
    CHECK_EQ(buffer_readable(&b), 16);
    CHECK_MEM(buffer_peek(&b), "0123456789abcdef", 16);
    CHECK_EQ(buffer_prepend(&b, "x", 1), -ENOSPC);
    buffer_free(&b);

    /* After compaction the room is exactly the prepend mark again. */
    struct buffer c = BUFFER_INIT;
    append_pat(&c, 10, 0, 11);
    size_t cap = c.cap;
    append_pat(&c, cap - BUFFER_PREPEND - 10, 10, 11);
    buffer_consume(&c, 100);
    CHECK_EQ(buffer_reserve(&c, 50), 0);
    CHECK_EQ(c.cap, cap);
    CHECK_EQ(buffer_prepend(&c, "HEADER-16-BYTES!", 16), 0);
    CHECK_MEM(buffer_peek(&c), "HEADER-16-BYTES!", 16);
    CHECK_EQ(buffer_prepend(&c, "x", 1), -ENOSPC);
    buffer_consume(&c, 16);
    check_pat(&c, cap - BUFFER_PREPEND - 100, 100, 11);
    buffer_free(&c);
}

TEST(shrink_frees_only_empty_and_large)
{
    struct buffer b = BUFFER_INIT;
    CHECK_EQ(buffer_shrink(&b, 0), 0); /* nothing held */

    append_pat(&b, 100, 0, 12);
    size_t cap = b.cap;
    uint8_t *data = b.data;
    /* Not empty: kept, whatever keep is. */
    CHECK_EQ(buffer_shrink(&b, 0), 0);
    CHECK(b.data == data);
    check_pat(&b, 100, 0, 12);

    buffer_consume(&b, 100);
    /* Empty but not larger than keep: kept. */
    CHECK_EQ(buffer_shrink(&b, cap), 0);
    CHECK(b.data == data);
    CHECK_EQ(buffer_shrink(&b, cap + 1), 0);
    CHECK(b.data == data);
    CHECK_EQ(b.cap, cap);

    /* Empty and larger than keep: freed and reset. */
    CHECK_EQ(buffer_shrink(&b, cap - 1), 1);
    CHECK(b.data == NULL);
    CHECK_EQ(b.cap, 0);
    CHECK_EQ(b.rpos, 0);
    CHECK_EQ(b.wpos, 0);
    CHECK_EQ(buffer_shrink(&b, 0), 0);

    /* Usable again. */
    CHECK_EQ(buffer_append(&b, "again", 5), 0);
    CHECK_MEM(buffer_peek(&b), "again", 5);
    buffer_consume(&b, 5);
    CHECK_EQ(buffer_shrink(&b, 0), 1);
    CHECK(b.data == NULL);
}

TEST(free_resets)
{
    struct buffer b = BUFFER_INIT;
    append_pat(&b, 5000, 0, 13);
    buffer_consume(&b, 123);
    buffer_free(&b);
    CHECK(b.data == NULL);
    CHECK_EQ(b.cap, 0);
    CHECK_EQ(b.rpos, 0);
    CHECK_EQ(b.wpos, 0);
    CHECK_EQ(buffer_readable(&b), 0);
    CHECK_EQ(buffer_writable(&b), 0);
    buffer_free(&b); /* twice is fine */
    CHECK(b.data == NULL);
    append_pat(&b, 10, 0, 14);
    check_pat(&b, 10, 0, 14);
    buffer_free(&b);
}

/* xorshift64*: a fixed-seed generator, so a failure reproduces. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static size_t rng_below(size_t n)
{
    return n ? (size_t)(rng() % n) : 0;
}

TEST(randomized_against_reference)
{
    enum { ITER = 20000, LIMIT = 1 << 20 };
    struct buffer b = BUFFER_INIT;
    uint8_t *ref = malloc(LIMIT + 70000 + 16);
    uint8_t *tmp = malloc(70000);
    CHECK(ref != NULL && tmp != NULL);
    size_t len = 0; /* ref[0..len) mirrors the readable bytes */
    size_t appended = 0, consumed = 0, prepends_ok = 0, prepends_refused = 0;

    for (int it = 0; it < ITER; it++) {
        unsigned op = (unsigned)rng_below(100);
        if (op < 40) {
            /* append: mostly small, sometimes large */
            size_t n = rng_below(8) == 0 ? rng_below(70000) : rng_below(600);
            if (len + n > LIMIT)
                n = 0;
            for (size_t i = 0; i < n; i++)
                tmp[i] = (uint8_t)rng();
            CHECK_EQ(buffer_append(&b, tmp, n), 0);
            memcpy(ref + len, tmp, n);
            len += n;
            appended += n;
        } else if (op < 55) {
            /* reserve + write at the tail + commit */
            size_t n = rng_below(3000);
            if (len + n > LIMIT)
                n = 0;
            uint8_t *old = b.data;
            size_t old_cap = b.cap, old_writable = buffer_writable(&b);
            CHECK_EQ(buffer_reserve(&b, n), 0);
            CHECK(buffer_writable(&b) >= n);
            if (old_writable >= n) {
                CHECK(b.data == old);
                CHECK_EQ(b.cap, old_cap);
            }
            size_t w = n ? rng_below(n + 1) : 0;
            for (size_t i = 0; i < w; i++)
                ref[len + i] = buffer_tail(&b)[i] = (uint8_t)rng();
            buffer_commit(&b, w);
            len += w;
            appended += w;
        } else if (op < 90) {
            /* consume: sometimes everything */
            size_t n = rng_below(4) == 0 ? len : rng_below(len + 1);
            buffer_consume(&b, n);
            memmove(ref, ref + n, len - n);
            len -= n;
            consumed += n;
            if (len == 0 && b.data)
                CHECK_EQ(b.rpos, BUFFER_PREPEND);
        } else if (op < 96) {
            /* prepend up to the room in front (rpos bytes) */
            size_t n = 1 + rng_below(BUFFER_PREPEND + 4);
            for (size_t i = 0; i < n; i++)
                tmp[i] = (uint8_t)rng();
            int want_ok = b.data != NULL && b.rpos >= n;
            int rc = buffer_prepend(&b, tmp, n);
            if (want_ok) {
                CHECK_EQ(rc, 0);
                memmove(ref + n, ref, len);
                memcpy(ref, tmp, n);
                len += n;
                prepends_ok++;
            } else {
                CHECK_EQ(rc, -ENOSPC);
                prepends_refused++;
            }
        } else if (op < 98) {
            /* shrink */
            size_t keep = rng_below(2) ? 0 : 4096;
            int want = len == 0 && b.cap > keep;
            CHECK_EQ(buffer_shrink(&b, keep), want);
            if (want)
                CHECK(b.data == NULL);
        } else {
            /* drain completely, sometimes free */
            buffer_consume(&b, len);
            consumed += len;
            len = 0;
            if (rng_below(2))
                buffer_free(&b);
        }
        /* Keep the mirror small enough to compare every step. */
        if (len > 200000) {
            size_t n = len - 1000;
            buffer_consume(&b, n);
            memmove(ref, ref + n, len - n);
            len -= n;
            consumed += n;
        }
        check_invariants(&b);
        CHECK_EQ(buffer_readable(&b), len);
        if (len && memcmp(buffer_peek(&b), ref, len) != 0)
            TEST_FAIL("iteration %d (op %u): content differs from the reference", it, op);
    }
    /* The run exercised every path. */
    CHECK(appended > 1000000);
    CHECK(consumed > 1000000);
    CHECK(prepends_ok > 10);
    CHECK(prepends_refused > 10);
    buffer_free(&b);
    free(ref);
    free(tmp);
}

/* ---- the pool of emptied buffers ---- */

/* A buffer holding cap bytes of memory and nothing readable. */
static struct buffer grown(size_t cap)
{
    struct buffer b = BUFFER_INIT;
    CHECK_EQ(buffer_reserve(&b, cap - BUFFER_PREPEND), 0);
    CHECK_EQ(b.cap, cap);
    return b;
}

TEST(pool_empty_gives_nothing)
{
    struct buffer_pool p;
    buffer_pool_init(&p, 1 << 20, 1 << 20);
    struct buffer b = BUFFER_INIT;
    CHECK_EQ(buffer_pool_get(&p, &b), 0);
    CHECK(b.data == NULL);
    CHECK_EQ(buffer_pool_get(NULL, &b), 0);
    buffer_pool_free(&p);
}

TEST(pool_gives_the_largest_kept_buffer_first)
{
    struct buffer_pool p;
    buffer_pool_init(&p, 1 << 20, 1 << 20);
    struct buffer a = grown(4096), b = grown(65536), c = grown(1024);
    uint8_t *pa = a.data, *pb = b.data, *pc = c.data;
    CHECK_EQ(buffer_pool_put(&p, &a), 1);
    CHECK_EQ(buffer_pool_put(&p, &b), 1);
    CHECK_EQ(buffer_pool_put(&p, &c), 1);
    CHECK(a.data == NULL && a.cap == 0);
    CHECK_EQ(buffer_pool_count(&p), 3);
    CHECK_EQ(p.bytes, 4096 + 65536 + 1024);
    struct buffer x = BUFFER_INIT, y = BUFFER_INIT, z = BUFFER_INIT;
    CHECK_EQ(buffer_pool_get(&p, &x), 1);
    CHECK(x.data == pb);
    CHECK_EQ(x.cap, 65536);
    CHECK_EQ(buffer_readable(&x), 0);
    check_invariants(&x);
    /* Usable as is: the prepend room is there and no regrowth is needed. */
    append_pat(&x, 60000, 0, 3);
    CHECK(x.data == pb);
    CHECK_EQ(buffer_prepend(&x, "abcd", 4), 0);
    buffer_consume(&x, 4);
    check_pat(&x, 60000, 0, 3);
    CHECK_EQ(buffer_pool_get(&p, &y), 1);
    CHECK(y.data == pa);
    CHECK_EQ(buffer_pool_get(&p, &z), 1);
    CHECK(z.data == pc);
    CHECK_EQ(buffer_pool_count(&p), 0);
    CHECK_EQ(p.bytes, 0);
    buffer_free(&x);
    buffer_free(&y);
    buffer_free(&z);
    buffer_pool_free(&p);
}

TEST(pool_leaves_a_buffer_with_readable_bytes_alone)
{
    struct buffer_pool p;
    buffer_pool_init(&p, 1 << 20, 1 << 20);
    struct buffer b = BUFFER_INIT;
    append_pat(&b, 100, 0, 1);
    CHECK_EQ(buffer_pool_put(&p, &b), 0);
    check_pat(&b, 100, 0, 1);
    CHECK_EQ(buffer_pool_count(&p), 0);
    struct buffer none = BUFFER_INIT;
    CHECK_EQ(buffer_pool_put(&p, &none), 0);  /* no memory: nothing to take */
    /* A get never replaces memory a buffer already has. */
    struct buffer e = grown(2048);
    CHECK_EQ(buffer_pool_put(&p, &e), 1);
    CHECK_EQ(buffer_pool_get(&p, &b), 0);
    check_pat(&b, 100, 0, 1);
    CHECK_EQ(buffer_pool_count(&p), 1);
    buffer_free(&b);
    buffer_pool_free(&p);
}

TEST(pool_keeps_within_its_bounds_and_prefers_large_buffers)
{
    struct buffer_pool p;
    buffer_pool_init(&p, 16384, 8192);
    struct buffer big = grown(16384);          /* over max_item: freed */
    CHECK_EQ(buffer_pool_put(&p, &big), 1);
    CHECK(big.data == NULL);
    CHECK_EQ(buffer_pool_count(&p), 0);
    struct buffer a = grown(4096), b = grown(4096), c = grown(4096), d = grown(2048);
    CHECK_EQ(buffer_pool_put(&p, &a), 1);
    CHECK_EQ(buffer_pool_put(&p, &b), 1);
    CHECK_EQ(buffer_pool_put(&p, &c), 1);
    CHECK_EQ(buffer_pool_put(&p, &d), 1);
    CHECK_EQ(buffer_pool_count(&p), 4);
    CHECK_EQ(p.bytes, 14336);
    /* 4096 more fit once the smaller 2048 goes. */
    struct buffer e = grown(4096);
    CHECK_EQ(buffer_pool_put(&p, &e), 1);
    CHECK(e.data == NULL);
    CHECK_EQ(buffer_pool_count(&p), 4);
    CHECK_EQ(p.bytes, 16384);
    /* Another 4096: nothing smaller is left to make room, so it is freed. */
    struct buffer g = grown(4096);
    CHECK_EQ(buffer_pool_put(&p, &g), 1);
    CHECK(g.data == NULL);
    CHECK_EQ(buffer_pool_count(&p), 4);
    CHECK_EQ(p.bytes, 16384);
    /* 8192 fits once two 4096 go. */
    struct buffer f = grown(8192);
    uint8_t *pf = f.data;
    CHECK_EQ(buffer_pool_put(&p, &f), 1);
    CHECK_EQ(p.bytes, 16384);
    CHECK_EQ(buffer_pool_count(&p), 3);
    struct buffer x = BUFFER_INIT;
    CHECK_EQ(buffer_pool_get(&p, &x), 1);
    CHECK(x.data == pf);
    buffer_free(&x);
    buffer_pool_free(&p);                      /* LeakSanitizer: everything freed */
    CHECK_EQ(buffer_pool_count(&p), 0);
    CHECK_EQ(p.bytes, 0);
}

/* New bounds apply to what is put from then on; max_item stops at
 * BUFFER_POOL_ITEM_MAX. */
TEST(pool_set_bounds_applies_to_later_puts)
{
    struct buffer_pool p;
    buffer_pool_init(&p, 16384, 8192);
    struct buffer a = grown(16384);
    CHECK_EQ(buffer_pool_put(&p, &a), 1);
    CHECK_EQ(buffer_pool_count(&p), 0);        /* over max_item: freed */
    buffer_pool_set_bounds(&p, 65536, 16384);
    struct buffer b = grown(16384);
    CHECK_EQ(buffer_pool_put(&p, &b), 1);
    CHECK_EQ(buffer_pool_count(&p), 1);
    CHECK_EQ(p.bytes, 16384);
    buffer_pool_set_bounds(&p, SIZE_MAX, SIZE_MAX);
    CHECK(p.max_item == BUFFER_POOL_ITEM_MAX);
    CHECK(p.max_bytes == SIZE_MAX);
    buffer_pool_free(&p);
    CHECK_EQ(p.bytes, 0);
}

/* Smaller bounds free what they no longer allow at once, and the pool stays
 * within them after (no wrap-around of max_bytes - bytes). */
TEST(pool_smaller_bounds_free_the_excess)
{
    struct buffer_pool p;
    buffer_pool_init(&p, 1 << 20, 1 << 18);
    for (int i = 0; i < 3; i++) {
        struct buffer b = grown(1 << 18);
        CHECK_EQ(buffer_pool_put(&p, &b), 1);
    }
    struct buffer s = grown(4096);
    CHECK_EQ(buffer_pool_put(&p, &s), 1);
    CHECK_EQ(buffer_pool_count(&p), 4);
    buffer_pool_set_bounds(&p, 1 << 16, 1 << 15);    /* the 256 KiB ones are too big */
    CHECK_EQ(buffer_pool_count(&p), 1);
    CHECK_EQ(p.bytes, 4096);
    for (int i = 0; i < 40; i++) {
        struct buffer b = grown(1 << 14);
        CHECK_EQ(buffer_pool_put(&p, &b), 1);
        CHECK(p.bytes <= p.max_bytes);
    }
    buffer_pool_set_bounds(&p, 8192, 1 << 15);       /* too many bytes: largest go first */
    CHECK(p.bytes <= 8192);
    buffer_pool_free(&p);
}

TEST(pool_null_frees_what_it_is_given)
{
    struct buffer b = grown(4096);
    CHECK_EQ(buffer_pool_put(NULL, &b), 1);
    CHECK(b.data == NULL);
}

/* The churn the pool is for: many writers that each fill and drain a buffer
 * in turn, among small buffers that come and go (replies), reuse the same
 * memory: after the first round no writer grows a buffer again. */
TEST(pool_serves_repeated_fill_and_drain_without_new_memory)
{
    struct buffer_pool p;
    buffer_pool_init(&p, 8u << 20, 4u << 20);
    enum { WRITERS = 100 };
    struct buffer w[WRITERS];
    for (int i = 0; i < WRITERS; i++)
        w[i] = (struct buffer)BUFFER_INIT;
    uint8_t *seen[WRITERS] = {0};
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < WRITERS; i++) {
            struct buffer small = grown(1024);  /* a reply's buffer, given back */
            buffer_pool_put(&p, &small);
            buffer_pool_get(&p, &w[i]);
            uint8_t *before = w[i].data;
            append_pat(&w[i], 20000, (size_t)round, (unsigned)i);
            if (round > 0 && w[i].data != before)
                TEST_FAIL("round %d, writer %d: the buffer from the pool had to grow", round, i);
            if (round == 0)
                seen[i] = w[i].data;
        }
        for (int i = 0; i < WRITERS; i++) {
            check_pat(&w[i], 20000, (size_t)round, (unsigned)i);
            buffer_consume(&w[i], 20000);
            CHECK_EQ(buffer_pool_put(&p, &w[i]), 1);
        }
        CHECK(p.bytes <= (8u << 20));
    }
    /* The writers' memory is still the first round's. */
    for (int i = 0; i < WRITERS; i++) {
        struct buffer b = BUFFER_INIT;
        CHECK_EQ(buffer_pool_get(&p, &b), 1);
        int found = 0;
        for (int k = 0; k < WRITERS; k++)
            found |= b.data == seen[k];
        CHECK(found);
        buffer_free(&b);
    }
    buffer_pool_free(&p);
}

TEST(pool_trim_frees_what_stayed_unused)
{
    struct buffer_pool p;
    buffer_pool_init(&p, 1 << 20, 1 << 20);
    struct buffer a = grown(4096), b = grown(8192), c = grown(16384);
    buffer_pool_put(&p, &a);
    buffer_pool_put(&p, &b);
    buffer_pool_put(&p, &c);
    CHECK_EQ(buffer_pool_trim(&p), 0);         /* nothing seen yet: a first interval */
    CHECK_EQ(p.bytes, 28672);
    struct buffer x = BUFFER_INIT;
    CHECK_EQ(buffer_pool_get(&p, &x), 1);      /* the 16384 is used... */
    CHECK_EQ(x.cap, 16384);
    CHECK_EQ(buffer_pool_put(&p, &x), 1);      /* ... and comes back */
    CHECK_EQ(buffer_pool_trim(&p), 12288);     /* the two that stayed unused go */
    CHECK_EQ(buffer_pool_count(&p), 1);
    CHECK_EQ(p.bytes, 16384);
    CHECK_EQ(buffer_pool_trim(&p), 16384);     /* unused for a whole interval: gone too */
    CHECK_EQ(buffer_pool_count(&p), 0);
    CHECK_EQ(buffer_pool_trim(&p), 0);
    buffer_pool_free(&p);
}

TEST(pool_get_fit_takes_the_smallest_that_fits)
{
    struct buffer_pool p;
    buffer_pool_init(&p, 1 << 20, 1 << 20);
    struct buffer a = grown(1024), b = grown(8192), c = grown(65536);
    uint8_t *pb = b.data;
    buffer_pool_put(&p, &a);
    buffer_pool_put(&p, &b);
    buffer_pool_put(&p, &c);
    struct buffer x = BUFFER_INIT;
    CHECK_EQ(buffer_pool_get_fit(&p, &x, 5000), 0);
    CHECK(x.data == pb);
    CHECK(buffer_writable(&x) >= 5000);
    struct buffer y = BUFFER_INIT;              /* nothing kept fits: new memory */
    CHECK_EQ(buffer_pool_get_fit(&p, &y, 100000), 0);
    CHECK(buffer_writable(&y) >= 100000);
    CHECK_EQ(buffer_pool_count(&p), 2);
    struct buffer z = BUFFER_INIT;
    CHECK_EQ(buffer_pool_get_fit(NULL, &z, 10), 0);
    CHECK(buffer_writable(&z) >= 10);
    buffer_free(&x);
    buffer_free(&y);
    buffer_free(&z);
    buffer_pool_free(&p);
}

/* Big buffers have pages of their own; growing through the mapping size
 * keeps the bytes. */
TEST(large_buffers_keep_their_bytes_across_growth)
{
    struct buffer b = BUFFER_INIT;
    append_pat(&b, 40000, 0, 9);               /* malloc'd */
    append_pat(&b, 200000, 40000, 9);          /* now mapped */
    append_pat(&b, 1000000, 240000, 9);
    check_pat(&b, 1240000, 0, 9);
    buffer_consume(&b, 1240000);
    buffer_free(&b);
}

/* A writer that grows in bursts to the same size reuses the same memory:
 * each step up takes a kept bigger buffer and leaves its smaller one. */
TEST(pool_reserve_grows_into_kept_memory)
{
    struct buffer_pool p;
    buffer_pool_init(&p, 8u << 20, 4u << 20);
    struct buffer b = BUFFER_INIT;
    for (int round = 0; round < 3; round++) {
        size_t bytes_before = p.bytes;
        for (size_t i = 0; i < 100; i++) {
            uint8_t chunk[3000];
            fill(chunk, sizeof chunk, i * sizeof chunk, 5);
            CHECK_EQ(buffer_pool_append(&p, &b, chunk, sizeof chunk), 0);
        }
        check_pat(&b, 300000, 0, 5);
        if (round > 0)
            CHECK_EQ(p.bytes + b.cap, bytes_before); /* nothing new: only kept memory */
        buffer_consume(&b, 300000);
        CHECK_EQ(buffer_pool_put(&p, &b), 1);
    }
    /* Growth kept the smaller steps: 4 KiB .. 256 KiB, and the 512 KiB. */
    CHECK(buffer_pool_count(&p) >= 8);
    struct buffer none = BUFFER_INIT;            /* growing needs no pool */
    CHECK_EQ(buffer_pool_append(NULL, &none, "abc", 3), 0);
    CHECK_EQ(buffer_pool_reserve(NULL, &none, 100000), 0);
    CHECK_MEM(buffer_peek(&none), "abc", 3);
    buffer_free(&none);
    buffer_pool_free(&p);
}

TEST(buffer_class_names_power_of_two_sizes)
{
    CHECK_EQ(buffer_class(1024), 0);
    CHECK_EQ(buffer_class(2047), 0);
    CHECK_EQ(buffer_class(2048), 1);
    CHECK_EQ(buffer_class(4u << 20), 12);
    for (unsigned k = 0; k < 14; k++)
        CHECK_EQ(buffer_class(buffer_class_cap(k)), k);
}

int main(int argc, char **argv) { return test_main(argc, argv); }
