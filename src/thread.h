/* thread: starting a thread that leaves signals to the main thread
 * (DESIGN.md: the main thread owns SIGTERM, SIGINT and SIGHUP). */
#ifndef MSGD_THREAD_H
#define MSGD_THREAD_H

#include <pthread.h>
#include <signal.h>

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

#endif
