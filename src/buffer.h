/* buffer: a growable byte buffer with a prependable region, a readable region
 * and a writable region (after muduo's Buffer):
 *
 *   | prependable | readable (rpos..wpos) | writable (wpos..cap) |
 *
 * A buffer starts with no memory at all, so an idle connection holds none.
 * Not thread-safe: a buffer belongs to one thread at a time. */
#ifndef MSGD_BUFFER_H
#define MSGD_BUFFER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define BUFFER_PREPEND 16    /* room kept in front for one msg header */

struct buffer {
    uint8_t *data;           /* NULL until the first write */
    size_t cap;              /* bytes allocated at data */
    size_t rpos;             /* start of the readable bytes */
    size_t wpos;             /* end of the readable bytes */
};

#define BUFFER_INIT {NULL, 0, 0, 0}

static inline size_t buffer_readable(const struct buffer *b) { return b->wpos - b->rpos; }
static inline size_t buffer_writable(const struct buffer *b) { return b->cap - b->wpos; }
/* The readable bytes, and the writable room (NULL for a buffer with no memory). */
static inline uint8_t *buffer_peek(const struct buffer *b) { return b->data ? b->data + b->rpos : NULL; }
static inline uint8_t *buffer_tail(const struct buffer *b) { return b->data ? b->data + b->wpos : NULL; }

/* Makes room for at least n more writable bytes, first by moving the readable
 * bytes to the front, then by growing (doubling). Returns 0 or -ENOMEM. */
int buffer_reserve(struct buffer *b, size_t n);

/* The same, but a buffer that must grow is never given a capacity above
 * limit (when the bytes needed fit in limit): for output whose size a peer
 * controls, bounded by a configured maximum. */
int buffer_reserve_upto(struct buffer *b, size_t n, size_t limit);

/* Marks n bytes after the readable region as written (n <= writable). */
static inline void buffer_commit(struct buffer *b, size_t n) { b->wpos += n; }

/* Appends n bytes. Returns 0 or -ENOMEM (the buffer is unchanged then). */
int buffer_append(struct buffer *b, const void *p, size_t n);

/* Appends printf-formatted text (without its NUL). Returns 0, or -ENOMEM or
 * -EINVAL (a bad format) with the buffer unchanged. */
int buffer_printf(struct buffer *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Drops n readable bytes from the front (n <= readable). An emptied buffer
 * rewinds to the prepend mark, so the next write starts at the front. */
void buffer_consume(struct buffer *b, size_t n);

/* Puts n bytes in front of the readable region, using the prependable room.
 * Returns 0, or -ENOSPC when fewer than n bytes are prependable. */
int buffer_prepend(struct buffer *b, const void *p, size_t n);

/* Frees the memory when the buffer is empty and holds more than keep bytes.
 * Returns 1 when it freed, else 0. */
int buffer_shrink(struct buffer *b, size_t keep);

/* Frees the memory and resets the buffer to BUFFER_INIT. */
void buffer_free(struct buffer *b);

/* A pool of emptied buffers' memory, kept for reuse by the one thread that
 * owns it (a reactor), so a connection whose output drains gives its memory
 * back to the pool, not to malloc, and the next connection that needs output
 * takes it from there: no malloc/free cycle per drain, and no page faults
 * when the allocator would have handed freed pages back to the kernel.
 *
 * A writer takes the smallest kept buffer that fits what it writes, and
 * grows into bigger kept ones (buffer_pool_reserve). The pool is bounded: it keeps at most max_bytes in all and no
 * buffer larger than max_item; when a returned buffer does not fit, smaller
 * kept ones are freed to make room for it, else it is freed itself. Kept
 * buffers are listed by size class (powers of two from 1 KiB), linked
 * through their own memory, so the pool allocates nothing.
 * Not thread-safe: owner thread only. A NULL pool is allowed everywhere and
 * keeps nothing. */
#define BUFFER_POOL_CLASSES 16

struct buffer_pool {
    void *list[BUFFER_POOL_CLASSES];   /* class k: caps in [1 KiB << k, 1 KiB << (k + 1)) */
    uint32_t count[BUFFER_POOL_CLASSES];
    size_t bytes;                      /* sum of the kept buffers' cap */
    size_t low;                        /* the least bytes kept since the last trim */
    size_t max_bytes, max_item;
};

/* The size class of a buffer of cap bytes (0 for 1 KiB and less), and the
 * capacity of a class: a small number that remembers a buffer's size. */
unsigned buffer_class(size_t cap);
static inline size_t buffer_class_cap(unsigned k) { return (size_t)1024 << k; }

/* The largest max_item a pool may have (its top size class). */
#define BUFFER_POOL_ITEM_MAX ((size_t)32 << 20)

/* Sets up an empty pool with its bounds (max_item at most
 * BUFFER_POOL_ITEM_MAX). */
void buffer_pool_init(struct buffer_pool *p, size_t max_bytes, size_t max_item);

/* Changes the bounds of a pool in use. What it keeps past new, smaller ones
 * is freed at once, largest buffers first. */
void buffer_pool_set_bounds(struct buffer_pool *p, size_t max_bytes, size_t max_item);

/* Gives b, which must hold no memory, the largest kept buffer. Returns 1
 * when it did, 0 when the pool is empty (b is unchanged then). (Writers use
 * buffer_pool_reserve, which takes only what fits.) */
int buffer_pool_get(struct buffer_pool *p, struct buffer *b);

/* Gives b room for n bytes: when b holds no memory, the smallest kept
 * buffer that fits (for memory whose size is known up front), else new
 * memory. Returns 0 or -ENOMEM. */
int buffer_pool_get_fit(struct buffer_pool *p, struct buffer *b, size_t n);

/* Makes room for n more writable bytes like buffer_reserve, but through the
 * pool: memory for an empty buffer is the smallest kept one that fits, and a
 * buffer that must grow moves its bytes into a bigger kept one (or new
 * memory) and gives its old memory to the pool. So a writer that keeps
 * growing to the same size in bursts reuses the same memory every time.
 * Returns 0 or -ENOMEM (b unchanged). */
int buffer_pool_reserve(struct buffer_pool *p, struct buffer *b, size_t n);

/* Appends n bytes through buffer_pool_reserve. Returns 0 or -ENOMEM. */
int buffer_pool_append(struct buffer_pool *p, struct buffer *b, const void *data, size_t n);

/* Takes b's memory back when b is empty: kept when it fits the bounds, freed
 * otherwise; b is left as BUFFER_INIT. A buffer that still holds readable
 * bytes is left alone. Returns 1 when b gave up its memory, else 0. */
int buffer_pool_put(struct buffer_pool *p, struct buffer *b);

/* Frees what the pool kept all along since the last trim (its lowest level
 * since then), largest buffers first: called periodically, it lets the pool
 * shrink to what its owner actually cycles through, so a burst long past
 * holds no memory. Returns the bytes freed. */
size_t buffer_pool_trim(struct buffer_pool *p);

/* How many buffers the pool keeps now. */
uint32_t buffer_pool_count(const struct buffer_pool *p);

/* Frees everything the pool keeps; the pool stays usable (empty). */
void buffer_pool_free(struct buffer_pool *p);

#endif
