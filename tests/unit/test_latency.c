/* test_latency: the latency histogram's buckets. Each bucket is (lower,
 * upper]: a duration equal to a bucket's upper bound counts in that bucket,
 * one nanosecond more counts in the next. That is what the metrics page's
 * cumulative `le` lines rely on (Prometheus's `le` is inclusive). Also: the
 * bounds rise, the last bucket catches everything, and quantiles report the
 * upper bound of the bucket that holds the rank. */
#include "latency.h"
#include "test.h"

#include <stdint.h>

/* Buckets 1..3 can hold nothing (bucket 0 takes all of <= 1 us). */
static int bucket_used(unsigned b) { return b == 0 || b >= 4; }

TEST(upper_bound_is_inclusive)
{
    for (unsigned b = 0; b + 1 < LATENCY_BUCKETS; b++) {
        if (!bucket_used(b))
            continue;
        uint64_t up = latency_bucket_upper_ns(b);
        if (latency_bucket(up) != b)
            TEST_FAIL("bucket %u: its upper bound %" PRIu64 " ns lands in %u", b, up,
                      latency_bucket(up));
        unsigned next = latency_bucket(up + 1);
        if (next != b + (b == 0 ? 4u : 1u))
            TEST_FAIL("bucket %u: %" PRIu64 " ns lands in %u", b, up + 1, next);
    }
}

TEST(bounds_rise)
{
    uint64_t prev = 0;
    for (unsigned b = 0; b < LATENCY_BUCKETS; b++) {
        if (!bucket_used(b))
            continue;
        uint64_t up = latency_bucket_upper_ns(b);
        if (up <= prev)
            TEST_FAIL("bucket %u: bound %" PRIu64 " after %" PRIu64, b, up, prev);
        prev = up;
    }
    CHECK(latency_bucket_upper_ns(LATENCY_BUCKETS - 1) == UINT64_MAX);
}

TEST(edges)
{
    CHECK_EQ(latency_bucket(0), 0);
    CHECK_EQ(latency_bucket(1000), 0);
    CHECK_EQ(latency_bucket(1001), 4);
    CHECK_EQ(latency_bucket(1024), 4);
    CHECK_EQ(latency_bucket(1025), 5);
    CHECK_EQ(latency_bucket(UINT64_MAX), LATENCY_BUCKETS - 1);
    CHECK_EQ(latency_bucket(103079215104ull), LATENCY_BUCKETS - 2); /* 1.5 * 2^36 */
    CHECK_EQ(latency_bucket(103079215105ull), LATENCY_BUCKETS - 1);
}

TEST(quantile_is_bucket_upper_bound)
{
    struct latency_snapshot s = {0};
    CHECK_EQ(latency_quantile_ns(&s, 0.99), 0);
    /* 99 fast requests at exactly 2048 ns, one slow one at 1 ms. */
    s.bucket[latency_bucket(2048)] = 99;
    s.bucket[latency_bucket(1000000)] = 1;
    CHECK_EQ(latency_quantile_ns(&s, 0.5), 2048);
    CHECK_EQ(latency_quantile_ns(&s, 0.98), 2048);
    uint64_t p100 = latency_quantile_ns(&s, 1.0);
    CHECK(p100 >= 1000000 && p100 < 1250000);
}

int main(int argc, char **argv) { return test_main(argc, argv); }
