/* pingpong_min: the cheapest ping-pong client we know how to write, for
 * judging how much of a ping-pong figure the client costs (docs/BENCHMARKS.md,
 * "16 KiB ping-pong"). Not a benchmark tool: it checks nothing.
 *
 *   pingpong_min PORT CONNS SIZE SECONDS
 *
 * Opens CONNS connections to 127.0.0.1:PORT (a raw echo server) and keeps one
 * SIZE-byte request in flight on each: when SIZE bytes have come back, the
 * next SIZE bytes go out. One epoll loop, one recv per readiness event, the
 * same constant buffer sent every time, no pattern, no check, no latency
 * record. Prints requests/s and MiB/s one way after SECONDS (bounded: at most
 * 600). Exit 1 when a connection fails. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Sends all n bytes of p on a blocking socket. */
static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: pingpong_min PORT CONNS SIZE SECONDS\n");
        return 2;
    }
    int port = atoi(argv[1]), conns = atoi(argv[2]);
    long size = atol(argv[3]);
    double secs = atof(argv[4]);
    if (port <= 0 || port > 65535 || conns < 1 || conns > 10000 || size < 1 ||
        size > (1 << 20) || secs <= 0 || secs > 600) {
        fprintf(stderr, "pingpong_min: bad argument\n");
        return 2;
    }
    static char in[1 << 20], out[1 << 20];
    memset(out, 'x', (size_t)size);
    int ep = epoll_create1(0);
    int *fds = calloc((size_t)conns, sizeof *fds);
    long *got = calloc((size_t)conns, sizeof *got);
    if (ep < 0 || !fds || !got)
        return 1;
    for (int i = 0; i < conns; i++) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0 ||
            epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0 || send_all(fd, out, (size_t)size) < 0) {
            perror("pingpong_min: connect");
            return 1;
        }
        fds[i] = fd;
    }
    double t0 = now_s(), elapsed = 0;
    long reqs = 0;
    struct epoll_event evs[256];
    while ((elapsed = now_s() - t0) < secs) {
        int k = epoll_wait(ep, evs, 256, 1000);
        for (int j = 0; j < k; j++) {
            int i = (int)evs[j].data.u32;
            ssize_t r = recv(fds[i], in, sizeof in, MSG_DONTWAIT);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (r <= 0) {
                fprintf(stderr, "pingpong_min: connection %d lost\n", i);
                return 1;
            }
            got[i] += r;
            if (got[i] >= size) { /* the whole reply: the next request */
                got[i] -= size;
                reqs++;
                if (send_all(fds[i], out, (size_t)size) < 0) {
                    fprintf(stderr, "pingpong_min: connection %d lost\n", i);
                    return 1;
                }
            }
        }
    }
    printf("%.0f req/s, %.1f MiB/s one way\n", (double)reqs / elapsed,
           (double)reqs * (double)size / elapsed / 1048576.0);
    return 0;
}
