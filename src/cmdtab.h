/* cmdtab: the command table, the one place a msg command is described: its
 * number, its name, where it runs (inline, on the worker pool, or deferred),
 * whether it needs AUTH, and its latency slot. Built-in commands and
 * modules' commands are registered here alike at start-up, and the
 * modules themselves are listed; STATS, metrics and
 * the latency histograms take their names from it.
 *
 * Registration is for the main thread during start-up, before any reactor
 * runs; after that the table is read-only and every lookup is thread-safe. */
#ifndef MSGD_CMDTAB_H
#define MSGD_CMDTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "module.h"

#define CMDTAB_SLOTS 64            /* latency slots; slot 0 is "OTHER" (no command) */
#define CMDTAB_NAME_MAX 32         /* bytes of a command's name, with its NUL */
#define CMDTAB_BUILTIN_MAX 1024    /* numbers below this are msgd's own */
#define CMDTAB_NUMBER_MAX 0x1FFFFFFFu /* bits 0..28 of the command word */

/* A command as the table keeps it: what msgd_command_register was given
 * (module.h), plus its owner and latency slot. */
struct cmd_def {
    uint32_t number;
    char name[CMDTAB_NAME_MAX];        /* upper case by habit: "PING" */
    enum msgd_where where;
    bool needs_auth;                   /* NOT_AUTHENTICATED before AUTH when tokens are set */
    msgd_handler_fn handler;           /* on the reactor, or (MSGD_WORKER) on a worker */
    msgd_handler_fn check;             /* MSGD_WORKER, optional: on the reactor first */
    const struct msgd_module *owner;   /* the module that registered it */
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

/* The modules whose commands are in the table, in the order they were
 * added (module.c adds them; the msg protocol calls their events).
 * cmdtab_add_module returns 0 or -ENOSPC. Main thread, start-up; reading is
 * thread-safe once started. */
#define CMDTAB_MODULES_MAX 32
int cmdtab_add_module(const struct msgd_module *m);
int cmdtab_nmodules(void);
const struct msgd_module *cmdtab_module(int i);

/* Forgets every command and module (tests, and a start-up that failed).
 * Main thread. */
void cmdtab_reset(void);

#endif
