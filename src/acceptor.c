/* acceptor: listeners, the accept4 loop, max_connections, and the round-robin
 * hand-off to reactors. Main thread only. */
#include "acceptor.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto_admin.h"
#include "proto_echo.h"
#include "proto_msg.h"

#define ACCEPT_PER_CB 64          /* accepts per callback, so the loop stays fair */
#define ACCEPT_RETRY_S 0.1        /* pause after EMFILE/ENFILE */

/* The protocol table: a config section's listeners speak that protocol. */
static const struct {
    const char *section;
    const struct proto *proto;
    size_t offset;
} listen_table[] = {
    {"msg", &proto_msg, offsetof(struct config, msg_listen)},
    {"echo", &proto_echo, offsetof(struct config, echo_listen)},
    {"admin", &proto_admin, offsetof(struct config, admin_listen)},
};
#define NPROTO (sizeof listen_table / sizeof listen_table[0])

int acceptor_open(struct acceptor *a, const struct config *cfg, char *err, size_t errlen)
{
    memset(a, 0, sizeof *a);
    int total = 0;
    for (size_t p = 0; p < NPROTO; p++)
        total += ((const struct config_listen *)((const char *)cfg + listen_table[p].offset))->n;
    a->ls = calloc(total ? (size_t)total : 1, sizeof *a->ls);
    if (!a->ls) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    for (size_t p = 0; p < NPROTO; p++) {
        const struct config_listen *cl =
            (const struct config_listen *)((const char *)cfg + listen_table[p].offset);
        for (int i = 0; i < cl->n; i++) {
            int fd = net_listen(cl->addr[i], cfg->backlog, err, errlen);
            if (fd < 0) {
                acceptor_close(a);
                return fd;
            }
            struct listener *l = &a->ls[a->nls++];
            l->fd = fd;
            l->proto = listen_table[p].proto;
            l->owner = a;
            net_local_name(fd, l->name, sizeof l->name);
        }
    }
    return 0;
}

static void listeners_set(struct acceptor *a, int on)
{
    for (int i = 0; i < a->nls; i++) {
        if (on)
            ev_io_start(a->loop, &a->ls[i].watcher);
        else
            ev_io_stop(a->loop, &a->ls[i].watcher);
    }
}

static void resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct acceptor *a = w->data;
    a->paused = 0;
    listeners_set(a, 1);
}

/* Out of descriptors: stop watching the listeners for a moment rather than
 * spin on a ready socket we cannot accept. Waiting clients stay queued. */
static void pause_for_fds(struct acceptor *a, int err)
{
    atomic_fetch_add_explicit(&a->reg->accept_errors, 1, memory_order_relaxed);
    log_limited(&a->rl_fd, LOG_WARN, "accept: %s; pausing accepts for %.0f ms", strerror(err),
                ACCEPT_RETRY_S * 1000);
    if (a->paused)
        return;
    a->paused = 1;
    listeners_set(a, 0);
    ev_timer_set(&a->resume_timer, ACCEPT_RETRY_S, 0.);
    ev_timer_start(a->loop, &a->resume_timer);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct listener *l = w->data;
    struct acceptor *a = l->owner;
    for (int i = 0; i < ACCEPT_PER_CB && !a->paused; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (e == EAGAIN || e == EWOULDBLOCK)
                return;
            if (e == EINTR || e == ECONNABORTED || e == EPROTO)
                continue;
            if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
                pause_for_fds(a, e);
                return;
            }
            atomic_fetch_add_explicit(&a->reg->accept_errors, 1, memory_order_relaxed);
            log_limited(&a->rl_fd, LOG_ERROR, "accept on %s: %s", l->name, strerror(e));
            return;
        }
        if (l->proto->counted) {
            uint64_t live = atomic_fetch_add_explicit(&a->reg->live, 1, memory_order_relaxed);
            if (live >= a->max_connections) {
                atomic_fetch_sub_explicit(&a->reg->live, 1, memory_order_relaxed);
                atomic_fetch_add_explicit(&a->reg->closed_max_connections, 1, memory_order_relaxed);
                log_limited(&a->rl_max, LOG_WARN, "max_connections (%llu) reached: closing a new connection on %s",
                            (unsigned long long)a->max_connections, l->name);
                close(fd);
                continue;
            }
        }
        atomic_fetch_add_explicit(&a->reg->accepted, 1, memory_order_relaxed);
        struct reactor *r = &a->reactors[a->next++ % (unsigned)a->nreactors];
        if (reactor_post_conn(r, fd, l->proto) < 0 && l->proto->counted)
            atomic_fetch_sub_explicit(&a->reg->live, 1, memory_order_relaxed);
    }
}

void acceptor_start(struct acceptor *a, struct ev_loop *loop, struct reactor *reactors,
                    int nreactors, struct stats_registry *reg, uint64_t max_connections)
{
    a->loop = loop;
    a->reactors = reactors;
    a->nreactors = nreactors;
    a->reg = reg;
    a->max_connections = max_connections;
    ev_init(&a->resume_timer, resume_cb);
    a->resume_timer.data = a;
    for (int i = 0; i < a->nls; i++) {
        ev_io_init(&a->ls[i].watcher, accept_cb, a->ls[i].fd, EV_READ);
        a->ls[i].watcher.data = &a->ls[i];
    }
    listeners_set(a, 1);
}

void acceptor_stop(struct acceptor *a)
{
    if (!a->loop)
        return;
    listeners_set(a, 0);
    ev_timer_stop(a->loop, &a->resume_timer);
    a->paused = 1;
}

void acceptor_close(struct acceptor *a)
{
    for (int i = 0; i < a->nls; i++) {
        if (strncmp(a->ls[i].name, "unix:", 5) == 0)
            unlink(a->ls[i].name + 5);
        close(a->ls[i].fd);
    }
    free(a->ls);
    a->ls = NULL;
    a->nls = 0;
}

void acceptor_describe(const struct acceptor *a, char *out, size_t outlen)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t p = 0; p < NPROTO; p++) {
        int first = 1;
        for (int i = 0; i < a->nls; i++) {
            if (a->ls[i].proto != listen_table[p].proto)
                continue;
            int n = first ? snprintf(out + len, outlen - len, "%s%s=%s", len ? " " : "",
                                     listen_table[p].section, a->ls[i].name)
                          : snprintf(out + len, outlen - len, ",%s", a->ls[i].name);
            if (n < 0 || (size_t)n >= outlen - len)
                return;
            len += (size_t)n;
            first = 0;
        }
    }
}
