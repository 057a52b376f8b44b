/* outq: the part of a connection's output that other connections share.
 *
 * A payload many receivers get (a PUBLISH's MESSAGE frame, a DIRECT's
 * DELIVER) is stored once, in memory its owner reference-counts (struct
 * outq_ref), and queued to each receiver as a reference: a piece. A
 * connection's output is then its own bytes (its struct buffer, `out`) and
 * the pieces, in the order they were queued, sent together with one writev.
 *
 * The queue only says where the pieces go among out's bytes: each entry is
 * either the next `len` bytes of out, or a piece. Bytes appended to out after
 * the last entry come after every entry, so code that writes to out needs
 * no change: only what sends and consumes output looks at the queue.
 *
 * A connection with no shared piece queued has no queue (NULL): an idle
 * connection holds no memory for it, and output that is all its own takes
 * the plain path. Reactor thread only (the connection's); outq_ref_put may be
 * called from any thread. */
#ifndef MSGD_OUTQ_H
#define MSGD_OUTQ_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "buffer.h"

/* Pieces smaller than this are copied into the receiver's own output
 * instead: for a small frame the copy costs less than the reference (an
 * atomic count shared between reactors) and one more iovec entry per write. */
#ifndef OUTQ_SHARE_MIN /* -DOUTQ_SHARE_MIN=... to measure another threshold */
#define OUTQ_SHARE_MIN 2048
#endif

/* The most iovec entries one write is given. */
#define OUTQ_IOV_MAX 64

/* An owner of shared bytes, embedded in whatever holds them. The last put
 * calls release, on the thread that made it. */
struct outq_ref {
    _Atomic uint32_t refs;
    void (*release)(struct outq_ref *r);
};

static inline void outq_ref_init(struct outq_ref *r, uint32_t refs, void (*release)(struct outq_ref *))
{
    atomic_init(&r->refs, refs);
    r->release = release;
}

static inline void outq_ref_get(struct outq_ref *r)
{
    atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
}

/* Drops one reference; the last one releases the owner. Any thread. */
void outq_ref_put(struct outq_ref *r);

struct outq_entry {
    struct outq_ref *ref;        /* the piece's owner, or NULL: len bytes of out */
    const uint8_t *p;            /* the piece's unsent bytes (ref only) */
    size_t len;
};

struct outq {
    uint32_t head, n, cap;       /* a ring of cap entries, n used from head */
    size_t covered;              /* out's bytes the entries account for */
    size_t shared;               /* the pieces' unsent bytes */
    struct outq_entry *e;
};

/* Queues len bytes at p, owned by ref (one reference taken), after
 * everything out and *qp hold now. Allocates the queue when *qp is NULL.
 * Returns 0, or -ENOMEM with nothing queued. */
int outq_push(struct outq **qp, const struct buffer *out, struct outq_ref *ref, const void *p,
              size_t len);

/* The pieces' unsent bytes (0 for no queue). */
static inline size_t outq_shared(const struct outq *q) { return q ? q->shared : 0; }

/* Fills iov (at most max entries) with the output in order: the entries,
 * then out's bytes after them. Returns the number of entries used. */
int outq_iov(const struct outq *q, const struct buffer *out, struct iovec *iov, int max);

/* Drops the first n bytes of the output (as outq_iov lists it) after they
 * were sent: out's from out, pieces' by releasing each finished piece's
 * reference. Frees the queue once it holds no piece (*qp = NULL). */
void outq_consume(struct outq **qp, struct buffer *out, size_t n);

/* Releases every piece's reference and frees the queue (the connection is
 * closing); *qp = NULL. out is left to its owner. */
void outq_free(struct outq **qp);

#endif
