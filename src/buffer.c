/* buffer: growable byte buffer with prependable, readable and writable regions. */
#include "buffer.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define BUFFER_MIN 1024
/* Buffers this big get pages of their own (mmap), so freeing one returns
 * its memory to the system at once, whatever the allocator's thresholds. */
#define BUFFER_MAP_MIN (16 * 1024)

static uint8_t *mem_alloc(size_t cap)
{
    if (cap < BUFFER_MAP_MIN)
        return malloc(cap);
    void *p = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void mem_free(void *p, size_t cap)
{
    if (cap < BUFFER_MAP_MIN)
        free(p);
    else if (p)
        munmap(p, cap);
}

int buffer_reserve(struct buffer *b, size_t n) { return buffer_reserve_upto(b, n, SIZE_MAX); }

int buffer_reserve_upto(struct buffer *b, size_t n, size_t limit)
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
    if (cap > limit && need <= limit)
        cap = limit;
    uint8_t *p = mem_alloc(cap);
    if (!p)
        return -ENOMEM;
    if (readable)
        memcpy(p + BUFFER_PREPEND, b->data + b->rpos, readable);
    mem_free(b->data, b->cap);
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

int buffer_printf(struct buffer *b, const char *fmt, ...)
{
    size_t want = 128;
    for (int pass = 0; pass < 2; pass++) {
        int rc = buffer_reserve(b, want);
        if (rc < 0)
            return rc;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf((char *)b->data + b->wpos, buffer_writable(b), fmt, ap);
        va_end(ap);
        if (n < 0)
            return -EINVAL;
        if ((size_t)n < buffer_writable(b)) {
            b->wpos += (size_t)n;
            return 0;
        }
        want = (size_t)n + 1; /* the second pass has room for all of it */
    }
    return -ENOMEM;
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
    mem_free(b->data, b->cap);
    *b = (struct buffer)BUFFER_INIT;
}

/* What a kept buffer's first bytes hold while it is in the pool. */
struct pool_link {
    void *next;
    size_t cap;
};

/* The size class of cap (>= BUFFER_MIN): floor(log2(cap / 1 KiB)), capped. */
unsigned buffer_class(size_t cap)
{
    unsigned k = 0;
    while (k + 1 < BUFFER_POOL_CLASSES && cap >= ((size_t)BUFFER_MIN << (k + 1)))
        k++;
    return k;
}

void buffer_pool_init(struct buffer_pool *p, size_t max_bytes, size_t max_item)
{
    *p = (struct buffer_pool){0};
    buffer_pool_set_bounds(p, max_bytes, max_item);
}

/* Unlinks the first buffer of class k; returns its memory and cap. */
static uint8_t *pool_pop(struct buffer_pool *p, unsigned k, size_t *cap)
{
    struct pool_link *l = p->list[k];
    p->list[k] = l->next;
    p->count[k]--;
    p->bytes -= l->cap;
    if (p->bytes < p->low)
        p->low = p->bytes;
    *cap = l->cap;
    return (uint8_t *)l;
}

void buffer_pool_set_bounds(struct buffer_pool *p, size_t max_bytes, size_t max_item)
{
    p->max_bytes = max_bytes;
    p->max_item = max_item < BUFFER_POOL_ITEM_MAX ? max_item : BUFFER_POOL_ITEM_MAX;
    /* What the new bounds no longer allow goes now, largest first. */
    for (unsigned k = BUFFER_POOL_CLASSES; k-- > 0;) {
        while (p->list[k] &&
               (p->bytes > p->max_bytes || ((struct pool_link *)p->list[k])->cap > p->max_item)) {
            size_t cap;
            uint8_t *m = pool_pop(p, k, &cap);
            mem_free(m, cap);
        }
    }
}

int buffer_pool_get(struct buffer_pool *p, struct buffer *b)
{
    if (!p || b->data != NULL)
        return 0;
    for (unsigned k = BUFFER_POOL_CLASSES; k-- > 0;) {
        if (!p->list[k])
            continue;
        b->data = pool_pop(p, k, &b->cap);
        b->rpos = b->wpos = BUFFER_PREPEND;
        return 1;
    }
    return 0;
}

int buffer_pool_get_fit(struct buffer_pool *p, struct buffer *b, size_t n)
{
    if (p && b->data == NULL && n <= SIZE_MAX / 4) {
        size_t need = n + BUFFER_PREPEND;
        unsigned first = buffer_class(need);
        for (unsigned k = first; k < BUFFER_POOL_CLASSES && k <= first + 2; k++) {
            if (!p->list[k] || ((struct pool_link *)p->list[k])->cap < need)
                continue;
            b->data = pool_pop(p, k, &b->cap);
            b->rpos = b->wpos = BUFFER_PREPEND;
            return 0;
        }
    }
    return buffer_reserve(b, n);
}

int buffer_pool_reserve(struct buffer_pool *p, struct buffer *b, size_t n)
{
    if (buffer_writable(b) >= n)
        return 0;
    size_t readable = buffer_readable(b);
    if (!p || b->data == NULL || b->cap - readable - BUFFER_PREPEND >= n ||
        n > SIZE_MAX / 4 - readable)
        return b->data ? buffer_reserve(b, n) : buffer_pool_get_fit(p, b, n);
    struct buffer nb = BUFFER_INIT;
    if (buffer_pool_get_fit(p, &nb, readable + n) < 0)
        return -ENOMEM;
    memcpy(nb.data + nb.wpos, b->data + b->rpos, readable);
    nb.wpos += readable;
    b->rpos = b->wpos; /* emptied: its memory goes to the pool */
    buffer_pool_put(p, b);
    *b = nb;
    return 0;
}

int buffer_pool_append(struct buffer_pool *p, struct buffer *b, const void *data, size_t n)
{
    if (n == 0)
        return 0;
    if (buffer_pool_reserve(p, b, n) < 0)
        return -ENOMEM;
    memcpy(b->data + b->wpos, data, n);
    b->wpos += n;
    return 0;
}

/* Frees kept buffers of classes below k until cap more bytes fit. Returns
 * 1 when they fit, 0 when they cannot (nothing smaller is left). */
static int pool_make_room(struct buffer_pool *p, unsigned k, size_t cap)
{
    for (unsigned j = 0; j < k && p->bytes + cap > p->max_bytes;) {
        if (!p->list[j]) {
            j++;
            continue;
        }
        size_t c;
        uint8_t *m = pool_pop(p, j, &c);
        mem_free(m, c);
    }
    return p->bytes + cap <= p->max_bytes;
}

int buffer_pool_put(struct buffer_pool *p, struct buffer *b)
{
    if (b->data == NULL || buffer_readable(b) != 0)
        return 0;
    if (p && b->cap >= BUFFER_MIN && b->cap <= p->max_item && b->cap <= p->max_bytes) {
        unsigned k = buffer_class(b->cap);
        if (pool_make_room(p, k, b->cap)) {
            struct pool_link *l = (struct pool_link *)(void *)b->data;
            l->next = p->list[k];
            l->cap = b->cap;
            p->list[k] = l;
            p->count[k]++;
            p->bytes += b->cap;
            *b = (struct buffer)BUFFER_INIT;
            return 1;
        }
    }
    buffer_free(b);
    return 1;
}

size_t buffer_pool_trim(struct buffer_pool *p)
{
    size_t idle = p->low, freed = 0;
    for (unsigned k = BUFFER_POOL_CLASSES; k-- > 0;) {
        while (p->list[k] && ((struct pool_link *)p->list[k])->cap <= idle - freed) {
            size_t c;
            uint8_t *m = pool_pop(p, k, &c);
            mem_free(m, c);
            freed += c;
        }
    }
    p->low = p->bytes;
    return freed;
}

uint32_t buffer_pool_count(const struct buffer_pool *p)
{
    uint32_t n = 0;
    for (unsigned k = 0; k < BUFFER_POOL_CLASSES; k++)
        n += p->count[k];
    return n;
}

void buffer_pool_free(struct buffer_pool *p)
{
    for (unsigned k = 0; k < BUFFER_POOL_CLASSES; k++) {
        while (p->list[k]) {
            size_t c;
            uint8_t *m = pool_pop(p, k, &c);
            mem_free(m, c);
        }
    }
}
