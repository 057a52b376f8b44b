/* conntab: a reactor's connection slots with generations and a free list. */
#include "conntab.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>

#define CONNTAB_SLOT_MAX 0xFFFFFFFu    /* 28 bits of slot */

void conntab_init(struct conntab *t, int reactor)
{
    *t = (struct conntab){.reactor = reactor, .free_head = UINT32_MAX};
}

void conntab_free(struct conntab *t)
{
    free(t->slots);
    conntab_init(t, t->reactor);
}

uint64_t conntab_reserve(struct conntab *t, int *err)
{
    if (t->free_head == UINT32_MAX) {
        uint32_t n = t->nslots ? t->nslots * 2 : 64;
        if (n > CONNTAB_SLOT_MAX) {
            *err = -ENOSPC;
            return 0;
        }
        struct conntab_slot *s = realloc(t->slots, sizeof *s * n);
        if (!s) {
            *err = -ENOMEM;
            return 0;
        }
        for (uint32_t i = t->nslots; i < n; i++)
            s[i] = (struct conntab_slot){NULL, 0, i + 1 < n ? i + 1 : UINT32_MAX};
        t->free_head = t->nslots;
        t->slots = s;
        t->nslots = n;
    }
    uint32_t slot = t->free_head;
    t->free_head = t->slots[slot].next_free;
    /* Generation 0 of reactor 0, slot 0 would be id 0: start at 1. */
    if (t->slots[slot].gen == 0)
        t->slots[slot].gen = 1;
    return CONN_ID(t->reactor, slot, t->slots[slot].gen);
}

void conntab_set(struct conntab *t, uint64_t id, struct conn *c)
{
    t->slots[CONN_ID_SLOT(id)].conn = c;
    t->count++;
}

void conntab_release(struct conntab *t, uint64_t id)
{
    struct conntab_slot *s = &t->slots[CONN_ID_SLOT(id)];
    if (s->conn)
        t->count--;
    s->conn = NULL;
    s->gen = (s->gen + 1) & CONNTAB_SLOT_MAX;
    s->next_free = t->free_head;
    t->free_head = CONN_ID_SLOT(id);
}

struct conn *conntab_get(const struct conntab *t, uint64_t id)
{
    uint32_t slot = CONN_ID_SLOT(id);
    if (slot >= t->nslots || CONN_ID_REACTOR(id) != t->reactor)
        return NULL;
    const struct conntab_slot *s = &t->slots[slot];
    return s->conn && s->gen == CONN_ID_GEN(id) ? s->conn : NULL;
}
