/* reactor: one sub-reactor thread: its loop, its mailbox and what arrives
 * there (new connections, worker results, fan-outs, reloads, the drain), and
 * its connection table. Everything but the functions in reactor.h runs on
 * its thread. */
#include "reactor.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "fanout.h"
#include "log.h"
#include "net.h"
#include "proto_msg.h"
#include "thread.h"

enum reactor_msg_kind {
    REACTOR_MSG_CONN = 1,    /* struct reactor_conn_msg: adopt an accepted fd */
    REACTOR_MSG_RESULT,      /* struct worker_job: a finished job */
    REACTOR_MSG_CONFIG,      /* struct reactor_config_msg: a reload */
    REACTOR_MSG_DRAIN,       /* struct reactor_drain_msg: start the drain */
    REACTOR_MSG_STOP,        /* close everything and leave the loop */
};

struct reactor_drain_msg {
    struct mailbox_item item;          /* kind REACTOR_MSG_DRAIN */
    uint32_t ms;
};

struct reactor_config_msg {
    struct mailbox_item item;          /* kind REACTOR_MSG_CONFIG */
    uint64_t gen;
    struct config cfg;
};

struct reactor_conn_msg {
    struct mailbox_item item;          /* kind REACTOR_MSG_CONN */
    int fd;
    const struct proto *proto;
};

static struct mailbox_item stop_msgs[REACTOR_MAX]; /* one preallocated STOP each */

/* Tells the main thread once a drain has closed every connection. */
static void check_drained(struct reactor *r)
{
    if (!r->host.env.draining || r->conns.count > 0 || atomic_load(&r->drained))
        return;
    atomic_store(&r->drained, 1);
    ev_timer_stop(r->loop, &r->drain_timer);
    if (r->main_loop && r->drained_async)
        ev_async_send(r->main_loop, r->drained_async);
}

static void conn_closed_cb(struct conn_host *h, struct conn *c)
{
    struct reactor *r = (struct reactor *)((char *)h - offsetof(struct reactor, host));
    uint32_t subs = pubsub_remove_all(&r->pubsub, &c->pl);
    if (subs)
        stats_add(h->env.stats, STATS_SUBSCRIPTIONS, (uint64_t)-subs);
    conntab_release(&r->conns, c->id);
    check_drained(r);
    stats_add(h->env.stats, STATS_CONN_CURRENT, (uint64_t)-1);
    if (c->pl.proto->counted)
        atomic_fetch_sub_explicit(r->live, 1, memory_order_relaxed);
    log_debug("reactor %d: connection %016llx closed (in %llu, out %llu bytes)", r->index,
              (unsigned long long)c->id, (unsigned long long)c->bytes_in,
              (unsigned long long)c->bytes_out);
}

static void adopt(struct reactor *r, struct reactor_conn_msg *m)
{
    int err = 0;
    uint64_t id = conntab_reserve(&r->conns, &err);
    if (err < 0) {
        log_warn("reactor %d: no slot for a new connection, closing it", r->index);
        close(m->fd);
        if (m->proto->counted)
            atomic_fetch_sub_explicit(r->live, 1, memory_order_relaxed);
        return;
    }
    net_set_nodelay(m->fd);
    struct conn *c = conn_open(&r->host, m->fd, m->proto, id);
    if (!c) {
        conntab_release(&r->conns, id);
        if (m->proto->counted)
            atomic_fetch_sub_explicit(r->live, 1, memory_order_relaxed);
        return;
    }
    conntab_set(&r->conns, id, c);
    stats_add(r->host.env.stats, STATS_CONN_CURRENT, 1);
    stats_add(r->host.env.stats, STATS_CONN_TOTAL, 1);
}

/* Puts a late reply into slot seq of connection id, if it is still there.
 * Returns 0, or -ENOENT when the connection (or its slot) has gone. */
static int complete_slot(struct reactor *r, uint64_t id, uint32_t seq, struct buffer *reply)
{
    struct conn *c = conntab_get(&r->conns, id);
    uint64_t t0;
    int idx;
    if (!c || pipeline_complete(&c->pl, seq, reply, &t0, &idx) < 0)
        return -ENOENT;
    latency_record(&r->host.env.stats->lat, idx, latency_now_ns() - t0);
    conn_kick(c);
    return 0;
}

static void deliver(struct reactor *r, struct worker_job *job)
{
    if (buffer_readable(&job->result) == 0) {
        /* The worker ran out of memory encoding the reply: the request still
         * gets an answer, in its place. */
        uint8_t frame[MSG_HEADER_LEN + 64];
        size_t n = msg_encode_error(frame, sizeof frame,
                                    MSG_FLAG_REPLY | MSG_FLAG_ERROR | (job->command & MSG_CMD_MASK),
                                    MSG_ERR_OVERLOADED, "out of memory");
        buffer_append(&job->result, frame, n);
    }
    if (complete_slot(r, job->conn_id, job->seq, &job->result) < 0)
        stats_add(r->host.env.stats, STATS_RESULTS_DROPPED, 1);
    else
        stats_add(r->host.env.stats, STATS_FRAMES_OUT, 1);
    worker_job_free(job);
}

/* A subscriber got a MESSAGE: write it later this turn (the topic walk must
 * not see a connection close under it). */
static void defer_write(struct pipeline *pl, void *arg)
{
    (void)arg;
    conn_defer(conn_of_pipeline(pl));
}

/* One line per connection for the admin `conns` command. */
static void list_conns(struct reactor *r, struct buffer *out)
{
    ev_tstamp now = ev_now(r->loop);
    for (uint32_t i = 0; i < r->conns.nslots; i++) {
        struct conn *c = conntab_at(&r->conns, i);
        if (!c)
            continue;
        char peer[NET_NAME_LEN], line[320];
        if (net_peer_name(c->fd, peer, sizeof peer) < 0)
            snprintf(peer, sizeof peer, "-");
        int n = snprintf(line, sizeof line,
                         "%016llx peer=%s proto=%s reactor=%d age=%.1fs idle=%.1fs in=%llu out=%llu "
                         "pending=%zu\n",
                         (unsigned long long)c->id, peer, c->pl.proto->name, r->index,
                         now - c->created, now - c->te.idle.at, (unsigned long long)c->bytes_in,
                         (unsigned long long)c->bytes_out, pipeline_pending(&c->pl));
        if (n > 0 && buffer_append(out, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1) < 0)
            return;
    }
}

static void fanout_visit(struct reactor *r, struct fanout *f)
{
    if (f->kind == FANOUT_PUBLISH) {
        uint32_t skipped;
        uint32_t n = pubsub_deliver(&r->pubsub, f->data, f->len, r->cfg.out_high_water,
                                    defer_write, NULL, &skipped);
        atomic_fetch_add_explicit(&f->count, n, memory_order_relaxed);
    } else if (f->kind == FANOUT_CONNS) {
        list_conns(r, &f->results[r->index]);
    }
    fanout_visited(f);
    fanout_release(f);
}

/* Every reactor has visited: answer the asking connection. */
static void fanout_done(struct reactor *r, struct fanout *f)
{
    struct buffer reply = BUFFER_INIT;
    if (f->kind == FANOUT_PUBLISH) {
        uint32_t count = (uint32_t)atomic_load_explicit(&f->count, memory_order_relaxed);
        if (commands_publish_reply(&reply, count) == 0)
            stats_add(r->host.env.stats, STATS_FRAMES_OUT, 1);
    } else {
        /* Each reactor's lines, then END; out of memory shows as a cut list. */
        for (int i = 0; i < f->nreactors; i++)
            buffer_append(&reply, buffer_peek(&f->results[i]), buffer_readable(&f->results[i]));
        buffer_append(&reply, "END\n", 4);
    }
    complete_slot(r, f->conn_id, f->seq, &reply);
    buffer_free(&reply);
    fanout_release(f);
}

static void apply_config(struct reactor *r, struct reactor_config_msg *m)
{
    config_free(&r->cfg);
    r->cfg = m->cfg; /* takes over its heap parts; pipelines point at r->cfg */
    m->cfg.tokens = NULL;
    m->cfg.ntokens = 0;
    conn_host_reload(&r->host);
    worker_set_limit(&r->pool, r->cfg.worker_queue);
    atomic_store(&r->config_gen, m->gen);
    if (r->main_loop && r->reloaded_async)
        ev_async_send(r->main_loop, r->reloaded_async);
}

static void free_item(struct mailbox_item *it)
{
    switch (it->kind) {
    case REACTOR_MSG_CONN:
        close(((struct reactor_conn_msg *)it)->fd);
        free(it);
        break;
    case REACTOR_MSG_RESULT:
        worker_job_free((struct worker_job *)it);
        break;
    case REACTOR_MSG_CONFIG:
        config_free(&((struct reactor_config_msg *)it)->cfg);
        free(it);
        break;
    case REACTOR_MSG_DRAIN:
        free(it);
        break;
    case FANOUT_MSG_VISIT:
        fanout_abandon_visit(((struct fanout_item *)it)->f);
        fanout_release(((struct fanout_item *)it)->f);
        break;
    case FANOUT_MSG_DONE:
        fanout_release(((struct fanout_item *)it)->f);
        break;
    case FANOUT_MSG_REPLY:
        fanout_reply_free((struct fanout_reply *)it);
        break;
    default:
        break; /* STOP is preallocated */
    }
}

static void close_all(struct reactor *r)
{
    for (uint32_t i = 0; i < r->conns.nslots; i++)
        if (conntab_at(&r->conns, i))
            conn_close(conntab_at(&r->conns, i));
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

static void start_drain(struct reactor *r, uint32_t ms)
{
    r->host.env.draining = true;
    ev_timer_init(&r->drain_timer, drain_deadline_cb, ms / 1000.0, 0.);
    r->drain_timer.data = r;
    ev_timer_start(r->loop, &r->drain_timer);
    for (uint32_t i = 0; i < r->conns.nslots; i++)
        if (conntab_at(&r->conns, i))
            conn_drain(conntab_at(&r->conns, i), ms);
    check_drained(r);
}

static void mailbox_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct reactor *r = w->data;
    struct mailbox_item *it = mailbox_take(&r->mb);
    while (it) {
        struct mailbox_item *next = it->next;
        switch (it->kind) {
        case REACTOR_MSG_CONN:
            adopt(r, (struct reactor_conn_msg *)it);
            free(it);
            break;
        case REACTOR_MSG_RESULT:
            deliver(r, (struct worker_job *)it);
            break;
        case FANOUT_MSG_VISIT:
            fanout_visit(r, ((struct fanout_item *)it)->f);
            break;
        case FANOUT_MSG_DONE:
            fanout_done(r, ((struct fanout_item *)it)->f);
            break;
        case FANOUT_MSG_REPLY: {
            struct fanout_reply *rep = (struct fanout_reply *)it;
            complete_slot(r, rep->conn_id, rep->seq, &rep->bytes);
            fanout_reply_free(rep);
            break;
        }
        case REACTOR_MSG_CONFIG:
            apply_config(r, (struct reactor_config_msg *)it);
            free_item(it);
            break;
        case REACTOR_MSG_DRAIN:
            start_drain(r, ((struct reactor_drain_msg *)it)->ms);
            free(it);
            break;
        case REACTOR_MSG_STOP:
            close_all(r);
            ev_break(loop, EVBREAK_ALL);
            break;
        }
        it = next;
    }
}

/* Worker thread: a finished job goes home through the mailbox. */
static void job_done(void *arg, struct worker_job *job)
{
    struct reactor *r = arg;
    job->item.kind = REACTOR_MSG_RESULT;
    mailbox_post(&r->mb, &job->item);
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
    ev_run(r->loop, 0);
    return NULL;
}

int reactor_start(struct reactor *r, int index, const struct config *cfg,
                  struct stats_registry *reg, char *err, size_t errlen)
{
    ev_init(&r->drain_timer, drain_deadline_cb);
    pubsub_init(&r->pubsub);
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
        config_free(&r->cfg);
        return -ENOMEM;
    }
    rc = mailbox_init(&r->mb);
    if (rc < 0) {
        snprintf(err, errlen, "reactor %d: eventfd: %s", index, strerror(-rc));
        ev_loop_destroy(r->loop);
        config_free(&r->cfg);
        return rc;
    }
    rc = worker_pool_start(&r->pool, cfg->workers, cfg->worker_queue, job_done, r);
    if (rc < 0) {
        snprintf(err, errlen, "reactor %d: starting workers: %s", index, strerror(-rc));
        mailbox_destroy(&r->mb, NULL);
        ev_loop_destroy(r->loop);
        config_free(&r->cfg);
        return rc;
    }
    ev_io_init(&r->mb_watcher, mailbox_cb, r->mb.efd, EV_READ);
    r->mb_watcher.data = r;
    ev_io_start(r->loop, &r->mb_watcher);
    r->host.env = (struct pipeline_env){
        .cfg = &r->cfg, .stats = &reg->reactors[index], .all = reg, .reactor = index,
        .pool = &r->pool, .pubsub = &r->pubsub, .nreactors = reg->nreactors,
        .boxes = r->boxes, .main_box = r->main_box};
    r->host.closed = conn_closed_cb;
    conn_host_init(&r->host, r->loop);
    ev_timer_init(&r->tick_timer, tick_cb, r->tick_interval, r->tick_interval);
    r->tick_timer.data = r;
    if (r->tick_interval > 0)
        ev_timer_start(r->loop, &r->tick_timer);

    rc = thread_start(&r->thread, reactor_main, r); /* signals stay with main */
    if (rc != 0) {
        snprintf(err, errlen, "reactor %d: pthread_create: %s", index, strerror(rc));
        conn_host_stop(&r->host);
        ev_io_stop(r->loop, &r->mb_watcher);
        worker_pool_stop(&r->pool);
        mailbox_destroy(&r->mb, free_item);
        ev_loop_destroy(r->loop);
        config_free(&r->cfg);
        return -rc;
    }
    r->started = 1;
    return 0;
}

int reactor_post_conn(struct reactor *r, int fd, const struct proto *proto)
{
    struct reactor_conn_msg *m = malloc(sizeof *m);
    if (!m) {
        close(fd);
        return -ENOMEM;
    }
    m->item.kind = REACTOR_MSG_CONN;
    m->fd = fd;
    m->proto = proto;
    mailbox_post(&r->mb, &m->item);
    return 0;
}

int reactor_post_drain(struct reactor *r, uint32_t ms)
{
    struct reactor_drain_msg *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    m->item.kind = REACTOR_MSG_DRAIN;
    m->ms = ms;
    mailbox_post(&r->mb, &m->item);
    return 0;
}

int reactor_post_config(struct reactor *r, const struct config *cfg, uint64_t gen)
{
    struct reactor_config_msg *m = calloc(1, sizeof *m);
    if (!m || config_copy(&m->cfg, cfg) < 0) {
        free(m);
        return -ENOMEM;
    }
    m->item.kind = REACTOR_MSG_CONFIG;
    m->gen = gen;
    mailbox_post(&r->mb, &m->item);
    return 0;
}

void reactor_halt(struct reactor *r)
{
    if (!r->started)
        return;
    stop_msgs[r->index].kind = REACTOR_MSG_STOP;
    mailbox_post(&r->mb, &stop_msgs[r->index]);
    pthread_join(r->thread, NULL);
    r->started = 0;
    r->halted = 1;
    /* Jobs still running finish (DELAY's sleep ends early) and post their
     * results, which nobody takes: reactor_free frees them. */
    worker_pool_stop(&r->pool);
}

void reactor_free(struct reactor *r)
{
    if (!r->halted)
        return;
    r->halted = 0;
    conn_host_stop(&r->host);
    ev_io_stop(r->loop, &r->mb_watcher);
    mailbox_destroy(&r->mb, free_item);
    ev_timer_stop(r->loop, &r->drain_timer);
    ev_timer_stop(r->loop, &r->tick_timer);
    ev_loop_destroy(r->loop);
    conntab_free(&r->conns);
    pubsub_free(&r->pubsub);
    config_free(&r->cfg);
}
