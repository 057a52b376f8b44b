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

/* DIRECT: u8 identity length (1..255), the identity, the message. Reactor
 * thread. */
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
    size_t dlen = 1 + from_len + mlen; /* DELIVER's payload */
    const struct pipeline_env *env = pl->env;
    /* Compressing needs the DELIVER payload in one piece; only then is it
     * put together first. */
    struct buffer whole = BUFFER_INIT; /* from the reactor's pool, and back */
    struct proto_msg_frames fr = {0};  /* no compressed frame unless prepared */
    if (proto_msg_frames_wanted(env, dlen) && buffer_pool_reserve(env->bufs, &whole, dlen) == 0) {
        uint8_t n8 = (uint8_t)from_len;
        buffer_append(&whole, &n8, 1);
        buffer_append(&whole, from, from_len);
        buffer_append(&whole, p + 1 + tlen, mlen);
        proto_msg_frames_prepare(env, &fr, buffer_peek(&whole), dlen);
        buffer_consume(&whole, dlen);
        buffer_pool_put(env->bufs, &whole);
    }
    buffer_free(&whole);
    /* One reactor and no other nodes: the count is known once this reactor
     * has delivered, so the reply follows at once. */
    bool alone = env->nreactors == 1 && !env->backplane;
    long seq = alone ? 0 : proto_msg_req_reserve(req);
    struct fanout *f = seq < 0 ? NULL
                               : fanout_new(&direct_ops, env->nreactors, env->boxes, env->reactor,
                                            pl->conn_id, (uint32_t)seq, NULL,
                                            1 + tlen + proto_msg_frames_size(&fr, dlen), false,
                                            env->bufs);
    if (!f) {
        if (seq >= 0 && !alone)
            pipeline_unreserve(pl, (uint32_t)seq);
        pl->flags |= PIPELINE_FAILED;
        proto_msg_frames_free(env, &fr);
        return;
    }
    memcpy(f->data, p, 1 + tlen);                /* target length and target */
    uint8_t *d = proto_msg_frames_write(f->data + 1 + tlen, MSG_CMD_DELIVER, &fr, dlen);
    *d++ = (uint8_t)from_len;
    memcpy(d, from, from_len);
    memcpy(d + from_len, p + 1 + tlen, mlen);
    proto_msg_frames_free(env, &fr);
    stats_add(env->stats, STATS_DIRECTS, 1);
    if (alone) {
        uint8_t counts[8];
        msg_put_u32(counts, (uint32_t)fanout_run_alone(f, env));
        msg_put_u32(counts + 4, 0);
        msgd_reply(req, counts, sizeof counts);
    } else {
        fanout_start_here(f, env); /* this reactor's share at once */
    }
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
