/* module_runtime: what lets module calls cross threads while msgd runs:
 * every reactor's mailbox (for msgd_send, msgd_close and deferred replies)
 * and each reactor's table of module timers. Opened and closed by the main
 * thread through module_host.h. */
#ifndef MSGD_MODULE_RUNTIME_H
#define MSGD_MODULE_RUNTIME_H

struct mailbox;

/* Opens the runtime: nreactors reactors whose mailboxes are boxes (kept, not
 * copied). Returns 0 or -ENOMEM. Main thread, before the reactors start. */
int module_runtime_start(int nreactors, struct mailbox *const *boxes);

/* Closes it: posts from now on fail with -ESHUTDOWN; timers still running
 * are cancelled without a call. Main thread, after every reactor has left
 * its loop and before their loops are destroyed. */
void module_runtime_stop(void);

/* The mailbox of reactor index, or NULL when there is no such reactor or the
 * runtime is closed. Any thread. */
struct mailbox *module_runtime_box(int index);

#endif
