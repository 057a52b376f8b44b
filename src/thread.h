/* thread: starting a thread that leaves signals to the main thread
 * (DESIGN.md: the main thread owns SIGTERM, SIGINT and SIGHUP). */
#ifndef MSGD_THREAD_H
#define MSGD_THREAD_H

#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>

/* pthread_create with every signal blocked in the new thread, so a process
 * signal is always taken by the main thread's libev handler, never by a
 * reactor, worker or the log writer. Returns 0 or an errno value
 * (pthread_create's). Any thread. */
static inline int thread_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

/* Names thread t for `top -H`, `ps -L` and perf (/proc/PID/task/TID/comm):
 * "msgd-main", "msgd-r0", "msgd-r0-w1", "msgd-log". Linux keeps 15 bytes;
 * a longer name is cut. Best effort: a failure is ignored. Any thread. */
__attribute__((format(printf, 2, 3)))
static inline void thread_name(pthread_t t, const char *fmt, ...)
{
    char name[16];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    (void)pthread_setname_np(t, name);
}

#endif
