/* log: leveled lines to stderr, one write() per line, through a bounded queue
 * and a log thread once that runs, so no reactor ever blocks on stderr. */
#include "log.h"
#include "thread.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LOG_LINE_MAX 512
#define LOG_QUEUE_LEN 1024

static _Atomic int log_level_now = LOG_INFO;
static bool log_journal;     /* set once by log_init, read-only after */

/* The queue: written by any thread under log_mu, drained by the log thread. */
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t log_cv = PTHREAD_COND_INITIALIZER;
static struct log_slot { uint16_t len; char text[LOG_LINE_MAX]; } log_queue[LOG_QUEUE_LEN];
static unsigned log_head, log_count;
static uint64_t log_dropped;
static bool log_threaded, log_stopping;
static pthread_t log_thread;

static const char *const level_names[] = {"error", "warn", "info", "debug"};
static const int level_prio[] = {3, 4, 6, 7};

int log_stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    struct stat st;
    unsigned long long dev, ino;
    return js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(2, &st) == 0 &&
           (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_init(enum log_level level)
{
    atomic_store(&log_level_now, level);
    log_journal = log_stderr_is_journal();
}

void log_set_level(enum log_level level) { atomic_store(&log_level_now, level); }

int log_enabled(enum log_level level)
{
    return (int)level <= atomic_load_explicit(&log_level_now, memory_order_relaxed);
}

/* Writes all of p to stderr, retrying on EINTR and short writes. */
static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(2, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

void log_plain(enum log_level level, const char *text)
{
    if (!log_stderr_is_journal()) {
        write_all(text, strlen(text));
        return;
    }
    char prio[8];
    int plen = snprintf(prio, sizeof prio, "<%d>", level_prio[level]);
    while (*text) {
        size_t n = strcspn(text, "\n");
        write_all(prio, (size_t)plen);
        write_all(text, n);
        write_all("\n", 1);
        text += n + (text[n] == '\n');
    }
}

/* Formats the prefix and message into buf; returns the length with '\n'. */
static size_t format_line(char *buf, size_t cap, enum log_level level, const char *fmt, va_list ap)
{
    int n;
    if (log_journal) {
        n = snprintf(buf, cap, "<%d>", level_prio[level]);
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        localtime_r(&ts.tv_sec, &tm);
        n = snprintf(buf, cap, "%04d-%02d-%02d %02d:%02d:%02d.%03ld [%s] ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, level_names[level]);
    }
    if (n < 0)
        n = 0;
    int m = vsnprintf(buf + n, cap - (size_t)n - 1, fmt, ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > cap - 2)
        len = cap - 2;
    buf[len++] = '\n';
    return len;
}

static void emit(const char *line, size_t len)
{
    pthread_mutex_lock(&log_mu);
    if (!log_threaded) {
        pthread_mutex_unlock(&log_mu);
        write_all(line, len);
        return;
    }
    if (log_count == LOG_QUEUE_LEN) {
        log_dropped++;
    } else {
        struct log_slot *s = &log_queue[(log_head + log_count) % LOG_QUEUE_LEN];
        memcpy(s->text, line, len);
        s->len = (uint16_t)len;
        log_count++;
        pthread_cond_signal(&log_cv);
    }
    pthread_mutex_unlock(&log_mu);
}

void log_write(enum log_level level, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    char line[LOG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    size_t len = format_line(line, sizeof line, level, fmt, ap);
    va_end(ap);
    emit(line, len);
}

void log_limited(struct log_ratelimit *rl, enum log_level level, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (rl->last != 0 && now.tv_sec - rl->last < 1) {
        rl->suppressed++;
        return;
    }
    char msg[LOG_LINE_MAX - 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (rl->suppressed > 0)
        log_write(level, "%s (and %llu more like it)", msg, (unsigned long long)rl->suppressed);
    else
        log_write(level, "%s", msg);
    rl->last = now.tv_sec;
    rl->suppressed = 0;
}

/* The log thread: takes one line at a time and writes it outside the lock. */
static void *log_main(void *arg)
{
    (void)arg;
    char line[LOG_LINE_MAX + 64];
    pthread_mutex_lock(&log_mu);
    for (;;) {
        while (log_count == 0 && log_dropped == 0 && !log_stopping)
            pthread_cond_wait(&log_cv, &log_mu);
        size_t len = 0;
        if (log_count > 0) {
            struct log_slot *s = &log_queue[log_head];
            len = s->len;
            memcpy(line, s->text, len);
            log_head = (log_head + 1) % LOG_QUEUE_LEN;
            log_count--;
        } else if (log_dropped > 0) {
            len = (size_t)snprintf(line, sizeof line, "%slog: %llu lines dropped (queue full)\n",
                                   log_journal ? "<4>" : "", (unsigned long long)log_dropped);
            log_dropped = 0;
        } else {
            break; /* stopping and drained */
        }
        pthread_mutex_unlock(&log_mu);
        write_all(line, len);
        pthread_mutex_lock(&log_mu);
    }
    log_threaded = false;
    pthread_mutex_unlock(&log_mu);
    return NULL;
}

int log_start_thread(void)
{
    pthread_mutex_lock(&log_mu);
    log_threaded = true;
    log_stopping = false;
    pthread_mutex_unlock(&log_mu);
    /* Signals blocked: a process signal delivered here would run libev's
     * handler in this thread, and under ThreadSanitizer (which defers a
     * handler to the thread's next intercepted call) wait for the next line. */
    int rc = thread_start(&log_thread, log_main, NULL);
    if (rc == 0)
        thread_name(log_thread, "msgd-log");
    if (rc != 0) {
        pthread_mutex_lock(&log_mu);
        log_threaded = false;
        pthread_mutex_unlock(&log_mu);
        return -rc;
    }
    return 0;
}

void log_stop_thread(void)
{
    pthread_mutex_lock(&log_mu);
    bool running = log_threaded;
    log_stopping = true;
    pthread_cond_signal(&log_cv);
    pthread_mutex_unlock(&log_mu);
    if (running)
        pthread_join(log_thread, NULL);
}
