/* latency: per-command latency histograms with log-linear buckets (four per
 * octave) from 1 us to about 100 s. Each reactor owns its own set and is the
 * only writer (relaxed atomics, no lock); readers merge the sets when they
 * read (STATS, metrics). */
#ifndef MSGD_LATENCY_H
#define MSGD_LATENCY_H

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#define LATENCY_BUCKETS 112        /* bucket 0: <= 1 us; the last: > 103 s (1.5 * 2^36 ns) */

#define LATENCY_SLOTS 64            /* one per command (cmdtab.h); slot 0: OTHER */
#define LAT_OTHER 0                /* what is timed but is no command (admin) */

struct latency_hist {
    _Atomic uint64_t bucket[LATENCY_BUCKETS];
    _Atomic uint64_t count;
    _Atomic uint64_t sum_ns;
};

/* One reactor's histograms, by latency slot (cmdtab_slot): written by that
 * reactor only, read anywhere. */
struct latency {
    struct latency_hist cmd[LATENCY_SLOTS];
};

/* A merged, plain copy for reading. */
struct latency_snapshot {
    uint64_t bucket[LATENCY_BUCKETS];
    uint64_t count;
    uint64_t sum_ns;
};

/* The bucket a duration falls in. */
unsigned latency_bucket(uint64_t ns);

/* The upper bound of bucket b in nanoseconds (UINT64_MAX for the last). */
uint64_t latency_bucket_upper_ns(unsigned b);

/* Records one duration. Only the thread that owns l may call it. */
void latency_record(struct latency *l, int idx, uint64_t ns);

/* Adds l's histogram idx into snap. Thread-safe (reads only). */
void latency_merge(struct latency_snapshot *snap, const struct latency *l, int idx);

/* The q-quantile (0..1) of snap, as its bucket's upper bound in ns; 0 when empty. */
uint64_t latency_quantile_ns(const struct latency_snapshot *snap, double q);

/* CLOCK_MONOTONIC in nanoseconds. */
static inline uint64_t latency_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#endif
