/* commands: the command table and the built-in handlers PING, ECHO, AUTH,
 * STATS and DELAY. */
#include "commands.h"

#include <string.h>

#include "config.h"
#include "msg.h"
#include "proto_msg.h"
#include "stats.h"

#define PING_MAX 1024u
#define DELAY_MAX_MS 60000u
#define STATS_TEXT_MAX 16384

static int cmd_ping(struct pipeline *pl, uint32_t cmd, const uint8_t *p, size_t len)
{
    if (len > PING_MAX) {
        proto_msg_error(pl, cmd, MSG_ERR_BAD_PAYLOAD, "PING payload over 1 KiB");
        return 0;
    }
    proto_msg_reply(pl, cmd, p, len);
    return 0;
}

static int cmd_echo(struct pipeline *pl, uint32_t cmd, const uint8_t *p, size_t len)
{
    proto_msg_reply(pl, cmd, p, len);
    return 0;
}

/* Compares a client's token with a configured one in time that depends only
 * on the configured token's length. */
static int token_equal(const uint8_t *given, size_t glen, const char *want)
{
    size_t wlen = strlen(want);
    unsigned diff = glen != wlen;
    for (size_t i = 0; i < wlen; i++)
        diff |= (unsigned)(uint8_t)want[i] ^ (i < glen ? given[i] : 0u);
    return diff == 0;
}

static int cmd_auth(struct pipeline *pl, uint32_t cmd, const uint8_t *p, size_t len)
{
    const struct config *cfg = pl->env->cfg;
    int ok = cfg->ntokens == 0;
    for (int i = 0; i < cfg->ntokens; i++)
        ok |= token_equal(p, len, cfg->tokens[i]); /* no early exit */
    if (ok) {
        pl->authed = true;
        proto_msg_reply(pl, cmd, NULL, 0);
        return 0;
    }
    if (++pl->auth_failures >= 3) {
        proto_msg_conn_error(pl, MSG_ERR_AUTH_FAILED, "third wrong token");
        return 0;
    }
    proto_msg_error(pl, cmd, MSG_ERR_AUTH_FAILED, "wrong token");
    return 0;
}

static int cmd_stats(struct pipeline *pl, uint32_t cmd, const uint8_t *p, size_t len)
{
    (void)p;
    (void)len;
    char text[STATS_TEXT_MAX];
    size_t n = stats_format(pl->env->all, text, sizeof text);
    proto_msg_reply(pl, cmd, text, n);
    return 0;
}

static int cmd_delay_check(struct pipeline *pl, uint32_t cmd, const uint8_t *p, size_t len)
{
    if (!pl->env->cfg->delay_command) {
        proto_msg_error(pl, cmd, MSG_ERR_DISABLED, "DELAY is off ([diagnostics] delay_command)");
        return -1;
    }
    if (len < 4 || msg_get_u32(p) > DELAY_MAX_MS) {
        proto_msg_error(pl, cmd, MSG_ERR_BAD_PAYLOAD, "DELAY needs u32 milliseconds <= 60000");
        return -1;
    }
    return 0;
}

/* DELAY's work, on a worker thread: wait, then answer with the bytes after
 * the u32. It stands in for slow business work in tests and benchmarks. */
static void cmd_delay_run(struct worker_pool *pool, struct worker_job *job)
{
    worker_sleep(pool, msg_get_u32(job->payload));
    uint8_t h[MSG_HEADER_LEN];
    uint32_t n = (uint32_t)(job->len - 4);
    msg_header_encode(h, MSG_FLAG_REPLY | job->command, n);
    if (buffer_reserve(&job->result, sizeof h + n) == 0) {
        buffer_append(&job->result, h, sizeof h);
        buffer_append(&job->result, job->payload + 4, n);
    }
}

/* The command table, indexed by command number. */
static const struct cmd_def table[] = {
    [MSG_CMD_PING] = {MSG_CMD_PING, "PING", CMD_INLINE, 0, cmd_ping, NULL},
    [MSG_CMD_ECHO] = {MSG_CMD_ECHO, "ECHO", CMD_INLINE, 1, cmd_echo, NULL},
    [MSG_CMD_AUTH] = {MSG_CMD_AUTH, "AUTH", CMD_INLINE, 0, cmd_auth, NULL},
    [MSG_CMD_STATS] = {MSG_CMD_STATS, "STATS", CMD_INLINE, 1, cmd_stats, NULL},
    [MSG_CMD_DELAY] = {MSG_CMD_DELAY, "DELAY", CMD_WORKER, 1, cmd_delay_check, cmd_delay_run},
};

const struct cmd_def *commands_find(uint32_t command)
{
    if (command >= sizeof table / sizeof table[0] || table[command].fn == NULL)
        return NULL;
    return &table[command];
}
