/* mod_pubsub: SUBSCRIBE, UNSUBSCRIBE and PUBLISH, as a module registered
 * through module.h. Each reactor keeps its own topic table (pubsub.h); a
 * PUBLISH visits every reactor (fanout.h) with one shared MESSAGE frame. */
#include "mod_builtin.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include "backplane.h"
#include "config.h"
#include "fanout.h"
#include "msg.h"
#include "pipeline.h"
#include "proto_msg.h"
#include "pubsub.h"
#include "stats.h"

/* A topic is 1..255 bytes. */
static int topic_ok(size_t len) { return len >= 1 && len <= PUBSUB_TOPIC_MAX; }

/* SUBSCRIBE: the connection joins the topic on its reactor. Reactor thread. */
static void cmd_subscribe(msgd_req *req, const uint8_t *p, size_t len)
{
    struct pipeline *pl = proto_msg_req_pipeline(req);
    if (!topic_ok(len)) {
        msgd_error(req, MSG_ERR_BAD_PAYLOAD, "topic must be 1..255 bytes");
        return;
    }
    struct msg_conn *m = proto_msg_state(pl);
    int rc = !m ? -ENOMEM
                : pubsub_subscribe(pl->env->pubsub, &m->subs, pl, p, len,
                                   pl->env->cfg->max_subscriptions);
    if (rc == -EDQUOT) {
        msgd_error(req, MSG_ERR_LIMIT_EXCEEDED, "max_subscriptions reached");
        return;
    }
    if (rc < 0) {
        pl->flags |= PIPELINE_FAILED;
        return;
    }
    if (rc == 1)
        stats_add(pl->env->stats, STATS_SUBSCRIPTIONS, 1);
    msgd_reply(req, NULL, 0);
}

/* UNSUBSCRIBE: not subscribed is fine. Reactor thread. */
static void cmd_unsubscribe(msgd_req *req, const uint8_t *p, size_t len)
{
    struct pipeline *pl = proto_msg_req_pipeline(req);
    if (!topic_ok(len)) {
        msgd_error(req, MSG_ERR_BAD_PAYLOAD, "topic must be 1..255 bytes");
        return;
    }
    const struct msg_conn *m = proto_msg_peek(pl);
    if (m && pubsub_unsubscribe(pl->env->pubsub, m->subs, p, len) == 1)
        stats_add(pl->env->stats, STATS_SUBSCRIPTIONS, (uint64_t)-1);
    msgd_reply(req, NULL, 0);
}

/* PUBLISH on one reactor: deliver to its own subscribers and add to the
 * tally. The fan-out's data: u8 topic length, the topic, then the MESSAGE
 * frames (proto_msg_frames). */
static void publish_visit(struct fanout *f, const struct pipeline_env *env)
{
    uint32_t skipped;
    struct pubsub_frames frames;
    proto_msg_frames_view(f->data + 1 + f->data[0], &frames);
    frames.owner = &f->ref;
    uint32_t n = pubsub_deliver(env->pubsub, f->data + 1, f->data[0], &frames,
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

/* The fan-out of a PUBLISH payload (u8 topic length, topic, message: the
 * MESSAGE payload) with its frames fr, for reply slot seq of conn_id; NULL
 * when out of memory. Reactor thread. */
static struct fanout *publish_fanout(const struct pipeline_env *env, uint64_t conn_id,
                                     uint32_t seq, const uint8_t *p, size_t len,
                                     const struct proto_msg_frames *fr)
{
    size_t klen = 1 + (size_t)p[0];
    struct fanout *f = fanout_new(&publish_ops, env->nreactors, env->boxes, env->reactor, conn_id,
                                  seq, NULL, klen + proto_msg_frames_size(fr, len), false,
                                  env->bufs);
    if (!f)
        return NULL;
    memcpy(f->data, p, klen);
    memcpy(proto_msg_frames_write(f->data + klen, MSG_CMD_MESSAGE, fr, len), p, len);
    return f;
}

/* Delivers f, whose reply has slot seq of conn_id: here at once, and on
 * the other reactors through their mailboxes. With one reactor the count
 * is known at once: the reply to req when it is given (no slot was
 * reserved), else in the slot. Reactor thread. */
static void publish_run(const struct pipeline_env *env, struct fanout *f, uint64_t conn_id,
                        uint32_t seq, msgd_req *req)
{
    if (env->nreactors != 1) {
        fanout_start_here(f, env);
        return;
    }
    uint8_t count[4];
    msg_put_u32(count, (uint32_t)fanout_run_alone(f, env));
    if (req)
        msgd_reply(req, count, sizeof count);
    else
        proto_msg_reply_late(env, conn_id, seq, MSG_CMD_PUBLISH, count, sizeof count);
}

/* A big PUBLISH's frames came back from the workers (the sender's input
 * was held meanwhile): it is delivered now, and its reply takes its slot. A
 * sender that has gone still has its message delivered. */
static void publish_ready(const struct pipeline_env *env, uint64_t conn_id, uint32_t seq,
                          const uint8_t *p, size_t len, const struct proto_msg_frames *fr)
{
    struct fanout *f = publish_fanout(env, conn_id, seq, p, len, fr);
    if (f)
        publish_run(env, f, conn_id, seq, NULL);
    else
        proto_msg_fail(env, conn_id);
}

/* PUBLISH: the request payload (u8 topic length, topic, message) is exactly
 * the MESSAGE payload, so the MESSAGE frame is encoded once here (and once
 * compressed per codec in use) and shared by every reactor. This reactor's
 * subscribers get it at once; with one reactor the reply follows at once too,
 * otherwise it waits in its place until the other reactors have delivered.
 * A payload too big to compress on the reactor is compressed on the workers
 * first, with the sender's input held. Reactor thread. */
static void cmd_publish(msgd_req *req, const uint8_t *p, size_t len)
{
    struct pipeline *pl = proto_msg_req_pipeline(req);
    if (len < 2 || p[0] == 0 || (size_t)p[0] + 1 > len) {
        msgd_error(req, MSG_ERR_BAD_PAYLOAD,
                   "PUBLISH needs u8 topic length (1..255), the topic, then the message");
        return;
    }
    const struct pipeline_env *env = pl->env;
    bool alone = env->nreactors == 1;
    bool big = proto_msg_frames_big(env, len);
    long seq = alone && !big ? 0 : proto_msg_req_reserve(req);
    if (seq < 0)
        return; /* out of memory: the pipeline is marked failed */
    const struct iovec data = {(void *)(uintptr_t)p, len};
    if (!big || !proto_msg_frames_offload(pl, (uint32_t)seq, &data, 1, 0, publish_ready)) {
        struct proto_msg_frames fr;
        proto_msg_frames_prepare(env, &fr, p, len);
        struct fanout *f = publish_fanout(env, pl->conn_id, (uint32_t)seq, p, len, &fr);
        proto_msg_frames_free(env, &fr);
        if (!f) {
            pl->flags |= PIPELINE_FAILED; /* its reserved slot goes with it */
            return;
        }
        publish_run(env, f, pl->conn_id, (uint32_t)seq, alone && !big ? req : NULL);
    }
    stats_add(env->stats, STATS_PUBLISHED, 1);
    /* The other nodes get it once, in the order this connection sent it. */
    if (env->backplane)
        env->backplane->ops->publish(env->backplane->ctx, BACKPLANE_TOPIC, p + 1, p[0], p, len,
                                     NULL);
}

static int pubsub_init_cmds(const struct msgd_module *self, char *err, size_t errlen)
{
    static const struct msgd_command cmds[] = {
        {MSG_CMD_SUBSCRIBE, "SUBSCRIBE", MSGD_INLINE, MSGD_NEEDS_AUTH, cmd_subscribe, NULL},
        {MSG_CMD_UNSUBSCRIBE, "UNSUBSCRIBE", MSGD_INLINE, MSGD_NEEDS_AUTH, cmd_unsubscribe, NULL},
        {MSG_CMD_PUBLISH, "PUBLISH", MSGD_DEFERRED, MSGD_NEEDS_AUTH, cmd_publish, NULL},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        int rc = msgd_command_register(self, &cmds[i], err, errlen);
        if (rc < 0)
            return rc;
    }
    return 0;
}

const struct msgd_module mod_pubsub = {
    .api_version = MSGD_MODULE_API_VERSION,
    .name = "pubsub",
    .init = pubsub_init_cmds,
};
