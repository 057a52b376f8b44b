/* cluster: the link to the Redis backplane ([cluster], PROTOCOL.md
 * "Cluster"): one thread with its own libev loop and two hiredis async
 * connections (one publishes, one subscribes). Reactors reach it only
 * through struct backplane (backplane.h), whose calls post to its mailbox;
 * what other nodes publish it fans out to every reactor. No reactor ever
 * waits on Redis. */
#ifndef MSGD_CLUSTER_H
#define MSGD_CLUSTER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "backplane.h"

struct config;
struct stats_registry;
struct mailbox;
struct cluster;

/* Creates the link for cfg's [cluster] (redis must be set): its loop and
 * mailbox, not yet its thread. *bp is what the reactors get. Returns the
 * link, or NULL with the reason in err. Main thread. */
struct cluster *cluster_new(const struct config *cfg, struct stats_registry *reg, int nreactors,
                            struct mailbox *const *boxes, char *err, size_t errlen);

/* The backplane the reactors use (valid until cluster_free). */
const struct backplane *cluster_backplane(struct cluster *c);

/* Starts the thread, which connects (and keeps reconnecting) to Redis.
 * Returns 0 or -errno. Main thread. */
int cluster_start(struct cluster *c);

/* Whether both links are up now. Any thread. */
bool cluster_is_up(const struct cluster *c);

/* Disconnects, stops and joins the thread (what it still held is dropped),
 * and frees the link. Call after every reactor has stopped posting to it
 * (reactor_halt) and before their mailboxes are freed. Main thread. */
void cluster_free(struct cluster *c);

#endif
