/* cmdtab: the command table, the one place a msg command is described: its
 * number, its name, where it runs (inline, on the worker pool, or deferred),
 * whether it needs AUTH, and its latency slot. Built-in commands and
 * modules' commands are registered here alike at start-up; STATS, metrics and
 * the latency histograms take their names from it.
 *
 * Registration is for the main thread during start-up, before any reactor
 * runs; after that the table is read-only and every lookup is thread-safe. */
#ifndef MSGD_CMDTAB_H
#define MSGD_CMDTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CMDTAB_SLOTS 64            /* latency slots; slot 0 is "OTHER" (no command) */
#define CMDTAB_NAME_MAX 32         /* bytes of a command's name, with its NUL */
#define CMDTAB_BUILTIN_MAX 1024    /* numbers below this are msgd's own */
#define CMDTAB_NUMBER_MAX 0x1FFFFFFFu /* bits 0..28 of the command word */

struct pipeline;
struct worker_pool;
struct worker_job;

/* Handles one request on the connection's reactor. payload is valid only
 * during the call. An inline handler answers (reply or error) and returns 0.
 * A worker command's handler is its check: it returns 0 to queue the job, or
 * answers (an error) and returns -1. A deferred handler holds a place in the
 * reply order (pipeline_reserve) and answers later. Reactor thread only. */
typedef int (*cmd_fn)(struct pipeline *pl, uint32_t cmd, const uint8_t *payload, size_t len);

/* A worker command's work, on a worker thread: encodes the whole reply frame
 * into job->result. */
typedef void (*cmd_run_fn)(struct worker_pool *pool, struct worker_job *job);

enum cmd_where {
    CMD_INLINE,   /* runs on the connection's reactor, reply encoded at once */
    CMD_WORKER,   /* runs on the reactor's worker pool; the reply comes back in order */
    CMD_DEFERRED, /* the handler holds the reply's place and fills it later */
};

struct cmd_def {
    uint32_t number;
    char name[CMDTAB_NAME_MAX];        /* upper case by habit: "PING" */
    enum cmd_where where;
    bool needs_auth;                   /* NOT_AUTHENTICATED before AUTH when tokens are set */
    cmd_fn fn;                         /* the handler (inline, deferred) or the check (worker) */
    cmd_run_fn run;                    /* CMD_WORKER: the work */
    int slot;                          /* set by cmdtab_register: its latency slot */
};

/* Registers a copy of def. Returns 0, or -EINVAL (number 0 or above
 * CMDTAB_NUMBER_MAX, an empty or too long name, no handler, a worker command
 * without run), -EEXIST (the number is taken, by whom is in err) or -ENOSPC
 * (CMDTAB_SLOTS - 1 commands already), with the reason in err. Main thread,
 * start-up only. */
int cmdtab_register(const struct cmd_def *def, char *err, size_t errlen);

/* The command registered under a request's command word, or NULL (for any
 * word with bit 29, 30 or 31 set too). Thread-safe once started. */
const struct cmd_def *cmdtab_find(uint32_t command);

/* The latency slot of a command number (0 when it has none). Thread-safe. */
int cmdtab_slot(uint32_t command);

/* The name of a latency slot ("OTHER" for 0 and unused slots). Thread-safe. */
const char *cmdtab_slot_name(int slot);

/* Latency slots in use, "OTHER" included: slots 0 .. cmdtab_slots() - 1. */
int cmdtab_slots(void);

/* Forgets every command (tests, and a start-up that failed). Main thread. */
void cmdtab_reset(void);

#endif
