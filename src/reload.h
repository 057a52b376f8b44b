/* reload: the admin `reload` command's round trip. A reactor asks the main
 * thread (through its mailbox) to reload; the main thread keeps the asking
 * connections as waiters, runs the reload, and answers every waiter with one
 * line and END, whatever happens, as a late reply to the slot each one holds
 * in its connection's reply order. */
#ifndef MSGD_RELOAD_H
#define MSGD_RELOAD_H

#include <stdbool.h>

#include "mailbox.h"

struct pipeline;
struct reload_waiter;

/* The main thread's side. It is also the context the main thread's mailbox
 * items run with (mailbox.h). Main thread only, but for what says otherwise. */
struct reload_hub {
    struct reload_waiter *waiters;     /* asked, not answered yet */
    struct mailbox *const *boxes;      /* every reactor's mailbox, for the answers */
    /* Starts a reload for the waiters that arrived; the reload's end must
     * call reload_hub_answer. */
    void (*start)(struct reload_hub *hub);
    bool refuse;                       /* draining: answer at once, reload nothing */
};

/* Reactor thread: asks for a reload for pl's connection, holding a place in
 * its reply order for the answer. On failure (out of memory) answers with an
 * ERR line at once. */
void reload_request(struct pipeline *pl);

/* Answers every waiter with line, then END. A waiter whose answer cannot be
 * allocated gets nothing, and its connection keeps waiting: logged by the
 * caller through the return value, the number of waiters left unanswered. */
unsigned reload_hub_answer(struct reload_hub *hub, const char *line);

/* Frees the waiters without answering (their connections are gone). */
void reload_hub_free(struct reload_hub *hub);

#endif
