/* pipeline: one connection's codec chain seen from the protocol side:
 * splitter -> decoder/handler -> encoder -> output buffer. The connection
 * (conn.c) owns the socket and feeds the chain; protocols and commands see
 * only the pipeline, so they never touch a socket. Reactor thread only. */
#ifndef MSGD_PIPELINE_H
#define MSGD_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buffer.h"
#include "mailbox.h"
#include "outq.h"

struct config;
struct stats;
struct stats_registry;
struct pipeline;
struct worker_pool;
struct pubsub;
struct mailbox;
struct ev_loop;
struct codec_ctx;
struct backplane;

#define PIPELINE_PEER_LEN 128

/* What a connection looks like from outside (admin `conns`, modules). */
struct pipeline_info {
    uint64_t id;
    char peer[PIPELINE_PEER_LEN];      /* "1.2.3.4:5", "[::1]:5", "unix:/path" or "-" */
    const char *proto;                 /* the listener's protocol name */
    int reactor;
    double age_s, idle_s;              /* since it opened; since it last sent anything */
    const char *identity;              /* its identity (identity_len bytes), or NULL */
    size_t identity_len;
    uint64_t bytes_in, bytes_out;
    size_t pending;                    /* output not yet written */
};

typedef void (*pipeline_each_fn)(struct pipeline *pl, void *arg);

/* What the reactor that runs the pipelines does for the code beneath it
 * (protocols, commands, fan-outs, worker results), so that code needs no
 * header of the reactor's or the connection's. Set by the reactor; every
 * call is for its thread only. */
struct pipeline_host_ops {
    /* The pipeline of connection conn_id on this reactor, or NULL when the
     * connection has gone (a stale id never names the next connection). */
    struct pipeline *(*lookup)(void *host, uint64_t conn_id);
    /* A late reply took its place in the connection's output: it is written
     * (or a connection that owes nothing more and is done, closed) at the
     * end of this loop turn, with everything else the turn gave it. The
     * connection is still there on return. */
    void (*kick)(struct pipeline *pl);
    /* The same for a push (MESSAGE, DELIVER, a module's send): safe while
     * walking a structure that closing the connection would change. */
    void (*defer)(struct pipeline *pl);
    /* Calls fn for every connection of this reactor. fn must not close any. */
    void (*each)(void *host, pipeline_each_fn fn, void *arg);
    /* Describes pl's connection. */
    void (*describe)(struct pipeline *pl, struct pipeline_info *info);
    /* Writes the peer's address (local false) or the local one (true) of
     * pl's connection into buf; returns 0 or -ENOSPC. */
    int (*address)(struct pipeline *pl, bool local, char *buf, size_t len);
};

/* What a reactor lends to every pipeline it runs. Owned by the reactor;
 * pipelines only point at it. It is also the context the reactor's mailbox
 * items run with (mailbox.h). */
struct pipeline_env {
    const struct config *cfg;          /* the reactor's live configuration */
    struct stats *stats;               /* the reactor's counters */
    const struct stats_registry *all;  /* every counter, for STATS */
    int reactor;                       /* the reactor's index */
    struct worker_pool *pool;          /* the reactor's workers */
    bool draining;                     /* the server is stopping (rule 6) */
    struct pubsub *pubsub;             /* the reactor's topic table */
    struct pubsub *identities;         /* the reactor's identity table (DIRECT) */
    int nreactors;
    struct mailbox *const *boxes;      /* every reactor's mailbox, for fan-outs */
    struct mailbox *main_box;          /* the main thread's mailbox (admin reload) */
    struct buffer_pool *bufs;          /* the reactor's emptied buffers (may be NULL) */
    const struct pipeline_host_ops *ops; /* the reactor's services (NULL in unit tests) */
    void *host;                        /* their first argument */
    struct ev_loop *loop;              /* the reactor's loop (NULL in unit tests) */
    struct codec_ctx *codec;           /* the reactor's (de)compression state (may be NULL) */
    const struct backplane *backplane; /* the cluster link (backplane.h), or NULL */
};

/* Marks the calling thread as the one that runs env's pipelines (a reactor
 * thread, once, before its loop runs). */
void pipeline_env_enter(const struct pipeline_env *env);

/* The env of the reactor the calling thread runs, or NULL on any other
 * thread. Any thread. */
const struct pipeline_env *pipeline_env_current(void);

/* A protocol: a splitter, a decoder/handler, and how to refuse a stream.
 * Adding a protocol is one file that defines one of these plus one row in
 * the acceptor's protocol table. */
struct proto {
    const char *name;
    bool counted;      /* counts against max_connections */
    /* Keeps serving through a drain: its listener stays open and accepting,
     * the drain neither closes its connections nor waits for them, and they
     * close when the process exits (http, so /readyz can say 503). */
    bool serves_drain;
    /* Splitter. Looks at n unprocessed bytes at p: returns the length of the
     * first whole frame (> 0), 0 when more bytes are needed, or a negative
     * protocol error code when the stream breaks the protocol. */
    long (*split)(struct pipeline *pl, const uint8_t *p, size_t n);
    /* Decodes and handles one whole frame of len bytes (as split returned). */
    void (*handle)(struct pipeline *pl, const uint8_t *frame, size_t len);
    /* Encodes the refusal for split's error (negative code); the connection
     * is then closed once its output is flushed. */
    void (*violation)(struct pipeline *pl, long code);
    /* Optional: the push for a silent connection's heartbeat (NULL: none). */
    void (*heartbeat)(struct pipeline *pl);
    /* Optional: the last word before an idle connection is closed. */
    void (*idle)(struct pipeline *pl);
    /* Optional: the notice that the server is stopping in ms milliseconds.
     * Without it the connection is closed once its output is flushed. */
    void (*goaway)(struct pipeline *pl, uint32_t ms);
    /* Optional: the connection has been accepted and can be found by its id. */
    void (*open)(struct pipeline *pl);
    /* Optional: releases the protocol's state of a closing connection. */
    void (*free)(struct pipeline *pl);
    /* Optional: the connection's identity (*len bytes), or NULL. */
    const char *(*identity)(const struct pipeline *pl, size_t *len);
};

enum pipeline_flags {
    PIPELINE_CLOSE = 1u << 0,   /* close once the output is flushed; read no more */
    PIPELINE_FAILED = 1u << 1,  /* out of memory: close now */
    PIPELINE_GONE = 1u << 2,    /* being freed: nothing may be queued to it any more */
    PIPELINE_HOLD = 1u << 3,    /* input held: a request waits on a worker before the
                                 * next may run (proto_msg_frames_offload); reading
                                 * and handling stop until it is cleared */
};

/* A reply slot held for order: either a worker job not back yet, or replies
 * encoded while an earlier job was still out. */
struct pipeline_slot {
    struct pipeline_slot *next;
    uint32_t seq;                /* the job's sequence number (job slots) */
    bool waiting;                /* a job slot whose result has not come back */
    uint8_t codec;               /* the pipeline's codec when the slot was opened:
                                  * the most its reply may be compressed with */
    bool push;                   /* a job slot for a push (pipeline_reserve_push) */
    int lat_idx;                 /* job slots: the latency histogram (latency.h) */
    uint64_t t0_ns;              /* job slots: when the request was decoded */
    struct buffer bytes;         /* encoded replies, in order */
};

struct pipeline {
    const struct proto *proto;
    const struct pipeline_env *env;
    uint64_t conn_id;
    uint32_t flags;              /* enum pipeline_flags */
    uint8_t out_class;           /* buffer_class() of the last output buffer given
                                  * back: the next one starts that big */
    uint8_t codec;               /* the codec its output may be compressed with
                                  * (codec.h; CODEC_NONE = 0 until HELLO agrees one) */
    struct buffer out;           /* encoded bytes waiting for the socket */
    struct outq *outq;           /* shared pieces queued among out's bytes
                                  * (outq.h), or NULL: none */
    /* Replies held for order (rule 1). Empty (NULL) unless a worker job is
     * out, so inline-only traffic goes straight to out and pays nothing. */
    struct pipeline_slot *slots_head, *slots_tail;
    uint32_t jobs_pending;       /* job slots still waiting */
    uint32_t push_holds;         /* of them, pushes (pipeline_reserve_push) */
    uint32_t next_seq;           /* the next job's sequence number */
    size_t held_bytes;           /* bytes held in slots */
    void *state;                 /* the protocol's own per-connection state, or NULL
                                  * (allocated when first needed; proto->free
                                  * releases it) */
    uint64_t req_t0;             /* when the request being handled was decoded
                                  * (set per batch by conn, chained by proto_msg) */
    bool read_before_drain;      /* the frame being handled was read before the
                                  * GOAWAY: answered as usual (rule 6) */
    bool secure;                 /* the connection runs inside TLS */
};

/* Queues n bytes of encoded reply in request order: straight to out when no
 * job is pending, else behind the pending jobs. A buffer with no memory takes
 * it from env->bufs first. On allocation failure marks
 * the pipeline PIPELINE_FAILED. Reactor thread only. */
void pipeline_write(struct pipeline *pl, const void *p, size_t n);

/* The same for two pieces (a header and a payload, say). Reactor thread only. */
void pipeline_write2(struct pipeline *pl, const void *a, size_t an, const void *b, size_t bn);

/* Queues a server push (PING, MESSAGE, GOAWAY) straight to out: pushes may
 * go between replies. Reactor thread only. */
void pipeline_push2(struct pipeline *pl, const void *a, size_t an, const void *b, size_t bn);

/* Queues a data push (a MESSAGE, a DELIVER, a module's push): like
 * pipeline_push2, except while a push is held (pipeline_reserve_push):
 * then behind it, in order. Reactor thread only. */
void pipeline_push_data2(struct pipeline *pl, const void *a, size_t an, const void *b, size_t bn);

/* Queues a data push whose bytes (len at p) others share: a reference to
 * them owned by ref, or, when that is not worth it (a small frame), memory
 * is short or a push is held, a copy. Like pipeline_push_data2 otherwise.
 * Reactor thread only. */
void pipeline_push_shared(struct pipeline *pl, struct outq_ref *ref, const void *p, size_t len);

/* Holds a place in the reply order for a reply that comes later (a worker
 * job, a fan-out) and returns its sequence number, or -ENOMEM. t0_ns and
 * lat_idx are kept for the latency histogram. Reactor thread only. */
long pipeline_reserve(struct pipeline *pl, uint64_t t0_ns, int lat_idx);

/* Holds a place for a data push that comes later (one compressed on a
 * worker): in the reply order, like a job's, and ahead of every data push
 * queued after it (pipeline_push_data2), so pushes keep their order.
 * Control pushes (PING, GOAWAY, a connection error) still go straight out.
 * Not timed. Returns its sequence number, or -ENOMEM. Reactor thread only. */
long pipeline_reserve_push(struct pipeline *pl);

/* Gives back the place just reserved (the job could not be queued). */
void pipeline_unreserve(struct pipeline *pl, uint32_t seq);

/* Delivers job seq's encoded reply (its buffer is taken over and emptied)
 * and moves every reply now in order to out. Returns 0 and the slot's t0_ns
 * and lat_idx (-1: a push, not timed), or -ENOENT when no slot has that
 * number. Reactor thread only. */
int pipeline_complete(struct pipeline *pl, uint32_t seq, struct buffer *reply,
                      uint64_t *t0_ns, int *lat_idx);

/* The codec job seq's reply may be compressed with: the one in force when
 * its request was handled (a reply to a request sent before HELLO goes out
 * plain, even when it completes after HELLO), CODEC_NONE when there is no
 * such slot. Reactor thread only. */
unsigned pipeline_slot_codec(const struct pipeline *pl, uint32_t seq);

/* The codec a push queued now may be compressed with: pl->codec, except
 * while a job from before HELLO agreed it is still out. Its reply, and
 * HELLO's behind it, are not on the wire yet, and a push goes ahead of
 * them. Reactor thread only. */
static inline unsigned pipeline_push_codec(const struct pipeline *pl)
{
    return pl->slots_head && pl->slots_head->codec != pl->codec ? 0u : pl->codec;
}

/* True when output waits for the socket. */
static inline bool pipeline_has_output(const struct pipeline *pl)
{
    return buffer_readable(&pl->out) > 0 || pl->outq != NULL;
}

/* Bytes not yet written: out, the shared pieces and the held replies. */
static inline size_t pipeline_pending(const struct pipeline *pl)
{
    return buffer_readable(&pl->out) + outq_shared(pl->outq) + pl->held_bytes;
}

/* True when the connection owes nothing: no output, no job out, no request
 * held on a worker (PIPELINE_HOLD: a big COMPRESSED request being
 * decompressed has no reply slot yet, and the input behind it is owed
 * answers too). */
static inline bool pipeline_idle(const struct pipeline *pl)
{
    return !pipeline_has_output(pl) && pl->slots_head == NULL && !(pl->flags & PIPELINE_HOLD);
}

/* Puts reply, produced away from the connection's own callbacks (a worker
 * job, a fan-out, the main thread), into slot seq of connection conn_id on
 * env's reactor, records the slot's latency, and sends whatever is now in
 * order. reply is taken over and left empty either way. Returns 0, or
 * -ENOENT when the connection or its slot has gone (the reply is dropped).
 * Reactor thread only. */
int pipeline_complete_late(const struct pipeline_env *env, uint64_t conn_id, uint32_t seq,
                           struct buffer *reply);

/* A reply produced on another thread for slot seq of connection conn_id,
 * carried to the connection's reactor in its mailbox. */
struct pipeline_reply_item {
    struct mailbox_item item;
    uint64_t conn_id;
    uint32_t seq;
    struct buffer bytes;               /* the encoded reply; fill before posting */
};

/* Allocates a reply item whose run completes the slot (late replies whose
 * connection has gone are dropped) and frees the item. Returns NULL when out
 * of memory. Thread-safe. */
struct pipeline_reply_item *pipeline_reply_item_new(uint64_t conn_id, uint32_t seq);

/* Frees an item that was not posted. Thread-safe. */
void pipeline_reply_item_free(struct pipeline_reply_item *r);

/* Frees the held slots and the output. Reactor thread only. */
void pipeline_free(struct pipeline *pl);

/* Asks for the connection to be closed once everything queued is sent. */
static inline void pipeline_close_after_flush(struct pipeline *pl) { pl->flags |= PIPELINE_CLOSE; }

#endif
