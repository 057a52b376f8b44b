/* reload: the admin `reload` request, from a reactor to the main thread and
 * the answer back. */
#include "reload.h"

#include <stdlib.h>
#include <string.h>

#include "latency.h"
#include "pipeline.h"

struct reload_waiter {
    struct mailbox_item item;          /* the request's trip to the main thread */
    struct reload_waiter *next;        /* main thread: in hub->waiters */
    int reactor;
    uint64_t conn_id;
    uint32_t seq;
};

static void reply_line(struct pipeline *pl, const char *s)
{
    pipeline_write2(pl, s, strlen(s), "\n", 1);
}

/* Main thread: a request arrived. */
static void request_run(struct mailbox_item *it, void *ctx)
{
    struct reload_hub *hub = ctx;
    struct reload_waiter *w = (struct reload_waiter *)it;
    w->next = hub->waiters;
    hub->waiters = w;
    if (hub->refuse)
        reload_hub_answer(hub, "ERR shutting down");
    else
        hub->start(hub);
}

static void request_drop(struct mailbox_item *it) { free(it); }

void reload_request(struct pipeline *pl)
{
    long seq = pipeline_reserve(pl, latency_now_ns(), LAT_OTHER);
    struct reload_waiter *w = seq < 0 ? NULL : calloc(1, sizeof *w);
    if (!w) {
        if (seq >= 0)
            pipeline_unreserve(pl, (uint32_t)seq);
        reply_line(pl, "ERR out of memory");
        reply_line(pl, "END");
        return;
    }
    w->item.run = request_run;
    w->item.drop = request_drop;
    w->reactor = pl->env->reactor;
    w->conn_id = pl->conn_id;
    w->seq = (uint32_t)seq;
    mailbox_post(pl->env->main_box, &w->item);
}

unsigned reload_hub_answer(struct reload_hub *hub, const char *line)
{
    unsigned lost = 0;
    while (hub->waiters) {
        struct reload_waiter *w = hub->waiters;
        hub->waiters = w->next;
        struct pipeline_reply_item *r = pipeline_reply_item_new(w->conn_id, w->seq);
        if (r && buffer_append(&r->bytes, line, strlen(line)) == 0 &&
            buffer_append(&r->bytes, "\nEND\n", 5) == 0) {
            mailbox_post(hub->boxes[w->reactor], &r->item);
        } else {
            pipeline_reply_item_free(r);
            lost++;
        }
        free(w);
    }
    return lost;
}

void reload_hub_free(struct reload_hub *hub)
{
    while (hub->waiters) {
        struct reload_waiter *w = hub->waiters;
        hub->waiters = w->next;
        free(w);
    }
}
