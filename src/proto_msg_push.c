/* proto_msg_push: msgd_send and msgd_close (module.h) from any thread: done
 * at once on the connection's own reactor, else posted to its mailbox and
 * done there; a connection that has gone is never mistaken for the next one
 * in its slot. */
#include "proto_msg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "conntab.h"
#include "mailbox.h"
#include "module_runtime.h"
#include "msg.h"
#include "stats.h"

/* The msg connection conn_id on env's reactor that may still be sent to. */
static struct pipeline *find(const struct pipeline_env *env, uint64_t conn_id)
{
    struct pipeline *pl = env->ops ? env->ops->lookup(env->host, conn_id) : NULL;
    if (!pl || pl->proto != &proto_msg ||
        (pl->flags & (PIPELINE_CLOSE | PIPELINE_FAILED | PIPELINE_GONE)))
        return NULL;
    return pl;
}

/* msgd_send on the connection's reactor. */
static int push_here(const struct pipeline_env *env, uint64_t conn_id, uint32_t cmd,
                     const void *p, size_t len)
{
    struct pipeline *pl = find(env, conn_id);
    if (!pl)
        return -ENOENT;
    if (len > env->cfg->max_frame)
        return -EMSGSIZE;
    if (pipeline_pending(pl) >= env->cfg->out_high_water)
        return -ENOBUFS;
    uint8_t h[MSG_HEADER_LEN];
    msg_header_encode(h, cmd, (uint32_t)len);
    pipeline_push2(pl, h, sizeof h, p, len);
    stats_add(env->stats, STATS_FRAMES_OUT, 1);
    env->ops->defer(pl); /* written later in this turn: safe inside any callback */
    return 0;
}

/* msgd_close on the connection's reactor. */
static int close_here(const struct pipeline_env *env, uint64_t conn_id, uint32_t code,
                      const char *text)
{
    struct pipeline *pl = find(env, conn_id);
    if (!pl)
        return -ENOENT;
    if (code)
        proto_msg_conn_error(pl, code, text);
    else
        pipeline_close_after_flush(pl);
    env->ops->defer(pl);
    return 0;
}

/* A push or close posted from another thread. */
struct module_post {
    struct mailbox_item item;
    uint64_t conn_id;
    uint32_t cmd;                      /* 0: a close, with code and text in data */
    uint32_t code;
    size_t len;
    uint8_t data[];
};

static void post_run(struct mailbox_item *it, void *ctx)
{
    const struct pipeline_env *env = ctx;
    struct module_post *m = (struct module_post *)it;
    int rc = m->cmd ? push_here(env, m->conn_id, m->cmd, m->data, m->len)
                    : close_here(env, m->conn_id, m->code, (const char *)m->data);
    if (rc < 0 && m->cmd)
        stats_add(env->stats, STATS_MODULE_PUSHES_DROPPED, 1);
    free(m);
}

static void post_drop(struct mailbox_item *it) { free(it); }

/* Runs a push (cmd != 0) or a close where conn_id lives. */
static int route(uint64_t conn_id, uint32_t cmd, uint32_t code, const void *p, size_t len)
{
    int r = CONN_ID_REACTOR(conn_id);
    const struct pipeline_env *env = pipeline_env_current();
    if (env && env->reactor == r)
        return cmd ? push_here(env, conn_id, cmd, p, len)
                   : close_here(env, conn_id, code, p);
    int n = msgd_reactors();
    if (n == 0)
        return -ESHUTDOWN;
    if (r >= n)
        return -ENOENT;
    struct module_post *m = malloc(sizeof *m + len + 1);
    if (!m)
        return -ENOMEM;
    m->item.run = post_run;
    m->item.drop = post_drop;
    m->conn_id = conn_id;
    m->cmd = cmd;
    m->code = code;
    m->len = len;
    if (len)
        memcpy(m->data, p, len);
    m->data[len] = '\0';
    struct mailbox *box = module_runtime_box(r);
    if (!box) {
        free(m);
        return -ESHUTDOWN;
    }
    mailbox_post(box, &m->item);
    return 0;
}

int msgd_send(uint64_t conn_id, uint32_t command, const void *payload, size_t len)
{
    if (command == 0 || command > MSGD_COMMAND_MAX)
        return -EINVAL;
    if (len > UINT32_MAX)
        return -EMSGSIZE;
    return route(conn_id, command, 0, payload, len);
}

int msgd_close(uint64_t conn_id, uint32_t code, const char *text)
{
    char cut[201];
    snprintf(cut, sizeof cut, "%s", text ? text : "");
    return route(conn_id, 0, code, cut, strlen(cut));
}
