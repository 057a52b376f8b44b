/* presence: an example msgd module. A client WATCHes identities and is told,
 * by a PRESENCE push, when one comes online or goes offline.
 *
 * It shows most of the module API (module.h) at work:
 *   - keys of its own config section, [presence] grace and max_watches;
 *   - commands registered in init (WATCH, UNWATCH), answered inline;
 *   - connection events: on_auth (an identity comes online), on_close (its
 *     last connection leaving takes it offline);
 *   - a per-reactor timer: the grace period before "offline" is a one-shot
 *     timer on the reactor where the last connection closed, so a client
 *     that reconnects quickly never looks offline to its watchers;
 *   - per-connection data with a free callback (the connection's identity
 *     and what it watches);
 *   - msgd_send by connection id from any reactor to a connection on any
 *     other one (the PRESENCE push).
 *
 * The wire (command numbers 1024 and up belong to modules):
 *   WATCH    1024  request: an identity (1..255 bytes); reply: one byte, 1
 *                  when the identity is online now, 0 when not. Watching an
 *                  identity twice is the same as once.
 *   UNWATCH  1025  request: an identity; reply: empty (not watched is fine).
 *   PRESENCE 1026  push, never a request: u8 state (1 online, 0 offline),
 *                  u8 identity length, the identity.
 * "Online" is what the watchers were told last: an identity whose last
 * connection closed is still online during the grace period.
 *
 * Threads. Events, handlers and timers run on every reactor thread at once,
 * so everything shared (the table of identities) sits behind one mutex. A
 * connection's own data is only ever touched on its reactor's thread. The
 * pushes are sent with the mutex held: msgd_send never calls back into a
 * module, and sending under the lock posts the pushes to each reactor in
 * the order the changes happened.
 *
 * One ordering limit of module.h: a push posted from another reactor and a
 * later push sent by the watcher's own reactor are not ordered with each
 * other. With grace = 0 a watcher could, in a close race, see "offline"
 * before the "online" that came just before it; a grace of a few hundred
 * milliseconds keeps the changes far enough apart. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "module.h"

enum {
    CMD_WATCH = 1024,
    CMD_UNWATCH = 1025,
    CMD_PRESENCE = 1026,
};

#define IDENTITY_MAX 255          /* PROTOCOL.md "Identities" */
#define GRACE_MAX_S 3600.0
#define MAX_WATCHES_MAX 100000ul

/* Config: written by the main thread at start-up, read-only afterwards. */
static double grace_s = 5.0;
static unsigned long max_watches = 1000;
static const struct msgd_module *presence_self; /* set in init */

/* ---- the table of identities (shared: hold `lock`) ---------------------- */

/* One identity that is online, watched, or waiting for its grace timer. */
struct ident {
    struct ident *next;       /* hash chain */
    unsigned conns;           /* connections holding it, on every reactor */
    bool online;              /* what its watchers were told last */
    int timer_reactor;        /* reactor of the pending offline timer; -1: none */
    uint64_t timer_id;        /* that timer, when timer_reactor >= 0 */
    unsigned timers;          /* its timers that have neither fired nor been stopped */
    uint64_t *watchers;       /* ids of the connections watching it */
    size_t nwatchers, capwatchers;
    uint8_t len;
    char name[];              /* the identity, len bytes (any bytes, no NUL) */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct ident **buckets; /* nbuckets chains; NULL until the first identity */
static size_t nbuckets, nidents;

/* FNV-1a. Any thread. */
static size_t hash(const char *name, size_t len)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)name[i]) * 1099511628211ull;
    return (size_t)h;
}

/* Doubles the bucket array (a failure just keeps the chains longer). Any
 * thread, lock held. */
static void table_grow(void)
{
    size_t n = nbuckets ? nbuckets * 2 : 64;
    struct ident **b = calloc(n, sizeof *b);
    if (!b)
        return;
    for (size_t i = 0; i < nbuckets; i++) {
        while (buckets[i]) {
            struct ident *id = buckets[i];
            buckets[i] = id->next;
            size_t at = hash(id->name, id->len) % n;
            id->next = b[at];
            b[at] = id;
        }
    }
    free(buckets);
    buckets = b;
    nbuckets = n;
}

/* The identity's entry, or NULL. Any thread, lock held. */
static struct ident *ident_find(const char *name, size_t len)
{
    if (nbuckets == 0)
        return NULL;
    for (struct ident *id = buckets[hash(name, len) % nbuckets]; id; id = id->next)
        if (id->len == len && memcmp(id->name, name, len) == 0)
            return id;
    return NULL;
}

/* The identity's entry, made if needed (offline, unwatched), or NULL when out
 * of memory. len is 1..IDENTITY_MAX. Any thread, lock held. */
static struct ident *ident_get(const char *name, size_t len)
{
    struct ident *id = ident_find(name, len);
    if (id)
        return id;
    if (nidents >= 2 * nbuckets)
        table_grow();
    if (nbuckets == 0)
        return NULL;
    id = calloc(1, sizeof *id + len);
    if (!id)
        return NULL;
    id->timer_reactor = -1;
    id->len = (uint8_t)len;
    memcpy(id->name, name, len);
    size_t at = hash(name, len) % nbuckets;
    id->next = buckets[at];
    buckets[at] = id;
    nidents++;
    return id;
}

/* Frees the entry once nothing needs it: no connection, offline, no watcher,
 * no timer that will still look at it. Any thread, lock held. */
static void ident_release(struct ident *id)
{
    if (id->conns || id->online || id->nwatchers || id->timers)
        return;
    struct ident **p = &buckets[hash(id->name, id->len) % nbuckets];
    while (*p != id)
        p = &(*p)->next;
    *p = id->next;
    nidents--;
    free(id->watchers);
    free(id);
}

/* Makes room for need elements in an array of cap (updated); returns the
 * (maybe moved) array, or NULL with the old one untouched. Any thread. */
static void *grow_array(void *arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return arr;
    size_t n = *cap ? *cap * 2 : 8;
    while (n < need)
        n *= 2;
    void *p = realloc(arr, n * elem);
    if (p)
        *cap = n;
    return p;
}

/* Tells every watcher of id its new state. A push that fails is left out:
 * -ENOENT, the watcher is closing (its free callback will unwatch); -ENOBUFS,
 * it is too slow and the push is dropped, as a MESSAGE would be. Any thread,
 * lock held. */
static void push_state(const struct ident *id, bool online)
{
    uint8_t frame[2 + IDENTITY_MAX];
    frame[0] = online ? 1 : 0;
    frame[1] = id->len;
    memcpy(frame + 2, id->name, id->len);
    for (size_t i = 0; i < id->nwatchers; i++)
        (void)msgd_send(id->watchers[i], CMD_PRESENCE, frame, 2u + id->len);
}

/* ---- online and offline ------------------------------------------------- */

/* The grace period of id ended, on the reactor that started the timer. It
 * goes offline unless the timer is no longer the pending one (a connection
 * of id authenticated meanwhile on another reactor, and maybe left again,
 * starting a newer timer). id is alive: its timers count holds it. */
static void offline_timer(uint64_t timer_id, void *arg)
{
    struct ident *id = arg;
    pthread_mutex_lock(&lock);
    id->timers--;
    if (id->timer_reactor == msgd_reactor_index() && id->timer_id == timer_id) {
        id->timer_reactor = -1;
        if (id->conns == 0) {
            id->online = false;
            push_state(id, false);
        }
    }
    ident_release(id);
    pthread_mutex_unlock(&lock);
}

/* A connection takes identity id. The first one brings it online; one that
 * comes back within the grace period only cancels the pending offline, so
 * the watchers see nothing. Reactor thread (the connection's), lock held. */
static void ident_join(struct ident *id)
{
    if (id->conns++ > 0)
        return;
    if (id->online) {
        /* A timer on this reactor is stopped. One on another reactor cannot
         * be (msgd_timer_stop is for its own thread): it fires there, sees
         * that it is no longer the pending one, and does nothing. */
        if (id->timer_reactor == msgd_reactor_index() && msgd_timer_stop(id->timer_id) == 0)
            id->timers--;
        id->timer_reactor = -1;
        return;
    }
    id->online = true;
    push_state(id, true);
}

/* A connection gives up identity id (it closed, or authenticated as someone
 * else). The last one starts the grace timer on this reactor, or with no
 * grace (or no timer) takes it offline at once. The caller then calls
 * ident_release. Reactor thread (the connection's), lock held. */
static void ident_leave(struct ident *id)
{
    if (--id->conns > 0)
        return;
    if (grace_s > 0) {
        uint64_t timer_id;
        int rc = msgd_timer_start(grace_s, 0, offline_timer, id, &timer_id);
        if (rc == 0) {
            id->timer_id = timer_id;
            id->timer_reactor = msgd_reactor_index();
            id->timers++;
            return;
        }
        msgd_log(MSGD_LOG_WARN, "presence: no grace timer (error %d): offline at once", -rc);
    }
    id->online = false;
    push_state(id, false);
}

/* ---- per-connection data (its reactor's thread only) -------------------- */

struct conn_state {
    uint64_t conn_id;
    struct ident *identity;   /* the identity it holds (counted in conns), or NULL */
    struct ident **watches;   /* what it watches, sorted by address for bsearch */
    size_t nwatches, capwatches;
};

/* Where id is, or would go, in cs->watches; *found says whether it is there.
 * Reactor thread, lock held (the entries are shared). */
static size_t watch_pos(const struct conn_state *cs, const struct ident *id, bool *found)
{
    size_t lo = 0, hi = cs->nwatches;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if ((uintptr_t)cs->watches[mid] < (uintptr_t)id)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < cs->nwatches && cs->watches[lo] == id;
    return lo;
}

/* Removes connection conn_id from id's watchers (the caller then calls
 * ident_release). Reactor thread, lock held. */
static void watchers_remove(struct ident *id, uint64_t conn_id)
{
    for (size_t i = 0; i < id->nwatchers; i++) {
        if (id->watchers[i] == conn_id) {
            id->watchers[i] = id->watchers[--id->nwatchers];
            return;
        }
    }
}

/* The connection no longer holds an identity. Reactor thread, lock held. */
static void conn_drop_identity(struct conn_state *cs)
{
    struct ident *id = cs->identity;
    if (!id)
        return;
    cs->identity = NULL;
    ident_leave(id);
    ident_release(id);
}

/* The free callback of the connection's data: runs after on_close, on the
 * connection's reactor thread. Unwatches everything, so no push is ever
 * sent to the closed connection's id. */
static void conn_state_free(void *data)
{
    struct conn_state *cs = data;
    pthread_mutex_lock(&lock);
    conn_drop_identity(cs); /* done by on_close already; kept for safety */
    for (size_t i = 0; i < cs->nwatches; i++) {
        watchers_remove(cs->watches[i], cs->conn_id);
        ident_release(cs->watches[i]);
    }
    pthread_mutex_unlock(&lock);
    free(cs->watches);
    free(cs);
}

/* The connection's data; made on first use when create is set. NULL when
 * there is none, or out of memory. Reactor thread (the connection's). */
static struct conn_state *conn_state(msgd_conn *c, bool create)
{
    struct conn_state *cs = msgd_conn_data(c, presence_self);
    if (cs || !create)
        return cs;
    cs = calloc(1, sizeof *cs);
    if (!cs)
        return NULL;
    cs->conn_id = msgd_conn_id(c);
    if (msgd_conn_set_data(c, presence_self, cs, conn_state_free) != 0) {
        free(cs);
        return NULL;
    }
    return cs;
}

/* ---- connection events ------------------------------------------------- */

/* AUTH succeeded on c: it takes its (new) identity and leaves the one it had,
 * if any (AUTH again as someone else is leaving and joining). An AUTH
 * without an identity (a bare token) just leaves. Reactor thread (c's). */
static void presence_on_auth(msgd_conn *c)
{
    size_t len = 0;
    const char *name = msgd_conn_identity(c, &len);
    if (len == 0 || len > IDENTITY_MAX)
        name = NULL;
    struct conn_state *cs = conn_state(c, name != NULL);
    if (!cs) {
        if (name)
            msgd_log(MSGD_LOG_ERROR, "presence: out of memory: connection %llu not tracked",
                     (unsigned long long)msgd_conn_id(c));
        return;
    }
    pthread_mutex_lock(&lock);
    struct ident *now = name ? ident_get(name, len) : NULL;
    if (name && !now)
        msgd_log(MSGD_LOG_ERROR, "presence: out of memory: an identity not tracked");
    if (now != cs->identity) {
        conn_drop_identity(cs);
        if (now) {
            cs->identity = now;
            ident_join(now);
        }
    }
    pthread_mutex_unlock(&lock);
}

/* c is closing: it leaves its identity, now, while this is its reactor's
 * thread (the grace timer runs here). Its watches go in the free callback.
 * Reactor thread (c's). */
static void presence_on_close(msgd_conn *c)
{
    struct conn_state *cs = conn_state(c, false);
    if (!cs)
        return;
    pthread_mutex_lock(&lock);
    conn_drop_identity(cs);
    pthread_mutex_unlock(&lock);
}

/* ---- commands (inline: the connection's reactor thread) ----------------- */

/* WATCH identity -> u8 online (1 online now, 0 not). Inline: the
 * connection's reactor thread. */
static void cmd_watch(msgd_req *req, const uint8_t *payload, size_t len)
{
    if (len == 0 || len > IDENTITY_MAX) {
        msgd_error(req, MSGD_ERR_BAD_PAYLOAD, "WATCH carries an identity of 1..255 bytes");
        return;
    }
    msgd_conn *c = msgd_req_conn(req);
    struct conn_state *cs = c ? conn_state(c, true) : NULL;
    if (!cs) {
        msgd_error(req, MSGD_ERR_OVERLOADED, "out of memory");
        return;
    }
    int rc = 0;
    uint8_t online = 0;
    pthread_mutex_lock(&lock);
    struct ident *id = ident_get((const char *)payload, len);
    bool found = false;
    size_t at = id ? watch_pos(cs, id, &found) : 0;
    if (!id) {
        rc = -ENOMEM;
    } else if (!found && cs->nwatches >= max_watches) {
        rc = -EDQUOT;
    } else if (!found) {
        void *w = grow_array(cs->watches, &cs->capwatches, cs->nwatches + 1, sizeof *cs->watches);
        if (w)
            cs->watches = w;
        void *v = grow_array(id->watchers, &id->capwatchers, id->nwatchers + 1,
                             sizeof *id->watchers);
        if (v)
            id->watchers = v;
        if (w && v) {
            memmove(cs->watches + at + 1, cs->watches + at,
                    (cs->nwatches - at) * sizeof *cs->watches);
            cs->watches[at] = id;
            cs->nwatches++;
            id->watchers[id->nwatchers++] = cs->conn_id;
        } else {
            rc = -ENOMEM;
        }
    }
    if (id) {
        online = id->online ? 1 : 0;
        ident_release(id); /* frees a new entry that did not get its watcher */
    }
    pthread_mutex_unlock(&lock);

    if (rc == -EDQUOT)
        msgd_error(req, MSGD_ERR_LIMIT_EXCEEDED, "this connection watches max_watches identities");
    else if (rc < 0)
        msgd_error(req, MSGD_ERR_OVERLOADED, "out of memory");
    else
        msgd_reply(req, &online, 1);
}

/* UNWATCH identity -> empty (not watched is fine). Inline: the
 * connection's reactor thread. */
static void cmd_unwatch(msgd_req *req, const uint8_t *payload, size_t len)
{
    if (len == 0 || len > IDENTITY_MAX) {
        msgd_error(req, MSGD_ERR_BAD_PAYLOAD, "UNWATCH carries an identity of 1..255 bytes");
        return;
    }
    msgd_conn *c = msgd_req_conn(req);
    struct conn_state *cs = c ? conn_state(c, false) : NULL;
    if (cs) {
        pthread_mutex_lock(&lock);
        struct ident *id = ident_find((const char *)payload, len);
        bool found = false;
        size_t at = id ? watch_pos(cs, id, &found) : 0;
        if (found) {
            cs->nwatches--;
            memmove(cs->watches + at, cs->watches + at + 1,
                    (cs->nwatches - at) * sizeof *cs->watches);
            watchers_remove(id, cs->conn_id);
            ident_release(id);
        }
        pthread_mutex_unlock(&lock);
    }
    msgd_reply(req, NULL, 0);
}

/* ---- the module --------------------------------------------------------- */

/* One key of [presence]. Main thread, start-up. */
static int presence_config(const char *key, const char *value, char *err, size_t errlen)
{
    if (strcmp(key, "grace") == 0) {
        double s;
        if (msgd_parse_duration(value, &s) != 0 || !(s >= 0 && s <= GRACE_MAX_S)) {
            snprintf(err, errlen, "grace is a duration from 0 to 1h");
            return -EINVAL;
        }
        grace_s = s;
        return 0;
    }
    if (strcmp(key, "max_watches") == 0) {
        char *end;
        errno = 0;
        unsigned long n = strtoul(value, &end, 10);
        if (value[0] < '0' || value[0] > '9' || *end != '\0' || errno != 0 || n < 1 ||
            n > MAX_WATCHES_MAX) {
            snprintf(err, errlen, "max_watches is an integer from 1 to %lu", MAX_WATCHES_MAX);
            return -EINVAL;
        }
        max_watches = n;
        return 0;
    }
    return -ENOENT;
}

/* Registers WATCH and UNWATCH. Runs in `msgd -t` too: nothing else here.
 * Main thread, start-up. */
static int presence_init(const struct msgd_module *self, char *err, size_t errlen)
{
    static const struct msgd_command cmds[] = {
        {.number = CMD_WATCH, .name = "WATCH", .where = MSGD_INLINE,
         .flags = MSGD_NEEDS_AUTH, .handler = cmd_watch},
        {.number = CMD_UNWATCH, .name = "UNWATCH", .where = MSGD_INLINE,
         .flags = MSGD_NEEDS_AUTH, .handler = cmd_unwatch},
    };
    presence_self = self;
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        int rc = msgd_command_register(self, &cmds[i], err, errlen);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Frees the table. Every connection's data was freed when it closed (the
 * reactors have stopped), and msgd cancelled the timers still pending.
 * Main thread. */
static void presence_fini(void)
{
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < nbuckets; i++) {
        while (buckets[i]) {
            struct ident *id = buckets[i];
            buckets[i] = id->next;
            free(id->watchers);
            free(id);
        }
    }
    free(buckets);
    buckets = NULL;
    nbuckets = nidents = 0;
    pthread_mutex_unlock(&lock);
}

/* The one exported symbol: msgd looks it up when it loads the module. */
const struct msgd_module msgd_module = {
    .api_version = MSGD_MODULE_API_VERSION,
    .name = "presence",
    .config = presence_config,
    .init = presence_init,
    .on_auth = presence_on_auth,
    .on_close = presence_on_close,
    .fini = presence_fini,
};
