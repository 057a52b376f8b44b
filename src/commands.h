/* commands: msgd's built-in msg commands (PING, ECHO, AUTH, STATS, DELAY,
 * SUBSCRIBE, UNSUBSCRIBE, PUBLISH), registered in the command table
 * (cmdtab.h) like any other command. */
#ifndef MSGD_COMMANDS_H
#define MSGD_COMMANDS_H

#include <stddef.h>

/* Registers the built-in commands. Returns 0 or -errno with the reason in
 * err. Main thread, start-up only. */
int commands_register_builtin(char *err, size_t errlen);

#endif
