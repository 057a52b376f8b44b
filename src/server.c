/* server: start-up order, signals and shutdown, on the main thread. */
#include "server.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "acceptor.h"
#include "cluster.h"
#include "log.h"
#include "module_host.h"
#include "module_runtime.h"
#include "notify.h"
#include "reactor.h"
#include "reload.h"
#include "stats.h"
#include "tls.h"

#include <systemd/sd-daemon.h>

#define FD_RESERVE 32   /* descriptors kept for listeners, logs, eventfds, epoll */

struct server {
    struct config cfg;                 /* the running configuration (owned) */
    const char *path;
    int draining;
    bool modules_started;              /* module_start_all ran: fini runs at the end */
    uint64_t max_conns;
    struct ev_loop *loop;
    struct acceptor acceptor;
    struct reactor *reactors;
    int nreactors;
    struct stats_registry reg;
    ev_signal sig_term, sig_int, sig_hup;
    ev_async drained;                  /* a reactor finished its drain */
    ev_async reloaded;                 /* a reactor applied a reload */
    uint64_t reload_gen;               /* the last reload posted to the reactors */
    int reload_pending;                /* READY=1 waits for every reactor */
    ev_timer drain_backstop;           /* the drain's last resort */
    ev_timer status_timer;             /* STATUS= refresh */
    uint64_t status_frames;            /* frames_in at the last refresh */
    ev_tstamp status_at;
    ev_timer watchdog_timer;           /* WATCHDOG=1 while every reactor turns */
    uint64_t *ticks_seen;              /* each reactor's tick at the last check */
    struct log_ratelimit rl_watchdog;
    struct mailbox main_mb;            /* requests from reactors (admin reload) */
    ev_io main_mb_watcher;
    struct mailbox **boxes;            /* every reactor's mailbox, for fan-outs */
    struct reload_hub hub;             /* admin reloads owed an answer; main_mb's context */
    struct cluster *cluster;           /* the Redis backplane link, or NULL */
};

/* Raises the soft descriptor limit to the hard one and lowers
 * max_connections to what fits. Returns the usable max_connections. */
static uint64_t fit_fd_limit(uint64_t want, int nreactors)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return want;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    uint64_t reserve = FD_RESERVE + 2u * (uint64_t)nreactors;
    uint64_t fit = rl.rlim_cur > reserve + 1 ? rl.rlim_cur - reserve : 1;
    if (want > fit) {
        log_warn("max_connections %llu does not fit RLIMIT_NOFILE %llu: using %llu",
                 (unsigned long long)want, (unsigned long long)rl.rlim_cur,
                 (unsigned long long)fit);
        return fit;
    }
    return want;
}

/* The unix sockets msgd bound itself (not those systemd passed) go to the
 * user msgd drops to, so that its group can reach them (mode 0660) and it
 * can remove them at stop. Returns 0 or -1 (logged). */
static int chown_unix_listeners(const struct acceptor *a, const struct passwd *pw)
{
    for (int i = 0; i < a->nls; i++) {
        const struct listener *l = &a->ls[i];
        if (l->adopted || strncmp(l->name, "unix:", 5) != 0)
            continue;
        if (chown(l->name + 5, pw->pw_uid, pw->pw_gid) < 0) {
            log_error("%s: chown to user %s: %s", l->name, pw->pw_name, strerror(errno));
            return -1;
        }
    }
    return 0;
}

/* After dropping: a unix socket whose directory the user cannot write is
 * left behind at stop (the next start replaces it); say so now. */
static void check_unix_cleanup(const struct acceptor *a, const char *user)
{
    for (int i = 0; i < a->nls; i++) {
        const struct listener *l = &a->ls[i];
        if (l->adopted || strncmp(l->name, "unix:", 5) != 0)
            continue;
        char dir[NET_NAME_LEN];
        snprintf(dir, sizeof dir, "%s", l->name + 5);
        char *slash = strrchr(dir, '/');
        if (slash)
            slash[slash == dir] = '\0'; /* "/x.sock" keeps "/" */
        if (access(dir, W_OK | X_OK) < 0)
            log_warn("%s: user %s cannot write %s, so the socket will be left behind at stop "
                     "(the next start replaces it); give the user a directory such as "
                     "RuntimeDirectory=msgd's /run/msgd", l->name, user, dir);
    }
}

/* Drops root for cfg->user after binding. Returns 0 or -1 (logged). */
static int drop_privileges(const struct config *cfg, const struct acceptor *a)
{
    if (geteuid() != 0)
        return 0;
    if (cfg->user[0] == '\0') {
        log_warn("running as root: set [server] user to drop privileges after binding");
        return 0;
    }
    errno = 0;
    struct passwd *pw = getpwnam(cfg->user);
    if (!pw) {
        log_error("[server] user %s: %s", cfg->user, errno ? strerror(errno) : "no such user");
        return -1;
    }
    if (chown_unix_listeners(a, pw) < 0)
        return -1;
    if (initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
        setuid(pw->pw_uid) < 0) {
        log_error("dropping to user %s: %s", cfg->user, strerror(errno));
        return -1;
    }
    log_info("dropped privileges to user %s (uid %u)", cfg->user, (unsigned)pw->pw_uid);
    check_unix_cleanup(a, cfg->user);
    return 0;
}

/* The second stop signal, or the drain's backstop: stop at once. */
static void stop_now(struct server *s, const char *why)
{
    log_info("%s: stopping now", why);
    ev_break(s->loop, EVBREAK_ALL);
}

/* SIGTERM/SIGINT: stop accepting (closing our own listeners, so new
 * connections are refused), tell systemd, and drain (rule 6): every reactor
 * sends GOAWAY, answers what it already read, and closes each connection once
 * it owes nothing, or at drain_timeout. */
static void stop_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    struct server *s = w->data;
    if (s->draining) {
        stop_now(s, "second stop signal");
        return;
    }
    s->draining = 1;
    s->hub.refuse = true; /* an admin `reload` from now on: "ERR shutting down" */
    uint32_t ms = (uint32_t)s->cfg.drain_ms;
    log_info("signal %d: draining (up to %u ms)", w->signum, ms);
    acceptor_shut(&s->acceptor);
    notify_stopping();
    for (int i = 0; i < s->nreactors; i++)
        if (reactor_post_drain(&s->reactors[i], ms) < 0) {
            stop_now(s, "out of memory for the drain");
            return;
        }
    ev_timer_set(&s->drain_backstop, ms / 1000.0 + 1.0, 0.);
    ev_timer_start(s->loop, &s->drain_backstop);
}

static void drained_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    struct server *s = w->data;
    for (int i = 0; i < s->nreactors; i++)
        if (!atomic_load(&s->reactors[i].drained))
            return;
    log_info("drained: every connection closed");
    ev_break(s->loop, EVBREAK_ALL);
}

static void backstop_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    stop_now(w->data, "drain deadline passed");
}

/* Logs a changed key that only a restart applies. */
static void needs_restart(const char *what, int changed)
{
    if (changed)
        log_warn("reload: %s changed; it needs a restart (running value kept)", what);
}

static int listen_differs(const struct config_listen *a, const struct config_listen *b)
{
    if (a->n != b->n)
        return 1;
    for (int i = 0; i < a->n; i++)
        if (strcmp(a->addr[i], b->addr[i]) != 0)
            return 1;
    return 0;
}

/* Answers every admin `reload` that waits, with one line and END. */
static void answer_reload_waiters(struct server *s, const char *line)
{
    unsigned lost = reload_hub_answer(&s->hub, line);
    if (lost)
        log_error("reload: out of memory: %u admin clients get no answer", lost);
}

/* Test hook (docs/RELIABILITY.md): MSGD_FAULT_RELOAD_ALLOC=i makes the
 * allocation of reactor i's reload message fail, as out of memory would. */
static int reload_alloc_fails(int i)
{
    const char *v = getenv("MSGD_FAULT_RELOAD_ALLOC");
    return v && *v && atoi(v) == i;
}

/* Hands cfg to every reactor, all or nothing: every message is allocated
 * before any is posted, so a failure leaves every reactor on the running
 * configuration. Returns 0 or -ENOMEM. */
static int post_config_all(struct server *s, const struct config *cfg, uint64_t gen)
{
    struct reactor_config_msg **m = calloc((size_t)s->nreactors, sizeof *m);
    if (!m)
        return -ENOMEM;
    int rc = 0;
    for (int i = 0; i < s->nreactors && rc == 0; i++) {
        m[i] = reload_alloc_fails(i) ? NULL : reactor_config_msg_new(cfg, gen);
        if (!m[i])
            rc = -ENOMEM;
    }
    for (int i = 0; i < s->nreactors; i++) {
        if (rc == 0)
            reactor_post_config(&s->reactors[i], m[i]);
        else
            reactor_config_msg_free(m[i]);
    }
    free(m);
    return rc;
}

/* A reload (CONFIG.md): read and check the whole file first; on any error
 * keep everything; else apply the live keys everywhere and keep the rest.
 * READY=1 (and the admin answer) follow once every reactor has applied it. */
static void reload(struct server *s)
{
    notify_reloading();
    struct config next;
    char err[4096];
    if (config_load(s->path, &next, err, sizeof err) != 0) {
        char first[512];
        snprintf(first, sizeof first, "ERR reload failed: %.*s", (int)strcspn(err, "\n"), err);
        for (char *line = strtok(err, "\n"); line; line = strtok(NULL, "\n"))
            log_error("reload: %s", line);
        log_error("reload failed: running configuration kept");
        notify_reloaded("reload failed; running configuration kept");
        answer_reload_waiters(s, first);
        return;
    }
    const struct config *cur = &s->cfg;
    needs_restart("[msg] listen", listen_differs(&cur->msg_listen, &next.msg_listen));
    needs_restart("[echo] listen", listen_differs(&cur->echo_listen, &next.echo_listen));
    needs_restart("[admin] listen", listen_differs(&cur->admin_listen, &next.admin_listen));
    needs_restart("[http] listen", listen_differs(&cur->http_listen, &next.http_listen));
    needs_restart("[msg] tls_listen", listen_differs(&cur->tls_listen, &next.tls_listen));
    needs_restart("[server] reactors", cur->reactors != next.reactors);
    needs_restart("[server] workers", cur->workers != next.workers);
    needs_restart("[server] backlog", cur->backlog != next.backlog);
    needs_restart("[server] user", strcmp(cur->user, next.user) != 0);
    /* Keep the running values of what cannot change live. */
    next.msg_listen = cur->msg_listen;
    next.echo_listen = cur->echo_listen;
    next.admin_listen = cur->admin_listen;
    next.http_listen = cur->http_listen;
    next.tls_listen = cur->tls_listen;
    next.reactors = cur->reactors;
    next.workers = cur->workers;
    next.backlog = cur->backlog;
    memcpy(next.user, cur->user, sizeof next.user);
    /* The certificates are read again for new connections; open ones keep
     * theirs. A file that fails keeps everything as it was. */
    struct ssl_ctx_st *tls = NULL;
    if (acceptor_has_tls(&s->acceptor) && !(tls = tls_ctx_new(&next, s->path, err, sizeof err))) {
        char first[600];
        snprintf(first, sizeof first, "ERR reload failed: %.500s", err);
        log_error("reload: %s", err);
        log_error("reload failed: running configuration kept");
        notify_reloaded("reload failed; running configuration kept");
        answer_reload_waiters(s, first);
        config_free(&next);
        return;
    }
    if (post_config_all(s, &next, s->reload_gen + 1) < 0) {
        log_error("reload: out of memory: running configuration kept");
        notify_reloaded("reload failed; running configuration kept");
        answer_reload_waiters(s, "ERR reload failed: out of memory");
        tls_ctx_unref(tls);
        config_free(&next);
        return;
    }
    if (tls)
        acceptor_set_tls(&s->acceptor, tls);
    s->reload_gen++;
    log_set_level((enum log_level)next.log_level);
    s->max_conns = fit_fd_limit(next.max_connections, s->nreactors);
    s->acceptor.max_connections = s->max_conns;
    config_free(&s->cfg);
    s->cfg = next;
    s->reload_pending = 1;
}

static void hup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    reload(w->data);
}

/* A reactor applied a reload: once all have, the reload is done. */
static void reloaded_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    struct server *s = w->data;
    if (!s->reload_pending)
        return;
    for (int i = 0; i < s->nreactors; i++)
        if (atomic_load(&s->reactors[i].config_gen) != s->reload_gen)
            return;
    s->reload_pending = 0;
    log_info("reloaded %s", s->path);
    notify_reloaded("reloaded");
    answer_reload_waiters(s, "OK reloaded");
}

/* Requests from the reactors (an admin `reload`): their items run here with
 * the reload hub as context. */
static void main_mailbox_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct server *s = w->data;
    mailbox_run(&s->main_mb, &s->hub);
}

/* The hub's start: an admin `reload` runs the same reload as SIGHUP, and is
 * answered when it has taken (or failed). */
static void hub_start(struct reload_hub *hub)
{
    reload((struct server *)((char *)hub - offsetof(struct server, hub)));
}

#define STATUS_EVERY_S 5.0

static void status_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct server *s = w->data;
    ev_tstamp now = ev_now(loop);
    uint64_t frames = stats_sum(&s->reg, STATS_FRAMES_IN);
    double rate = now > s->status_at ? (double)(frames - s->status_frames) / (now - s->status_at) : 0;
    s->status_frames = frames;
    s->status_at = now;
    char status[256];
    snprintf(status, sizeof status, "%llu connections, %.0f msg/s, %d reactors%s%s",
             (unsigned long long)stats_sum(&s->reg, STATS_CONN_CURRENT), rate, s->nreactors,
             !s->cluster ? "" : cluster_is_up(s->cluster) ? ", cluster up" : ", cluster down",
             s->draining ? ", draining" : "");
    notify_status(status);
}

/* Pings systemd's watchdog only when every reactor's loop has turned since
 * the last check: a stuck reactor starves the watchdog and systemd restarts
 * the service. */
static void watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct server *s = w->data;
    int stuck = -1;
    for (int i = 0; i < s->nreactors; i++) {
        uint64_t t = atomic_load_explicit(&s->reactors[i].tick, memory_order_relaxed);
        if (t == s->ticks_seen[i] && stuck < 0)
            stuck = i;
        s->ticks_seen[i] = t;
    }
    if (stuck >= 0) {
        log_limited(&s->rl_watchdog, LOG_ERROR,
                    "reactor %d has not turned its loop: withholding the watchdog ping", stuck);
        return;
    }
    notify_watchdog();
}

/* Arms the watchdog when systemd asked for one ($WATCHDOG_USEC). Returns the
 * reactors' tick interval in seconds (0 = no watchdog). */
static double watchdog_setup(struct server *s)
{
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
        return 0;
    s->ticks_seen = calloc((size_t)s->nreactors, sizeof *s->ticks_seen);
    if (!s->ticks_seen)
        return 0;
    double half = (double)usec / 2e6;
    ev_timer_init(&s->watchdog_timer, watchdog_cb, half, half);
    s->watchdog_timer.data = s;
    log_info("watchdog: ping every %.3f s while every reactor turns", half);
    return half / 2; /* each reactor ticks at least twice per check */
}

static int start_reactors(struct server *s)
{
    char err[256];
    s->reactors = calloc((size_t)s->nreactors, sizeof *s->reactors);
    s->boxes = calloc((size_t)s->nreactors, sizeof *s->boxes);
    if (!s->reactors || !s->boxes) {
        log_error("out of memory");
        return -1;
    }
    for (int i = 0; i < s->nreactors; i++)
        s->boxes[i] = &s->reactors[i].mb;
    if (module_runtime_start(s->nreactors, s->boxes) < 0) {
        log_error("out of memory");
        return -1;
    }
    if (s->cfg.cluster_redis[0]) {
        s->cluster = cluster_new(&s->cfg, &s->reg, s->nreactors, s->boxes, err, sizeof err);
        if (!s->cluster) {
            log_error("%s", err);
            return -1;
        }
    }
    s->hub.boxes = s->boxes;
    s->hub.start = hub_start;
    double tick = watchdog_setup(s);
    for (int i = 0; i < s->nreactors; i++) {
        s->reactors[i].tick_interval = tick;
        s->reactors[i].main_loop = s->loop;
        s->reactors[i].drained_async = &s->drained;
        s->reactors[i].reloaded_async = &s->reloaded;
        s->reactors[i].boxes = s->boxes;
        s->reactors[i].main_box = &s->main_mb;
        s->reactors[i].backplane = s->cluster ? cluster_backplane(s->cluster) : NULL;
        if (reactor_start(&s->reactors[i], i, &s->cfg, &s->reg, err, sizeof err) < 0) {
            log_error("%s", err);
            return -1;
        }
    }
    if (s->cluster && cluster_start(s->cluster) < 0) {
        log_error("cluster: cannot start its thread");
        return -1;
    }
    return 0;
}

static void shutdown_all(struct server *s)
{
    acceptor_stop(&s->acceptor);
    /* Halt every reactor before freeing any: a fan-out may still post to
     * another reactor's mailbox until that one has left its loop. */
    for (int i = 0; s->reactors && i < s->nreactors; i++)
        reactor_halt(&s->reactors[i]);
    /* No reactor posts to the cluster link any more; what it still posts to
     * them is dropped when they are freed. */
    cluster_free(s->cluster);
    s->cluster = NULL;
    /* Modules' timers go while the reactors' loops still exist; a module's
     * threads stop (fini) before the mailboxes they may post to are freed. */
    module_runtime_stop();
    if (s->modules_started)
        module_fini_all();
    for (int i = 0; s->reactors && i < s->nreactors; i++)
        reactor_free(&s->reactors[i]);
    reload_hub_free(&s->hub); /* their connections are gone */
    free(s->reactors);
    s->reactors = NULL;
    free(s->boxes);
    s->boxes = NULL;
    free(s->ticks_seen);
    s->ticks_seen = NULL;
    acceptor_close(&s->acceptor);
    stats_registry_free(&s->reg);
}

/* The CPUs this process may run on (its affinity mask: taskset, systemd's
 * CPUAffinity=, a container's cpuset), else the CPUs online. reactors = 0
 * means one reactor per such CPU: two reactor threads pinned to one CPU
 * only take turns, and pay a mailbox trip for every fan-out. */
static int usable_cpus(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    return ncpu > 0 ? (int)ncpu : 1;
}

int server_run(const struct config *cfg_in, const char *path)
{
    struct server s = {.path = path};
    char err[256];
    if (config_copy(&s.cfg, cfg_in) < 0) {
        log_error("out of memory");
        return 1;
    }
    const struct config *cfg = &s.cfg;
    signal(SIGPIPE, SIG_IGN);

    s.nreactors = cfg->reactors > 0 ? cfg->reactors : usable_cpus();
    if (s.nreactors > REACTOR_MAX)
        s.nreactors = REACTOR_MAX;
    s.max_conns = fit_fd_limit(cfg->max_connections, s.nreactors);

    int rc = acceptor_open(&s.acceptor, cfg, err, sizeof err);
    if (rc < 0) {
        log_error("cannot listen: %s", err);
        notify_failed(-rc, err);
        config_free(&s.cfg);
        return 1;
    }
    if (s.acceptor.nls == 0) {
        log_error("%s: no listener configured", path);
        acceptor_close(&s.acceptor);
        config_free(&s.cfg);
        return 1;
    }
    for (int i = 0; i < s.acceptor.nls; i++)
        log_info("listening on %s (%s%s)", s.acceptor.ls[i].name, s.acceptor.ls[i].proto->name,
                 s.acceptor.ls[i].tls ? " inside TLS" : "");
    /* Certificates and keys are read before privileges drop. */
    if (acceptor_has_tls(&s.acceptor)) {
        char terr[1024];
        struct ssl_ctx_st *tls = tls_ctx_new(cfg, path, terr, sizeof terr);
        if (!tls) {
            log_error("%s", terr);
            acceptor_close(&s.acceptor);
            notify_failed(EINVAL, terr);
            config_free(&s.cfg);
            return 1;
        }
        acceptor_set_tls(&s.acceptor, tls);
    }
    if (drop_privileges(cfg, &s.acceptor) < 0 || stats_registry_init(&s.reg, s.nreactors) < 0) {
        acceptor_close(&s.acceptor);
        notify_failed(EPERM, "start failed");
        config_free(&s.cfg);
        return 1;
    }

    /* Signals through a signalfd: SIGTERM, SIGINT and SIGHUP are blocked in
     * every thread (the others block them from birth, thread.h; libev blocks
     * them here when the watchers start) and read from the fd by the main
     * loop, so no signal handler runs anywhere. With a handler,
     * ThreadSanitizer sometimes never ran the deferred one: a SIGTERM or
     * SIGHUP right after READY was lost (make tsan, 3 runs in 10). */
    s.loop = ev_default_loop(EVFLAG_NOENV | EVFLAG_SIGNALFD);
    if (!s.loop) {
        log_error("cannot create the main event loop");
        shutdown_all(&s);
        config_free(&s.cfg);
        return 1;
    }
    log_start_thread();
    ev_async_init(&s.drained, drained_cb);
    s.drained.data = &s;
    ev_async_start(s.loop, &s.drained);
    if (mailbox_init(&s.main_mb) < 0) {
        log_error("cannot create the main mailbox");
        shutdown_all(&s);
        log_stop_thread();
        config_free(&s.cfg);
        return 1;
    }
    ev_io_init(&s.main_mb_watcher, main_mailbox_cb, s.main_mb.efd, EV_READ);
    s.main_mb_watcher.data = &s;
    ev_io_start(s.loop, &s.main_mb_watcher);
    ev_async_init(&s.reloaded, reloaded_cb);
    s.reloaded.data = &s;
    ev_async_start(s.loop, &s.reloaded);
    ev_init(&s.drain_backstop, backstop_cb);
    s.drain_backstop.data = &s;
    s.modules_started = true;
    if (module_start_all(err, sizeof err) < 0) {
        log_error("%s", err);
        shutdown_all(&s);
        log_stop_thread();
        notify_failed(EINVAL, "start failed");
        config_free(&s.cfg);
        return 1;
    }
    if (start_reactors(&s) < 0) {
        shutdown_all(&s);
        log_stop_thread();
        notify_failed(ENOMEM, "start failed");
        config_free(&s.cfg);
        return 1;
    }
    ev_signal_init(&s.sig_term, stop_cb, SIGTERM);
    ev_signal_init(&s.sig_int, stop_cb, SIGINT);
    ev_signal_init(&s.sig_hup, hup_cb, SIGHUP);
    s.sig_hup.data = &s;
    s.sig_term.data = &s;
    s.sig_int.data = &s;
    ev_signal_start(s.loop, &s.sig_term);
    ev_signal_start(s.loop, &s.sig_int);
    ev_signal_start(s.loop, &s.sig_hup);
    s.acceptor.cfg = &s.cfg; /* proxy_from, live */
    acceptor_start(&s.acceptor, s.loop, s.reactors, s.nreactors, &s.reg, s.max_conns);

    char status[1024], names[900];
    acceptor_describe(&s.acceptor, names, sizeof names);
    snprintf(status, sizeof status, "listening %s", names);
    notify_ready(status);
    ev_timer_init(&s.status_timer, status_cb, STATUS_EVERY_S, STATUS_EVERY_S);
    s.status_timer.data = &s;
    s.status_at = ev_now(s.loop);
    ev_timer_start(s.loop, &s.status_timer);
    if (s.ticks_seen)
        ev_timer_start(s.loop, &s.watchdog_timer);
    log_info("ready: %d reactors, max_connections %llu", s.nreactors, (unsigned long long)s.max_conns);

    ev_run(s.loop, 0);

    if (!s.draining)
        notify_stopping();
    /* A further stop signal during the rest of the shutdown still ends it. */
    ev_signal_stop(s.loop, &s.sig_hup);
    ev_timer_stop(s.loop, &s.drain_backstop);
    ev_timer_stop(s.loop, &s.status_timer);
    if (s.ticks_seen)
        ev_timer_stop(s.loop, &s.watchdog_timer);
    shutdown_all(&s);
    ev_async_stop(s.loop, &s.drained);
    ev_async_stop(s.loop, &s.reloaded);
    ev_io_stop(s.loop, &s.main_mb_watcher);
    mailbox_destroy(&s.main_mb);
    ev_signal_stop(s.loop, &s.sig_term);
    ev_signal_stop(s.loop, &s.sig_int);
    ev_loop_destroy(s.loop);
    log_info("stopped");
    log_stop_thread();
    config_free(&s.cfg);
    return 0;
}
