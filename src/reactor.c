/* reactor: one sub-reactor thread: its loop, its mailbox (whose items it
 * runs without knowing what they mean), its connection table, and the
 * services its pipelines get through struct pipeline_host_ops. Everything but
 * the functions in reactor.h runs on its thread. It knows no protocol and no
 * command. */
#include "reactor.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backplane.h"
#include "codec.h"
#include "log.h"
#include "net.h"
#include "thread.h"
#include "tls.h"

struct reactor_conn_msg {
    struct mailbox_item item;
    int fd;
    const struct proto *proto;
    struct ssl_ctx_st *tls;            /* a reference to the TLS context, or NULL */
    bool proxy;                        /* a PROXY protocol header comes first */
    _Atomic uint64_t *live;            /* the counted-connection gauge, for a drop */
};

struct reactor_config_msg {
    struct mailbox_item item;
    uint64_t gen;
    struct config cfg;
};

struct reactor_drain_msg {
    struct mailbox_item item;
    uint32_t ms;
};

static struct mailbox_item stop_msgs[REACTOR_MAX]; /* one preallocated STOP each */

/* The reactor whose mailbox items run with ctx (its pipeline_env). */
static struct reactor *reactor_of(void *ctx)
{
    return (struct reactor *)((char *)ctx - offsetof(struct reactor, host.env));
}

/* ---- the services pipelines get (struct pipeline_host_ops) ---- */

static struct pipeline *host_lookup(void *host, uint64_t conn_id)
{
    struct conn *c = conntab_get(&((struct reactor *)host)->conns, conn_id);
    return c ? &c->pl : NULL;
}

static void host_defer(struct pipeline *pl) { conn_defer(conn_of_pipeline(pl)); }

static void host_each(void *host, pipeline_each_fn fn, void *arg)
{
    struct reactor *r = host;
    for (uint32_t i = 0; i < r->conns.nslots; i++) {
        struct conn *c = conntab_at(&r->conns, i);
        if (c)
            fn(&c->pl, arg);
    }
}

static void host_describe(struct pipeline *pl, struct pipeline_info *info)
{
    struct conn *c = conn_of_pipeline(pl);
    ev_tstamp now = ev_now(c->host->loop);
    info->id = c->id;
    if (conn_peer_name(c, info->peer, sizeof info->peer) < 0)
        snprintf(info->peer, sizeof info->peer, "-");
    info->proto = pl->proto->name;
    info->reactor = pl->env->reactor;
    info->identity = pl->proto->identity ? pl->proto->identity(pl, &info->identity_len) : NULL;
    if (!info->identity)
        info->identity_len = 0;
    info->age_s = now - c->created;
    info->idle_s = now - c->te.idle.at;
    info->bytes_in = c->bytes_in;
    info->bytes_out = c->bytes_out;
    info->pending = pipeline_pending(pl);
}

static int host_address(struct pipeline *pl, bool local, char *buf, size_t len)
{
    int fd = conn_of_pipeline(pl)->fd;
    char name[PIPELINE_PEER_LEN];
    if ((local ? net_local_name(fd, name, sizeof name)
               : conn_peer_name(conn_of_pipeline(pl), name, sizeof name)) < 0)
        snprintf(name, sizeof name, "-");
    return snprintf(buf, len, "%s", name) < (int)len ? 0 : -ENOSPC;
}

static const struct pipeline_host_ops host_ops = {
    .lookup = host_lookup,
    .kick = host_defer,
    .defer = host_defer,
    .each = host_each,
    .describe = host_describe,
    .address = host_address,
};

/* A key of this reactor's topic or identity table got its first holder or
 * lost its last: the cluster link hears of it. */
static void watch_cb(const struct pubsub *ps, const uint8_t *key, size_t len, bool held)
{
    const struct backplane *bp = ps->watch_arg;
    bp->ops->interest(bp->ctx, ps->watch_kind, key, len, held);
}

/* ---- connections ---- */

/* Tells the main thread once a drain has closed every connection it waits
 * for; those that serve through a drain (http) stay until the process exits. */
static void check_drained(struct reactor *r)
{
    if (!r->host.env.draining || r->holding > 0 || atomic_load(&r->drained))
        return;
    atomic_store(&r->drained, 1);
    ev_timer_stop(r->loop, &r->drain_timer);
    if (r->main_loop && r->drained_async)
        ev_async_send(r->main_loop, r->drained_async);
}

static void conn_closed_cb(struct conn_host *h, struct conn *c)
{
    struct reactor *r = (struct reactor *)((char *)h - offsetof(struct reactor, host));
    conntab_release(&r->conns, c->id);
    if (!c->pl.proto->serves_drain)
        r->holding--;
    check_drained(r);
    stats_add(h->env.stats, STATS_CONN_CURRENT, (uint64_t)-1);
    if (c->pl.proto->counted)
        atomic_fetch_sub_explicit(r->live, 1, memory_order_relaxed);
    log_debug("reactor %d: connection %016llx closed (in %llu, out %llu bytes)", r->index,
              (unsigned long long)c->id, (unsigned long long)c->bytes_in,
              (unsigned long long)c->bytes_out);
}

static void conn_msg_drop(struct mailbox_item *it)
{
    struct reactor_conn_msg *m = (struct reactor_conn_msg *)it;
    close(m->fd);
    tls_ctx_unref(m->tls);
    if (m->proto->counted)
        atomic_fetch_sub_explicit(m->live, 1, memory_order_relaxed);
    free(m);
}

/* Adopts an accepted fd. */
static void conn_msg_run(struct mailbox_item *it, void *ctx)
{
    struct reactor *r = reactor_of(ctx);
    struct reactor_conn_msg *m = (struct reactor_conn_msg *)it;
    int err = 0;
    uint64_t id = conntab_reserve(&r->conns, &err);
    if (err < 0) {
        log_warn("reactor %d: no slot for a new connection, closing it", r->index);
        conn_msg_drop(it);
        return;
    }
    net_set_nodelay(m->fd);
    struct tls_conn *tls = NULL;
    if (m->tls) {
        tls = tls_conn_new(m->tls, m->fd); /* its session holds its own reference */
        tls_ctx_unref(m->tls);
        m->tls = NULL;
        if (!tls) {
            log_warn("reactor %d: out of memory for a TLS connection, closing it", r->index);
            conntab_release(&r->conns, id);
            conn_msg_drop(it);
            return;
        }
    }
    struct conn *c = conn_open(&r->host, m->fd, m->proto, id);
    if (!c) {
        tls_conn_free(tls);
        conntab_release(&r->conns, id);
        m->fd = -1; /* conn_open closed it */
        if (m->proto->counted)
            atomic_fetch_sub_explicit(r->live, 1, memory_order_relaxed);
        free(m);
        return;
    }
    conntab_set(&r->conns, id, c);
    if (!c->pl.proto->serves_drain)
        r->holding++;
    stats_add(r->host.env.stats, STATS_CONN_CURRENT, 1);
    stats_add(r->host.env.stats, STATS_CONN_TOTAL, 1);
    if (tls)
        conn_start_tls(c, tls);
    if (m->proxy && conn_expect_proxy(c) < 0) { /* the PROXY header comes before TLS */
        free(m);
        conn_close(c);
        return;
    }
    free(m);
    if (c->pl.proto->open)
        c->pl.proto->open(&c->pl);
}

static void close_all(struct reactor *r)
{
    for (uint32_t i = 0; i < r->conns.nslots; i++)
        if (conntab_at(&r->conns, i))
            conn_close(conntab_at(&r->conns, i));
}

/* ---- reload, drain, stop ---- */

static void config_msg_run(struct mailbox_item *it, void *ctx)
{
    struct reactor *r = reactor_of(ctx);
    struct reactor_config_msg *m = (struct reactor_config_msg *)it;
    config_free(&r->cfg);
    r->cfg = m->cfg; /* takes over its heap parts; pipelines point at r->cfg */
    m->cfg.tokens = NULL;
    m->cfg.ntokens = 0;
    conn_host_reload(&r->host);
    worker_set_limit(&r->pool, r->cfg.worker_queue);
    atomic_store(&r->config_gen, m->gen);
    if (r->main_loop && r->reloaded_async)
        ev_async_send(r->main_loop, r->reloaded_async);
    reactor_config_msg_free(m);
}

static void config_msg_drop(struct mailbox_item *it)
{
    reactor_config_msg_free((struct reactor_config_msg *)it);
}

static void drain_deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct reactor *r = w->data;
    if (r->conns.count > 0)
        log_info("reactor %d: drain deadline: closing %u connections", r->index, r->conns.count);
    close_all(r);
}

static void drain_msg_run(struct mailbox_item *it, void *ctx)
{
    struct reactor *r = reactor_of(ctx);
    uint32_t ms = ((struct reactor_drain_msg *)it)->ms;
    free(it);
    r->host.env.draining = true;
    ev_timer_init(&r->drain_timer, drain_deadline_cb, ms / 1000.0, 0.);
    r->drain_timer.data = r;
    ev_timer_start(r->loop, &r->drain_timer);
    for (uint32_t i = 0; i < r->conns.nslots; i++)
        if (conntab_at(&r->conns, i))
            conn_drain(conntab_at(&r->conns, i), ms);
    check_drained(r);
}

static void free_item(struct mailbox_item *it) { free(it); }

static void stop_msg_run(struct mailbox_item *it, void *ctx)
{
    (void)it;
    struct reactor *r = reactor_of(ctx);
    close_all(r);
    ev_break(r->loop, EVBREAK_ALL);
}

/* ---- the loop ---- */

static void mailbox_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct reactor *r = w->data;
    mailbox_run(&r->mb, &r->host.env);
}

/* The watchdog's proof of life: only a loop that turns bumps the tick. */
static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct reactor *r = w->data;
    atomic_fetch_add_explicit(&r->tick, 1, memory_order_relaxed);
}

static void *reactor_main(void *arg)
{
    struct reactor *r = arg;
    pipeline_env_enter(&r->host.env);
    ev_run(r->loop, 0);
    return NULL;
}

int reactor_start(struct reactor *r, int index, const struct config *cfg,
                  struct stats_registry *reg, char *err, size_t errlen)
{
    ev_init(&r->drain_timer, drain_deadline_cb);
    pubsub_init(&r->pubsub);
    pubsub_init(&r->identities);
    if (r->backplane) { /* the cluster follows which keys this reactor holds */
        r->pubsub.watch = r->identities.watch = watch_cb;
        r->pubsub.watch_arg = r->identities.watch_arg = (void *)(uintptr_t)r->backplane;
        r->pubsub.watch_kind = BACKPLANE_TOPIC;
        r->identities.watch_kind = BACKPLANE_IDENTITY;
    }
    r->index = index;
    conntab_init(&r->conns, index);
    r->live = &reg->live;
    int rc = config_copy(&r->cfg, cfg);
    if (rc < 0) {
        snprintf(err, errlen, "reactor %d: out of memory", index);
        return rc;
    }
    r->loop = ev_loop_new(EVBACKEND_EPOLL | EVFLAG_NOENV);
    if (!r->loop) {
        snprintf(err, errlen, "reactor %d: ev_loop_new(EVBACKEND_EPOLL) failed", index);
        rc = -ENOMEM;
        goto fail_cfg;
    }
    rc = mailbox_init(&r->mb);
    if (rc < 0) {
        snprintf(err, errlen, "reactor %d: eventfd: %s", index, strerror(-rc));
        goto fail_loop;
    }
    rc = worker_pool_start(&r->pool, cfg->workers, cfg->worker_queue, &r->mb);
    if (rc < 0) {
        snprintf(err, errlen, "reactor %d: starting workers: %s", index, strerror(-rc));
        goto fail_mailbox;
    }
    ev_io_init(&r->mb_watcher, mailbox_cb, r->mb.efd, EV_READ);
    r->mb_watcher.data = r;
    ev_io_start(r->loop, &r->mb_watcher);
    r->host.env = (struct pipeline_env){
        .cfg = &r->cfg, .stats = &reg->reactors[index], .all = reg, .reactor = index,
        .pool = &r->pool, .pubsub = &r->pubsub, .identities = &r->identities, .nreactors = reg->nreactors,
        .boxes = r->boxes, .main_box = r->main_box, .ops = &host_ops, .host = r,
        .loop = r->loop, .backplane = r->backplane};
    r->host.env.codec = codec_ctx_new(); /* NULL: this reactor compresses nothing */
    r->host.closed = conn_closed_cb;
    conn_host_init(&r->host, r->loop);
    ev_timer_init(&r->tick_timer, tick_cb, r->tick_interval, r->tick_interval);
    r->tick_timer.data = r;
    if (r->tick_interval > 0)
        ev_timer_start(r->loop, &r->tick_timer);

    rc = thread_start(&r->thread, reactor_main, r); /* signals stay with main */
    if (rc == 0) {
        thread_name(r->thread, "msgd-r%d", index);
        for (int w = 0; w < r->pool.nthreads; w++)
            thread_name(r->pool.threads[w], "msgd-r%d-w%d", index, w);
    }
    if (rc != 0) {
        snprintf(err, errlen, "reactor %d: pthread_create: %s", index, strerror(rc));
        rc = -rc;
        conn_host_stop(&r->host);
        ev_io_stop(r->loop, &r->mb_watcher);
        worker_pool_stop(&r->pool);
        codec_ctx_free(r->host.env.codec);
        goto fail_mailbox;
    }
    r->started = 1;
    return 0;

fail_mailbox:
    mailbox_destroy(&r->mb);
fail_loop:
    ev_loop_destroy(r->loop);
fail_cfg:
    config_free(&r->cfg);
    return rc;
}

int reactor_post_conn(struct reactor *r, int fd, const struct proto *proto,
                      struct ssl_ctx_st *tls, bool proxy)
{
    struct reactor_conn_msg *m = malloc(sizeof *m);
    if (!m) {
        close(fd);
        tls_ctx_unref(tls);
        return -ENOMEM;
    }
    m->tls = tls;
    m->proxy = proxy;
    m->item.run = conn_msg_run;
    m->item.drop = conn_msg_drop;
    m->fd = fd;
    m->proto = proto;
    m->live = r->live;
    mailbox_post(&r->mb, &m->item);
    return 0;
}

int reactor_post_drain(struct reactor *r, uint32_t ms)
{
    struct reactor_drain_msg *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    m->item.run = drain_msg_run;
    m->item.drop = free_item;
    m->ms = ms;
    mailbox_post(&r->mb, &m->item);
    return 0;
}

struct reactor_config_msg *reactor_config_msg_new(const struct config *cfg, uint64_t gen)
{
    struct reactor_config_msg *m = calloc(1, sizeof *m);
    if (!m || config_copy(&m->cfg, cfg) < 0) {
        free(m);
        return NULL;
    }
    m->item.run = config_msg_run;
    m->item.drop = config_msg_drop;
    m->gen = gen;
    return m;
}

void reactor_config_msg_free(struct reactor_config_msg *m)
{
    if (!m)
        return;
    config_free(&m->cfg);
    free(m);
}

void reactor_post_config(struct reactor *r, struct reactor_config_msg *m)
{
    mailbox_post(&r->mb, &m->item);
}

void reactor_halt(struct reactor *r)
{
    if (!r->started)
        return;
    stop_msgs[r->index] = (struct mailbox_item){.run = stop_msg_run};
    mailbox_post(&r->mb, &stop_msgs[r->index]);
    pthread_join(r->thread, NULL);
    r->started = 0;
    r->halted = 1;
    /* Jobs still running finish (DELAY's sleep ends early) and post their
     * results, which nobody takes: reactor_free drops them. */
    worker_pool_stop(&r->pool);
}

void reactor_free(struct reactor *r)
{
    if (!r->halted)
        return;
    r->halted = 0;
    conn_host_stop(&r->host);
    ev_io_stop(r->loop, &r->mb_watcher);
    mailbox_destroy(&r->mb);
    ev_timer_stop(r->loop, &r->drain_timer);
    ev_timer_stop(r->loop, &r->tick_timer);
    ev_loop_destroy(r->loop);
    conntab_free(&r->conns);
    pubsub_free(&r->pubsub);
    pubsub_free(&r->identities);
    codec_ctx_free(r->host.env.codec);
    config_free(&r->cfg);
}
