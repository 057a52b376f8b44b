/* test_module: module.h's thread rules without a daemon. The test thread
 * plays reactor 0 (its env entered, a libev loop, a mailbox, one fake msg
 * connection); other threads play workers and a module's own threads:
 *   - a push from another thread is posted and lands on the reactor; one to
 *     a stale id is refused at once on the reactor, and dropped and counted
 *     when posted;
 *   - a timer cancelled inside its own call fires once and its id goes
 *     stale; timers refuse other threads; the runtime's stop cancels the
 *     rest without a call;
 *   - a deferred reply answered or dropped from another thread takes its
 *     place in the order (dropped: OVERLOADED), and one for a gone
 *     connection is counted;
 *   - module_add checks the API version, the name, and command numbers. */
#include "config.h"
#include "mailbox.h"
#include "module_host.h"
#include "module_runtime.h"
#include "msg.h"
#include "pipeline.h"
#include "proto_msg.h"
#include "stats.h"
#include "test.h"

#include <errno.h>
#include <ev.h>
#include <pthread.h>

#define LIVE_ID 0x0000000010000005ull  /* reactor 0, slot 1 */
#define STALE_ID 0x0000000010000004ull /* reactor 0, slot 1, an older generation */

static struct config cfg;
static struct stats st;
static struct pipeline conn;                   /* the one live connection */
static struct pipeline_env env;
static struct mailbox mb;
static struct mailbox *boxes[1] = {&mb};
static int deferred_kicks;
static bool conn_gone;                         /* the lookup no longer finds it */

static struct pipeline *fake_lookup(void *host, uint64_t id)
{
    (void)host;
    return id == LIVE_ID && !conn_gone ? &conn : NULL;
}

static void fake_kick(struct pipeline *pl) { (void)pl; deferred_kicks++; }

static const struct pipeline_host_ops ops = {.lookup = fake_lookup, .kick = fake_kick,
                                             .defer = fake_kick};

static void setup(void)
{
    config_defaults(&cfg);
    env = (struct pipeline_env){.cfg = &cfg, .stats = &st, .reactor = 0, .nreactors = 1,
                                .ops = &ops, .loop = ev_loop_new(EVFLAG_AUTO)};
    conn = (struct pipeline){.proto = &proto_msg, .env = &env, .conn_id = LIVE_ID};
    CHECK(mailbox_init(&mb) == 0);
    CHECK(module_runtime_start(1, boxes) == 0);
    pipeline_env_enter(&env);
}

/* The next frame queued to the connection: its command word and payload. */
static uint32_t next_frame(uint8_t *payload, size_t cap, size_t *len)
{
    CHECK(buffer_readable(&conn.out) >= MSG_HEADER_LEN);
    struct msg_header h;
    msg_header_decode(buffer_peek(&conn.out), &h);
    CHECK(buffer_readable(&conn.out) >= MSG_HEADER_LEN + h.length && h.length <= cap);
    memcpy(payload, buffer_peek(&conn.out) + MSG_HEADER_LEN, h.length);
    buffer_consume(&conn.out, MSG_HEADER_LEN + h.length);
    *len = h.length;
    return h.command;
}

struct send_args {
    uint64_t id;
    int rc;
    int timer_rc, stop_rc;
};

static void *send_thread(void *arg)
{
    struct send_args *a = arg;
    uint64_t tid;
    a->rc = msgd_send(a->id, 1100, "from afar", 9);
    a->timer_rc = msgd_timer_start(1, 0, (msgd_timer_fn)(void (*)(void))free, NULL, &tid);
    a->stop_rc = msgd_timer_stop(1);
    return NULL;
}

TEST(sends_from_another_thread_and_stale_ids)
{
    setup();
    struct send_args live = {.id = LIVE_ID}, stale = {.id = STALE_ID};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, send_thread, &live) == 0);
    pthread_join(t, NULL);
    CHECK(pthread_create(&t, NULL, send_thread, &stale) == 0);
    pthread_join(t, NULL);
    CHECK_EQ(live.rc, 0);
    CHECK_EQ(stale.rc, 0);                     /* posted: the reactor decides */
    CHECK_EQ(live.timer_rc, -EPERM);           /* timers are for reactor threads */
    CHECK_EQ(live.stop_rc, -EPERM);
    CHECK_EQ(buffer_readable(&conn.out), 0);   /* nothing before the reactor's turn */
    CHECK_EQ(mailbox_run(&mb, &env), 2);
    uint8_t p[64];
    size_t n;
    CHECK_EQ(next_frame(p, sizeof p, &n), 1100);
    CHECK_MEM(p, "from afar", 9);
    CHECK_EQ(buffer_readable(&conn.out), 0);   /* the stale one reached nobody */
    CHECK_EQ(stats_get(&st, STATS_MODULE_PUSHES_DROPPED), 1);
    CHECK(deferred_kicks >= 1);
    /* On the reactor itself: at once, and a stale id is refused. */
    CHECK_EQ(msgd_send(LIVE_ID, 1101, "here", 4), 0);
    CHECK_EQ(next_frame(p, sizeof p, &n), 1101);
    CHECK_EQ(msgd_send(STALE_ID, 1101, "x", 1), -ENOENT);
    CHECK_EQ(msgd_send(LIVE_ID, 0, "x", 1), -EINVAL);
    CHECK_EQ(msgd_send(0x0500000010000005ull, 1101, "x", 1), -ENOENT); /* no reactor 5 */
    /* A closing connection takes nothing more. */
    conn.flags |= PIPELINE_CLOSE;
    CHECK_EQ(msgd_send(LIVE_ID, 1101, "x", 1), -ENOENT);
    CHECK_EQ(msgd_close(LIVE_ID, 0, NULL), -ENOENT);
    conn.flags = 0;
    CHECK_EQ(msgd_close(LIVE_ID, 7777, "bye"), 0);
    CHECK(conn.flags & PIPELINE_CLOSE);
    CHECK_EQ(next_frame(p, sizeof p, &n), MSG_CONN_ERROR);
    CHECK_EQ(msg_get_u32(p), 7777);
    module_runtime_stop();
    CHECK_EQ(msgd_send(STALE_ID, 1, "x", 1), -ENOENT);  /* its own reactor: checked first */
    pipeline_env_enter(NULL);
    CHECK_EQ(msgd_send(LIVE_ID, 1, "x", 1), -ESHUTDOWN); /* from elsewhere, after the stop */
}

struct timer_state {
    int fires;
    int stop_inside, stop_again;
    uint64_t id;
};

static void self_stopping(uint64_t id, void *arg)
{
    struct timer_state *s = arg;
    s->fires++;
    s->stop_inside = msgd_timer_stop(id);
    s->stop_again = msgd_timer_stop(id);
}

static void count_fire(uint64_t id, void *arg)
{
    (void)id;
    ((struct timer_state *)arg)->fires++;
}

static void end_loop(uint64_t id, void *arg)
{
    (void)id;
    (void)arg;
    ev_break(env.loop, EVBREAK_ALL);
}

TEST(timers_cancelled_while_firing_and_stale_ids)
{
    setup();
    struct timer_state rep = {0}, once = {0}, never = {0};
    uint64_t end, never_id;
    CHECK_EQ(msgd_timer_start(0.001, 0.001, self_stopping, &rep, &rep.id), 0);
    CHECK_EQ(msgd_timer_start(0.002, 0, count_fire, &once, &once.id), 0);
    CHECK_EQ(msgd_timer_start(3600, 0, count_fire, &never, &never_id), 0);
    CHECK_EQ(msgd_timer_start(0.05, 0, end_loop, NULL, &end), 0);
    CHECK_EQ(msgd_timer_start(-1, 0, count_fire, &once, &end), -EINVAL);
    CHECK_EQ(msgd_timer_start(1, 0, NULL, &once, &end), -EINVAL);
    CHECK(rep.id != 0 && rep.id != once.id);
    ev_run(env.loop, 0);
    CHECK_EQ(rep.fires, 1);                    /* stopped inside its first call */
    CHECK_EQ(rep.stop_inside, 0);
    CHECK_EQ(rep.stop_again, -ENOENT);
    CHECK_EQ(msgd_timer_stop(rep.id), -ENOENT);
    CHECK_EQ(once.fires, 1);
    CHECK_EQ(msgd_timer_stop(once.id), -ENOENT); /* a one-shot's id is stale once it fired */
    CHECK_EQ(msgd_timer_stop(0x0100000000000001ull), -EPERM); /* reactor 1's */
    /* A slot used again gets a new id; the old one stays stale. */
    uint64_t again;
    CHECK_EQ(msgd_timer_start(3600, 0, count_fire, &never, &again), 0);
    CHECK(again != rep.id && again != once.id);
    CHECK_EQ(msgd_timer_stop(again), 0);
    CHECK_EQ(msgd_timer_stop(again), -ENOENT);
    /* The stop cancels what is left (the 1 h timer), without a call. */
    module_runtime_stop();
    CHECK_EQ(never.fires, 0);
    CHECK_EQ(msgd_timer_start(1, 0, count_fire, &never, &again), -EPERM);
}

/* A deferred command: its handle goes to a thread that answers it. */
static int defer_how;

static void *answer_thread(void *arg)
{
    msgd_deferred *d = arg;
    if (defer_how == 0)
        msgd_deferred_drop(d);
    else
        msgd_deferred_reply(d, "later", 5);
    return NULL;
}

static void defer_handler(msgd_req *req, const uint8_t *p, size_t len)
{
    (void)p;
    (void)len;
    msgd_deferred *d = msgd_defer(req);
    CHECK(d != NULL);
    CHECK(msgd_defer(req) == NULL);            /* once */
    CHECK_EQ(msgd_reply(req, "x", 1), -EALREADY);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, answer_thread, d) == 0);
    pthread_join(t, NULL);
}

static void ping_handler(msgd_req *req, const uint8_t *p, size_t len) { msgd_reply(req, p, len); }

static void nothing(msgd_req *req, const uint8_t *p, size_t len)
{
    (void)req;
    (void)p;
    (void)len;
}

static int test_init(const struct msgd_module *self, char *err, size_t errlen)
{
    static const struct msgd_command cmds[] = {
        {1200, "DEFER", MSGD_DEFERRED, 0, defer_handler, NULL},
        {1201, "ECHO2", MSGD_INLINE, 0, ping_handler, NULL},
        {1202, "NOTHING", MSGD_INLINE, 0, nothing, NULL},
    };
    for (int i = 0; i < 3; i++)
        if (msgd_command_register(self, &cmds[i], err, errlen) < 0)
            return -EINVAL;
    return 0;
}

static const struct msgd_module test_mod = {.api_version = MSGD_MODULE_API_VERSION,
                                             .name = "unit", .init = test_init};

static void request(uint32_t cmd, const char *payload)
{
    proto_msg_dispatch(&conn, cmdtab_find(cmd), cmd, (const uint8_t *)payload, strlen(payload));
}

TEST(deferred_replies_keep_their_place_and_drops_are_answered)
{
    setup();
    char err[256];
    module_reset();
    CHECK_EQ(module_add(&test_mod, false, err, sizeof err), 0);
    for (defer_how = 0; defer_how < 2; defer_how++) {
        request(1200, "");
        request(1201, "after");
        CHECK_EQ(buffer_readable(&conn.out), 0); /* held behind the deferred one */
        CHECK_EQ(mailbox_run(&mb, &env), 1);
        uint8_t p[128];
        size_t n;
        uint32_t word = next_frame(p, sizeof p, &n);
        if (defer_how == 0) {
            CHECK_EQ(word, MSG_FLAG_REPLY | MSG_FLAG_ERROR | 1200);
            CHECK_EQ(msg_get_u32(p), MSG_ERR_OVERLOADED);
        } else {
            CHECK_EQ(word, MSG_FLAG_REPLY | 1200);
            CHECK_MEM(p, "later", 5);
        }
        CHECK_EQ(next_frame(p, sizeof p, &n), MSG_FLAG_REPLY | 1201);
        CHECK_MEM(p, "after", 5);
    }
    /* A handler that answers nothing: OVERLOADED "no answer". */
    request(1202, "");
    uint8_t p[128];
    size_t n;
    CHECK_EQ(next_frame(p, sizeof p, &n), MSG_FLAG_REPLY | MSG_FLAG_ERROR | 1202);
    CHECK_EQ(msg_get_u32(p), MSG_ERR_OVERLOADED);
    /* A deferred reply whose connection went away is counted, not sent. */
    request(1200, "");
    conn_gone = true;
    uint64_t before = stats_get(&st, STATS_RESULTS_DROPPED);
    CHECK_EQ(mailbox_run(&mb, &env), 1);
    CHECK_EQ(stats_get(&st, STATS_RESULTS_DROPPED), before + 1);
    pipeline_free(&conn);
    module_runtime_stop();
}

static const struct msgd_module bad_version = {.api_version = 999, .name = "old"};
static const struct msgd_module bad_name = {.api_version = MSGD_MODULE_API_VERSION,
                                            .name = "Bad-Name"};

static int low_number_init(const struct msgd_module *self, char *err, size_t errlen)
{
    static const struct msgd_command c = {5, "MINE", MSGD_INLINE, 0, ping_handler, NULL};
    return msgd_command_register(self, &c, err, errlen);
}

static const struct msgd_module low_number = {.api_version = MSGD_MODULE_API_VERSION,
                                              .name = "low", .init = low_number_init};

TEST(module_add_checks)
{
    char err[256];
    module_reset();
    CHECK_EQ(module_add(&bad_version, false, err, sizeof err), -EPROTO);
    CHECK(strstr(err, "version 999") != NULL);
    CHECK_EQ(module_add(&bad_name, false, err, sizeof err), -EINVAL);
    CHECK_EQ(module_add(&low_number, false, err, sizeof err), -EINVAL); /* below 1024 */
    CHECK(strstr(err, "1024") != NULL);
    CHECK_EQ(module_add(&test_mod, false, err, sizeof err), 0);
    CHECK_EQ(module_add(&test_mod, false, err, sizeof err), -EEXIST);
    /* Outside init, registering is refused. */
    static const struct msgd_command late = {1300, "LATE", MSGD_INLINE, 0, ping_handler, NULL};
    CHECK_EQ(msgd_command_register(&test_mod, &late, err, sizeof err), -EPERM);
}

int main(int argc, char **argv) { return test_main(argc, argv); }
