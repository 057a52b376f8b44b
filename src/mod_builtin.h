/* mod_builtin: msgd's own command modules (mod_core, mod_pubsub,
 * mod_direct), built on module.h like any loaded module, and the call that
 * adds them. */
#ifndef MSGD_MOD_BUILTIN_H
#define MSGD_MOD_BUILTIN_H

#include <stddef.h>

#include "module.h"

extern const struct msgd_module mod_core;   /* PING, ECHO, AUTH, STATS, DELAY */
extern const struct msgd_module mod_pubsub; /* SUBSCRIBE, UNSUBSCRIBE, PUBLISH */
extern const struct msgd_module mod_direct; /* DIRECT */

/* Adds the built-in modules, registering their commands. Returns 0 or
 * -errno with the reason in err. Main thread, start-up, before any loaded
 * module. */
int mod_builtin_add(char *err, size_t errlen);

#endif
