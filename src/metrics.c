/* metrics: the Prometheus text exposition 0.0.4 of the registry (counters,
 * gauges, latency histograms), msgd_build_info and process_* from /proc/self.
 * Every family has a HELP sentence; promtool check metrics finds nothing. */
#include "metrics.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cmdtab.h"
#include "latency.h"
#include "version.h"

/* What each per-reactor counter or gauge means (its name is stats_name()). */
static const char *const stat_help[STATS_ERRORS] = {
    [STATS_CONN_CURRENT] = "Connections of every protocol open now.",
    [STATS_CONN_TOTAL] = "Connections of every protocol taken over by a reactor since start.",
    [STATS_FRAMES_IN] = "Whole requests handled: msg frames, admin lines, http request heads, "
                        "echo reads.",
    [STATS_FRAMES_OUT] = "msg frames queued for sending: replies, errors and pushes.",
    [STATS_BYTES_IN] = "Bytes read from client sockets.",
    [STATS_BYTES_OUT] = "Bytes written to client sockets.",
    [STATS_REPLIES_DROPPED] = "Reply frames from clients, other than answers to server PINGs, "
                              "that were dropped.",
    [STATS_CLOSED_VIOLATION] = "Connections closed for breaking their protocol (bad msg header, "
                               "frame over max_frame, malformed or oversized http request).",
    [STATS_CLOSED_HARD_LIMIT] = "Connections closed because their unsent output passed "
                                "output_hard_limit.",
    [STATS_CLOSED_RESET] = "Connections closed on a read or write error (a reset by the peer).",
    [STATS_CLOSED_IDLE] = "Connections closed after idle_timeout without a byte from the peer.",
    [STATS_HEARTBEATS] = "Heartbeat PINGs sent to silent msg connections.",
    [STATS_JOBS] = "Requests queued to the worker pool.",
    [STATS_RESULTS_DROPPED] = "Worker results dropped because their connection had gone.",
    [STATS_READ_PAUSES] = "Times reading a connection paused because its unsent output passed "
                          "output_high_water.",
    [STATS_PUBLISHED] = "PUBLISH requests fanned out from this reactor.",
    [STATS_MESSAGES_DELIVERED] = "MESSAGE pushes queued to subscribers on this reactor.",
    [STATS_MESSAGES_DROPPED] = "MESSAGE pushes skipped because the subscriber's output was above "
                               "output_high_water.",
    [STATS_SUBSCRIPTIONS] = "Topic subscriptions held now.",
    [STATS_DIRECTS] = "DIRECT requests fanned out from this reactor.",
    [STATS_DELIVERS] = "DELIVER pushes queued to connections on this reactor.",
    [STATS_DELIVERS_DROPPED] = "DELIVER pushes skipped because the receiver's output was above "
                               "output_high_water.",
    [STATS_BUFFER_POOL_BYTES] = "Bytes of emptied buffer memory kept for reuse now.",
    [STATS_MODULE_PUSHES_DROPPED] = "Module pushes (msgd_send) dropped because their connection "
                                    "had gone or was full.",
    [STATS_COMPRESSIONS] = "Payloads run through a compressor (HELLO's codec), whether the "
                           "result was kept or the payload went out plain.",
    [STATS_DECOMPRESSIONS] = "COMPRESSED requests decompressed.",
    [STATS_TLS_HANDSHAKES] = "TLS handshakes completed on tls_listen, resumed ones included.",
    [STATS_TLS_RESUMED] = "TLS handshakes that resumed an earlier session.",
    [STATS_TLS_FAILED_PROTOCOL] = "TLS handshakes failed on the protocol: not TLS (plaintext), "
                                  "a version below min_version, a bad message.",
    [STATS_TLS_FAILED_CERT] = "TLS handshakes failed because the client certificate was missing "
                              "or not signed by [tls] ca.",
    [STATS_TLS_FAILED_ABORTED] = "TLS handshakes the peer closed or reset halfway.",
    [STATS_TLS_FAILED_TIMEOUT] = "TLS handshakes not done within idle_timeout (at most 10 s).",
    [STATS_PROXY_HEADERS] = "PROXY protocol headers taken on listeners with proxy_protocol on.",
    [STATS_CLOSED_PROXY] = "Connections closed because their PROXY protocol header was "
                           "malformed, too long, or never came.",
};

static bool stat_is_gauge(int i)
{
    return i == STATS_CONN_CURRENT || i == STATS_SUBSCRIPTIONS || i == STATS_BUFFER_POOL_BYTES;
}

struct out {
    struct buffer *b;
    int failed;
};

#define PUT(o, ...) ((o)->failed |= buffer_printf((o)->b, __VA_ARGS__) < 0)

/* A family's HELP and TYPE lines. */
static void family(struct out *o, const char *name, const char *type, const char *help)
{
    PUT(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value as the format wants it: backslash, quote and newline escaped. */
static void label_value(char *dst, size_t cap, const char *v)
{
    size_t n = 0;
    for (; *v && n + 3 < cap; v++) {
        if (*v == '\\' || *v == '"' || *v == '\n') {
            dst[n++] = '\\';
            dst[n++] = *v == '\n' ? 'n' : *v;
        } else {
            dst[n++] = *v;
        }
    }
    dst[n] = '\0';
}

/* The Prometheus name of counter id: msgd_<name with dots as underscores>,
 * with _total after a counter's name that lacks it. */
static void metric_name(char *out, size_t cap, int id)
{
    snprintf(out, cap, "msgd_%s", stats_name((enum stats_id)id));
    for (char *p = out; *p; p++)
        if (*p == '.')
            *p = '_';
    size_t nl = strlen(out);
    if (!stat_is_gauge(id) && (nl < 6 || strcmp(out + nl - 6, "_total") != 0))
        snprintf(out + nl, cap - nl, "_total");
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

/* The registry's own figures (main thread and any-thread counters). */
static void format_global(struct out *o, const struct stats_registry *reg)
{
    family(o, "msgd_build_info", "gauge", "Always 1; its version label is the msgd release.");
    PUT(o, "msgd_build_info{version=\"%s\"} 1\n", MSGD_VERSION);
    family(o, "msgd_uptime_seconds", "gauge", "Seconds since msgd started.");
    PUT(o, "msgd_uptime_seconds %.3f\n", seconds_since(&reg->started));
    family(o, "msgd_reactors", "gauge", "Reactor threads.");
    PUT(o, "msgd_reactors %d\n", reg->nreactors);
    family(o, "msgd_connections_live", "gauge",
           "Connections that count against max_connections (msg and echo) open now.");
    PUT(o, "msgd_connections_live %llu\n", (unsigned long long)atomic_load(&reg->live));
    family(o, "msgd_accepted_total", "counter", "Connections accepted on every listener.");
    PUT(o, "msgd_accepted_total %llu\n", (unsigned long long)atomic_load(&reg->accepted));
    family(o, "msgd_closed_max_connections_total", "counter",
           "Connections closed at once because max_connections were open.");
    PUT(o, "msgd_closed_max_connections_total %llu\n",
        (unsigned long long)atomic_load(&reg->closed_max_connections));
    family(o, "msgd_accept_errors_total", "counter",
           "accept() failures, out of descriptors (EMFILE, ENFILE) included.");
    PUT(o, "msgd_accept_errors_total %llu\n", (unsigned long long)atomic_load(&reg->accept_errors));
    family(o, "msgd_proxy_refused_total", "counter",
           "Connections closed at once on a proxy_protocol listener: their address is not in "
           "proxy_from.");
    PUT(o, "msgd_proxy_refused_total %llu\n", (unsigned long long)atomic_load(&reg->proxy_refused));
    if (!reg->cluster)
        return;
    static const struct {
        const char *name, *type, *help;
    } cl[STATS_CLUSTER_COUNT] = {
        {"msgd_cluster_up", "gauge", "1 while both links to the Redis backplane are up, else 0."},
        {"msgd_cluster_channels", "gauge", "Redis channels this node subscribes to now."},
        {"msgd_cluster_published_total", "counter", "Messages this node sent to the other nodes."},
        {"msgd_cluster_received_total", "counter",
         "Messages from other nodes delivered to this node's reactors."},
        {"msgd_cluster_dropped_total", "counter",
         "Messages not sent to the other nodes because the backplane was down or full."},
        {"msgd_cluster_connects_total", "counter", "Connection attempts to the Redis backplane."},
    };
    for (int i = 0; i < STATS_CLUSTER_COUNT; i++) {
        family(o, cl[i].name, cl[i].type, cl[i].help);
        PUT(o, "%s %llu\n", cl[i].name, (unsigned long long)atomic_load(&reg->cluster_v[i]));
    }
}

/* Each reactor's counters and gauges, labelled by reactor, and the error
 * replies by code. */
static void format_reactors(struct out *o, const struct stats_registry *reg)
{
    for (int i = 0; i < STATS_ERRORS; i++) {
        if (!stats_name((enum stats_id)i))
            continue;
        char name[96];
        metric_name(name, sizeof name, i);
        family(o, name, stat_is_gauge(i) ? "gauge" : "counter",
               stat_help[i] ? stat_help[i] : "A msgd counter (see STATS).");
        for (int r = 0; r < reg->nreactors; r++)
            PUT(o, "%s{reactor=\"%d\"} %llu\n", name, r,
                (unsigned long long)stats_get(&reg->reactors[r], (enum stats_id)i));
    }
    family(o, "msgd_errors_total", "counter", "msg error replies sent, by error code.");
    for (uint32_t code = 1; code <= MSG_ERR_MAX; code++)
        PUT(o, "msgd_errors_total{code=\"%s\"} %llu\n", msg_error_name(code),
            (unsigned long long)stats_sum(reg, (enum stats_id)(STATS_ERRORS + code)));
}

/* One histogram per command: latency.h's buckets merged over the reactors,
 * with a bucket boundary at every fourth (one per octave of latency). */
static void format_latency(struct out *o, const struct stats_registry *reg)
{
    family(o, "msgd_request_duration_seconds", "histogram",
           "Time from a request decoded to its reply queued, by command.");
    for (int c = 0; c < cmdtab_slots(); c++) {
        struct latency_snapshot snap;
        memset(&snap, 0, sizeof snap);
        for (int r = 0; r < reg->nreactors; r++)
            latency_merge(&snap, &reg->reactors[r].lat, c);
        char cmd[2 * 32 + 1];
        label_value(cmd, sizeof cmd, cmdtab_slot_name(c));
        uint64_t cum = 0;
        for (unsigned bk = 0; bk < LATENCY_BUCKETS; bk++) {
            cum += snap.bucket[bk];
            if (bk == LATENCY_BUCKETS - 1 || (bk % 4) != 0)
                continue;
            PUT(o, "msgd_request_duration_seconds_bucket{command=\"%s\",le=\"%.9g\"} %llu\n", cmd,
                (double)latency_bucket_upper_ns(bk) / 1e9, (unsigned long long)cum);
        }
        PUT(o, "msgd_request_duration_seconds_bucket{command=\"%s\",le=\"+Inf\"} %llu\n", cmd,
            (unsigned long long)cum);
        PUT(o, "msgd_request_duration_seconds_sum{command=\"%s\"} %.9f\n", cmd,
            (double)snap.sum_ns / 1e9);
        PUT(o, "msgd_request_duration_seconds_count{command=\"%s\"} %llu\n", cmd,
            (unsigned long long)cum);
    }
}

/* Reads a small /proc file whole into buf (NUL-terminated). Returns its
 * length or -errno. */
static ssize_t read_small(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    return (ssize_t)n;
}

/* The boot time (seconds since the epoch): /proc/stat's btime line. */
static int boot_time(unsigned long long *btime)
{
    FILE *f = fopen("/proc/stat", "re");
    if (!f)
        return -errno;
    char *line = NULL;
    size_t cap = 0;
    int rc = -ENOENT;
    while (rc < 0 && getline(&line, &cap, f) > 0)
        if (sscanf(line, "btime %llu", btime) == 1)
            rc = 0;
    free(line);
    fclose(f);
    return rc;
}

/* Descriptors open now: the entries of /proc/self/fd (this scan's own
 * included, as other exporters count). */
static long open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -errno;
    long n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* The standard process_* metrics of Prometheus client libraries. */
static void format_process(struct out *o)
{
    char stat[2048];
    long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    if (read_small("/proc/self/stat", stat, sizeof stat) > 0 && tick > 0 && page > 0) {
        /* Fields after "pid (comm) ": state is field 3; utime 14, stime 15,
         * starttime 22, vsize 23, rss 24 (pages). comm may hold anything. */
        const char *p = strrchr(stat, ')');
        unsigned long long utime, stime, start, vsize, rss;
        if (p && sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d "
                               "%*d %*d %*d %*d %llu %llu %llu",
                        &utime, &stime, &start, &vsize, &rss) == 5) {
            family(o, "process_cpu_seconds_total", "counter",
                   "Total user and system CPU time spent in seconds.");
            PUT(o, "process_cpu_seconds_total %.2f\n", (double)(utime + stime) / (double)tick);
            family(o, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
            PUT(o, "process_virtual_memory_bytes %llu\n", vsize);
            family(o, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
            PUT(o, "process_resident_memory_bytes %llu\n", rss * (unsigned long long)page);
            unsigned long long btime;
            if (boot_time(&btime) == 0) {
                family(o, "process_start_time_seconds", "gauge",
                       "Start time of the process since unix epoch in seconds.");
                PUT(o, "process_start_time_seconds %.2f\n",
                    (double)btime + (double)start / (double)tick);
            }
        }
    }
    long fds = open_fds();
    if (fds >= 0) {
        family(o, "process_open_fds", "gauge", "Number of open file descriptors.");
        PUT(o, "process_open_fds %ld\n", fds);
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        family(o, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
        if (rl.rlim_cur == RLIM_INFINITY)
            PUT(o, "process_max_fds +Inf\n");
        else
            PUT(o, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    }
}

int metrics_format(const struct stats_registry *reg, struct buffer *out)
{
    struct out o = {out, 0};
    format_global(&o, reg);
    format_reactors(&o, reg);
    format_latency(&o, reg);
    format_process(&o);
    return o.failed ? -ENOMEM : 0;
}
