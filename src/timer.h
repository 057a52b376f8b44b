/* timer: heartbeat and idle deadlines for one reactor's connections, after
 * the libev manual's "Be smart about timeouts", fourth strategy: entries sit
 * in lists kept in time order by moving an entry to the tail when its time
 * changes (O(1)), and one ev_timer per reactor is armed for the earliest
 * deadline, so a reactor wakes per deadline batch, not per connection.
 *
 *   idle list: ordered by last receive time; due at  last_rx + idle
 *   ping list: ordered by max(last receive, last PING); due at  that + interval
 *   linger list: closing connections, ordered by when they began to linger;
 *                due at  that + linger (a fixed time)
 *
 * Reactor thread only. */
#ifndef MSGD_TIMER_H
#define MSGD_TIMER_H

#include <ev.h>
#include <stdbool.h>

struct timer_link {
    struct timer_link *prev, *next;    /* NULL when not on a list */
    ev_tstamp at;                      /* the time the list is ordered by */
};

/* A circular list with a sentinel. */
struct timer_list {
    struct timer_link head;
};

/* What a connection embeds. ping is used only by connections that get
 * heartbeats (msg); idle by every connection. */
struct timer_entry {
    struct timer_link idle;
    struct timer_link ping;
    bool wants_ping;
};

struct timer;

/* Called for an entry whose heartbeat is due; the timer has already moved
 * the entry's ping link to the tail. */
typedef void (*timer_ping_fn)(struct timer *t, struct timer_entry *e);
/* Called for an entry silent past idle_timeout, or lingering past the linger
 * time; it must timer_remove(e) (closing the connection does). */
typedef void (*timer_idle_fn)(struct timer *t, struct timer_entry *e);

struct timer {
    struct ev_loop *loop;
    ev_timer watcher;
    struct timer_list idle_list;
    struct timer_list ping_list;
    struct timer_list linger_list;     /* entries whose idle link lingers */
    ev_tstamp linger;                  /* seconds a closing connection may linger */
    timer_idle_fn on_linger;
    ev_tstamp interval;                /* heartbeat, seconds; 0 = off */
    ev_tstamp idle;                    /* idle timeout, seconds; 0 = off */
    ev_tstamp slack;                   /* lateness allowed to batch wake-ups */
    timer_ping_fn on_ping;
    timer_idle_fn on_idle;
    unsigned long wakeups;             /* times the watcher fired */
};

void timer_list_init(struct timer_list *l);
/* Moves (or adds) link to the tail with time at. O(1). */
void timer_list_touch(struct timer_list *l, struct timer_link *link, ev_tstamp at);
/* Takes link off its list (no-op when it is on none). O(1). */
void timer_list_unlink(struct timer_link *link);
/* The oldest link, or NULL when the list is empty. */
struct timer_link *timer_list_first(const struct timer_list *l);

/* Sets up t on loop with intervals in seconds (0 = off). */
void timer_init(struct timer *t, struct ev_loop *loop, ev_tstamp interval, ev_tstamp idle,
                timer_ping_fn on_ping, timer_idle_fn on_idle);

/* Changes the intervals (reload); applies to existing entries at once. */
void timer_set_intervals(struct timer *t, ev_tstamp interval, ev_tstamp idle);

/* Adds a new entry as active now. */
void timer_add(struct timer *t, struct timer_entry *e, bool wants_ping);

/* Records life (bytes received) for e now. O(1). */
void timer_activity(struct timer *t, struct timer_entry *e);

/* Moves e from the heartbeat and idle lists to the linger list: from now on
 * only on_linger, after t->linger seconds, applies to it. */
void timer_linger(struct timer *t, struct timer_entry *e);

/* Takes e off every list. */
void timer_remove(struct timer *t, struct timer_entry *e);

/* Stops the watcher. Entries must have been removed. */
void timer_stop(struct timer *t);

#endif
