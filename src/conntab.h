/* conntab: one reactor's table of connections, named by 64-bit ids made of
 * reactor (8 bits), slot (28 bits) and generation (28 bits). The generation
 * changes each time a slot is reused, so a late message for a closed
 * connection never reaches the next one in its slot (or on its fd number).
 * Reactor thread only. */
#ifndef MSGD_CONNTAB_H
#define MSGD_CONNTAB_H

#include <stdint.h>

#define CONN_ID(reactor, slot, gen) \
    ((uint64_t)(reactor) << 56 | (uint64_t)(slot) << 28 | (uint64_t)((gen) & 0xFFFFFFFu))
#define CONN_ID_REACTOR(id) ((int)((id) >> 56))
#define CONN_ID_SLOT(id) ((uint32_t)(((id) >> 28) & 0xFFFFFFFu))
#define CONN_ID_GEN(id) ((uint32_t)((id) & 0xFFFFFFFu))

struct conn;

struct conntab_slot {
    struct conn *conn;                 /* NULL when free */
    uint32_t gen;
    uint32_t next_free;                /* free-list link when free */
};

struct conntab {
    int reactor;
    struct conntab_slot *slots;
    uint32_t nslots;
    uint32_t free_head;                /* UINT32_MAX when no slot is free */
    uint32_t count;                    /* connections in the table */
};

void conntab_init(struct conntab *t, int reactor);
void conntab_free(struct conntab *t);

/* Reserves a slot and returns the id its next connection gets, or 0 with
 * -ENOMEM/-ENOSPC in *err. */
uint64_t conntab_reserve(struct conntab *t, int *err);

/* Puts c (whose id came from conntab_reserve) in its slot. */
void conntab_set(struct conntab *t, uint64_t id, struct conn *c);

/* Frees id's slot (reserved or set) for reuse under a new generation. */
void conntab_release(struct conntab *t, uint64_t id);

/* The connection named id, or NULL when it has gone. */
struct conn *conntab_get(const struct conntab *t, uint64_t id);

/* The connection in slot i (0..nslots-1), or NULL: for walking the table.
 * Closing the connection found is allowed during the walk. */
static inline struct conn *conntab_at(const struct conntab *t, uint32_t i)
{
    return t->slots[i].conn;
}

#endif
