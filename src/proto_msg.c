/* proto_msg: the msg protocol's splitter, decoder, dispatch and encoders. */
#include "proto_msg.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cmdtab.h"
#include "config.h"
#include "msg.h"
#include "pubsub.h"
#include "stats.h"

#define ERR_TEXT_MAX 256

static long msg_split_cb(struct pipeline *pl, const uint8_t *p, size_t n)
{
    const struct config *cfg = pl->env->cfg;
    uint32_t max = (uint32_t)cfg->max_frame;
    if (cfg->ntokens > 0 && !proto_msg_authed(pl) && max > PROTO_MSG_PREAUTH_MAX)
        max = PROTO_MSG_PREAUTH_MAX;
    struct msg_header h;
    return msg_split(p, n, max, &h);
}

/* One request, its payload plain: to its command's handler, timed. */
static void handle_request(struct pipeline *pl, uint32_t cmd, const uint8_t *payload, size_t plen)
{
    const struct cmd_def *def = cmdtab_find(cmd);
    if (!def) {
        proto_msg_error(pl, cmd, MSG_ERR_UNKNOWN_COMMAND, "unknown command");
        return;
    }
    if (def->needs_auth && !proto_msg_authed(pl) && pl->env->cfg->ntokens > 0) {
        proto_msg_error(pl, cmd, MSG_ERR_NOT_AUTHENTICATED, "AUTH first");
        return;
    }
    uint32_t seq_before = pl->next_seq;
    proto_msg_dispatch(pl, def, cmd, payload, plen);
    uint64_t now = latency_now_ns();
    /* A reply whose place was held (a worker job, a deferred answer) is
     * timed when it completes; one answered at once is timed now. */
    if (pl->next_seq == seq_before)
        latency_record(&pl->env->stats->lat, def->slot, now - pl->req_t0);
    pl->req_t0 = now;
}

void proto_msg_decompressed(struct pipeline *pl, uint32_t cmd, long n, const struct buffer *plain)
{
    if (n == -EFBIG) {
        stats_add(pl->env->stats, STATS_CLOSED_VIOLATION, 1);
        proto_msg_conn_error(pl, MSG_ERR_TOO_LARGE, "frame too large once decompressed");
    } else if (n == -ENOMEM) {
        pl->flags |= PIPELINE_FAILED;
    } else if (n < 0) {
        proto_msg_error(pl, cmd, MSG_ERR_BAD_PAYLOAD, "payload does not decompress");
    } else {
        static const uint8_t none[1];
        handle_request(pl, cmd & ~MSG_FLAG_COMPRESSED, n ? buffer_peek(plain) : none, (size_t)n);
    }
}

/* A COMPRESSED request (PROTOCOL.md "Compression"): decompressed within
 * max_frame (the pre-auth cap before AUTH), then handled as if plain. Past
 * the bound is connection-level TOO_LARGE; what does not decompress is
 * BAD_PAYLOAD, and the connection goes on. A big one is decompressed on the
 * worker pool, with the connection's later requests held behind it. */
static void handle_compressed(struct pipeline *pl, uint32_t cmd, const uint8_t *p, size_t len)
{
    if (!pl->codec) { /* rule 4: no codec agreed, no such command */
        proto_msg_error(pl, cmd, MSG_ERR_UNKNOWN_COMMAND, "COMPRESSED before HELLO agreed a codec");
        return;
    }
    const struct config *cfg = pl->env->cfg;
    size_t max = cfg->max_frame;
    if (cfg->ntokens > 0 && !proto_msg_authed(pl) && max > PROTO_MSG_PREAUTH_MAX)
        max = PROTO_MSG_PREAUTH_MAX;
    if (proto_msg_decompress_offload(pl, cmd, p, len, max))
        return;
    /* The room comes from the reactor's pool and goes back to it: a fresh
     * buffer per request would be mmap'd and munmap'd each time (past 16
     * KiB), and the TLB shootdowns of munmap cost more than zstd itself. */
    struct buffer plain = BUFFER_INIT;
    size_t guess = len < max / 8 ? len * 8 : max;
    buffer_pool_get_fit(pl->env->bufs, &plain, guess < 4096 ? 4096 : guess);
    proto_msg_decompressed(pl, cmd, proto_msg_decompress(pl, p, len, max, &plain), &plain);
    buffer_consume(&plain, buffer_readable(&plain));
    buffer_pool_put(pl->env->bufs, &plain);
    buffer_free(&plain);
}

static void msg_handle_cb(struct pipeline *pl, const uint8_t *frame, size_t len)
{
    uint32_t cmd = msg_get_u32(frame + 8);
    /* pl->req_t0 is when this frame was decoded: set by the connection at the
     * start of a batch, and by the end of the previous timed frame (one clock
     * read per frame, not two). */
    const uint8_t *payload = frame + MSG_HEADER_LEN;
    size_t plen = len - MSG_HEADER_LEN;
    if (cmd & MSG_FLAG_REPLY) {
        /* A client's reply: the answer to a server PING is life (the
         * connection already noted the bytes); anything else is dropped. */
        if (cmd != (MSG_FLAG_REPLY | MSG_CMD_PING))
            stats_add(pl->env->stats, STATS_REPLIES_DROPPED, 1);
        return;
    }
    if (pl->env->draining && !pl->read_before_drain && cmd != MSG_CMD_PING) {
        proto_msg_error(pl, cmd, MSG_ERR_SHUTTING_DOWN, "shutting down");
        return;
    }
    if (cmd & MSG_FLAG_COMPRESSED)
        handle_compressed(pl, cmd, payload, plen);
    else
        handle_request(pl, cmd, payload, plen);
}

static void msg_violation_cb(struct pipeline *pl, long code)
{
    uint32_t c = (uint32_t)-code;
    const char *text = c == MSG_ERR_BAD_MAGIC ? "bad magic"
                     : c == MSG_ERR_BAD_VERSION ? "bad version"
                     : c == MSG_ERR_TOO_LARGE ? "frame too large"
                     : "protocol violation";
    stats_add(pl->env->stats, STATS_CLOSED_VIOLATION, 1);
    proto_msg_conn_error(pl, c, text);
}

/* A silent connection's heartbeat: a server PING (rule 2), as a push. */
static void msg_heartbeat_cb(struct pipeline *pl)
{
    uint8_t h[MSG_HEADER_LEN];
    msg_header_encode(h, MSG_CMD_PING, 0);
    pipeline_push2(pl, h, sizeof h, NULL, 0);
    stats_add(pl->env->stats, STATS_FRAMES_OUT, 1);
}

static void write_error(struct pipeline *pl, uint32_t word, uint32_t code, const char *text,
                        bool push);

/* The last word to a silent connection: a push, so it does not wait behind
 * replies still held for a worker job. */
static void msg_idle_cb(struct pipeline *pl)
{
    write_error(pl, MSG_CONN_ERROR, MSG_ERR_IDLE_TIMEOUT, "idle timeout", true);
}

/* The drain notice (rule 6): u32 milliseconds left, then a reason. */
static void msg_goaway_cb(struct pipeline *pl, uint32_t ms)
{
    static const char reason[] = "server shutting down";
    uint8_t payload[4 + sizeof reason - 1];
    msg_put_u32(payload, ms);
    memcpy(payload + 4, reason, sizeof reason - 1);
    uint8_t h[MSG_HEADER_LEN];
    msg_header_encode(h, MSG_CMD_GOAWAY, sizeof payload);
    pipeline_push2(pl, h, sizeof h, payload, sizeof payload);
    stats_add(pl->env->stats, STATS_FRAMES_OUT, 1);
}

struct msg_conn *proto_msg_state(struct pipeline *pl)
{
    if (!pl->state)
        pl->state = calloc(1, sizeof(struct msg_conn));
    return pl->state;
}

int proto_msg_set_identity(struct pipeline *pl, const void *id, size_t len)
{
    struct msg_conn *m = proto_msg_state(pl);
    char *copy = m && len ? malloc(len + 1) : NULL;
    if (!m || (len && !copy))
        return -ENOMEM;
    free(m->identity);
    m->identity = NULL;
    m->identity_len = 0;
    /* The reactor's identity table follows (DIRECT finds connections there). */
    pubsub_remove_all(pl->env->identities, &m->ident);
    if (!len)
        return 0;
    if (pubsub_subscribe(pl->env->identities, &m->ident, pl, id, len, 1) < 0) {
        free(copy);
        return -ENOMEM;
    }
    memcpy(copy, id, len);
    copy[len] = '\0';
    m->identity = copy;
    m->identity_len = (uint8_t)len;
    return 0;
}

/* The identity for describing a connection (admin conns). */
static const char *msg_identity_cb(const struct pipeline *pl, size_t *len)
{
    return proto_msg_identity(pl, len);
}

/* A new connection: the modules hear of it. */
static void msg_open_cb(struct pipeline *pl)
{
    for (int i = 0; i < cmdtab_nmodules(); i++)
        if (cmdtab_module(i)->on_open)
            cmdtab_module(i)->on_open(proto_msg_conn(pl));
}

void proto_msg_authenticated(struct pipeline *pl)
{
    for (int i = 0; i < cmdtab_nmodules(); i++)
        if (cmdtab_module(i)->on_auth)
            cmdtab_module(i)->on_auth(proto_msg_conn(pl));
}

/* A closing connection: the modules hear of it, then their data goes (after
 * every on_close), then it leaves its topics and drops its state. */
static void msg_free_cb(struct pipeline *pl)
{
    for (int i = 0; i < cmdtab_nmodules(); i++)
        if (cmdtab_module(i)->on_close)
            cmdtab_module(i)->on_close(proto_msg_conn(pl));
    proto_msg_codec_set(pl, CODEC_NONE);
    struct msg_conn *m = pl->state;
    if (!m)
        return;
    while (m->mods) {
        struct module_data *d = m->mods;
        m->mods = d->next;
        if (d->free_fn)
            d->free_fn(d->data);
        free(d);
    }
    uint32_t subs = pubsub_remove_all(pl->env->pubsub, &m->subs);
    if (subs)
        stats_add(pl->env->stats, STATS_SUBSCRIPTIONS, -(uint64_t)subs);
    pubsub_remove_all(pl->env->identities, &m->ident);
    free(m->identity);
    free(m);
    pl->state = NULL;
}

const struct proto proto_msg = {
    .name = "msg",
    .counted = true,
    .split = msg_split_cb,
    .handle = msg_handle_cb,
    .violation = msg_violation_cb,
    .heartbeat = msg_heartbeat_cb,
    .idle = msg_idle_cb,
    .goaway = msg_goaway_cb,
    .open = msg_open_cb,
    .free = msg_free_cb,
    .identity = msg_identity_cb,
};

void proto_msg_fail(const struct pipeline_env *env, uint64_t conn_id)
{
    struct pipeline *pl = env->ops->lookup(env->host, conn_id);
    if (!pl)
        return;
    pl->flags |= PIPELINE_FAILED;
    env->ops->defer(pl);
}

void proto_msg_reply_late(const struct pipeline_env *env, uint64_t conn_id, uint32_t seq,
                          uint32_t cmd, const void *payload, size_t len)
{
    uint8_t h[MSG_HEADER_LEN];
    msg_header_encode(h, MSG_FLAG_REPLY | (cmd & MSG_CMD_MASK), (uint32_t)len);
    struct buffer reply = BUFFER_INIT;
    int encoded = buffer_pool_append(env->bufs, &reply, h, sizeof h) == 0 &&
                  buffer_pool_append(env->bufs, &reply, payload, len) == 0;
    if (!encoded)
        buffer_consume(&reply, buffer_readable(&reply));
    if (proto_msg_complete(env, conn_id, seq, &reply) == 0 && encoded)
        stats_add(env->stats, STATS_FRAMES_OUT, 1);
}

void proto_msg_reply(struct pipeline *pl, uint32_t cmd, const void *payload, size_t len)
{
    proto_msg_write_frame(pl, MSG_FLAG_REPLY | (cmd & MSG_CMD_MASK), payload, len, false);
}

/* Encodes an error frame with command word word: in reply order, or as a
 * push that goes straight out. */
static void write_error(struct pipeline *pl, uint32_t word, uint32_t code, const char *text,
                        bool push)
{
    uint8_t frame[MSG_HEADER_LEN + ERR_TEXT_MAX];
    size_t n = msg_encode_error(frame, sizeof frame, word, code, text);
    if (push)
        pipeline_push2(pl, frame, n, NULL, 0);
    else
        pipeline_write(pl, frame, n);
    stats_add(pl->env->stats, STATS_FRAMES_OUT, 1);
    if (code <= MSG_ERR_MAX)
        stats_add(pl->env->stats, (enum stats_id)(STATS_ERRORS + code), 1);
}

void proto_msg_error(struct pipeline *pl, uint32_t cmd, uint32_t code, const char *text)
{
    write_error(pl, MSG_FLAG_REPLY | MSG_FLAG_ERROR | (cmd & MSG_CMD_MASK), code, text, false);
}

void proto_msg_conn_error(struct pipeline *pl, uint32_t code, const char *text)
{
    write_error(pl, MSG_CONN_ERROR, code, text, false);
    pipeline_close_after_flush(pl);
}
