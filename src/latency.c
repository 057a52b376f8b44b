/* latency: log-linear latency histograms, single writer, merged on read. */
#include "latency.h"

/* Bucket 0 holds <= 1 us. Above that, n = ns - 1 is placed by its octave lg
 * (n in [2^lg, 2^(lg+1)), lg >= 9), split in four: bucket 1 + 4*(lg-9) + sub.
 * Placing ns - 1 makes each bucket (lower, upper]: a duration equal to a
 * bound counts at or below it, as Prometheus's inclusive `le` says.
 * (Buckets 1..3 would hold 512..1000 ns and stay empty.) */
unsigned latency_bucket(uint64_t ns)
{
    if (ns <= 1000)
        return 0;
    uint64_t n = ns - 1;
    unsigned lg = 63u - (unsigned)__builtin_clzll(n);
    unsigned sub = (unsigned)(n >> (lg - 2)) & 3u;
    unsigned b = 1 + 4 * (lg - 9) + sub;
    return b < LATENCY_BUCKETS ? b : LATENCY_BUCKETS - 1;
}

uint64_t latency_bucket_upper_ns(unsigned b)
{
    if (b == 0)
        return 1000;
    if (b >= LATENCY_BUCKETS - 1)
        return UINT64_MAX;
    unsigned lg = (b - 1) / 4 + 9, sub = (b - 1) % 4;
    return ((uint64_t)(5 + sub) << lg) / 4; /* ( (4+sub) 2^lg/4, (5+sub) 2^lg/4 ] */
}

void latency_record(struct latency *l, int idx, uint64_t ns)
{
    struct latency_hist *h = &l->cmd[idx];
    unsigned b = latency_bucket(ns);
    atomic_store_explicit(&h->bucket[b],
                          atomic_load_explicit(&h->bucket[b], memory_order_relaxed) + 1,
                          memory_order_relaxed);
    atomic_store_explicit(&h->count, atomic_load_explicit(&h->count, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    atomic_store_explicit(&h->sum_ns, atomic_load_explicit(&h->sum_ns, memory_order_relaxed) + ns,
                          memory_order_relaxed);
}

void latency_merge(struct latency_snapshot *snap, const struct latency *l, int idx)
{
    const struct latency_hist *h = &l->cmd[idx];
    for (unsigned b = 0; b < LATENCY_BUCKETS; b++)
        snap->bucket[b] += atomic_load_explicit(&h->bucket[b], memory_order_relaxed);
    snap->count += atomic_load_explicit(&h->count, memory_order_relaxed);
    snap->sum_ns += atomic_load_explicit(&h->sum_ns, memory_order_relaxed);
}

uint64_t latency_quantile_ns(const struct latency_snapshot *snap, double q)
{
    uint64_t total = 0;
    for (unsigned b = 0; b < LATENCY_BUCKETS; b++)
        total += snap->bucket[b];
    if (total == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)total);
    if (rank >= total)
        rank = total - 1;
    uint64_t seen = 0;
    for (unsigned b = 0; b < LATENCY_BUCKETS; b++) {
        seen += snap->bucket[b];
        if (seen > rank)
            return latency_bucket_upper_ns(b);
    }
    return latency_bucket_upper_ns(LATENCY_BUCKETS - 1);
}
