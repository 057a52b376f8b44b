/* pipeline: output encoding for one connection, with reply slots that keep
 * replies in request order while worker jobs are out. */
#include "pipeline.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The reactor's pool of emptied buffers, or NULL (unit tests run without). */
static struct buffer_pool *pool_of(const struct pipeline *pl)
{
    return pl->env ? pl->env->bufs : NULL;
}

/* Appends two pieces to b, taking memory from pool when b has none; returns
 * 0 or -ENOMEM. */
static int append2(struct buffer_pool *pool, struct buffer *b, const void *a, size_t an,
                   const void *p, size_t pn)
{
    if (an + pn == 0)
        return 0;
    buffer_pool_get(pool, b);
    if (buffer_reserve(b, an + pn) < 0)
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
    if (append2(pool_of(pl), dst, a, an, b, bn) < 0)
        pl->flags |= PIPELINE_FAILED;
}

void pipeline_write(struct pipeline *pl, const void *p, size_t n)
{
    pipeline_write2(pl, p, n, NULL, 0);
}

void pipeline_push2(struct pipeline *pl, const void *a, size_t an, const void *b, size_t bn)
{
    if (append2(pool_of(pl), &pl->out, a, an, b, bn) < 0)
        pl->flags |= PIPELINE_FAILED;
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
    pl->held_bytes += buffer_readable(&s->bytes);
    drain_ready(pl);
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
    buffer_pool_put(pool_of(pl), &pl->out);
    buffer_free(&pl->out);
}
