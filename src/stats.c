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
    [STATS_COMPRESSIONS] = "compressions",
    [STATS_DECOMPRESSIONS] = "decompressions",
    [STATS_TLS_HANDSHAKES] = "tls_handshakes",
    [STATS_TLS_RESUMED] = "tls_resumed",
    [STATS_TLS_FAILED_PROTOCOL] = "tls_failed.protocol",
    [STATS_TLS_FAILED_CERT] = "tls_failed.certificate",
    [STATS_TLS_FAILED_ABORTED] = "tls_failed.aborted",
    [STATS_TLS_FAILED_TIMEOUT] = "tls_failed.timeout",
    [STATS_PROXY_HEADERS] = "proxy_headers",
    [STATS_CLOSED_PROXY] = "closed_by_limit.proxy_header",
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

const char *stats_name(enum stats_id id)
{
    return (unsigned)id < STATS_ERRORS && stat_names[id] ? stat_names[id] : NULL;
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
    put(&o, "closed_by_limit.proxy_from %llu\n",
        (unsigned long long)atomic_load(&reg->proxy_refused));
    for (int i = 0; reg->cluster && i < STATS_CLUSTER_COUNT; i++)
        put(&o, "%s %llu\n", stats_cluster_name((enum stats_cluster_id)i),
            (unsigned long long)atomic_load(&reg->cluster_v[i]));
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

const char *stats_cluster_name(enum stats_cluster_id id)
{
    static const char *const names[STATS_CLUSTER_COUNT] = {
        "cluster.up", "cluster.channels", "cluster.published", "cluster.received",
        "cluster.dropped", "cluster.connects",
    };
    return (unsigned)id < STATS_CLUSTER_COUNT ? names[id] : "cluster.unknown";
}

uint64_t stats_sum(const struct stats_registry *reg, enum stats_id id)
{
    uint64_t v = 0;
    for (int r = 0; r < reg->nreactors; r++)
        v += stats_get(&reg->reactors[r], id);
    return v;
}
