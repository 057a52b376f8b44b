/* mod_direct: DIRECT (21), a module registered through module.h: a message
 * to every connection of an identity, on every reactor, as a DELIVER (22)
 * push carrying the sender's identity (PROTOCOL.md "Identities and direct
 * messages"). DIRECT fans out to every reactor, each of which queues the
 * one encoded DELIVER frame to its connections holding the target identity;
 * the reply counts them. Order from one sender to one receiver holds: a
 * sender's fan-outs reach each reactor's mailbox in the order they were sent. */
#include "mod_builtin.h"

#include <stdatomic.h>
#include <string.h>

#include "config.h"
#include "fanout.h"
#include "msg.h"
#include "pipeline.h"
#include "proto_msg.h"
#include "pubsub.h"
#include "stats.h"

/* The fan-out's payload: u8 target length, the target identity (what each
 * reactor looks up), then the DELIVER frame, encoded once for everyone. */

static void direct_visit(struct fanout *f, const struct pipeline_env *env)
{
    size_t tlen = f->data[0];
    const uint8_t *frame = f->data + 1 + tlen;
    uint32_t skipped;
    uint32_t n = pubsub_deliver(env->identities, f->data + 1, tlen, frame, f->len - 1 - tlen,
                                env->cfg->out_high_water, &skipped);
    stats_add(env->stats, STATS_DELIVERS, n);
    stats_add(env->stats, STATS_FRAMES_OUT, n);
    stats_add(env->stats, STATS_DELIVERS_DROPPED, skipped);
    atomic_fetch_add_explicit(&f->count, n, memory_order_relaxed);
}

/* Every reactor has queued its share: the reply is u32 connections on this
 * node, then u32 other nodes it was forwarded to (no cluster yet: 0). */
static void direct_done(struct fanout *f, const struct pipeline_env *env)
{
    uint8_t counts[8];
    msg_put_u32(counts, (uint32_t)atomic_load_explicit(&f->count, memory_order_relaxed));
    msg_put_u32(counts + 4, 0);
    proto_msg_reply_late(env, f->conn_id, f->seq, MSG_CMD_DIRECT, counts, sizeof counts);
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
    long seq = proto_msg_req_reserve(req);
    struct fanout *f = seq < 0 ? NULL
                               : fanout_new(&direct_ops, env->nreactors, env->boxes, env->reactor,
                                            pl->conn_id, (uint32_t)seq, NULL,
                                            1 + tlen + MSG_HEADER_LEN + dlen, false, env->bufs);
    if (!f) {
        if (seq >= 0)
            pipeline_unreserve(pl, (uint32_t)seq);
        pl->flags |= PIPELINE_FAILED;
        return;
    }
    uint8_t *d = f->data;
    memcpy(d, p, 1 + tlen);                      /* target length and target */
    d += 1 + tlen;
    msg_header_encode(d, MSG_CMD_DELIVER, (uint32_t)dlen);
    d += MSG_HEADER_LEN;
    *d++ = (uint8_t)from_len;
    memcpy(d, from, from_len);
    memcpy(d + from_len, p + 1 + tlen, mlen);
    stats_add(env->stats, STATS_DIRECTS, 1);
    fanout_start(f);
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
