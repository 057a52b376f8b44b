/* notify: the sd_notify protocol (datagrams of KEY=VALUE lines to the unix
 * socket in $NOTIFY_SOCKET), sent without ever blocking the main loop.
 * libsystemd's sd_notify() blocks when the manager's queue is full; here the
 * socket is non-blocking: a STATUS= or WATCHDOG=1 that does not fit is
 * dropped (the next one says the same), and a state change (READY,
 * RELOADING, STOPPING, ERRNO) waits at most NOTIFY_WAIT_MS for room. */
#include "notify.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define NOTIFY_WAIT_MS 100
#define NOTIFY_MSG_MAX 2048

static int notify_fd = -1;             /* main thread only */
static struct sockaddr_un notify_addr;
static socklen_t notify_len;
static int notify_tried;

/* Opens the socket once; returns 0, or -1 when there is no manager. */
static int notify_open(void)
{
    if (notify_tried)
        return notify_fd >= 0 ? 0 : -1;
    notify_tried = 1;
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || (path[0] != '/' && path[0] != '@') || strlen(path) >= sizeof notify_addr.sun_path)
        return -1;
    memset(&notify_addr, 0, sizeof notify_addr);
    notify_addr.sun_family = AF_UNIX;
    size_t n = strlen(path);
    memcpy(notify_addr.sun_path, path, n);
    if (path[0] == '@')
        notify_addr.sun_path[0] = '\0'; /* the abstract namespace */
    notify_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (path[0] == '/'));
    notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    return notify_fd >= 0 ? 0 : -1;
}

/* Sends one datagram. must_arrive: wait (briefly) for room instead of dropping. */
static void notify_send(int must_arrive, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void notify_send(int must_arrive, const char *fmt, ...)
{
    if (notify_open() < 0)
        return;
    char msg[NOTIFY_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1;
    for (int waited = 0;;) {
        ssize_t w = sendto(notify_fd, msg, len, MSG_NOSIGNAL, (struct sockaddr *)&notify_addr,
                           notify_len);
        if (w >= 0 || errno != EAGAIN || !must_arrive || waited)
            return; /* sent, or dropped: nothing here is worth blocking for */
        struct pollfd p = {notify_fd, POLLOUT, 0};
        poll(&p, 1, NOTIFY_WAIT_MS);
        waited = 1;
    }
}

void notify_ready(const char *status) { notify_send(1, "READY=1\nSTATUS=%s", status); }

void notify_status(const char *status) { notify_send(0, "STATUS=%s", status); }

void notify_reloading(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    notify_send(1, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading",
                (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
}

void notify_reloaded(const char *status) { notify_ready(status); }

void notify_watchdog(void) { notify_send(0, "WATCHDOG=1"); }

void notify_stopping(void) { notify_send(1, "STOPPING=1\nSTATUS=stopping"); }

void notify_failed(int errnum, const char *status)
{
    notify_send(1, "ERRNO=%d\nSTATUS=%s", errnum, status);
}
