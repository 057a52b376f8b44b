/* fanout: a request that visits every reactor and then reports back to the
 * one it came from: a PUBLISH (each reactor delivers to its own subscribers
 * and adds its count) or an admin `conns` (each reactor lists its own
 * connections). One allocation carries the shared payload, the per-reactor
 * mailbox items and results; nothing is copied per reactor. The reactor
 * thread that handles the items decides what a visit does (reactor.c). */
#ifndef MSGD_FANOUT_H
#define MSGD_FANOUT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "buffer.h"
#include "mailbox.h"

/* Mailbox item kinds (a reactor's mailbox also carries reactor.c's own). */
enum {
    FANOUT_MSG_VISIT = 100,            /* struct fanout_item: do the visit */
    FANOUT_MSG_DONE = 101,             /* struct fanout_item: every reactor visited */
    FANOUT_MSG_REPLY = 102,            /* struct fanout_reply: a late reply for a slot */
};

enum fanout_kind { FANOUT_PUBLISH = 1, FANOUT_CONNS };

/* A request from a connection to the main thread (through its mailbox):
 * an admin `reload`. The answer comes back as a struct fanout_reply. */
enum { MAIN_MSG_RELOAD = 200 };

struct main_request {
    struct mailbox_item item;          /* kind MAIN_MSG_RELOAD */
    struct main_request *next_waiting; /* main thread: answers still owed */
    int reactor;
    uint64_t conn_id;
    uint32_t seq;
};

struct fanout;

struct fanout_item {
    struct mailbox_item item;
    struct fanout *f;
};

struct fanout {
    enum fanout_kind kind;
    _Atomic uint32_t pending;          /* reactors still to visit */
    _Atomic uint32_t refs;             /* items not yet handled or dropped */
    _Atomic uint64_t count;            /* PUBLISH: subscribers it was queued to */
    int nreactors;
    int origin;                        /* the reactor of the asking connection */
    uint64_t conn_id;                  /* the asking connection */
    uint32_t seq;                      /* its reply slot */
    struct mailbox *const *boxes;      /* every reactor's mailbox (not owned) */
    struct fanout_item *visits;        /* nreactors items */
    struct fanout_item done;
    struct buffer *results;            /* CONNS: one per reactor, written by it */
    size_t len;                        /* PUBLISH: the MESSAGE frame */
    uint8_t *data;
};

/* A reply produced away from the connection's reactor (the main thread's
 * answer to an admin `reload`), for slot seq of connection conn_id. */
struct fanout_reply {
    struct mailbox_item item;          /* kind FANOUT_MSG_REPLY */
    uint64_t conn_id;
    uint32_t seq;
    struct buffer bytes;
};

/* Allocates a fan-out over nreactors mailboxes with room for len bytes of
 * payload, a copy of data (or left for the caller to fill when data is
 * NULL). Returns NULL when out of memory. Thread-safe. */
struct fanout *fanout_new(enum fanout_kind kind, int nreactors, struct mailbox *const *boxes,
                          int origin, uint64_t conn_id, uint32_t seq, const void *data,
                          size_t len);

/* Posts the visits to every reactor. Ownership passes to the items. */
void fanout_start(struct fanout *f);

/* A reactor finished its visit: the last one posts DONE to the origin. */
void fanout_visited(struct fanout *f);

/* A visit item is being destroyed unhandled (shutdown): counts as visited
 * without posting anything, and drops the DONE that will never come. */
void fanout_abandon_visit(struct fanout *f);

/* Drops one item's reference; the last one frees the fan-out. */
void fanout_release(struct fanout *f);

/* Allocates a late reply item. Returns NULL when out of memory. */
struct fanout_reply *fanout_reply_new(uint64_t conn_id, uint32_t seq);

void fanout_reply_free(struct fanout_reply *r);

#endif
