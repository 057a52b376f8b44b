/* mailbox: MPSC queue of intrusive items with an eventfd wake-up. */
#include "mailbox.h"

#include <errno.h>
#include <stddef.h>
#include <sys/eventfd.h>
#include <unistd.h>

int mailbox_init(struct mailbox *mb)
{
    mb->head = mb->tail = NULL;
    mb->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (mb->efd < 0)
        return -errno;
    int rc = pthread_mutex_init(&mb->mu, NULL);
    if (rc != 0) {
        close(mb->efd);
        mb->efd = -1;
        return -rc;
    }
    return 0;
}

void mailbox_destroy(struct mailbox *mb)
{
    struct mailbox_item *it = mb->head;
    while (it) {
        struct mailbox_item *next = it->next;
        if (it->drop)
            it->drop(it);
        it = next;
    }
    mb->head = mb->tail = NULL;
    if (mb->efd >= 0)
        close(mb->efd);
    mb->efd = -1;
    pthread_mutex_destroy(&mb->mu);
}

void mailbox_post(struct mailbox *mb, struct mailbox_item *item)
{
    item->next = NULL;
    pthread_mutex_lock(&mb->mu);
    int was_empty = mb->head == NULL;
    if (was_empty)
        mb->head = item;
    else
        mb->tail->next = item;
    mb->tail = item;
    if (was_empty) {
        /* Under the lock, so the consumer cannot take the list and miss this
         * wake-up in between. The counter cannot overflow: the consumer reads
         * it back to zero each time it takes the list. */
        uint64_t one = 1;
        ssize_t w;
        do {
            w = write(mb->efd, &one, sizeof one);
        } while (w < 0 && errno == EINTR);
    }
    pthread_mutex_unlock(&mb->mu);
}

struct mailbox_item *mailbox_take(struct mailbox *mb)
{
    uint64_t count;
    ssize_t r;
    do {
        r = read(mb->efd, &count, sizeof count);
    } while (r < 0 && errno == EINTR);
    pthread_mutex_lock(&mb->mu);
    struct mailbox_item *list = mb->head;
    mb->head = mb->tail = NULL;
    pthread_mutex_unlock(&mb->mu);
    return list;
}

unsigned mailbox_run(struct mailbox *mb, void *ctx)
{
    unsigned n = 0;
    for (struct mailbox_item *it = mailbox_take(mb); it; n++) {
        struct mailbox_item *next = it->next; /* run may free it */
        it->run(it, ctx);
        it = next;
    }
    return n;
}
