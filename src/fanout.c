/* fanout: one request visiting every reactor, with a tally and a report back
 * to its origin. */
#include "fanout.h"

#include <stdlib.h>
#include <string.h>

struct fanout *fanout_new(enum fanout_kind kind, int nreactors, struct mailbox *const *boxes,
                          int origin, uint64_t conn_id, uint32_t seq, const void *data,
                          size_t len)
{
    size_t visits = sizeof(struct fanout_item) * (size_t)nreactors;
    size_t results = kind == FANOUT_CONNS ? sizeof(struct buffer) * (size_t)nreactors : 0;
    struct fanout *f = calloc(1, sizeof *f + visits + results + len);
    if (!f)
        return NULL;
    f->kind = kind;
    f->nreactors = nreactors;
    f->boxes = boxes;
    f->origin = origin;
    f->conn_id = conn_id;
    f->seq = seq;
    f->visits = (struct fanout_item *)(f + 1);
    f->results = results ? (struct buffer *)((char *)f->visits + visits) : NULL;
    f->data = (uint8_t *)f->visits + visits + results;
    f->len = len;
    if (data && len)
        memcpy(f->data, data, len);
    atomic_init(&f->pending, (uint32_t)nreactors);
    atomic_init(&f->refs, (uint32_t)nreactors + 1);
    atomic_init(&f->count, 0);
    return f;
}

void fanout_start(struct fanout *f)
{
    for (int i = 0; i < f->nreactors; i++) {
        f->visits[i].item.kind = FANOUT_MSG_VISIT;
        f->visits[i].f = f;
        mailbox_post(f->boxes[i], &f->visits[i].item);
    }
}

void fanout_visited(struct fanout *f)
{
    if (atomic_fetch_sub_explicit(&f->pending, 1, memory_order_acq_rel) == 1) {
        f->done.item.kind = FANOUT_MSG_DONE;
        f->done.f = f;
        mailbox_post(f->boxes[f->origin], &f->done.item);
    }
}

void fanout_abandon_visit(struct fanout *f)
{
    if (atomic_fetch_sub_explicit(&f->pending, 1, memory_order_acq_rel) == 1)
        fanout_release(f); /* the DONE item's reference */
}

void fanout_release(struct fanout *f)
{
    if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (f->results)
        for (int i = 0; i < f->nreactors; i++)
            buffer_free(&f->results[i]);
    free(f);
}

struct fanout_reply *fanout_reply_new(uint64_t conn_id, uint32_t seq)
{
    struct fanout_reply *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->item.kind = FANOUT_MSG_REPLY;
    r->conn_id = conn_id;
    r->seq = seq;
    return r;
}

void fanout_reply_free(struct fanout_reply *r)
{
    if (!r)
        return;
    buffer_free(&r->bytes);
    free(r);
}
