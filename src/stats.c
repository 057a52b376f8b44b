/* stats: per-reactor counters and the STATS text. */
#include "stats.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmdtab.h"

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
    [STATS_PUBLISHED] = "published",
    [STATS_MESSAGES_DELIVERED] = "messages_delivered",
    [STATS_MESSAGES_DROPPED] = "messages_dropped_slow_consumer",
    [STATS_SUBSCRIPTIONS] = "subscriptions_current",
    [STATS_DIRECTS] = "directs",
    [STATS_DELIVERS] = "delivers",
    [STATS_DELIVERS_DROPPED] = "delivers_dropped_slow_consumer",
    [STATS_BUFFER_POOL_BYTES] = "buffer_pool_bytes",
    [STATS_MODULE_PUSHES_DROPPED] = "module_pushes_dropped",
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

struct out {
    struct buffer *b;
    int failed;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct out *o, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line)
        n = sizeof line - 1;
    if (buffer_append(o->b, line, (size_t)n) < 0)
        o->failed = 1;
}

int stats_format(const struct stats_registry *reg, struct buffer *b)
{
    struct out o = {b, 0};
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
    for (int c = 0; c < cmdtab_slots(); c++) {
        struct latency_snapshot snap = {{0}, 0, 0};
        for (int r = 0; r < reg->nreactors; r++)
            latency_merge(&snap, &reg->reactors[r].lat, c);
        if (snap.count == 0)
            continue;
        const char *name = cmdtab_slot_name(c);
        put(&o, "latency.%s.count %llu\n", name, (unsigned long long)snap.count);
        put(&o, "latency.%s.p50_us %.1f\n", name, (double)latency_quantile_ns(&snap, 0.5) / 1e3);
        put(&o, "latency.%s.p99_us %.1f\n", name, (double)latency_quantile_ns(&snap, 0.99) / 1e3);
        put(&o, "latency.%s.p999_us %.1f\n", name, (double)latency_quantile_ns(&snap, 0.999) / 1e3);
    }
    for (int r = 0; r < reg->nreactors; r++)
        for (int i = 0; i <= STATS_BYTES_OUT; i++)
            put(&o, "reactor.%d.%s %llu\n", r, stat_names[i],
                (unsigned long long)stats_get(&reg->reactors[r], (enum stats_id)i));
    return o.failed ? -ENOMEM : 0;
}

uint64_t stats_sum(const struct stats_registry *reg, enum stats_id id)
{
    uint64_t v = 0;
    for (int r = 0; r < reg->nreactors; r++)
        v += stats_get(&reg->reactors[r], id);
    return v;
}

/* Every reactor's histogram of latency slot c, merged. */
static void merge_slot(const struct stats_registry *reg, int c, struct latency_snapshot *snap)
{
    memset(snap, 0, sizeof *snap);
    for (int r = 0; r < reg->nreactors; r++)
        latency_merge(snap, &reg->reactors[r].lat, c);
}

/* The Prometheus names: msgd_<stat name with dots as underscores>. */
static void metric_name(char *out, size_t cap, const char *stat)
{
    snprintf(out, cap, "msgd_%s", stat);
    for (char *p = out; *p; p++)
        if (*p == '.')
            *p = '_';
}

int stats_format_metrics(const struct stats_registry *reg, struct buffer *b)
{
    struct out o = {b, 0};
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double up = (double)(now.tv_sec - reg->started.tv_sec) +
                (double)(now.tv_nsec - reg->started.tv_nsec) / 1e9;
    put(&o, "# HELP msgd_uptime_seconds Seconds since msgd started.\n");
    put(&o, "# TYPE msgd_uptime_seconds gauge\nmsgd_uptime_seconds %.3f\n", up);
    put(&o, "# HELP msgd_reactors Reactor threads.\n");
    put(&o, "# TYPE msgd_reactors gauge\nmsgd_reactors %d\n", reg->nreactors);
    put(&o, "# HELP msgd_accepted_total Connections accepted.\n");
    put(&o, "# TYPE msgd_accepted_total counter\nmsgd_accepted_total %llu\n",
        (unsigned long long)atomic_load(&reg->accepted));
    put(&o, "# HELP msgd_closed_max_connections_total Connections refused by max_connections.\n");
    put(&o, "# TYPE msgd_closed_max_connections_total counter\n"
            "msgd_closed_max_connections_total %llu\n",
        (unsigned long long)atomic_load(&reg->closed_max_connections));
    /* Gauges, then counters, per reactor. */
    static const int gauges[] = {STATS_CONN_CURRENT, STATS_SUBSCRIPTIONS, STATS_BUFFER_POOL_BYTES};
    for (size_t g = 0; g < sizeof gauges / sizeof gauges[0]; g++) {
        char name[96];
        metric_name(name, sizeof name, stat_names[gauges[g]]);
        put(&o, "# HELP %s %s now.\n# TYPE %s gauge\n", name, stat_names[gauges[g]], name);
        for (int r = 0; r < reg->nreactors; r++)
            put(&o, "%s{reactor=\"%d\"} %llu\n", name, r,
                (unsigned long long)stats_get(&reg->reactors[r], (enum stats_id)gauges[g]));
    }
    for (int i = 0; i < STATS_ERRORS; i++) {
        if (i == STATS_CONN_CURRENT || i == STATS_SUBSCRIPTIONS || i == STATS_BUFFER_POOL_BYTES)
            continue;
        char name[96];
        metric_name(name, sizeof name, stat_names[i]);
        size_t nl = strlen(name);
        if (nl < 6 || strcmp(name + nl - 6, "_total") != 0)
            snprintf(name + nl, sizeof name - nl, "_total");
        put(&o, "# HELP %s %s.\n# TYPE %s counter\n", name, stat_names[i], name);
        for (int r = 0; r < reg->nreactors; r++)
            put(&o, "%s{reactor=\"%d\"} %llu\n", name, r,
                (unsigned long long)stats_get(&reg->reactors[r], (enum stats_id)i));
    }
    put(&o, "# HELP msgd_errors_total Error replies sent, by code.\n# TYPE msgd_errors_total counter\n");
    for (uint32_t code = 1; code <= MSG_ERR_MAX; code++)
        put(&o, "msgd_errors_total{code=\"%s\"} %llu\n", msg_error_name(code),
            (unsigned long long)stats_sum(reg, (enum stats_id)(STATS_ERRORS + code)));
    /* Latency: a histogram per command (every fourth bucket: one per octave),
     * and the p50/p99/p999 the STATS command shows. */
    put(&o, "# HELP msgd_request_duration_seconds From a request decoded to its reply queued.\n"
            "# TYPE msgd_request_duration_seconds histogram\n");
    int nslots = cmdtab_slots();
    for (int c = 0; c < nslots; c++) {
        struct latency_snapshot snap;
        merge_slot(reg, c, &snap);
        const char *cmd = cmdtab_slot_name(c);
        uint64_t cum = 0;
        for (unsigned bk = 0; bk < LATENCY_BUCKETS; bk++) {
            cum += snap.bucket[bk];
            if (bk == LATENCY_BUCKETS - 1 || (bk % 4) != 0)
                continue;
            put(&o, "msgd_request_duration_seconds_bucket{command=\"%s\",le=\"%.9g\"} %llu\n", cmd,
                (double)latency_bucket_upper_ns(bk) / 1e9, (unsigned long long)cum);
        }
        put(&o, "msgd_request_duration_seconds_bucket{command=\"%s\",le=\"+Inf\"} %llu\n", cmd,
            (unsigned long long)cum);
        put(&o, "msgd_request_duration_seconds_sum{command=\"%s\"} %.9f\n", cmd,
            (double)snap.sum_ns / 1e9);
        put(&o, "msgd_request_duration_seconds_count{command=\"%s\"} %llu\n", cmd,
            (unsigned long long)cum);
    }
    put(&o, "# HELP msgd_request_duration_quantile_seconds Latency quantiles (bucket upper bounds).\n"
            "# TYPE msgd_request_duration_quantile_seconds gauge\n");
    static const double qs[] = {0.5, 0.99, 0.999};
    for (int c = 0; c < nslots; c++) {
        struct latency_snapshot snap;
        merge_slot(reg, c, &snap);
        for (size_t q = 0; q < 3; q++)
            put(&o, "msgd_request_duration_quantile_seconds{command=\"%s\",quantile=\"%g\"} %.9g\n",
                cmdtab_slot_name(c), qs[q], (double)latency_quantile_ns(&snap, qs[q]) / 1e9);
    }
    return o.failed ? -ENOMEM : 0;
}
