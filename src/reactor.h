/* reactor: a sub-reactor thread with its own libev loop (epoll). It owns its
 * connections (named by 64-bit ids), their slot table and its mailbox; other
 * threads reach it only by posting to that mailbox. */
#ifndef MSGD_REACTOR_H
#define MSGD_REACTOR_H

#include <pthread.h>
#include <stdint.h>

#include "config.h"
#include "conn.h"
#include "conntab.h"
#include "mailbox.h"
#include "pipeline.h"
#include "pubsub.h"
#include "stats.h"
#include "worker.h"

#define REACTOR_MAX 256

struct reactor {
    int index;
    pthread_t thread;
    struct ev_loop *loop;              /* reactor thread only */
    struct mailbox mb;                 /* any thread posts; the reactor takes */
    ev_io mb_watcher;                  /* reactor thread only */
    struct conn_host host;             /* reactor thread only */
    struct config cfg;                 /* the live copy; reactor thread only */
    struct worker_pool pool;           /* its workers; thread-safe API */
    struct pubsub pubsub;              /* its topic table; reactor thread only */
    struct pubsub identities;          /* identity -> its connections here; reactor thread only */
    struct mailbox *const *boxes;      /* set before start: every reactor's mailbox */
    struct mailbox *main_box;          /* set before start: the main thread's */
    const struct backplane *backplane; /* set before start: the cluster link, or NULL */
    struct conntab conns;              /* reactor thread only */
    uint32_t holding;                  /* reactor thread only: connections a drain waits
                                        * for (those whose protocol does not serves_drain) */
    _Atomic uint64_t *live;            /* the registry's counted-connection gauge */
    ev_timer drain_timer;              /* reactor thread only: the drain deadline */
    struct ev_loop *main_loop;         /* set before start: told when drained */
    ev_async *drained_async;           /* sent once the drain has closed everything */
    _Atomic int drained;               /* reactor writes, main reads */
    double tick_interval;              /* set before start; 0 = no watchdog ticks */
    ev_timer tick_timer;               /* reactor thread only */
    _Atomic uint64_t tick;             /* bumped by tick_timer: the loop turns */
    ev_async *reloaded_async;          /* set before start: sent when a reload is applied */
    _Atomic uint64_t config_gen;       /* reactor writes: the last reload applied */
    int started;                       /* main thread: the thread was created */
    int halted;                        /* main thread: joined, not yet freed */
};

/* Creates the loop and mailbox and starts the thread. cfg is copied. r must
 * be zeroed but for the fields documented "set before start". Returns 0 or
 * -errno with the reason in err. Main thread only. */
int reactor_start(struct reactor *r, int index, const struct config *cfg,
                  struct stats_registry *reg, char *err, size_t errlen);

struct ssl_ctx_st;

/* Hands an accepted fd to the reactor, with a reference to the TLS context
 * its connection runs inside (taken over; NULL: plain), and whether it must
 * start with a PROXY protocol header. On failure (out of memory) the fd is
 * closed, the reference dropped and -ENOMEM returned. Thread-safe. */
int reactor_post_conn(struct reactor *r, int fd, const struct proto *proto,
                      struct ssl_ctx_st *tls, bool proxy);

struct reactor_config_msg;

/* A new live configuration (reload) numbered gen, copied from cfg, ready to
 * be posted. Allocating every reactor's before posting any makes a reload
 * all or nothing. Returns NULL when out of memory. Thread-safe. */
struct reactor_config_msg *reactor_config_msg_new(const struct config *cfg, uint64_t gen);

/* Frees a message that was not posted. Thread-safe. */
void reactor_config_msg_free(struct reactor_config_msg *m);

/* Hands the reactor m (taken over): it applies the configuration between
 * events, then stores gen in r->config_gen and sends r->reloaded_async to
 * r->main_loop. Cannot fail. Thread-safe. */
void reactor_post_config(struct reactor *r, struct reactor_config_msg *m);

/* Starts the drain (rule 6): GOAWAY to every msg connection, close each as
 * soon as it owes nothing, and everything at ms from now. When the reactor
 * holds no connection any more but those that serve through a drain (http)
 * it sets r->drained and sends r->drained_async to r->main_loop. Returns 0
 * or -ENOMEM. Thread-safe. */
int reactor_post_drain(struct reactor *r, uint32_t ms);

/* Asks the reactor to close every connection and leave its loop, joins the
 * thread and stops its workers. Its mailbox stays valid (other reactors may
 * still post to it) until reactor_free. Main thread only. */
void reactor_halt(struct reactor *r);

/* Frees a halted reactor, and whatever is left in its mailbox. Only once
 * every reactor is halted. Main thread only. */
void reactor_free(struct reactor *r);

#endif
