/* daemon: starts and stops the real msgd from a C unit test, as the Python
 * harness does (tests/integration/harness.py): a config and a NOTIFY_SOCKET
 * in a temp dir of its own, READY=1 awaited (never slept for), the msg port
 * read from STATUS, the exit awaited with a deadline, the log checked for
 * sanitizer reports. Owns its temp dir, log and notify socket.
 *
 * Environment: MSGD_BIN (the daemon; default <dir of this binary>/../msgd),
 * MSGD_TEST_TIMEOUT_SCALE (multiplies every wait), MSGD_KEEP_TMP=1 (keep the
 * temp dirs). Calls for one daemon come from one thread, the one that
 * started it (the daemon gets PR_SET_PDEATHSIG for that thread). */
#ifndef MSGD_TEST_DAEMON_H
#define MSGD_TEST_DAEMON_H

#include <stdbool.h>
#include <sys/types.h>

#define DAEMON_ERR_MAX 512

/* What the config says; zeroes are the defaults shown. */
struct daemon_opts {
    int port;               /* [msg] listen = 127.0.0.1:port; 0: an ephemeral one */
    int heartbeat_ms;       /* [timeouts] heartbeat_interval; 0: off */
    int idle_ms;            /* [timeouts] idle_timeout; 0: off */
    int drain_ms;           /* [timeouts] drain_timeout; 0: 2000 */
    const char *max_frame;  /* [msg] max_frame; NULL: "1M" */
    bool delay_command;     /* [diagnostics] delay_command = on */
    const char *compress;   /* [msg] compress; NULL: the default (zstd, deflate) */
    const char *compress_min; /* [msg] compress_min; NULL: the default (1K) */
};

struct daemon {
    pid_t pid;              /* 0: never started */
    int pidfd;              /* -1: pidfd_open unavailable (then waitpid polls) */
    int notify_fd;
    bool running;           /* started and not yet reaped */
    bool stop_sent;         /* SIGTERM or SIGINT sent (a second one means "stop now") */
    int wait_status;        /* waitpid status once reaped */
    int port;               /* the msg listener's port, from STATUS */
    char status[512];       /* the STATUS= value that came with READY=1 */
    char dir[256];
    char config_path[300];
    char log_path[300];
    char notify_path[300];
    char err[DAEMON_ERR_MAX];
};

/* MSGD_TEST_TIMEOUT_SCALE (>= 1; default 1). */
double daemon_scale(void);
/* ms times the scale. */
int daemon_ms(int ms);

/* Starts msgd with a config from o (NULL: the defaults) and waits up to
 * 10 s (scaled) for READY=1. Returns 0 with d->port set, or -1 with the
 * reason in d->err (the log tail is printed to stderr, the process killed). */
int daemon_start(struct daemon *d, const struct daemon_opts *o);

/* Sends sig to a running daemon; SIGTERM and SIGINT count as the stop (see
 * daemon_finish). Returns 0 or -errno. */
int daemon_signal(struct daemon *d, int sig);

/* Waits up to timeout_ms for the daemon to exit and reaps it. Returns 0 (then
 * d->wait_status holds the status) or -ETIMEDOUT. */
int daemon_wait_exit(struct daemon *d, int timeout_ms);

/* Stops the daemon if it runs (SIGTERM unless a stop signal was sent already:
 * msgd takes a second one as "stop now, skip the drain"; then up to 10 s
 * scaled; SIGKILL after that), then checks: exit status 0, no sanitizer report in the log.
 * Removes the temp dir when all is well (unless MSGD_KEEP_TMP). Returns 0,
 * or -1 with the problems in d->err (and the log tail on stderr). */
int daemon_finish(struct daemon *d);

/* Prints the last `lines` lines of the daemon's log to stderr. */
void daemon_print_log(const struct daemon *d, int lines);

/* Kills (SIGKILL) and reaps every daemon still running that this process
 * started. Also runs at exit; when the exit status is not 0 it then prints
 * each daemon's log tail and keeps its temp dir. */
void daemon_kill_all(void);

#endif
