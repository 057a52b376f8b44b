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

struct mailbox_item;

/* Runs an item on the consumer's thread. ctx is the consumer's own context:
 * a reactor passes its struct pipeline_env (pipeline.h), the main thread its
 * struct reload_hub (reload.h). The item belongs to run from then on: it
 * frees it, keeps it or passes it on. */
typedef void (*mailbox_run_fn)(struct mailbox_item *it, void *ctx);

/* Releases an item that will never run (its consumer is gone). Called on the
 * thread that destroys the mailbox. */
typedef void (*mailbox_drop_fn)(struct mailbox_item *it);

/* Embed this in anything posted. What crosses threads carries its own
 * meaning: the consumer runs items, it does not know what they are. */
struct mailbox_item {
    struct mailbox_item *next;
    mailbox_run_fn run;
    mailbox_drop_fn drop;              /* NULL: nothing to release */
};

struct mailbox {
    pthread_mutex_t mu;
    struct mailbox_item *head;         /* guarded by mu */
    struct mailbox_item *tail;         /* guarded by mu */
    int efd;                           /* eventfd; the consumer watches it */
};

/* Creates the eventfd (non-blocking, close-on-exec). Returns 0 or -errno. */
int mailbox_init(struct mailbox *mb);

/* Drops what is still queued (each item's drop) and closes the eventfd.
 * Only when no producer can post any more. */
void mailbox_destroy(struct mailbox *mb);

/* Appends item, whose run (and drop) must be set; ownership passes to the
 * consumer. Wakes the consumer if the list was empty. Thread-safe. */
void mailbox_post(struct mailbox *mb, struct mailbox_item *item);

/* Clears the wake-up and takes every queued item, oldest first, as a list
 * linked through next (NULL when empty). Consumer thread only. */
struct mailbox_item *mailbox_take(struct mailbox *mb);

/* Takes every queued item and runs each, oldest first, with ctx. Returns how
 * many ran. Consumer thread only. */
unsigned mailbox_run(struct mailbox *mb, void *ctx);

#endif
