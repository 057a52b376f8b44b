/* apitest: a module that exercises module.h's thread rules for
 * tests/integration/test_modapi.py. Every command answers with what the API
 * returned, so the test checks msgd's behaviour, not this module's.
 *
 * Built three ways (mk/testmods.mk): apitest.so; apitest_v999.so, which
 * claims another API version; clash.so, named "clash", which claims
 * apitest's command number. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "module.h"

#ifndef APITEST_VERSION
#define APITEST_VERSION MSGD_MODULE_API_VERSION
#endif

enum {
    CMD_SEND_FROM_WORKER = 1100, /* worker: msgd_send to its own connection */
    CMD_SEND_TO = 1101,          /* u64 id: msgd_send(id) from the reactor; reply i32 rc */
    CMD_MY_ID = 1102,            /* reply u64 the connection's id */
    CMD_TIMER = 1103,            /* timers: cancel while firing, and stale ids */
    CMD_DEFER = 1104,            /* u8 how: 0 drop, 1 reply, 2 error; answered from a thread */
    CMD_NO_ANSWER = 1105,        /* answers nothing */
    CMD_WRONG_THREAD = 1106,     /* worker: timer and defer off the reactor */
    CMD_EVENTS = 1107,           /* reply the event counters */
    CMD_DESCRIBE = 1108,         /* reply greeting, peer, listener, identity, reactor */
    CMD_CLOSE_ME = 1109,         /* msgd_close(own id) from another thread */
    CMD_PUSH_BACK = 1110,        /* msgd_send(own id) of the payload, on the reactor;
                                  * reply i32 rc */
    PUSH = 1199,                 /* the pushes this module sends */
};

static char greeting[64] = "hello";
static _Atomic long opens, auths, closes, frees;

static void put_i32(uint8_t *p, int32_t v)
{
    uint32_t u = (uint32_t)v;
    p[0] = (uint8_t)(u >> 24), p[1] = (uint8_t)(u >> 16), p[2] = (uint8_t)(u >> 8), p[3] = (uint8_t)u;
}

static void reply_i32s(msgd_req *req, const int32_t *v, int n)
{
    uint8_t b[32];
    for (int i = 0; i < n; i++)
        put_i32(b + 4 * i, v[i]);
    msgd_reply(req, b, (size_t)(4 * n));
}

/* Worker thread: a push to its own connection, then the reply. */
static void send_from_worker(msgd_req *req, const uint8_t *p, size_t len)
{
    int32_t rc = msgd_send(msgd_req_conn_id(req), PUSH, p, len);
    int32_t on_reactor = msgd_reactor_index();
    int32_t v[2] = {rc, on_reactor};
    reply_i32s(req, v, 2);
}

/* Reactor thread: the payload pushed back to its own connection. */
static void push_back(msgd_req *req, const uint8_t *p, size_t len)
{
    int32_t rc = msgd_send(msgd_req_conn_id(req), PUSH, p, len);
    reply_i32s(req, &rc, 1);
}

/* Reactor thread: a push to any id. */
static void send_to(msgd_req *req, const uint8_t *p, size_t len)
{
    if (len != 8) {
        msgd_error(req, MSGD_ERR_BAD_PAYLOAD, "u64 connection id");
        return;
    }
    uint64_t id = 0;
    for (int i = 0; i < 8; i++)
        id = id << 8 | p[i];
    int32_t rc = msgd_send(id, PUSH, "x", 1);
    reply_i32s(req, &rc, 1);
}

static void my_id(msgd_req *req, const uint8_t *p, size_t len)
{
    (void)p;
    (void)len;
    uint64_t id = msgd_req_conn_id(req);
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(id >> (56 - 8 * i));
    msgd_reply(req, b, sizeof b);
}

/* The timer test's state: one at a time per module (the test runs it once
 * per connection, sequentially). Reactor thread. */
struct timer_test {
    uint64_t conn;
    uint64_t repeating;
    int fires;
    int32_t stop_inside, stop_again;
};

static void report_cb(uint64_t id, void *arg)
{
    struct timer_test *t = arg;
    /* The repeating timer was stopped inside its first call: it must have
     * fired exactly once. Its id is stale now, and so is this one-shot's
     * after this call. */
    int32_t v[5] = {t->fires, t->stop_inside, t->stop_again, msgd_timer_stop(t->repeating), 0};
    (void)id;
    uint8_t b[20];
    for (int i = 0; i < 5; i++)
        put_i32(b + 4 * i, v[i]);
    msgd_send(t->conn, PUSH, b, sizeof b);
    free(t);
}

static void repeating_cb(uint64_t id, void *arg)
{
    struct timer_test *t = arg;
    t->fires++;
    if (t->fires == 1) {
        t->stop_inside = msgd_timer_stop(id);
        t->stop_again = msgd_timer_stop(id);
    }
}

static void timer_cmd(msgd_req *req, const uint8_t *p, size_t len)
{
    (void)p;
    (void)len;
    struct timer_test *t = calloc(1, sizeof *t);
    if (!t) {
        msgd_error(req, MSGD_ERR_OVERLOADED, "out of memory");
        return;
    }
    t->conn = msgd_req_conn_id(req);
    uint64_t report;
    int32_t rc[3];
    rc[0] = msgd_timer_start(0.01, 0.01, repeating_cb, t, &t->repeating);
    rc[1] = msgd_timer_start(0.2, 0, report_cb, t, &report);
    rc[2] = msgd_timer_start(-1, 0, report_cb, t, &report); /* -EINVAL */
    reply_i32s(req, rc, 3);
}

struct later {
    msgd_deferred *d;
    int how;
};

static void *answer_thread(void *arg)
{
    struct later *l = arg;
    if (l->how == 0)
        msgd_deferred_drop(l->d);
    else if (l->how == 1)
        msgd_deferred_reply(l->d, "later", 5);
    else
        msgd_deferred_error(l->d, 1234, "a module's own error");
    free(l);
    return NULL;
}

/* Reactor thread: defers, and a thread of the module's answers. */
static void defer_cmd(msgd_req *req, const uint8_t *p, size_t len)
{
    struct later *l = malloc(sizeof *l);
    if (!l || len != 1) {
        free(l);
        msgd_error(req, MSGD_ERR_BAD_PAYLOAD, "u8 how");
        return;
    }
    l->how = p[0];
    l->d = msgd_defer(req);
    int32_t again = msgd_reply(req, "too late", 8); /* -EALREADY: the place is held */
    pthread_t th;
    if (!l->d || again != -EALREADY || pthread_create(&th, NULL, answer_thread, l) != 0) {
        if (l->d)
            msgd_deferred_error(l->d, MSGD_ERR_OVERLOADED, "test setup failed");
        free(l);
        return;
    }
    pthread_detach(th);
}

static void no_answer(msgd_req *req, const uint8_t *p, size_t len)
{
    (void)req;
    (void)p;
    (void)len;
}

/* Worker thread: what the reactor-only calls say here. */
static void wrong_thread(msgd_req *req, const uint8_t *p, size_t len)
{
    (void)p;
    (void)len;
    uint64_t id;
    int32_t v[4] = {
        msgd_timer_start(1, 0, report_cb, NULL, &id),
        msgd_defer(req) == NULL,
        msgd_timer_stop(1),
        msgd_req_conn(req) == NULL,
    };
    reply_i32s(req, v, 4);
}

static void events_cmd(msgd_req *req, const uint8_t *p, size_t len)
{
    (void)p;
    (void)len;
    int32_t v[4] = {(int32_t)opens, (int32_t)auths, (int32_t)closes, (int32_t)frees};
    reply_i32s(req, v, 4);
}

static void describe_cmd(msgd_req *req, const uint8_t *p, size_t len)
{
    (void)p;
    (void)len;
    msgd_conn *c = msgd_req_conn(req);
    char peer[128], local[128], out[512];
    size_t ilen;
    const char *ident = msgd_conn_identity(c, &ilen);
    int small = msgd_conn_peer(c, peer, 3); /* -ENOSPC */
    msgd_conn_peer(c, peer, sizeof peer);
    msgd_conn_listener(c, local, sizeof local);
    int n = snprintf(out, sizeof out, "%s|%s|%s|%.*s|%d|%d|%d|%d", greeting, peer, local,
                     (int)ilen, ident ? ident : "", msgd_conn_reactor(c), msgd_reactor_index(),
                     msgd_reactors(), small);
    msgd_reply(req, out, (size_t)n);
}

static void *close_thread(void *arg)
{
    uint64_t *id = arg;
    msgd_close(*id, 7777, "closed by apitest");
    free(id);
    return NULL;
}

static void close_me(msgd_req *req, const uint8_t *p, size_t len)
{
    (void)p;
    (void)len;
    uint64_t *id = malloc(sizeof *id);
    pthread_t th;
    if (!id) {
        msgd_error(req, MSGD_ERR_OVERLOADED, "out of memory");
        return;
    }
    *id = msgd_req_conn_id(req);
    msgd_reply(req, NULL, 0);
    if (pthread_create(&th, NULL, close_thread, id) != 0)
        free(id);
    else
        pthread_detach(th);
}

/* ---- events and per-connection data ---- */

static const struct msgd_module *self_module;

static void data_free(void *data)
{
    free(data);
    frees++;
}

static void on_open(msgd_conn *c)
{
    opens++;
    char *mark = malloc(8);
    if (mark && msgd_conn_set_data(c, self_module, mark, data_free) < 0)
        free(mark);
}

static void on_auth(msgd_conn *c)
{
    size_t n;
    if (msgd_conn_identity(c, &n))
        auths++;
}

static void on_close(msgd_conn *c)
{
    /* The connection is closing: a push to it is refused. */
    if (msgd_conn_data(c, self_module) && msgd_send(msgd_conn_id(c), PUSH, "x", 1) == -ENOENT)
        closes++;
}

static int config(const char *key, const char *value, char *err, size_t errlen)
{
    if (strcmp(key, "greeting") != 0)
        return -ENOENT;
    if (strlen(value) >= sizeof greeting) {
        snprintf(err, errlen, "at most %zu bytes", sizeof greeting - 1);
        return -EINVAL;
    }
    snprintf(greeting, sizeof greeting, "%s", value);
    return 0;
}

static int init(const struct msgd_module *self, char *err, size_t errlen)
{
    static const struct msgd_command cmds[] = {
        {CMD_SEND_FROM_WORKER, "SEND_FROM_WORKER", MSGD_WORKER, 0, send_from_worker, NULL},
        {CMD_SEND_TO, "SEND_TO", MSGD_INLINE, 0, send_to, NULL},
        {CMD_MY_ID, "MY_ID", MSGD_INLINE, 0, my_id, NULL},
        {CMD_TIMER, "TIMER", MSGD_INLINE, 0, timer_cmd, NULL},
        {CMD_DEFER, "DEFER", MSGD_DEFERRED, 0, defer_cmd, NULL},
        {CMD_NO_ANSWER, "NO_ANSWER", MSGD_INLINE, 0, no_answer, NULL},
        {CMD_WRONG_THREAD, "WRONG_THREAD", MSGD_WORKER, 0, wrong_thread, NULL},
        {CMD_EVENTS, "EVENTS", MSGD_INLINE, 0, events_cmd, NULL},
        {CMD_DESCRIBE, "DESCRIBE", MSGD_INLINE, MSGD_NEEDS_AUTH, describe_cmd, NULL},
        {CMD_CLOSE_ME, "CLOSE_ME", MSGD_INLINE, 0, close_me, NULL},
        {CMD_PUSH_BACK, "PUSH_BACK", MSGD_INLINE, 0, push_back, NULL},
    };
    self_module = self;
#ifdef APITEST_CLASH
    return msgd_command_register(self, &cmds[0], err, errlen);
#else
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        int rc = msgd_command_register(self, &cmds[i], err, errlen);
        if (rc < 0)
            return rc;
    }
    return 0;
#endif
}

const struct msgd_module msgd_module = {
    .api_version = APITEST_VERSION,
#ifdef APITEST_CLASH
    .name = "clash",
#else
    .name = "apitest",
#endif
    .config = config,
    .init = init,
    .on_open = on_open,
    .on_auth = on_auth,
    .on_close = on_close,
};
