/* proto_admin: newline-terminated operator commands: help, stats, quit.
 * (conns, reload and metrics come with the admin issue.) */
#include "proto_admin.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"

#include "stats.h"

#define ADMIN_ERR_LINE_TOO_LONG 1
#define STATS_TEXT_MAX 16384
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
        return;
    if (strcmp(line, "help") == 0) {
        reply_line(pl, "help   this list");
        reply_line(pl, "stats  the counters, one 'name value' per line");
        reply_line(pl, "quit   close this connection");
        if (pl->env->cfg->stall_command)
            reply_line(pl, "stall MS  block this reactor for MS ms (diagnostics)");
    } else if (strcmp(line, "stats") == 0) {
        char text[STATS_TEXT_MAX];
        size_t n = stats_format(pl->env->all, text, sizeof text);
        pipeline_write(pl, text, n);
    } else if (strncmp(line, "stall", 5) == 0 && (line[5] == ' ' || line[5] == '\0')) {
        admin_stall(pl, line + 5);
    } else if (strcmp(line, "quit") == 0) {
        reply_line(pl, "END");
        pipeline_close_after_flush(pl);
        return;
    } else {
        pipeline_write(pl, "ERR unknown command (try help)\n", 31);
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
