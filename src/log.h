/* log: leveled log lines to stderr, one write() per line. Lines from reactor
 * threads go through a bounded in-memory queue drained by a log thread, so a
 * reactor never blocks on a slow stderr; the queue drops (and counts) when full. */
#ifndef MSGD_LOG_H
#define MSGD_LOG_H

#include <stdint.h>
#include <time.h>

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

/* Detects the sink: when $JOURNAL_STREAM names stderr's device:inode, lines
 * carry a "<N>" syslog priority prefix; otherwise a local timestamp.
 * Main thread, before any other thread starts. */
void log_init(enum log_level level);

/* Whether stderr is the journal: $JOURNAL_STREAM names stderr's
 * device:inode (what systemd sets for StandardError=journal). Any thread. */
int log_stderr_is_journal(void);

/* Writes text (one or more lines) to stderr unchanged but for a "<N>"
 * syslog priority for level before each line when stderr is the journal:
 * for what msgd prints before the logger starts (configuration errors) and
 * for `msgd -t`, so `journalctl -p` sees their priority. Main thread, while
 * no log thread runs. */
void log_plain(enum log_level level, const char *text);

/* Starts the log thread; until then (and after log_stop) lines are written
 * directly. Returns 0 or -errno. Main thread only. */
int log_start_thread(void);

/* Drains the queue, reports drops, and joins the log thread. Main thread only. */
void log_stop_thread(void);

/* Sets the level at run time (reload). Thread-safe. */
void log_set_level(enum log_level level);

/* True when a line at this level would be written. Thread-safe. */
int log_enabled(enum log_level level);

/* Formats and emits one line (a trailing newline is added). Thread-safe;
 * never blocks for longer than a memcpy once the log thread runs. */
void log_write(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_write(LOG_INFO, __VA_ARGS__)
#define log_debug(...) \
    do { if (log_enabled(LOG_DEBUG)) log_write(LOG_DEBUG, __VA_ARGS__); } while (0)

/* Rate limit for a repeated error: at most one line per second, and the line
 * after a quiet spell says how many were suppressed. Owned by one thread. */
struct log_ratelimit {
    time_t last;          /* CLOCK_MONOTONIC second of the last line written */
    uint64_t suppressed;  /* lines swallowed since then */
};

/* Like log_write, but through rl. Only the thread that owns rl may call it. */
void log_limited(struct log_ratelimit *rl, enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
