/* fuzz_config: config_load() on arbitrary file contents.
 *
 * The input is written to a memfd (made once) and loaded through its
 * /proc/self/fd path, so every run reads a fresh file without touching disk.
 *
 * Invariants (abort on violation):
 *  - config_load returns 0 or a problem count > 0;
 *  - on 0 the error text is empty and the config keeps every range and
 *    cross-key rule of CONFIG.md: low < high water, hard limit >= high water
 *    + max_frame + 16, idle_timeout 0 or > heartbeat_interval when both are
 *    set, each listen address well-formed, tokens 1..128 bytes;
 *  - on > 0 the config is back to the defaults (tokens freed, NULL), and the
 *    error text has exactly that many lines, each "PATH:LINE: ..." (LINE
 *    within the file) or "PATH: ...";
 *  - a line over 190 bytes or with a NUL byte makes the load fail;
 *  - a good config written back out as INI loads to the same config;
 *  - config_free leaves nothing behind (LeakSanitizer checks every run).
 */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"

#include "fuzz_common.h"

#define KIB 1024ULL
#define MIB (1024 * KIB)
#define GIB (1024 * MIB)
#define ERR_CAP 65536
#define RANGE(v, lo, hi) ((uint64_t)(v) >= (uint64_t)(lo) && (uint64_t)(v) <= (uint64_t)(hi))

static int memfd = -1, memfd2 = -1;
static char path[64], path2[64];
static char err[ERR_CAP], err2[ERR_CAP];

static void put_file(int fd, const void *p, size_t n)
{
    FUZZ_CHECK(ftruncate(fd, 0) == 0, "ftruncate: %s", strerror(errno));
    size_t off = 0;
    while (off < n) {
        ssize_t w = pwrite(fd, (const char *)p + off, n - off, (off_t)off);
        FUZZ_CHECK(w > 0, "pwrite: %s", strerror(errno));
        off += (size_t)w;
    }
}

static void check_listen(const struct config_listen *l, const char *name)
{
    FUZZ_CHECK(l->n >= 0 && l->n <= CONFIG_MAX_ADDRS, "%s: %d addresses", name, l->n);
    for (int i = 0; i < l->n; i++) {
        FUZZ_CHECK(memchr(l->addr[i], '\0', CONFIG_ADDR_LEN) != NULL, "%s[%d] not terminated",
                   name, i);
        FUZZ_CHECK(config_check_addr(l->addr[i]) == 0, "%s[%d] '%s' is not an address", name, i,
                   l->addr[i]);
    }
}

static void check_good(const struct config *c)
{
    FUZZ_CHECK(RANGE(c->reactors, 0, 256), "reactors %d", c->reactors);
    FUZZ_CHECK(RANGE(c->workers, 1, 256), "workers %d", c->workers);
    FUZZ_CHECK(RANGE(c->worker_queue, 1, 1000000), "worker_queue %u", c->worker_queue);
    FUZZ_CHECK(RANGE(c->max_connections, 1, 10000000), "max_connections %u", c->max_connections);
    FUZZ_CHECK(RANGE(c->backlog, 1, 65535), "backlog %d", c->backlog);
    FUZZ_CHECK(memchr(c->user, '\0', sizeof c->user) != NULL, "user not terminated");
    for (const char *u = c->user; *u; u++)
        FUZZ_CHECK(isalnum((unsigned char)*u) || *u == '_' || *u == '.' || *u == '-',
                   "user '%s'", c->user);
    check_listen(&c->msg_listen, "msg.listen");
    check_listen(&c->echo_listen, "echo.listen");
    check_listen(&c->admin_listen, "admin.listen");
    FUZZ_CHECK(RANGE(c->max_frame, 64, 256 * MIB), "max_frame %llu",
               (unsigned long long)c->max_frame);
    FUZZ_CHECK(c->heartbeat_ms == 0 || RANGE(c->heartbeat_ms, 100, 3600000), "heartbeat %llu",
               (unsigned long long)c->heartbeat_ms);
    FUZZ_CHECK(c->idle_ms == 0 || RANGE(c->idle_ms, 100, 24 * 3600000ULL), "idle %llu",
               (unsigned long long)c->idle_ms);
    FUZZ_CHECK(c->idle_ms == 0 || c->heartbeat_ms == 0 || c->idle_ms > c->heartbeat_ms,
               "idle_timeout %llu <= heartbeat_interval %llu", (unsigned long long)c->idle_ms,
               (unsigned long long)c->heartbeat_ms);
    FUZZ_CHECK(c->drain_ms <= 600000, "drain %llu", (unsigned long long)c->drain_ms);
    FUZZ_CHECK(RANGE(c->out_high_water, 1, 64 * GIB) && RANGE(c->out_low_water, 1, 64 * GIB) &&
                   RANGE(c->out_hard_limit, 1, 64 * GIB), "output limits out of range");
    FUZZ_CHECK(c->out_low_water < c->out_high_water, "low %llu >= high %llu",
               (unsigned long long)c->out_low_water, (unsigned long long)c->out_high_water);
    FUZZ_CHECK(c->out_hard_limit >= c->out_high_water + c->max_frame + 16,
               "hard %llu < high %llu + max_frame %llu + 16",
               (unsigned long long)c->out_hard_limit, (unsigned long long)c->out_high_water,
               (unsigned long long)c->max_frame);
    FUZZ_CHECK(RANGE(c->max_subscriptions, 1, 1000000), "max_subscriptions %u",
               c->max_subscriptions);
    FUZZ_CHECK(c->ntokens >= 0 && (c->ntokens == 0) == (c->tokens == NULL), "ntokens %d, tokens %p",
               c->ntokens, (void *)c->tokens);
    for (int i = 0; i < c->ntokens; i++) {
        /* IDENTITY:TOKEN (split at the first ':') or a bare TOKEN. */
        const char *e = c->tokens[i], *colon = strchr(e, ':'), *t = colon ? colon + 1 : e;
        size_t idlen = colon ? (size_t)(colon - e) : 0, n = strlen(t);
        FUZZ_CHECK(n >= 1 && n <= 128, "entry %d: a token of %zu bytes", i, n);
        FUZZ_CHECK(!colon || (idlen >= 1 && idlen <= CONFIG_IDENTITY_MAX),
                   "entry %d: an identity of %zu bytes", i, idlen);
        FUZZ_CHECK(strchr(e, ',') == NULL, "entry %d holds a comma", i);
    }
    FUZZ_CHECK(RANGE(c->log_level, CONFIG_LOG_ERROR, CONFIG_LOG_DEBUG), "log level %d",
               (int)c->log_level);
}

static void check_defaults(const struct config *c)
{
    struct config d;
    config_defaults(&d);
    FUZZ_CHECK(c->tokens == NULL && c->ntokens == 0, "tokens left after a failed load");
    FUZZ_CHECK(c->reactors == d.reactors && c->workers == d.workers &&
                   c->worker_queue == d.worker_queue && c->max_connections == d.max_connections &&
                   c->backlog == d.backlog && strcmp(c->user, d.user) == 0 &&
                   c->max_frame == d.max_frame && c->heartbeat_ms == d.heartbeat_ms &&
                   c->idle_ms == d.idle_ms && c->drain_ms == d.drain_ms &&
                   c->out_high_water == d.out_high_water && c->out_low_water == d.out_low_water &&
                   c->out_hard_limit == d.out_hard_limit &&
                   c->max_subscriptions == d.max_subscriptions && c->log_level == d.log_level &&
                   c->delay_command == d.delay_command && c->stall_command == d.stall_command &&
                   c->msg_listen.n == d.msg_listen.n &&
                   c->echo_listen.n == d.echo_listen.n && c->admin_listen.n == d.admin_listen.n,
               "a failed load left non-default values");
}

/* Every line of the error text names the file: "PATH:LINE: " or "PATH: ". */
static void check_errors(const char *text, const char *p, int rc, int nlines)
{
    size_t plen = strlen(p), len = strlen(text);
    bool truncated = len + 1 >= ERR_CAP;
    int lines = 0;
    const char *s = text;
    while (*s) {
        const char *nl = strchr(s, '\n');
        if (!nl) {
            FUZZ_CHECK(truncated, "error text does not end with a newline: '%s'", s);
            break;
        }
        FUZZ_CHECK(strncmp(s, p, plen) == 0 && s[plen] == ':', "error line without the path: '%.*s'",
                   (int)(nl - s), s);
        const char *q = s + plen + 1;
        if (isdigit((unsigned char)*q)) {
            long line = strtol(q, (char **)&q, 10);
            FUZZ_CHECK(*q == ':' && line >= 1 && line <= nlines, "error line number %ld of %d: '%.*s'",
                       line, nlines, (int)(nl - s), s);
            q++;
        }
        FUZZ_CHECK(*q == ' ' && q + 1 < nl, "error line without a message: '%.*s'", (int)(nl - s), s);
        lines++;
        s = nl + 1;
    }
    if (!truncated)
        FUZZ_CHECK(lines == rc, "%d problems, %d error lines", rc, lines);
}

/* Writes items as a comma-separated value. An item that starts or ends with
 * white space (a form feed, say, which the list splitter keeps) gets an empty
 * item before or after it, so the line's own trimming does not eat it. */
static void put_list(FILE *f, char *const *items, int n)
{
    for (int i = 0; i < n; i++) {
        size_t len = strlen(items[i]);
        if (i == 0 && len && isspace((unsigned char)items[i][0]))
            fputc(',', f);
        fprintf(f, "%s%s", i ? "," : "", items[i]);
        if (i == n - 1 && len && isspace((unsigned char)items[i][len - 1]))
            fputc(',', f);
    }
    fputc('\n', f);
}

static void put_listen(FILE *f, const char *sec, const struct config_listen *l)
{
    char *items[CONFIG_MAX_ADDRS];
    for (int i = 0; i < l->n; i++)
        items[i] = (char *)l->addr[i];
    fprintf(f, "[%s]\nlisten=", sec);
    put_list(f, items, l->n);
}

/* Writes c back as INI text (sizes in bytes, durations in ms). */
static size_t format_config(const struct config *c, char *buf, size_t cap)
{
    static const char *const levels[] = {"error", "warn", "info", "debug"};
    FILE *f = fmemopen(buf, cap, "w");
    FUZZ_CHECK(f != NULL, "fmemopen");
    fprintf(f, "[server]\nreactors=%d\nworkers=%d\nworker_queue=%u\nmax_connections=%u\n"
               "backlog=%d\nuser=%s\n",
            c->reactors, c->workers, c->worker_queue, c->max_connections, c->backlog, c->user);
    put_listen(f, "msg", &c->msg_listen);
    fprintf(f, "max_frame=%llu\n", (unsigned long long)c->max_frame);
    put_listen(f, "echo", &c->echo_listen);
    put_listen(f, "admin", &c->admin_listen);
    fprintf(f, "[timeouts]\nheartbeat_interval=%llums\nidle_timeout=%llums\ndrain_timeout=%llums\n",
            (unsigned long long)c->heartbeat_ms, (unsigned long long)c->idle_ms,
            (unsigned long long)c->drain_ms);
    fprintf(f, "[limits]\noutput_high_water=%llu\noutput_low_water=%llu\noutput_hard_limit=%llu\n"
               "max_subscriptions=%u\n",
            (unsigned long long)c->out_high_water, (unsigned long long)c->out_low_water,
            (unsigned long long)c->out_hard_limit, c->max_subscriptions);
    fprintf(f, "[auth]\ntokens=");
    put_list(f, c->tokens, c->ntokens);
    fprintf(f, "[log]\nlevel=%s\n[diagnostics]\ndelay_command=%s\nstall_command=%s\n",
            levels[c->log_level], c->delay_command ? "on" : "off", c->stall_command ? "on" : "off");
    FUZZ_CHECK(!ferror(f), "formatting the config");
    long n = ftell(f);
    fclose(f);
    FUZZ_CHECK(n > 0 && (size_t)n < cap, "formatted config of %ld bytes", n);
    return (size_t)n;
}

static bool listen_equal(const struct config_listen *a, const struct config_listen *b)
{
    if (a->n != b->n)
        return false;
    for (int i = 0; i < a->n; i++)
        if (strcmp(a->addr[i], b->addr[i]) != 0)
            return false;
    return true;
}

static void check_same(const struct config *a, const struct config *b)
{
    FUZZ_CHECK(a->reactors == b->reactors && a->workers == b->workers &&
                   a->worker_queue == b->worker_queue && a->max_connections == b->max_connections &&
                   a->backlog == b->backlog && strcmp(a->user, b->user) == 0,
               "[server] differs after a round trip");
    FUZZ_CHECK(listen_equal(&a->msg_listen, &b->msg_listen) && a->max_frame == b->max_frame &&
                   listen_equal(&a->echo_listen, &b->echo_listen) &&
                   listen_equal(&a->admin_listen, &b->admin_listen),
               "listeners differ after a round trip");
    FUZZ_CHECK(a->heartbeat_ms == b->heartbeat_ms && a->idle_ms == b->idle_ms &&
                   a->drain_ms == b->drain_ms, "[timeouts] differ after a round trip");
    FUZZ_CHECK(a->out_high_water == b->out_high_water && a->out_low_water == b->out_low_water &&
                   a->out_hard_limit == b->out_hard_limit &&
                   a->max_subscriptions == b->max_subscriptions,
               "[limits] differ after a round trip");
    FUZZ_CHECK(a->ntokens == b->ntokens, "%d tokens, %d after a round trip", a->ntokens, b->ntokens);
    for (int i = 0; i < a->ntokens; i++)
        FUZZ_CHECK(strcmp(a->tokens[i], b->tokens[i]) == 0, "token %d differs: '%s' vs '%s'", i,
                   a->tokens[i], b->tokens[i]);
    FUZZ_CHECK(a->log_level == b->log_level && a->delay_command == b->delay_command &&
                   a->stall_command == b->stall_command,
               "[log]/[diagnostics] differ after a round trip");
}

/* Lines as the reader counts them; any over 190 bytes (less "\n" and one
 * "\r") or holding a NUL must fail the load. */
static int count_lines(const uint8_t *d, size_t n, bool *must_fail)
{
    int lines = 0;
    size_t start = 0;
    *must_fail = false;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && d[i] != '\n')
            continue;
        if (i == n && start == n)
            break; /* no partial last line */
        size_t len = i - start;
        if (len > 0 && d[start + len - 1] == '\r')
            len--;
        if (len > CONFIG_MAX_LINE || memchr(d + start, '\0', len) != NULL)
            *must_fail = true;
        lines++;
        start = i + 1;
    }
    return lines;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* [auth] tokens_file names a file to read: a fuzzed path would read
     * whatever this machine has there (not deterministic, and its errors
     * name that file, not the config). The reader has its own unit tests. */
    if (memmem(data, size, "tokens_file", 11))
        return 0;
    if (memfd < 0) {
        memfd = memfd_create("fuzz_config", MFD_CLOEXEC);
        memfd2 = memfd_create("fuzz_config_rt", MFD_CLOEXEC);
        FUZZ_CHECK(memfd >= 0 && memfd2 >= 0, "memfd_create: %s", strerror(errno));
        snprintf(path, sizeof path, "/proc/self/fd/%d", memfd);
        snprintf(path2, sizeof path2, "/proc/self/fd/%d", memfd2);
    }
    put_file(memfd, data, size);
    bool must_fail;
    int nlines = count_lines(data, size, &must_fail);

    struct config c;
    int rc = config_load(path, &c, err, sizeof err);
    FUZZ_CHECK(rc >= 0, "config_load returned %d", rc);
    if (rc == 0) {
        FUZZ_CHECK(err[0] == '\0', "a good file with error text: '%s'", err);
        FUZZ_CHECK(!must_fail, "a line over %d bytes or with a NUL was accepted", CONFIG_MAX_LINE);
        check_good(&c);
        /* Round trip: written back, it loads to the same config. */
        static char text[8192];
        size_t n = format_config(&c, text, sizeof text);
        put_file(memfd2, text, n);
        struct config c2;
        int rc2 = config_load(path2, &c2, err2, sizeof err2);
        FUZZ_CHECK(rc2 == 0, "the config written back does not load (%d):\n%s--- text:\n%s", rc2,
                   err2, text);
        check_same(&c, &c2);
        config_free(&c2);
    } else {
        FUZZ_CHECK(err[0] != '\0', "%d problems but no error text", rc);
        check_defaults(&c);
        check_errors(err, path, rc, nlines);
    }
    config_free(&c);
    FUZZ_CHECK(c.tokens == NULL && c.ntokens == 0, "config_free left tokens");
    config_free(&c); /* safe twice */
    return 0;
}
