/* tls_bench: the TLS rows of `make bench` (scripts/bench/tls.sh), one client
 * for msgd's own TLS and for HAProxy terminating TLS in front of plain msgd.
 *
 *   tls_bench pingpong PORT CAFILE SECONDS CONNS SIZE   -> "requests/s"
 *       CONNS threads, one connection each, one ECHO of SIZE bytes in flight
 *   tls_bench connect PORT CAFILE SECONDS full|resumed  -> "connections/s"
 *       connect, handshake (resuming the first session when asked), one
 *       PING round trip, close; one thread
 *   tls_bench idle PORT CAFILE SECONDS COUNT PID        -> "bytes per connection"
 *       msgd's RSS (/proc/PID/status) before, then COUNT connections, each
 *       with a handshake and one 64-byte ECHO, held idle; after SECONDS the
 *       RSS again: (after - before) / COUNT. PID must be a fresh msgd.
 *
 * Loopback only (127.0.0.1); every loop ends at SECONDS. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "client/msgclient_tls.h"

static int port;
static const char *cafile;
static double seconds;
static size_t size;
static struct ssl_ctx_st *ctx;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t now_ms(void) { return (int64_t)(now_s() * 1000); }

static int dial(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        perror("tls_bench: connect");
        exit(1);
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); /* for the handshake's poll */
    return fd;
}

static struct ssl_st *secure(int fd, void *session)
{
    char err[256];
    struct ssl_st *ssl = msgclient_tls_handshake(ctx, fd, "127.0.0.1", now_ms() + 5000, session,
                                                 err, sizeof err);
    if (!ssl) {
        fprintf(stderr, "tls_bench: %s\n", err);
        exit(1);
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK); /* blocking from here on */
    return ssl;
}

static void header(uint8_t *h, uint32_t cmd, uint32_t len)
{
    const uint32_t w[4] = {htonl(0x4D534750), htonl(1), htonl(cmd), htonl(len)};
    memcpy(h, w, sizeof w);
}

static void put_all(struct ssl_st *ssl, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = msgclient_tls_send(ssl, p, n);
        if (w <= 0) {
            fprintf(stderr, "tls_bench: write failed\n");
            exit(1);
        }
        p += w;
        n -= (size_t)w;
    }
}

static void get_all(struct ssl_st *ssl, uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t r = msgclient_tls_recv(ssl, p, n);
        if (r <= 0) {
            fprintf(stderr, "tls_bench: read failed (%s)\n", r == 0 ? "closed" : strerror(errno));
            exit(1);
        }
        p += r;
        n -= (size_t)r;
    }
}

/* One round trip of cmd with len payload bytes; the reply is as long. */
static void round_trip(struct ssl_st *ssl, uint8_t *buf, uint32_t cmd, size_t len)
{
    header(buf, cmd, (uint32_t)len);
    put_all(ssl, buf, 16 + len);
    get_all(ssl, buf, 16 + len);
    uint32_t got;
    memcpy(&got, buf + 8, 4);
    if (ntohl(got) != (0x80000000u | cmd)) {
        fprintf(stderr, "tls_bench: unexpected reply 0x%08x\n", ntohl(got));
        exit(1);
    }
}

static void *pingpong(void *arg)
{
    uint64_t *count = arg;
    uint8_t *buf = calloc(1, 16 + size);
    int fd = dial();
    struct ssl_st *ssl = secure(fd, NULL);
    double end = now_s() + seconds;
    while (now_s() < end) {
        for (int i = 0; i < 64; i++)
            round_trip(ssl, buf, 2 /* ECHO */, size);
        *count += 64;
    }
    msgclient_tls_free(ssl);
    close(fd);
    free(buf);
    return NULL;
}

static long rss_kib(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "re");
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kib = atol(line + 6);
    if (f)
        fclose(f);
    if (kib < 0) {
        fprintf(stderr, "tls_bench: no VmRSS for pid %d\n", pid);
        exit(1);
    }
    return kib;
}

/* RSS once it stops moving (at most 2 s more). */
static long settled_rss(int pid)
{
    long last = rss_kib(pid);
    for (int i = 0; i < 10; i++) {
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
        long now = rss_kib(pid);
        if (now == last)
            break;
        last = now;
    }
    return last;
}

static int idle(int count, int pid)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)count + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    struct ssl_st **ssl = calloc((size_t)count, sizeof *ssl);
    int *fds = calloc((size_t)count, sizeof *fds);
    uint8_t buf[16 + 64];
    long before = settled_rss(pid);
    for (int i = 0; i < count; i++) {
        fds[i] = dial();
        ssl[i] = secure(fds[i], NULL);
        round_trip(ssl[i], buf, 2 /* ECHO */, 64);
    }
    long busy = rss_kib(pid);
    struct timespec ts = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
    nanosleep(&ts, NULL);
    long after = settled_rss(pid);
    for (int i = 0; i < count; i++) {
        msgclient_tls_free(ssl[i]);
        close(fds[i]);
    }
    fprintf(stderr, "tls_bench idle: rss %ld KiB before, %ld KiB right after %d connections, "
                    "%ld KiB %.1f s later\n", before, busy, count, after, seconds);
    printf("%.0f\n", (double)(after - before) * 1024.0 / count);
    free(ssl);
    free(fds);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: tls_bench pingpong PORT CAFILE SECONDS CONNS SIZE\n"
                        "       tls_bench connect PORT CAFILE SECONDS full|resumed\n"
                        "       tls_bench idle PORT CAFILE SECONDS COUNT PID\n");
        return 2;
    }
    port = atoi(argv[2]);
    cafile = argv[3];
    seconds = atof(argv[4]);
    char err[256];
    ctx = msgclient_tls_ctx_new(cafile, NULL, NULL, err, sizeof err);
    if (!ctx) {
        fprintf(stderr, "tls_bench: %s\n", err);
        return 1;
    }
    if (strcmp(argv[1], "pingpong") == 0 && argc == 7) {
        int conns = atoi(argv[5]);
        size = (size_t)atol(argv[6]);
        if (conns < 1 || conns > 64 || size < 1 || size > (1u << 20))
            return 2;
        pthread_t th[64];
        uint64_t counts[64] = {0};
        double t0 = now_s();
        for (int i = 0; i < conns; i++)
            pthread_create(&th[i], NULL, pingpong, &counts[i]);
        uint64_t total = 0;
        for (int i = 0; i < conns; i++) {
            pthread_join(th[i], NULL);
            total += counts[i];
        }
        printf("%.0f\n", (double)total / (now_s() - t0));
        return 0;
    }
    if (strcmp(argv[1], "idle") == 0 && argc == 7) {
        int count = atoi(argv[5]), pid = atoi(argv[6]);
        if (count < 1 || count > 100000 || pid < 1)
            return 2;
        return idle(count, pid);
    }
    if (strcmp(argv[1], "connect") == 0) {
        int resume = strcmp(argv[5], "resumed") == 0;
        uint8_t buf[64];
        void *session = NULL;
        uint64_t n = 0, reused = 0;
        double t0 = now_s(), end = t0 + seconds;
        while (now_s() < end) {
            int fd = dial();
            struct ssl_st *ssl = secure(fd, session);
            round_trip(ssl, buf, 1 /* PING */, 8);
            reused += msgclient_tls_resumed(ssl);
            if (resume) { /* the newest ticket (TLS 1.3: it came with the reply) */
                msgclient_tls_session_free(session);
                session = msgclient_tls_session(ssl);
            }
            msgclient_tls_free(ssl);
            close(fd);
            n++;
        }
        if (resume && reused + 1 < n) {
            fprintf(stderr, "tls_bench: only %llu of %llu handshakes resumed\n",
                    (unsigned long long)reused, (unsigned long long)n);
            return 1;
        }
        msgclient_tls_session_free(session);
        printf("%.0f\n", (double)n / (now_s() - t0));
        return 0;
    }
    return 2;
}
