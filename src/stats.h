/* stats: counters. Each reactor has its own block, written only by that
 * reactor (a relaxed load and store, no lock prefix) and read by anyone; the
 * registry's global block is written by the main thread, except `live`,
 * which every thread updates atomically. */
#ifndef MSGD_STATS_H
#define MSGD_STATS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "buffer.h"
#include "latency.h"
#include "msg.h"

enum stats_id {
    STATS_CONN_CURRENT,
    STATS_CONN_TOTAL,
    STATS_FRAMES_IN,
    STATS_FRAMES_OUT,
    STATS_BYTES_IN,
    STATS_BYTES_OUT,
    STATS_REPLIES_DROPPED,      /* client reply frames other than a PING answer */
    STATS_CLOSED_VIOLATION,     /* bad magic / version / too large */
    STATS_CLOSED_HARD_LIMIT,    /* output_hard_limit passed */
    STATS_CLOSED_RESET,         /* read or write error from the peer */
    STATS_CLOSED_IDLE,          /* idle_timeout */
    STATS_HEARTBEATS,           /* server PINGs sent */
    STATS_JOBS,                 /* worker jobs queued */
    STATS_RESULTS_DROPPED,      /* worker results whose connection had gone */
    STATS_READ_PAUSES,          /* times reading stopped at output_high_water */
    STATS_PUBLISHED,            /* PUBLISH requests fanned out from this reactor */
    STATS_MESSAGES_DELIVERED,   /* MESSAGE pushes queued to local subscribers */
    STATS_MESSAGES_DROPPED,     /* skipped: the subscriber was above output_high_water */
    STATS_SUBSCRIPTIONS,        /* subscriptions held now (gauge) */
    STATS_DIRECTS,              /* DIRECT requests fanned out from this reactor */
    STATS_DELIVERS,             /* DELIVER pushes queued to local connections */
    STATS_DELIVERS_DROPPED,     /* skipped: the receiver was above output_high_water */
    STATS_BUFFER_POOL_BYTES,    /* emptied buffer memory kept for reuse now (gauge) */
    STATS_MODULE_PUSHES_DROPPED, /* module pushes (msgd_send) whose connection had gone or was full */
    STATS_COMPRESSIONS,         /* payloads run through a compressor (kept or not) */
    STATS_DECOMPRESSIONS,       /* COMPRESSED requests decompressed */
    STATS_TLS_HANDSHAKES,       /* TLS handshakes completed (resumed ones included) */
    STATS_TLS_RESUMED,          /* of those, sessions resumed */
    STATS_TLS_FAILED_PROTOCOL,  /* handshakes failed: not TLS, a version below min_version... */
    STATS_TLS_FAILED_CERT,      /* handshakes failed: client certificate missing or untrusted */
    STATS_TLS_FAILED_ABORTED,   /* handshakes the peer closed or reset halfway */
    STATS_TLS_FAILED_TIMEOUT,   /* handshakes not done within idle_timeout or 10 s */
    STATS_PROXY_HEADERS,        /* PROXY protocol headers taken */
    STATS_CLOSED_PROXY,         /* closed: a bad, too long or missing PROXY header */
    STATS_ERRORS,               /* + code: error replies sent, by code (1..MSG_ERR_MAX) */
    STATS_COUNT = STATS_ERRORS + MSG_ERR_MAX + 1,
};

/* One reactor's counters: written by that reactor thread only, read anywhere. */
struct stats {
    _Atomic uint64_t v[STATS_COUNT];
    struct latency lat;         /* per command: frame decoded -> reply queued */
} __attribute__((aligned(64)));

/* Adds n. Only the one thread that owns s may call it. */
static inline void stats_add(struct stats *s, enum stats_id id, uint64_t n)
{
    uint64_t old = atomic_load_explicit(&s->v[id], memory_order_relaxed);
    atomic_store_explicit(&s->v[id], old + n, memory_order_relaxed);
}

/* Sets a gauge to v. Only the one thread that owns s may call it. */
static inline void stats_set(struct stats *s, enum stats_id id, uint64_t v)
{
    atomic_store_explicit(&s->v[id], v, memory_order_relaxed);
}

static inline uint64_t stats_get(const struct stats *s, enum stats_id id)
{
    return atomic_load_explicit(&s->v[id], (memory_order)memory_order_relaxed);
}

/* The cluster link's figures (cluster.c writes them on its thread). */
enum stats_cluster_id {
    STATS_CLUSTER_UP,           /* 1 while both Redis links are up (gauge) */
    STATS_CLUSTER_CHANNELS,     /* Redis channels this node subscribes to (gauge) */
    STATS_CLUSTER_PUBLISHED,    /* messages sent to the other nodes */
    STATS_CLUSTER_RECEIVED,     /* messages from other nodes, fanned out here */
    STATS_CLUSTER_DROPPED,      /* messages not sent: the backplane was down or full */
    STATS_CLUSTER_CONNECTS,     /* connection attempts to Redis (first one included) */
    STATS_CLUSTER_COUNT,
};

/* Everything STATS reports. Built by the main thread before any reactor
 * starts; its layout is read-only after that. */
struct stats_registry {
    struct timespec started;          /* CLOCK_MONOTONIC */
    int nreactors;
    struct stats *reactors;           /* nreactors blocks, one per reactor */
    _Atomic uint64_t live;            /* counted (msg + echo) connections open now; any thread */
    _Atomic uint64_t accepted;        /* main thread writes */
    _Atomic uint64_t closed_max_connections; /* main thread writes */
    _Atomic uint64_t accept_errors;   /* main thread writes */
    _Atomic uint64_t proxy_refused;   /* main thread writes: not from proxy_from */
    bool cluster;                     /* [cluster] is configured: report cluster_v */
    _Atomic uint64_t cluster_v[STATS_CLUSTER_COUNT]; /* the cluster thread writes */
};

/* The STATS name of a cluster figure ("cluster.up"). */
const char *stats_cluster_name(enum stats_cluster_id id);

/* Allocates the registry's reactor blocks. Returns 0 or -ENOMEM. Main thread. */
int stats_registry_init(struct stats_registry *reg, int nreactors);
void stats_registry_free(struct stats_registry *reg);

/* Sums counter id over every reactor. Thread-safe (reads only). */
uint64_t stats_sum(const struct stats_registry *reg, enum stats_id id);

/* Appends the STATS text ("name value\n" lines) to out. Returns 0 or
 * -ENOMEM. Thread-safe: reads counters only. */
int stats_format(const struct stats_registry *reg, struct buffer *out);

/* The STATS name of counter id ("frames_in", "closed_by_limit.idle_timeout"),
 * or NULL for an error code's counter (STATS_ERRORS and up) or an unnamed
 * one. Thread-safe. */
const char *stats_name(enum stats_id id);

#endif
