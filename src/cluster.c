/* cluster: the Redis backplane link. Everything below runs on the link's
 * own thread but the functions of cluster.h and the backplane calls (which
 * only post to its mailbox).
 *
 * Channels: PREFIX:t:TOPIC and PREFIX:u:IDENTITY; the node subscribes to a
 * channel while any of its reactors holds the key, and only then. A
 * message is: u8 version (1), u8 node name length, the name, u64 instance
 * (random per process: a node skips its own messages by it, so two nodes
 * that share a name still hear each other), then the MESSAGE or DELIVER
 * payload. One connection publishes, in the order the reactors posted, so
 * one publisher's messages keep their order on every node. */
#include "cluster.h"

#include <errno.h>
#include <ev.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#pragma GCC diagnostic ignored "-Wcast-qual"
#pragma GCC diagnostic ignored "-Wshadow"
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/adapters/libev.h>
#pragma GCC diagnostic pop

#include "config.h"
#include "fanout.h"
#include "log.h"
#include "mailbox.h"
#include "msg.h"
#include "pipeline.h"
#include "proto_msg.h"
#include "pubsub.h"
#include "stats.h"
#include "thread.h"

#define MSG_VERSION_BYTE 1
#define PENDING_MAX 65536u             /* PUBLISHes Redis has not answered: past it, drop */
#define KEY_MAX 255
#define CHANNEL_MAX (64 + 3 + KEY_MAX)
#define BACKOFF_MIN 0.1

/* A key some reactor holds: how many reactors hold it. */
struct interest {
    struct interest *next;
    uint32_t holders;
    char kind;
    uint8_t len;
    uint8_t key[];
};

struct cluster {
    /* set by cluster_new, read-only after */
    char host[CONFIG_ADDR_LEN];
    int port;                          /* 0: host is a unix socket path */
    char node[64];
    uint8_t node_len;
    uint64_t instance;
    char password[128];
    char prefix[64];
    double backoff_max;
    struct stats_registry *reg;
    int nreactors;
    struct mailbox *const *boxes;
    struct backplane bp;
    /* the thread */
    pthread_t thread;
    bool started;
    struct ev_loop *loop;
    struct mailbox mb;                 /* any thread posts; the link takes */
    ev_io mb_w;
    _Atomic bool up;                   /* the link writes, anyone reads */
    /* the link's thread only */
    redisAsyncContext *pub, *sub;
    bool pub_ready, sub_ready, stopping;
    ev_timer retry;
    double backoff;
    uint64_t rng;
    uint32_t pending;
    struct interest **buckets;
    uint32_t nbuckets, nkeys;
};

static void cstat_add(struct cluster *c, enum stats_cluster_id id, int64_t n)
{
    atomic_fetch_add_explicit(&c->reg->cluster_v[id], (uint64_t)n, memory_order_relaxed);
}

static void cstat_set(struct cluster *c, enum stats_cluster_id id, uint64_t v)
{
    atomic_store_explicit(&c->reg->cluster_v[id], v, memory_order_relaxed);
}

/* ---- the interest table ---- */

static uint64_t key_hash(char kind, const uint8_t *k, size_t n)
{
    uint64_t h = 1469598103934665603ULL ^ (uint8_t)kind;
    for (size_t i = 0; i < n; i++)
        h = (h ^ k[i]) * 1099511628211ULL;
    return h;
}

static struct interest **interest_slot(struct cluster *c, char kind, const uint8_t *k, size_t n)
{
    if (!c->nbuckets)
        return NULL;
    struct interest **pp = &c->buckets[key_hash(kind, k, n) & (c->nbuckets - 1)];
    while (*pp && !((*pp)->kind == kind && (*pp)->len == n && memcmp((*pp)->key, k, n) == 0))
        pp = &(*pp)->next;
    return pp;
}

static int interest_grow(struct cluster *c)
{
    uint32_t n = c->nbuckets ? c->nbuckets * 2 : 64;
    struct interest **b = calloc(n, sizeof *b);
    if (!b)
        return -ENOMEM;
    for (uint32_t i = 0; i < c->nbuckets; i++)
        for (struct interest *e = c->buckets[i], *next; e; e = next) {
            next = e->next;
            struct interest **head = &b[key_hash(e->kind, e->key, e->len) & (n - 1)];
            e->next = *head;
            *head = e;
        }
    free(c->buckets);
    c->buckets = b;
    c->nbuckets = n;
    return 0;
}

/* ---- channels and messages ---- */

static size_t channel_of(const struct cluster *c, char kind, const uint8_t *k, size_t n,
                         char out[CHANNEL_MAX])
{
    size_t p = strlen(c->prefix);
    memcpy(out, c->prefix, p);
    out[p++] = ':';
    out[p++] = kind;
    out[p++] = ':';
    memcpy(out + p, k, n);
    return p + n;
}

static void message_cb(redisAsyncContext *ac, void *r, void *priv);

static void subscribe(struct cluster *c, const struct interest *e, bool on)
{
    char ch[CHANNEL_MAX];
    const char *argv[2] = {on ? "SUBSCRIBE" : "UNSUBSCRIBE", ch};
    size_t lens[2] = {strlen(argv[0]), channel_of(c, e->kind, e->key, e->len, ch)};
    /* Each channel's messages come to message_cb (hiredis keeps a callback
     * per subscribed channel). */
    redisAsyncCommandArgv(c->sub, on ? message_cb : NULL, NULL, 2, argv, lens);
}

/* ---- the link's state ---- */

static void set_up(struct cluster *c)
{
    bool up = c->pub_ready && c->sub_ready;
    if (up != atomic_load(&c->up)) {
        if (up)
            log_info("cluster: node %s connected to the Redis backplane at %s", c->node, c->host);
        else
            log_warn("cluster: the Redis backplane at %s is unreachable; delivering locally only",
                     c->host);
    }
    atomic_store(&c->up, up);
    cstat_set(c, STATS_CLUSTER_UP, up);
    if (up)
        c->backoff = 0;
}

static void schedule_retry(struct cluster *c)
{
    if (c->stopping || ev_is_active(&c->retry))
        return;
    c->backoff = c->backoff > 0 ? c->backoff * 2 : BACKOFF_MIN;
    if (c->backoff > c->backoff_max)
        c->backoff = c->backoff_max;
    c->rng ^= c->rng << 13, c->rng ^= c->rng >> 7, c->rng ^= c->rng << 17;
    double jitter = (double)(c->rng >> 11) / 9007199254740992.0; /* [0, 1) */
    ev_timer_set(&c->retry, 0.01 + c->backoff * jitter, 0.);     /* full jitter */
    ev_timer_start(c->loop, &c->retry);
}

static void link_connect(struct cluster *c, bool sub);

static void link_ready(struct cluster *c, redisAsyncContext *ac)
{
    if (ac == c->pub) {
        c->pub_ready = true;
    } else if (ac == c->sub) {
        c->sub_ready = true;
        uint64_t n = 0;
        for (uint32_t i = 0; i < c->nbuckets; i++)
            for (const struct interest *e = c->buckets[i]; e; e = e->next, n++)
                subscribe(c, e, true);
        cstat_set(c, STATS_CLUSTER_CHANNELS, n);
    }
    set_up(c);
}

static void auth_cb(redisAsyncContext *ac, void *r, void *priv)
{
    (void)priv;
    struct cluster *c = ac->data;
    const redisReply *reply = r;
    if (!reply || reply->type == REDIS_REPLY_ERROR) {
        log_warn("cluster: Redis refused the password: %s",
                 reply && reply->str ? reply->str : "no answer");
        if (reply)
            redisAsyncDisconnect(ac);
        return;
    }
    link_ready(c, ac);
}

static void connect_cb(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)(uintptr_t)cac;
    struct cluster *c = ac->data;
    if (status != REDIS_OK) { /* hiredis frees the context after this */
        if (ac == c->pub)
            c->pub = NULL;
        else if (ac == c->sub)
            c->sub = NULL;
        schedule_retry(c);
        return;
    }
    if (c->password[0])
        redisAsyncCommand(ac, auth_cb, NULL, "AUTH %s", c->password);
    else
        link_ready(c, ac);
}

static void disconnect_cb(const redisAsyncContext *cac, int status)
{
    (void)status;
    struct cluster *c = cac->data;
    if (cac == c->pub) {
        c->pub = NULL;
        c->pub_ready = false;
    } else if (cac == c->sub) {
        c->sub = NULL;
        c->sub_ready = false;
        cstat_set(c, STATS_CLUSTER_CHANNELS, 0);
    }
    set_up(c);
    schedule_retry(c);
}

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct cluster *c = w->data;
    if (!c->pub)
        link_connect(c, false);
    if (!c->sub)
        link_connect(c, true);
}

/* ---- what other nodes publish ---- */

static void remote_visit(struct fanout *f, const struct pipeline_env *env)
{
    char kind = (char)f->data[0];
    size_t klen = f->data[1];
    struct pubsub_frames frames;
    proto_msg_frames_view(f->data + 2 + klen, &frames);
    frames.owner = &f->ref;
    uint32_t skipped;
    struct pubsub *ps = kind == BACKPLANE_TOPIC ? env->pubsub : env->identities;
    uint32_t n = pubsub_deliver(ps, f->data + 2, klen, &frames, env->cfg->out_high_water,
                                &skipped);
    stats_add(env->stats, kind == BACKPLANE_TOPIC ? STATS_MESSAGES_DELIVERED : STATS_DELIVERS, n);
    stats_add(env->stats, kind == BACKPLANE_TOPIC ? STATS_MESSAGES_DROPPED : STATS_DELIVERS_DROPPED,
              skipped);
    stats_add(env->stats, STATS_FRAMES_OUT, n);
}

static void remote_done(struct fanout *f, const struct pipeline_env *env)
{
    (void)f;
    (void)env;
}

static const struct fanout_ops remote_ops = {.visit = remote_visit, .done = remote_done};

/* A message on a subscribed channel: every reactor delivers it. */
static void message_cb(redisAsyncContext *ac, void *r, void *priv)
{
    (void)priv;
    struct cluster *c = ac->data;
    const redisReply *reply = r;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        strcmp(reply->element[0]->str, "message") != 0)
        return; /* subscribe and unsubscribe confirmations */
    const redisReply *ch = reply->element[1], *m = reply->element[2];
    size_t p = strlen(c->prefix);
    if (ch->type != REDIS_REPLY_STRING || m->type != REDIS_REPLY_STRING || ch->len < p + 4 ||
        ch->len > p + 3 + KEY_MAX || memcmp(ch->str, c->prefix, p) != 0 || ch->str[p] != ':' ||
        ch->str[p + 2] != ':' || (ch->str[p + 1] != BACKPLANE_TOPIC &&
                                  ch->str[p + 1] != BACKPLANE_IDENTITY))
        return;
    char kind = ch->str[p + 1];
    const uint8_t *key = (const uint8_t *)ch->str + p + 3;
    size_t klen = ch->len - p - 3;
    const uint8_t *b = (const uint8_t *)m->str;
    if (m->len < 2 || b[0] != MSG_VERSION_BYTE || m->len < 2u + b[1] + 8u)
        return;
    size_t at = 2u + b[1];
    uint64_t inst;
    memcpy(&inst, b + at, 8);
    if (inst == c->instance)
        return; /* our own: delivered here when it was sent */
    const uint8_t *payload = b + at + 8;
    size_t len = m->len - at - 8;
    struct proto_msg_frames fr = {0};
    size_t size = 2 + klen + proto_msg_frames_size(&fr, len);
    struct fanout *f = fanout_new(&remote_ops, c->nreactors, c->boxes, 0, 0, 0, NULL, size, false,
                                  NULL);
    if (!f)
        return;
    f->data[0] = (uint8_t)kind;
    f->data[1] = (uint8_t)klen;
    memcpy(f->data + 2, key, klen);
    uint8_t *dst = proto_msg_frames_write(f->data + 2 + klen,
                                          kind == BACKPLANE_TOPIC ? MSG_CMD_MESSAGE : MSG_CMD_DELIVER,
                                          &fr, len);
    memcpy(dst, payload, len);
    cstat_add(c, STATS_CLUSTER_RECEIVED, 1);
    fanout_start(f);
}

static void link_connect(struct cluster *c, bool sub)
{
    cstat_add(c, STATS_CLUSTER_CONNECTS, 1);
    redisAsyncContext *ac = c->port ? redisAsyncConnect(c->host, c->port)
                                    : redisAsyncConnectUnix(c->host);
    if (!ac || ac->err) {
        if (ac)
            redisAsyncFree(ac);
        schedule_retry(c);
        return;
    }
    ac->data = c;
    redisLibevAttach(c->loop, ac);
    redisAsyncSetConnectCallback(ac, connect_cb);
    redisAsyncSetDisconnectCallback(ac, disconnect_cb);
    if (sub)
        c->sub = ac;
    else
        c->pub = ac;
}

/* ---- the reactors' requests ---- */

struct interest_item {
    struct mailbox_item item;
    char kind;
    bool held;
    uint8_t len;
    uint8_t key[KEY_MAX];
};

static void interest_run(struct mailbox_item *it, void *ctx)
{
    struct cluster *c = ctx;
    struct interest_item *m = (struct interest_item *)it;
    if (c->nkeys >= c->nbuckets && interest_grow(c) < 0) {
        free(m);
        return;
    }
    struct interest **pp = interest_slot(c, m->kind, m->key, m->len);
    struct interest *e = *pp;
    if (m->held) {
        if (!e) {
            e = calloc(1, sizeof *e + m->len);
            if (!e) {
                free(m);
                return;
            }
            e->kind = m->kind;
            e->len = m->len;
            memcpy(e->key, m->key, m->len);
            *pp = e;
            c->nkeys++;
        }
        if (e->holders++ == 0 && c->sub_ready) {
            subscribe(c, e, true);
            cstat_add(c, STATS_CLUSTER_CHANNELS, 1);
        }
    } else if (e && --e->holders == 0) {
        if (c->sub_ready) {
            subscribe(c, e, false);
            cstat_add(c, STATS_CLUSTER_CHANNELS, -1);
        }
        *pp = e->next;
        free(e);
        c->nkeys--;
    }
    free(m);
}

struct publish_item {
    struct mailbox_item item;
    char kind;
    uint8_t klen;
    uint8_t key[KEY_MAX];
    struct backplane_reply *reply;
    size_t len;
    uint8_t payload[];
};

/* Tells the sender's reactor how many other nodes a DIRECT reached. */
static void answer(struct backplane_reply *reply, uint32_t nodes)
{
    if (!reply)
        return;
    reply->nodes = nodes;
    mailbox_post(reply->box, &reply->item);
}

struct sent {
    struct backplane_reply *reply;
    bool self;                         /* this node subscribes to the channel too */
};

/* Redis answered a PUBLISH, or the link went with it unanswered (reply
 * NULL): only an answer counts it as published; a lost one is dropped. */
static void published_cb(redisAsyncContext *ac, void *r, void *priv)
{
    struct cluster *c = ac->data;
    const redisReply *reply = r;
    struct sent *s = priv;
    c->pending--;
    bool ok = reply && reply->type == REDIS_REPLY_INTEGER;
    cstat_add(c, ok ? STATS_CLUSTER_PUBLISHED : STATS_CLUSTER_DROPPED, 1);
    uint32_t n = ok && reply->integer > 0 ? (uint32_t)reply->integer : 0;
    if (s) {
        answer(s->reply, n > 0 && s->self ? n - 1 : n);
        free(s);
    }
}

static void publish_run(struct mailbox_item *it, void *ctx)
{
    struct cluster *c = ctx;
    struct publish_item *m = (struct publish_item *)it;
    if (!c->pub_ready || c->pending >= PENDING_MAX) {
        cstat_add(c, STATS_CLUSTER_DROPPED, 1);
        answer(m->reply, 0);
        free(m);
        return;
    }
    char ch[CHANNEL_MAX];
    size_t chlen = channel_of(c, m->kind, m->key, m->klen, ch);
    size_t blen = 2 + c->node_len + 8 + m->len;
    uint8_t *body = malloc(blen);
    struct sent *s = m->reply ? malloc(sizeof *s) : NULL;
    if (!body || (m->reply && !s)) {
        free(body);
        free(s);
        cstat_add(c, STATS_CLUSTER_DROPPED, 1);
        answer(m->reply, 0);
        free(m);
        return;
    }
    body[0] = MSG_VERSION_BYTE;
    body[1] = c->node_len;
    memcpy(body + 2, c->node, c->node_len);
    memcpy(body + 2 + c->node_len, &c->instance, 8);
    memcpy(body + 2 + c->node_len + 8, m->payload, m->len);
    if (s) {
        struct interest **pp = interest_slot(c, m->kind, m->key, m->klen);
        s->reply = m->reply;
        s->self = c->sub_ready && pp && *pp;
    }
    const char *argv[3] = {"PUBLISH", ch, (const char *)body};
    size_t lens[3] = {7, chlen, blen};
    if (redisAsyncCommandArgv(c->pub, published_cb, s, 3, argv, lens) == REDIS_OK) {
        c->pending++; /* counted when Redis answers (published_cb) */
    } else {
        cstat_add(c, STATS_CLUSTER_DROPPED, 1);
        answer(m->reply, 0);
        free(s);
    }
    free(body);
    free(m);
}

static void publish_drop(struct mailbox_item *it)
{
    struct publish_item *m = (struct publish_item *)it;
    answer(m->reply, 0);
    free(m);
}

static void stop_run(struct mailbox_item *it, void *ctx)
{
    (void)it;
    struct cluster *c = ctx;
    c->stopping = true;
    ev_timer_stop(c->loop, &c->retry);
    /* Frees each link at once: pending callbacks get NULL (a DIRECT waiting
     * on one hears 0), then the disconnect callback. */
    if (c->pub)
        redisAsyncFree(c->pub);
    if (c->sub)
        redisAsyncFree(c->sub);
    ev_break(c->loop, EVBREAK_ALL);
}

static struct mailbox_item stop_item = {.run = stop_run};

/* ---- the backplane calls (any reactor thread) ---- */

static void interest_drop(struct mailbox_item *it) { free(it); }

static void bp_interest(void *ctx, char kind, const uint8_t *key, size_t len, bool held)
{
    struct cluster *c = ctx;
    struct interest_item *m = malloc(sizeof *m);
    if (!m || len == 0 || len > KEY_MAX) {
        free(m);
        return;
    }
    m->item = (struct mailbox_item){.run = interest_run, .drop = interest_drop};
    m->kind = kind;
    m->held = held;
    m->len = (uint8_t)len;
    memcpy(m->key, key, len);
    mailbox_post(&c->mb, &m->item);
}

static void bp_publish(void *ctx, char kind, const uint8_t *key, size_t klen,
                       const uint8_t *payload, size_t len, struct backplane_reply *reply)
{
    struct cluster *c = ctx;
    struct publish_item *m = klen && klen <= KEY_MAX ? malloc(sizeof *m + len) : NULL;
    if (!m) {
        cstat_add(c, STATS_CLUSTER_DROPPED, 1);
        answer(reply, 0);
        return;
    }
    m->item = (struct mailbox_item){.run = publish_run, .drop = publish_drop};
    m->kind = kind;
    m->klen = (uint8_t)klen;
    memcpy(m->key, key, klen);
    m->reply = reply;
    m->len = len;
    memcpy(m->payload, payload, len);
    mailbox_post(&c->mb, &m->item);
}

static bool bp_up(void *ctx) { return atomic_load(&((struct cluster *)ctx)->up); }

static const struct backplane_ops bp_ops = {
    .interest = bp_interest, .publish = bp_publish, .up = bp_up};

/* ---- life ---- */

static void mailbox_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct cluster *c = w->data;
    mailbox_run(&c->mb, c);
}

static void *cluster_main(void *arg)
{
    struct cluster *c = arg;
    pthread_setname_np(pthread_self(), "msgd-cluster");
    link_connect(c, false);
    link_connect(c, true);
    ev_run(c->loop, 0);
    return NULL;
}

struct cluster *cluster_new(const struct config *cfg, struct stats_registry *reg, int nreactors,
                            struct mailbox *const *boxes, char *err, size_t errlen)
{
    struct cluster *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    const char *a = cfg->cluster_redis;
    if (strncmp(a, "unix:", 5) == 0) {
        snprintf(c->host, sizeof c->host, "%s", a + 5);
    } else {
        const char *colon = strrchr(a, ':');
        size_t hl = colon ? (size_t)(colon - a) : 0;
        if (hl >= 2 && a[0] == '[' && a[hl - 1] == ']')
            snprintf(c->host, sizeof c->host, "%.*s", (int)hl - 2, a + 1);
        else
            snprintf(c->host, sizeof c->host, "%.*s", (int)hl, a);
        if (strcmp(c->host, "localhost") == 0)
            snprintf(c->host, sizeof c->host, "127.0.0.1");
        c->port = colon ? atoi(colon + 1) : 0;
        if (c->port <= 0) {
            snprintf(err, errlen, "[cluster] redis %s: no port", a);
            free(c);
            return NULL;
        }
    }
    if (cfg->cluster_node[0])
        snprintf(c->node, sizeof c->node, "%s", cfg->cluster_node);
    else if (gethostname(c->node, sizeof c->node - 1) < 0)
        snprintf(c->node, sizeof c->node, "msgd");
    c->node_len = (uint8_t)strlen(c->node);
    if (getrandom(&c->instance, sizeof c->instance, 0) != sizeof c->instance)
        c->instance = ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)c;
    c->rng = c->instance | 1;
    snprintf(c->password, sizeof c->password, "%s", cfg->cluster_password);
    snprintf(c->prefix, sizeof c->prefix, "%s", cfg->cluster_prefix);
    c->backoff_max = (double)cfg->cluster_reconnect_ms / 1000.0;
    c->reg = reg;
    c->nreactors = nreactors;
    c->boxes = boxes;
    c->bp = (struct backplane){.ops = &bp_ops, .ctx = c};
    reg->cluster = true;
    c->loop = ev_loop_new(EVBACKEND_EPOLL | EVFLAG_NOENV);
    int rc = c->loop ? mailbox_init(&c->mb) : -ENOMEM;
    if (rc < 0) {
        snprintf(err, errlen, "cluster: %s", strerror(-rc));
        if (c->loop)
            ev_loop_destroy(c->loop);
        free(c);
        return NULL;
    }
    ev_io_init(&c->mb_w, mailbox_cb, c->mb.efd, EV_READ);
    c->mb_w.data = c;
    ev_io_start(c->loop, &c->mb_w);
    ev_init(&c->retry, retry_cb);
    c->retry.data = c;
    return c;
}

const struct backplane *cluster_backplane(struct cluster *c) { return &c->bp; }

int cluster_start(struct cluster *c)
{
    int rc = thread_start(&c->thread, cluster_main, c);
    if (rc != 0)
        return -rc;
    c->started = true;
    return 0;
}

bool cluster_is_up(const struct cluster *c) { return atomic_load(&c->up); }

void cluster_free(struct cluster *c)
{
    if (!c)
        return;
    if (c->started) {
        mailbox_post(&c->mb, &stop_item);
        pthread_join(c->thread, NULL);
    }
    ev_io_stop(c->loop, &c->mb_w);
    mailbox_destroy(&c->mb); /* drops what came after the stop */
    for (uint32_t i = 0; i < c->nbuckets; i++)
        for (struct interest *e = c->buckets[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    free(c->buckets);
    ev_loop_destroy(c->loop);
    free(c);
}
