/* outq: shared pieces queued among a connection's own output bytes. */
#include "outq.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define OUTQ_MIN_CAP 8

void outq_ref_put(struct outq_ref *r)
{
    if (atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) == 1)
        r->release(r);
}

static struct outq_entry *at(const struct outq *q, uint32_t i)
{
    return &q->e[(q->head + i) % q->cap];
}

/* Makes room for need entries, unrolling the ring to the front. */
static int grow(struct outq *q, uint32_t need)
{
    uint32_t cap = q->cap ? q->cap : OUTQ_MIN_CAP;
    while (cap < need)
        cap *= 2;
    struct outq_entry *e = malloc(sizeof *e * cap);
    if (!e)
        return -ENOMEM;
    for (uint32_t i = 0; i < q->n; i++)
        e[i] = *at(q, i);
    free(q->e);
    q->e = e;
    q->cap = cap;
    q->head = 0;
    return 0;
}

static void append(struct outq *q, struct outq_ref *ref, const void *p, size_t len)
{
    *at(q, q->n) = (struct outq_entry){.ref = ref, .p = p, .len = len};
    q->n++;
}

int outq_push(struct outq **qp, const struct buffer *out, struct outq_ref *ref, const void *p,
              size_t len)
{
    struct outq *q = *qp;
    bool fresh = q == NULL;
    if (fresh && (q = calloc(1, sizeof *q)) == NULL)
        return -ENOMEM;
    size_t own = buffer_readable(out) - q->covered; /* written to out since the last entry */
    uint32_t need = q->n + 1 + (own > 0);
    if (need > q->cap && grow(q, need) < 0) {
        if (fresh)
            free(q);
        return -ENOMEM;
    }
    if (own > 0) {
        append(q, NULL, NULL, own);
        q->covered += own;
    }
    append(q, ref, p, len);
    q->shared += len;
    outq_ref_get(ref);
    *qp = q;
    return 0;
}

int outq_iov(const struct outq *q, const struct buffer *out, struct iovec *iov, int max)
{
    int k = 0;
    size_t off = 0; /* into out's readable bytes */
    uint8_t *own = buffer_peek(out);
    for (uint32_t i = 0; q && i < q->n && k < max; i++) {
        const struct outq_entry *e = at(q, i);
        if (e->ref) {
            iov[k++] = (struct iovec){(void *)(uintptr_t)e->p, e->len};
        } else {
            iov[k++] = (struct iovec){own + off, e->len};
            off += e->len;
        }
    }
    size_t covered = q ? q->covered : 0;
    if (k < max && buffer_readable(out) > covered)
        iov[k++] = (struct iovec){own + covered, buffer_readable(out) - covered};
    return k;
}

static void drop_head(struct outq *q)
{
    q->head = (q->head + 1) % q->cap;
    q->n--;
}

void outq_consume(struct outq **qp, struct buffer *out, size_t n)
{
    struct outq *q = *qp;
    while (n > 0 && q && q->n > 0) {
        struct outq_entry *e = at(q, 0);
        size_t take = n < e->len ? n : e->len;
        e->len -= take;
        n -= take;
        if (e->ref) {
            e->p += take;
            q->shared -= take;
        } else {
            buffer_consume(out, take);
            q->covered -= take;
        }
        if (e->len == 0) {
            struct outq_ref *ref = e->ref;
            drop_head(q);
            if (ref)
                outq_ref_put(ref);
        }
    }
    if (q && q->n == 0) {
        free(q->e);
        free(q);
        *qp = NULL;
    }
    if (n > 0)
        buffer_consume(out, n); /* out's bytes after every entry */
}

void outq_free(struct outq **qp)
{
    struct outq *q = *qp;
    if (!q)
        return;
    for (uint32_t i = 0; i < q->n; i++)
        if (at(q, i)->ref)
            outq_ref_put(at(q, i)->ref);
    free(q->e);
    free(q);
    *qp = NULL;
}
