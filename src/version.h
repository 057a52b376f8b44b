/* version: msgd's version, for -V, HELLO's `server` and metrics. */
#ifndef MSGD_VERSION_H
#define MSGD_VERSION_H

#ifndef MSGD_VERSION
#define MSGD_VERSION "0.1.0"
#endif

#endif
