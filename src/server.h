/* server: the daemon's life on the main thread: start-up order, the main
 * loop with its signals, and shutdown. */
#ifndef MSGD_SERVER_H
#define MSGD_SERVER_H

#include "config.h"

/* Runs msgd with cfg (read from path) until SIGTERM or SIGINT. Returns the
 * process exit status: 0 after a clean stop, 1 when start-up failed (the
 * reason is logged). Main thread only; call once. */
int server_run(const struct config *cfg, const char *path);

#endif
