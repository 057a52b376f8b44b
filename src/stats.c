/* stats: per-reactor counters and the STATS text. */
#include "stats.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const stat_names[STATS_ERRORS] = {
    [STATS_CONN_CURRENT] = "connections_current",
    [STATS_CONN_TOTAL] = "connections_total",
    [STATS_FRAMES_IN] = "frames_in",
    [STATS_FRAMES_OUT] = "frames_out",
    [STATS_BYTES_IN] = "bytes_in",
    [STATS_BYTES_OUT] = "bytes_out",
    [STATS_REPLIES_DROPPED] = "replies_dropped",
    [STATS_CLOSED_VIOLATION] = "closed_by_limit.protocol_violation",
    [STATS_CLOSED_HARD_LIMIT] = "closed_by_limit.output_hard_limit",
    [STATS_CLOSED_RESET] = "closed_by_peer_error",
    [STATS_CLOSED_IDLE] = "closed_by_limit.idle_timeout",
    [STATS_HEARTBEATS] = "heartbeats_sent",
    [STATS_JOBS] = "worker_jobs",
    [STATS_RESULTS_DROPPED] = "worker_results_dropped",
    [STATS_READ_PAUSES] = "read_pauses",
};

int stats_registry_init(struct stats_registry *reg, int nreactors)
{
    memset(reg, 0, sizeof *reg);
    clock_gettime(CLOCK_MONOTONIC, &reg->started);
    reg->reactors = aligned_alloc(64, sizeof(struct stats) * (size_t)nreactors);
    if (!reg->reactors)
        return -ENOMEM;
    memset(reg->reactors, 0, sizeof(struct stats) * (size_t)nreactors);
    reg->nreactors = nreactors;
    return 0;
}

void stats_registry_free(struct stats_registry *reg)
{
    free(reg->reactors);
    reg->reactors = NULL;
    reg->nreactors = 0;
}

struct out { char *p; size_t cap, len; };

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct out *o, const char *fmt, ...)
{
    if (o->len >= o->cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n < o->cap - o->len ? (size_t)n : o->cap - o->len - 1;
}

size_t stats_format(const struct stats_registry *reg, char *buf, size_t cap)
{
    struct out o = {buf, cap, 0};
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double up = (double)(now.tv_sec - reg->started.tv_sec) +
                (double)(now.tv_nsec - reg->started.tv_nsec) / 1e9;
    put(&o, "uptime_seconds %.3f\n", up);
    put(&o, "reactors %d\n", reg->nreactors);
    put(&o, "connections_live %llu\n", (unsigned long long)atomic_load(&reg->live));
    put(&o, "connections_accepted %llu\n", (unsigned long long)atomic_load(&reg->accepted));
    put(&o, "closed_by_limit.max_connections %llu\n",
        (unsigned long long)atomic_load(&reg->closed_max_connections));
    put(&o, "accept_errors %llu\n", (unsigned long long)atomic_load(&reg->accept_errors));
    uint64_t sum[STATS_COUNT] = {0};
    for (int r = 0; r < reg->nreactors; r++)
        for (int i = 0; i < STATS_COUNT; i++)
            sum[i] += stats_get(&reg->reactors[r], (enum stats_id)i);
    for (int i = 0; i < STATS_ERRORS; i++)
        put(&o, "%s %llu\n", stat_names[i], (unsigned long long)sum[i]);
    for (uint32_t code = 1; code <= MSG_ERR_MAX; code++)
        put(&o, "errors.%s %llu\n", msg_error_name(code),
            (unsigned long long)sum[STATS_ERRORS + code]);
    for (int r = 0; r < reg->nreactors; r++)
        for (int i = 0; i <= STATS_BYTES_OUT; i++)
            put(&o, "reactor.%d.%s %llu\n", r, stat_names[i],
                (unsigned long long)stats_get(&reg->reactors[r], (enum stats_id)i));
    return o.len;
}
