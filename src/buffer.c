/* buffer: growable byte buffer with prependable, readable and writable regions. */
#include "buffer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define BUFFER_MIN 1024

int buffer_reserve(struct buffer *b, size_t n)
{
    if (buffer_writable(b) >= n)
        return 0;
    size_t readable = buffer_readable(b);
    /* Enough room in total once the readable bytes move to the front? */
    if (b->data && b->cap - readable - BUFFER_PREPEND >= n && b->rpos > BUFFER_PREPEND) {
        memmove(b->data + BUFFER_PREPEND, b->data + b->rpos, readable);
        b->rpos = BUFFER_PREPEND;
        b->wpos = BUFFER_PREPEND + readable;
        return 0;
    }
    if (n > SIZE_MAX / 2 - readable - BUFFER_PREPEND)
        return -ENOMEM;
    size_t need = BUFFER_PREPEND + readable + n;
    size_t cap = b->cap ? b->cap : BUFFER_MIN;
    while (cap < need)
        cap *= 2;
    uint8_t *p = malloc(cap);
    if (!p)
        return -ENOMEM;
    if (readable)
        memcpy(p + BUFFER_PREPEND, b->data + b->rpos, readable);
    free(b->data);
    b->data = p;
    b->cap = cap;
    b->rpos = BUFFER_PREPEND;
    b->wpos = BUFFER_PREPEND + readable;
    return 0;
}

int buffer_append(struct buffer *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    int rc = buffer_reserve(b, n);
    if (rc < 0)
        return rc;
    memcpy(b->data + b->wpos, p, n);
    b->wpos += n;
    return 0;
}

void buffer_consume(struct buffer *b, size_t n)
{
    b->rpos += n;
    if (b->rpos == b->wpos)
        b->rpos = b->wpos = b->data ? BUFFER_PREPEND : 0;
}

int buffer_prepend(struct buffer *b, const void *p, size_t n)
{
    if (!b->data || b->rpos < n)
        return -ENOSPC;
    b->rpos -= n;
    memcpy(b->data + b->rpos, p, n);
    return 0;
}

int buffer_shrink(struct buffer *b, size_t keep)
{
    if (buffer_readable(b) != 0 || b->cap <= keep)
        return 0;
    buffer_free(b);
    return 1;
}

void buffer_free(struct buffer *b)
{
    free(b->data);
    *b = (struct buffer)BUFFER_INIT;
}
