/* mod_core: msgd's core commands PING, ECHO, AUTH, STATS and DELAY, as a
 * module registered through module.h like any loaded one. */
#include "mod_builtin.h"

#include <string.h>

#include "config.h"
#include "msg.h"
#include "pipeline.h"
#include "proto_msg.h"
#include "stats.h"

#define PING_MAX 1024u
#define DELAY_MAX_MS 60000u

/* PING: the payload back (at most 1 KiB). Reactor thread. */
static void cmd_ping(msgd_req *req, const uint8_t *p, size_t len)
{
    if (len > PING_MAX)
        msgd_error(req, MSG_ERR_BAD_PAYLOAD, "PING payload over 1 KiB");
    else
        msgd_reply(req, p, len);
}

/* ECHO: the payload back. Reactor thread. */
static void cmd_echo(msgd_req *req, const uint8_t *p, size_t len) { msgd_reply(req, p, len); }

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

/* AUTH (PROTOCOL.md "Identities"): with tokens configured, the payload is a
 * token, compared with every entry's token part in time that depends only on
 * the configured tokens, and the matching entry's identity (if it has one)
 * becomes the connection's; without tokens, the payload itself (1..255
 * bytes) is the identity, unchecked. Modules hear of a success (on_auth).
 * Reactor thread. */
static void cmd_auth(msgd_req *req, const uint8_t *p, size_t len)
{
    struct pipeline *pl = proto_msg_req_pipeline(req);
    const struct config *cfg = pl->env->cfg;
    if (cfg->ntokens == 0 && (len == 0 || len > CONFIG_IDENTITY_MAX)) {
        msgd_error(req, MSG_ERR_BAD_PAYLOAD,
                   "without tokens, AUTH carries an identity of 1..255 bytes");
        return;
    }
    struct msg_conn *m = proto_msg_state(pl);
    if (!m) {
        pl->flags |= PIPELINE_FAILED;
        return;
    }
    const char *who = cfg->ntokens == 0 ? (const char *)p : NULL;
    size_t who_len = cfg->ntokens == 0 ? len : 0;
    int ok = cfg->ntokens == 0;
    for (int i = 0; i < cfg->ntokens; i++) {
        const char *entry = cfg->tokens[i], *colon = strchr(entry, ':');
        int match = token_equal(p, len, colon ? colon + 1 : entry); /* no early exit */
        if (match && !ok && colon) {
            who = entry;
            who_len = (size_t)(colon - entry);
        }
        ok |= match;
    }
    if (ok) {
        if (proto_msg_set_identity(pl, who, who_len) < 0) {
            pl->flags |= PIPELINE_FAILED;
            return;
        }
        m->authed = true;
        msgd_reply(req, NULL, 0);
        proto_msg_authenticated(pl);
        return;
    }
    if (++m->auth_failures >= 3) {
        proto_msg_conn_error(pl, MSG_ERR_AUTH_FAILED, "third wrong token");
        return;
    }
    msgd_error(req, MSG_ERR_AUTH_FAILED, "wrong token");
}

/* STATS: every counter of every reactor as text. Reactor thread. */
static void cmd_stats(msgd_req *req, const uint8_t *p, size_t len)
{
    (void)p;
    (void)len;
    struct pipeline *pl = proto_msg_req_pipeline(req);
    struct buffer text = BUFFER_INIT;
    if (stats_format(pl->env->all, &text) < 0)
        pl->flags |= PIPELINE_FAILED;
    else
        msgd_reply(req, buffer_peek(&text), buffer_readable(&text));
    buffer_free(&text);
}

/* DELAY's check, on the reactor: switched on, and a sane u32. */
static void cmd_delay_check(msgd_req *req, const uint8_t *p, size_t len)
{
    struct pipeline *pl = proto_msg_req_pipeline(req);
    if (!pl->env->cfg->delay_command)
        msgd_error(req, MSG_ERR_DISABLED, "DELAY is off ([diagnostics] delay_command)");
    else if (len < 4 || msg_get_u32(p) > DELAY_MAX_MS)
        msgd_error(req, MSG_ERR_BAD_PAYLOAD, "DELAY needs u32 milliseconds <= 60000");
}

/* DELAY's work, on a worker thread: wait, then answer with the bytes after
 * the u32. It stands in for slow business work in tests and benchmarks. */
static void cmd_delay(msgd_req *req, const uint8_t *p, size_t len)
{
    msgd_worker_sleep(req, msg_get_u32(p));
    msgd_reply(req, p + 4, len - 4);
}

static int core_init(const struct msgd_module *self, char *err, size_t errlen)
{
    static const struct msgd_command cmds[] = {
        {MSG_CMD_PING, "PING", MSGD_INLINE, 0, cmd_ping, NULL},
        {MSG_CMD_ECHO, "ECHO", MSGD_INLINE, MSGD_NEEDS_AUTH, cmd_echo, NULL},
        {MSG_CMD_AUTH, "AUTH", MSGD_INLINE, 0, cmd_auth, NULL},
        {MSG_CMD_STATS, "STATS", MSGD_INLINE, MSGD_NEEDS_AUTH, cmd_stats, NULL},
        {MSG_CMD_DELAY, "DELAY", MSGD_WORKER, MSGD_NEEDS_AUTH, cmd_delay, cmd_delay_check},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        int rc = msgd_command_register(self, &cmds[i], err, errlen);
        if (rc < 0)
            return rc;
    }
    return 0;
}

const struct msgd_module mod_core = {
    .api_version = MSGD_MODULE_API_VERSION,
    .name = "core",
    .init = core_init,
};
