/* timer: one ev_timer per reactor over two time-ordered lists (heartbeat and
 * idle), moved to the tail in O(1) on activity. */
#include "timer.h"

#include <stddef.h>

#define TIMER_SLACK_MAX 0.25    /* seconds a deadline may run late to share a wake-up */

void timer_list_init(struct timer_list *l)
{
    l->head.prev = l->head.next = &l->head;
}

void timer_list_unlink(struct timer_link *link)
{
    if (!link->next)
        return;
    link->prev->next = link->next;
    link->next->prev = link->prev;
    link->prev = link->next = NULL;
}

void timer_list_touch(struct timer_list *l, struct timer_link *link, ev_tstamp at)
{
    timer_list_unlink(link);
    link->at = at;
    link->prev = l->head.prev;
    link->next = &l->head;
    l->head.prev->next = link;
    l->head.prev = link;
}

struct timer_link *timer_list_first(const struct timer_list *l)
{
    return l->head.next == &l->head ? NULL : l->head.next;
}

#define ENTRY_OF(link, member) \
    ((struct timer_entry *)((char *)(link) - offsetof(struct timer_entry, member)))

/* Arms the watcher for the earliest deadline, no sooner than slack from now
 * so that deadlines close together share one wake-up. */
static void rearm(struct timer *t)
{
    ev_tstamp due = 0;
    struct timer_link *first;
    if (t->idle > 0 && (first = timer_list_first(&t->idle_list)) != NULL)
        due = first->at + t->idle;
    if (t->interval > 0 && (first = timer_list_first(&t->ping_list)) != NULL &&
        (due == 0 || first->at + t->interval < due))
        due = first->at + t->interval;
    if ((first = timer_list_first(&t->linger_list)) != NULL &&
        (due == 0 || first->at + t->linger < due))
        due = first->at + t->linger;
    if (due == 0) {
        ev_timer_stop(t->loop, &t->watcher);
        return;
    }
    ev_tstamp now = ev_now(t->loop);
    ev_tstamp after = due - now;
    if (after < t->slack)
        after = t->slack;
    /* Re-arm only when it moves the wake-up earlier or the watcher is idle:
     * activity never reschedules (the list head only gets later). */
    if (ev_is_active(&t->watcher) && ev_timer_remaining(t->loop, &t->watcher) <= after)
        return;
    ev_timer_stop(t->loop, &t->watcher);
    ev_timer_set(&t->watcher, after, 0.);
    ev_timer_start(t->loop, &t->watcher);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct timer *t = w->data;
    t->wakeups++;
    ev_tstamp now = ev_now(t->loop);
    struct timer_link *l;
    while (t->idle > 0 && (l = timer_list_first(&t->idle_list)) != NULL && l->at + t->idle <= now)
        t->on_idle(t, ENTRY_OF(l, idle)); /* removes the entry */
    while ((l = timer_list_first(&t->linger_list)) != NULL && l->at + t->linger <= now)
        t->on_linger(t, ENTRY_OF(l, idle)); /* removes the entry */
    /* Each entry's ping link moves to the tail as it is served, so the loop
     * ends at the first entry not yet due. */
    while (t->interval > 0 && (l = timer_list_first(&t->ping_list)) != NULL &&
           l->at + t->interval <= now) {
        timer_list_touch(&t->ping_list, l, now);
        t->on_ping(t, ENTRY_OF(l, ping));
    }
    rearm(t);
}

static ev_tstamp slack_for(ev_tstamp interval, ev_tstamp idle)
{
    ev_tstamp shortest = interval > 0 ? interval : idle;
    ev_tstamp s = shortest / 10;
    return s > TIMER_SLACK_MAX ? TIMER_SLACK_MAX : s;
}

void timer_init(struct timer *t, struct ev_loop *loop, ev_tstamp interval, ev_tstamp idle,
                timer_ping_fn on_ping, timer_idle_fn on_idle)
{
    t->loop = loop;
    timer_list_init(&t->idle_list);
    timer_list_init(&t->ping_list);
    timer_list_init(&t->linger_list);
    t->linger = 2.0;
    t->on_linger = on_idle;
    t->interval = interval;
    t->idle = idle;
    t->slack = slack_for(interval, idle);
    t->on_ping = on_ping;
    t->on_idle = on_idle;
    t->wakeups = 0;
    ev_init(&t->watcher, timer_cb);
    t->watcher.data = t;
}

void timer_set_intervals(struct timer *t, ev_tstamp interval, ev_tstamp idle)
{
    t->interval = interval;
    t->idle = idle;
    t->slack = slack_for(interval, idle);
    ev_timer_stop(t->loop, &t->watcher);
    rearm(t);
}

void timer_add(struct timer *t, struct timer_entry *e, bool wants_ping)
{
    ev_tstamp now = ev_now(t->loop);
    e->idle.prev = e->idle.next = NULL;
    e->ping.prev = e->ping.next = NULL;
    e->wants_ping = wants_ping;
    timer_list_touch(&t->idle_list, &e->idle, now);
    if (wants_ping)
        timer_list_touch(&t->ping_list, &e->ping, now);
    /* The watcher may be armed for a later deadline of the other list (an
     * idle-only entry's), so check; rearm() only ever moves it earlier. */
    rearm(t);
}

void timer_activity(struct timer *t, struct timer_entry *e)
{
    ev_tstamp now = ev_now(t->loop);
    if (e->idle.at == now)
        return; /* already touched this loop turn */
    timer_list_touch(&t->idle_list, &e->idle, now);
    if (e->wants_ping)
        timer_list_touch(&t->ping_list, &e->ping, now);
}

void timer_linger(struct timer *t, struct timer_entry *e)
{
    timer_list_unlink(&e->ping);
    e->wants_ping = false;
    timer_list_touch(&t->linger_list, &e->idle, ev_now(t->loop));
    rearm(t);
}

void timer_remove(struct timer *t, struct timer_entry *e)
{
    (void)t;
    timer_list_unlink(&e->idle);
    timer_list_unlink(&e->ping);
}

void timer_stop(struct timer *t)
{
    ev_timer_stop(t->loop, &t->watcher);
}
