/* pubsub: one reactor's table of keys -> the local connections that hold
 * them, and each connection's own list of keys: topics for SUBSCRIBE, and
 * (a second table) identities for DIRECT. There is one table per
 * reactor and no lock: a PUBLISH reaches every reactor through its mailbox
 * (fanout.h) and each reactor walks its own table. Reactor thread only. */
#ifndef MSGD_PUBSUB_H
#define MSGD_PUBSUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "pipeline.h"

#define PUBSUB_TOPIC_MAX 255

struct pubsub_topic;

/* A subscriber: its connection's pipeline and its topics. Kept by the
 * connection's protocol state (proto_msg), allocated by the first
 * pubsub_subscribe and freed by pubsub_remove_all. */
struct pubsub_subs {
    struct pipeline *pl;
    uint32_t n, cap;
    struct pubsub_topic **topics;
    uint64_t dropped;                  /* MESSAGEs skipped as a slow consumer */
};

struct pubsub {
    struct pubsub_topic **buckets;     /* hash table of topics, chained */
    uint32_t nbuckets;
    uint32_t ntopics;
    /* Optional: told when a key gets its first subscriber here (held) and
     * when it loses its last one (!held); set after pubsub_init. */
    void (*watch)(const struct pubsub *ps, const uint8_t *key, size_t len, bool held);
    void *watch_arg;
    char watch_kind;
};

void pubsub_init(struct pubsub *ps);

/* Frees the table. Every subscriber must have been removed. */
void pubsub_free(struct pubsub *ps);

/* Subscribes pl, whose subscriber record is *mine (allocated here when
 * NULL), to topic (1..255 bytes). Returns 1 when added, 0 when it was
 * already subscribed, -EDQUOT past max subscriptions, or -ENOMEM. */
int pubsub_subscribe(struct pubsub *ps, struct pubsub_subs **mine, struct pipeline *pl,
                     const uint8_t *topic, size_t len, uint32_t max);

/* Unsubscribes mine (may be NULL) from topic. Returns 1 when removed, 0 when
 * it was not subscribed. */
int pubsub_unsubscribe(struct pubsub *ps, struct pubsub_subs *mine, const uint8_t *topic,
                       size_t len);

/* Removes every subscription of *mine (its connection is closing), frees
 * the record and sets *mine to NULL. Returns how many there were. */
uint32_t pubsub_remove_all(struct pubsub *ps, struct pubsub_subs **mine);

/* One push frame as each receiver gets it: p[0] (n[0] bytes) plain, and
 * p[codec] compressed with that codec, or NULL where it was not (a receiver
 * whose codec has none gets the plain one). */
struct pubsub_frames {
    const uint8_t *p[CODEC_COUNT];
    size_t n[CODEC_COUNT];
    struct outq_ref *owner;            /* what holds them, for receivers to keep
                                        * a reference instead of a copy (outq.h),
                                        * or NULL: always copied */
};

/* Queues a push frame (encoded once by the caller, in the form each
 * receiver's codec asks for) to every subscriber of key (1..255 bytes) in
 * this table: a PUBLISH's MESSAGE to a
 * topic's subscribers, or a DIRECT's DELIVER to an identity's connections.
 * A frame of OUTQ_SHARE_MIN bytes or more is queued as a reference to
 * frames->owner's memory, not copied. The slow-consumer policy: a subscriber whose unsent output is above
 * high_water (or that is closing) is skipped, and the skip counted on it
 * (subs->dropped). Each subscriber it was queued to is deferred
 * (env->ops->defer: written later this turn, so no connection closes under
 * the walk). Returns how many it was queued to; *skipped says how many were
 * skipped. The caller counts them in its stats. */
uint32_t pubsub_deliver(struct pubsub *ps, const uint8_t *key, size_t klen,
                        const struct pubsub_frames *frames, uint64_t high_water, uint32_t *skipped);

#endif
