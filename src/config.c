/* config: reads the INI file of CONFIG.md into a struct config through libinih,
 * with a line-counting reader that also catches what inih cannot report
 * (long lines, unknown sections, bad syntax), and checks every value. */
#include "config.h"
#include "net.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <sys/socket.h>

#define MS_SECOND 1000ULL
#define MS_MINUTE (60 * MS_SECOND)
#define MS_HOUR (60 * MS_MINUTE)
#define KIB 1024ULL
#define MIB (1024 * KIB)
#define GIB (1024 * MIB)

#define TOKEN_MAX 128    /* bytes per auth token */
#define FRAME_OVERHEAD 16 /* msg header bytes, for output_hard_limit */

/* ---- value parsers ---------------------------------------------------- */

/* Reads the run of decimal digits at *s (at least one) into *out and moves
 * *s past it. Returns 0, or -EINVAL when there is no digit or it overflows. */
static int read_digits(const char **s, uint64_t *out)
{
    const char *p = *s;
    if (!p || !isdigit((unsigned char)*p))
        return -EINVAL;
    uint64_t v = 0;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -EINVAL;
        v = v * 10 + d;
    }
    *s = p;
    *out = v;
    return 0;
}

/* Parses a plain decimal number (digits only). Returns 0 or -EINVAL. */
static int parse_uint(const char *s, uint64_t *out)
{
    uint64_t v;
    if (read_digits(&s, &v) < 0 || *s)
        return -EINVAL;
    *out = v;
    return 0;
}

int config_parse_duration_ms(const char *s, uint64_t *ms)
{
    uint64_t whole;
    if (!ms || read_digits(&s, &whole) < 0)
        return -EINVAL;
    /* Fraction digits past the twelfth are ignored: far below a millisecond. */
    uint64_t frac = 0, den = 1;
    if (*s == '.') {
        s++;
        if (!isdigit((unsigned char)*s))
            return -EINVAL;
        for (; isdigit((unsigned char)*s); s++) {
            if (den < 1000000000000ULL) {
                frac = frac * 10 + (uint64_t)(*s - '0');
                den *= 10;
            }
        }
    }
    uint64_t unit;
    if (*s == '\0' || strcmp(s, "s") == 0)
        unit = MS_SECOND;
    else if (strcmp(s, "ms") == 0)
        unit = 1;
    else if (strcmp(s, "m") == 0)
        unit = MS_MINUTE;
    else if (strcmp(s, "h") == 0)
        unit = MS_HOUR;
    else
        return -EINVAL;
    if (whole > UINT64_MAX / unit)
        return -EINVAL;
    uint64_t v = whole * unit;
    uint64_t f = (frac * unit + den / 2) / den; /* < 1e12 * 3.6e6: no overflow */
    if (v > UINT64_MAX - f)
        return -EINVAL;
    *ms = v + f;
    return 0;
}

int config_parse_size(const char *s, uint64_t *bytes)
{
    uint64_t v;
    if (!bytes || read_digits(&s, &v) < 0)
        return -EINVAL;
    uint64_t mult = 1;
    if (*s) {
        switch (*s) {
        case 'k': case 'K': mult = KIB; break;
        case 'm': case 'M': mult = MIB; break;
        case 'g': case 'G': mult = GIB; break;
        default: return -EINVAL;
        }
        if (s[1])
            return -EINVAL;
    }
    if (v > UINT64_MAX / mult)
        return -EINVAL;
    *bytes = v * mult;
    return 0;
}

int config_parse_bool(const char *s, bool *v)
{
    static const char *const yes[] = {"on", "yes", "true", "1"};
    static const char *const no[] = {"off", "no", "false", "0"};
    if (!s || !v)
        return -EINVAL;
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *v = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *v = false;
            return 0;
        }
    }
    return -EINVAL;
}

int config_parse_log_level(const char *s, enum config_log_level *lvl)
{
    static const char *const names[] = {
        [CONFIG_LOG_ERROR] = "error", [CONFIG_LOG_WARN] = "warn",
        [CONFIG_LOG_INFO] = "info", [CONFIG_LOG_DEBUG] = "debug",
    };
    if (!s || !lvl)
        return -EINVAL;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcasecmp(s, names[i]) == 0) {
            *lvl = (enum config_log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

_Static_assert(CONFIG_ADDR_LEN >= NET_NAME_LEN, "every address net_parse_addr takes fits");

int config_check_addr(const char *s)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (!s || net_parse_addr(s, &ss, &len) < 0)
        return -EINVAL;
    return 0;
}

/* ---- defaults, free, copy --------------------------------------------- */

void config_defaults(struct config *c)
{
    *c = (struct config){
        .reactors = 0,
        .workers = 2,
        .worker_queue = 1024,
        .max_connections = 10000,
        .backlog = 1024,
        .user = "",
        .msg_listen = {.n = 1, .addr = {"127.0.0.1:7700"}},
        .max_frame = 1 * MIB,
        .compress = {.n = 2, .id = {CODEC_ZSTD, CODEC_DEFLATE}},
        .compress_min = 1 * KIB,
        .compress_level = 1,
        .msg_proxy = {.nfrom = 1, .from = {{.family = AF_INET, .addr = {127, 0, 0, 1}, .bits = 32}}},
        .echo_proxy = {.nfrom = 1, .from = {{.family = AF_INET, .addr = {127, 0, 0, 1}, .bits = 32}}},
        .http_proxy = {.nfrom = 1, .from = {{.family = AF_INET, .addr = {127, 0, 0, 1}, .bits = 32}}},
        .cluster_prefix = "msgd",
        .cluster_reconnect_ms = 5 * MS_SECOND,
        .echo_listen = {.n = 0},
        .admin_listen = {.n = 1, .addr = {"127.0.0.1:7701"}},
        .heartbeat_ms = 30 * MS_SECOND,
        .idle_ms = 90 * MS_SECOND,
        .drain_ms = 5 * MS_SECOND,
        .msg_heartbeat_ms = CONFIG_INHERIT,
        .msg_idle_ms = CONFIG_INHERIT,
        .echo_idle_ms = CONFIG_INHERIT,
        .admin_idle_ms = CONFIG_INHERIT,
        .http_idle_ms = CONFIG_INHERIT,
        .out_high_water = 1 * MIB,
        .out_low_water = 256 * KIB,
        .out_hard_limit = 16 * MIB,
        .max_subscriptions = 64,
        .ntokens = 0,
        .tokens = NULL,
        .log_level = CONFIG_LOG_INFO,
        .delay_command = false,
        .stall_command = false,
        .tls_min_version = 12,
    };
}

static void free_tokens(char **tokens, int n)
{
    for (int i = 0; i < n; i++)
        free(tokens[i]);
    free(tokens);
}

void config_free(struct config *c)
{
    free_tokens(c->tokens, c->ntokens);
    c->tokens = NULL;
    c->ntokens = 0;
    for (int i = 0; i < c->nextras; i++)
        free(c->extras[i].value);
    free(c->extras);
    c->extras = NULL;
    c->nextras = 0;
}

int config_copy(struct config *dst, const struct config *src)
{
    *dst = *src;
    dst->tokens = NULL;
    dst->ntokens = 0;
    dst->extras = NULL;
    dst->nextras = 0;
    if (src->ntokens == 0)
        return 0;
    char **t = calloc((size_t)src->ntokens, sizeof *t);
    if (!t)
        return -ENOMEM;
    for (int i = 0; i < src->ntokens; i++) {
        t[i] = strdup(src->tokens[i]);
        if (!t[i]) {
            free_tokens(t, i);
            return -ENOMEM;
        }
    }
    dst->tokens = t;
    dst->ntokens = src->ntokens;
    return 0;
}

/* ---- the table of keys ------------------------------------------------ */

enum key_kind {
    KEY_INT,      /* int, whole number in min..max */
    KEY_U32,      /* uint32_t, whole number in min..max */
    KEY_DURATION, /* uint64_t ms in min..max, or 0 when zero_ok */
    KEY_OVERRIDE, /* a KEY_DURATION, or empty: CONFIG_INHERIT (a per-listener timeout) */
    KEY_SIZE,     /* uint64_t bytes in min..max */
    KEY_BOOL,
    KEY_LEVEL,
    KEY_USER,
    KEY_LISTEN,
    KEY_TOKENS,
    KEY_PATH,     /* char[CONFIG_PATH_LEN], a file path (empty = none) */
    KEY_MODULES,  /* [modules] load: a list of paths */
    KEY_CODECS,   /* struct codec_list: codec names, best first */
    KEY_NAME,     /* char[64]: up to 63 of A-Z a-z 0-9 _ . - (empty = default) */
    KEY_SECRET,   /* char[128]: any printable text */
    KEY_ADDR,     /* char[CONFIG_ADDR_LEN]: one address, or empty */
    KEY_CIDRS,    /* struct config_proxy's from: addresses or CIDR blocks */
    KEY_TLSVER,   /* int: "1.2" -> 12, "1.3" -> 13 */
};

struct key_def {
    const char *section;
    const char *name;
    enum key_kind kind;
    size_t off; /* offset in struct config */
    uint64_t min, max;
    bool zero_ok;
};

#define KEY(sec, nm, kind, field, lo, hi, zero) \
    {sec, nm, kind, offsetof(struct config, field), lo, hi, zero}

static const struct key_def keys[] = {
    KEY("server", "reactors", KEY_INT, reactors, 0, 256, false),
    KEY("server", "workers", KEY_INT, workers, 1, 256, false),
    KEY("server", "worker_queue", KEY_U32, worker_queue, 1, 1000000, false),
    KEY("server", "max_connections", KEY_U32, max_connections, 1, 10000000, false),
    KEY("server", "backlog", KEY_INT, backlog, 1, 65535, false),
    KEY("server", "user", KEY_USER, user, 0, 0, false),
    KEY("msg", "listen", KEY_LISTEN, msg_listen, 0, 0, false),
    KEY("msg", "max_frame", KEY_SIZE, max_frame, 64, 256 * MIB, false),
    KEY("msg", "compress", KEY_CODECS, compress, 0, 0, false),
    KEY("msg", "proxy_protocol", KEY_BOOL, msg_proxy.on, 0, 0, false),
    KEY("msg", "proxy_from", KEY_CIDRS, msg_proxy, 0, 0, false),
    KEY("echo", "proxy_protocol", KEY_BOOL, echo_proxy.on, 0, 0, false),
    KEY("echo", "proxy_from", KEY_CIDRS, echo_proxy, 0, 0, false),
    KEY("http", "proxy_protocol", KEY_BOOL, http_proxy.on, 0, 0, false),
    KEY("http", "proxy_from", KEY_CIDRS, http_proxy, 0, 0, false),
    KEY("msg", "compress_min", KEY_SIZE, compress_min, 64, 256 * MIB, false),
    KEY("msg", "compress_level", KEY_INT, compress_level, 1, 19, false),
    KEY("msg", "heartbeat_interval", KEY_OVERRIDE, msg_heartbeat_ms, 100, MS_HOUR, true),
    KEY("msg", "idle_timeout", KEY_OVERRIDE, msg_idle_ms, 100, 24 * MS_HOUR, true),
    KEY("echo", "listen", KEY_LISTEN, echo_listen, 0, 0, false),
    KEY("echo", "idle_timeout", KEY_OVERRIDE, echo_idle_ms, 100, 24 * MS_HOUR, true),
    KEY("admin", "listen", KEY_LISTEN, admin_listen, 0, 0, false),
    KEY("admin", "idle_timeout", KEY_OVERRIDE, admin_idle_ms, 100, 24 * MS_HOUR, true),
    KEY("http", "listen", KEY_LISTEN, http_listen, 0, 0, false),
    KEY("http", "idle_timeout", KEY_OVERRIDE, http_idle_ms, 100, 24 * MS_HOUR, true),
    KEY("msg", "tls_listen", KEY_LISTEN, tls_listen, 0, 0, false),
    KEY("tls", "cert", KEY_PATH, tls_cert, 0, 0, false),
    KEY("tls", "key", KEY_PATH, tls_key, 0, 0, false),
    KEY("tls", "ca", KEY_PATH, tls_ca, 0, 0, false),
    KEY("tls", "min_version", KEY_TLSVER, tls_min_version, 0, 0, false),
    KEY("timeouts", "heartbeat_interval", KEY_DURATION, heartbeat_ms, 100, MS_HOUR, true),
    KEY("timeouts", "idle_timeout", KEY_DURATION, idle_ms, 100, 24 * MS_HOUR, true),
    KEY("timeouts", "drain_timeout", KEY_DURATION, drain_ms, 0, 10 * MS_MINUTE, false),
    KEY("limits", "output_high_water", KEY_SIZE, out_high_water, 1, 64 * GIB, false),
    KEY("limits", "output_low_water", KEY_SIZE, out_low_water, 1, 64 * GIB, false),
    KEY("limits", "output_hard_limit", KEY_SIZE, out_hard_limit, 1, 64 * GIB, false),
    KEY("limits", "max_subscriptions", KEY_U32, max_subscriptions, 1, 1000000, false),
    KEY("auth", "tokens", KEY_TOKENS, tokens, 0, 0, false),
    KEY("auth", "tokens_file", KEY_PATH, tokens_file, 0, 0, false),
    KEY("log", "level", KEY_LEVEL, log_level, 0, 0, false),
    KEY("diagnostics", "delay_command", KEY_BOOL, delay_command, 0, 0, false),
    KEY("diagnostics", "stall_command", KEY_BOOL, stall_command, 0, 0, false),
    KEY("cluster", "redis", KEY_ADDR, cluster_redis, 0, 0, false),
    KEY("cluster", "node", KEY_NAME, cluster_node, 0, 0, false),
    KEY("cluster", "password", KEY_SECRET, cluster_password, 0, 0, false),
    KEY("cluster", "channel_prefix", KEY_NAME, cluster_prefix, 0, 0, false),
    KEY("cluster", "reconnect_max", KEY_DURATION, cluster_reconnect_ms, 100, 10 * MS_MINUTE, false),
    KEY("modules", "load", KEY_MODULES, modules, 0, 0, false),
};

#define NKEYS (sizeof keys / sizeof keys[0])

static const char *const sections[] = {
    "server", "msg", "echo", "admin", "http", "timeouts", "limits", "auth", "log", "diagnostics", "modules",
    "tls", "cluster",
};

#define SECTION_NONE (-1)    /* before the first [section] */
#define SECTION_UNKNOWN (-2) /* in a section already reported as unknown */
#define SECTION_EXTRA (-3)   /* in a section kept for a module (ld->extra) */

/* ---- loading state and error text ------------------------------------- */

struct load {
    const char *path;
    struct config *c;
    FILE *f;
    char *line; /* getline buffer */
    size_t cap;
    int lineno;     /* the line the reader returned last: the handler's line */
    int read_errno; /* nonzero when reading failed */
    int section;    /* index in sections[], or SECTION_NONE / SECTION_UNKNOWN */
    char *err;
    size_t errlen, errused;
    int problems;
    int first_key_error; /* first line where the handler returned 0 */
    char extra[64];      /* the name of the SECTION_EXTRA section */
    int set_line[NKEYS]; /* where each key was set, 0 = not set */
    bool bad[NKEYS];     /* the key's value was rejected */
};

static void append(struct load *ld, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void append(struct load *ld, const char *fmt, ...)
{
    if (!ld->err || ld->errused + 1 >= ld->errlen)
        return;
    size_t room = ld->errlen - ld->errused;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(ld->err + ld->errused, room, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    ld->errused += (size_t)n < room ? (size_t)n : room - 1;
}

/* Appends "PATH:LINE: message\n", or "PATH: message\n" when line is 0. */
static void report(struct load *ld, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void report(struct load *ld, int line, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (line > 0)
        append(ld, "%s:%d: %s\n", ld->path, line, msg);
    else
        append(ld, "%s: %s\n", ld->path, msg);
    ld->problems++;
}

/* "0", "100ms", "30s", "10m", "1h": the largest unit that divides exactly. */
static void fmt_ms(char *buf, size_t len, uint64_t ms)
{
    if (ms == 0)
        snprintf(buf, len, "0");
    else if (ms % MS_HOUR == 0)
        snprintf(buf, len, "%lluh", (unsigned long long)(ms / MS_HOUR));
    else if (ms % MS_MINUTE == 0)
        snprintf(buf, len, "%llum", (unsigned long long)(ms / MS_MINUTE));
    else if (ms % MS_SECOND == 0)
        snprintf(buf, len, "%llus", (unsigned long long)(ms / MS_SECOND));
    else
        snprintf(buf, len, "%llums", (unsigned long long)ms);
}

/* "64", "256K", "1M", "64G": the largest suffix that divides exactly. */
static void fmt_size(char *buf, size_t len, uint64_t n)
{
    if (n != 0 && n % GIB == 0)
        snprintf(buf, len, "%lluG", (unsigned long long)(n / GIB));
    else if (n != 0 && n % MIB == 0)
        snprintf(buf, len, "%lluM", (unsigned long long)(n / MIB));
    else if (n != 0 && n % KIB == 0)
        snprintf(buf, len, "%lluK", (unsigned long long)(n / KIB));
    else
        snprintf(buf, len, "%llu", (unsigned long long)n);
}

static void fmt_range(char *buf, size_t len, const struct key_def *k)
{
    char lo[32], hi[32];
    if (k->kind == KEY_DURATION || k->kind == KEY_OVERRIDE) {
        fmt_ms(lo, sizeof lo, k->min);
        fmt_ms(hi, sizeof hi, k->max);
    } else if (k->kind == KEY_SIZE) {
        fmt_size(lo, sizeof lo, k->min);
        fmt_size(hi, sizeof hi, k->max);
    } else {
        snprintf(lo, sizeof lo, "%llu", (unsigned long long)k->min);
        snprintf(hi, sizeof hi, "%llu", (unsigned long long)k->max);
    }
    snprintf(buf, len, "%s%s..%s", k->zero_ok ? "0 or " : "", lo, hi);
}

/* ---- applying one key ------------------------------------------------- */

static bool is_list_space(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* Splits a comma-separated value: calls item() for each trimmed, non-empty
 * item (NUL-terminated in a scratch copy). Stops at the first item() < 0. */
static int split_list(const char *value, int (*item)(void *arg, const char *s), void *arg)
{
    char buf[CONFIG_MAX_LINE + 1];
    snprintf(buf, sizeof buf, "%s", value);
    char *p = buf;
    for (;;) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        while (is_list_space(*p))
            p++;
        char *end = p + strlen(p);
        while (end > p && is_list_space(end[-1]))
            *--end = '\0';
        if (*p) {
            int rc = item(arg, p);
            if (rc < 0)
                return rc;
        }
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

struct cidr_split {
    struct config_proxy out;
    char bad[CONFIG_MAX_LINE + 1];
};

static int cidr_item(void *arg, const char *s)
{
    struct cidr_split *cs = arg;
    if (cs->out.nfrom == CONFIG_MAX_ADDRS)
        return -E2BIG;
    if (proxy_cidr_parse(s, &cs->out.from[cs->out.nfrom]) < 0) {
        snprintf(cs->bad, sizeof cs->bad, "%s", s);
        return -EINVAL;
    }
    cs->out.nfrom++;
    return 0;
}

struct module_split {
    struct config *c;
};

static int module_item(void *arg, const char *s)
{
    struct config *c = ((struct module_split *)arg)->c;
    if (c->nmodules == CONFIG_MAX_MODULES)
        return -E2BIG;
    if (strlen(s) >= CONFIG_PATH_LEN)
        return -ENAMETOOLONG;
    snprintf(c->modules[c->nmodules++], CONFIG_PATH_LEN, "%s", s);
    return 0;
}

struct listen_split {
    struct config_listen out;
    char bad[CONFIG_MAX_LINE + 1]; /* the first bad address */
};

static int listen_item(void *arg, const char *s)
{
    struct listen_split *ls = arg;
    if (config_check_addr(s) < 0) {
        snprintf(ls->bad, sizeof ls->bad, "%s", s);
        return -EINVAL;
    }
    if (ls->out.n == CONFIG_MAX_ADDRS)
        return -E2BIG;
    snprintf(ls->out.addr[ls->out.n++], CONFIG_ADDR_LEN, "%s", s);
    return 0;
}

struct token_split {
    char **tokens;
    int n;
    int bad_index;   /* 1-based index of a bad entry */
    const char *why; /* what is wrong with it */
};

/* An entry is IDENTITY:TOKEN, split at the first ':', or a bare TOKEN. */
static int token_item(void *arg, const char *s)
{
    struct token_split *ts = arg;
    const char *colon = strchr(s, ':');
    const char *token = colon ? colon + 1 : s;
    ts->why = colon == s ? "an empty identity before ':'"
            : colon && colon - s > CONFIG_IDENTITY_MAX ? "an identity longer than 255 bytes"
            : *token == '\0' ? "an empty token"
            : strlen(token) > TOKEN_MAX ? "a token longer than 128 bytes"
            : NULL;
    if (ts->why) {
        ts->bad_index = ts->n + 1;
        return -EINVAL;
    }
    char **t = realloc(ts->tokens, (size_t)(ts->n + 1) * sizeof *t);
    if (!t)
        return -ENOMEM;
    ts->tokens = t;
    if (!(t[ts->n] = strdup(s)))
        return -ENOMEM;
    ts->n++;
    return 0;
}

static bool valid_user(const char *s)
{
    size_t n = strlen(s);
    if (n > 63)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '.' && *s != '-')
            return false;
    return true;
}

/* Does the number in a duration have a non-zero digit? ("0.0001s" does.) */
static bool has_nonzero_digit(const char *s)
{
    for (; *s; s++)
        if (*s >= '1' && *s <= '9')
            return true;
    return false;
}

/* Checks value for key k and stores it in ld->c. Reports and returns false
 * when it is bad, leaving the field as it was. */
static bool apply_key(struct load *ld, const struct key_def *k, const char *value)
{
    void *field = (char *)ld->c + k->off;
    int line = ld->lineno;
    char range[80];
    uint64_t v = 0;
    int rc;
    switch (k->kind) {
    case KEY_OVERRIDE:
        if (*value == '\0') {
            *(uint64_t *)field = CONFIG_INHERIT;
            return true;
        }
        /* fall through */
    case KEY_INT:
    case KEY_U32:
    case KEY_DURATION:
    case KEY_SIZE: {
        const char *what;
        if (k->kind == KEY_DURATION || k->kind == KEY_OVERRIDE) {
            rc = config_parse_duration_ms(value, &v);
            what = "not a duration (e.g. 500ms, 30s, 1.5m, 1h)";
        } else if (k->kind == KEY_SIZE) {
            rc = config_parse_size(value, &v);
            what = "not a size (e.g. 4096, 64K, 1M, 2G)";
        } else {
            rc = parse_uint(value, &v);
            what = "not a whole number";
        }
        if (rc < 0) {
            report(ld, line, "bad value '%s' for '%s' in [%s]: %s", value, k->name, k->section, what);
            return false;
        }
        bool zero = v == 0 && !((k->kind == KEY_DURATION || k->kind == KEY_OVERRIDE) &&
                                has_nonzero_digit(value));
        if ((v < k->min || v > k->max) && !(k->zero_ok && zero)) {
            fmt_range(range, sizeof range, k);
            report(ld, line, "bad value '%s' for '%s' in [%s]: out of range %s",
                   value, k->name, k->section, range);
            return false;
        }
        if (k->kind == KEY_INT)
            *(int *)field = (int)v;
        else if (k->kind == KEY_U32)
            *(uint32_t *)field = (uint32_t)v;
        else
            *(uint64_t *)field = v;
        return true;
    }
    case KEY_BOOL:
        if (config_parse_bool(value, field) < 0) {
            report(ld, line, "bad value '%s' for '%s' in [%s]: not on or off", value, k->name, k->section);
            return false;
        }
        return true;
    case KEY_LEVEL:
        if (config_parse_log_level(value, field) < 0) {
            report(ld, line, "bad value '%s' for '%s' in [%s]: not one of error, warn, info, debug",
                   value, k->name, k->section);
            return false;
        }
        return true;
    case KEY_USER:
        if (!valid_user(value)) {
            report(ld, line, "bad value '%s' for '%s' in [%s]: not a user name "
                   "(up to 63 of A-Z a-z 0-9 _ . -)", value, k->name, k->section);
            return false;
        }
        snprintf(field, sizeof ld->c->user, "%s", value);
        return true;
    case KEY_NAME:
        if (!valid_user(value)) {
            report(ld, line, "bad value '%s' for '%s' in [%s]: not a name "
                   "(up to 63 of A-Z a-z 0-9 _ . -)", value, k->name, k->section);
            return false;
        }
        snprintf(field, 64, "%s", value);
        return true;
    case KEY_SECRET:
        for (const char *c = value; *c; c++)
            if ((unsigned char)*c < 32 || *c == 127 || c - value >= 127) {
                report(ld, line, "bad value for '%s' in [%s]: at most 127 printable characters",
                       k->name, k->section);
                return false;
            }
        snprintf(field, 128, "%s", value);
        return true;
    case KEY_CIDRS: {
        struct cidr_split cs = {.out.nfrom = 0};
        rc = split_list(value, cidr_item, &cs);
        if (rc < 0) {
            if (rc == -E2BIG)
                report(ld, line, "bad value for '%s' in [%s]: more than %d entries", k->name,
                       k->section, CONFIG_MAX_ADDRS);
            else
                report(ld, line, "bad value '%s' for '%s' in [%s]: not an address or CIDR block "
                       "(1.2.3.4, 10.0.0.0/8, ::1, fd00::/8)", cs.bad, k->name, k->section);
            return false;
        }
        struct config_proxy *px = field;
        px->nfrom = cs.out.nfrom;
        memcpy(px->from, cs.out.from, sizeof px->from);
        return true;
    }
    case KEY_ADDR:
        if (*value && (strlen(value) >= CONFIG_ADDR_LEN || config_check_addr(value) < 0)) {
            report(ld, line, "bad value '%s' for '%s' in [%s]: not an address "
                   "(" NET_ADDR_FORMS ")", value, k->name, k->section);
            return false;
        }
        snprintf(field, CONFIG_ADDR_LEN, "%s", value);
        return true;
    case KEY_PATH:
        if (strlen(value) >= sizeof ld->c->tokens_file) {
            report(ld, line, "bad value for '%s' in [%s]: a path of at most %zu bytes", k->name,
                   k->section, sizeof ld->c->tokens_file - 1);
            return false;
        }
        snprintf(field, sizeof ld->c->tokens_file, "%s", value);
        return true;
    case KEY_LISTEN: {
        struct listen_split ls = {.out.n = 0};
        rc = split_list(value, listen_item, &ls);
        if (rc == -E2BIG) {
            report(ld, line, "bad value for '%s' in [%s]: more than %d addresses",
                   k->name, k->section, CONFIG_MAX_ADDRS);
            return false;
        }
        if (rc < 0) {
            report(ld, line, "bad value '%s' for '%s' in [%s]: not an address "
                   "(" NET_ADDR_FORMS ")", ls.bad, k->name, k->section);
            return false;
        }
        *(struct config_listen *)field = ls.out;
        return true;
    }
    case KEY_CODECS:
        if (codec_parse_list(value, strlen(value), true, field) < 0) {
            report(ld, line, "bad value '%s' for '%s' in [%s]: not a list of codecs "
                   "(zstd, deflate; each at most once)", value, k->name, k->section);
            return false;
        }
        return true;
    case KEY_TLSVER:
        if (strcmp(value, "1.2") != 0 && strcmp(value, "1.3") != 0) {
            report(ld, line, "bad value '%s' for '%s' in [%s]: not 1.2 or 1.3", value, k->name,
                   k->section);
            return false;
        }
        *(int *)field = value[2] == '3' ? 13 : 12;
        return true;
    case KEY_MODULES: {
        struct module_split ms = {.c = ld->c};
        ld->c->nmodules = 0;
        rc = split_list(value, module_item, &ms);
        if (rc < 0) {
            if (rc == -E2BIG)
                report(ld, line, "bad value for 'load' in [modules]: more than %d modules",
                       CONFIG_MAX_MODULES);
            else
                report(ld, line, "bad value for 'load' in [modules]: a path of at most %d bytes",
                       CONFIG_PATH_LEN - 1);
            ld->c->nmodules = 0;
            return false;
        }
        return true;
    }
    case KEY_TOKENS: {
        struct token_split ts = {.tokens = NULL};
        rc = split_list(value, token_item, &ts);
        if (rc < 0) {
            free_tokens(ts.tokens, ts.n);
            if (rc == -ENOMEM)
                report(ld, line, "out of memory");
            else
                report(ld, line, "bad value for 'tokens' in [auth]: entry %d has %s "
                       "(entries are IDENTITY:TOKEN or TOKEN)", ts.bad_index, ts.why);
            return false;
        }
        free_tokens(ld->c->tokens, ld->c->ntokens);
        ld->c->tokens = ts.tokens;
        ld->c->ntokens = ts.n;
        return true;
    }
    }
    return false;
}

/* Adds a line of a module's section to ld->c->extras. Returns false after
 * reporting a problem (a duplicate key, no memory). */
static bool keep_extra(struct load *ld, const char *key, const char *value, int line)
{
    struct config *c = ld->c;
    for (int i = 0; key && i < c->nextras; i++) {
        const struct config_extra *e = &c->extras[i];
        if (strcmp(e->section, ld->extra) == 0 && strcmp(e->key, key) == 0) {
            report(ld, line, "duplicate key '%s' in [%s] (first set on line %d)", key, ld->extra,
                   e->line);
            return false;
        }
    }
    if (key && strlen(key) >= sizeof c->extras[0].key) {
        report(ld, line, "key '%.40s...' in [%s] is too long", key, ld->extra);
        return false;
    }
    struct config_extra *grown = realloc(c->extras, (size_t)(c->nextras + 1) * sizeof *grown);
    char *copy = key ? strdup(value) : NULL;
    if (grown)
        c->extras = grown;
    if (!grown || (key && !copy)) {
        free(copy);
        report(ld, line, "out of memory");
        return false;
    }
    struct config_extra *e = &c->extras[c->nextras++];
    snprintf(e->section, sizeof e->section, "%s", ld->extra);
    snprintf(e->key, sizeof e->key, "%s", key ? key : "");
    e->value = copy;
    e->line = line;
    return true;
}

/* A section name a module may own: 1..63 of a-z 0-9 _. */
static bool module_section_name(const char *name, size_t n)
{
    if (n == 0 || n >= 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!islower((unsigned char)name[i]) && !isdigit((unsigned char)name[i]) && name[i] != '_')
            return false;
    return true;
}

/* inih's handler: one name = value line of ld->lineno. Returns 0 when the
 * line was reported, so inih's own first error line can be told apart. */
static int on_key(void *user, const char *section, const char *name, const char *value)
{
    struct load *ld = user;
    (void)section; /* the reader tracks sections, with their names untruncated */
    int line = ld->lineno;
    if (ld->section == SECTION_UNKNOWN)
        return 1; /* the section header was already reported */
    if (ld->section == SECTION_EXTRA) {
        if (keep_extra(ld, name, value, line))
            return 1;
    } else if (ld->section == SECTION_NONE) {
        report(ld, line, "key '%s' is outside any section", name);
    } else {
        const char *sec = sections[ld->section];
        size_t i = 0;
        while (i < NKEYS && (strcmp(keys[i].section, sec) != 0 || strcmp(keys[i].name, name) != 0))
            i++;
        if (i == NKEYS) {
            report(ld, line, "unknown key '%s' in [%s]", name, sec);
        } else if (ld->set_line[i]) {
            report(ld, line, "duplicate key '%s' in [%s] (first set on line %d)", name, sec,
                   ld->set_line[i]);
        } else {
            ld->set_line[i] = line;
            if (apply_key(ld, &keys[i], value))
                return 1;
            ld->bad[i] = true;
        }
    }
    if (!ld->first_key_error)
        ld->first_key_error = line;
    return 0;
}

/* ---- the reader --------------------------------------------------------- */

/* inih's find_chars_or_comment: the first of chars, or of an inline ';'
 * comment (one after whitespace), or the end. */
static const char *find_chars_or_comment(const char *s, const char *chars)
{
    bool was_space = false;
    while (*s && !(chars && strchr(chars, *s)) && !(was_space && *s == ';')) {
        was_space = isspace((unsigned char)*s);
        s++;
    }
    return s;
}

static int find_section(const char *name, size_t n)
{
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++)
        if (strlen(sections[i]) == n && memcmp(sections[i], name, n) == 0)
            return (int)i;
    return SECTION_UNKNOWN;
}

/* Looks at one line (trimmed, NUL-terminated) before inih does. Tracks the
 * section; returns false after reporting a line inih must not see. */
static bool check_line(struct load *ld, const char *s)
{
    if (*s == '\0' || *s == ';' || *s == '#')
        return true;
    if (*s == '[') {
        const char *end = find_chars_or_comment(s + 1, "]");
        if (*end != ']') {
            report(ld, ld->lineno, "section header without ']'");
            ld->section = SECTION_UNKNOWN; /* its keys would only add noise */
            return false;
        }
        const char *rest = end + 1;
        while (isspace((unsigned char)*rest))
            rest++;
        const char *name = s + 1;
        while (name < end && isspace((unsigned char)*name))
            name++;
        while (end > name && isspace((unsigned char)end[-1]))
            end--;
        ld->section = find_section(name, (size_t)(end - name));
        if (*rest && *rest != ';' && *rest != '#') {
            report(ld, ld->lineno, "unexpected text after ']'");
            return false;
        }
        size_t n = (size_t)(end - name);
        if (ld->section == SECTION_UNKNOWN && module_section_name(name, n)) {
            /* Perhaps a module's: kept, and checked once the modules are known. */
            ld->section = SECTION_EXTRA;
            snprintf(ld->extra, sizeof ld->extra, "%.*s", (int)n, name);
            return keep_extra(ld, NULL, NULL, ld->lineno);
        }
        if (ld->section == SECTION_UNKNOWN)
            report(ld, ld->lineno, "unknown section [%.*s]", (int)n, name);
        return true;
    }
    const char *end = find_chars_or_comment(s, "=:");
    if (*end != '=' && *end != ':') {
        report(ld, ld->lineno, "expected 'key = value' or '[section]'");
        return false;
    }
    return true;
}

/* inih's fgets-like reader over ld->f. Counts lines; rejects long lines and
 * NUL bytes; hands inih each line without leading blanks (so no line is taken
 * as a multi-line continuation) and replaces a line already reported by an
 * empty one, keeping inih's count in step. */
static char *read_line(char *str, int num, void *stream)
{
    struct load *ld = stream;
    errno = 0;
    ssize_t n = getline(&ld->line, &ld->cap, ld->f);
    if (n < 0) {
        if (ferror(ld->f))
            ld->read_errno = errno ? errno : EIO;
        return NULL;
    }
    ld->lineno++;
    char *s = ld->line;
    size_t len = (size_t)n;
    if (len > 0 && s[len - 1] == '\n')
        s[--len] = '\0';
    if (len > 0 && s[len - 1] == '\r')
        s[--len] = '\0';
    bool ok = true;
    if (strlen(s) != len) {
        report(ld, ld->lineno, "line contains a NUL byte");
        ok = false;
    } else if (len > CONFIG_MAX_LINE) {
        report(ld, ld->lineno, "line longer than %d bytes", CONFIG_MAX_LINE);
        ok = false;
    } else {
        if (ld->lineno == 1 && len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0)
            s += 3, len -= 3; /* a UTF-8 byte order mark */
        while (isspace((unsigned char)*s))
            s++, len--;
        while (len > 0 && isspace((unsigned char)s[len - 1]))
            s[--len] = '\0';
        ok = check_line(ld, s);
    }
    if (num <= 0)
        return NULL;
    snprintf(str, (size_t)num, "%s\n", ok ? s : "");
    return str;
}

/* ---- loading ------------------------------------------------------------ */

#define KEY_INDEX(field) key_index(offsetof(struct config, field))

static size_t key_index(size_t off)
{
    size_t i = 0;
    while (i < NKEYS - 1 && keys[i].off != off)
        i++;
    return i;
}

/* The checks of keys that must agree, skipped when a key involved was bad. */
static void check_cross(struct load *ld)
{
    const struct config *c = ld->c;
    char a[32], b[32];
    if (!ld->bad[KEY_INDEX(heartbeat_ms)] && !ld->bad[KEY_INDEX(idle_ms)] && c->idle_ms != 0 &&
        c->heartbeat_ms != 0 && c->idle_ms <= c->heartbeat_ms) {
        fmt_ms(a, sizeof a, c->idle_ms);
        fmt_ms(b, sizeof b, c->heartbeat_ms);
        report(ld, 0, "idle_timeout (%s) must be greater than heartbeat_interval (%s)", a, b);
    }
    uint64_t hb, idle;
    config_listener_timeouts(c, "msg", &hb, &idle);
    if ((c->msg_heartbeat_ms != CONFIG_INHERIT || c->msg_idle_ms != CONFIG_INHERIT) &&
        !ld->bad[KEY_INDEX(heartbeat_ms)] && !ld->bad[KEY_INDEX(idle_ms)] &&
        !ld->bad[KEY_INDEX(msg_heartbeat_ms)] && !ld->bad[KEY_INDEX(msg_idle_ms)] &&
        idle != 0 && hb != 0 && idle <= hb) {
        fmt_ms(a, sizeof a, idle);
        fmt_ms(b, sizeof b, hb);
        report(ld, 0, "idle_timeout of [msg] (%s%s) must be greater than its heartbeat_interval "
               "(%s%s)", a, c->msg_idle_ms == CONFIG_INHERIT ? ", from [timeouts]" : "", b,
               c->msg_heartbeat_ms == CONFIG_INHERIT ? ", from [timeouts]" : "");
    }
    if (!ld->bad[KEY_INDEX(out_low_water)] && !ld->bad[KEY_INDEX(out_high_water)] &&
        c->out_low_water >= c->out_high_water) {
        fmt_size(a, sizeof a, c->out_low_water);
        fmt_size(b, sizeof b, c->out_high_water);
        report(ld, 0, "output_low_water (%s) must be less than output_high_water (%s)", a, b);
    }
    if (!ld->bad[KEY_INDEX(compress_min)] && !ld->bad[KEY_INDEX(max_frame)] &&
        c->compress_min > c->max_frame) {
        if (ld->set_line[KEY_INDEX(compress_min)]) {
            fmt_size(a, sizeof a, c->compress_min);
            fmt_size(b, sizeof b, c->max_frame);
            report(ld, 0, "compress_min (%s) must not be above max_frame (%s)", a, b);
        } else {
            ld->c->compress_min = c->max_frame; /* the default follows a small max_frame */
        }
    }
    if (c->tls_listen.n > 0 && (!c->tls_cert[0] || !c->tls_key[0]))
        report(ld, 0, "tls_listen needs [tls] cert and key");
    uint64_t need = c->out_high_water + c->max_frame + FRAME_OVERHEAD;
    if (!ld->bad[KEY_INDEX(out_hard_limit)] && !ld->bad[KEY_INDEX(out_high_water)] &&
        !ld->bad[KEY_INDEX(max_frame)] && c->out_hard_limit < need) {
        fmt_size(a, sizeof a, c->out_hard_limit);
        report(ld, 0, "output_hard_limit (%s) must be at least output_high_water + max_frame + %d (%llu)",
               a, FRAME_OVERHEAD, (unsigned long long)need);
    }
}

void config_listener_timeouts(const struct config *c, const char *section,
                              uint64_t *heartbeat_ms, uint64_t *idle_ms)
{
    uint64_t hb = CONFIG_INHERIT, idle = CONFIG_INHERIT;
    if (strcmp(section, "msg") == 0) {
        hb = c->msg_heartbeat_ms;
        idle = c->msg_idle_ms;
    } else if (strcmp(section, "echo") == 0) {
        idle = c->echo_idle_ms;
    } else if (strcmp(section, "admin") == 0) {
        idle = c->admin_idle_ms;
    } else if (strcmp(section, "http") == 0) {
        idle = c->http_idle_ms;
    }
    *heartbeat_ms = hb == CONFIG_INHERIT ? c->heartbeat_ms : hb;
    *idle_ms = idle == CONFIG_INHERIT ? c->idle_ms : idle;
}

/* Without a module to load, a section msgd does not know is an error. */
static void check_extras(struct load *ld)
{
    for (int i = 0; ld->c->nmodules == 0 && i < ld->c->nextras; i++)
        if (!ld->c->extras[i].key[0])
            report(ld, ld->c->extras[i].line, "unknown section [%s]", ld->c->extras[i].section);
}

int config_resolve_path(const char *cfgpath, const char *name, char *out, size_t outlen)
{
    const char *slash = strrchr(cfgpath, '/');
    int n = name[0] != '/' && slash
                ? snprintf(out, outlen, "%.*s/%s", (int)(slash - cfgpath), cfgpath, name)
                : snprintf(out, outlen, "%s", name);
    return n >= 0 && (size_t)n < outlen ? 0 : -ENAMETOOLONG;
}

bool config_section_known(const char *name)
{
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++)
        if (strcmp(sections[i], name) == 0)
            return true;
    return false;
}

/* Reads [auth] tokens_file: one entry per line (IDENTITY:TOKEN or TOKEN),
 * '#' to the end of a line is a comment, blank lines are skipped. Its
 * entries follow those of `tokens`; each bad line is reported as
 * "FILE:LINE: ...". A relative path is taken from the config file's folder. */
static void read_tokens_file(struct load *ld)
{
    const char *name = ld->c->tokens_file;
    if (!name[0])
        return;
    char full[512];
    config_resolve_path(ld->path, name, full, sizeof full);
    char ebuf[128];
    FILE *f = fopen(full, "re");
    if (!f) {
        /* Reported at the key's line of the configuration file. */
        int line = 0;
        for (size_t i = 0; i < NKEYS; i++)
            if (keys[i].off == offsetof(struct config, tokens_file))
                line = ld->set_line[i];
        report(ld, line, "cannot read [auth] tokens_file %s: %s", full,
               strerror_r(errno, ebuf, sizeof ebuf));
        return;
    }
    struct token_split ts = {.tokens = ld->c->tokens, .n = ld->c->ntokens};
    ld->c->tokens = NULL;
    ld->c->ntokens = 0;
    char line[CONFIG_MAX_LINE + 2];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            append(ld, "%s:%d: a line longer than %d bytes\n", full, lineno, CONFIG_MAX_LINE);
            ld->problems++;
            int ch;
            while ((ch = fgetc(f)) != EOF && ch != '\n')
                ;
            continue;
        }
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *s = line, *e = line + strlen(line);
        while (*s == ' ' || *s == '\t')
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
            *--e = '\0';
        if (!*s)
            continue;
        int rc = token_item(&ts, s);
        if (rc == -ENOMEM) {
            append(ld, "%s:%d: out of memory\n", full, lineno);
            ld->problems++;
            break;
        }
        if (rc < 0) {
            append(ld, "%s:%d: bad entry: %s (entries are IDENTITY:TOKEN or TOKEN)\n", full,
                   lineno, ts.why);
            ld->problems++;
        }
    }
    if (ferror(f)) {
        append(ld, "%s: cannot read [auth] tokens_file\n", full);
        ld->problems++;
    }
    fclose(f);
    ld->c->tokens = ts.tokens;
    ld->c->ntokens = ts.n;
}

/* Whether an address (already checked) is loopback or a unix socket. */
static bool addr_is_local(const char *addr)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (net_parse_addr(addr, &ss, &len) < 0)
        return true; /* not an address: reported as an error elsewhere */
    if (ss.ss_family == AF_UNIX)
        return true;
    if (ss.ss_family == AF_INET)
        return (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
    return IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)&ss)->sin6_addr);
}

int config_warnings(const struct config *c, const char *path, char *out, size_t outlen)
{
    int n = 0;
    size_t used = 0;
    if (out && outlen)
        out[0] = '\0';
    for (int i = 0; i < c->admin_listen.n; i++) {
        const char *a = c->admin_listen.addr[i];
        if (addr_is_local(a))
            continue;
        n++;
        if (out && used + 1 < outlen) {
            int w = snprintf(out + used, outlen - used,
                             "%s: warning: [admin] listen %s is not loopback or a unix socket; "
                             "the admin listener has no authentication\n", path, a);
            if (w > 0)
                used += (size_t)w < outlen - used ? (size_t)w : outlen - used - 1;
        }
    }
    return n;
}

int config_load(const char *path, struct config *c, char *err, size_t errlen)
{
    config_defaults(c);
    if (err && errlen > 0)
        err[0] = '\0';
    struct load ld = {
        .path = path, .c = c, .section = SECTION_NONE, .err = err, .errlen = err ? errlen : 0,
    };
    char ebuf[128];
    ld.f = fopen(path, "re");
    if (!ld.f) {
        report(&ld, 0, "cannot read: %s", strerror_r(errno, ebuf, sizeof ebuf));
    } else {
        int rc = ini_parse_stream(read_line, &ld, on_key, &ld);
        if (ld.read_errno) {
            report(&ld, 0, "cannot read: %s", strerror_r(ld.read_errno, ebuf, sizeof ebuf));
        } else {
            if (rc > 0 && rc != ld.first_key_error)
                report(&ld, rc, "syntax error");
            else if (rc < 0)
                report(&ld, 0, "cannot parse (inih error %d)", rc);
            check_cross(&ld);
            read_tokens_file(&ld);
            check_extras(&ld);
        }
        fclose(ld.f);
    }
    free(ld.line);
    if (ld.problems) {
        config_free(c);
        config_defaults(c);
    }
    return ld.problems;
}
