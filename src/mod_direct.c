/* mod_direct: DIRECT (21), a module registered through module.h: a message
 * to every connection of an identity, on every reactor, as a DELIVER (22)
 * push carrying the sender's identity (PROTOCOL.md "Identities and direct
 * messages"). DIRECT fans out to every reactor, each of which queues the
 * one encoded DELIVER frame to its connections holding the target identity;
 * the reply counts them. The sender's own reactor delivers at once, the
 * others through their mailboxes. Order from one sender to one receiver
 * holds: a sender's fan-outs reach each reactor in the order they were sent. */
#include "mod_builtin.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "backplane.h"
#include "config.h"
#include "fanout.h"
#include "msg.h"
#include "pipeline.h"
#include "proto_msg.h"
#include "pubsub.h"
#include "stats.h"

/* The fan-out's payload: u8 target length, the target identity (what each
 * reactor looks up), then the DELIVER frames (proto_msg_frames), encoded
 * once for everyone. */

static void direct_visit(struct fanout *f, const struct pipeline_env *env)
{
    size_t tlen = f->data[0];
    struct pubsub_frames frames;
    proto_msg_frames_view(f->data + 1 + tlen, &frames);
    frames.owner = &f->ref;
    uint32_t skipped;
    uint32_t n = pubsub_deliver(env->identities, f->data + 1, tlen, &frames,
                                env->cfg->out_high_water, &skipped);
    stats_add(env->stats, STATS_DELIVERS, n);
    stats_add(env->stats, STATS_FRAMES_OUT, n);
    stats_add(env->stats, STATS_DELIVERS_DROPPED, skipped);
    atomic_fetch_add_explicit(&f->count, n, memory_order_relaxed);
}

/* The reply: u32 connections on this node, then u32 other nodes. */
static void direct_reply(const struct pipeline_env *env, uint64_t conn_id, uint32_t seq,
                         uint32_t local, uint32_t nodes)
{
    uint8_t counts[8];
    msg_put_u32(counts, local);
    msg_put_u32(counts + 4, nodes);
    proto_msg_reply_late(env, conn_id, seq, MSG_CMD_DIRECT, counts, sizeof counts);
}

/* A DIRECT sent on to the other nodes, waiting for how many there were. */
struct direct_remote {
    struct backplane_reply r;          /* first: its item runs on the origin reactor */
    uint64_t conn_id;
    uint32_t seq;
    uint32_t local;
};

static void remote_answered(struct mailbox_item *it, void *ctx)
{
    struct direct_remote *d = (struct direct_remote *)it;
    direct_reply(ctx, d->conn_id, d->seq, d->local, d->r.nodes);
    free(d);
}

static void remote_dropped(struct mailbox_item *it) { free(it); }

/* Every reactor has queued its share. Without a cluster the reply follows at
 * once (0 other nodes); with one, the DELIVER goes to the other nodes now
 * (fan-outs of one sender finish in the order they were sent, so the
 * backplane gets them in order too) and the reply waits for Redis's count. */
static void direct_done(struct fanout *f, const struct pipeline_env *env)
{
    uint32_t local = (uint32_t)atomic_load_explicit(&f->count, memory_order_relaxed);
    const struct backplane *bp = env->backplane;
    struct direct_remote *d = bp ? malloc(sizeof *d) : NULL;
    if (!d) {
        direct_reply(env, f->conn_id, f->seq, local, 0);
        return;
    }
    *d = (struct direct_remote){
        .r = {.item = {.run = remote_answered, .drop = remote_dropped},
              .box = env->boxes[env->reactor]},
        .conn_id = f->conn_id, .seq = f->seq, .local = local};
    size_t tlen = f->data[0];
    struct pubsub_frames frames;
    proto_msg_frames_view(f->data + 1 + tlen, &frames);
    bp->ops->publish(bp->ctx, BACKPLANE_IDENTITY, f->data + 1, tlen, frames.p[0] + MSG_HEADER_LEN,
                     frames.n[0] - MSG_HEADER_LEN, &d->r);
}

static const struct fanout_ops direct_ops = {.visit = direct_visit, .done = direct_done};

/* The fan-out of a DIRECT to target (u8 length, the identity) whose DELIVER
 * payload is dlen bytes, with its frames fr, for reply slot seq of conn_id;
 * the caller writes the plain payload at *deliver. NULL when out of memory.
 * Reactor thread. */
static struct fanout *direct_fanout(const struct pipeline_env *env, uint64_t conn_id,
                                    uint32_t seq, const uint8_t *target,
                                    const struct proto_msg_frames *fr, size_t dlen,
                                    uint8_t **deliver)
{
    size_t tlen = target[0];
    struct fanout *f = fanout_new(&direct_ops, env->nreactors, env->boxes, env->reactor, conn_id,
                                  seq, NULL, 1 + tlen + proto_msg_frames_size(fr, dlen), false,
                                  env->bufs);
    if (!f)
        return NULL;
    memcpy(f->data, target, 1 + tlen);
    *deliver = proto_msg_frames_write(f->data + 1 + tlen, MSG_CMD_DELIVER, fr, dlen);
    return f;
}

/* One reactor and no other nodes: the count is known once this reactor
 * has delivered. */
static bool direct_alone(const struct pipeline_env *env)
{
    return env->nreactors == 1 && !env->backplane;
}

/* Delivers f, whose reply has slot seq of conn_id: here at once, on the
 * other reactors through their mailboxes. Alone (direct_alone), the counts
 * are known at once: the reply to req when it is given (no slot was
 * reserved), else in the slot. Reactor thread. */
static void direct_run(const struct pipeline_env *env, struct fanout *f, uint64_t conn_id,
                       uint32_t seq, msgd_req *req)
{
    if (!direct_alone(env)) {
        fanout_start_here(f, env);
        return;
    }
    uint32_t local = (uint32_t)fanout_run_alone(f, env);
    if (!req) {
        direct_reply(env, conn_id, seq, local, 0);
        return;
    }
    uint8_t counts[8];
    msg_put_u32(counts, local);
    msg_put_u32(counts + 4, 0);
    msgd_reply(req, counts, sizeof counts);
}

/* A big DIRECT's frames came back from the workers (data: the target, then
 * the DELIVER payload; the sender's input was held meanwhile). */
static void direct_ready(const struct pipeline_env *env, uint64_t conn_id, uint32_t seq,
                         const uint8_t *data, size_t len, const struct proto_msg_frames *fr)
{
    size_t off = 1 + (size_t)data[0];
    uint8_t *deliver;
    struct fanout *f = direct_fanout(env, conn_id, seq, data, fr, len - off, &deliver);
    if (!f) {
        proto_msg_fail(env, conn_id);
        return;
    }
    memcpy(deliver, data + off, len - off);
    direct_run(env, f, conn_id, seq, NULL);
}

/* Sends a big DIRECT (the target, then its DELIVER payload: from's length,
 * from, the message) to the workers to compress. False when that could not
 * be done (the caller goes on inline). */
static bool direct_offload(struct pipeline *pl, uint32_t seq, const uint8_t *p, const char *from,
                           size_t from_len, const uint8_t *msg, size_t mlen)
{
    uint8_t n8 = (uint8_t)from_len;
    size_t off = 1 + (size_t)p[0];
    const struct iovec data[] = {{(void *)(uintptr_t)p, off}, {&n8, 1},
                                 {(void *)(uintptr_t)from, from_len},
                                 {(void *)(uintptr_t)msg, mlen}};
    return proto_msg_frames_offload(pl, seq, data, 4, off, direct_ready);
}

/* DIRECT: u8 identity length (1..255), the identity, the message. A message
 * too big to compress on the reactor is compressed on the workers first,
 * with the sender's input held. Reactor thread. */
static void cmd_direct(msgd_req *req, const uint8_t *p, size_t len)
{
    struct pipeline *pl = proto_msg_req_pipeline(req);
    size_t from_len;
    const char *from = proto_msg_identity(pl, &from_len);
    if (!from) {
        msgd_error(req, MSG_ERR_NOT_AUTHENTICATED, "DIRECT needs an identity: AUTH first");
        return;
    }
    if (len < 1 || p[0] == 0 || (size_t)p[0] + 1 > len) {
        msgd_error(req, MSG_ERR_BAD_PAYLOAD,
                   "DIRECT needs u8 identity length (1..255), the identity, then the message");
        return;
    }
    size_t tlen = p[0], mlen = len - 1 - tlen;
    const uint8_t *msg = p + 1 + tlen;
    size_t dlen = 1 + from_len + mlen; /* DELIVER's payload */
    const struct pipeline_env *env = pl->env;
    bool alone = direct_alone(env), big = proto_msg_frames_big(env, dlen);
    long seq = alone && !big ? 0 : proto_msg_req_reserve(req);
    if (seq < 0)
        return; /* out of memory: the pipeline is marked failed */
    stats_add(env->stats, STATS_DIRECTS, 1);
    if (big && direct_offload(pl, (uint32_t)seq, p, from, from_len, msg, mlen))
        return;
    /* Compressing needs the DELIVER payload in one piece; only then is it
     * put together first. */
    struct buffer whole = BUFFER_INIT; /* from the reactor's pool, and back */
    struct proto_msg_frames fr = {0};  /* no compressed frame unless prepared */
    if (proto_msg_frames_wanted(env, dlen) && buffer_pool_reserve(env->bufs, &whole, dlen) == 0) {
        uint8_t n8 = (uint8_t)from_len;
        buffer_append(&whole, &n8, 1);
        buffer_append(&whole, from, from_len);
        buffer_append(&whole, msg, mlen);
        proto_msg_frames_prepare(env, &fr, buffer_peek(&whole), dlen);
        buffer_consume(&whole, dlen);
        buffer_pool_put(env->bufs, &whole);
    }
    buffer_free(&whole);
    uint8_t *d;
    struct fanout *f = direct_fanout(env, pl->conn_id, (uint32_t)seq, p, &fr, dlen, &d);
    proto_msg_frames_free(env, &fr);
    if (!f) {
        pl->flags |= PIPELINE_FAILED; /* a reserved slot goes with it */
        return;
    }
    *d++ = (uint8_t)from_len;
    memcpy(d, from, from_len);
    memcpy(d + from_len, msg, mlen);
    direct_run(env, f, pl->conn_id, (uint32_t)seq, alone && !big ? req : NULL);
}

static int direct_init(const struct msgd_module *self, char *err, size_t errlen)
{
    static const struct msgd_command cmd = {MSG_CMD_DIRECT, "DIRECT", MSGD_DEFERRED,
                                            MSGD_NEEDS_AUTH, cmd_direct, NULL};
    return msgd_command_register(self, &cmd, err, errlen);
}

const struct msgd_module mod_direct = {
    .api_version = MSGD_MODULE_API_VERSION,
    .name = "direct",
    .init = direct_init,
};
