/* notify: the sd_notify messages msgd sends to its supervisor. Each is a
 * no-op when $NOTIFY_SOCKET is unset, and none blocks the main loop when the
 * supervisor does not read (notify.c says what is dropped). Main thread only. */
#ifndef MSGD_NOTIFY_H
#define MSGD_NOTIFY_H

/* READY=1 with a STATUS= line. */
void notify_ready(const char *status);

/* STATUS= alone. */
void notify_status(const char *status);

/* RELOADING=1 with MONOTONIC_USEC= (for newer systemd's notify-reload). */
void notify_reloading(void);

/* READY=1 after a reload, with a STATUS= line. */
void notify_reloaded(const char *status);

/* WATCHDOG=1. */
void notify_watchdog(void);

/* STOPPING=1. */
void notify_stopping(void);

/* ERRNO= and STATUS= on a failed start. */
void notify_failed(int errnum, const char *status);

#endif
