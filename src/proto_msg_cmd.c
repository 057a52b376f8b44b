/* proto_msg_cmd: a msg request's life under module.h: dispatch to its
 * command's handler (inline, deferred, or on the worker pool and back), its
 * answer, and the handles that let a deferred request be answered from any
 * thread. */
#include "proto_msg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailbox.h"
#include "msg.h"
#include "module_runtime.h"
#include "pipeline.h"
#include "stats.h"
#include "worker.h"

#define ERROR_TEXT_MAX 200

/* On the stack of whoever runs the handler: the reactor or a worker. */
struct msgd_req {
    struct pipeline *pl;               /* reactor requests; NULL on a worker */
    struct worker_job *job;            /* worker requests */
    struct worker_pool *pool;
    const struct cmd_def *def;
    uint32_t cmd;
    uint64_t conn_id;
    bool answered;                     /* answered, or deferred */
};

/* A deferred reply: its place (conn_id, seq on reactor), then its bytes,
 * carried to that reactor's mailbox. */
struct msgd_deferred {
    struct mailbox_item item;
    uint64_t conn_id;
    uint32_t seq;
    uint32_t cmd;
    int reactor;
    struct buffer bytes;
};

uint32_t msgd_req_command(const msgd_req *req) { return req->cmd; }
uint64_t msgd_req_conn_id(const msgd_req *req) { return req->conn_id; }
msgd_conn *msgd_req_conn(msgd_req *req) { return (msgd_conn *)(void *)req->pl; }
struct pipeline *proto_msg_req_pipeline(msgd_req *req) { return req->pl; }

/* Encodes a reply frame (word, then payload) into b. Returns 0 or -ENOMEM. */
static int encode(struct buffer *b, uint32_t word, const void *p, size_t len)
{
    uint8_t h[MSG_HEADER_LEN];
    msg_header_encode(h, word, (uint32_t)len);
    if (buffer_reserve(b, sizeof h + len) < 0)
        return -ENOMEM;
    buffer_append(b, h, sizeof h);
    buffer_append(b, p, len);
    return 0;
}

/* Encodes an error frame (word, u32 code, text cut to ERROR_TEXT_MAX). */
static int encode_error(struct buffer *b, uint32_t word, uint32_t code, const char *text)
{
    uint8_t frame[MSG_HEADER_LEN + 4 + ERROR_TEXT_MAX];
    size_t n = msg_encode_error(frame, sizeof frame, word, code, text ? text : "");
    if (buffer_reserve(b, n) < 0)
        return -ENOMEM;
    buffer_append(b, frame, n);
    return 0;
}

int msgd_reply(msgd_req *req, const void *payload, size_t len)
{
    if (req->answered)
        return -EALREADY;
    if (len > UINT32_MAX)
        return -EMSGSIZE;
    req->answered = true;
    if (req->pl) {
        proto_msg_reply(req->pl, req->cmd, payload, len);
        return req->pl->flags & PIPELINE_FAILED ? -ENOMEM : 0;
    }
    return encode(&req->job->result, MSG_FLAG_REPLY | (req->cmd & MSG_CMD_MASK), payload, len);
}

int msgd_error(msgd_req *req, uint32_t code, const char *text)
{
    if (req->answered)
        return -EALREADY;
    req->answered = true;
    if (req->pl) {
        char cut[ERROR_TEXT_MAX + 1];
        snprintf(cut, sizeof cut, "%s", text ? text : "");
        proto_msg_error(req->pl, req->cmd, code, cut);
        return req->pl->flags & PIPELINE_FAILED ? -ENOMEM : 0;
    }
    return encode_error(&req->job->result, MSG_FLAG_REPLY | MSG_FLAG_ERROR | (req->cmd & MSG_CMD_MASK),
                        code, text);
}

long proto_msg_req_reserve(msgd_req *req)
{
    long seq = pipeline_reserve(req->pl, req->pl->req_t0, req->def->slot);
    if (seq < 0)
        req->pl->flags |= PIPELINE_FAILED;
    else
        req->answered = true;
    return seq;
}

/* ---- deferred replies ---- */

/* On the connection's reactor: the reply takes its place. */
static void reply_run(struct mailbox_item *it, void *ctx)
{
    const struct pipeline_env *env = ctx;
    struct msgd_deferred *r = (struct msgd_deferred *)it;
    bool empty = buffer_readable(&r->bytes) == 0;
    if (empty) /* the answer could not be encoded: say so in its place */
        encode_error(&r->bytes, MSG_FLAG_REPLY | MSG_FLAG_ERROR | (r->cmd & MSG_CMD_MASK),
                     MSG_ERR_OVERLOADED, "out of memory");
    if (pipeline_complete_late(env, r->conn_id, r->seq, &r->bytes) < 0)
        stats_add(env->stats, STATS_RESULTS_DROPPED, 1);
    else
        stats_add(env->stats, STATS_FRAMES_OUT, 1);
    buffer_free(&r->bytes);
    free(r);
}

static void reply_drop(struct mailbox_item *it)
{
    struct msgd_deferred *r = (struct msgd_deferred *)it;
    buffer_free(&r->bytes);
    free(r);
}

msgd_deferred *msgd_defer(msgd_req *req)
{
    if (req->answered || !req->pl)
        return NULL; /* a worker's request is answered for it at the end */
    struct msgd_deferred *r = calloc(1, sizeof *r);
    long seq = r ? proto_msg_req_reserve(req) : -ENOMEM;
    if (seq < 0) {
        free(r);
        if (!req->answered)
            msgd_error(req, MSG_ERR_OVERLOADED, "out of memory");
        return NULL;
    }
    r->item.run = reply_run;
    r->item.drop = reply_drop;
    r->conn_id = req->conn_id;
    r->seq = (uint32_t)seq;
    r->cmd = req->cmd;
    r->reactor = req->pl->env->reactor;
    return r;
}

/* Sends the encoded answer to the connection's reactor, or frees it. */
static int reply_post(struct msgd_deferred *r)
{
    struct mailbox *box = module_runtime_box(r->reactor);
    if (!box) {
        reply_drop(&r->item);
        return -ESHUTDOWN;
    }
    mailbox_post(box, &r->item);
    return 0;
}

int msgd_deferred_reply(msgd_deferred *r, const void *payload, size_t len)
{
    if (len <= UINT32_MAX)
        encode(&r->bytes, MSG_FLAG_REPLY | (r->cmd & MSG_CMD_MASK), payload, len);
    return reply_post(r);
}

int msgd_deferred_error(msgd_deferred *r, uint32_t code, const char *text)
{
    encode_error(&r->bytes, MSG_FLAG_REPLY | MSG_FLAG_ERROR | (r->cmd & MSG_CMD_MASK), code, text);
    return reply_post(r);
}

void msgd_deferred_drop(msgd_deferred *r)
{
    msgd_deferred_error(r, MSG_ERR_OVERLOADED, "dropped by the module");
}

/* ---- worker commands ---- */

/* On a worker thread: the handler encodes its answer into job->result. */
static void job_run(struct worker_pool *pool, struct worker_job *job)
{
    struct msgd_req req = {
        .job = job, .pool = pool, .def = cmdtab_find(job->command), .cmd = job->command,
        .conn_id = job->conn_id,
    };
    if (req.def)
        req.def->handler(&req, job->payload, job->len);
    if (!req.answered)
        msgd_error(&req, MSG_ERR_OVERLOADED, "no answer");
}

/* Back on the reactor with a finished job: its reply takes the place held
 * for it. A job whose worker ran out of memory encoding the reply still
 * gets an answer, in its place. */
static void job_back(struct mailbox_item *it, void *ctx)
{
    const struct pipeline_env *env = ctx;
    struct worker_job *job = (struct worker_job *)it;
    if (buffer_readable(&job->result) == 0)
        encode_error(&job->result, MSG_FLAG_REPLY | MSG_FLAG_ERROR | (job->command & MSG_CMD_MASK),
                     MSG_ERR_OVERLOADED, "out of memory");
    if (pipeline_complete_late(env, job->conn_id, job->seq, &job->result) < 0)
        stats_add(env->stats, STATS_RESULTS_DROPPED, 1);
    else
        stats_add(env->stats, STATS_FRAMES_OUT, 1);
    worker_job_free(job);
}

/* Sends a worker command to the reactor's pool, holding its place in the
 * reply order. A full queue is answered OVERLOADED at once. */
static void submit_job(msgd_req *req, const uint8_t *payload, size_t len)
{
    struct pipeline *pl = req->pl;
    long seq = pipeline_reserve(pl, pl->req_t0, req->def->slot);
    struct worker_job *job = seq < 0 ? NULL
                                     : worker_job_new(pl->conn_id, (uint32_t)seq, req->cmd, job_run,
                                                      job_back, payload, len);
    if (!job) {
        if (seq >= 0)
            pipeline_unreserve(pl, (uint32_t)seq);
        pl->flags |= PIPELINE_FAILED;
        return;
    }
    int rc = worker_submit(pl->env->pool, job);
    if (rc == 0) {
        stats_add(pl->env->stats, STATS_JOBS, 1);
        return;
    }
    worker_job_free(job);
    pipeline_unreserve(pl, (uint32_t)seq);
    if (rc == -EAGAIN)
        msgd_error(req, MSG_ERR_OVERLOADED, "worker queue full, retry later");
    else
        msgd_error(req, MSG_ERR_SHUTTING_DOWN, "shutting down");
}

int msgd_worker_sleep(msgd_req *req, uint32_t ms)
{
    if (!req->job)
        return -EPERM;
    return worker_sleep(req->pool, ms) ? 0 : -ECANCELED;
}

void proto_msg_dispatch(struct pipeline *pl, const struct cmd_def *def, uint32_t cmd,
                     const uint8_t *payload, size_t len)
{
    struct msgd_req req = {.pl = pl, .def = def, .cmd = cmd, .conn_id = pl->conn_id};
    if (def->where == MSGD_WORKER) {
        if (def->check)
            def->check(&req, payload, len);
        if (!req.answered)
            submit_job(&req, payload, len);
        return;
    }
    def->handler(&req, payload, len);
    if (!req.answered && !(pl->flags & (PIPELINE_FAILED | PIPELINE_CLOSE)))
        msgd_error(&req, MSG_ERR_OVERLOADED, "no answer");
}
