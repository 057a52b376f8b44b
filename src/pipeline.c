/* pipeline: output encoding for one connection, with reply slots that keep
 * replies in request order while worker jobs are out. */
#include "pipeline.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Appends two pieces to b; returns 0 or -ENOMEM. */
static int append2(struct buffer *b, const void *a, size_t an, const void *p, size_t pn)
{
    if (an + pn == 0)
        return 0;
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

/* True when the n bytes at p lie inside the input being handled. */
static bool in_input(const struct pipeline_through *t, const void *p, size_t n)
{
    uintptr_t b = (uintptr_t)p, lo = (uintptr_t)t->lo, hi = (uintptr_t)t->hi;
    return t->lo != NULL && b >= lo && b <= hi && n <= hi - b;
}

/* Records a reply as the write-through one when it may be: pl's input is
 * being handled, nothing is queued ahead, none is recorded yet, and a bulk
 * big enough lies in the input (b, or a alone). Returns true when recorded. */
static bool through_record(struct pipeline *pl, const void *a, size_t an, const void *b,
                           size_t bn)
{
    struct pipeline_through *t = pipeline_through_of(pl);
    if (t == NULL || t->lo == NULL || pl->slots_head || buffer_readable(&pl->out) > 0 ||
        t->head_len + t->len > 0)
        return false;
    if (bn == 0) { /* one piece: all bulk */
        b = a;
        bn = an;
        an = 0;
    }
    if (bn < PIPELINE_THROUGH_MIN || an > sizeof t->head || !in_input(t, b, bn))
        return false;
    if (an)
        memcpy(t->head, a, an);
    t->head_off = 0;
    t->head_len = an;
    t->data = b;
    t->len = bn;
    return true;
}

static void through_clear(struct pipeline_through *t)
{
    *t = (struct pipeline_through){0};
}

void pipeline_through_begin(struct pipeline *pl, const uint8_t *p, size_t n)
{
    struct pipeline_through *t = pl->env ? pl->env->through : NULL;
    if (t == NULL || p == NULL)
        return;
    through_clear(t); /* whatever an earlier connection left was kept already */
    t->owner = pl;
    t->lo = p;
    t->hi = p + n;
}

void pipeline_through_end(struct pipeline *pl)
{
    struct pipeline_through *t = pipeline_through_of(pl);
    if (t == NULL)
        return;
    t->lo = t->hi = NULL;
    if (t->head_len + t->len == 0)
        through_clear(t);
}

void pipeline_through_sent(struct pipeline *pl, size_t n)
{
    struct pipeline_through *t = pipeline_through_of(pl);
    if (t == NULL)
        return;
    size_t h = n < t->head_len ? n : t->head_len;
    t->head_off += h;
    t->head_len -= h;
    n -= h;
    t->data += n;
    t->len -= n;
}

void pipeline_through_keep(struct pipeline *pl)
{
    struct pipeline_through *t = pipeline_through_of(pl);
    if (t == NULL)
        return;
    size_t n = t->head_len + t->len;
    size_t old = buffer_readable(&pl->out);
    struct buffer b = BUFFER_INIT;
    /* out is empty (the common case): the reply goes into it as it is. */
    struct buffer *dst = old ? &b : &pl->out;
    if (n == 0) {
        /* all sent */
    } else if (append2(dst, t->head + t->head_off, t->head_len, t->data, t->len) < 0 ||
               (old && buffer_append(dst, buffer_peek(&pl->out), old) < 0)) {
        buffer_free(&b);
        pl->flags |= PIPELINE_FAILED;
    } else if (old) {
        buffer_free(&pl->out);
        pl->out = b;
    }
    through_clear(t);
}

void pipeline_write2(struct pipeline *pl, const void *a, size_t an, const void *b, size_t bn)
{
    struct buffer *dst = &pl->out;
    if (through_record(pl, a, an, b, bn))
        return;
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
    if (append2(dst, a, an, b, bn) < 0)
        pl->flags |= PIPELINE_FAILED;
}

void pipeline_write(struct pipeline *pl, const void *p, size_t n)
{
    pipeline_write2(pl, p, n, NULL, 0);
}

void pipeline_push2(struct pipeline *pl, const void *a, size_t an, const void *b, size_t bn)
{
    if (append2(&pl->out, a, an, b, bn) < 0)
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

static void slot_free(struct pipeline_slot *s)
{
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
    slot_free(s);
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
        slot_free(s);
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
        slot_free(s);
    }
    pl->slots_tail = NULL;
    pl->held_bytes = 0;
    pl->jobs_pending = 0;
    struct pipeline_through *t = pipeline_through_of(pl);
    if (t)
        through_clear(t);
    buffer_free(&pl->out);
}
