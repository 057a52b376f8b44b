/* metrics: the Prometheus text exposition (format 0.0.4) of msgd's counters,
 * gauges and latency histograms, msgd_build_info and the standard process_*
 * metrics, as GET /metrics (proto_http) and the admin `metrics` command
 * serve it. Base layer: it reads counters and /proc/self, and never logs. */
#ifndef MSGD_METRICS_H
#define MSGD_METRICS_H

#include "buffer.h"
#include "stats.h"

/* The Content-Type of what metrics_format writes. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Appends the whole exposition to out: every family with a HELP sentence
 * and a TYPE, counters named *_total, latency as histograms
 * (msgd_request_duration_seconds_bucket/_sum/_count per command, one bucket
 * per octave of latency.h's), msgd_build_info, and process_* (CPU, memory,
 * descriptors, start time; left out when /proc/self cannot be read).
 * Returns 0 or -ENOMEM (out then holds part of it). Thread-safe: reads
 * counters only. */
int metrics_format(const struct stats_registry *reg, struct buffer *out);

#endif
