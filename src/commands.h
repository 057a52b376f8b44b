/* commands: the msg command table and the built-in handlers. A new business
 * command is one handler and one row in the table (commands.c). */
#ifndef MSGD_COMMANDS_H
#define MSGD_COMMANDS_H

#include <stddef.h>
#include <stdint.h>

#include "pipeline.h"
#include "worker.h"

/* Handles one request on the reactor. payload is valid only during the call:
 * a handler that keeps it must copy it. An inline handler answers through
 * proto_msg_reply/_error and returns 0. A worker command's handler is its
 * check: it returns 0 to queue the job, or answers (an error) and returns -1.
 * Reactor thread only. */
typedef int (*cmd_fn)(struct pipeline *pl, uint32_t cmd, const uint8_t *payload, size_t len);

enum cmd_where {
    CMD_INLINE,   /* runs on the connection's reactor, reply encoded at once */
    CMD_WORKER,   /* runs on the reactor's worker pool; the reply comes back in order */
};

struct cmd_def {
    uint32_t number;
    const char *name;
    enum cmd_where where;
    int needs_auth;    /* refused with NOT_AUTHENTICATED before AUTH when tokens are set */
    cmd_fn fn;         /* the handler (inline) or the check (worker) */
    worker_run_fn run; /* CMD_WORKER: the work, on a worker thread; it encodes
                        * the whole reply frame into job->result */
};

/* The table row for a request's command word, or NULL (UNKNOWN_COMMAND).
 * Any word with bit 30 or 31 set has no row. Thread-safe. */
const struct cmd_def *commands_find(uint32_t command);

#endif
