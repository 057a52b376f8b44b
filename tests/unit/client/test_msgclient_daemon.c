/* test_msgclient_daemon: the msgclient library against the real msgd (started
 * and stopped here, on ephemeral loopback ports, see daemon.h): calls and
 * error replies, pipelining in order with worker jobs among the requests,
 * server PINGs answered while blocked, GOAWAY and reconnect with jittered
 * back-off to a daemon restarted on the same port, and pub/sub pushes.
 *
 * connect() is wrapped (the link uses -Wl,--wrap=connect): each attempt a
 * tagged thread makes is recorded with its time, so a test can wait for the
 * client's refused attempts (a condition, not a sleep) and measure back-off. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <time.h>

#include "client/msgclient.h"
#include "daemon.h"
#include "msg.h"
#include "test.h"

#define REPLY(cmd) (MSG_FLAG_REPLY | (uint32_t)(cmd))
#define ERROR_REPLY(cmd) (MSG_FLAG_REPLY | MSG_FLAG_ERROR | (uint32_t)(cmd))

/* ---- time ------------------------------------------------------------------ */

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static struct timespec abs_deadline(int64_t deadline_us)
{
    struct timespec ts = {(time_t)(deadline_us / 1000000), (long)(deadline_us % 1000000) * 1000};
    return ts;
}

/* ---- the connect() hook --------------------------------------------------- */

#define ATTEMPTS_MAX 512

struct attempt {
    int tag;
    int port;
    int64_t t_us;
};

static pthread_mutex_t hook_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hook_cv;          /* CLOCK_MONOTONIC; hook_init() */
static struct attempt attempts[ATTEMPTS_MAX];
static int nattempts;
static _Thread_local int hook_tag;      /* 0: this thread's connects are not recorded */

int __real_connect(int fd, const struct sockaddr *sa, socklen_t len);
int __wrap_connect(int fd, const struct sockaddr *sa, socklen_t len);

int __wrap_connect(int fd, const struct sockaddr *sa, socklen_t len)
{
    if (hook_tag && sa && sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)sa;
        pthread_mutex_lock(&hook_mu);
        if (nattempts < ATTEMPTS_MAX)
            attempts[nattempts++] = (struct attempt){hook_tag, ntohs(sin->sin_port), now_us()};
        pthread_cond_broadcast(&hook_cv);
        pthread_mutex_unlock(&hook_mu);
    }
    return __real_connect(fd, sa, len);
}

/* Once per test (each runs in a child of its own), before any thread. */
static void hook_init(void)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&hook_cv, &ca);
    pthread_condattr_destroy(&ca);
}

static int count_attempts_locked(int tag, int port)
{
    int n = 0;
    for (int i = 0; i < nattempts; i++)
        n += attempts[i].tag == tag && attempts[i].port == port;
    return n;
}

/* Waits until thread `tag` has made n connect attempts to port. Returns the
 * count, which is < n on timeout. */
static int wait_attempts(int tag, int port, int n, int timeout_ms)
{
    int64_t deadline = now_us() + (int64_t)timeout_ms * 1000;
    struct timespec ts = abs_deadline(deadline);
    pthread_mutex_lock(&hook_mu);
    int have;
    while ((have = count_attempts_locked(tag, port)) < n) {
        if (pthread_cond_timedwait(&hook_cv, &hook_mu, &ts) == ETIMEDOUT) {
            have = count_attempts_locked(tag, port);
            break;
        }
    }
    pthread_mutex_unlock(&hook_mu);
    return have;
}

/* The times of thread tag's attempts to port, oldest first. Returns how many. */
static int attempt_times(int tag, int port, int64_t *out, int cap)
{
    int n = 0;
    pthread_mutex_lock(&hook_mu);
    for (int i = 0; i < nattempts && n < cap; i++)
        if (attempts[i].tag == tag && attempts[i].port == port)
            out[n++] = attempts[i].t_us;
    pthread_mutex_unlock(&hook_mu);
    return n;
}

/* ---- a client call on a thread of its own ------------------------------------- */

struct call_job {
    struct msgclient *c;    /* belongs to the job's thread until done */
    int tag;
    uint32_t cmd;
    const void *payload;
    size_t len;
    int rc;
    struct msgclient_reply reply;
    int64_t t_start_us;
    bool done;              /* under hook_mu */
    pthread_t thread;
};

static void *call_thread(void *arg)
{
    struct call_job *j = arg;
    hook_tag = j->tag;
    j->t_start_us = now_us();
    j->rc = msgclient_call(j->c, j->cmd, j->payload, j->len, &j->reply);
    pthread_mutex_lock(&hook_mu);
    j->done = true;
    pthread_cond_broadcast(&hook_cv);
    pthread_mutex_unlock(&hook_mu);
    return NULL;
}

static void job_start(struct call_job *j)
{
    int rc = pthread_create(&j->thread, NULL, call_thread, j);
    if (rc != 0)
        TEST_FAIL("pthread_create: %s", strerror(rc));
}

/* Waits (bounded) for the job's call to return, then joins its thread. */
static void job_join(struct call_job *j, int timeout_ms)
{
    struct timespec ts = abs_deadline(now_us() + (int64_t)timeout_ms * 1000);
    pthread_mutex_lock(&hook_mu);
    bool done = j->done;
    while (!done && pthread_cond_timedwait(&hook_cv, &hook_mu, &ts) != ETIMEDOUT)
        done = j->done;
    done = j->done;
    pthread_mutex_unlock(&hook_mu);
    if (!done)
        TEST_FAIL("the client call on thread %d did not return within %d ms", j->tag, timeout_ms);
    pthread_join(j->thread, NULL);
}

/* ---- daemons and clients ------------------------------------------------------ */

static void start_daemon(struct daemon *d, const struct daemon_opts *o)
{
    if (daemon_start(d, o) < 0)
        TEST_FAIL("starting msgd: %s", d->err);
}

static void finish_daemon(struct daemon *d)
{
    if (daemon_finish(d) < 0)
        TEST_FAIL("msgd (pid %d): %s", (int)d->pid, d->err);
}

/* SIGTERM, then the exit (status 0) and a clean log. */
static void stop_daemon(struct daemon *d)
{
    CHECK_EQ(daemon_signal(d, SIGTERM), 0);
    finish_daemon(d);
}

struct client_cfg {
    bool reconnect;
    unsigned backoff_initial_ms, backoff_max_ms, attempts;
    uint64_t seed;
    const char *compress;   /* NULL: no HELLO */
    uint32_t max_frame;     /* 0: the default */
};

static struct msgclient *new_client(int port, const struct client_cfg *cfg)
{
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    struct msgclient_options o;
    msgclient_options_init(&o);
    o.addr = addr;
    o.connect_timeout_ms = daemon_ms(5000);
    o.timeout_ms = daemon_ms(10000);
    if (cfg) {
        o.reconnect = cfg->reconnect;
        o.backoff_initial_ms = cfg->backoff_initial_ms;
        o.backoff_max_ms = cfg->backoff_max_ms;
        o.reconnect_attempts = cfg->attempts;
        o.seed = cfg->seed;
        o.compress = cfg->compress;
        if (cfg->max_frame)
            o.max_frame = cfg->max_frame;
    }
    struct msgclient *c = msgclient_new(&o);
    CHECK(c != NULL);
    return c;
}

static struct msgclient *connect_client(int port, const struct client_cfg *cfg)
{
    struct msgclient *c = new_client(port, cfg);
    int rc = msgclient_connect(c, NULL);
    if (rc != 0)
        TEST_FAIL("connect to port %d: %d (%s)", port, rc, msgclient_error(c));
    return c;
}

/* A call that must succeed with the reply command REPLY(cmd). */
static void call_ok(struct msgclient *c, uint32_t cmd, const void *p, size_t len,
                    struct msgclient_reply *r)
{
    memset(r, 0, sizeof *r);
    int rc = msgclient_call(c, cmd, p, len, r);
    if (rc != 0)
        TEST_FAIL("call %u (%zu bytes): %d, error code %u \"%s\" (%s)", cmd, len, rc,
                  r->error_code, r->error_text, msgclient_error(c));
    if (r->command != REPLY(cmd))
        TEST_FAIL("call %u: reply command 0x%08X, expected 0x%08X", cmd, r->command, REPLY(cmd));
}

/* ECHO of p must come back byte for byte. */
static void echo_ok(struct msgclient *c, const void *p, size_t len)
{
    struct msgclient_reply r;
    call_ok(c, MSG_CMD_ECHO, p, len, &r);
    if (r.len != len)
        TEST_FAIL("ECHO of %zu bytes: %zu came back", len, r.len);
    CHECK_MEM(r.payload, p, len);
    msgclient_reply_free(&r);
}

/* A call that must get an error reply with code. */
static void call_error(struct msgclient *c, uint32_t cmd, const void *p, size_t len,
                       uint32_t code)
{
    struct msgclient_reply r;
    memset(&r, 0, sizeof r);
    int rc = msgclient_call(c, cmd, p, len, &r);
    if (rc != MSGCLIENT_ERROR_REPLY)
        TEST_FAIL("call %u: %d, expected MSGCLIENT_ERROR_REPLY (%s)", cmd, rc, msgclient_error(c));
    if (r.command != ERROR_REPLY(cmd) || r.error_code != code)
        TEST_FAIL("call %u: reply 0x%08X code %u (%s) \"%s\", expected 0x%08X code %u (%s)", cmd,
                  r.command, r.error_code, msg_error_name(r.error_code), r.error_text,
                  ERROR_REPLY(cmd), code, msg_error_name(code));
    CHECK(r.error_text[0] != '\0');
    msgclient_reply_free(&r);
}

/* One value of a STATS reply ("name value" lines); -1 when absent. */
static long long stats_value(const struct msgclient_reply *r, const char *name)
{
    size_t nl = strlen(name);
    const char *p = (const char *)r->payload, *end = p + r->len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        if ((size_t)(eol - p) > nl + 1 && memcmp(p, name, nl) == 0 && p[nl] == ' ') {
            char num[32];   /* the payload is not NUL-terminated */
            size_t vl = (size_t)(eol - p) - nl - 1;
            if (vl >= sizeof num)
                return -1;
            memcpy(num, p + nl + 1, vl);
            num[vl] = '\0';
            return strtoll(num, NULL, 10);
        }
        p = eol + 1;
    }
    return -1;
}

static long long stat_of(struct msgclient *c, const char *name)
{
    struct msgclient_reply r;
    call_ok(c, MSG_CMD_STATS, NULL, 0, &r);
    long long v = stats_value(&r, name);
    msgclient_reply_free(&r);
    if (v < 0)
        TEST_FAIL("STATS has no \"%s\"", name);
    return v;
}

/* Waits for the connection to end after a GOAWAY: recv_message sees the
 * GOAWAY, then the close. */
static void expect_goaway_and_close(struct msgclient *c, const char *who)
{
    struct msgclient_message m;
    memset(&m, 0, sizeof m);
    int rc = msgclient_recv_message(c, &m, daemon_ms(10000));
    if (rc != -ECONNRESET)
        TEST_FAIL("%s: recv_message after SIGTERM: %d (%s), expected -ECONNRESET (the close "
                  "after GOAWAY)", who, rc, msgclient_error(c));
    uint32_t ms_left = 99999;
    const char *reason = NULL;
    if (!msgclient_going_away(c, &ms_left, &reason))
        TEST_FAIL("%s: the connection closed without a GOAWAY (%s)", who, msgclient_error(c));
    CHECK(ms_left <= 2000);         /* drain_timeout */
    CHECK(reason != NULL && strstr(reason, "shutting down") != NULL);
    CHECK(!msgclient_connected(c));
    CHECK_EQ(msgclient_pending(c), 0);
}

/* ---- 1. calls ------------------------------------------------------------------ */

TEST(calls_ping_echo_errors_stats)
{
    struct daemon d;
    start_daemon(&d, &(struct daemon_opts){.max_frame = "1M"});
    struct msgclient *c = connect_client(d.port, NULL);

    struct msgclient_reply r;
    call_ok(c, MSG_CMD_PING, "hi", 2, &r);
    CHECK_EQ(r.command, 0x80000001u);
    CHECK_EQ(r.len, 2);
    CHECK_MEM(r.payload, "hi", 2);
    CHECK_EQ(r.error_code, 0);
    msgclient_reply_free(&r);

    static const size_t sizes[] = {0, 1, 17, 4096, 60 * 1024, 512 * 1024};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        uint8_t *p = malloc(sizes[i] + 1);
        CHECK(p != NULL);
        for (size_t k = 0; k < sizes[i]; k++)
            p[k] = (uint8_t)(k * 31 + i * 7 + (k >> 8));
        echo_ok(c, p, sizes[i]);
        free(p);
    }

    /* errors that keep the connection open */
    call_error(c, 999, "x", 1, MSG_ERR_UNKNOWN_COMMAND);
    call_error(c, MSG_CMD_GOAWAY, NULL, 0, MSG_ERR_UNKNOWN_COMMAND);   /* a push, not a request */
    call_error(c, MSG_CMD_DELAY, "\0\0\0\1x", 5, MSG_ERR_DISABLED);     /* delay_command off */
    call_error(c, MSG_CMD_SUBSCRIBE, NULL, 0, MSG_ERR_BAD_PAYLOAD);     /* empty topic */
    CHECK(msgclient_connected(c));
    echo_ok(c, "still here", 10);

    struct msgclient_reply s;
    call_ok(c, MSG_CMD_STATS, NULL, 0, &s);
    CHECK(s.len > 0);
    CHECK_EQ(stats_value(&s, "reactors"), 2);
    CHECK(stats_value(&s, "connections_current") >= 1);
    CHECK(stats_value(&s, "errors.UNKNOWN_COMMAND") >= 2);
    msgclient_reply_free(&s);

    CHECK_EQ(msgclient_pending(c), 0);
    CHECK_EQ(msgclient_frames_dropped(c), 0);
    CHECK_EQ(msgclient_recv(c, &r), -ENOMSG);
    msgclient_free(c);
    stop_daemon(&d);
}

/* Command 0 is the connection itself: its UNKNOWN_COMMAND error reply has
 * the connection-level word 0xC0000000, yet the connection goes on
 * (PROTOCOL.md rule 4). */
TEST(command_zero_is_unknown_and_the_connection_goes_on)
{
    struct daemon d;
    start_daemon(&d, NULL);
    struct msgclient *c = connect_client(d.port, NULL);
    call_error(c, 0, NULL, 0, MSG_ERR_UNKNOWN_COMMAND);
    echo_ok(c, "after command 0", 15);
    CHECK(msgclient_connected(c));
    msgclient_free(c);
    stop_daemon(&d);
}

/* ---- 2. pipelining ------------------------------------------------------------- */

#define PIPE_N 1000

static size_t pipe_payload(unsigned i, uint8_t *out)
{
    int n = snprintf((char *)out, 32, "req-%04u-", i);
    size_t len = (size_t)n + i % 37;
    for (size_t k = (size_t)n; k < len; k++)
        out[k] = (uint8_t)('a' + (i + k) % 26);
    return len;
}

static bool pipe_is_delay(unsigned i) { return i % 200 == 100; }

TEST(pipelined_echoes_and_delays_reply_in_order)
{
    struct daemon d;
    start_daemon(&d, &(struct daemon_opts){.delay_command = true});
    struct msgclient *c = connect_client(d.port, NULL);

    uint8_t buf[64];
    for (unsigned i = 0; i < PIPE_N; i++) {
        size_t len = pipe_payload(i, buf + 4);
        int rc;
        if (pipe_is_delay(i)) {
            msg_put_u32(buf, 30);   /* ms, on the reactor's worker */
            rc = msgclient_send(c, MSG_CMD_DELAY, buf, len + 4);
        } else {
            rc = msgclient_send(c, MSG_CMD_ECHO, buf + 4, len);
        }
        CHECK_EQ(rc, 0);
    }
    CHECK_EQ(msgclient_pending(c), PIPE_N);
    int rc = msgclient_flush(c);
    if (rc != 0)
        TEST_FAIL("flush: %d (%s)", rc, msgclient_error(c));
    CHECK_EQ(msgclient_pending(c), PIPE_N);
    for (unsigned i = 0; i < PIPE_N; i++) {
        struct msgclient_reply r;
        memset(&r, 0, sizeof r);
        rc = msgclient_recv(c, &r);
        if (rc != 0)
            TEST_FAIL("reply %u: %d code %u (%s)", i, rc, r.error_code, msgclient_error(c));
        size_t len = pipe_payload(i, buf);
        uint32_t want = REPLY(pipe_is_delay(i) ? MSG_CMD_DELAY : MSG_CMD_ECHO);
        if (r.command != want || r.len != len || memcmp(r.payload, buf, len) != 0)
            TEST_FAIL("reply %u: 0x%08X \"%.*s\", expected 0x%08X \"%.*s\"", i, r.command,
                      (int)r.len, r.payload ? (const char *)r.payload : "", want, (int)len,
                      (const char *)buf);
        msgclient_reply_free(&r);
        CHECK_EQ(msgclient_pending(c), PIPE_N - 1 - i);
    }
    CHECK_EQ(msgclient_pending(c), 0);

    /* more than the server's output high-water mark (1M) in flight: flush
     * must read replies while it writes, or both ends stall */
    enum { BIG_N = 300, BIG_LEN = 20000 };
    uint8_t *big = malloc(BIG_LEN);
    CHECK(big != NULL);
    for (unsigned i = 0; i < BIG_N; i++) {
        memset(big, 'A' + i % 26, BIG_LEN);
        msg_put_u32(big, i);
        CHECK_EQ(msgclient_send(c, MSG_CMD_ECHO, big, BIG_LEN), 0);
    }
    rc = msgclient_flush(c);
    if (rc != 0)
        TEST_FAIL("flush of %d x %d bytes: %d (%s)", BIG_N, BIG_LEN, rc, msgclient_error(c));
    for (unsigned i = 0; i < BIG_N; i++) {
        struct msgclient_reply r;
        memset(&r, 0, sizeof r);
        rc = msgclient_recv(c, &r);
        if (rc != 0)
            TEST_FAIL("big reply %u: %d (%s)", i, rc, msgclient_error(c));
        memset(big, 'A' + i % 26, BIG_LEN);
        msg_put_u32(big, i);
        CHECK_EQ(r.command, REPLY(MSG_CMD_ECHO));
        CHECK_EQ(r.len, BIG_LEN);
        if (memcmp(r.payload, big, BIG_LEN) != 0)
            TEST_FAIL("big reply %u: bytes differ (reply of request %u?)", i,
                      msg_get_u32(r.payload));
        msgclient_reply_free(&r);
    }
    free(big);
    CHECK_EQ(msgclient_pending(c), 0);
    CHECK_EQ(msgclient_frames_dropped(c), 0);
    CHECK(stat_of(c, "worker_jobs") >= 5);
    msgclient_free(c);
    stop_daemon(&d);
}

/* ---- 3. server PINGs ------------------------------------------------------------ */

static int raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) < 0)
        TEST_FAIL("raw connect: %s", strerror(errno));
    return fd;
}

/* Reads exactly n bytes by deadline. Returns 0, or -ECONNRESET on EOF before
 * any byte (when eof_ok), or fails the test. */
static int raw_read(int fd, uint8_t *p, size_t n, int64_t deadline_us, bool eof_ok)
{
    size_t got = 0;
    while (got < n) {
        int64_t left = (deadline_us - now_us()) / 1000;
        struct pollfd pfd = {fd, POLLIN, 0};
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            TEST_FAIL("raw socket: nothing within the deadline (%zu of %zu bytes)", got, n);
        ssize_t r = read(fd, p + got, n - got);
        if (r == 0 && got == 0 && eof_ok)
            return -ECONNRESET;
        if (r <= 0)
            TEST_FAIL("raw socket: read %zd (%s) after %zu of %zu bytes", r,
                      r < 0 ? strerror(errno) : "EOF", got, n);
        got += (size_t)r;
    }
    return 0;
}

/* While the client sits in recv_message (no message comes), the daemon PINGs
 * it every heartbeat_interval and closes it after idle_timeout with nothing
 * received. The library answers each PING from inside the wait, and those
 * answers are the only bytes it sends: the connection must outlive several
 * idle timeouts. The control, a raw socket that never answers, must be
 * closed with IDLE_TIMEOUT meanwhile. */
TEST(server_pings_are_answered_while_blocked)
{
    enum { HEARTBEAT_MS = 200, IDLE_MS = 1200, WAIT_MS = 3000 };
    struct daemon d;
    start_daemon(&d, &(struct daemon_opts){.heartbeat_ms = HEARTBEAT_MS, .idle_ms = IDLE_MS});
    int raw = raw_connect(d.port);
    struct msgclient *c = connect_client(d.port, NULL);

    struct msgclient_message m;
    memset(&m, 0, sizeof m);
    int64_t t0 = now_us();
    int rc = msgclient_recv_message(c, &m, WAIT_MS);
    int64_t waited = now_us() - t0;
    if (rc != -ETIMEDOUT)
        TEST_FAIL("recv_message: %d (%s) after %lld ms, expected -ETIMEDOUT after %d ms; "
                  "%llu PINGs answered", rc, msgclient_error(c), (long long)waited / 1000,
                  WAIT_MS, (unsigned long long)msgclient_pings_answered(c));
    CHECK(waited >= (int64_t)(WAIT_MS - 10) * 1000);   /* more than two idle timeouts */
    uint64_t pings = msgclient_pings_answered(c);
    if (pings < 2)
        TEST_FAIL("%llu server PINGs answered in %d ms (heartbeat %d ms)",
                  (unsigned long long)pings, WAIT_MS, HEARTBEAT_MS);
    CHECK(msgclient_connected(c));
    CHECK(!msgclient_going_away(c, NULL, NULL));
    echo_ok(c, "alive", 5);
    CHECK_EQ(msgclient_frames_dropped(c), 0);

    /* the control: PINGs, then the connection-level IDLE_TIMEOUT, then EOF */
    int64_t deadline = now_us() + (int64_t)daemon_ms(5000) * 1000;
    int raw_pings = 0;
    for (int frames = 0;; frames++) {
        CHECK(frames < 1000);
        uint8_t h[MSG_HEADER_LEN], payload[256];
        raw_read(raw, h, sizeof h, deadline, false);
        struct msg_header mh;
        msg_header_decode(h, &mh);
        CHECK_EQ(mh.magic, MSG_MAGIC);
        CHECK(mh.length <= sizeof payload);
        raw_read(raw, payload, mh.length, deadline, false);
        if (mh.command == MSG_CMD_PING) {
            CHECK_EQ(mh.length, 0);
            raw_pings++;
            continue;
        }
        CHECK_EQ(mh.command, MSG_CONN_ERROR);
        CHECK(mh.length >= 4);
        CHECK_EQ(msg_get_u32(payload), MSG_ERR_IDLE_TIMEOUT);
        break;
    }
    CHECK(raw_pings >= 1);
    uint8_t extra;
    CHECK_EQ(raw_read(raw, &extra, 1, deadline, true), -ECONNRESET);
    close(raw);

    CHECK_EQ(stat_of(c, "closed_by_limit.idle_timeout"), 1);   /* the raw one only */
    CHECK(stat_of(c, "heartbeats_sent") >= (long long)pings + raw_pings);
    msgclient_free(c);
    stop_daemon(&d);
}

/* ---- 4. GOAWAY and reconnect ---------------------------------------------------- */

static const struct client_cfg reconnecting = {
    .reconnect = true, .backoff_initial_ms = 50, .backoff_max_ms = 400, .attempts = 40,
    .seed = 0x5eed,
};

/* SIGTERM: the idle client gets GOAWAY and the close; the daemon exits 0; a
 * new one on the same port; the next call reconnects by itself. */
TEST(goaway_then_call_reconnects_to_restarted_daemon)
{
    hook_init();
    struct daemon d1, d2;
    start_daemon(&d1, NULL);
    int port = d1.port;
    struct msgclient *c = connect_client(port, &reconnecting);
    echo_ok(c, "before", 6);

    CHECK_EQ(daemon_signal(&d1, SIGTERM), 0);
    expect_goaway_and_close(c, "client");
    finish_daemon(&d1);

    start_daemon(&d2, &(struct daemon_opts){.port = port});
    CHECK_EQ(d2.port, port);
    CHECK_EQ(msgclient_reconnects(c), 0);
    echo_ok(c, "after", 5);
    CHECK_EQ(msgclient_reconnects(c), 1);
    CHECK(msgclient_connected(c));
    CHECK(!msgclient_going_away(c, NULL, NULL));
    CHECK_EQ(stat_of(c, "connections_current"), 1);
    msgclient_free(c);
    stop_daemon(&d2);
}

/* The call made while no daemon listens: its first reconnect attempts are
 * refused (seen through the connect hook); only then does the new daemon
 * start, and a later attempt of the same reconnect gets through. */
TEST(reconnect_retries_refused_attempts_until_daemon_is_back)
{
    hook_init();
    struct daemon d1, d2;
    start_daemon(&d1, NULL);
    int port = d1.port;
    struct msgclient *c = connect_client(port, &reconnecting);
    echo_ok(c, "before", 6);
    CHECK_EQ(daemon_signal(&d1, SIGTERM), 0);
    expect_goaway_and_close(c, "client");
    finish_daemon(&d1);

    struct call_job j = {.c = c, .tag = 1, .cmd = MSG_CMD_ECHO, .payload = "again", .len = 5};
    job_start(&j);
    int seen = wait_attempts(1, port, 2, daemon_ms(10000));
    if (seen < 2)
        TEST_FAIL("the client made %d reconnect attempts in %d ms, expected 2", seen,
                  daemon_ms(10000));
    start_daemon(&d2, &(struct daemon_opts){.port = port});
    job_join(&j, daemon_ms(30000));
    if (j.rc != 0)
        TEST_FAIL("the call through the reconnect: %d (%s)", j.rc, msgclient_error(c));
    CHECK_EQ(j.reply.command, REPLY(MSG_CMD_ECHO));
    CHECK_EQ(j.reply.len, 5);
    CHECK_MEM(j.reply.payload, "again", 5);
    msgclient_reply_free(&j.reply);
    CHECK_EQ(msgclient_reconnects(c), 1);
    int64_t t[64];
    int n = attempt_times(1, port, t, 64);
    CHECK(n >= 3);                              /* >= 2 refused, then the one that worked */
    CHECK(n <= (int)reconnecting.attempts);
    /* the waits between attempts follow the seeded schedule (lower bounds) */
    uint64_t rng = reconnecting.seed;
    int64_t prev = j.t_start_us;
    for (int i = 0; i < n; i++) {
        unsigned w = msgclient_backoff_ms((unsigned)i, reconnecting.backoff_initial_ms,
                                          reconnecting.backoff_max_ms, &rng);
        if (t[i] - prev < (int64_t)w * 1000 - 1000)
            TEST_FAIL("attempt %d came %lld us after the previous, before its back-off %u ms", i,
                      (long long)(t[i] - prev), w);
        prev = t[i];
    }
    echo_ok(c, "and on", 6);
    msgclient_free(c);
    stop_daemon(&d2);
}

/* Jitter on the real path. Two clients with different seeds reconnect at once
 * to a stopped daemon's port (every attempt refused). Seeds are picked so
 * that A's schedule is short and B's long. Measured: every wait is at least
 * its seed's back-off (lower bounds, exact), B's whole retry run cannot end
 * before the midpoint between the two schedules, and A's ends before B's
 * (about 2 s apart; no wall-clock limit), so the two did not retry in step.
 * Then a new daemon on the port, and both get through. */
#define JIT_ATTEMPTS 6
#define JIT_INIT 100
#define JIT_MAX 1600

static unsigned schedule(uint64_t seed, unsigned *w, unsigned *cap)
{
    unsigned sum = 0;
    uint64_t rng = seed;
    for (unsigned i = 0; i < JIT_ATTEMPTS; i++) {
        unsigned c = JIT_INIT << i;
        cap[i] = c > JIT_MAX ? JIT_MAX : c;
        w[i] = msgclient_backoff_ms(i, JIT_INIT, JIT_MAX, &rng);
        sum += w[i];
    }
    return sum;
}

TEST(reconnect_backoff_is_jittered_per_seed)
{
    hook_init();
    /* the pure part: values within [cap/2, cap]; the seeds' schedules */
    unsigned wa[JIT_ATTEMPTS], wb[JIT_ATTEMPTS], w[JIT_ATTEMPTS], cap[JIT_ATTEMPTS];
    uint64_t seed_a = 0, seed_b = 0;
    unsigned sum_a = ~0u, sum_b = 0, sum_cap = 0;
    for (uint64_t s = 1; s <= 20000; s++) {
        unsigned sum = schedule(s, w, cap);
        for (unsigned i = 0; i < JIT_ATTEMPTS; i++)
            if (w[i] < cap[i] / 2 || w[i] > cap[i])
                TEST_FAIL("seed %llu attempt %u: %u ms not in [%u, %u]", (unsigned long long)s,
                          i, w[i], cap[i] / 2, cap[i]);
        if (sum < sum_a) {
            sum_a = sum;
            seed_a = s;
        }
        if (sum > sum_b) {
            sum_b = sum;
            seed_b = s;
        }
    }
    schedule(seed_a, wa, cap);
    schedule(seed_b, wb, cap);
    for (unsigned i = 0; i < JIT_ATTEMPTS; i++)
        sum_cap += cap[i];
    unsigned midpoint = (sum_a + sum_b) / 2;
    CHECK(sum_a < sum_cap * 6 / 10 && sum_b > sum_cap * 9 / 10);   /* jitter spreads */
    CHECK(memcmp(wa, wb, sizeof wa) != 0);

    struct daemon d1, d2;
    start_daemon(&d1, NULL);
    int port = d1.port;
    struct client_cfg ca = {true, JIT_INIT, JIT_MAX, JIT_ATTEMPTS, seed_a, NULL, 0};
    struct client_cfg cb = {true, JIT_INIT, JIT_MAX, JIT_ATTEMPTS, seed_b, NULL, 0};
    struct msgclient *a = connect_client(port, &ca);
    struct msgclient *b = connect_client(port, &cb);
    echo_ok(a, "a", 1);
    echo_ok(b, "b", 1);
    CHECK_EQ(daemon_signal(&d1, SIGTERM), 0);
    expect_goaway_and_close(a, "client A");
    expect_goaway_and_close(b, "client B");
    finish_daemon(&d1);

    struct call_job ja = {.c = a, .tag = 1, .cmd = MSG_CMD_ECHO, .payload = "a", .len = 1};
    struct call_job jb = {.c = b, .tag = 2, .cmd = MSG_CMD_ECHO, .payload = "b", .len = 1};
    job_start(&ja);
    job_start(&jb);
    job_join(&ja, (int)sum_b + daemon_ms(20000));
    job_join(&jb, (int)sum_b + daemon_ms(20000));
    if (ja.rc != -ECONNREFUSED || jb.rc != -ECONNREFUSED)
        TEST_FAIL("calls with no daemon: %d (%s) and %d (%s), expected -ECONNREFUSED", ja.rc,
                  msgclient_error(a), jb.rc, msgclient_error(b));

    const struct call_job *jobs[2] = {&ja, &jb};
    const unsigned *sched[2] = {wa, wb};
    int64_t total[2];
    for (int k = 0; k < 2; k++) {
        int64_t t[JIT_ATTEMPTS + 1];
        int n = attempt_times(jobs[k]->tag, port, t, JIT_ATTEMPTS + 1);
        if (n != JIT_ATTEMPTS)
            TEST_FAIL("client %c: %d connect attempts, expected %d", 'A' + k, n, JIT_ATTEMPTS);
        int64_t prev = jobs[k]->t_start_us;
        for (int i = 0; i < n; i++) {
            if (t[i] - prev < (int64_t)sched[k][i] * 1000 - 1000)
                TEST_FAIL("client %c attempt %d: %lld us after the previous, before its "
                          "back-off of %u ms", 'A' + k, i, (long long)(t[i] - prev), sched[k][i]);
            prev = t[i];
        }
        total[k] = t[n - 1] - jobs[k]->t_start_us;
    }
    /* No wall-clock limit (the machine may be slow): the two clients started
     * together, so A, whose seed gives the shorter schedule, must be done
     * first. Clients retrying in step (no jitter, or the cap every time)
     * would finish together or A last. */
    if (total[0] >= total[1])
        TEST_FAIL("client A retried for %lld ms, B for %lld ms; their jittered schedules sum "
                  "to %u and %u ms (caps %u ms): expected A first", (long long)total[0] / 1000,
                  (long long)total[1] / 1000, sum_a, sum_b, sum_cap);
    CHECK(total[1] >= (int64_t)midpoint * 1000);  /* follows from the lower bounds */
    CHECK_EQ(msgclient_reconnects(a), 0);

    start_daemon(&d2, &(struct daemon_opts){.port = port});
    echo_ok(a, "a again", 7);
    echo_ok(b, "b again", 7);
    CHECK_EQ(msgclient_reconnects(a), 1);
    CHECK_EQ(msgclient_reconnects(b), 1);
    msgclient_free(a);
    msgclient_free(b);
    stop_daemon(&d2);
}

/* ---- 5. MESSAGE pushes ---------------------------------------------------------- */

TEST(publish_reaches_subscriber_as_message)
{
    struct daemon d;
    start_daemon(&d, NULL);
    struct msgclient *sub = connect_client(d.port, NULL);
    struct msgclient *pub = connect_client(d.port, NULL);
    struct msgclient_reply r;
    call_ok(sub, MSG_CMD_SUBSCRIBE, "news", 4, &r);
    CHECK_EQ(r.len, 0);
    msgclient_reply_free(&r);

    static const char pubmsg[] = "\x04news" "hello, world";
    call_ok(pub, MSG_CMD_PUBLISH, pubmsg, sizeof pubmsg - 1, &r);
    CHECK_EQ(r.len, 4);
    CHECK_EQ(msg_get_u32(r.payload), 1);
    msgclient_reply_free(&r);
    static const char other[] = "\x05other" "not for sub";
    call_ok(pub, MSG_CMD_PUBLISH, other, sizeof other - 1, &r);
    CHECK_EQ(msg_get_u32(r.payload), 0);
    msgclient_reply_free(&r);
    call_ok(pub, MSG_CMD_PUBLISH, "\x04news", 5, &r);   /* an empty message */
    CHECK_EQ(msg_get_u32(r.payload), 1);
    msgclient_reply_free(&r);

    struct msgclient_message m;
    memset(&m, 0, sizeof m);
    int rc = msgclient_recv_message(sub, &m, daemon_ms(10000));
    if (rc != 0)
        TEST_FAIL("recv_message: %d (%s)", rc, msgclient_error(sub));
    CHECK_EQ(m.topic_len, 4);
    CHECK_MEM(m.topic, "news", 4);
    CHECK_EQ(m.data_len, 12);
    CHECK_MEM(m.data, "hello, world", 12);
    CHECK_EQ(m.data[m.data_len], '\0');
    msgclient_message_free(&m);
    rc = msgclient_recv_message(sub, &m, daemon_ms(10000));
    CHECK_EQ(rc, 0);
    CHECK_EQ(m.topic_len, 4);
    CHECK_EQ(m.data_len, 0);
    msgclient_message_free(&m);

    /* a MESSAGE pushed between replies does not disturb a call */
    call_ok(pub, MSG_CMD_PUBLISH, pubmsg, sizeof pubmsg - 1, &r);
    msgclient_reply_free(&r);
    echo_ok(sub, "between", 7);
    rc = msgclient_recv_message(sub, &m, daemon_ms(10000));
    CHECK_EQ(rc, 0);
    CHECK_MEM(m.data, "hello, world", 12);
    msgclient_message_free(&m);
    CHECK_EQ(msgclient_messages_dropped(sub), 0);
    CHECK_EQ(msgclient_frames_dropped(sub), 0);
    msgclient_free(sub);
    msgclient_free(pub);
    stop_daemon(&d);
}

/* ---- 6. HELLO and compression ------------------------------------------------ */

/* n bytes of text that compresses well (words from a short list, a counter
 * now and then). */
static uint8_t *compressible(size_t n, unsigned salt)
{
    static const char *const words[] = {"alpha", "beta", "gamma", "delta", "msgd", "reactor",
                                        "frame", "payload", "zstd", "deflate", "the", "of"};
    uint8_t *p = malloc(n);
    CHECK(p != NULL);
    size_t at = 0;
    unsigned x = salt * 2654435761u + 1;
    while (at < n) {
        char w[32];
        x = x * 1103515245u + 12345u;
        int k = x % 16 == 0 ? snprintf(w, sizeof w, "%u ", x % 1000)
                            : snprintf(w, sizeof w, "%s ", words[(x >> 8) % 12]);
        for (int i = 0; i < k && at < n; i++)
            p[at++] = (uint8_t)w[i];
    }
    return p;
}

static struct msgclient *new_compress_client(int port, const char *codecs, uint32_t max_frame,
                                             bool reconnect)
{
    struct client_cfg cfg = {.reconnect = reconnect, .backoff_initial_ms = 1, .backoff_max_ms = 10,
                             .attempts = 8, .compress = codecs, .max_frame = max_frame};
    return connect_client(port, &cfg);
}

/* Both codecs both ways: HELLO agrees the codec, a big compressible ECHO
 * goes compressed (the server decompressed it: STATS) and comes back
 * compressed, small and incompressible payloads go plain. */
TEST(hello_and_compression_both_codecs)
{
    struct daemon d;
    start_daemon(&d, &(struct daemon_opts){.max_frame = "1M", .compress_min = "512"});
    static const char *const codecs[] = {"zstd", "deflate"};
    for (int k = 0; k < 2; k++) {
        struct msgclient *c = new_compress_client(d.port, codecs[k], 0, false);
        CHECK_STR(msgclient_codec(c), codecs[k]);
        const char *hello = msgclient_hello_reply(c);
        CHECK(hello != NULL);
        CHECK(strstr(hello, "server=msgd/") != NULL);
        CHECK(strstr(hello, "compress_min=512\n") != NULL);
        long long dec0 = stat_of(c, "decompressions");
        /* (STATS replies may come compressed too: count around each ECHO) */
        uint64_t in0 = msgclient_compressed_received(c);

        size_t n = 64 * 1024;
        uint8_t *big = compressible(n, (unsigned)k);
        echo_ok(c, big, n);
        CHECK_EQ(msgclient_compressed_sent(c), 1);
        CHECK_EQ(msgclient_compressed_received(c), in0 + 1);
        CHECK_EQ(stat_of(c, "decompressions"), dec0 + 1);

        /* below compress_min: plain both ways */
        in0 = msgclient_compressed_received(c);
        echo_ok(c, big, 511);
        CHECK_EQ(msgclient_compressed_sent(c), 1);
        CHECK_EQ(msgclient_compressed_received(c), in0);
        /* incompressible: plain both ways */
        uint8_t rnd[4096];
        uint64_t x = 0x9E3779B97F4A7C15ull + (uint64_t)k;
        for (size_t i = 0; i < sizeof rnd; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            rnd[i] = (uint8_t)(x >> 24);
        }
        echo_ok(c, rnd, sizeof rnd);
        CHECK_EQ(msgclient_compressed_sent(c), 1);
        CHECK_EQ(msgclient_compressed_received(c), in0);
        CHECK_EQ(stat_of(c, "decompressions"), dec0 + 1);

        /* pipelined: replies in order, each decompressed */
        in0 = msgclient_compressed_received(c);
        for (unsigned i = 0; i < 8; i++) {
            uint8_t *p = compressible(n - i, 100 + i);
            CHECK_EQ(msgclient_send(c, MSG_CMD_ECHO, p, n - i), 0);
            free(p);
        }
        for (unsigned i = 0; i < 8; i++) {
            struct msgclient_reply r;
            memset(&r, 0, sizeof r);
            CHECK_EQ(msgclient_recv(c, &r), 0);
            CHECK_EQ(r.command, REPLY(MSG_CMD_ECHO));
            uint8_t *p = compressible(n - i, 100 + i);
            CHECK_EQ(r.len, n - i);
            CHECK_MEM(r.payload, p, n - i);
            free(p);
            msgclient_reply_free(&r);
        }
        CHECK_EQ(msgclient_compressed_sent(c), 9);
        CHECK_EQ(msgclient_compressed_received(c), in0 + 8);
        free(big);
        msgclient_free(c);
    }
    stop_daemon(&d);
}

/* The library's heartbeat follows the daemon's heartbeat_interval, which
 * HELLO reports, when the caller left heartbeat_ms at its default; without
 * HELLO (compress NULL) it stays 30 s. */
TEST(hello_gives_the_client_the_daemon_heartbeat)
{
    struct daemon d;
    start_daemon(&d, &(struct daemon_opts){.heartbeat_ms = 700});
    struct msgclient *c = connect_client(d.port, &(struct client_cfg){.compress = "none"});
    CHECK(strstr(msgclient_hello_reply(c), "heartbeat_ms=700\n") != NULL);
    CHECK_EQ(msgclient_heartbeat_ms(c), 700);
    echo_ok(c, "x", 1);
    msgclient_free(c);
    c = connect_client(d.port, NULL);
    CHECK(msgclient_hello_reply(c) == NULL);
    CHECK_EQ(msgclient_heartbeat_ms(c), 30000);
    msgclient_free(c);
    stop_daemon(&d);
}

/* MESSAGE pushes come compressed (deflate for a subscriber whose PUBLISHer
 * uses zstd) and are decompressed; a reconnect sends
 * HELLO again; a decompressed size past the client's max_frame drops the
 * connection (-EPROTO), nothing past it allocated. */
TEST(compressed_pushes_reconnect_and_bound)
{
    struct daemon d;
    start_daemon(&d, &(struct daemon_opts){.max_frame = "1M"});
    struct msgclient *sub = new_compress_client(d.port, "deflate,zstd", 0, true);
    struct msgclient *pub = new_compress_client(d.port, "zstd", 0, false);
    CHECK_STR(msgclient_codec(sub), "deflate"); /* the first of the client's list */
    struct msgclient_reply r;
    call_ok(sub, MSG_CMD_SUBSCRIBE, "z", 1, &r);
    msgclient_reply_free(&r);

    size_t n = 32 * 1024;
    uint8_t *msg = compressible(n + 2, 7);
    msg[0] = 1;
    msg[1] = 'z';
    call_ok(pub, MSG_CMD_PUBLISH, msg, n + 2, &r);
    CHECK_EQ(msg_get_u32(r.payload), 1);
    msgclient_reply_free(&r);
    CHECK_EQ(msgclient_compressed_sent(pub), 1);
    struct msgclient_message m;
    memset(&m, 0, sizeof m);
    int rc = msgclient_recv_message(sub, &m, daemon_ms(10000));
    if (rc != 0)
        TEST_FAIL("recv_message: %d (%s)", rc, msgclient_error(sub));
    CHECK_EQ(m.topic_len, 1);
    CHECK_EQ(m.data_len, n);
    CHECK_MEM(m.data, msg + 2, n);
    msgclient_message_free(&m);
    CHECK_EQ(msgclient_compressed_received(sub), 1);

    /* a reconnect: HELLO again, compression still on */
    msgclient_close(sub);
    CHECK_STR(msgclient_codec(sub), "none");
    echo_ok(sub, msg, n);
    CHECK_EQ(msgclient_reconnects(sub), 1);
    CHECK_STR(msgclient_codec(sub), "deflate");
    CHECK_EQ(msgclient_compressed_sent(sub), 1);
    CHECK_EQ(msgclient_compressed_received(sub), 2);

    /* the client's max_frame bounds what it decompresses */
    struct msgclient *small = new_compress_client(d.port, "zstd", 16 * 1024, false);
    memset(&r, 0, sizeof r);
    rc = msgclient_call(small, MSG_CMD_ECHO, msg, n, &r);
    if (rc != -EPROTO)
        TEST_FAIL("ECHO decompressing to %zu bytes past max_frame 16K: %d (%s), expected -EPROTO",
                  n, rc, msgclient_error(small));
    CHECK(strstr(msgclient_error(small), "past max_frame") != NULL);
    CHECK(!msgclient_connected(small));
    msgclient_free(small);
    free(msg);
    msgclient_free(sub);
    msgclient_free(pub);
    stop_daemon(&d);
}

/* A server without codecs answers compress=none and is used plainly; so is
 * a client offering none; an unknown codec name is refused up front. */
TEST(compression_refused_or_not_offered)
{
    struct daemon d;
    start_daemon(&d, &(struct daemon_opts){.max_frame = "1M", .compress = ""});
    struct msgclient *c = new_compress_client(d.port, "zstd,deflate", 0, false);
    CHECK_STR(msgclient_codec(c), "none");
    CHECK(strstr(msgclient_hello_reply(c), "compress=none\n") != NULL);
    uint8_t *big = compressible(20000, 3);
    echo_ok(c, big, 20000);
    CHECK_EQ(msgclient_compressed_sent(c), 0);
    CHECK_EQ(msgclient_compressed_received(c), 0);
    msgclient_free(c);
    stop_daemon(&d);

    struct daemon d2;
    start_daemon(&d2, NULL);
    c = new_compress_client(d2.port, "none", 0, false);
    CHECK_STR(msgclient_codec(c), "none");
    CHECK(msgclient_hello_reply(c) != NULL);
    echo_ok(c, big, 20000);
    CHECK_EQ(msgclient_compressed_received(c), 0);
    msgclient_free(c);
    /* no compress option: no HELLO at all */
    c = connect_client(d2.port, NULL);
    CHECK(msgclient_hello_reply(c) == NULL);
    CHECK_STR(msgclient_codec(c), "none");
    msgclient_free(c);
    stop_daemon(&d2);
    free(big);

    struct msgclient_options o;
    msgclient_options_init(&o);
    o.addr = "127.0.0.1:1";
    o.compress = "zstd,lz4";
    errno = 0;
    CHECK(msgclient_new(&o) == NULL);
    CHECK_EQ(errno, EINVAL);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
