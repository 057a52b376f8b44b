/* mailbox: a multi-producer, single-consumer queue of intrusive items, woken
 * through an eventfd.
 *
 * Why an eventfd watched with ev_io rather than ev_async: the mailbox is a base
 * module that knows nothing of libev, so it can be tested (and posted to) from
 * plain threads; a producer needs no loop pointer; and the eventfd is only
 * written when the list goes from empty to non-empty, so a burst of posts costs
 * one wake-up. The consumer swaps the whole list out under the lock and walks
 * it without the lock. */
#ifndef MSGD_MAILBOX_H
#define MSGD_MAILBOX_H

#include <pthread.h>
#include <stdint.h>

/* Embed this as the first member of anything posted. */
struct mailbox_item {
    struct mailbox_item *next;
    int kind;                          /* the consumer's tag for what follows */
};

struct mailbox {
    pthread_mutex_t mu;
    struct mailbox_item *head;         /* guarded by mu */
    struct mailbox_item *tail;         /* guarded by mu */
    int efd;                           /* eventfd; the consumer watches it */
};

/* Creates the eventfd (non-blocking, close-on-exec). Returns 0 or -errno. */
int mailbox_init(struct mailbox *mb);

/* Frees what is still queued with free_fn (may be NULL) and closes the eventfd.
 * Only when no producer can post any more. */
void mailbox_destroy(struct mailbox *mb, void (*free_fn)(struct mailbox_item *));

/* Appends item (ownership passes to the consumer) and wakes the consumer if
 * the list was empty. Thread-safe. */
void mailbox_post(struct mailbox *mb, struct mailbox_item *item);

/* Clears the wake-up and takes every queued item, oldest first, as a list
 * linked through next (NULL when empty). Consumer thread only. */
struct mailbox_item *mailbox_take(struct mailbox *mb);

#endif
