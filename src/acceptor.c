/* acceptor: listeners, the accept4 loop, max_connections, and the round-robin
 * hand-off to reactors. Main thread only. */
#include "acceptor.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <systemd/sd-daemon.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto_admin.h"
#include "proto_echo.h"
#include "proto_http.h"
#include "proto_msg.h"
#include "tls.h"

#define ACCEPT_PER_CB 64          /* accepts per callback, so the loop stays fair */
#define ACCEPT_RETRY_S 0.1        /* pause after EMFILE/ENFILE */

/* The protocol table: a config section's listeners speak that protocol. */
static const struct {
    const char *section;               /* the section, or the STATUS name */
    const struct proto *proto;
    size_t offset;
    int tls;                           /* inside TLS */
    size_t proxy;                      /* its struct config_proxy, or 0 (admin: none) */
} listen_table[] = {
    {"msg", &proto_msg, offsetof(struct config, msg_listen), 0, offsetof(struct config, msg_proxy)},
    {"echo", &proto_echo, offsetof(struct config, echo_listen), 0,
     offsetof(struct config, echo_proxy)},
    {"admin", &proto_admin, offsetof(struct config, admin_listen), 0, 0},
    {"http", &proto_http, offsetof(struct config, http_listen), 0,
     offsetof(struct config, http_proxy)},
    {"tls", &proto_msg, offsetof(struct config, tls_listen), 1, offsetof(struct config, msg_proxy)},
};
#define NPROTO (sizeof listen_table / sizeof listen_table[0])

/* The configured addresses of listen_table row p. */
static const struct config_listen *listen_of(const struct config *cfg, size_t p)
{
    return (const struct config_listen *)((const char *)cfg + listen_table[p].offset);
}

static struct listener *listener_add(struct acceptor *a, int fd, size_t p, int adopted)
{
    struct listener *l = &a->ls[a->nls++];
    l->fd = fd;
    l->proto = listen_table[p].proto;
    l->tls = listen_table[p].tls;
    l->proxy_off = listen_table[p].proxy;
    l->owner = a;
    l->adopted = adopted;
    net_local_name(fd, l->name, sizeof l->name);
    return l;
}

/* Which listen_table row a passed socket serves: by its FileDescriptorName,
 * else by the configured address it matches. Returns the row or -1. */
static int match_passed(const struct config *cfg, int fd, const char *name)
{
    for (size_t p = 0; p < NPROTO; p++)
        if (name && strcmp(name, listen_table[p].section) == 0)
            return (int)p;
    struct sockaddr_storage have;
    socklen_t hlen = sizeof have;
    if (getsockname(fd, (struct sockaddr *)&have, &hlen) < 0)
        return -1;
    for (size_t p = 0; p < NPROTO; p++) {
        const struct config_listen *cl = listen_of(cfg, p);
        for (int i = 0; i < cl->n; i++) {
            struct sockaddr_storage want;
            socklen_t wlen;
            if (net_parse_addr(cl->addr[i], &want, &wlen) == 0 && wlen == hlen &&
                memcmp(&want, &have, wlen) == 0)
                return (int)p;
        }
    }
    return -1;
}

/* Whether the bound address have is one of cl's addresses; a configured
 * port 0 (the kernel's choice) matches any port on that host. */
static int passed_is_configured(const struct config_listen *cl,
                                const struct sockaddr_storage *have, socklen_t hlen)
{
    for (int i = 0; i < cl->n; i++) {
        struct sockaddr_storage want;
        socklen_t wlen;
        if (net_parse_addr(cl->addr[i], &want, &wlen) < 0 || want.ss_family != have->ss_family)
            continue;
        if (want.ss_family == AF_INET) {
            const struct sockaddr_in *w = (const void *)&want, *h = (const void *)have;
            if (w->sin_addr.s_addr == h->sin_addr.s_addr &&
                (w->sin_port == 0 || w->sin_port == h->sin_port))
                return 1;
        } else if (want.ss_family == AF_INET6) {
            const struct sockaddr_in6 *w = (const void *)&want, *h = (const void *)have;
            if (memcmp(&w->sin6_addr, &h->sin6_addr, sizeof w->sin6_addr) == 0 &&
                (w->sin6_port == 0 || w->sin6_port == h->sin6_port))
                return 1;
        } else if (wlen == hlen && memcmp(&want, have, wlen) == 0) {
            return 1;
        }
    }
    return 0;
}

int acceptor_passed_warnings(const struct config *cfg, const char *path, char *out, size_t outlen)
{
    if (out && outlen)
        out[0] = '\0';
    char **names = NULL;
    int n = sd_listen_fds_with_names(0, &names);
    int nwarn = 0;
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        int fd = SD_LISTEN_FDS_START + i;
        const char *name = names && names[i] && strcmp(names[i], "unknown") != 0 ? names[i] : NULL;
        struct sockaddr_storage have;
        socklen_t hlen = sizeof have;
        int p;
        /* Sockets that are not listening streams, or match nothing, fail the
         * start with their own error. */
        if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0 ||
            (p = match_passed(cfg, fd, name)) < 0 ||
            getsockname(fd, (struct sockaddr *)&have, &hlen) < 0 ||
            passed_is_configured(listen_of(cfg, (size_t)p), &have, hlen))
            continue;
        const struct config_listen *cl = listen_of(cfg, (size_t)p);
        char addr[NET_NAME_LEN], conf[512] = "";
        net_format((struct sockaddr *)&have, hlen, addr, sizeof addr);
        for (int k = 0, len = 0; k < cl->n && len >= 0 && (size_t)len < sizeof conf; k++)
            len += snprintf(conf + len, sizeof conf - (size_t)len, "%s%s", k ? "," : "", cl->addr[k]);
        nwarn++;
        if (out && used + 1 < outlen) {
            int w = snprintf(out + used, outlen - used,
                             "%s: warning: socket activation: systemd passed %s for [%s], which "
                             "msgd uses instead of [%s] %s = %s; change the socket unit "
                             "(ListenStream=) to move the listener\n",
                             path, addr, listen_table[p].section,
                             listen_table[p].tls ? "msg" : listen_table[p].section,
                             listen_table[p].tls ? "tls_listen" : "listen", cl->n ? conf : "(empty)");
            if (w > 0)
                used += (size_t)w < outlen - used ? (size_t)w : outlen - used - 1;
        }
    }
    if (names)
        for (int i = 0; i < n; i++)
            free(names[i]);
    free(names);
    return nwarn;
}

/* Adopts the sockets systemd passed (LISTEN_FDS). Sets covered[p] for each
 * protocol that got one. Returns how many, or -errno with err set. */
static int adopt_passed(struct acceptor *a, const struct config *cfg, int covered[],
                        char *err, size_t errlen)
{
    char **names = NULL;
    int n = sd_listen_fds_with_names(1, &names);
    if (n <= 0)
        return n < 0 ? (snprintf(err, errlen, "LISTEN_FDS: %s", strerror(-n)), n) : 0;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        int fd = SD_LISTEN_FDS_START + i;
        const char *name = names && names[i] && strcmp(names[i], "unknown") != 0 ? names[i] : NULL;
        int p = -1;
        if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0) {
            snprintf(err, errlen, "passed fd %d (%s) is not a listening stream socket", fd,
                     name ? name : "unnamed");
            rc = -EINVAL;
        } else if ((p = match_passed(cfg, fd, name)) < 0) {
            char addr[NET_NAME_LEN];
            net_local_name(fd, addr, sizeof addr);
            snprintf(err, errlen, "passed socket %s (%s) matches no listener", addr,
                     name ? name : "unnamed");
            rc = -EINVAL;
        } else if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0 ||
                   fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
            rc = -errno;
            snprintf(err, errlen, "passed fd %d: %s", fd, strerror(errno));
        } else {
            listener_add(a, fd, (size_t)p, 1);
            covered[p] = 1;
        }
    }
    if (names)
        for (int i = 0; i < n; i++)
            free(names[i]);
    free(names);
    /* Close what was passed but not adopted, so nothing leaks on failure. */
    for (int i = a->nls; rc < 0 && i < n; i++)
        close(SD_LISTEN_FDS_START + i);
    return rc < 0 ? rc : n;
}

int acceptor_open(struct acceptor *a, const struct config *cfg, char *err, size_t errlen)
{
    memset(a, 0, sizeof *a);
    int total = sd_listen_fds(0) > 0 ? sd_listen_fds(0) : 0;
    for (size_t p = 0; p < NPROTO; p++)
        total += listen_of(cfg, p)->n;
    a->ls = calloc(total ? (size_t)total : 1, sizeof *a->ls);
    if (!a->ls) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    int covered[NPROTO] = {0};
    int rc = adopt_passed(a, cfg, covered, err, errlen);
    if (rc < 0) {
        acceptor_close(a);
        return rc;
    }
    for (size_t p = 0; p < NPROTO; p++) {
        const struct config_listen *cl = listen_of(cfg, p);
        for (int i = 0; !covered[p] && i < cl->n; i++) {
            int fd = net_listen(cl->addr[i], cfg->backlog, err, errlen);
            if (fd < 0) {
                acceptor_close(a);
                return fd;
            }
            listener_add(a, fd, p, 0);
        }
    }
    return 0;
}

/* Whether listener l accepts when listening is on: every one, but once the
 * drain began only those whose protocol serves through it (http). */
static int listener_live(const struct acceptor *a, const struct listener *l)
{
    return l->fd >= 0 && (!a->shut || l->proto->serves_drain);
}

static void listeners_set(struct acceptor *a, int on)
{
    for (int i = 0; i < a->nls; i++) {
        if (on && listener_live(a, &a->ls[i]))
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

/* The PROXY settings of l's section when they are on, else NULL. */
static const struct config_proxy *proxy_of(const struct acceptor *a, const struct listener *l)
{
    if (!l->proxy_off || !a->cfg)
        return NULL;
    const struct config_proxy *px =
        (const struct config_proxy *)(const void *)((const char *)a->cfg + l->proxy_off);
    return px->on ? px : NULL;
}

/* Whether the peer of fd may send a PROXY header: its address is in
 * proxy_from (a unix socket's peer always may). */
static bool proxy_allowed(const struct config_proxy *px, int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
        return false;
    if (ss.ss_family == AF_UNIX)
        return true;
    for (int i = 0; i < px->nfrom; i++)
        if (proxy_cidr_match(&px->from[i], &ss))
            return true;
    return false;
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
        const struct config_proxy *px = proxy_of(a, l);
        if (px && !proxy_allowed(px, fd)) {
            atomic_fetch_add_explicit(&a->reg->proxy_refused, 1, memory_order_relaxed);
            log_limited(&a->rl_max, LOG_WARN, "%s: a connection from outside proxy_from, closed",
                        l->name);
            close(fd);
            if (l->proto->counted)
                atomic_fetch_sub_explicit(&a->reg->live, 1, memory_order_relaxed);
            continue;
        }
        struct reactor *r = &a->reactors[a->next++ % (unsigned)a->nreactors];
        struct ssl_ctx_st *tls = l->tls ? tls_ctx_ref(a->tls_ctx) : NULL;
        if (l->tls && !tls) { /* cannot happen: server.c sets it before accepting */
            close(fd);
            if (l->proto->counted)
                atomic_fetch_sub_explicit(&a->reg->live, 1, memory_order_relaxed);
            continue;
        }
        if (reactor_post_conn(r, fd, l->proto, tls, px != NULL) < 0 && l->proto->counted)
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

/* Closes one listener's socket (once), unlinking the path of a unix socket
 * this process bound itself. */
static void listener_close(struct listener *l)
{
    if (l->fd < 0)
        return;
    if (!l->adopted && strncmp(l->name, "unix:", 5) == 0 && unlink(l->name + 5) < 0 &&
        errno != ENOENT)
        log_warn("%s: cannot remove the socket file: %s", l->name, strerror(errno));
    close(l->fd);
    l->fd = -1;
}

void acceptor_shut(struct acceptor *a)
{
    a->shut = 1;
    for (int i = 0; i < a->nls; i++) {
        struct listener *l = &a->ls[i];
        if (l->proto->serves_drain)
            continue;
        if (a->loop)
            ev_io_stop(a->loop, &l->watcher);
        if (!l->adopted)
            listener_close(l);
    }
}

int acceptor_has_tls(const struct acceptor *a)
{
    for (int i = 0; i < a->nls; i++)
        if (a->ls[i].tls)
            return 1;
    return 0;
}

void acceptor_set_tls(struct acceptor *a, struct ssl_ctx_st *ctx)
{
    tls_ctx_unref(a->tls_ctx);
    a->tls_ctx = ctx;
}

void acceptor_close(struct acceptor *a)
{
    for (int i = 0; i < a->nls; i++)
        listener_close(&a->ls[i]);
    free(a->ls);
    a->ls = NULL;
    a->nls = 0;
    acceptor_set_tls(a, NULL);
}

void acceptor_describe(const struct acceptor *a, char *out, size_t outlen)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t p = 0; p < NPROTO; p++) {
        int first = 1;
        for (int i = 0; i < a->nls; i++) {
            if (a->ls[i].proto != listen_table[p].proto || a->ls[i].tls != listen_table[p].tls)
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
