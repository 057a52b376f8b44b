/* proto_admin: the operators' text protocol: one command per line (at most
 * 1 KiB), each answered by zero or more lines and then "END".
 * Reactor thread only. */
#ifndef MSGD_PROTO_ADMIN_H
#define MSGD_PROTO_ADMIN_H

#include "pipeline.h"

#define PROTO_ADMIN_LINE_MAX 1024

extern const struct proto proto_admin;

#endif
