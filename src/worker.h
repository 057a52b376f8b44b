/* worker: a reactor's pool of worker threads and its bounded job queue.
 * Workers never touch a socket or a connection: a job carries the owning
 * connection's id and a copy of the request, and once run it is posted back
 * to the reactor's mailbox as an item whose run (set by the job's creator)
 * puts the result where it belongs. */
#ifndef MSGD_WORKER_H
#define MSGD_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buffer.h"
#include "mailbox.h"

struct worker_pool;
struct worker_job;

/* Runs on a worker thread: fills job->result. It may call worker_sleep(). */
typedef void (*worker_run_fn)(struct worker_pool *pool, struct worker_job *job);

struct worker_job {
    struct mailbox_item item;          /* the trip back: item.run is the creator's */
    struct worker_job *next;           /* queue link (guarded by the pool's mu) */
    uint64_t conn_id;                  /* the connection that asked */
    uint32_t seq;                      /* its reply slot (pipeline.h) */
    uint32_t command;
    worker_run_fn run;
    size_t len;                        /* request payload bytes, stored after the struct */
    struct buffer result;              /* the encoded reply, filled by run */
    uint8_t payload[];
};

struct worker_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;                 /* work arrived, or stop */
    pthread_cond_t stop_cv;            /* stop: ends worker_sleep early */
    struct worker_job *head, *tail;    /* waiting jobs; guarded by mu */
    uint32_t waiting;                  /* guarded by mu */
    uint32_t limit;                    /* worker_queue; guarded by mu */
    bool stopping;                     /* guarded by mu */
    int nthreads;
    pthread_t *threads;
    struct mailbox *home;              /* finished jobs go here (the reactor's) */
};

/* Allocates a job with room for len payload bytes (copied from p, or left
 * for the caller to fill when p is NULL). run is
 * the work, on a worker thread; back runs the finished job on the reactor
 * (ctx: its struct pipeline_env) and must free it. A job dropped unrun or
 * unreturned (shutdown) is freed. Returns NULL when out of memory.
 * Thread-safe. */
struct worker_job *worker_job_new(uint64_t conn_id, uint32_t seq, uint32_t command,
                                  worker_run_fn run, mailbox_run_fn back, const void *p,
                                  size_t len);

/* Frees a job and its result. Thread-safe. */
void worker_job_free(struct worker_job *job);

/* Starts nthreads workers with a queue of at most limit waiting jobs; each
 * finished job is posted to home. The threads start with every signal
 * blocked. Returns 0 or -errno. Called by the reactor's owner (main thread). */
int worker_pool_start(struct worker_pool *pool, int nthreads, uint32_t limit,
                      struct mailbox *home);

/* Queues job, or returns -EAGAIN (queue full: OVERLOADED) or -ESHUTDOWN;
 * the caller keeps the job on failure. Thread-safe, never blocks on work. */
int worker_submit(struct worker_pool *pool, struct worker_job *job);

/* Changes the queue limit (reload). Thread-safe. */
void worker_set_limit(struct worker_pool *pool, uint32_t limit);

/* Sleeps up to ms milliseconds on a worker thread; returns false early when
 * the pool is stopping. */
bool worker_sleep(struct worker_pool *pool, uint32_t ms);

/* Stops the pool: running jobs finish (sleeps end early), waiting jobs are
 * freed unrun, threads are joined. Main thread, after the reactor stopped. */
void worker_pool_stop(struct worker_pool *pool);

#endif
