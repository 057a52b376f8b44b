/* pipeline: output encoding for one connection, with reply slots that keep
 * replies in request order while worker jobs are out. */
#include "pipeline.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "latency.h"
#include "stats.h"

/* The reactor's pool of emptied buffers, or NULL (unit tests run without). */
static struct buffer_pool *pool_of(const struct pipeline *pl)
{
    return pl->env ? pl->env->bufs : NULL;
}

/* The largest output buffer made beforehand (its capacity). A burst of
 * pushes grows its buffer to about CONN_WRITE_EARLY before it is written;
 * a bigger buffer was one big frame, sized for it alone, and a connection
 * that once sent 4 MiB should not take 8 MiB for each small reply after. */
#define OUT_WANT_MAX ((size_t)256 * 1024)

/* What a new output buffer should hold: as much as the last one did, up to
 * OUT_WANT_MAX. */
static size_t out_want(const struct pipeline *pl)
{
    if (!pl->out_class)
        return 0;
    size_t cap = buffer_class_cap(pl->out_class);
    return (cap < OUT_WANT_MAX ? cap : OUT_WANT_MAX) - BUFFER_PREPEND;
}

/* Appends two pieces to b, with memory from pool (room for want bytes when
 * b has none yet); returns 0 or -ENOMEM. */
static int append2(struct buffer_pool *pool, struct buffer *b, const void *a, size_t an,
                   const void *p, size_t pn, size_t want)
{
    if (an + pn == 0)
        return 0;
    if (b->data == NULL && want < an + pn)
        want = an + pn;
    if (buffer_pool_reserve(pool, b, b->data ? an + pn : want) < 0)
        return -ENOMEM;
    memcpy(buffer_tail(b), a, an);
    if (pn)
        memcpy(buffer_tail(b) + an, p, pn);
    buffer_commit(b, an + pn);
    return 0;
}

static struct pipeline_slot *slot_append(struct pipeline *pl, bool waiting)
{
    struct pipeline_slot *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->waiting = waiting;
    s->codec = pl->codec;
    if (pl->slots_tail)
        pl->slots_tail->next = s;
    else
        pl->slots_head = s;
    pl->slots_tail = s;
    return s;
}

void pipeline_write2(struct pipeline *pl, const void *a, size_t an, const void *b, size_t bn)
{
    struct buffer *dst = &pl->out;
    if (pl->slots_head) {
        /* A job is out: hold this reply behind it. */
        struct pipeline_slot *s = pl->slots_tail;
        if (s->waiting && (s = slot_append(pl, false)) == NULL) {
            pl->flags |= PIPELINE_FAILED;
            return;
        }
        dst = &s->bytes;
        pl->held_bytes += an + bn;
    }
    if (append2(pool_of(pl), dst, a, an, b, bn, dst == &pl->out ? out_want(pl) : 0) < 0)
        pl->flags |= PIPELINE_FAILED;
}

void pipeline_write(struct pipeline *pl, const void *p, size_t n)
{
    pipeline_write2(pl, p, n, NULL, 0);
}

void pipeline_push2(struct pipeline *pl, const void *a, size_t an, const void *b, size_t bn)
{
    if (append2(pool_of(pl), &pl->out, a, an, b, bn, out_want(pl)) < 0)
        pl->flags |= PIPELINE_FAILED;
}

void pipeline_push_data2(struct pipeline *pl, const void *a, size_t an, const void *b, size_t bn)
{
    if (pl->push_holds)
        pipeline_write2(pl, a, an, b, bn); /* behind the held push */
    else
        pipeline_push2(pl, a, an, b, bn);
}

void pipeline_push_shared(struct pipeline *pl, struct outq_ref *ref, const void *p, size_t len)
{
    if (pl->push_holds || len < OUTQ_SHARE_MIN || outq_push(&pl->outq, &pl->out, ref, p, len) < 0)
        pipeline_push_data2(pl, p, len, NULL, 0);
}

long pipeline_reserve(struct pipeline *pl, uint64_t t0_ns, int lat_idx)
{
    struct pipeline_slot *s = slot_append(pl, true);
    if (!s)
        return -ENOMEM;
    s->t0_ns = t0_ns;
    s->lat_idx = lat_idx;
    s->seq = pl->next_seq++;
    pl->jobs_pending++;
    return (long)s->seq;
}

long pipeline_reserve_push(struct pipeline *pl)
{
    long seq = pipeline_reserve(pl, 0, -1);
    if (seq >= 0) {
        pl->slots_tail->push = true;
        pl->push_holds++;
    }
    return seq;
}

static void slot_free(struct pipeline *pl, struct pipeline_slot *s)
{
    buffer_pool_put(pool_of(pl), &s->bytes);
    buffer_free(&s->bytes);
    free(s);
}

void pipeline_unreserve(struct pipeline *pl, uint32_t seq)
{
    struct pipeline_slot *s = pl->slots_tail, *prev = NULL;
    if (!s || !s->waiting || s->seq != seq)
        return;
    for (struct pipeline_slot *it = pl->slots_head; it != s; it = it->next)
        prev = it;
    if (prev)
        prev->next = NULL;
    else
        pl->slots_head = NULL;
    pl->slots_tail = prev;
    pl->jobs_pending--;
    if (s->push)
        pl->push_holds--;
    slot_free(pl, s);
}

/* Moves the held replies at the head that are ready to out, in order. */
static void drain_ready(struct pipeline *pl)
{
    struct pipeline_slot *s;
    while ((s = pl->slots_head) != NULL && !s->waiting) {
        size_t n = buffer_readable(&s->bytes);
        if (buffer_readable(&pl->out) == 0 && pl->out.cap < s->bytes.cap) {
            struct buffer t = pl->out; /* take the slot's buffer as is */
            pl->out = s->bytes;
            s->bytes = t;
        } else if (n > 0 && buffer_append(&pl->out, buffer_peek(&s->bytes), n) < 0) {
            pl->flags |= PIPELINE_FAILED;
            return;
        }
        pl->held_bytes -= n;
        pl->slots_head = s->next;
        if (!pl->slots_head)
            pl->slots_tail = NULL;
        slot_free(pl, s);
    }
}

int pipeline_complete(struct pipeline *pl, uint32_t seq, struct buffer *reply,
                      uint64_t *t0_ns, int *lat_idx)
{
    struct pipeline_slot *s = pl->slots_head;
    while (s && !(s->waiting && s->seq == seq))
        s = s->next;
    if (!s)
        return -ENOENT;
    *t0_ns = s->t0_ns;
    *lat_idx = s->lat_idx;
    buffer_free(&s->bytes); /* a job slot holds nothing before its reply */
    s->bytes = *reply;
    *reply = (struct buffer)BUFFER_INIT;
    s->waiting = false;
    pl->jobs_pending--;
    if (s->push)
        pl->push_holds--;
    pl->held_bytes += buffer_readable(&s->bytes);
    drain_ready(pl);
    return 0;
}

unsigned pipeline_slot_codec(const struct pipeline *pl, uint32_t seq)
{
    for (const struct pipeline_slot *s = pl->slots_head; s; s = s->next)
        if (s->waiting && s->seq == seq)
            return s->codec;
    return 0;
}

void pipeline_free(struct pipeline *pl)
{
    while (pl->slots_head) {
        struct pipeline_slot *s = pl->slots_head;
        pl->slots_head = s->next;
        slot_free(pl, s);
    }
    pl->slots_tail = NULL;
    pl->held_bytes = 0;
    pl->jobs_pending = 0;
    pl->push_holds = 0;
    outq_free(&pl->outq);
    buffer_pool_put(pool_of(pl), &pl->out);
    buffer_free(&pl->out);
}

int pipeline_complete_late(const struct pipeline_env *env, uint64_t conn_id, uint32_t seq,
                           struct buffer *reply)
{
    struct pipeline *pl = env->ops->lookup(env->host, conn_id);
    uint64_t t0;
    int idx;
    if (!pl || pipeline_complete(pl, seq, reply, &t0, &idx) < 0) {
        buffer_free(reply);
        return -ENOENT;
    }
    if (idx >= 0)
        latency_record(&env->stats->lat, idx, latency_now_ns() - t0);
    env->ops->kick(pl);
    return 0;
}

static void reply_item_run(struct mailbox_item *it, void *ctx)
{
    struct pipeline_reply_item *r = (struct pipeline_reply_item *)it;
    pipeline_complete_late(ctx, r->conn_id, r->seq, &r->bytes);
    pipeline_reply_item_free(r);
}

static void reply_item_drop(struct mailbox_item *it)
{
    pipeline_reply_item_free((struct pipeline_reply_item *)it);
}

struct pipeline_reply_item *pipeline_reply_item_new(uint64_t conn_id, uint32_t seq)
{
    struct pipeline_reply_item *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->item.run = reply_item_run;
    r->item.drop = reply_item_drop;
    r->conn_id = conn_id;
    r->seq = seq;
    return r;
}

void pipeline_reply_item_free(struct pipeline_reply_item *r)
{
    if (!r)
        return;
    buffer_free(&r->bytes);
    free(r);
}

static _Thread_local const struct pipeline_env *current_env;

void pipeline_env_enter(const struct pipeline_env *env) { current_env = env; }

const struct pipeline_env *pipeline_env_current(void) { return current_env; }
