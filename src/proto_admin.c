/* proto_admin: newline-terminated operator commands: help, stats, conns,
 * reload, metrics, quit (and the diagnostic stall). Each answer is zero or
 * more lines, then END; an error is one "ERR ..." line, then END. */
#include "proto_admin.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "fanout.h"
#include "latency.h"
#include "metrics.h"
#include "reload.h"
#include "stats.h"

#define ADMIN_ERR_LINE_TOO_LONG 1
#define STALL_MAX_MS 60000

static long admin_split_cb(struct pipeline *pl, const uint8_t *p, size_t n)
{
    (void)pl;
    size_t look = n < PROTO_ADMIN_LINE_MAX + 1 ? n : PROTO_ADMIN_LINE_MAX + 1;
    const uint8_t *nl = memchr(p, '\n', look);
    if (nl)
        return (long)(nl - p + 1);
    return n > PROTO_ADMIN_LINE_MAX ? -ADMIN_ERR_LINE_TOO_LONG : 0;
}

static void reply_line(struct pipeline *pl, const char *s)
{
    pipeline_write2(pl, s, strlen(s), "\n", 1);
}

/* `stall MS`: blocks this reactor thread on purpose, so tests can prove that
 * a stuck reactor starves the systemd watchdog. Off unless
 * [diagnostics] stall_command = on. */
static void admin_stall(struct pipeline *pl, const char *arg)
{
    if (!pl->env->cfg->stall_command) {
        reply_line(pl, "ERR stall is off ([diagnostics] stall_command)");
        return;
    }
    char *end;
    long ms = strtol(arg, &end, 10);
    if (end == arg || *end != '\0' || ms < 0 || ms > STALL_MAX_MS) {
        reply_line(pl, "ERR usage: stall MS (0..60000)");
        return;
    }
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
    reply_line(pl, "stalled");
}

/* Sends a generated text (and END) as the answer, or an error line. */
static void reply_text(struct pipeline *pl, int rc, struct buffer *text)
{
    if (rc < 0)
        reply_line(pl, "ERR out of memory");
    else
        pipeline_write(pl, buffer_peek(text), buffer_readable(text));
    buffer_free(text);
    reply_line(pl, "END");
}

/* Writes an identity for a text line: printable ASCII but for space, '%'
 * and '=' as is, anything else as %XX; "-" for none. */
static void escape_identity(char *out, const char *id, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    if (!id) {
        strcpy(out, "-");
        return;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)id[i];
        if (ch > ' ' && ch < 127 && ch != '%' && ch != '=') {
            *out++ = (char)ch;
        } else {
            *out++ = '%';
            *out++ = hex[ch >> 4];
            *out++ = hex[ch & 15];
        }
    }
    *out = '\0';
}

/* `conns`, on each reactor: one line per connection into its own result. */
static void conns_line(struct pipeline *pl, void *arg)
{
    struct buffer *out = arg;
    struct pipeline_info in;
    pl->env->ops->describe(pl, &in);
    char who[3 * 255 + 1], line[1200];
    escape_identity(who, in.identity, in.identity_len < 255 ? in.identity_len : 255);
    int n = snprintf(line, sizeof line,
                     "%016llx peer=%s proto=%s reactor=%d age=%.1fs idle=%.1fs identity=%s "
                     "in=%llu out=%llu pending=%zu\n",
                     (unsigned long long)in.id, in.peer, in.proto, in.reactor, in.age_s, in.idle_s,
                     who, (unsigned long long)in.bytes_in, (unsigned long long)in.bytes_out,
                     in.pending);
    if (n > 0)
        buffer_append(out, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

static void conns_visit(struct fanout *f, const struct pipeline_env *env)
{
    env->ops->each(env->host, conns_line, &f->results[env->reactor]);
}

/* Every reactor's lines, then END; out of memory shows as a cut list. */
static void conns_done(struct fanout *f, const struct pipeline_env *env)
{
    struct buffer reply = BUFFER_INIT;
    for (int i = 0; i < f->nreactors; i++)
        buffer_append(&reply, buffer_peek(&f->results[i]), buffer_readable(&f->results[i]));
    buffer_append(&reply, "END\n", 4);
    pipeline_complete_late(env, f->conn_id, f->seq, &reply);
}

static const struct fanout_ops conns_ops = {.visit = conns_visit, .done = conns_done};

/* `conns`: every reactor lists its own connections (a fan-out); the answer
 * keeps its place in this connection's reply order meanwhile. */
static void admin_conns(struct pipeline *pl)
{
    const struct pipeline_env *env = pl->env;
    long seq = pipeline_reserve(pl, latency_now_ns(), LAT_OTHER);
    struct fanout *f = seq < 0 ? NULL
                               : fanout_new(&conns_ops, env->nreactors, env->boxes, env->reactor,
                                            pl->conn_id, (uint32_t)seq, NULL, 0, true, env->bufs);
    if (!f) {
        if (seq >= 0)
            pipeline_unreserve(pl, (uint32_t)seq);
        reply_line(pl, "ERR out of memory");
        reply_line(pl, "END");
        return;
    }
    fanout_start(f);
}

static void admin_handle_cb(struct pipeline *pl, const uint8_t *frame, size_t len)
{
    /* Trim the newline, a CR before it, and surrounding blanks. */
    while (len > 0 && (frame[len - 1] == '\n' || frame[len - 1] == '\r' ||
                       frame[len - 1] == ' ' || frame[len - 1] == '\t'))
        len--;
    while (len > 0 && (frame[0] == ' ' || frame[0] == '\t')) {
        frame++;
        len--;
    }
    char line[PROTO_ADMIN_LINE_MAX + 1];
    memcpy(line, frame, len);
    line[len] = '\0';
    if (len == 0)
        return; /* a blank line is no command */
    if (memchr(line, '\0', len)) {
        reply_line(pl, "ERR the line holds a NUL byte");
        reply_line(pl, "END");
        return;
    }
    struct buffer text = BUFFER_INIT;
    if (strcmp(line, "help") == 0) {
        reply_line(pl, "help     this list");
        reply_line(pl, "stats    the counters, one 'name value' per line (as STATS)");
        reply_line(pl, "conns    one line per connection: id, peer, protocol, reactor, age, idle, identity, bytes, pending");
        reply_line(pl, "reload   reload the configuration (as SIGHUP) and say whether it took");
        reply_line(pl, "metrics  counters, gauges and latency histograms, Prometheus text format");
        reply_line(pl, "quit     close this connection");
        if (pl->env->cfg->stall_command)
            reply_line(pl, "stall MS block this reactor for MS ms (diagnostics)");
    } else if (strcmp(line, "stats") == 0) {
        reply_text(pl, stats_format(pl->env->all, &text), &text);
        return;
    } else if (strcmp(line, "metrics") == 0) {
        reply_text(pl, metrics_format(pl->env->all, &text), &text);
        return;
    } else if (strcmp(line, "conns") == 0) {
        admin_conns(pl);
        return;
    } else if (strcmp(line, "reload") == 0) {
        reload_request(pl); /* answered by the main thread: "OK reloaded" or "ERR ..." */
        return;
    } else if (strncmp(line, "stall", 5) == 0 && (line[5] == ' ' || line[5] == '\0')) {
        admin_stall(pl, line + 5);
    } else if (strcmp(line, "quit") == 0) {
        reply_line(pl, "END");
        pipeline_close_after_flush(pl);
        return;
    } else {
        reply_line(pl, "ERR unknown command (try help)");
    }
    reply_line(pl, "END");
}

static void admin_violation_cb(struct pipeline *pl, long code)
{
    (void)code;
    reply_line(pl, "ERR line longer than 1024 bytes");
    reply_line(pl, "END");
    pipeline_close_after_flush(pl);
}

const struct proto proto_admin = {
    .name = "admin",
    .counted = false,
    .split = admin_split_cb,
    .handle = admin_handle_cb,
    .violation = admin_violation_cb,
};
