/* config: the INI file (CONFIG.md) parsed and checked into a struct config.
 * Base layer: no logging, no exits; every problem is reported as text. */
#ifndef MSGD_CONFIG_H
#define MSGD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "proxy.h"

#define CONFIG_MAX_ADDRS 16        /* addresses per listener */
#define CONFIG_ADDR_LEN 128        /* longest address text, with its NUL */
#define CONFIG_MAX_LINE 190        /* longer lines are an error (inih cuts at 200) */
#ifndef MSGD_SYSCONFDIR
#define MSGD_SYSCONFDIR "/etc"     /* the Makefile's SYSCONFDIR, for main.c */
#endif
#define CONFIG_DEFAULT_PATH MSGD_SYSCONFDIR "/msgd/msgd.ini"
#define CONFIG_IDENTITY_MAX 255    /* bytes of an identity ([auth] tokens IDENTITY:TOKEN) */
#define CONFIG_MAX_MODULES 8       /* paths in [modules] load */
#define CONFIG_PATH_LEN 256        /* longest path, with its NUL */

enum config_log_level { CONFIG_LOG_ERROR = 0, CONFIG_LOG_WARN, CONFIG_LOG_INFO, CONFIG_LOG_DEBUG };

/* One listener's addresses, each kept as written ("HOST:PORT", "[V6]:PORT" or
 * "unix:/path"), already checked for form. n == 0 means the listener is off. */
struct config_listen {
    int n;
    char addr[CONFIG_MAX_ADDRS][CONFIG_ADDR_LEN];
};

/* A listener section's PROXY protocol settings (HAProxy send-proxy). */
struct config_proxy {
    bool on;                   /* every connection starts with a PROXY v1/v2 header */
    int nfrom;
    struct proxy_cidr from[CONFIG_MAX_ADDRS]; /* who may send one (live) */
};

/* A line of a section msgd does not know, kept for the module of that name
 * ([modules] load): a section header (key[0] == '\0') or a key. */
struct config_extra {
    char section[64];
    char key[64];
    char *value;               /* heap; NULL for a header */
    int line;
};

/* Every key of CONFIG.md. Durations are in milliseconds, sizes in bytes.
 * A struct config owns its heap parts (tokens); free it with config_free(). */
struct config {
    /* [server] */
    int reactors;              /* 0..256, 0 = one per CPU (resolved by the caller) */
    int workers;               /* 1..256 */
    uint32_t worker_queue;     /* 1..1000000 */
    uint32_t max_connections;  /* 1..10000000 */
    int backlog;               /* 1..65535 */
    char user[64];             /* empty = none */
    /* [msg], [echo], [admin], [http] */
    struct config_listen msg_listen;
    uint64_t max_frame;        /* 64..256M */
    struct config_proxy msg_proxy; /* [msg] proxy_protocol, proxy_from (tls_listen too) */
    struct config_proxy echo_proxy; /* [echo] */
    struct config_proxy http_proxy; /* [http] */
    struct codec_list compress; /* codecs HELLO may agree, best first (none: off) */
    uint64_t compress_min;     /* 64..max_frame: payloads compressed from this size */
    int compress_level;        /* 1..19 (zstd; deflate clamps to 9) */
    struct config_listen echo_listen;
    struct config_listen admin_listen;
    struct config_listen http_listen; /* empty (off) by default */
    struct config_listen tls_listen;  /* [msg] tls_listen: msg inside TLS; empty = off */
    /* [tls] (files read by tls.c; relative: to the config's folder) */
    char tls_cert[CONFIG_PATH_LEN];   /* PEM certificate chain */
    char tls_key[CONFIG_PATH_LEN];    /* PEM private key */
    char tls_ca[CONFIG_PATH_LEN];     /* PEM CA bundle; set = client certificates required */
    int tls_min_version;              /* 12 or 13 */
    /* [timeouts] */
    uint64_t heartbeat_ms;     /* 0 = off, else 100..3600000 */
    uint64_t idle_ms;          /* 0 = off, else > heartbeat_ms */
    uint64_t drain_ms;         /* 0..600000 */
    /* Per-listener overrides of [timeouts]: [msg] heartbeat_interval and
     * idle_timeout, [echo]/[admin]/[http] idle_timeout. CONFIG_INHERIT (the
     * default, an empty value) = [timeouts]'s. Read through
     * config_listener_timeouts(). */
    uint64_t msg_heartbeat_ms, msg_idle_ms, echo_idle_ms, admin_idle_ms, http_idle_ms;
    /* [limits] */
    uint64_t out_high_water;
    uint64_t out_low_water;    /* < out_high_water */
    uint64_t out_hard_limit;   /* >= out_high_water + max_frame + 16 */
    uint32_t max_subscriptions;
    /* [auth] */
    int ntokens;
    char **tokens;             /* ntokens entries "IDENTITY:TOKEN" or "TOKEN" (split at
                                * the first ':'), heap; NULL when none: those of
                                * tokens, then those of tokens_file */
    char tokens_file[CONFIG_PATH_LEN]; /* as written; empty = none (relative: to the config's folder) */
    /* [log] */
    enum config_log_level log_level;
    /* [diagnostics] */
    bool delay_command;
    bool stall_command;        /* admin `stall MS` blocks a reactor (watchdog tests) */
    /* [cluster] (restart) */
    char cluster_redis[CONFIG_ADDR_LEN]; /* HOST:PORT or unix:/path; empty = no cluster */
    char cluster_node[64];     /* this node's name; empty = the host name */
    char cluster_password[128]; /* Redis AUTH password; empty = none */
    char cluster_prefix[64];   /* channels PREFIX:t:TOPIC, PREFIX:u:IDENTITY */
    uint64_t cluster_reconnect_ms; /* back-off ceiling, 100ms..10m */
    /* [modules] */
    int nmodules;
    char modules[CONFIG_MAX_MODULES][CONFIG_PATH_LEN]; /* as written (relative: to the
                                * config's folder), in load order */
    /* Sections of modules ([NAME]), in file order, for the loader to check;
     * heap, owned; never copied by config_copy. With no module to load, an
     * unknown section is an error of config_load itself. */
    int nextras;
    struct config_extra *extras;
};

/* Fills c with the defaults of CONFIG.md. Allocates nothing. Thread-safe. */
void config_defaults(struct config *c);

/* Reads and checks the file at path into *c (defaults first, then the file).
 * Every problem found is appended to err as one line "PATH:LINE: what is wrong\n"
 * (or "PATH: what is wrong\n" when it has no line: a missing file, keys that
 * disagree), truncated to errlen. Returns 0 when the file is good, otherwise
 * the number of problems (> 0). On failure *c is freed and left with defaults.
 * Thread-safe (no globals). */
int config_load(const char *path, struct config *c, char *err, size_t errlen);

/* Appends one line "PATH: warning: ..." per setting that is allowed but
 * risky (today: an admin listener that is not on loopback or a unix socket,
 * since admin has no authentication) to out (truncated to outlen). Returns
 * how many. Thread-safe. */
int config_warnings(const struct config *c, const char *path, char *out, size_t outlen);

#define CONFIG_INHERIT UINT64_MAX  /* a per-listener timeout left to [timeouts] */

/* The heartbeat interval and idle timeout in ms (0 = off) of connections on
 * the listeners of section ("msg", "echo", "admin", "http"): the section's
 * own keys where set, else [timeouts]. Heartbeats are sent on msg only. Any
 * other section gets [timeouts]. Thread-safe. */
void config_listener_timeouts(const struct config *c, const char *section,
                              uint64_t *heartbeat_ms, uint64_t *idle_ms);

/* Writes path name, relative to the folder of the configuration file at
 * cfgpath unless it is absolute, into out. Returns 0 or -ENAMETOOLONG. */
int config_resolve_path(const char *cfgpath, const char *name, char *out, size_t outlen);

/* Whether msgd itself reads a section of that name. */
bool config_section_known(const char *name);

/* Frees what c owns and resets its pointers. Safe on a defaulted config. */
void config_free(struct config *c);

/* Deep-copies src into *dst (which must not own anything). Returns 0 or -ENOMEM. */
int config_copy(struct config *dst, const struct config *src);

/* Parsers for the value syntax of CONFIG.md, exposed for tests and reuse.
 * Each returns 0 and stores the value, or -EINVAL. */
int config_parse_duration_ms(const char *s, uint64_t *ms); /* "1.5s", "100ms", "2m", "1h", "30" */
int config_parse_size(const char *s, uint64_t *bytes);     /* "64", "16K", "1m", "2G" */
int config_parse_bool(const char *s, bool *v);             /* on/off, yes/no, true/false, 1/0 */
int config_parse_log_level(const char *s, enum config_log_level *lvl);
/* Checks one address against the one grammar: 0 exactly when
 * net_parse_addr() accepts s (NULL is -EINVAL). Thread-safe. */
int config_check_addr(const char *s);

#endif
