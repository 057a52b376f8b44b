/* commands: the command table and the built-in handlers PING, ECHO, AUTH,
 * STATS and DELAY. */
#include "commands.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include "cmd_direct.h"
#include "cmdtab.h"
#include "config.h"
#include "fanout.h"
#include "msg.h"
#include "proto_msg.h"
#include "pubsub.h"
#include "stats.h"
#include "worker.h"

#define PING_MAX 1024u
#define DELAY_MAX_MS 60000u

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

/* AUTH (PROTOCOL.md "Identities"): with tokens configured, the payload is a
 * token, compared with every entry's token part in time that depends only on
 * the configured tokens, and the matching entry's identity (if it has one)
 * becomes the connection's; without tokens, the payload itself (1..255
 * bytes) is the identity, unchecked. */
static int cmd_auth(struct pipeline *pl, uint32_t cmd, const uint8_t *p, size_t len)
{
    const struct config *cfg = pl->env->cfg;
    if (cfg->ntokens == 0 && (len == 0 || len > CONFIG_IDENTITY_MAX)) {
        proto_msg_error(pl, cmd, MSG_ERR_BAD_PAYLOAD,
                        "without tokens, AUTH carries an identity of 1..255 bytes");
        return 0;
    }
    struct msg_conn *m = proto_msg_state(pl);
    if (!m) {
        pl->flags |= PIPELINE_FAILED;
        return 0;
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
            return 0;
        }
        m->authed = true;
        proto_msg_reply(pl, cmd, NULL, 0);
        return 0;
    }
    if (++m->auth_failures >= 3) {
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
    struct buffer text = BUFFER_INIT;
    if (stats_format(pl->env->all, &text) < 0)
        pl->flags |= PIPELINE_FAILED;
    else
        proto_msg_reply(pl, cmd, buffer_peek(&text), buffer_readable(&text));
    buffer_free(&text);
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

/* A topic is 1..255 bytes. */
static int topic_ok(size_t len) { return len >= 1 && len <= PUBSUB_TOPIC_MAX; }

static int cmd_subscribe(struct pipeline *pl, uint32_t cmd, const uint8_t *p, size_t len)
{
    if (!topic_ok(len)) {
        proto_msg_error(pl, cmd, MSG_ERR_BAD_PAYLOAD, "topic must be 1..255 bytes");
        return 0;
    }
    struct msg_conn *m = proto_msg_state(pl);
    int rc = !m ? -ENOMEM
                : pubsub_subscribe(pl->env->pubsub, &m->subs, pl, p, len,
                                   pl->env->cfg->max_subscriptions);
    if (rc == -EDQUOT) {
        proto_msg_error(pl, cmd, MSG_ERR_LIMIT_EXCEEDED, "max_subscriptions reached");
        return 0;
    }
    if (rc < 0) {
        pl->flags |= PIPELINE_FAILED;
        return 0;
    }
    if (rc == 1)
        stats_add(pl->env->stats, STATS_SUBSCRIPTIONS, 1);
    proto_msg_reply(pl, cmd, NULL, 0);
    return 0;
}

static int cmd_unsubscribe(struct pipeline *pl, uint32_t cmd, const uint8_t *p, size_t len)
{
    if (!topic_ok(len)) {
        proto_msg_error(pl, cmd, MSG_ERR_BAD_PAYLOAD, "topic must be 1..255 bytes");
        return 0;
    }
    const struct msg_conn *m = proto_msg_peek(pl);
    if (m && pubsub_unsubscribe(pl->env->pubsub, m->subs, p, len) == 1)
        stats_add(pl->env->stats, STATS_SUBSCRIPTIONS, (uint64_t)-1);
    proto_msg_reply(pl, cmd, NULL, 0);
    return 0;
}

/* PUBLISH on one reactor: deliver to its own subscribers and add to the
 * tally. */
static void publish_visit(struct fanout *f, const struct pipeline_env *env)
{
    uint32_t skipped;
    const uint8_t *topic = f->data + MSG_HEADER_LEN + 1;
    uint32_t n = pubsub_deliver(env->pubsub, topic, f->data[MSG_HEADER_LEN], f->data, f->len,
                                env->cfg->out_high_water, &skipped);
    stats_add(env->stats, STATS_MESSAGES_DELIVERED, n);
    stats_add(env->stats, STATS_FRAMES_OUT, n);
    stats_add(env->stats, STATS_MESSAGES_DROPPED, skipped);
    atomic_fetch_add_explicit(&f->count, n, memory_order_relaxed);
}

/* Every reactor has delivered: the reply (u32 count) takes its slot. */
static void publish_done(struct fanout *f, const struct pipeline_env *env)
{
    uint8_t count[4];
    msg_put_u32(count, (uint32_t)atomic_load_explicit(&f->count, memory_order_relaxed));
    proto_msg_reply_late(env, f->conn_id, f->seq, MSG_CMD_PUBLISH, count, sizeof count);
}

static const struct fanout_ops publish_ops = {.visit = publish_visit, .done = publish_done};

/* PUBLISH: the request payload (u8 topic length, topic, message) is exactly
 * the MESSAGE payload, so the MESSAGE frame is encoded once here and shared
 * by every reactor. The reply (the count) waits in its slot until every
 * reactor has delivered. */
static int cmd_publish(struct pipeline *pl, uint32_t cmd, const uint8_t *p, size_t len)
{
    if (len < 2 || p[0] == 0 || (size_t)p[0] + 1 > len) {
        proto_msg_error(pl, cmd, MSG_ERR_BAD_PAYLOAD,
                        "PUBLISH needs u8 topic length (1..255), the topic, then the message");
        return 0;
    }
    const struct pipeline_env *env = pl->env;
    long seq = pipeline_reserve(pl, pl->req_t0, cmdtab_slot(cmd));
    struct fanout *f = seq < 0 ? NULL
                               : fanout_new(&publish_ops, env->nreactors, env->boxes, env->reactor,
                                            pl->conn_id, (uint32_t)seq, NULL, MSG_HEADER_LEN + len,
                                            false, env->bufs);
    if (!f) {
        if (seq >= 0)
            pipeline_unreserve(pl, (uint32_t)seq);
        pl->flags |= PIPELINE_FAILED;
        return 0;
    }
    msg_header_encode(f->data, MSG_CMD_MESSAGE, (uint32_t)len);
    memcpy(f->data + MSG_HEADER_LEN, p, len);
    stats_add(env->stats, STATS_PUBLISHED, 1);
    fanout_start(f);
    return 0;
}

int commands_register_builtin(char *err, size_t errlen)
{
    static const struct cmd_def builtin[] = {
        {MSG_CMD_PING, "PING", CMD_INLINE, false, cmd_ping, NULL, 0},
        {MSG_CMD_ECHO, "ECHO", CMD_INLINE, true, cmd_echo, NULL, 0},
        {MSG_CMD_AUTH, "AUTH", CMD_INLINE, false, cmd_auth, NULL, 0},
        {MSG_CMD_STATS, "STATS", CMD_INLINE, true, cmd_stats, NULL, 0},
        {MSG_CMD_DELAY, "DELAY", CMD_WORKER, true, cmd_delay_check, cmd_delay_run, 0},
        {MSG_CMD_SUBSCRIBE, "SUBSCRIBE", CMD_INLINE, true, cmd_subscribe, NULL, 0},
        {MSG_CMD_UNSUBSCRIBE, "UNSUBSCRIBE", CMD_INLINE, true, cmd_unsubscribe, NULL, 0},
        {MSG_CMD_PUBLISH, "PUBLISH", CMD_DEFERRED, true, cmd_publish, NULL, 0},
    };
    for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++) {
        int rc = cmdtab_register(&builtin[i], err, errlen);
        if (rc < 0)
            return rc;
    }
    return cmd_direct_register(err, errlen);
}
