/* test_msgclient: the msgclient library against fake servers on socketpairs
 * and loopback listeners of its own (no daemon): back-off, PING answers,
 * pipelined replies, pushes, GOAWAY, errors, timeouts, reconnect and AUTH. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include "client/msgclient.h"
#include "msg.h"
#include "test.h"

#define WAIT_MS 5000

/* ---- a fake server's side of the wire (blocking, bounded by WAIT_MS) ------- */

static int read_full(int fd, uint8_t *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, WAIT_MS) <= 0)
            return -ETIMEDOUT;
        ssize_t r = read(fd, p + got, n - got);
        if (r <= 0)
            return r == 0 ? -ECONNRESET : -errno;
        got += (size_t)r;
    }
    return 0;
}

/* Reads one frame; payload into buf (cap bytes). Returns its length or -errno. */
static long read_frame(int fd, uint32_t *cmd, uint8_t *buf, size_t cap)
{
    uint8_t h[MSG_HEADER_LEN];
    if (read_full(fd, h, sizeof h) < 0)
        return -EIO;
    struct msg_header mh;
    msg_header_decode(h, &mh);
    if (mh.magic != MSG_MAGIC || mh.version != MSG_VERSION || mh.length > cap)
        return -EPROTO;
    if (read_full(fd, buf, mh.length) < 0)
        return -EIO;
    *cmd = mh.command;
    return (long)mh.length;
}

static void write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w <= 0)
            return;
        b += w;
        n -= (size_t)w;
    }
}

static void write_frame(int fd, uint32_t cmd, const void *p, size_t n)
{
    uint8_t h[MSG_HEADER_LEN];
    msg_header_encode(h, cmd, (uint32_t)n);
    write_all(fd, h, sizeof h);
    write_all(fd, p, n);
}

/* The same frame, one byte per write (half packets). */
static void write_frame_bytewise(int fd, uint32_t cmd, const void *p, size_t n)
{
    uint8_t buf[MSG_HEADER_LEN + 64];
    msg_header_encode(buf, cmd, (uint32_t)n);
    memcpy(buf + MSG_HEADER_LEN, p, n);
    for (size_t i = 0; i < MSG_HEADER_LEN + n; i++)
        write_all(fd, buf + i, 1);
}

static void write_error(int fd, uint32_t cmd, uint32_t code, const char *text)
{
    uint8_t p[128];
    size_t n = msg_error_payload(p, sizeof p, code, text);
    write_frame(fd, cmd, p, n);
}

struct fake {
    int fd;
    int listen_fd;
    int ok;                        /* the server thread's own checks passed */
    char why[128];
};

static void fake_fail(struct fake *f, const char *why)
{
    if (f->ok) {
        f->ok = 0;
        snprintf(f->why, sizeof f->why, "%s", why);
    }
}

/* A client with options o on one end of a socketpair; the other is *server_fd. */
static struct msgclient *client_on_pair_with(int *server_fd, const struct msgclient_options *o)
{
    int sv[2];
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct msgclient *c = msgclient_new(o);
    CHECK(c != NULL);
    CHECK_EQ(msgclient_adopt(c, sv[0]), 0);
    *server_fd = sv[1];
    return c;
}

static struct msgclient *client_on_pair(int *server_fd, int timeout_ms)
{
    struct msgclient_options o;
    msgclient_options_init(&o);
    o.timeout_ms = timeout_ms;
    return client_on_pair_with(server_fd, &o);
}

static void run_fake(struct fake *f, void *(*fn)(void *), pthread_t *t)
{
    f->ok = 1;
    f->why[0] = '\0';
    CHECK_EQ(pthread_create(t, NULL, fn, f), 0);
}

static void join_fake(struct fake *f, pthread_t t)
{
    pthread_join(t, NULL);
    if (!f->ok)
        TEST_FAIL("fake server: %s", f->why);
}

/* A loopback listener on an ephemeral port; returns the fd, *port set. */
static int listen_loopback(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_EQ(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    CHECK_EQ(listen(fd, 8), 0);
    socklen_t sl = sizeof sin;
    CHECK_EQ(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

static int accept_wait(int lfd)
{
    struct pollfd pfd = {lfd, POLLIN, 0};
    if (poll(&pfd, 1, WAIT_MS) <= 0)
        return -1;
    return accept(lfd, NULL, NULL);
}

/* fn as a fake server on a loopback listener of its own (f->listen_fd), and
 * options *o (defaults) aimed at it: addr (addrlen bytes) holds the address. */
static void run_fake_listener(struct fake *f, void *(*fn)(void *), pthread_t *t,
                              struct msgclient_options *o, char *addr, size_t addrlen)
{
    int port;
    f->listen_fd = listen_loopback(&port);
    run_fake(f, fn, t);
    snprintf(addr, addrlen, "127.0.0.1:%d", port);
    msgclient_options_init(o);
    o->addr = addr;
}

/* A fake server's end: waits (WAIT_MS at most) for the client to close fd,
 * then closes it. */
static void close_after_client(int fd)
{
    struct pollfd pfd = {fd, POLLIN, 0};
    poll(&pfd, 1, WAIT_MS);
    close(fd);
}

/* ---- pure functions ---------------------------------------------------------- */

TEST(backoff_doubles_within_jitter_and_caps)
{
    uint64_t rng = 12345;
    for (unsigned a = 0; a < 12; a++) {
        unsigned cap = 100u << a;
        if (cap > 5000 || a > 6)
            cap = 5000;
        for (int k = 0; k < 50; k++) {
            unsigned v = msgclient_backoff_ms(a, 100, 5000, &rng);
            if (v < cap / 2 || v > cap)
                TEST_FAIL("attempt %u: %u not in [%u, %u]", a, v, cap / 2, cap);
        }
    }
    /* huge attempt numbers do not overflow */
    unsigned v = msgclient_backoff_ms(1000, 100, 5000, &rng);
    CHECK(v >= 2500 && v <= 5000);
    CHECK(rng != 0);
}

TEST(backoff_jitter_spreads_and_is_seeded)
{
    uint64_t a = 7, b = 7, c = 8;
    int same_ab = 1, distinct = 0;
    unsigned prev = 0;
    for (int i = 0; i < 64; i++) {
        unsigned va = msgclient_backoff_ms(3, 100, 5000, &a);
        unsigned vb = msgclient_backoff_ms(3, 100, 5000, &b);
        unsigned vc = msgclient_backoff_ms(3, 100, 5000, &c);
        same_ab &= va == vb;
        distinct += i > 0 && va != prev;
        prev = va;
        (void)vc;
    }
    CHECK(same_ab);          /* same seed, same sequence */
    CHECK(distinct > 32);    /* but the values spread */
    uint64_t z = 0;          /* a zero state still works */
    unsigned v = msgclient_backoff_ms(0, 100, 5000, &z);
    CHECK(v >= 50 && v <= 100);
    CHECK(z != 0);
    uint64_t r = 1;
    CHECK_EQ(msgclient_backoff_ms(0, 0, 0, &r), 0);
}

TEST(split_hostport)
{
    char h[64], p[8];
    CHECK_EQ(msgclient_split_hostport("127.0.0.1:7700", h, sizeof h, p, sizeof p), 0);
    CHECK_STR(h, "127.0.0.1");
    CHECK_STR(p, "7700");
    CHECK_EQ(msgclient_split_hostport("[::1]:80", h, sizeof h, p, sizeof p), 0);
    CHECK_STR(h, "::1");
    CHECK_STR(p, "80");
    CHECK_EQ(msgclient_split_hostport("localhost:65535", h, sizeof h, p, sizeof p), 0);
    CHECK_EQ(msgclient_split_hostport("localhost", h, sizeof h, p, sizeof p), -EINVAL);
    CHECK_EQ(msgclient_split_hostport("host:0", h, sizeof h, p, sizeof p), -EINVAL);
    CHECK_EQ(msgclient_split_hostport("host:65536", h, sizeof h, p, sizeof p), -EINVAL);
    CHECK_EQ(msgclient_split_hostport("host:12a", h, sizeof h, p, sizeof p), -EINVAL);
    CHECK_EQ(msgclient_split_hostport(":80", h, sizeof h, p, sizeof p), -EINVAL);
    CHECK_EQ(msgclient_split_hostport("[::1]80", h, sizeof h, p, sizeof p), -EINVAL);
}

/* The clients' one resolver: the daemon's grammar (no DNS for these), ports
 * 1..65535, and nothing getaddrinfo alone would take beyond it. */
TEST(resolve)
{
    struct msgclient_addr a[MSGCLIENT_ADDRS_MAX];
    char err[256];
    CHECK_EQ(msgclient_resolve("127.0.0.1:7700", a, MSGCLIENT_ADDRS_MAX, err, sizeof err), 1);
    const struct sockaddr_in *in4 = (const struct sockaddr_in *)&a[0].ss;
    CHECK_EQ(in4->sin_family, AF_INET);
    CHECK_EQ(ntohs(in4->sin_port), 7700);
    CHECK_EQ(ntohl(in4->sin_addr.s_addr), 0x7f000001);
    /* localhost is 127.0.0.1, as for the daemon that listens on it */
    CHECK_EQ(msgclient_resolve("localhost:80", a, 1, err, sizeof err), 1);
    CHECK_EQ(in4->sin_family, AF_INET);
    CHECK_EQ(ntohl(in4->sin_addr.s_addr), 0x7f000001);
    CHECK_EQ(msgclient_resolve("[::1]:80", a, 1, err, sizeof err), 1);
    CHECK_EQ(a[0].ss.ss_family, AF_INET6);
    CHECK_EQ(a[0].len, sizeof(struct sockaddr_in6));
    CHECK_EQ(msgclient_resolve("unix:/run/x.sock", a, 1, err, sizeof err), 1);
    CHECK_EQ(a[0].ss.ss_family, AF_UNIX);
    CHECK_STR(((const struct sockaddr_un *)&a[0].ss)->sun_path, "/run/x.sock");

    char longpath[200] = "unix:/";
    while (strlen(longpath) < 5 + MSGCLIENT_UNIX_PATH_MAX)
        strcat(longpath, "p");
    CHECK_EQ(msgclient_resolve(longpath, a, 1, err, sizeof err), 1);
    strcat(longpath, "p");
    const char *const bad[] = {
        "", "no-port-here", "localhost:0", "127.0.0.1:65536", "127.0.0.1:x", ":80",
        "1.2.3:80", "127.1:80", "0x7f.0.0.1:80", "[zz::1]:1", "[::1]80", "unix:", "unix:rel",
        longpath,
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        int rc = msgclient_resolve(bad[i], a, MSGCLIENT_ADDRS_MAX, err, sizeof err);
        if (rc != -EINVAL || err[0] == '\0')
            TEST_FAIL("'%.40s': %d, err '%s'", bad[i], rc, err);
    }
    CHECK_EQ(msgclient_resolve(NULL, a, 1, err, sizeof err), -EINVAL);
    CHECK_EQ(msgclient_resolve("127.0.0.1:1", a, 0, err, sizeof err), -EINVAL);
}

TEST(target_from_options)
{
    char t[64];
    CHECK_EQ(msgclient_target("127.0.0.1", 7700, NULL, t, sizeof t), 0);
    CHECK_STR(t, "127.0.0.1:7700");
    CHECK_EQ(msgclient_target("::1", 80, NULL, t, sizeof t), 0);
    CHECK_STR(t, "[::1]:80");
    CHECK_EQ(msgclient_target("[::1]", 80, NULL, t, sizeof t), 0);
    CHECK_STR(t, "[::1]:80");
    CHECK_EQ(msgclient_target("db.example", 1, NULL, t, sizeof t), 0);
    CHECK_STR(t, "db.example:1");
    CHECK_EQ(msgclient_target("x", 1, "/run/m.sock", t, sizeof t), 0);
    CHECK_STR(t, "unix:/run/m.sock");
    CHECK_EQ(msgclient_target("x", 1, "unix:/run/m.sock", t, sizeof t), 0);
    CHECK_STR(t, "unix:/run/m.sock");
    CHECK_EQ(msgclient_target("x", 1, "relative.sock", t, sizeof t), -EINVAL);
    CHECK_EQ(msgclient_target("x", 1, "unix:", t, sizeof t), -EINVAL);
    CHECK_EQ(msgclient_target("127.0.0.1", 7700, NULL, t, 8), -ENAMETOOLONG);
}

TEST(decode_error_payload)
{
    uint8_t p[64];
    size_t n = msg_error_payload(p, sizeof p, MSG_ERR_DISABLED, "off\n");
    uint32_t code;
    char text[8];
    CHECK_EQ(msgclient_decode_error(p, n, &code, text, sizeof text), 0);
    CHECK_EQ(code, MSG_ERR_DISABLED);
    CHECK_STR(text, "off?");    /* control bytes are not passed through */
    n = msg_error_payload(p, sizeof p, 1, "a long text that is cut");
    CHECK_EQ(msgclient_decode_error(p, n, &code, text, sizeof text), 0);
    CHECK_STR(text, "a long ");
    CHECK_EQ(msgclient_decode_error(p, 3, &code, text, sizeof text), -EINVAL);
    CHECK_EQ(code, 0);
}

/* ---- PING answered while waiting ------------------------------------------------ */

static void *ping_server(void *arg)
{
    struct fake *f = arg;
    uint8_t buf[256];
    uint32_t cmd;
    long n = read_frame(f->fd, &cmd, buf, sizeof buf);
    if (n != 1 || cmd != MSG_CMD_ECHO || buf[0] != 'x')
        return fake_fail(f, "expected ECHO x"), NULL;
    write_frame(f->fd, MSG_CMD_PING, "hb", 2);          /* a heartbeat before the reply */
    n = read_frame(f->fd, &cmd, buf, sizeof buf);
    if (n != 2 || cmd != (MSG_FLAG_REPLY | MSG_CMD_PING) || memcmp(buf, "hb", 2) != 0)
        return fake_fail(f, "expected the PING reply 0x80000001 hb"), NULL;
    write_frame_bytewise(f->fd, MSG_FLAG_REPLY | MSG_CMD_ECHO, "x", 1);
    return NULL;
}

TEST(ping_is_answered_while_waiting)
{
    struct fake f;
    struct msgclient *c = client_on_pair(&f.fd, WAIT_MS);
    pthread_t t;
    run_fake(&f, ping_server, &t);
    struct msgclient_reply r;
    int rc = msgclient_call(c, MSG_CMD_ECHO, "x", 1, &r);
    join_fake(&f, t);
    CHECK_EQ(rc, 0);
    CHECK_EQ(r.command, MSG_FLAG_REPLY | MSG_CMD_ECHO);
    CHECK_EQ(r.len, 1);
    CHECK_EQ(r.payload[0], 'x');
    CHECK_EQ(r.error_code, 0);
    CHECK_EQ(msgclient_pings_answered(c), 1);
    msgclient_reply_free(&r);
    close(f.fd);
    msgclient_free(c);
}

/* ---- pipelining, pushes in between, split frames ----------------------------------- */

#define PIPE_N 100

static void *pipeline_server(void *arg)
{
    struct fake *f = arg;
    uint8_t buf[64];
    uint32_t cmd;
    uint32_t got[PIPE_N];
    for (int i = 0; i < PIPE_N; i++) {       /* all requests arrive before any reply */
        long n = read_frame(f->fd, &cmd, buf, sizeof buf);
        if (n != 4 || cmd != MSG_CMD_ECHO)
            return fake_fail(f, "expected ECHO with 4 bytes"), NULL;
        got[i] = msg_get_u32(buf);
    }
    uint8_t msg[] = "\x05" "topic" "hello";
    for (int i = 0; i < PIPE_N; i++) {
        uint8_t p[4];
        msg_put_u32(p, got[i]);
        if (i == 10)
            write_frame(f->fd, MSG_CMD_MESSAGE, msg, sizeof msg - 1);
        if (i == 20)
            write_frame(f->fd, MSG_CMD_PING, "", 0);
        if (i % 7 == 0)
            write_frame_bytewise(f->fd, MSG_FLAG_REPLY | MSG_CMD_ECHO, p, 4);
        else
            write_frame(f->fd, MSG_FLAG_REPLY | MSG_CMD_ECHO, p, 4);
    }
    long n = read_frame(f->fd, &cmd, buf, sizeof buf);
    if (n != 0 || cmd != (MSG_FLAG_REPLY | MSG_CMD_PING))
        return fake_fail(f, "expected an empty PING reply"), NULL;
    return NULL;
}

TEST(pipelined_replies_in_order_with_pushes_between)
{
    struct fake f;
    struct msgclient *c = client_on_pair(&f.fd, WAIT_MS);
    pthread_t t;
    run_fake(&f, pipeline_server, &t);
    for (uint32_t i = 0; i < PIPE_N; i++) {
        uint8_t p[4];
        msg_put_u32(p, 1000 + i);
        CHECK_EQ(msgclient_send(c, MSG_CMD_ECHO, p, 4), 0);
    }
    CHECK_EQ(msgclient_pending(c), PIPE_N);
    CHECK_EQ(msgclient_flush(c), 0);
    for (uint32_t i = 0; i < PIPE_N; i++) {
        struct msgclient_reply r;
        CHECK_EQ(msgclient_recv(c, &r), 0);
        CHECK_EQ(r.command, MSG_FLAG_REPLY | MSG_CMD_ECHO);
        CHECK_EQ(r.len, 4);
        CHECK_EQ(msg_get_u32(r.payload), 1000 + i);
        msgclient_reply_free(&r);
    }
    CHECK_EQ(msgclient_pending(c), 0);
    struct msgclient_reply r;
    CHECK_EQ(msgclient_recv(c, &r), -ENOMSG);
    struct msgclient_message m;
    CHECK_EQ(msgclient_recv_message(c, &m, 0), 0);
    CHECK_EQ(m.topic_len, 5);
    CHECK_STR((const char *)m.topic, "topic");
    CHECK_EQ(m.data_len, 5);
    CHECK_STR((const char *)m.data, "hello");
    msgclient_message_free(&m);
    /* the PING reply goes out with the next I/O */
    CHECK_EQ(msgclient_flush(c), 0);
    join_fake(&f, t);
    CHECK_EQ(msgclient_pings_answered(c), 1);
    CHECK_EQ(msgclient_recv_message(c, &m, 10), -ETIMEDOUT);
    close(f.fd);
    msgclient_free(c);
}

/* ---- MESSAGE to a callback --------------------------------------------------------- */

struct seen { int n; char last[32]; };

static void on_message(void *user, const uint8_t *topic, size_t tl, const uint8_t *data,
                       size_t dl)
{
    struct seen *s = user;
    s->n++;
    snprintf(s->last, sizeof s->last, "%.*s=%.*s", (int)tl, (const char *)topic, (int)dl,
             (const char *)data);
}

static void *message_server(void *arg)
{
    struct fake *f = arg;
    uint8_t buf[64];
    uint32_t cmd;
    if (read_frame(f->fd, &cmd, buf, sizeof buf) != 0 || cmd != MSG_CMD_PING)
        return fake_fail(f, "expected PING"), NULL;
    write_frame(f->fd, MSG_CMD_MESSAGE, "\x01" "tA", 3);
    write_frame(f->fd, MSG_CMD_MESSAGE, "\x09" "bad", 4);     /* topic longer than payload */
    write_frame(f->fd, MSG_CMD_MESSAGE, "\x01" "uB", 3);
    write_frame(f->fd, MSG_FLAG_REPLY | MSG_CMD_PING, "", 0);
    return NULL;
}

TEST(messages_go_to_the_callback)
{
    struct seen s = {0, ""};
    struct msgclient_options o;
    msgclient_options_init(&o);
    o.on_message = on_message;
    o.user = &s;
    struct fake f;
    struct msgclient *c = client_on_pair_with(&f.fd, &o);
    pthread_t t;
    run_fake(&f, message_server, &t);
    struct msgclient_reply r;
    CHECK_EQ(msgclient_call(c, MSG_CMD_PING, NULL, 0, &r), 0);
    join_fake(&f, t);
    CHECK_EQ(s.n, 2);
    CHECK_STR(s.last, "u=B");
    CHECK_EQ(msgclient_frames_dropped(c), 1);
    struct msgclient_message m;
    CHECK_EQ(msgclient_recv_message(c, &m, 0), -EINVAL);
    msgclient_reply_free(&r);
    close(f.fd);
    msgclient_free(c);
}

/* ---- DIRECT and DELIVER ---------------------------------------------------------- */

/* PROTOCOL.md's test vector: DIRECT to `bob`, message `yo`. */
static const uint8_t direct_vector[] = {
    0x4d, 0x53, 0x47, 0x50, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x15,
    0x00, 0x00, 0x00, 0x06, 0x03, 0x62, 0x6f, 0x62, 0x79, 0x6f,
};

TEST(encode_direct_matches_the_test_vector)
{
    uint8_t frame[64];
    long n = msgclient_encode_direct(frame + MSG_HEADER_LEN, sizeof frame - MSG_HEADER_LEN,
                                     "bob", 3, "yo", 2);
    CHECK_EQ(n, 6);
    msg_header_encode(frame, MSG_CMD_DIRECT, (uint32_t)n);
    CHECK_EQ(MSG_HEADER_LEN + (size_t)n, sizeof direct_vector);
    CHECK_MEM(frame, direct_vector, sizeof direct_vector);
    /* exactly enough room; an empty message */
    uint8_t p[4];
    CHECK_EQ(msgclient_encode_direct(p, 4, "bob", 3, NULL, 0), 4);
    CHECK_MEM(p, "\x03" "bob", 4);
    /* the identity is 1..255 bytes; too little room writes nothing */
    char id[256];
    memset(id, 'i', sizeof id);
    uint8_t big[300];
    CHECK_EQ(msgclient_encode_direct(big, sizeof big, id, 255, "m", 1), 257);
    CHECK_EQ(big[0], 255);
    CHECK_EQ(big[256], 'm');
    CHECK_EQ(msgclient_encode_direct(big, sizeof big, id, 256, "m", 1), -EINVAL);
    CHECK_EQ(msgclient_encode_direct(big, sizeof big, id, 0, "m", 1), -EINVAL);
    p[0] = 0xAA;
    CHECK_EQ(msgclient_encode_direct(p, 4, "bob", 3, "y", 1), -ENOSPC);
    CHECK_EQ(p[0], 0xAA);
}

TEST(decode_direct_reply)
{
    uint8_t p[9] = {0, 0, 0, 3, 0, 0, 1, 2, 0};
    uint32_t local = 99, remote = 99;
    CHECK_EQ(msgclient_decode_direct_reply(p, 8, &local, &remote), 0);
    CHECK_EQ(local, 3);
    CHECK_EQ(remote, 0x102);
    CHECK_EQ(msgclient_decode_direct_reply(p, 4, &local, &remote), -EBADMSG);
    CHECK_EQ(msgclient_decode_direct_reply(p, 9, &local, &remote), -EBADMSG);
    CHECK_EQ(msgclient_decode_direct_reply(p, 0, &local, &remote), -EBADMSG);
}

/* Expects the test vector's DIRECT; pushes a DELIVER of it to the sender
 * (DIRECT to oneself: the push may come before the reply), then replies 2, 1.
 * Then NOT_AUTHENTICATED to the next DIRECT, then a 4-byte reply. */
static void *direct_server(void *arg)
{
    struct fake *f = arg;
    uint8_t buf[64];
    uint32_t cmd;
    long n = read_frame(f->fd, &cmd, buf, sizeof buf);
    if (n != 6 || cmd != MSG_CMD_DIRECT || memcmp(buf, direct_vector + MSG_HEADER_LEN, 6) != 0)
        return fake_fail(f, "expected the test vector's DIRECT"), NULL;
    write_frame(f->fd, MSG_CMD_DELIVER, "\x03" "bobyo", 6);
    uint8_t counts[8];
    msg_put_u32(counts, 2);
    msg_put_u32(counts + 4, 1);
    write_frame(f->fd, MSG_FLAG_REPLY | MSG_CMD_DIRECT, counts, sizeof counts);
    n = read_frame(f->fd, &cmd, buf, sizeof buf);
    if (n != 3 || cmd != MSG_CMD_DIRECT || memcmp(buf, "\x01" "xz", 3) != 0)
        return fake_fail(f, "expected DIRECT x z"), NULL;
    write_error(f->fd, MSG_FLAG_REPLY | MSG_FLAG_ERROR | MSG_CMD_DIRECT,
                MSG_ERR_NOT_AUTHENTICATED, "AUTH first");
    n = read_frame(f->fd, &cmd, buf, sizeof buf);
    if (n != 2 || cmd != MSG_CMD_DIRECT)
        return fake_fail(f, "expected DIRECT x"), NULL;
    write_frame(f->fd, MSG_FLAG_REPLY | MSG_CMD_DIRECT, counts, 4);
    return NULL;
}

TEST(direct_call_counts_errors_and_bad_replies)
{
    struct fake f;
    struct msgclient *c = client_on_pair(&f.fd, WAIT_MS);
    pthread_t t;
    run_fake(&f, direct_server, &t);
    struct msgclient_reply r;
    memset(&r, 0, sizeof r);
    uint32_t local = 0, remote = 0;
    /* a bad identity length is refused before anything is sent */
    CHECK_EQ(msgclient_direct(c, "", 0, "m", 1, &local, &remote, &r), -EINVAL);
    CHECK_EQ(msgclient_pending(c), 0);
    CHECK_EQ(msgclient_direct(c, "bob", 3, "yo", 2, &local, &remote, &r), 0);
    CHECK_EQ(local, 2);
    CHECK_EQ(remote, 1);
    CHECK_EQ(r.command, MSG_FLAG_REPLY | MSG_CMD_DIRECT);
    msgclient_reply_free(&r);
    CHECK_EQ(msgclient_direct(c, "x", 1, "z", 1, &local, &remote, &r), MSGCLIENT_ERROR_REPLY);
    CHECK_EQ(r.error_code, MSG_ERR_NOT_AUTHENTICATED);
    CHECK_STR(r.error_text, "AUTH first");
    msgclient_reply_free(&r);
    CHECK_EQ(msgclient_direct(c, "x", 1, NULL, 0, &local, &remote, &r), -EBADMSG);
    CHECK_EQ(r.len, 4);
    CHECK(strstr(msgclient_error(c), "unexpected reply") != NULL);
    msgclient_reply_free(&r);
    join_fake(&f, t);
    /* the DELIVER that came before the first reply waits in its queue */
    struct msgclient_deliver d;
    CHECK_EQ(msgclient_recv_deliver(c, &d, 0), 0);
    CHECK_EQ(d.sender_len, 3);
    CHECK_STR((const char *)d.sender, "bob");
    CHECK_EQ(d.data_len, 2);
    CHECK_STR((const char *)d.data, "yo");
    msgclient_deliver_free(&d);
    CHECK(d.buf == NULL);
    CHECK_EQ(msgclient_frames_dropped(c), 0);
    close(f.fd);
    msgclient_free(c);
}

struct seen_delivers { int n; char log[256]; };

static void on_deliver(void *user, const uint8_t *sender, size_t sl, const uint8_t *data,
                       size_t dl)
{
    struct seen_delivers *s = user;
    size_t used = strlen(s->log);
    snprintf(s->log + used, sizeof s->log - used, "%s[%.*s]=%.*s", s->n ? " " : "", (int)sl,
             sl ? (const char *)sender : "", (int)dl, dl ? (const char *)data : "");
    s->n++;
}

static void on_message_unexpected(void *user, const uint8_t *topic, size_t tl,
                                  const uint8_t *data, size_t dl)
{
    struct seen_delivers *s = user;
    (void)topic, (void)tl, (void)data, (void)dl;
    s->n += 1000;       /* a DELIVER must never reach the MESSAGE callback */
}

/* DELIVERs well formed and not, a MESSAGE among them, then the PING reply. */
static void *deliver_server(void *arg)
{
    struct fake *f = arg;
    uint8_t buf[64];
    uint32_t cmd;
    if (read_frame(f->fd, &cmd, buf, sizeof buf) != 0 || cmd != MSG_CMD_PING)
        return fake_fail(f, "expected PING"), NULL;
    write_frame(f->fd, MSG_CMD_DELIVER, "\x05" "alicehi there", 14);
    write_frame(f->fd, MSG_CMD_DELIVER, "\x00" "anon", 5);      /* no sender identity */
    write_frame(f->fd, MSG_CMD_DELIVER, "\x09" "ab", 3);        /* length byte past the end */
    write_frame(f->fd, MSG_CMD_DELIVER, "", 0);                 /* not even the length byte */
    write_frame(f->fd, MSG_CMD_DELIVER, "\xff", 1);             /* 255, nothing after it */
    write_frame(f->fd, MSG_CMD_DELIVER, "\x02" "bo", 3);        /* a sender, no message */
    write_frame(f->fd, MSG_CMD_DELIVER, "\x00", 1);             /* neither */
    write_frame_bytewise(f->fd, MSG_CMD_DELIVER, "\x01" "zsplit", 7);
    write_frame(f->fd, MSG_FLAG_REPLY | MSG_CMD_PING, "", 0);
    return NULL;
}

TEST(delivers_go_to_the_callback_and_malformed_ones_are_dropped)
{
    struct seen_delivers s;
    memset(&s, 0, sizeof s);
    struct msgclient_options o;
    msgclient_options_init(&o);
    o.on_deliver = on_deliver;
    o.on_message = on_message_unexpected;
    o.user = &s;
    struct fake f;
    struct msgclient *c = client_on_pair_with(&f.fd, &o);
    pthread_t t;
    run_fake(&f, deliver_server, &t);
    struct msgclient_reply r;
    CHECK_EQ(msgclient_call(c, MSG_CMD_PING, NULL, 0, &r), 0);
    join_fake(&f, t);
    CHECK_EQ(r.command, MSG_FLAG_REPLY | MSG_CMD_PING);
    CHECK_EQ(s.n, 5);
    CHECK_STR(s.log, "[alice]=hi there []=anon [bo]= []= [z]=split");
    CHECK_EQ(msgclient_frames_dropped(c), 3);
    CHECK_EQ(msgclient_delivers_dropped(c), 0);
    struct msgclient_deliver d;
    CHECK_EQ(msgclient_recv_deliver(c, &d, 0), -EINVAL);
    msgclient_reply_free(&r);
    close(f.fd);
    msgclient_free(c);
}

/* Without a callback: DELIVERs and MESSAGEs queue apart, each for its own recv. */
static void *deliver_queue_server(void *arg)
{
    struct fake *f = arg;
    uint8_t buf[64];
    uint32_t cmd;
    if (read_frame(f->fd, &cmd, buf, sizeof buf) != 2 || cmd != MSG_CMD_ECHO)
        return fake_fail(f, "expected ECHO"), NULL;
    write_frame(f->fd, MSG_CMD_DELIVER, "\x03" "bobone", 7);
    write_frame(f->fd, MSG_CMD_MESSAGE, "\x01" "tM", 3);
    write_frame(f->fd, MSG_CMD_DELIVER, "\x07" "short", 6);     /* length byte past the end */
    write_frame(f->fd, MSG_FLAG_REPLY | MSG_CMD_ECHO, buf, 2);
    write_frame(f->fd, MSG_CMD_DELIVER, "\x00" "two", 4);
    return NULL;
}

TEST(delivers_queue_for_recv_deliver_apart_from_messages)
{
    struct fake f;
    struct msgclient *c = client_on_pair(&f.fd, WAIT_MS);
    pthread_t t;
    run_fake(&f, deliver_queue_server, &t);
    struct msgclient_reply r;
    CHECK_EQ(msgclient_call(c, MSG_CMD_ECHO, "ok", 2, &r), 0);
    CHECK_EQ(r.len, 2);
    msgclient_reply_free(&r);
    join_fake(&f, t);
    struct msgclient_deliver d;
    CHECK_EQ(msgclient_recv_deliver(c, &d, WAIT_MS), 0);
    CHECK_EQ(d.sender_len, 3);
    CHECK_STR((const char *)d.sender, "bob");
    CHECK_STR((const char *)d.data, "one");
    msgclient_deliver_free(&d);
    /* the second one may still be on its way: recv_deliver reads it */
    CHECK_EQ(msgclient_recv_deliver(c, &d, WAIT_MS), 0);
    CHECK_EQ(d.sender_len, 0);
    CHECK_STR((const char *)d.sender, "");
    CHECK_EQ(d.data_len, 3);
    CHECK_STR((const char *)d.data, "two");
    msgclient_deliver_free(&d);
    CHECK_EQ(msgclient_recv_deliver(c, &d, 10), -ETIMEDOUT);
    struct msgclient_message m;
    CHECK_EQ(msgclient_recv_message(c, &m, 0), 0);
    CHECK_STR((const char *)m.topic, "t");
    CHECK_STR((const char *)m.data, "M");
    msgclient_message_free(&m);
    CHECK_EQ(msgclient_frames_dropped(c), 1);
    /* the connection gone: recv_deliver says so */
    close(f.fd);
    CHECK_EQ(msgclient_recv_deliver(c, &d, WAIT_MS), -ECONNRESET);
    CHECK_EQ(msgclient_recv_deliver(c, &d, 0), -ENOTCONN);
    msgclient_free(c);
}

/* ---- error replies, GOAWAY, EOF, connection-level error, garbage, timeout ------------ */

static void *goaway_server(void *arg)
{
    struct fake *f = arg;
    uint8_t buf[64];
    uint32_t cmd;
    for (int i = 0; i < 4; i++)
        if (read_frame(f->fd, &cmd, buf, sizeof buf) < 0)
            return fake_fail(f, "expected 4 requests"), NULL;
    write_error(f->fd, MSG_FLAG_REPLY | MSG_FLAG_ERROR | 999, MSG_ERR_UNKNOWN_COMMAND, "nope");
    uint8_t ga[4 + 7];
    msg_put_u32(ga, 1500);
    memcpy(ga + 4, "restart", 7);
    write_frame(f->fd, MSG_CMD_GOAWAY, ga, sizeof ga);
    write_frame(f->fd, MSG_FLAG_REPLY | MSG_CMD_ECHO, "b", 1);
    shutdown(f->fd, SHUT_RDWR);     /* two requests left unanswered */
    return NULL;
}

TEST(error_reply_goaway_then_eof)
{
    struct fake f;
    struct msgclient *c = client_on_pair(&f.fd, WAIT_MS);
    pthread_t t;
    run_fake(&f, goaway_server, &t);
    CHECK_EQ(msgclient_send(c, 999, NULL, 0), 0);
    CHECK_EQ(msgclient_send(c, MSG_CMD_ECHO, "b", 1), 0);
    CHECK_EQ(msgclient_send(c, MSG_CMD_ECHO, "c", 1), 0);
    CHECK_EQ(msgclient_send(c, MSG_CMD_ECHO, "d", 1), 0);
    struct msgclient_reply r;
    CHECK_EQ(msgclient_recv(c, &r), MSGCLIENT_ERROR_REPLY);
    CHECK_EQ(r.command, MSG_FLAG_REPLY | MSG_FLAG_ERROR | 999);
    CHECK_EQ(r.error_code, MSG_ERR_UNKNOWN_COMMAND);
    CHECK_STR(r.error_text, "nope");
    msgclient_reply_free(&r);
    CHECK_EQ(msgclient_recv(c, &r), 0);
    CHECK_EQ(r.payload[0], 'b');
    msgclient_reply_free(&r);
    uint32_t ms = 0;
    const char *reason = NULL;
    CHECK(msgclient_going_away(c, &ms, &reason));
    CHECK_EQ(ms, 1500);
    CHECK_STR(reason, "restart");
    CHECK_EQ(msgclient_recv(c, &r), -ECONNRESET);
    CHECK_EQ(msgclient_recv(c, &r), -ECONNRESET);
    CHECK_EQ(msgclient_recv(c, &r), -ENOMSG);
    CHECK(!msgclient_connected(c));
    CHECK_EQ(msgclient_send(c, MSG_CMD_PING, NULL, 0), -ENOTCONN);  /* no reconnect option */
    join_fake(&f, t);
    close(f.fd);
    msgclient_free(c);
}

static void *conn_error_server(void *arg)
{
    struct fake *f = arg;
    uint8_t buf[64];
    uint32_t cmd;
    for (int i = 0; i < 2; i++)
        if (read_frame(f->fd, &cmd, buf, sizeof buf) < 0)
            return fake_fail(f, "expected 2 requests"), NULL;
    write_error(f->fd, MSG_CONN_ERROR, MSG_ERR_IDLE_TIMEOUT, "idle");
    shutdown(f->fd, SHUT_RDWR);
    return NULL;
}

TEST(connection_level_error_answers_the_waiting_request)
{
    struct fake f;
    struct msgclient *c = client_on_pair(&f.fd, WAIT_MS);
    pthread_t t;
    run_fake(&f, conn_error_server, &t);
    CHECK_EQ(msgclient_send(c, MSG_CMD_STATS, NULL, 0), 0);
    CHECK_EQ(msgclient_send(c, MSG_CMD_STATS, NULL, 0), 0);
    struct msgclient_reply r;
    CHECK_EQ(msgclient_recv(c, &r), MSGCLIENT_ERROR_REPLY);
    CHECK_EQ(r.command, MSG_CONN_ERROR);
    CHECK_EQ(r.error_code, MSG_ERR_IDLE_TIMEOUT);
    CHECK_STR(r.error_text, "idle");
    msgclient_reply_free(&r);
    CHECK_EQ(msgclient_recv(c, &r), -ECONNRESET);
    CHECK(strstr(msgclient_error(c), "IDLE_TIMEOUT") != NULL);
    join_fake(&f, t);
    close(f.fd);
    msgclient_free(c);
}

/* Answers a command-0 request with 0xC0000000 UNKNOWN_COMMAND (rule 4: an
 * ordinary error reply), echoes a PING, then closes without any error. */
static void *command_zero_server(void *arg)
{
    struct fake *f = arg;
    uint8_t buf[64];
    uint32_t cmd;
    if (read_frame(f->fd, &cmd, buf, sizeof buf) < 0 || cmd != 0)
        return fake_fail(f, "expected a command-0 request"), NULL;
    write_error(f->fd, MSG_CONN_ERROR, MSG_ERR_UNKNOWN_COMMAND, "unknown command");
    long n = read_frame(f->fd, &cmd, buf, sizeof buf);
    if (n < 0 || cmd != MSG_CMD_PING)
        return fake_fail(f, "expected a PING"), NULL;
    write_frame(f->fd, MSG_FLAG_REPLY | MSG_CMD_PING, buf, (size_t)n);
    shutdown(f->fd, SHUT_RDWR);
    return NULL;
}

TEST(command_zero_error_reply_is_not_a_connection_error)
{
    struct fake f;
    struct msgclient *c = client_on_pair(&f.fd, WAIT_MS);
    pthread_t t;
    run_fake(&f, command_zero_server, &t);
    struct msgclient_reply r;
    CHECK_EQ(msgclient_call(c, 0, NULL, 0, &r), MSGCLIENT_ERROR_REPLY);
    CHECK_EQ(r.command, MSG_CONN_ERROR);
    CHECK_EQ(r.error_code, MSG_ERR_UNKNOWN_COMMAND);
    msgclient_reply_free(&r);
    CHECK_EQ(msgclient_call(c, MSG_CMD_PING, "p", 1, &r), 0);
    msgclient_reply_free(&r);
    /* the close that follows is an ordinary close, not the stale error */
    struct msgclient_message m;
    CHECK_EQ(msgclient_recv_message(c, &m, WAIT_MS), -ECONNRESET);
    CHECK(strstr(msgclient_error(c), "closed the connection") != NULL);
    join_fake(&f, t);
    close(f.fd);
    msgclient_free(c);
}

static void *idle_conn_error_server(void *arg)
{
    struct fake *f = arg;
    write_error(f->fd, MSG_CONN_ERROR, MSG_ERR_IDLE_TIMEOUT, "idle");
    shutdown(f->fd, SHUT_RDWR);
    return NULL;
}

TEST(connection_level_error_ends_recv_message)
{
    struct fake f;
    struct msgclient *c = client_on_pair(&f.fd, WAIT_MS);
    pthread_t t;
    run_fake(&f, idle_conn_error_server, &t);
    struct msgclient_message m;
    CHECK_EQ(msgclient_recv_message(c, &m, WAIT_MS), -ECONNABORTED);
    CHECK(strstr(msgclient_error(c), "IDLE_TIMEOUT") != NULL);
    CHECK_EQ(msgclient_recv_message(c, &m, 10), -ENOTCONN);
    join_fake(&f, t);
    close(f.fd);
    msgclient_free(c);
}

TEST(garbage_from_the_server_is_eproto)
{
    struct fake f;
    struct msgclient *c = client_on_pair(&f.fd, WAIT_MS);
    CHECK_EQ(msgclient_send(c, MSG_CMD_PING, NULL, 0), 0);
    CHECK_EQ(msgclient_flush(c), 0);
    write_all(f.fd, "HTTP/1.1 400 Bad Request\r\n\r\n", 28);
    struct msgclient_reply r;
    CHECK_EQ(msgclient_recv(c, &r), -EPROTO);
    CHECK(strstr(msgclient_error(c), "BAD_MAGIC") != NULL);
    CHECK(!msgclient_connected(c));
    close(f.fd);
    msgclient_free(c);
}

TEST(no_reply_times_out)
{
    struct fake f;
    struct msgclient *c = client_on_pair(&f.fd, 50);
    struct msgclient_reply r;
    CHECK_EQ(msgclient_call(c, MSG_CMD_PING, NULL, 0, &r), -ETIMEDOUT);
    CHECK_EQ(msgclient_pending(c), 1);   /* still owed: a late reply is not lost */
    write_frame(f.fd, MSG_FLAG_REPLY | MSG_CMD_PING, "", 0);
    CHECK_EQ(msgclient_recv(c, &r), 0);
    CHECK_EQ(r.command, MSG_FLAG_REPLY | MSG_CMD_PING);
    close(f.fd);
    msgclient_free(c);
}

TEST(a_reply_is_not_a_request)
{
    struct fake f;
    struct msgclient *c = client_on_pair(&f.fd, 50);
    CHECK_EQ(msgclient_send(c, MSG_FLAG_REPLY | MSG_CMD_PING, NULL, 0), -EINVAL);
    CHECK_EQ(msgclient_pending(c), 0);
    close(f.fd);
    msgclient_free(c);
}

/* ---- real sockets: refused, reconnect after GOAWAY, AUTH --------------------------- */

TEST(connect_refused)
{
    int port;
    int lfd = listen_loopback(&port);
    close(lfd);                           /* nothing listens there now */
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    struct msgclient_options o;
    msgclient_options_init(&o);
    o.addr = addr;
    struct msgclient *c = msgclient_new(&o);
    CHECK_EQ(msgclient_connect(c, NULL), -ECONNREFUSED);
    CHECK(strstr(msgclient_error(c), "refused") != NULL);
    CHECK(!msgclient_connected(c));
    msgclient_free(c);
    o.addr = "no-port-here";
    c = msgclient_new(&o);
    CHECK_EQ(msgclient_connect(c, NULL), -EINVAL);
    msgclient_free(c);
    o.addr = "unix:/nonexistent/msgd.sock";
    c = msgclient_new(&o);
    CHECK_EQ(msgclient_connect(c, NULL), -ENOENT);
    msgclient_free(c);
}

static void *reconnect_server(void *arg)
{
    struct fake *f = arg;
    uint8_t buf[64];
    uint32_t cmd;
    for (int round = 0; round < 2; round++) {
        int fd = accept_wait(f->listen_fd);
        if (fd < 0)
            return fake_fail(f, "no connection"), NULL;
        long n = read_frame(fd, &cmd, buf, sizeof buf);
        if (n != 6 || cmd != MSG_CMD_AUTH || memcmp(buf, "sekret", 6) != 0) {
            close(fd);
            return fake_fail(f, "expected AUTH sekret first"), NULL;
        }
        write_frame(fd, MSG_FLAG_REPLY | MSG_CMD_AUTH, "", 0);
        n = read_frame(fd, &cmd, buf, sizeof buf);
        if (n != 1 || cmd != MSG_CMD_ECHO) {
            close(fd);
            return fake_fail(f, "expected ECHO"), NULL;
        }
        if (round == 0) {
            uint8_t ga[4] = {0, 0, 0, 0};
            write_frame(fd, MSG_CMD_GOAWAY, ga, 4);
        }
        write_frame(fd, MSG_FLAG_REPLY | MSG_CMD_ECHO, buf, 1);
        if (round == 0) {
            /* the client must not send more here: it reconnects */
            struct pollfd pfd = {fd, POLLIN, 0};
            if (poll(&pfd, 1, WAIT_MS) != 1 || read(fd, buf, 1) != 0)
                fake_fail(f, "expected the client to close after GOAWAY");
        }
        close(fd);
    }
    return NULL;
}

TEST(reconnects_with_auth_after_goaway)
{
    struct fake f;
    pthread_t t;
    char addr[32];
    struct msgclient_options o;
    run_fake_listener(&f, reconnect_server, &t, &o, addr, sizeof addr);
    o.token = "sekret";
    o.reconnect = true;
    o.backoff_initial_ms = 2;
    o.backoff_max_ms = 10;
    o.seed = 99;
    struct msgclient *c = msgclient_new(&o);
    struct msgclient_reply r;
    CHECK_EQ(msgclient_connect(c, NULL), 0);
    CHECK_EQ(msgclient_call(c, MSG_CMD_ECHO, "1", 1, &r), 0);
    CHECK_EQ(r.payload[0], '1');
    msgclient_reply_free(&r);
    CHECK(msgclient_going_away(c, NULL, NULL));
    CHECK_EQ(msgclient_reconnects(c), 0);
    CHECK_EQ(msgclient_call(c, MSG_CMD_ECHO, "2", 1, &r), 0);
    CHECK_EQ(r.payload[0], '2');
    msgclient_reply_free(&r);
    CHECK_EQ(msgclient_reconnects(c), 1);
    CHECK(!msgclient_going_away(c, NULL, NULL));
    msgclient_free(c);
    join_fake(&f, t);
    close(f.listen_fd);
}

static void *auth_fail_server(void *arg)
{
    struct fake *f = arg;
    uint8_t buf[64];
    uint32_t cmd;
    int fd = accept_wait(f->listen_fd);
    if (fd < 0)
        return fake_fail(f, "no connection"), NULL;
    if (read_frame(fd, &cmd, buf, sizeof buf) < 0 || cmd != MSG_CMD_AUTH)
        fake_fail(f, "expected AUTH");
    else
        write_error(fd, MSG_FLAG_REPLY | MSG_FLAG_ERROR | MSG_CMD_AUTH, MSG_ERR_AUTH_FAILED,
                    "wrong token");
    close_after_client(fd);
    return NULL;
}

TEST(auth_failure_is_an_error_reply)
{
    struct fake f;
    pthread_t t;
    char addr[32];
    struct msgclient_options o;
    run_fake_listener(&f, auth_fail_server, &t, &o, addr, sizeof addr);
    o.token = "bad";
    struct msgclient *c = msgclient_new(&o);
    struct msgclient_reply r;
    memset(&r, 0, sizeof r);
    CHECK_EQ(msgclient_connect(c, &r), MSGCLIENT_ERROR_REPLY);
    CHECK_EQ(r.error_code, MSG_ERR_AUTH_FAILED);
    CHECK_STR(r.error_text, "wrong token");
    CHECK(strstr(msgclient_error(c), "AUTH_FAILED") != NULL);
    CHECK_EQ(msgclient_pending(c), 0);
    msgclient_reply_free(&r);
    msgclient_free(c);
    join_fake(&f, t);
    close(f.listen_fd);
}

/* ---- HELLO against servers that answer it oddly -------------------------------- */

/* Accepts the next connection on f->listen_fd and reads its first frame,
 * which must be HELLO, into buf (NUL-terminated; cap bytes). Returns the
 * fd, or -1 with the fake failed. */
static int accept_hello(struct fake *f, char *buf, size_t cap)
{
    uint32_t cmd;
    int fd = accept_wait(f->listen_fd);
    if (fd < 0)
        return fake_fail(f, "no connection"), -1;
    long n = read_frame(fd, &cmd, (uint8_t *)buf, cap - 1);
    if (n < 0 || cmd != MSG_CMD_HELLO) {
        close(fd);
        return fake_fail(f, "expected HELLO first"), -1;
    }
    buf[n] = '\0';
    return fd;
}

static void *hello_server(void *arg)
{
    struct fake *f = arg;
    uint8_t buf[512];
    uint32_t cmd;
    for (int round = 0; round < 3; round++) {
        int fd = accept_hello(f, (char *)buf, sizeof buf);
        if (fd < 0)
            return NULL;
        long n;
        if (strncmp((char *)buf, "client=msgclient/", 17) != 0 ||
            !strstr((char *)buf, "\ncompress=zstd,deflate\n"))
            fake_fail(f, "HELLO without client= and compress=zstd,deflate");
        if (round == 0) {           /* a server older than HELLO */
            write_error(fd, MSG_FLAG_REPLY | MSG_FLAG_ERROR | MSG_CMD_HELLO,
                        MSG_ERR_UNKNOWN_COMMAND, "unknown command 6");
            n = read_frame(fd, &cmd, buf, sizeof buf);
            if (n != 300 || cmd != MSG_CMD_ECHO)
                fake_fail(f, "expected a plain 300-byte ECHO");
            else
                write_frame(fd, MSG_FLAG_REPLY | MSG_CMD_ECHO, buf, (size_t)n);
        } else if (round == 1) {    /* a codec nobody offered */
            static const char r1[] = "server=x\ncompress=lz4\n";
            write_frame(fd, MSG_FLAG_REPLY | MSG_CMD_HELLO, r1, sizeof r1 - 1);
        } else {                    /* zstd agreed, then a reply that is not zstd */
            static const char r2[] = "server=x\ncompress=zstd\ncompress_min=64\n";
            write_frame(fd, MSG_FLAG_REPLY | MSG_CMD_HELLO, r2, sizeof r2 - 1);
            n = read_frame(fd, &cmd, buf, sizeof buf);
            if (n < 0 || cmd != (MSG_CMD_ECHO | MSG_FLAG_COMPRESSED) || n >= 300)
                fake_fail(f, "expected a compressed ECHO");
            write_frame(fd, MSG_FLAG_REPLY | MSG_FLAG_COMPRESSED | MSG_CMD_ECHO, "garbage", 7);
        }
        close_after_client(fd);
    }
    return NULL;
}

TEST(hello_old_server_unoffered_codec_and_garbage)
{
    struct fake f;
    pthread_t t;
    char addr[32];
    struct msgclient_options o;
    run_fake_listener(&f, hello_server, &t, &o, addr, sizeof addr);
    o.compress = " zstd, deflate ";
    struct msgclient *c = msgclient_new(&o);
    CHECK(c != NULL);
    uint8_t text[300];
    memset(text, 'a', sizeof text);
    struct msgclient_reply r;
    memset(&r, 0, sizeof r);

    CHECK_EQ(msgclient_connect(c, NULL), 0);        /* HELLO refused: plain */
    CHECK_STR(msgclient_codec(c), "none");
    CHECK(msgclient_hello_reply(c) == NULL);
    CHECK_EQ(msgclient_call(c, MSG_CMD_ECHO, text, sizeof text, &r), 0);
    CHECK_EQ(r.len, sizeof text);
    msgclient_reply_free(&r);
    CHECK_EQ(msgclient_compressed_sent(c), 0);

    CHECK_EQ(msgclient_connect(c, NULL), -EPROTO);  /* lz4 was not offered */
    CHECK(strstr(msgclient_error(c), "lz4") != NULL);
    CHECK(!msgclient_connected(c));

    CHECK_EQ(msgclient_connect(c, NULL), 0);
    CHECK_STR(msgclient_codec(c), "zstd");
    CHECK_EQ(msgclient_call(c, MSG_CMD_ECHO, text, sizeof text, &r), -EPROTO);
    CHECK(strstr(msgclient_error(c), "does not decompress") != NULL);
    CHECK(!msgclient_connected(c));
    CHECK_EQ(msgclient_compressed_sent(c), 1);
    msgclient_free(c);
    join_fake(&f, t);
    close(f.listen_fd);
}

/* ---- the client's own heartbeat: a dead server, a quiet live one ---------------- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct msgclient *client_with_heartbeat(int *server_fd, int timeout_ms, int hb_ms,
                                               int dead_ms)
{
    struct msgclient_options o;
    msgclient_options_init(&o);
    o.timeout_ms = timeout_ms;
    o.heartbeat_ms = hb_ms;
    o.dead_after_ms = dead_ms;
    return client_on_pair_with(server_fd, &o);
}

/* Reads frames the client sent within WAIT_MS; true when one was cmd/payload. */
static bool saw_frame(int fd, uint32_t want_cmd, const char *want)
{
    uint8_t buf[64];
    uint32_t cmd;
    for (int i = 0; i < 8; i++) {
        long n = read_frame(fd, &cmd, buf, sizeof buf);
        if (n < 0)
            return false;
        if (cmd == want_cmd && (size_t)n == strlen(want) && memcmp(buf, want, (size_t)n) == 0)
            return true;
    }
    return false;
}

TEST(options_init_sets_the_heartbeat_defaults)
{
    struct msgclient_options o;
    msgclient_options_init(&o);
    CHECK_EQ(o.heartbeat_ms, MSGCLIENT_HEARTBEAT_SERVER);
    CHECK_EQ(o.dead_after_ms, 90000);
    /* no HELLO on the connection: 30 s */
    int sfd;
    struct msgclient *c = client_on_pair_with(&sfd, &o);
    CHECK_EQ(msgclient_heartbeat_ms(c), 30000);
    close(sfd);
    msgclient_free(c);
}

/* ---- the server's heartbeat from HELLO ------------------------------------------ */

/* One connection per round: HELLO answered with hb_replies[round] (NULL: an
 * error reply, as a server older than HELLO gives). In round 0 the client's
 * heartbeat PING must follow, within WAIT_MS, and is answered with a MESSAGE
 * push. */
static const char *const hb_replies[] = {
    "server=x\nheartbeat_ms=40\nidle_ms=0\n",          /* adopted: 40 ms */
    "server=x\nheartbeat_ms=600000\n",                 /* capped: dead_after / 3 */
    "server=x\nheartbeat_ms=0\n",                      /* the server's is off: 30 s */
    NULL,                                               /* no HELLO there: 30 s */
    "server=x\nheartbeat_ms=40\n",                     /* the caller's own wins */
};

static void *hb_hello_server(void *arg)
{
    struct fake *f = arg;
    uint8_t buf[512];
    uint32_t cmd;
    for (size_t round = 0; round < sizeof hb_replies / sizeof hb_replies[0]; round++) {
        int fd = accept_hello(f, (char *)buf, sizeof buf);
        if (fd < 0)
            return NULL;
        long n;
        if (strstr((char *)buf, "compress="))
            fake_fail(f, "compress \"none\" offered a codec");
        if (hb_replies[round])
            write_frame(fd, MSG_FLAG_REPLY | MSG_CMD_HELLO, hb_replies[round],
                        strlen(hb_replies[round]));
        else
            write_error(fd, MSG_FLAG_REPLY | MSG_FLAG_ERROR | MSG_CMD_HELLO,
                        MSG_ERR_UNKNOWN_COMMAND, "unknown command 6");
        if (round == 0) {
            n = read_frame(fd, &cmd, buf, sizeof buf);
            if (n != 2 || cmd != MSG_CMD_PING || memcmp(buf, "hb", 2) != 0) {
                fake_fail(f, "expected the client's heartbeat PING");
            } else {
                write_frame(fd, MSG_FLAG_REPLY | MSG_CMD_PING, buf, 2);
                static const uint8_t push[] = "\x01" "t" "beat";
                write_frame(fd, MSG_CMD_MESSAGE, push, sizeof push - 1);
            }
        }
        close_after_client(fd);
    }
    return NULL;
}

TEST(the_server_heartbeat_from_hello_is_the_default)
{
    struct fake f;
    pthread_t t;
    char addr[32];
    struct msgclient_options o;
    run_fake_listener(&f, hb_hello_server, &t, &o, addr, sizeof addr);
    o.compress = "none";            /* HELLO, offering no codec */
    o.dead_after_ms = 900;
    struct msgclient *c = msgclient_new(&o);
    CHECK(c != NULL);
    CHECK_EQ(msgclient_heartbeat_ms(c), 30000);

    /* round 0: 40 ms, and a quiet wait sends the PING well before 30 s */
    CHECK_EQ(msgclient_connect(c, NULL), 0);
    CHECK_EQ(msgclient_heartbeat_ms(c), 40);
    struct msgclient_message m;
    CHECK_EQ(msgclient_recv_message(c, &m, WAIT_MS), 0);
    CHECK_STR((const char *)m.data, "beat");
    msgclient_message_free(&m);
    CHECK(msgclient_heartbeats_sent(c) >= 1);

    CHECK_EQ(msgclient_connect(c, NULL), 0);        /* round 1: capped */
    CHECK_EQ(msgclient_heartbeat_ms(c), 300);
    CHECK_EQ(msgclient_connect(c, NULL), 0);        /* round 2: the server's is off */
    CHECK_EQ(msgclient_heartbeat_ms(c), 30000);
    CHECK_EQ(msgclient_connect(c, NULL), 0);        /* round 3: HELLO refused */
    CHECK_EQ(msgclient_heartbeat_ms(c), 30000);
    CHECK(msgclient_hello_reply(c) == NULL);
    msgclient_free(c);

    o.heartbeat_ms = 70;                            /* round 4: set by the caller */
    c = msgclient_new(&o);
    CHECK_EQ(msgclient_connect(c, NULL), 0);
    CHECK(msgclient_hello_reply(c) != NULL);
    CHECK_EQ(msgclient_heartbeat_ms(c), 70);
    msgclient_free(c);
    join_fake(&f, t);
    close(f.listen_fd);
}

TEST(a_dead_server_fails_a_call_without_a_timeout)
{
    int sfd;
    /* no reply timeout at all: only the heartbeat can end the wait */
    struct msgclient *c = client_with_heartbeat(&sfd, -1, 40, 300);
    struct msgclient_reply r;
    memset(&r, 0, sizeof r);
    int64_t t0 = mono_ms();
    CHECK_EQ(msgclient_call(c, MSG_CMD_ECHO, "x", 1, &r), -ETIMEDOUT);
    int64_t took = mono_ms() - t0;
    CHECK(took >= 250);
    CHECK(took < 300 + 2000);
    CHECK(!msgclient_connected(c));
    CHECK(strstr(msgclient_error(c), "sent nothing") != NULL);
    CHECK_EQ(msgclient_dead_declared(c), 1);
    CHECK_EQ(msgclient_heartbeats_sent(c), 1);
    CHECK_EQ(msgclient_pending(c), 0);          /* the request failed once, not twice */
    CHECK_EQ(msgclient_recv(c, &r), -ENOMSG);
    CHECK_EQ(msgclient_conn_bytes_in(c), 0);
    /* the server saw the ECHO, then the heartbeat PING */
    CHECK(saw_frame(sfd, MSG_CMD_ECHO, "x"));
    CHECK(saw_frame(sfd, MSG_CMD_PING, "hb"));
    close(sfd);
    msgclient_free(c);
}

TEST(a_dead_server_ends_a_subscriber_waiting_for_ever)
{
    int sfd;
    struct msgclient *c = client_with_heartbeat(&sfd, 5000, 30, 200);
    struct msgclient_message m;
    int64_t t0 = mono_ms();
    CHECK_EQ(msgclient_recv_message(c, &m, -1), -ETIMEDOUT);
    CHECK(mono_ms() - t0 < 200 + 2000);
    CHECK(!msgclient_connected(c));
    CHECK_EQ(msgclient_recv_message(c, &m, -1), -ENOTCONN);
    close(sfd);
    msgclient_free(c);
}

/* Sends the three ECHO replies only after the heartbeat PING that follows
 * them arrived, then answers every heartbeat PING until the client leaves
 * (f->why counts them as "answered N"). */
static void *quiet_server(void *arg)
{
    struct fake *f = arg;
    uint8_t buf[64];
    uint32_t cmd;
    char echoes[3];
    for (int i = 0; i < 3; i++) {
        long n = read_frame(f->fd, &cmd, buf, sizeof buf);
        if (n != 1 || cmd != MSG_CMD_ECHO)
            return fake_fail(f, "expected three ECHOs"), NULL;
        echoes[i] = (char)buf[0];
    }
    long n = read_frame(f->fd, &cmd, buf, sizeof buf);
    if (n != 2 || cmd != MSG_CMD_PING || memcmp(buf, "hb", 2) != 0)
        return fake_fail(f, "expected the heartbeat PING after the ECHOs"), NULL;
    for (int i = 0; i < 3; i++)
        write_frame(f->fd, MSG_FLAG_REPLY | MSG_CMD_ECHO, &echoes[i], 1);
    write_frame(f->fd, MSG_FLAG_REPLY | MSG_CMD_PING, "hb", 2);
    /* then quiet: every heartbeat PING answered, nothing else */
    for (;;) {
        n = read_frame(f->fd, &cmd, buf, sizeof buf);
        if (n == -EIO)
            return NULL;                        /* the client closed */
        if (n != 2 || cmd != MSG_CMD_PING)
            return fake_fail(f, "expected another heartbeat PING"), NULL;
        write_frame(f->fd, MSG_FLAG_REPLY | MSG_CMD_PING, buf, (size_t)n);
    }
}

TEST(heartbeat_replies_are_swallowed_and_keep_a_quiet_server_alive)
{
    struct fake f;
    struct msgclient *c = client_with_heartbeat(&f.fd, WAIT_MS, 40, 400);
    pthread_t t;
    run_fake(&f, quiet_server, &t);
    CHECK_EQ(msgclient_send(c, MSG_CMD_ECHO, "a", 1), 0);
    CHECK_EQ(msgclient_send(c, MSG_CMD_ECHO, "b", 1), 0);
    CHECK_EQ(msgclient_send(c, MSG_CMD_ECHO, "c", 1), 0);
    for (int i = 0; i < 3; i++) {
        struct msgclient_reply r;
        CHECK_EQ(msgclient_recv(c, &r), 0);
        CHECK_EQ(r.command, MSG_FLAG_REPLY | MSG_CMD_ECHO);
        CHECK_EQ(r.len, 1);
        CHECK_EQ(r.payload[0], "abc"[i]);
        msgclient_reply_free(&r);
    }
    /* waiting for pushes three times dead_after: heartbeats go out, each is
     * answered, and the connection lives on */
    struct msgclient_message m;
    int64_t t0 = mono_ms();
    while (mono_ms() - t0 < 3 * 400)
        CHECK_EQ(msgclient_recv_message(c, &m, 50), -ETIMEDOUT);
    CHECK(msgclient_connected(c));
    CHECK(msgclient_heartbeats_sent(c) >= 5);
    CHECK_EQ(msgclient_dead_declared(c), 0);
    CHECK_EQ(msgclient_pending(c), 0);
    CHECK_EQ(msgclient_frames_dropped(c), 0);
    msgclient_free(c);                          /* the fake sees EOF and ends */
    join_fake(&f, t);
    close(f.fd);
}

TEST(heartbeat_off_waits_for_the_caller_timeout_only)
{
    int sfd;
    struct msgclient *c = client_with_heartbeat(&sfd, 300, 0, 0);
    struct msgclient_reply r;
    CHECK_EQ(msgclient_call(c, MSG_CMD_PING, NULL, 0, &r), -ETIMEDOUT);
    CHECK(msgclient_connected(c));               /* a caller's timeout keeps it */
    CHECK_EQ(msgclient_heartbeats_sent(c), 0);
    close(sfd);
    msgclient_free(c);
}

/* A listener that accepts and never answers: connect succeeds, AUTH fails
 * by the heartbeat's dead_after; a reconnect attempt that meets it again
 * fails the same way, and the attempts run out. */
TEST(reconnect_to_a_server_that_accepts_and_never_answers_gives_up)
{
    int port;
    int lfd = listen_loopback(&port);
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    struct msgclient_options o;
    msgclient_options_init(&o);
    o.addr = addr;
    o.token = "tok";
    o.timeout_ms = -1;
    o.heartbeat_ms = 30;
    o.dead_after_ms = 150;
    o.reconnect = true;
    o.reconnect_attempts = 3;
    o.backoff_initial_ms = 5;
    o.backoff_max_ms = 10;
    struct msgclient *c = msgclient_new(&o);
    int64_t t0 = mono_ms();
    CHECK_EQ(msgclient_reconnect(c, NULL), -ETIMEDOUT);
    CHECK(mono_ms() - t0 < 3 * 150 + 3000);
    CHECK(!msgclient_connected(c));
    CHECK_EQ(msgclient_dead_declared(c), 3);
    CHECK(strstr(msgclient_error(c), "AUTH") != NULL);
    CHECK_EQ(msgclient_pending(c), 0);
    msgclient_free(c);
    close(lfd);          /* the three connections wait in its backlog */
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
