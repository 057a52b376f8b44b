/* pubsub: a reactor's topic table (chained hash of topics, each with an
 * array of subscriber pipelines) and each subscriber's topic list. */
#include "pubsub.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct pubsub_topic {
    struct pubsub_topic *next;         /* hash chain */
    uint64_t hash;
    uint32_t nsubs, cap;
    struct pubsub_subs **subs;
    uint8_t len;
    bool announced;                    /* ps->watch was told it is held */
    uint8_t name[];
};

/* FNV-1a. */
static uint64_t topic_hash(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

void pubsub_init(struct pubsub *ps)
{
    ps->buckets = NULL;
    ps->nbuckets = 0;
    ps->ntopics = 0;
    ps->watch = NULL;
    ps->watch_arg = NULL;
    ps->watch_kind = 0;
}

void pubsub_free(struct pubsub *ps)
{
    for (uint32_t b = 0; b < ps->nbuckets; b++) {
        struct pubsub_topic *t = ps->buckets[b];
        while (t) {
            struct pubsub_topic *next = t->next;
            free(t->subs);
            free(t);
            t = next;
        }
    }
    free(ps->buckets);
    pubsub_init(ps);
}

static struct pubsub_topic **find_slot(struct pubsub *ps, const uint8_t *topic, size_t len,
                                       uint64_t h)
{
    if (ps->nbuckets == 0)
        return NULL;
    struct pubsub_topic **pp = &ps->buckets[h & (ps->nbuckets - 1)];
    while (*pp && !((*pp)->hash == h && (*pp)->len == len && memcmp((*pp)->name, topic, len) == 0))
        pp = &(*pp)->next;
    return pp;
}

static int grow_table(struct pubsub *ps)
{
    uint32_t n = ps->nbuckets ? ps->nbuckets * 2 : 64;
    struct pubsub_topic **b = calloc(n, sizeof *b);
    if (!b)
        return -ENOMEM;
    for (uint32_t i = 0; i < ps->nbuckets; i++) {
        struct pubsub_topic *t = ps->buckets[i];
        while (t) {
            struct pubsub_topic *next = t->next;
            t->next = b[t->hash & (n - 1)];
            b[t->hash & (n - 1)] = t;
            t = next;
        }
    }
    free(ps->buckets);
    ps->buckets = b;
    ps->nbuckets = n;
    return 0;
}

static int array_push(void ***arr, uint32_t *n, uint32_t *cap, void *item)
{
    if (*n == *cap) {
        uint32_t c = *cap ? *cap * 2 : 4;
        void **a = realloc(*arr, sizeof *a * c);
        if (!a)
            return -ENOMEM;
        *arr = a;
        *cap = c;
    }
    (*arr)[(*n)++] = item;
    return 0;
}

/* Removes item from an unordered array (swap with the last). */
static void array_remove(void **arr, uint32_t *n, const void *item)
{
    for (uint32_t i = 0; i < *n; i++)
        if (arr[i] == item) {
            arr[i] = arr[--*n];
            return;
        }
}

/* Drops t from the table when nobody subscribes to it any more. */
static void topic_release(struct pubsub *ps, struct pubsub_topic *t)
{
    if (t->nsubs > 0)
        return;
    if (t->announced && ps->watch)
        ps->watch(ps, t->name, t->len, false);
    struct pubsub_topic **pp = find_slot(ps, t->name, t->len, t->hash);
    if (pp && *pp == t)
        *pp = t->next;
    ps->ntopics--;
    free(t->subs);
    free(t);
}

int pubsub_subscribe(struct pubsub *ps, struct pubsub_subs **mine_p, struct pipeline *pl,
                     const uint8_t *topic, size_t len, uint32_t max)
{
    if (!*mine_p) {
        *mine_p = calloc(1, sizeof **mine_p);
        if (!*mine_p)
            return -ENOMEM;
        (*mine_p)->pl = pl;
    }
    struct pubsub_subs *mine = *mine_p;
    uint64_t h = topic_hash(topic, len);
    struct pubsub_topic **pp = find_slot(ps, topic, len, h);
    struct pubsub_topic *t = pp ? *pp : NULL;
    if (t)
        for (uint32_t i = 0; i < mine->n; i++)
            if (mine->topics[i] == t)
                return 0;
    if (mine->n >= max)
        return -EDQUOT;
    if (!t) {
        if (ps->ntopics >= ps->nbuckets && grow_table(ps) < 0)
            return -ENOMEM;
        t = calloc(1, sizeof *t + len);
        if (!t)
            return -ENOMEM;
        t->hash = h;
        t->len = (uint8_t)len;
        memcpy(t->name, topic, len);
        struct pubsub_topic **head = &ps->buckets[h & (ps->nbuckets - 1)];
        t->next = *head;
        *head = t;
        ps->ntopics++;
    }
    if (array_push((void ***)&t->subs, &t->nsubs, &t->cap, mine) < 0) {
        topic_release(ps, t);
        return -ENOMEM;
    }
    if (array_push((void ***)&mine->topics, &mine->n, &mine->cap, t) < 0) {
        array_remove((void **)t->subs, &t->nsubs, mine);
        topic_release(ps, t);
        return -ENOMEM;
    }
    if (!t->announced && ps->watch) {
        t->announced = true;
        ps->watch(ps, t->name, t->len, true);
    }
    return 1;
}

int pubsub_unsubscribe(struct pubsub *ps, struct pubsub_subs *mine, const uint8_t *topic,
                       size_t len)
{
    struct pubsub_topic **pp = find_slot(ps, topic, len, topic_hash(topic, len));
    struct pubsub_topic *t = pp ? *pp : NULL;
    if (!mine || !t)
        return 0;
    uint32_t before = mine->n;
    array_remove((void **)mine->topics, &mine->n, t);
    if (mine->n == before)
        return 0;
    array_remove((void **)t->subs, &t->nsubs, mine);
    topic_release(ps, t);
    return 1;
}

uint32_t pubsub_remove_all(struct pubsub *ps, struct pubsub_subs **mine_p)
{
    struct pubsub_subs *mine = *mine_p;
    if (!mine)
        return 0;
    uint32_t n = mine->n;
    for (uint32_t i = 0; i < n; i++) {
        struct pubsub_topic *t = mine->topics[i];
        array_remove((void **)t->subs, &t->nsubs, mine);
        topic_release(ps, t);
    }
    free(mine->topics);
    free(mine);
    *mine_p = NULL;
    return n;
}

uint32_t pubsub_deliver(struct pubsub *ps, const uint8_t *key, size_t klen,
                        const struct pubsub_frames *frames, uint64_t high_water, uint32_t *skipped)
{
    *skipped = 0;
    struct pubsub_topic **pp = find_slot(ps, key, klen, topic_hash(key, klen));
    struct pubsub_topic *t = pp ? *pp : NULL;
    if (!t)
        return 0;
    uint32_t n = 0;
    for (uint32_t i = 0; i < t->nsubs; i++) {
        struct pipeline *pl = t->subs[i]->pl;
        if (pipeline_pending(pl) > high_water || (pl->flags & PIPELINE_CLOSE)) {
            t->subs[i]->dropped++;
            (*skipped)++;
            continue;
        }
        unsigned c = pipeline_push_codec(pl);
        c = c < CODEC_COUNT && frames->p[c] ? c : 0;
        if (frames->owner)
            pipeline_push_shared(pl, frames->owner, frames->p[c], frames->n[c]);
        else
            pipeline_push_data2(pl, frames->p[c], frames->n[c], NULL, 0);
        n++;
        pl->env->ops->defer(pl);
    }
    return n;
}
