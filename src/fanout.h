/* fanout: a request that visits every reactor and then reports back to the
 * one it came from, such as a PUBLISH (each reactor delivers to its own
 * subscribers and adds its count) or an admin `conns` (each reactor lists its
 * own connections). What a visit and the report do is the creator's (its
 * struct fanout_ops); this file only carries the request around. One
 * allocation holds the shared payload, the per-reactor mailbox items and
 * results; nothing is copied per reactor. */
#ifndef MSGD_FANOUT_H
#define MSGD_FANOUT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buffer.h"
#include "mailbox.h"
#include "outq.h"

struct fanout;
struct pipeline_env;

struct fanout_ops {
    /* On each reactor's thread in turn, with that reactor's env. */
    void (*visit)(struct fanout *f, const struct pipeline_env *env);
    /* On the origin reactor's thread once every reactor has visited (or
     * been stopped: see fanout_abandon), with its env. */
    void (*done)(struct fanout *f, const struct pipeline_env *env);
};

struct fanout_item {
    struct mailbox_item item;
    struct fanout *f;
};

struct fanout {
    const struct fanout_ops *ops;
    _Atomic uint32_t pending;          /* reactors still to visit */
    struct outq_ref ref;               /* counts the items not yet run or
                                        * dropped, and the receivers' queued
                                        * references to data (outq.h) */
    _Atomic uint64_t count;            /* a tally the visits may add to */
    int nreactors;
    int origin;                        /* the reactor of the asking connection */
    uint64_t conn_id;                  /* the asking connection */
    uint32_t seq;                      /* its reply slot */
    struct mailbox *const *boxes;      /* every reactor's mailbox (not owned) */
    struct fanout_item *visits;        /* nreactors items */
    struct fanout_item done;
    struct buffer *results;            /* with_results: one per reactor, written by it */
    size_t len;                        /* the shared payload */
    uint8_t *data;
    struct buffer mem;                 /* the memory all this lives in */
    struct buffer_pool *home;          /* the origin reactor's pool it goes back to */
    pthread_t home_thread;             /* the thread that owns home */
};

/* Allocates a fan-out over nreactors mailboxes with room for len bytes of
 * payload, a copy of data (or left for the caller to fill when data is
 * NULL), and one result buffer per reactor when with_results. Its memory
 * comes from home, the origin reactor's buffer pool, and goes back there
 * after the report, which runs on the origin reactor: a steady stream of
 * fan-outs allocates nothing; memory a receiver still references (a piece
 * queued to a slow one, outq.h) is given back by the last reference, to the
 * pool on the origin's thread, else to the system. Returns NULL when out of
 * memory. The origin
 * reactor's thread only (home is its); any thread with home NULL (the
 * cluster link's deliveries). */
struct fanout *fanout_new(const struct fanout_ops *ops, int nreactors,
                          struct mailbox *const *boxes, int origin, uint64_t conn_id,
                          uint32_t seq, const void *data, size_t len, bool with_results,
                          struct buffer_pool *home);

/* Posts the visits to every reactor. Ownership passes to the items: the
 * fan-out is freed after the report has run (or every item was dropped).
 * Any thread (the cluster link's uses it). */
void fanout_start(struct fanout *f);

/* fanout_start from the origin reactor's own thread (here is its env): the
 * other reactors' visits are posted first, then this reactor's visit runs at
 * once, here, without a trip through its own mailbox. The report still comes
 * through the mailbox, in a later callback (never inside the caller's). */
void fanout_start_here(struct fanout *f, const struct pipeline_env *here);

/* A fan-out over one reactor, the caller's own: runs its visit now, here,
 * and frees f. The report does not run: the caller answers from what the
 * visit tallied, which is returned (f->count). Origin reactor's thread only,
 * and only when f->nreactors is 1. */
uint64_t fanout_run_alone(struct fanout *f, const struct pipeline_env *here);

#endif
