/* worker: a bounded job queue served by a few threads per reactor. */
#include "worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "thread.h"

static void job_drop(struct mailbox_item *it)
{
    worker_job_free((struct worker_job *)it);
}

struct worker_job *worker_job_new(uint64_t conn_id, uint32_t seq, uint32_t command,
                                  worker_run_fn run, mailbox_run_fn back, const void *p,
                                  size_t len)
{
    struct worker_job *job = malloc(sizeof *job + len);
    if (!job)
        return NULL;
    memset(job, 0, sizeof *job);
    job->conn_id = conn_id;
    job->seq = seq;
    job->command = command;
    job->run = run;
    job->item.run = back;
    job->item.drop = job_drop;
    job->len = len;
    if (len && p)
        memcpy(job->payload, p, len);
    return job;
}

void worker_job_free(struct worker_job *job)
{
    if (!job)
        return;
    buffer_free(&job->result);
    free(job);
}

static void *worker_main(void *arg)
{
    struct worker_pool *pool = arg;
    pthread_mutex_lock(&pool->mu);
    for (;;) {
        while (!pool->head && !pool->stopping)
            pthread_cond_wait(&pool->cv, &pool->mu);
        if (pool->stopping)
            break;
        struct worker_job *job = pool->head;
        pool->head = job->next;
        if (!pool->head)
            pool->tail = NULL;
        pool->waiting--;
        pthread_mutex_unlock(&pool->mu);
        job->run(pool, job);
        mailbox_post(pool->home, &job->item);
        pthread_mutex_lock(&pool->mu);
    }
    pthread_mutex_unlock(&pool->mu);
    return NULL;
}

int worker_pool_start(struct worker_pool *pool, int nthreads, uint32_t limit,
                      struct mailbox *home)
{
    memset(pool, 0, sizeof *pool);
    pool->limit = limit;
    pool->home = home;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&pool->cv, &ca);
    pthread_cond_init(&pool->stop_cv, &ca);
    pthread_condattr_destroy(&ca);
    pool->threads = calloc((size_t)nthreads, sizeof *pool->threads);
    if (!pool->threads)
        return -ENOMEM;
    int rc = 0;
    for (; pool->nthreads < nthreads; pool->nthreads++) {
        rc = thread_start(&pool->threads[pool->nthreads], worker_main, pool);
        if (rc != 0)
            break;
    }
    if (rc != 0) {
        worker_pool_stop(pool);
        return -rc;
    }
    return 0;
}

int worker_submit(struct worker_pool *pool, struct worker_job *job)
{
    job->next = NULL;
    pthread_mutex_lock(&pool->mu);
    int rc = 0;
    if (pool->stopping)
        rc = -ESHUTDOWN;
    else if (pool->waiting >= pool->limit)
        rc = -EAGAIN;
    if (rc == 0) {
        if (pool->tail)
            pool->tail->next = job;
        else
            pool->head = job;
        pool->tail = job;
        pool->waiting++;
        pthread_cond_signal(&pool->cv);
    }
    pthread_mutex_unlock(&pool->mu);
    return rc;
}

void worker_set_limit(struct worker_pool *pool, uint32_t limit)
{
    pthread_mutex_lock(&pool->mu);
    pool->limit = limit;
    pthread_mutex_unlock(&pool->mu);
}

bool worker_sleep(struct worker_pool *pool, uint32_t ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&pool->mu);
    int rc = 0;
    while (!pool->stopping && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&pool->stop_cv, &pool->mu, &until);
    bool finished = !pool->stopping;
    pthread_mutex_unlock(&pool->mu);
    return finished;
}

void worker_pool_stop(struct worker_pool *pool)
{
    pthread_mutex_lock(&pool->mu);
    pool->stopping = true;
    struct worker_job *job = pool->head;
    pool->head = pool->tail = NULL;
    pool->waiting = 0;
    pthread_cond_broadcast(&pool->cv);
    pthread_cond_broadcast(&pool->stop_cv);
    pthread_mutex_unlock(&pool->mu);
    for (int i = 0; i < pool->nthreads; i++)
        pthread_join(pool->threads[i], NULL);
    while (job) {
        struct worker_job *next = job->next;
        worker_job_free(job);
        job = next;
    }
    free(pool->threads);
    pool->threads = NULL;
    pool->nthreads = 0;
    pthread_cond_destroy(&pool->cv);
    pthread_cond_destroy(&pool->stop_cv);
    pthread_mutex_destroy(&pool->mu);
}
