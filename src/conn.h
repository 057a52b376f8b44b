/* conn: one connection: its fd, its watcher, its input buffer and pipeline,
 * read/write with back-pressure and per-turn caps. Everything here belongs to
 * one reactor thread: no function may be called from any other thread. */
#ifndef MSGD_CONN_H
#define MSGD_CONN_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "buffer.h"
#include "pipeline.h"
#include "timer.h"

struct conn;
struct tls_conn;
struct conn_proxy;

#define CONN_TIMERS 5

/* The part of a reactor that its connections share. Owned by the reactor
 * thread; conn.c runs the backlog (connections whose input still holds whole
 * frames after their turn) from an ev_check watcher, with an ev_idle watcher
 * active while the backlog is not empty so the loop does not block. */
struct conn_host {
    struct ev_loop *loop;
    struct pipeline_env env;
    struct conn *backlog;              /* FIFO, linked through backlog_next */
    struct conn *backlog_tail;
    ev_check backlog_check;
    ev_idle backlog_idle;
    /* Heartbeats and idle timeouts: one timer per listener section with
     * its own timeouts (msg, echo, admin, http), and a last one on
     * [timeouts] alone for any other protocol (conn.c timer_sections). */
    struct timer timers[CONN_TIMERS];
    /* Emptied buffers for reuse (env.bufs points here). A connection gives
     * its input and output buffers back as soon as they are empty, so an
     * idle connection holds no buffer memory, and one whose output drains
     * hands its memory to the next writer instead of to malloc. Only what
     * the socket did not take stays with the connection. */
    struct buffer_pool bufs;
    ev_timer bufs_trim;                /* frees what bufs kept unused for a while */
    /* Called once per connection as it closes, before it is freed, so the
     * reactor can release its slot. */
    void (*closed)(struct conn_host *h, struct conn *c);
};

enum conn_state {
    CONN_PAUSED = 1u << 0,       /* reading stopped: output above high water */
    CONN_PEER_EOF = 1u << 1,     /* the peer shut down its write side */
    CONN_IN_BACKLOG = 1u << 2,   /* on host->backlog */
    CONN_LINGER = 1u << 4,       /* write side shut: reading and discarding until the
                                  * peer closes or the linger time passes */
};

struct conn {
    uint64_t id;                 /* reactor, slot, generation (reactor.h) */
    int fd;
    uint32_t state;              /* enum conn_state */
    int events;                  /* EV_READ/EV_WRITE the watcher has now */
    struct conn_host *host;
    ev_io io;
    struct buffer in;            /* unprocessed input (empty most of the time) */
    struct pipeline pl;          /* protocol state and output */
    struct timer_entry te;       /* heartbeat and idle deadlines */
    struct timer *timer;         /* the one of host->timers te is on */
    struct conn *backlog_next;
    size_t drain_mark;           /* input bytes read before the GOAWAY, still unprocessed */
    ev_tstamp created;
    uint64_t bytes_in, bytes_out;
    struct tls_conn *tls;        /* the TLS transport, or NULL: plain reads and writes */
    struct conn_proxy *proxy;    /* the PROXY header being read, then the client's
                                  * address it gave; NULL without proxy_protocol */
};

/* Sets up host's watchers on loop; h->env must be set (its cfg gives the
 * heartbeat and idle intervals). Reactor thread, before any connection. */
void conn_host_init(struct conn_host *h, struct ev_loop *loop);

/* Applies h->env.cfg's heartbeat and idle intervals (each listener's own,
 * else [timeouts]) to every connection. */
void conn_host_reload(struct conn_host *h);

/* Stops host's watchers. Every connection must be closed first. */
void conn_host_stop(struct conn_host *h);

/* Takes over fd (non-blocking already) as a connection speaking proto, and
 * starts reading. Returns the connection, or NULL (fd closed) when out of
 * memory. */
struct conn *conn_open(struct conn_host *h, int fd, const struct proto *proto, uint64_t id);

/* Makes c (just opened, nothing read yet) wait for a PROXY protocol header
 * before anything else, TLS included. Once it has come, the address in it is
 * c's peer everywhere (conn_peer_name); a bad or too long header, or none
 * within idle_timeout or PROXY_HEADER_S (proxy.h), closes c and is counted.
 * Returns 0 or -ENOMEM. Reactor thread of c only. */
int conn_expect_proxy(struct conn *c);

/* Writes c's peer as text: the client's address from a PROXY header, else
 * the socket's. Returns 0 or -1. */
int conn_peer_name(const struct conn *c, char *out, size_t outlen);

/* Puts c (just opened, nothing read or written yet) inside TLS, taking tls
 * (tls.h, made for c's fd) over: the handshake runs first, bounded by the
 * idle timeout and at most TLS_HANDSHAKE_S (10 s), then the protocol sees the plaintext. */
void conn_start_tls(struct conn *c, struct tls_conn *tls);

/* Closes the socket at once, calls host->closed, frees the connection. */
void conn_close(struct conn *c);

/* Starts the drain for c: the protocol's GOAWAY (or, without one, a close
 * once flushed); c closes as soon as it owes nothing. Nothing happens to a
 * connection whose protocol serves_drain. h->env.draining must be set. c may
 * be freed on return. */
void conn_drain(struct conn *c, uint32_t ms_left);

/* The connection that owns pipeline pl. */
static inline struct conn *conn_of_pipeline(struct pipeline *pl)
{
    return (struct conn *)((char *)pl - offsetof(struct conn, pl));
}

/* Schedules a flush of output queued from outside the connection's own
 * callbacks (a MESSAGE push, a late reply) for the end of this loop turn,
 * after every other callback of the turn: whatever else c is given meanwhile
 * leaves in the same write. Safe while the caller walks a structure that
 * closing c would change. */
void conn_defer(struct conn *c);

#endif
