/* module_host: how msgd adds modules (its own and loaded ones), starts and
 * ends them. The rest of msgd's side of module.h: the registry in cmdtab.h,
 * requests, pushes and events in proto_msg*.c, timers and the cross-thread
 * mailbox table in module_runtime.h. */
#ifndef MSGD_MODULE_HOST_H
#define MSGD_MODULE_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cmdtab.h"
#include "module.h"

/* Adds module m: checks its api_version and name, runs its init (where it
 * registers commands; builtin lets it use numbers below 1024). Returns 0 or
 * -errno with the reason in err. Main thread, start-up. */
int module_add(const struct msgd_module *m, bool builtin, char *err, size_t errlen);

/* The module named name (len bytes), or NULL. Main thread. */
const struct msgd_module *module_find(const char *name, size_t len);

/* Runs every module's start, in order; stops at the first failure (-errno,
 * reason in err). Main thread, before the reactors start. */
int module_start_all(char *err, size_t errlen);

/* Runs every module's fini, last added first. Main thread, after the
 * runtime stopped. */
void module_fini_all(void);

/* Forgets every module (tests). Main thread. */
void module_reset(void);

#endif
