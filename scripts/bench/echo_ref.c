/* echo_ref: the smallest echo server we know how to write, as a benchmark
 * reference for `make bench` (scripts/bench.sh), not part of msgd.
 *
 *   echo_ref PORT [THREADS]
 *
 * Listens on 127.0.0.1:PORT. Each of THREADS threads (default 1) has its own
 * SO_REUSEPORT listening socket and its own level-triggered epoll loop; a
 * connection's bytes are read into a 64 KiB stack buffer and written straight
 * back (what the socket refuses waits in a per-connection heap buffer, and
 * reading stops until it is gone). No framing, no timers, no accounting: the
 * cost of one read and one write per request, which is what any echo server
 * built on readiness notification pays. Runs until killed. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHUNK 65536

struct conn {
    int fd;
    char *pending; /* unsent bytes, NULL when none */
    size_t off, len;
};

static int port;

static int listener(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 4096) < 0) {
        perror("echo_ref: listen");
        exit(1);
    }
    return fd;
}

static void drop(int ep, struct conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->pending);
    free(c);
}

/* Writes c's pending bytes; returns -1 on a broken connection. */
static int flush_pending(int ep, struct conn *c)
{
    while (c->off < c->len) {
        ssize_t w = send(c->fd, c->pending + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (w < 0)
            return errno == EAGAIN ? 0 : -1;
        c->off += (size_t)w;
    }
    free(c->pending);
    c->pending = NULL;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static int echo(int ep, struct conn *c)
{
    char buf[CHUNK];
    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
    if (n <= 0)
        return n < 0 && errno == EAGAIN ? 0 : -1;
    ssize_t w = send(c->fd, buf, (size_t)n, MSG_NOSIGNAL);
    if (w < 0 && errno != EAGAIN)
        return -1;
    if (w < 0)
        w = 0;
    if (w < n) { /* keep the rest, stop reading until it is sent */
        c->len = (size_t)(n - w);
        c->off = 0;
        if ((c->pending = malloc(c->len)) == NULL)
            return -1;
        memcpy(c->pending, buf + w, c->len);
        struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
        return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
    return 0;
}

static void *loop(void *arg)
{
    int lfd = (int)(intptr_t)arg, ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL}, evs[256];
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0) {
        perror("echo_ref: epoll");
        exit(1);
    }
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c == NULL) { /* the listener */
                int fd, one = 1;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *nc = calloc(1, sizeof *nc);
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = nc};
                    if (nc == NULL || (nc->fd = fd, epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev) < 0)) {
                        close(fd);
                        free(nc);
                    }
                }
                continue;
            }
            int rc = c->pending ? flush_pending(ep, c) : echo(ep, c);
            if (rc < 0)
                drop(ep, c);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2 || (port = atoi(argv[1])) <= 0 || port > 65535) {
        fprintf(stderr, "usage: echo_ref PORT [THREADS]\n");
        return 2;
    }
    int threads = argc > 2 ? atoi(argv[2]) : 1;
    if (threads < 1 || threads > 64) {
        fprintf(stderr, "echo_ref: THREADS must be 1..64\n");
        return 2;
    }
    int lfds[64];
    for (int i = 0; i < threads; i++) /* all bound before any accepts */
        lfds[i] = listener();
    for (int i = 1; i < threads; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, loop, (void *)(intptr_t)lfds[i]) != 0) {
            perror("echo_ref: pthread_create");
            return 1;
        }
    }
    loop((void *)(intptr_t)lfds[0]);
    return 0;
}
