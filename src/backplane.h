/* backplane: what a reactor's code may ask of the cluster link (cluster.c)
 * without knowing it: interest in a topic or identity, and sending a
 * PUBLISH's MESSAGE or a DIRECT's DELIVER to the other nodes. Set by the
 * server in every reactor's env when [cluster] is configured, else NULL.
 * Every call is thread-safe and never waits: it posts to the link's thread. */
#ifndef MSGD_BACKPLANE_H
#define MSGD_BACKPLANE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mailbox.h"

#define BACKPLANE_TOPIC 't'     /* channel PREFIX:t:TOPIC */
#define BACKPLANE_IDENTITY 'u'  /* channel PREFIX:u:IDENTITY */

/* How many other nodes a DIRECT reached, reported back to the reactor that
 * sent it: the creator fills item (run, drop) and box; the link sets nodes
 * and posts it to box once Redis has answered (or at once, 0, when the
 * backplane is down). */
struct backplane_reply {
    struct mailbox_item item;
    struct mailbox *box;
    uint32_t nodes;
};

struct backplane_ops {
    /* A key of kind got its first holder on a reactor (held) or lost its
     * last one there (!held). */
    void (*interest)(void *ctx, char kind, const uint8_t *key, size_t len, bool held);
    /* Sends payload (a MESSAGE's or a DELIVER's) to the other nodes with
     * interest in key; reply (may be NULL) hears how many there were. */
    void (*publish)(void *ctx, char kind, const uint8_t *key, size_t klen, const uint8_t *payload,
                    size_t len, struct backplane_reply *reply);
    /* Whether both Redis links are up now. */
    bool (*up)(void *ctx);
};

struct backplane {
    const struct backplane_ops *ops;
    void *ctx;
};

#endif
