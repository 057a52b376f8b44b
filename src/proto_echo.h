/* proto_echo: RFC 862 TCP echo; every byte read is sent back unchanged.
 * Reactor thread only. */
#ifndef MSGD_PROTO_ECHO_H
#define MSGD_PROTO_ECHO_H

#include "pipeline.h"

extern const struct proto proto_echo;

#endif
