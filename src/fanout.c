/* fanout: one request visiting every reactor, with a tally and a report back
 * to its origin. */
#include "fanout.h"

#include <stdlib.h>
#include <string.h>

/* The last reference went: the memory goes back to home when this is its
 * thread (the usual case: the report runs last, on the origin), else to the
 * system. */
static void fanout_release(struct outq_ref *r)
{
    struct fanout *f = (struct fanout *)((char *)r - offsetof(struct fanout, ref));
    if (f->results)
        for (int i = 0; i < f->nreactors; i++)
            buffer_free(&f->results[i]);
    struct buffer mem = f->mem; /* f lives in it */
    if (f->home && pthread_equal(f->home_thread, pthread_self()))
        buffer_pool_put(f->home, &mem);
    buffer_free(&mem);
}

static void release(struct fanout *f) { outq_ref_put(&f->ref); }

static void done_run(struct mailbox_item *it, void *ctx)
{
    struct fanout *f = ((struct fanout_item *)it)->f;
    f->ops->done(f, ctx);
    release(f); /* the last item: the visits released theirs first */
}

static void done_drop(struct mailbox_item *it)
{
    release(((struct fanout_item *)it)->f);
}

/* A reactor finished its visit: the last one posts the report to the origin. */
static void visited(struct fanout *f)
{
    if (atomic_fetch_sub_explicit(&f->pending, 1, memory_order_acq_rel) == 1) {
        f->done.item.run = done_run;
        f->done.item.drop = done_drop;
        f->done.f = f;
        mailbox_post(f->boxes[f->origin], &f->done.item);
    }
}

/* The visit's reference goes before the count: the report, posted by the
 * last count, then holds the last reference, so the memory is given back on
 * the origin reactor, to its pool. */
static void visit(struct fanout *f, const struct pipeline_env *env)
{
    f->ops->visit(f, env);
    release(f);
    visited(f);
}

static void visit_run(struct mailbox_item *it, void *ctx)
{
    visit(((struct fanout_item *)it)->f, ctx);
}

/* A visit destroyed unhandled (shutdown): it counts as visited without
 * posting anything, and drops the report that will never come. */
static void visit_drop(struct mailbox_item *it)
{
    struct fanout *f = ((struct fanout_item *)it)->f;
    if (atomic_fetch_sub_explicit(&f->pending, 1, memory_order_acq_rel) == 1)
        release(f); /* the report's reference */
    release(f);
}

struct fanout *fanout_new(const struct fanout_ops *ops, int nreactors,
                          struct mailbox *const *boxes, int origin, uint64_t conn_id,
                          uint32_t seq, const void *data, size_t len, bool with_results,
                          struct buffer_pool *home)
{
    size_t visits = sizeof(struct fanout_item) * (size_t)nreactors;
    size_t results = with_results ? sizeof(struct buffer) * (size_t)nreactors : 0;
    struct buffer mem = BUFFER_INIT;
    if (buffer_pool_get_fit(home, &mem, sizeof(struct fanout) + visits + results + len) < 0)
        return NULL;
    struct fanout *f = (struct fanout *)(void *)(mem.data + mem.wpos);
    memset(f, 0, sizeof *f + visits + results);
    f->mem = mem;
    f->home = home;
    f->ops = ops;
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
    outq_ref_init(&f->ref, (uint32_t)nreactors + 1, fanout_release);
    if (home)
        f->home_thread = pthread_self();
    atomic_init(&f->count, 0);
    return f;
}

/* Fills in the items' callbacks. */
static void items_init(struct fanout *f)
{
    for (int i = 0; i < f->nreactors; i++) {
        f->visits[i].item.run = visit_run;
        f->visits[i].item.drop = visit_drop;
        f->visits[i].f = f;
    }
}

void fanout_start_here(struct fanout *f, const struct pipeline_env *here)
{
    /* f outlives this call: its report, which holds a reference, can only
     * run later on this thread. */
    items_init(f);
    for (int i = 0; i < f->nreactors; i++)
        if (i != f->origin)
            mailbox_post(f->boxes[i], &f->visits[i].item);
    visit(f, here);
}

uint64_t fanout_run_alone(struct fanout *f, const struct pipeline_env *here)
{
    f->ops->visit(f, here);
    uint64_t count = atomic_load_explicit(&f->count, memory_order_relaxed);
    release(f); /* its visit's */
    release(f); /* and its report's */
    return count;
}

void fanout_start(struct fanout *f)
{
    /* Once the last item is posted f may be gone (every visit run and the
     * report done, when the caller is not one of the reactors): only locals
     * are read after a post. */
    int n = f->nreactors;
    struct mailbox *const *boxes = f->boxes;
    struct fanout_item *visits = f->visits;
    items_init(f);
    for (int i = 0; i < n; i++)
        mailbox_post(boxes[i], &visits[i].item);
}
