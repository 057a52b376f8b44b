/* module_runtime: the table of every reactor's mailbox that module calls
 * from any thread post to, and per-reactor module timers named by ids that
 * go stale safely. */
#include "module_runtime.h"

#include <errno.h>
#include <stdio.h>
#include <ev.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "mailbox.h"
#include "module.h"
#include "pipeline.h"

/* ---- the runtime ---- */

struct module_timer {
    ev_timer w;
    struct ev_loop *loop;
    uint64_t id;
    msgd_timer_fn fn;
    void *arg;
    bool firing;                       /* its callback runs now */
    bool cancelled;                    /* stopped inside its callback */
};

struct timer_slot {
    struct module_timer *t;            /* NULL when free */
    uint32_t gen;
    uint32_t next_free;
};

/* One reactor's timers: touched by that reactor's thread only (and by the
 * main thread once the reactor has stopped). */
struct timer_table {
    struct timer_slot *slots;
    uint32_t nslots, free_head;
};

#define NO_SLOT UINT32_MAX
#define TIMER_SLOTS_MAX (1u << 24)
#define TIMER_ID(reactor, slot, gen) ((uint64_t)(reactor) << 56 | (uint64_t)(slot) << 32 | (gen))

static _Atomic int rt_n;                       /* reactors; 0 = closed */
static struct mailbox *const *rt_boxes;        /* written before rt_n is released */
static struct timer_table *rt_timers;          /* rt_timers[i]: reactor i's thread */

int module_runtime_start(int nreactors, struct mailbox *const *boxes)
{
    rt_timers = calloc((size_t)nreactors, sizeof *rt_timers);
    if (!rt_timers)
        return -ENOMEM;
    for (int i = 0; i < nreactors; i++)
        rt_timers[i].free_head = NO_SLOT;
    rt_boxes = boxes;
    atomic_store_explicit(&rt_n, nreactors, memory_order_release);
    return 0;
}

void module_runtime_stop(void)
{
    int n = atomic_exchange(&rt_n, 0);
    for (int i = 0; rt_timers && i < n; i++) {
        struct timer_table *tt = &rt_timers[i];
        for (uint32_t s = 0; s < tt->nslots; s++) {
            struct module_timer *t = tt->slots[s].t;
            if (t) {
                ev_timer_stop(t->loop, &t->w);
                free(t);
            }
        }
        free(tt->slots);
    }
    free(rt_timers);
    rt_timers = NULL;
}

struct mailbox *module_runtime_box(int index)
{
    int n = atomic_load_explicit(&rt_n, memory_order_acquire);
    return index >= 0 && index < n ? rt_boxes[index] : NULL;
}

int msgd_reactors(void) { return atomic_load_explicit(&rt_n, memory_order_acquire); }

/* ---- timers ---- */

static struct timer_table *my_timers(int *reactor)
{
    const struct pipeline_env *env = pipeline_env_current();
    if (!env || !env->loop || !rt_timers || env->reactor >= msgd_reactors())
        return NULL;
    *reactor = env->reactor;
    return &rt_timers[env->reactor];
}

static void timer_release(struct timer_table *tt, struct module_timer *t)
{
    uint32_t s = (uint32_t)(t->id >> 32) & (TIMER_SLOTS_MAX - 1);
    ev_timer_stop(t->loop, &t->w);
    tt->slots[s].t = NULL;
    if (++tt->slots[s].gen == 0)
        tt->slots[s].gen = 1; /* an id is never 0 */
    tt->slots[s].next_free = tt->free_head;
    tt->free_head = s;
    free(t);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct module_timer *t = w->data;
    bool once = w->repeat == 0.;
    t->firing = true;
    t->fn(t->id, t->arg);
    t->firing = false;
    if (once || t->cancelled)
        timer_release(&rt_timers[(int)(t->id >> 56)], t);
}

static struct module_timer *timer_find(struct timer_table *tt, uint64_t id)
{
    uint32_t s = (uint32_t)(id >> 32) & (TIMER_SLOTS_MAX - 1);
    if (s >= tt->nslots || !tt->slots[s].t || tt->slots[s].t->id != id)
        return NULL;
    return tt->slots[s].t;
}

int msgd_timer_start(double after_s, double repeat_s, msgd_timer_fn fn, void *arg, uint64_t *id)
{
    int r;
    struct timer_table *tt = my_timers(&r);
    if (!tt)
        return -EPERM;
    if (!fn || !id || !isfinite(after_s) || !isfinite(repeat_s) || after_s < 0 || repeat_s < 0)
        return -EINVAL;
    if (tt->free_head == NO_SLOT) {
        uint32_t n = tt->nslots ? tt->nslots * 2 : 16;
        struct timer_slot *grown = n <= TIMER_SLOTS_MAX ? realloc(tt->slots, n * sizeof *grown) : NULL;
        if (!grown)
            return -ENOMEM;
        for (uint32_t s = n; s-- > tt->nslots;) {
            grown[s] = (struct timer_slot){.gen = 1, .next_free = tt->free_head};
            tt->free_head = s;
        }
        tt->slots = grown;
        tt->nslots = n;
    }
    struct module_timer *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    uint32_t s = tt->free_head;
    tt->free_head = tt->slots[s].next_free;
    tt->slots[s].t = t;
    t->id = TIMER_ID(r, s, tt->slots[s].gen);
    t->loop = pipeline_env_current()->loop;
    t->fn = fn;
    t->arg = arg;
    ev_timer_init(&t->w, timer_cb, after_s, repeat_s);
    t->w.data = t;
    ev_timer_start(t->loop, &t->w);
    *id = t->id;
    return 0;
}

int msgd_timer_stop(uint64_t id)
{
    int r;
    struct timer_table *tt = my_timers(&r);
    if (!tt || (int)(id >> 56) != r)
        return -EPERM;
    struct module_timer *t = timer_find(tt, id);
    if (!t || t->cancelled)
        return -ENOENT;
    if (t->firing) {
        t->cancelled = true; /* released once its callback returns */
        ev_timer_stop(t->loop, &t->w);
        return 0;
    }
    timer_release(tt, t);
    return 0;
}
