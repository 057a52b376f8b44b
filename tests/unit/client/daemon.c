/* daemon: the real msgd for C unit tests (see daemon.h): temp dir, config,
 * NOTIFY_SOCKET, fork/exec, READY=1 and STATUS, stop with a deadline, log
 * checks, and an exit handler that leaves no daemon behind. */
#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define READY_WAIT_MS 10000
#define STOP_WAIT_MS 10000
#define LOG_READ_MAX (64u << 20)

static const char *const sanitizer_markers[] = {
    "AddressSanitizer", "LeakSanitizer", "runtime error:", "ThreadSanitizer",
};

/* ---- what the exit handler needs, kept outside the callers' structs (which
 * may live on a stack frame that is gone by then) ---------------------------- */

#define REC_MAX 32

struct rec {
    pid_t pid;
    bool running;
    bool removed;       /* temp dir removed */
    bool log_shown;     /* its log tail was printed already */
    char dir[256];
    char log_path[300];
};

static struct rec recs[REC_MAX];
static int nrecs;
static bool handler_set;

static struct rec *rec_of(pid_t pid)
{
    for (int i = 0; i < nrecs; i++)
        if (recs[i].pid == pid)
            return &recs[i];
    return NULL;
}

/* ---- small helpers ------------------------------------------------------ */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int ms_left(int64_t deadline)
{
    int64_t left = deadline - now_ms();
    return left <= 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left;
}

__attribute__((format(printf, 2, 3)))
static void set_err(struct daemon *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->err, sizeof d->err, fmt, ap);
    va_end(ap);
}

double daemon_scale(void)
{
    const char *s = getenv("MSGD_TEST_TIMEOUT_SCALE");
    double v = s && *s ? strtod(s, NULL) : 1.0;
    return v >= 1.0 ? v : 1.0;
}

int daemon_ms(int ms)
{
    double v = ms * daemon_scale();
    return v > INT_MAX ? INT_MAX : (int)v;
}

/* MSGD_BIN, else <dir of /proc/self/exe>/../msgd. */
static int daemon_bin(char *out, size_t outlen)
{
    const char *env = getenv("MSGD_BIN");
    if (env && *env) {
        if (strlen(env) >= outlen)
            return -ENAMETOOLONG;
        strcpy(out, env);
        return 0;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return -errno;
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (!slash)
        return -EINVAL;
    *slash = '\0';
    if ((size_t)snprintf(out, outlen, "%s/../msgd", self) >= outlen)
        return -ENAMETOOLONG;
    return 0;
}

static char *read_file(const char *path, size_t *lenp)
{
    *lenp = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        if (len == cap) {
            if (cap >= LOG_READ_MAX)
                break;
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    if (buf) {
        buf[len] = '\0';
        *lenp = len;
    }
    return buf;
}

static void print_log_tail(const char *path, int lines)
{
    size_t len;
    char *text = read_file(path, &len);
    if (!text) {
        fprintf(stderr, "  (no log at %s)\n", path);
        return;
    }
    size_t start = len;
    int seen = 0;
    while (start > 0) {
        if (text[start - 1] == '\n' && start != len && ++seen >= lines)
            break;
        start--;
    }
    fprintf(stderr, "--- msgd log tail (%s) ---\n%s%s--- end ---\n", path, text + start,
            len && text[len - 1] != '\n' ? "\n" : "");
    free(text);
}

void daemon_print_log(const struct daemon *d, int lines)
{
    print_log_tail(d->log_path, lines);
    struct rec *r = rec_of(d->pid);
    if (r)
        r->log_shown = true;
}

static void remove_dir(const char *dir)
{
    static const char *const names[] = {"msgd.ini", "msgd.log", "notify.sock"};
    char path[400];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

static bool keep_tmp(void)
{
    const char *k = getenv("MSGD_KEEP_TMP");
    return k && *k && strcmp(k, "0") != 0;
}

/* ---- the exit handler -------------------------------------------------------- */

static void reap_blocking(pid_t pid)
{
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

void daemon_kill_all(void)
{
    for (int i = 0; i < nrecs; i++) {
        if (!recs[i].running)
            continue;
        kill(recs[i].pid, SIGKILL);
        reap_blocking(recs[i].pid);
        recs[i].running = false;
    }
}

static void at_exit(int status, void *arg)
{
    (void)arg;
    bool killed = false;
    for (int i = 0; i < nrecs; i++)
        if (recs[i].running) {
            fprintf(stderr, "  killing msgd pid %d, still running at exit\n", (int)recs[i].pid);
            killed = true;
        }
    daemon_kill_all();
    for (int i = 0; i < nrecs; i++) {
        if (recs[i].removed)
            continue;
        if (status != 0 || killed) {
            if (!recs[i].log_shown)
                print_log_tail(recs[i].log_path, 40);
            fprintf(stderr, "  kept %s\n", recs[i].dir);
        } else if (!keep_tmp()) {
            remove_dir(recs[i].dir);
            recs[i].removed = true;
        }
    }
}

/* ---- starting ------------------------------------------------------------------ */

static int write_config(struct daemon *d, const struct daemon_opts *o)
{
    FILE *f = fopen(d->config_path, "we");
    if (!f) {
        set_err(d, "cannot write %s: %s", d->config_path, strerror(errno));
        return -1;
    }
    fprintf(f,
            "; written by tests/unit/client/daemon.c\n"
            "[server]\nreactors = 2\nworkers = 1\n\n"
            "[msg]\nlisten = 127.0.0.1:%d\nmax_frame = %s\n\n"
            "[echo]\nlisten =\n\n"
            "[admin]\nlisten =\n\n"
            "[timeouts]\nheartbeat_interval = %dms\nidle_timeout = %dms\ndrain_timeout = %dms\n\n"
            "[log]\nlevel = info\n\n"
            "[diagnostics]\ndelay_command = %s\n",
            o->port, o->max_frame ? o->max_frame : "1M", o->heartbeat_ms, o->idle_ms,
            o->drain_ms ? o->drain_ms : 2000, o->delay_command ? "on" : "off");
    if (o->compress)
        fprintf(f, "\n[msg]\ncompress = %s\n", o->compress);
    if (o->compress_min)
        fprintf(f, "\n[msg]\ncompress_min = %s\n", o->compress_min);
    if (fclose(f) != 0) {
        set_err(d, "cannot write %s: %s", d->config_path, strerror(errno));
        return -1;
    }
    return 0;
}

/* The environment for msgd: ours without the systemd variables, with
 * NOTIFY_SOCKET. NULL when out of memory. */
static char **child_env(const char *notify_entry)
{
    static const char *const drop[] = {"NOTIFY_SOCKET=", "LISTEN_FDS=", "LISTEN_PID=",
                                       "LISTEN_FDNAMES=", "WATCHDOG_USEC=", "WATCHDOG_PID="};
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 2, sizeof *env);
    if (!env)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        bool skip = false;
        for (size_t j = 0; j < sizeof drop / sizeof drop[0]; j++)
            skip |= strncmp(environ[i], drop[j], strlen(drop[j])) == 0;
        if (!skip)
            env[k++] = environ[i];
    }
    env[k++] = (char *)(uintptr_t)notify_entry;
    env[k] = NULL;
    return env;
}

/* "listening msg=127.0.0.1:PORT[,...] echo= admin=" -> PORT, or -1. */
static int status_msg_port(const char *status)
{
    const char *w = status;
    while ((w = strstr(w, "msg=")) != NULL) {
        if (w == status || w[-1] == ' ')
            break;
        w += 4;
    }
    if (!w)
        return -1;
    w += 4;
    size_t len = strcspn(w, ", \n");
    if (len == 0 || len > 200)
        return -1;
    char addr[256];
    memcpy(addr, w, len);
    addr[len] = '\0';
    char *colon = strrchr(addr, ':');
    if (!colon || !colon[1])
        return -1;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 1 || port > 65535)
        return -1;
    return (int)port;
}

/* Handles one notify datagram. Returns 1 for READY=1 (STATUS parsed), 0 for
 * another, -1 for a READY=1 without a usable STATUS. */
static int handle_datagram(struct daemon *d, char *text)
{
    bool ready = false;
    const char *status = NULL;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (strcmp(line, "READY=1") == 0)
            ready = true;
        else if (strncmp(line, "STATUS=", 7) == 0)
            status = line + 7;
    }
    if (!ready)
        return 0;
    if (!status) {
        set_err(d, "the READY=1 datagram has no STATUS= line");
        return -1;
    }
    snprintf(d->status, sizeof d->status, "%s", status);
    d->port = status_msg_port(status);
    if (d->port < 0) {
        set_err(d, "no msg listener in STATUS \"%s\"", status);
        return -1;
    }
    return 1;
}

static void mark_reaped(struct daemon *d, int st)
{
    d->running = false;
    d->wait_status = st;
    if (d->pidfd >= 0) {
        close(d->pidfd);
        d->pidfd = -1;
    }
    struct rec *r = rec_of(d->pid);
    if (r)
        r->running = false;
}

/* Reaps the daemon if it has exited. Returns true when it has. */
static bool try_reap(struct daemon *d)
{
    if (!d->running)
        return true;
    int st = 0;
    pid_t r = waitpid(d->pid, &st, WNOHANG);
    if (r == d->pid) {
        mark_reaped(d, st);
        return true;
    }
    return false;
}

static void describe_status(int st, char *out, size_t outlen)
{
    if (WIFEXITED(st))
        snprintf(out, outlen, "exit status %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(out, outlen, "signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        snprintf(out, outlen, "wait status 0x%x", st);
}

static int wait_ready(struct daemon *d)
{
    int64_t deadline = now_ms() + daemon_ms(READY_WAIT_MS);
    for (;;) {
        struct pollfd pfd[2] = {{d->notify_fd, POLLIN, 0}, {d->pidfd, POLLIN, 0}};
        int nfds = d->pidfd >= 0 ? 2 : 1;
        int left = ms_left(deadline);
        /* without a pidfd the exit is polled for: at most 50 ms apart */
        int n = poll(pfd, (nfds_t)nfds, nfds == 2 ? left : (left < 50 ? left : 50));
        if (n < 0 && errno != EINTR) {
            set_err(d, "poll: %s", strerror(errno));
            return -1;
        }
        if (n > 0 && (pfd[0].revents & POLLIN)) {
            char buf[4096];
            ssize_t r;
            while ((r = recv(d->notify_fd, buf, sizeof buf - 1, 0)) > 0) {
                buf[r] = '\0';
                int h = handle_datagram(d, buf);
                if (h != 0)
                    return h > 0 ? 0 : -1;
            }
        }
        if (try_reap(d)) {
            char how[96];
            describe_status(d->wait_status, how, sizeof how);
            set_err(d, "msgd exited (%s) before READY=1", how);
            return -1;
        }
        if (ms_left(deadline) == 0) {
            set_err(d, "msgd sent no READY=1 within %d ms", daemon_ms(READY_WAIT_MS));
            return -1;
        }
    }
}

static int make_paths(struct daemon *d)
{
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp || strlen(tmp) > 60)
        tmp = "/tmp";
    snprintf(d->dir, sizeof d->dir, "%s/msgd-ut-XXXXXX", tmp);
    if (!mkdtemp(d->dir)) {
        set_err(d, "mkdtemp %s: %s", d->dir, strerror(errno));
        d->dir[0] = '\0';
        return -1;
    }
    snprintf(d->config_path, sizeof d->config_path, "%s/msgd.ini", d->dir);
    snprintf(d->log_path, sizeof d->log_path, "%s/msgd.log", d->dir);
    snprintf(d->notify_path, sizeof d->notify_path, "%s/notify.sock", d->dir);
    return 0;
}

static int bind_notify(struct daemon *d)
{
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    if (strlen(d->notify_path) >= sizeof sun.sun_path) {
        set_err(d, "notify socket path too long: %s", d->notify_path);
        return -1;
    }
    strcpy(sun.sun_path, d->notify_path);
    d->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (d->notify_fd < 0 || bind(d->notify_fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
        set_err(d, "notify socket %s: %s", d->notify_path, strerror(errno));
        return -1;
    }
    return 0;
}

/* fork + exec of msgd -c config, stdin /dev/null, stdout and stderr to the log. */
static int spawn(struct daemon *d, const char *bin)
{
    char notify_entry[sizeof d->notify_path + 16];
    snprintf(notify_entry, sizeof notify_entry, "NOTIFY_SOCKET=%s", d->notify_path);
    char **env = child_env(notify_entry);
    int logfd = open(d->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (!env || logfd < 0 || nullfd < 0) {
        set_err(d, "preparing to start msgd: %s", env ? strerror(errno) : "out of memory");
        free(env);
        if (logfd >= 0)
            close(logfd);
        if (nullfd >= 0)
            close(nullfd);
        return -1;
    }
    char *argv[] = {(char *)(uintptr_t)bin, (char *)(uintptr_t)"-c", d->config_path, NULL};
    pid_t parent = getpid();
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        /* only async-signal-safe calls from here to exec */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        dup2(nullfd, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        execve(bin, argv, env);
        static const char msg[] = "daemon.c: execve of msgd failed\n";
        ssize_t w = write(2, msg, sizeof msg - 1);
        (void)w;
        _exit(127);
    }
    int saved = errno;
    free(env);
    close(logfd);
    close(nullfd);
    if (pid < 0) {
        set_err(d, "fork: %s", strerror(saved));
        return -1;
    }
    d->pid = pid;
    d->running = true;
    long pfd = syscall(SYS_pidfd_open, pid, 0);
    d->pidfd = pfd >= 0 ? (int)pfd : -1;
    if (!handler_set) {
        on_exit(at_exit, NULL);
        handler_set = true;
    }
    if (nrecs < REC_MAX) {
        struct rec *r = &recs[nrecs++];
        memset(r, 0, sizeof *r);
        r->pid = pid;
        r->running = true;
        snprintf(r->dir, sizeof r->dir, "%s", d->dir);
        snprintf(r->log_path, sizeof r->log_path, "%s", d->log_path);
    }
    return 0;
}

int daemon_start(struct daemon *d, const struct daemon_opts *o)
{
    static const struct daemon_opts defaults;
    if (!o)
        o = &defaults;
    memset(d, 0, sizeof *d);
    d->pidfd = -1;
    d->notify_fd = -1;
    char bin[PATH_MAX];
    int rc = daemon_bin(bin, sizeof bin);
    if (rc < 0) {
        set_err(d, "cannot find msgd (set MSGD_BIN): %s", strerror(-rc));
        return -1;
    }
    if (access(bin, X_OK) < 0) {
        set_err(d, "msgd not found or not executable: %s (build it, or set MSGD_BIN)", bin);
        return -1;
    }
    if (make_paths(d) < 0 || write_config(d, o) < 0 || bind_notify(d) < 0 || spawn(d, bin) < 0)
        return -1;
    if (wait_ready(d) < 0) {
        if (d->running) {
            kill(d->pid, SIGKILL);
            reap_blocking(d->pid);
            mark_reaped(d, 0);
        }
        fprintf(stderr, "  msgd (%s -c %s): %s\n", bin, d->config_path, d->err);
        daemon_print_log(d, 60);
        return -1;
    }
    if (o->port && d->port != o->port) {
        set_err(d, "msgd listens on port %d, not the %d configured (STATUS \"%s\")", d->port,
                o->port, d->status);
        return -1;
    }
    return 0;
}

/* ---- stopping ------------------------------------------------------------------- */

int daemon_signal(struct daemon *d, int sig)
{
    if (!d->running)
        return -ESRCH;
    if (kill(d->pid, sig) < 0)
        return -errno;
    if (sig == SIGTERM || sig == SIGINT)
        d->stop_sent = true;
    return 0;
}

int daemon_wait_exit(struct daemon *d, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        if (try_reap(d))
            return 0;
        int left = ms_left(deadline);
        if (left == 0)
            return -ETIMEDOUT;
        if (d->pidfd >= 0) {
            struct pollfd pfd = {d->pidfd, POLLIN, 0};
            poll(&pfd, 1, left);
        } else {
            poll(NULL, 0, left < 10 ? left : 10);  /* a deadline loop over waitpid */
        }
    }
}

__attribute__((format(printf, 3, 4)))
static void add_problem(char *buf, size_t cap, const char *fmt, ...)
{
    size_t len = strlen(buf);
    if (len + 1 >= cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + len, cap - len, fmt, ap);
    va_end(ap);
}

int daemon_finish(struct daemon *d)
{
    char problems[DAEMON_ERR_MAX - 64] = "";
    if (d->pid == 0) {
        set_err(d, "msgd was never started");
        return -1;
    }
    if (d->running) {
        if (!d->stop_sent)
            daemon_signal(d, SIGTERM);
        if (daemon_wait_exit(d, daemon_ms(STOP_WAIT_MS)) < 0) {
            kill(d->pid, SIGKILL);
            reap_blocking(d->pid);
            mark_reaped(d, 0);
            add_problem(problems, sizeof problems,
                        "msgd did not exit within %d ms of its stop signal (killed); ",
                        daemon_ms(STOP_WAIT_MS));
        }
    }
    if (!problems[0] && !(WIFEXITED(d->wait_status) && WEXITSTATUS(d->wait_status) == 0)) {
        char how[96];
        describe_status(d->wait_status, how, sizeof how);
        add_problem(problems, sizeof problems, "msgd ended with %s, not exit status 0; ", how);
    }
    size_t len;
    char *log = read_file(d->log_path, &len);
    if (log) {
        for (size_t i = 0; i < sizeof sanitizer_markers / sizeof sanitizer_markers[0]; i++)
            if (strstr(log, sanitizer_markers[i]))
                add_problem(problems, sizeof problems,
                            "the log has a sanitizer report (\"%s\"); ", sanitizer_markers[i]);
        free(log);
    } else {
        add_problem(problems, sizeof problems, "cannot read the log %s; ", d->log_path);
    }
    if (d->notify_fd >= 0) {
        close(d->notify_fd);
        d->notify_fd = -1;
    }
    if (problems[0]) {
        set_err(d, "%s(temp dir %s kept)", problems, d->dir);
        daemon_print_log(d, 60);
        return -1;
    }
    if (!keep_tmp()) {
        remove_dir(d->dir);
        struct rec *r = rec_of(d->pid);
        if (r)
            r->removed = true;
    }
    return 0;
}
