/* cmd_direct: DIRECT (21): a message to every connection of an identity, on
 * every reactor, as a DELIVER (22) push carrying the sender's identity
 * (PROTOCOL.md "Identities and direct messages"). */
#ifndef MSGD_CMD_DIRECT_H
#define MSGD_CMD_DIRECT_H

#include <stddef.h>

/* Registers DIRECT in the command table. Returns 0 or -errno with the reason
 * in err. Main thread, start-up only. */
int cmd_direct_register(char *err, size_t errlen);

#endif
