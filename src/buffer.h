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

/* Marks n bytes after the readable region as written (n <= writable). */
static inline void buffer_commit(struct buffer *b, size_t n) { b->wpos += n; }

/* Appends n bytes. Returns 0 or -ENOMEM (the buffer is unchanged then). */
int buffer_append(struct buffer *b, const void *p, size_t n);

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

#endif
