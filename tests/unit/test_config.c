/* test_config: the INI file of CONFIG.md to struct config: defaults, every key,
 * every error with its line, value syntax, addresses, copy. */
#include "config.h"
#include "net.h"
#include "test.h"

#include <errno.h>
#include <stdarg.h>
#include <sys/un.h>

#define K 1024ULL
#define M (1024 * K)
#define G (1024 * M)

static char tmp_path[64];

/* Writes len bytes to a fresh temporary file, loads it, removes it. */
static int load_bytes(const char *text, size_t len, struct config *c, char *err, size_t errlen)
{
    snprintf(tmp_path, sizeof tmp_path, "/tmp/test_config_XXXXXX");
    int fd = mkstemp(tmp_path);
    CHECK(fd >= 0);
    CHECK_EQ(write(fd, text, len), (long long)len);
    close(fd);
    int rc = config_load(tmp_path, c, err, errlen);
    unlink(tmp_path);
    return rc;
}

static int load_text(const char *text, struct config *c, char *err, size_t errlen)
{
    return load_bytes(text, strlen(text), c, err, errlen);
}

/* The expected error text: each '@' stands for the temporary file's path. */
static const char *expect(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static const char *expect(const char *fmt, ...)
{
    static char out[8192];
    char tmpl[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmpl, sizeof tmpl, fmt, ap);
    va_end(ap);
    size_t o = 0;
    for (const char *p = tmpl; *p && o + sizeof tmp_path < sizeof out; p++) {
        if (*p == '@')
            o += (size_t)snprintf(out + o, sizeof out - o, "%s", tmp_path);
        else
            out[o++] = *p;
    }
    out[o] = '\0';
    return out;
}

/* Loads text that must have exactly one problem, reported as want. */
static void check_one_error(const char *text, const char *want)
{
    struct config c;
    char err[4096];
    int rc = load_text(text, &c, err, sizeof err);
    if (rc != 1)
        TEST_FAIL("expected 1 problem, got %d for:\n%s\nerr:\n%s", rc, text, err);
    CHECK_STR(err, expect("%s", want));
    config_free(&c);
}

/* Loads text that must be good. */
static void load_ok(const char *text, struct config *c)
{
    char err[4096];
    int rc = load_text(text, c, err, sizeof err);
    if (rc != 0)
        TEST_FAIL("expected no problem, got %d for:\n%s\nerr:\n%s", rc, text, err);
    CHECK_STR(err, "");
}

static void check_defaults(const struct config *c)
{
    CHECK_EQ(c->reactors, 0);
    CHECK_EQ(c->workers, 2);
    CHECK_EQ(c->worker_queue, 1024);
    CHECK_EQ(c->max_connections, 10000);
    CHECK_EQ(c->backlog, 1024);
    CHECK_STR(c->user, "");
    CHECK_EQ(c->msg_listen.n, 1);
    CHECK_STR(c->msg_listen.addr[0], "127.0.0.1:7700");
    CHECK_EQ(c->max_frame, 1 * M);
    CHECK_EQ(c->echo_listen.n, 0);
    CHECK_EQ(c->admin_listen.n, 1);
    CHECK_STR(c->admin_listen.addr[0], "127.0.0.1:7701");
    CHECK_EQ(c->heartbeat_ms, 30000);
    CHECK_EQ(c->idle_ms, 90000);
    CHECK_EQ(c->drain_ms, 5000);
    CHECK_EQ(c->out_high_water, 1 * M);
    CHECK_EQ(c->out_low_water, 256 * K);
    CHECK_EQ(c->out_hard_limit, 16 * M);
    CHECK_EQ(c->max_subscriptions, 64);
    CHECK_EQ(c->ntokens, 0);
    CHECK(c->tokens == NULL);
    CHECK_EQ(c->log_level, CONFIG_LOG_INFO);
    CHECK_EQ(c->delay_command, false);
}

/* ---- defaults and good files ----------------------------------------- */

TEST(defaults)
{
    struct config c;
    memset(&c, 0xAB, sizeof c);
    config_defaults(&c);
    check_defaults(&c);
    config_free(&c);
    check_defaults(&c);
}

TEST(empty_file_is_defaults)
{
    struct config c;
    load_ok("", &c);
    check_defaults(&c);
    load_ok("; only a comment\n# another\n\n   \n", &c);
    check_defaults(&c);
}

/* The sample of CONFIG.md, verbatim: the defaults, with all its comments. */
TEST(config_md_sample_is_defaults)
{
    static const char sample[] =
        "[server]\n"
        "reactors = 0            ; sub-reactor threads, 0..256; 0 = one per CPU\n"
        "workers = 2             ; worker threads per reactor, 1..256\n"
        "worker_queue = 1024     ; jobs waiting (not running) per reactor, 1..1000000; past it: OVERLOADED\n"
        "max_connections = 10000 ; msg + echo connections, 1..10000000; lowered with a warning to fit RLIMIT_NOFILE\n"
        "backlog = 1024          ; 1..65535\n"
        "user =                  ; when started as root, drop to this user after binding\n"
        "\n"
        "[msg]                   ; the msg protocol (PROTOCOL.md)\n"
        "listen = 127.0.0.1:7700\n"
        "max_frame = 1M          ; largest payload, 64..256M\n"
        "\n"
        "[echo]                  ; RFC 862 echo\n"
        "listen =\n"
        "\n"
        "[admin]                 ; text commands for operators; not counted in max_connections\n"
        "listen = 127.0.0.1:7701 ; keep it on loopback or a unix socket (created mode 0660)\n"
        "\n"
        "[timeouts]\n"
        "heartbeat_interval = 30s ; server PINGs a msg connection silent this long; 0 = off, else 100ms..1h\n"
        "idle_timeout = 90s       ; any connection silent this long is closed; 0 = off, else > heartbeat_interval\n"
        "drain_timeout = 5s       ; on stop: the deadline for in-flight work, 0..10m\n"
        "\n"
        "[limits]\n"
        "output_high_water = 1M   ; stop reading a connection while its unsent output is above this\n"
        "output_low_water = 256K  ; resume reading below this; must be < output_high_water\n"
        "output_hard_limit = 16M  ; close a connection whose unsent output passes this;\n"
        "                         ; must be >= output_high_water + max_frame + 16\n"
        "max_subscriptions = 64   ; topics per connection; past it: LIMIT_EXCEEDED\n"
        "\n"
        "[auth]\n"
        "tokens =                 ; comma-separated; empty = no auth\n"
        "\n"
        "[log]\n"
        "level = info             ; error, warn, info, debug\n"
        "\n"
        "[diagnostics]\n"
        "delay_command = off      ; on: enable the DELAY command (tests, benchmarks)\n";
    struct config c;
    load_ok(sample, &c);
    check_defaults(&c);
}

TEST(every_key_parsed)
{
    struct config c;
    load_ok("[server]\n"
            "reactors = 8\n"
            "workers = 16\n"
            "worker_queue = 5000\n"
            "max_connections = 123456\n"
            "backlog = 4096\n"
            "user = msgd\n"
            "[msg]\n"
            "listen = 0.0.0.0:9000, [::1]:9001 , unix:/run/msgd/msg.sock\n"
            "max_frame = 4M\n"
            "[echo]\n"
            "listen = localhost:7\n"
            "[admin]\n"
            "listen = unix:/run/msgd/admin.sock\n"
            "[timeouts]\n"
            "heartbeat_interval = 1.5s\n"
            "idle_timeout = 2m\n"
            "drain_timeout = 250ms\n"
            "[limits]\n"
            "output_high_water = 2M\n"
            "output_low_water = 512k\n"
            "output_hard_limit = 1G\n"
            "max_subscriptions = 1000\n"
            "[auth]\n"
            "tokens = alpha, beta ,gamma\n"
            "[log]\n"
            "level = debug\n"
            "[diagnostics]\n"
            "delay_command = on\n",
            &c);
    CHECK_EQ(c.reactors, 8);
    CHECK_EQ(c.workers, 16);
    CHECK_EQ(c.worker_queue, 5000);
    CHECK_EQ(c.max_connections, 123456);
    CHECK_EQ(c.backlog, 4096);
    CHECK_STR(c.user, "msgd");
    CHECK_EQ(c.msg_listen.n, 3);
    CHECK_STR(c.msg_listen.addr[0], "0.0.0.0:9000");
    CHECK_STR(c.msg_listen.addr[1], "[::1]:9001");
    CHECK_STR(c.msg_listen.addr[2], "unix:/run/msgd/msg.sock");
    CHECK_EQ(c.max_frame, 4 * M);
    CHECK_EQ(c.echo_listen.n, 1);
    CHECK_STR(c.echo_listen.addr[0], "localhost:7");
    CHECK_EQ(c.admin_listen.n, 1);
    CHECK_STR(c.admin_listen.addr[0], "unix:/run/msgd/admin.sock");
    CHECK_EQ(c.heartbeat_ms, 1500);
    CHECK_EQ(c.idle_ms, 120000);
    CHECK_EQ(c.drain_ms, 250);
    CHECK_EQ(c.out_high_water, 2 * M);
    CHECK_EQ(c.out_low_water, 512 * K);
    CHECK_EQ(c.out_hard_limit, 1 * G);
    CHECK_EQ(c.max_subscriptions, 1000);
    CHECK_EQ(c.ntokens, 3);
    CHECK_STR(c.tokens[0], "alpha");
    CHECK_STR(c.tokens[1], "beta");
    CHECK_STR(c.tokens[2], "gamma");
    CHECK_EQ(c.log_level, CONFIG_LOG_DEBUG);
    CHECK_EQ(c.delay_command, true);
    config_free(&c);
    CHECK(c.tokens == NULL);
    CHECK_EQ(c.ntokens, 0);
}

TEST(section_twice_is_fine)
{
    struct config c;
    load_ok("[server]\nreactors = 3\n[msg]\nmax_frame = 64\n[server]\nworkers = 7\n", &c);
    CHECK_EQ(c.reactors, 3);
    CHECK_EQ(c.workers, 7);
    CHECK_EQ(c.max_frame, 64);
}

TEST(empty_listen_turns_listener_off)
{
    struct config c;
    load_ok("[msg]\nlisten =\n[admin]\nlisten = ; off too\n", &c);
    CHECK_EQ(c.msg_listen.n, 0);
    CHECK_EQ(c.admin_listen.n, 0);
    load_ok("[msg]\nlisten = , ,\n", &c);
    CHECK_EQ(c.msg_listen.n, 0);
}

TEST(listener_timeouts_override_and_inherit)
{
    struct config c;
    uint64_t hb, idle;
    load_ok("[timeouts]\nheartbeat_interval = 10s\nidle_timeout = 1m\n", &c);
    CHECK_EQ(c.msg_heartbeat_ms, CONFIG_INHERIT);
    CHECK_EQ(c.echo_idle_ms, CONFIG_INHERIT);
    const char *const secs[] = {"msg", "echo", "admin", "http", "other"};
    for (size_t i = 0; i < sizeof secs / sizeof secs[0]; i++) {
        config_listener_timeouts(&c, secs[i], &hb, &idle);
        CHECK_EQ(hb, 10000);
        CHECK_EQ(idle, 60000);
    }
    load_ok("[msg]\nheartbeat_interval = 2s\nidle_timeout = 0\n[echo]\nidle_timeout = 5s\n"
            "[admin]\nidle_timeout =\n[http]\nidle_timeout = 250ms\n", &c);
    config_listener_timeouts(&c, "msg", &hb, &idle);
    CHECK_EQ(hb, 2000);
    CHECK_EQ(idle, 0);
    config_listener_timeouts(&c, "echo", &hb, &idle);
    CHECK_EQ(hb, 30000);
    CHECK_EQ(idle, 5000);
    config_listener_timeouts(&c, "admin", &hb, &idle);
    CHECK_EQ(idle, 90000);
    config_listener_timeouts(&c, "http", &hb, &idle);
    CHECK_EQ(idle, 250);
    check_one_error("[msg]\nheartbeat_interval = 2m\n",
                    "@: idle_timeout of [msg] (90s, from [timeouts]) must be greater than its "
                    "heartbeat_interval (2m)\n");
    check_one_error("[echo]\nidle_timeout = 2h\n[admin]\nidle_timeout = 25h\n",
                    "@:4: bad value '25h' for 'idle_timeout' in [admin]: out of range 0 or 100ms..24h\n");
}

TEST(listen_list_trimmed_and_limited)
{
    struct config c;
    load_ok("[echo]\nlisten =  1.1.1.1:1 ,, [::2]:2,\tunix:/3\t, \n", &c);
    CHECK_EQ(c.echo_listen.n, 3);
    CHECK_STR(c.echo_listen.addr[0], "1.1.1.1:1");
    CHECK_STR(c.echo_listen.addr[1], "[::2]:2");
    CHECK_STR(c.echo_listen.addr[2], "unix:/3");

    char text[512] = "[echo]\nlisten = ";
    for (int i = 0; i < CONFIG_MAX_ADDRS; i++)
        snprintf(text + strlen(text), sizeof text - strlen(text), "%s[::]:%d", i ? "," : "", i);
    strcat(text, "\n");
    load_ok(text, &c);
    CHECK_EQ(c.echo_listen.n, CONFIG_MAX_ADDRS);
    CHECK_STR(c.echo_listen.addr[15], "[::]:15");

    text[strlen(text) - 1] = '\0';
    strcat(text, ",[::]:16\n");
    check_one_error(text, "@:2: bad value for 'listen' in [echo]: more than 16 addresses\n");
}

TEST(tokens_trimmed_empty_ignored_and_limited)
{
    struct config c;
    load_ok("[auth]\ntokens = ,  one ,, two,\t,\n", &c);
    CHECK_EQ(c.ntokens, 2);
    CHECK_STR(c.tokens[0], "one");
    CHECK_STR(c.tokens[1], "two");
    config_free(&c);

    load_ok("[auth]\ntokens = ,\n", &c);
    CHECK_EQ(c.ntokens, 0);
    CHECK(c.tokens == NULL);

    char tok[130];
    memset(tok, 't', 128);
    tok[128] = '\0';
    char text[300];
    snprintf(text, sizeof text, "[auth]\ntokens = a, %s\n", tok);
    load_ok(text, &c);
    CHECK_EQ(c.ntokens, 2);
    CHECK_EQ(strlen(c.tokens[1]), 128);
    config_free(&c);

    snprintf(text, sizeof text, "[auth]\ntokens = a, %st\n", tok);
    check_one_error(text, "@:2: bad value for 'tokens' in [auth]: entry 2 has a token longer than "
                          "128 bytes (entries are IDENTITY:TOKEN or TOKEN)\n");
    /* The identity's length does not count against the token's. */
    snprintf(text, sizeof text, "[auth]\ntokens = someone:%s\n", tok);
    load_ok(text, &c);
    CHECK_EQ(c.ntokens, 1);
    config_free(&c);
}

TEST(tokens_with_identities)
{
    struct config c;
    load_ok("[auth]\ntokens = alice:tok-a, bob:tok:with:colons, bare\n", &c);
    CHECK_EQ(c.ntokens, 3);
    CHECK_STR(c.tokens[0], "alice:tok-a");
    CHECK_STR(c.tokens[1], "bob:tok:with:colons");   /* split at the first ':' when used */
    CHECK_STR(c.tokens[2], "bare");
    config_free(&c);
    check_one_error("[auth]\ntokens = ok, :token\n",
                    "@:2: bad value for 'tokens' in [auth]: entry 2 has an empty identity before "
                    "':' (entries are IDENTITY:TOKEN or TOKEN)\n");
    check_one_error("[auth]\ntokens = alice:\n",
                    "@:2: bad value for 'tokens' in [auth]: entry 1 has an empty token "
                    "(entries are IDENTITY:TOKEN or TOKEN)\n");
}

TEST(user_names)
{
    struct config c;
    load_ok("[server]\nuser = msg-d_1.x\n", &c);
    CHECK_STR(c.user, "msg-d_1.x");
    char text[200];
    char name[70];
    memset(name, 'u', 63);
    name[63] = '\0';
    snprintf(text, sizeof text, "[server]\nuser = %s\n", name);
    load_ok(text, &c);
    CHECK_STR(c.user, name);
    char want[300];
    snprintf(text, sizeof text, "[server]\nuser = %su\n", name);
    snprintf(want, sizeof want, "@:2: bad value '%su' for 'user' in [server]: not a user name "
             "(up to 63 of A-Z a-z 0-9 _ . -)\n", name);
    check_one_error(text, want);
    check_one_error("[server]\nuser = a b\n",
                    "@:2: bad value 'a b' for 'user' in [server]: not a user name "
                    "(up to 63 of A-Z a-z 0-9 _ . -)\n");
}

TEST(bools_and_levels_in_file)
{
    struct config c;
    load_ok("[diagnostics]\ndelay_command = yes\n[log]\nlevel = error\n", &c);
    CHECK_EQ(c.delay_command, true);
    CHECK_EQ(c.log_level, CONFIG_LOG_ERROR);
    load_ok("[diagnostics]\ndelay_command = 0\n[log]\nlevel = warn\n", &c);
    CHECK_EQ(c.delay_command, false);
    CHECK_EQ(c.log_level, CONFIG_LOG_WARN);
}

TEST(syntax_details_accepted)
{
    struct config c;
    /* BOM, CRLF, indented keys (not a continuation), ':' as separator,
     * spaces inside the brackets, inline comments. */
    load_ok("\xEF\xBB\xBF[server]\r\n"
            "  reactors = 2\r\n"
            "\tworkers: 3 ; inline\r\n"
            "[ limits ] ; comment\n"
            "max_subscriptions=9\n",
            &c);
    CHECK_EQ(c.reactors, 2);
    CHECK_EQ(c.workers, 3);
    CHECK_EQ(c.max_subscriptions, 9);
}

TEST(range_boundaries_accepted)
{
    struct config c;
    load_ok("[server]\nreactors = 256\nworkers = 256\nworker_queue = 1000000\n"
            "max_connections = 10000000\nbacklog = 65535\n"
            "[msg]\nmax_frame = 256M\n"
            "[timeouts]\nheartbeat_interval = 1h\nidle_timeout = 24h\ndrain_timeout = 10m\n"
            "[limits]\noutput_high_water = 32G\noutput_low_water = 1\noutput_hard_limit = 64G\n"
            "max_subscriptions = 1000000\n",
            &c);
    CHECK_EQ(c.reactors, 256);
    CHECK_EQ(c.max_connections, 10000000);
    CHECK_EQ(c.max_frame, 256 * M);
    CHECK_EQ(c.heartbeat_ms, 3600000);
    CHECK_EQ(c.idle_ms, 86400000);
    CHECK_EQ(c.drain_ms, 600000);
    CHECK_EQ(c.out_hard_limit, 64 * G);
    load_ok("[server]\nworkers = 1\nworker_queue = 1\nmax_connections = 1\nbacklog = 1\n"
            "[msg]\nmax_frame = 64\n"
            "[timeouts]\nheartbeat_interval = 100ms\nidle_timeout = 101ms\ndrain_timeout = 0\n"
            "[limits]\nmax_subscriptions = 1\n",
            &c);
    CHECK_EQ(c.heartbeat_ms, 100);
    CHECK_EQ(c.idle_ms, 101);
    CHECK_EQ(c.drain_ms, 0);
    load_ok("[timeouts]\nheartbeat_interval = 0\nidle_timeout = 0\n", &c);
    CHECK_EQ(c.heartbeat_ms, 0);
    CHECK_EQ(c.idle_ms, 0);
}

/* ---- errors, each with its line -------------------------------------- */

TEST(error_unknown_section)
{
    /* Reported even with no keys; its keys are not reported again. */
    check_one_error("[server]\nreactors = 1\n[nope]\n", "@:3: unknown section [nope]\n");
    check_one_error("\n[server]\n\n[serverx]\nfoo = 1\nbar = 2\n[msg]\nmax_frame = 64\n",
                    "@:4: unknown section [serverx]\n");
    check_one_error("[Server]\n", "@:1: unknown section [Server]\n");
}

TEST(error_unknown_key)
{
    check_one_error("[server]\nreactors = 1\nfoo = 2\n", "@:3: unknown key 'foo' in [server]\n");
    check_one_error("[limits]\n\n\nmax_frame = 1M\n", "@:4: unknown key 'max_frame' in [limits]\n");
}

TEST(error_key_outside_section)
{
    check_one_error("; comment\nreactors = 1\n[server]\n", "@:2: key 'reactors' is outside any section\n");
}

TEST(error_duplicate_key)
{
    check_one_error("[server]\n\nreactors = 1\nworkers = 2\nreactors = 3\n",
                    "@:5: duplicate key 'reactors' in [server] (first set on line 3)\n");
    /* Across two appearances of the section, too; the first value is not kept. */
    struct config c;
    char err[1024];
    CHECK_EQ(load_text("[server]\nreactors = 1\n[msg]\n[server]\nreactors = 1\n", &c, err, sizeof err), 1);
    CHECK_STR(err, expect("@:5: duplicate key 'reactors' in [server] (first set on line 2)\n"));
    /* The same name in two sections is two keys. */
    load_ok("[msg]\nlisten = 1.1.1.1:1\n[admin]\nlisten = 2.2.2.2:2\n", &c);
    /* A key whose value was bad still counts as set. */
    CHECK_EQ(load_text("[server]\nworkers = x\nworkers = 2\n", &c, err, sizeof err), 2);
    CHECK_STR(err, expect("@:2: bad value 'x' for 'workers' in [server]: not a whole number\n"
                          "@:3: duplicate key 'workers' in [server] (first set on line 2)\n"));
}

TEST(error_bad_values)
{
    check_one_error("[server]\nreactors = four\n",
                    "@:2: bad value 'four' for 'reactors' in [server]: not a whole number\n");
    check_one_error("[server]\nworkers = -1\n",
                    "@:2: bad value '-1' for 'workers' in [server]: not a whole number\n");
    check_one_error("[server]\nbacklog =\n",
                    "@:2: bad value '' for 'backlog' in [server]: not a whole number\n");
    check_one_error("[server]\nmax_connections = 99999999999999999999\n",
                    "@:2: bad value '99999999999999999999' for 'max_connections' in [server]: "
                    "not a whole number\n");
    check_one_error("[timeouts]\n\nheartbeat_interval = 5x\n",
                    "@:3: bad value '5x' for 'heartbeat_interval' in [timeouts]: "
                    "not a duration (e.g. 500ms, 30s, 1.5m, 1h)\n");
    check_one_error("[limits]\noutput_low_water = 1.5K\n",
                    "@:2: bad value '1.5K' for 'output_low_water' in [limits]: "
                    "not a size (e.g. 4096, 64K, 1M, 2G)\n");
    check_one_error("[diagnostics]\ndelay_command = maybe\n",
                    "@:2: bad value 'maybe' for 'delay_command' in [diagnostics]: not on or off\n");
    check_one_error("[log]\nlevel = loud\n",
                    "@:2: bad value 'loud' for 'level' in [log]: not one of error, warn, info, debug\n");
    check_one_error("[admin]\nlisten = 127.0.0.1:7701, nohost\n",
                    "@:2: bad value 'nohost' for 'listen' in [admin]: not an address "
                    "(" NET_ADDR_FORMS ")\n");
    check_one_error("[msg]\nlisten = example.com:1\n",
                    "@:2: bad value 'example.com:1' for 'listen' in [msg]: not an address "
                    "(" NET_ADDR_FORMS ")\n");
    check_one_error("[msg]\nlisten = [::1]:70000\n",
                    "@:2: bad value '[::1]:70000' for 'listen' in [msg]: not an address "
                    "(" NET_ADDR_FORMS ")\n");
    check_one_error("[server]\nreactors = 4;comment needs a space before it\n",
                    "@:2: bad value '4;comment needs a space before it' for 'reactors' in [server]: "
                    "not a whole number\n");
}

TEST(error_out_of_range)
{
    static const struct { const char *section, *key, *value, *range; } cases[] = {
        {"server", "reactors", "257", "0..256"},
        {"server", "workers", "0", "1..256"},
        {"server", "workers", "257", "1..256"},
        {"server", "worker_queue", "0", "1..1000000"},
        {"server", "worker_queue", "1000001", "1..1000000"},
        {"server", "max_connections", "10000001", "1..10000000"},
        {"server", "max_connections", "0", "1..10000000"},
        {"server", "backlog", "65536", "1..65535"},
        {"server", "backlog", "0", "1..65535"},
        {"msg", "max_frame", "63", "64..256M"},
        {"msg", "max_frame", "257M", "64..256M"},
        {"msg", "max_frame", "1G", "64..256M"},
        {"timeouts", "heartbeat_interval", "99ms", "0 or 100ms..1h"},
        {"timeouts", "heartbeat_interval", "61m", "0 or 100ms..1h"},
        {"timeouts", "heartbeat_interval", "0.0001s", "0 or 100ms..1h"},
        {"timeouts", "idle_timeout", "25h", "0 or 100ms..24h"},
        {"timeouts", "idle_timeout", "50ms", "0 or 100ms..24h"},
        {"timeouts", "drain_timeout", "601s", "0..10m"},
        {"limits", "output_high_water", "0", "1..64G"},
        {"limits", "output_low_water", "0", "1..64G"},
        {"limits", "output_hard_limit", "65G", "1..64G"},
        {"limits", "max_subscriptions", "0", "1..1000000"},
        {"limits", "max_subscriptions", "1000001", "1..1000000"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[256], want[256];
        snprintf(text, sizeof text, "; case %zu\n[%s]\n%s = %s\n", i, cases[i].section, cases[i].key,
                 cases[i].value);
        snprintf(want, sizeof want, "@:3: bad value '%s' for '%s' in [%s]: out of range %s\n",
                 cases[i].value, cases[i].key, cases[i].section, cases[i].range);
        check_one_error(text, want);
    }
}

static void long_line(char *out, size_t outlen, size_t len, const char *prefix)
{
    snprintf(out, outlen, "%s", prefix);
    size_t n = strlen(out);
    while (n < len)
        out[n++] = 'x';
    out[n] = '\0';
}

TEST(long_line_190_ok)
{
    char line[300], text[400];
    struct config c;
    /* 190 bytes: fine, as a comment or as a value. */
    long_line(line, sizeof line, 190, "; ");
    CHECK_EQ(strlen(line), 190);
    snprintf(text, sizeof text, "[server]\n%s\nreactors = 1\n", line);
    load_ok(text, &c);
    CHECK_EQ(c.reactors, 1);
    long_line(line, sizeof line, 190, "workers = 7 ; ");
    CHECK_EQ(strlen(line), 190);
    snprintf(text, sizeof text, "[server]\n%s\n", line);
    load_ok(text, &c);
    CHECK_EQ(c.workers, 7);
    /* The longest token fits on a line: 128 bytes. */
    char tok[129];
    memset(tok, 't', 128);
    tok[128] = '\0';
    snprintf(text, sizeof text, "[auth]\ntokens = %s\n", tok);
    load_ok(text, &c);
    CHECK_EQ(c.ntokens, 1);
    CHECK_STR(c.tokens[0], tok);
    config_free(&c);
}

TEST(error_long_line_191)
{
    char line[300], text[400];
    long_line(line, sizeof line, 191, "; ");
    snprintf(text, sizeof text, "[server]\nreactors = 1\n%s\nworkers = 2\n", line);
    check_one_error(text, "@:3: line longer than 190 bytes\n");
    /* The same with CRLF: the line ending does not count. */
    snprintf(text, sizeof text, "[server]\r\n%s\r\n", line);
    check_one_error(text, "@:2: line longer than 190 bytes\n");
    /* A long key line is not applied, and the next line keeps its number. */
    long_line(line, sizeof line, 300 - 1, "reactors = 1 ; ");
    snprintf(text, sizeof text, "[server]\n%s\nfoo = 1\n", line);
    struct config c;
    char err[1024];
    CHECK_EQ(load_text(text, &c, err, sizeof err), 2);
    CHECK_STR(err, expect("@:2: line longer than 190 bytes\n@:3: unknown key 'foo' in [server]\n"));
}

TEST(error_syntax)
{
    check_one_error("[server]\nreactors\n", "@:2: expected 'key = value' or '[section]'\n");
    check_one_error("[server\nreactors = 1\n", "@:1: section header without ']'\n");
    /* Keys under a broken header are not reported again. */
    check_one_error("[server\nreactors = 1\nfoo = 2\n[msg]\nmax_frame = 64\n",
                    "@:1: section header without ']'\n");
    /* After "[server] junk" the section is still known to be [server]. */
    struct config c;
    char err[1024];
    CHECK_EQ(load_text("[server] reactors = 1\nworkers = 1\nfoo = 1\n", &c, err, sizeof err), 2);
    CHECK_STR(err, expect("@:1: unexpected text after ']'\n@:3: unknown key 'foo' in [server]\n"));
    static const char nul[] = "[server]\nreac\0tors = 1\nworkers = 1\n";
    CHECK_EQ(load_bytes(nul, sizeof nul - 1, &c, err, sizeof err), 1);
    CHECK_STR(err, expect("@:2: line contains a NUL byte\n"));
}

TEST(error_missing_file)
{
    struct config c;
    char err[512];
    memset(&c, 0x5A, sizeof c);
    CHECK_EQ(config_load("/nonexistent/msgd-test.ini", &c, err, sizeof err), 1);
    CHECK_STR(err, "/nonexistent/msgd-test.ini: cannot read: No such file or directory\n");
    check_defaults(&c);
    CHECK_EQ(config_load("/tmp", &c, err, sizeof err), 1);
    CHECK_STR(err, "/tmp: cannot read: Is a directory\n");
}

TEST(error_cross_checks)
{
    check_one_error("[timeouts]\nheartbeat_interval = 30s\nidle_timeout = 30s\n",
                    "@: idle_timeout (30s) must be greater than heartbeat_interval (30s)\n");
    check_one_error("[timeouts]\nidle_timeout = 10s\n",
                    "@: idle_timeout (10s) must be greater than heartbeat_interval (30s)\n");
    check_one_error("[limits]\noutput_low_water = 1M\n",
                    "@: output_low_water (1M) must be less than output_high_water (1M)\n");
    check_one_error("[limits]\noutput_hard_limit = 2M\n",
                    "@: output_hard_limit (2M) must be at least output_high_water + max_frame + 16 "
                    "(2097168)\n");
    check_one_error("[msg]\nmax_frame = 15M\n",
                    "@: output_hard_limit (16M) must be at least output_high_water + max_frame + 16 "
                    "(16777232)\n");
    /* Exactly at the limits: fine. Zero turns a timeout off. */
    struct config c;
    load_ok("[limits]\noutput_hard_limit = 2097168\noutput_low_water = 1048575\n", &c);
    CHECK_EQ(c.out_hard_limit, 2097168);
    load_ok("[timeouts]\nheartbeat_interval = 1h\nidle_timeout = 0\n", &c);
    load_ok("[timeouts]\nheartbeat_interval = 0\nidle_timeout = 100ms\n", &c);
    /* Both cross problems at once, no line. */
    char err[1024];
    CHECK_EQ(load_text("[limits]\noutput_low_water = 2M\n[timeouts]\nidle_timeout = 1s\n", &c, err,
                       sizeof err), 2);
    CHECK_STR(err, expect("@: idle_timeout (1s) must be greater than heartbeat_interval (30s)\n"
                          "@: output_low_water (2M) must be less than output_high_water (1M)\n"));
}

TEST(cross_check_skipped_for_bad_key)
{
    /* A rejected heartbeat would leave the default 30s and blame idle. */
    check_one_error("[timeouts]\nheartbeat_interval = 2h\nidle_timeout = 10s\n",
                    "@:2: bad value '2h' for 'heartbeat_interval' in [timeouts]: out of range "
                    "0 or 100ms..1h\n");
    check_one_error("[msg]\nmax_frame = 1T\n",
                    "@:2: bad value '1T' for 'max_frame' in [msg]: not a size (e.g. 4096, 64K, 1M, 2G)\n");
}

TEST(several_errors_all_reported)
{
    struct config c;
    char err[4096];
    int rc = load_text("[server]\n"            /* 1 */
                       "reactors = 4\n"        /* 2 */
                       "workers = 0\n"         /* 3 */
                       "[bogus]\n"             /* 4 */
                       "x = 1\n"               /* 5 */
                       "[server]\n"            /* 6 */
                       "reactors = 5\n"        /* 7 */
                       "colour = blue\n"       /* 8 */
                       "just words\n"          /* 9 */
                       "[timeouts]\n"          /* 10 */
                       "idle_timeout = 1s\n"   /* 11 */
                       "drain_timeout = 1d\n", /* 12 */
                       &c, err, sizeof err);
    CHECK_EQ(rc, 7);
    /* An unknown section comes last: a [modules] load further down could
     * have claimed it for a module. */
    CHECK_STR(err, expect("@:3: bad value '0' for 'workers' in [server]: out of range 1..256\n"
                          "@:7: duplicate key 'reactors' in [server] (first set on line 2)\n"
                          "@:8: unknown key 'colour' in [server]\n"
                          "@:9: expected 'key = value' or '[section]'\n"
                          "@:12: bad value '1d' for 'drain_timeout' in [timeouts]: "
                          "not a duration (e.g. 500ms, 30s, 1.5m, 1h)\n"
                          "@: idle_timeout (1s) must be greater than heartbeat_interval (30s)\n"
                          "@:4: unknown section [bogus]\n"));
    /* On failure: the defaults, nothing owned. */
    check_defaults(&c);
}

TEST(module_sections_are_kept_for_the_loader)
{
    struct config c;
    char err[4096];
    int rc = load_text("[presence]\n"              /* 1 */
                       "grace = 2s\n"              /* 2 */
                       "[modules]\n"               /* 3 */
                       "load = a.so , /x/b.so\n"   /* 4 */
                       "[other_mod]\n",            /* 5 */
                       &c, err, sizeof err);
    CHECK_EQ(rc, 0);
    CHECK_EQ(c.nmodules, 2);
    CHECK_STR(c.modules[0], "a.so");
    CHECK_STR(c.modules[1], "/x/b.so");
    CHECK_EQ(c.nextras, 3);
    CHECK_STR(c.extras[0].section, "presence");
    CHECK_STR(c.extras[0].key, "");
    CHECK_EQ(c.extras[0].line, 1);
    CHECK_STR(c.extras[1].key, "grace");
    CHECK_STR(c.extras[1].value, "2s");
    CHECK_EQ(c.extras[1].line, 2);
    CHECK_STR(c.extras[2].section, "other_mod");
    struct config copy;
    CHECK_EQ(config_copy(&copy, &c), 0);
    CHECK_EQ(copy.nextras, 0); /* the reactors' copies do not carry them */
    CHECK(copy.extras == NULL);
    config_free(&copy);
    config_free(&c);
    /* A duplicate key in a module's section; a name no module can have. */
    rc = load_text("[modules]\nload = a.so\n[m]\nk = 1\nk = 2\n[Bad-Name]\n", &c, err,
                   sizeof err);
    CHECK_EQ(rc, 2);
    CHECK_STR(err, expect("@:5: duplicate key 'k' in [m] (first set on line 4)\n"
                          "@:6: unknown section [Bad-Name]\n"));
    /* More than 8 modules. */
    rc = load_text("[modules]\nload = 1,2,3,4,5,6,7,8,9\n", &c, err, sizeof err);
    CHECK_EQ(rc, 1);
    CHECK(strstr(err, "more than 8 modules") != NULL);
}

TEST(compression_keys)
{
    struct config c;
    char err[4096];
    CHECK_EQ(load_text("[msg]\ncompress = deflate\ncompress_min = 64\ncompress_level = 19\n", &c,
                       err, sizeof err), 0);
    CHECK_EQ(c.compress.n, 1);
    CHECK_EQ(c.compress.id[0], CODEC_DEFLATE);
    CHECK_EQ(c.compress_min, 64);
    CHECK_EQ(c.compress_level, 19);
    CHECK_EQ(load_text("[msg]\ncompress =\n", &c, err, sizeof err), 0);
    CHECK_EQ(c.compress.n, 0); /* off */
    /* A small max_frame takes the default threshold down with it; a threshold
     * set above it is an error. */
    CHECK_EQ(load_text("[msg]\nmax_frame = 100\n", &c, err, sizeof err), 0);
    CHECK_EQ(c.compress_min, 100);
    CHECK_EQ(load_text("[msg]\nmax_frame = 100\ncompress_min = 200\n", &c, err, sizeof err), 1);
    CHECK(strstr(err, "compress_min (200) must not be above max_frame (100)") != NULL);
    CHECK_EQ(load_text("[msg]\ncompress = zstd, lz4\ncompress_level = 20\n", &c, err, sizeof err),
             2);
    CHECK(strstr(err, "not a list of codecs") != NULL);
}

TEST(cluster_keys)
{
    struct config c;
    char err[4096];
    CHECK_EQ(load_text("[cluster]\nredis = unix:/run/redis.sock\nnode = a-1.x\npassword = p w!\n"
                       "channel_prefix = app\nreconnect_max = 2s\n", &c, err, sizeof err), 0);
    CHECK_STR(c.cluster_redis, "unix:/run/redis.sock");
    CHECK_STR(c.cluster_node, "a-1.x");
    CHECK_STR(c.cluster_password, "p w!");
    CHECK_STR(c.cluster_prefix, "app");
    CHECK_EQ(c.cluster_reconnect_ms, 2000);
    CHECK_EQ(load_text("[cluster]\n", &c, err, sizeof err), 0);
    CHECK_STR(c.cluster_redis, "");            /* no cluster */
    CHECK_STR(c.cluster_prefix, "msgd");
    CHECK_EQ(c.cluster_reconnect_ms, 5000);
    CHECK_EQ(load_text("[cluster]\nredis = redis.example:6379\nnode = a b\n"
                       "reconnect_max = 50ms\n", &c, err, sizeof err), 3);
    CHECK(strstr(err, "'redis' in [cluster]: not an address") != NULL);
    CHECK(strstr(err, "'node' in [cluster]: not a name") != NULL);
    CHECK(strstr(err, "'reconnect_max' in [cluster]: out of range") != NULL);
}

TEST(failure_resets_to_defaults)
{
    struct config c;
    char err[1024];
    CHECK_EQ(load_text("[auth]\ntokens = a, b\n[server]\nreactors = 9\nnope = 1\n", &c, err, sizeof err), 1);
    check_defaults(&c);
}

TEST(error_buffer_truncated_and_null)
{
    struct config c;
    char err[16];
    memset(err, 'Z', sizeof err);
    CHECK_EQ(load_text("[a]\n[b]\n[c]\n", &c, err, sizeof err), 3);
    CHECK_EQ(strlen(err), sizeof err - 1);
    CHECK(strncmp(err, tmp_path, sizeof err - 1) == 0);
    CHECK_EQ(load_text("[a]\n[b]\n", &c, NULL, 0), 2);
    err[0] = 'Z';
    CHECK_EQ(load_text("[a]\n", &c, err, 1), 1);
    CHECK_EQ(err[0], '\0');
    CHECK_EQ(load_text("[server]\n", &c, err, 1), 0);
}

/* ---- value syntax ----------------------------------------------------- */

static uint64_t dur(const char *s)
{
    uint64_t v = 0xDEAD;
    if (config_parse_duration_ms(s, &v) != 0)
        TEST_FAIL("duration '%s' rejected", s);
    return v;
}

static uint64_t size(const char *s)
{
    uint64_t v = 0xDEAD;
    if (config_parse_size(s, &v) != 0)
        TEST_FAIL("size '%s' rejected", s);
    return v;
}

TEST(duration_units)
{
    CHECK_EQ(dur("0"), 0);
    CHECK_EQ(dur("30"), 30000);
    CHECK_EQ(dur("30s"), 30000);
    CHECK_EQ(dur("100ms"), 100);
    CHECK_EQ(dur("2m"), 120000);
    CHECK_EQ(dur("1h"), 3600000);
    CHECK_EQ(dur("1.5s"), 1500);
    CHECK_EQ(dur("1.5"), 1500);
    CHECK_EQ(dur("0.25m"), 15000);
    CHECK_EQ(dur("0.5h"), 1800000);
    CHECK_EQ(dur("1.0001s"), 1000);  /* rounded to whole ms */
    CHECK_EQ(dur("1.0005s"), 1001);  /* half rounds up */
    CHECK_EQ(dur("2.4ms"), 2);
    CHECK_EQ(dur("2.5ms"), 3);
    CHECK_EQ(dur("0.0004s"), 0);
    CHECK_EQ(dur("007s"), 7000);
    CHECK_EQ(dur("1.123456789012345678s"), 1123);
    CHECK_EQ(dur("18446744073709551615ms"), UINT64_MAX);
}

TEST(duration_rejects)
{
    static const char *const bad[] = {
        "", "-1", "-1s", "+1s", "10x", "1.5.5s", "1.", ".5", "s", "ms", "1 s", " 1s", "1s ",
        "1S", "1sec", "1d", "1e3", "0x10", "1ms5", "99999999999999999999",
        "18446744073709551616ms", "5124095576030432h", "1,5s",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = 42;
        if (config_parse_duration_ms(bad[i], &v) != -EINVAL)
            TEST_FAIL("duration '%s' accepted as %llu", bad[i], (unsigned long long)v);
        CHECK_EQ(v, 42);
    }
    uint64_t v;
    CHECK_EQ(config_parse_duration_ms(NULL, &v), -EINVAL);
}

TEST(size_units)
{
    CHECK_EQ(size("0"), 0);
    CHECK_EQ(size("64"), 64);
    CHECK_EQ(size("16K"), 16 * K);
    CHECK_EQ(size("16k"), 16 * K);
    CHECK_EQ(size("1M"), M);
    CHECK_EQ(size("1m"), M);
    CHECK_EQ(size("2G"), 2 * G);
    CHECK_EQ(size("2g"), 2 * G);
    CHECK_EQ(size("18446744073709551615"), UINT64_MAX);
    CHECK_EQ(size("17179869183G"), 17179869183ULL * G);
}

TEST(size_rejects)
{
    static const char *const bad[] = {
        "", "1.5K", "-1", "+1", "10x", "1KB", "1T", "K", " 1K", "1K ", "1 K", "1KK",
        "99999999999999999999", "18446744073709551616", "17179869184G", "0x10",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = 42;
        if (config_parse_size(bad[i], &v) != -EINVAL)
            TEST_FAIL("size '%s' accepted as %llu", bad[i], (unsigned long long)v);
        CHECK_EQ(v, 42);
    }
}

TEST(bool_and_level_parsers)
{
    static const char *const yes[] = {"on", "yes", "true", "1", "ON", "True"};
    static const char *const no[] = {"off", "no", "false", "0", "OFF", "No"};
    bool b;
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        b = false;
        CHECK_EQ(config_parse_bool(yes[i], &b), 0);
        CHECK_EQ(b, true);
        b = true;
        CHECK_EQ(config_parse_bool(no[i], &b), 0);
        CHECK_EQ(b, false);
    }
    CHECK_EQ(config_parse_bool("", &b), -EINVAL);
    CHECK_EQ(config_parse_bool("2", &b), -EINVAL);
    CHECK_EQ(config_parse_bool("onn", &b), -EINVAL);

    enum config_log_level l;
    CHECK_EQ(config_parse_log_level("error", &l), 0);
    CHECK_EQ(l, CONFIG_LOG_ERROR);
    CHECK_EQ(config_parse_log_level("warn", &l), 0);
    CHECK_EQ(l, CONFIG_LOG_WARN);
    CHECK_EQ(config_parse_log_level("info", &l), 0);
    CHECK_EQ(l, CONFIG_LOG_INFO);
    CHECK_EQ(config_parse_log_level("debug", &l), 0);
    CHECK_EQ(l, CONFIG_LOG_DEBUG);
    CHECK_EQ(config_parse_log_level("warning", &l), -EINVAL);
    CHECK_EQ(config_parse_log_level("", &l), -EINVAL);
    CHECK_EQ(config_parse_log_level("trace", &l), -EINVAL);
}

/* One address grammar: config_check_addr (what `msgd -t` accepts) and
 * net_parse_addr (what binds) give the same answer for every case. */
static void check_addr_both(const char *text, int want)
{
    struct sockaddr_storage ss;
    socklen_t len = 0;
    int c = config_check_addr(text), n = net_parse_addr(text, &ss, &len);
    if (c != want || n != want)
        TEST_FAIL("address '%.40s%s' (%zu bytes): config_check_addr %d, net_parse_addr %d, "
                  "want %d", text, strlen(text) > 40 ? "..." : "", strlen(text), c, n, want);
}

TEST(addresses)
{
    static const char *const good[] = {
        "127.0.0.1:7700", "0.0.0.0:0", "255.255.255.255:65535", "localhost:80", "localhost:0",
        "1.2.3.4:00080", "[::1]:7700", "[::]:0", "[fe80::1:2]:65535", "[::ffff:127.0.0.1]:9",
        "[2001:db8::1]:00080", "unix:/run/msgd.sock", "unix:/",
    };
    static const char *const bad[] = {
        /* host names: no DNS in the daemon */
        "example.com:1", "host.local:7700", "a:1", "msg-1.example.com:443", "host_name:8",
        "LOCALHOST:80", "localhost.:80", "*:80", "ip6-localhost:80",
        /* IPv4 */
        "1.2.3:80", "1.2.3.4.5:80", "256.0.0.1:80", "01.2.3.4:80", "1.2.3.4 :80", " 1.2.3.4:80",
        "0x7f.0.0.1:80", "127.1:80",
        /* IPv6 */
        "[zz::1]:1", "[::g]:80", "[]:80", "[127.0.0.1]:80", "::1:7700", "[::1]", "[::1]7700",
        "[::1]:", "[::1]:80:1", "[::1:80", "[fe80::1%lo]:80",
        /* ports */
        "", "localhost", "localhost:", ":7700", "127.0.0.1:65536", "127.0.0.1:-1",
        "127.0.0.1:+1", "127.0.0.1: 1", "127.0.0.1:7700x", "127.0.0.1:123456", "127.0.0.1:000080",
        "127.0.0.1:0x50", "a:1:2",
        /* unix */
        "unix:", "unix:relative", "unix:./x", "UNIX:/x",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        check_addr_both(good[i], 0);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        check_addr_both(bad[i], -EINVAL);
    CHECK_EQ(config_check_addr(NULL), -EINVAL);

    /* unix paths: as long as sun_path less its NUL, not one byte more. */
    struct sockaddr_un un;
    char a[300] = "unix:/";
    while (strlen(a) < 5 + sizeof un.sun_path - 1)
        strcat(a, "p");
    check_addr_both(a, 0);
    strcat(a, "p");
    check_addr_both(a, -EINVAL);
    while (strlen(a) < 250)
        strcat(a, "p");
    check_addr_both(a, -EINVAL);

    /* What binds is what was checked: the parsed address is the one written. */
    struct sockaddr_storage ss;
    socklen_t len;
    CHECK_EQ(net_parse_addr("localhost:7700", &ss, &len), 0);
    char name[NET_NAME_LEN];
    net_format((struct sockaddr *)&ss, len, name, sizeof name);
    CHECK_STR(name, "127.0.0.1:7700");
    CHECK_EQ(net_parse_addr("[::1]:00080", &ss, &len), 0);
    net_format((struct sockaddr *)&ss, len, name, sizeof name);
    CHECK_STR(name, "[::1]:80");
    CHECK_EQ(net_parse_addr("unix:/run/x.sock", &ss, &len), 0);
    net_format((struct sockaddr *)&ss, len, name, sizeof name);
    CHECK_STR(name, "unix:/run/x.sock");
}

/* ---- copy --------------------------------------------------------------- */

TEST(copy_is_deep)
{
    struct config a, b;
    load_ok("[auth]\ntokens = one, two\n[server]\nreactors = 3\n[msg]\nlisten = 1.1.1.1:1, 2.2.2.2:2\n", &a);
    CHECK_EQ(config_copy(&b, &a), 0);
    CHECK_EQ(b.reactors, 3);
    CHECK_EQ(b.msg_listen.n, 2);
    CHECK_STR(b.msg_listen.addr[1], "2.2.2.2:2");
    CHECK_EQ(b.ntokens, 2);
    CHECK(b.tokens != a.tokens);
    CHECK(b.tokens[0] != a.tokens[0]);
    CHECK_STR(b.tokens[0], "one");
    CHECK_STR(b.tokens[1], "two");
    a.tokens[0][0] = 'X';
    config_free(&a);
    CHECK_STR(b.tokens[0], "one");
    config_free(&b);

    struct config d, e;
    config_defaults(&d);
    CHECK_EQ(config_copy(&e, &d), 0);
    CHECK(e.tokens == NULL);
    check_defaults(&e);
    config_free(&e);
}

/* Writes text to path (a tokens file). */
static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    CHECK_EQ(fputs(text, f) >= 0, 1);
    fclose(f);
}

TEST(tokens_file_adds_entries_after_tokens)
{
    char dir[] = "/tmp/test_tokens_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char tokfile[128], cfgfile[128];
    snprintf(tokfile, sizeof tokfile, "%s/tokens", dir);
    snprintf(cfgfile, sizeof cfgfile, "%s/msgd.ini", dir);
    write_file(tokfile, "# people\n  carol:tok-c   \n\n\tdave:tok:d # trailing comment\nbare\n");
    /* A relative path is taken from the config file's folder; the key may
     * come before `tokens`. */
    write_file(cfgfile, "[auth]\ntokens_file = tokens\ntokens = alice:tok-a\n");
    struct config c;
    char err[1024];
    CHECK_EQ(config_load(cfgfile, &c, err, sizeof err), 0);
    CHECK_EQ(c.ntokens, 4);
    CHECK_STR(c.tokens[0], "alice:tok-a");
    CHECK_STR(c.tokens[1], "carol:tok-c");
    CHECK_STR(c.tokens[2], "dave:tok:d");
    CHECK_STR(c.tokens[3], "bare");
    CHECK_STR(c.tokens_file, "tokens");
    struct config d;
    CHECK_EQ(config_copy(&d, &c), 0);
    CHECK_EQ(d.ntokens, 4);
    CHECK_STR(d.tokens_file, "tokens");
    config_free(&d);
    config_free(&c);

    /* Bad lines are each reported with the tokens file's own line. */
    write_file(tokfile, "ok:1\n:nobody\nempty:\n");
    CHECK_EQ(config_load(cfgfile, &c, err, sizeof err), 2);
    char want[1024];
    snprintf(want, sizeof want,
             "%s:2: bad entry: an empty identity before ':' (entries are IDENTITY:TOKEN or TOKEN)\n"
             "%s:3: bad entry: an empty token (entries are IDENTITY:TOKEN or TOKEN)\n",
             tokfile, tokfile);
    CHECK_STR(err, want);
    CHECK_EQ(c.ntokens, 0); /* a failed load leaves the defaults */

    /* A missing file is an error naming it. */
    unlink(tokfile);
    CHECK_EQ(config_load(cfgfile, &c, err, sizeof err), 1);
    snprintf(want, sizeof want,
             "%s:2: cannot read [auth] tokens_file %s: No such file or directory\n", cfgfile,
             tokfile);
    CHECK_STR(err, want);
    unlink(cfgfile);
    rmdir(dir);
}


TEST(warnings_for_an_admin_listener_off_loopback)
{
    struct config c;
    load_ok("[admin]\nlisten = 127.0.0.1:1, 127.9.9.9:2, [::1]:3, unix:/tmp/x.sock, localhost:4\n", &c);
    char out[1024];
    CHECK_EQ(config_warnings(&c, "f.ini", out, sizeof out), 0);
    CHECK_STR(out, "");
    config_free(&c);
    load_ok("[admin]\nlisten = 0.0.0.0:7701, 127.0.0.1:1, [::]:2\n", &c);
    CHECK_EQ(config_warnings(&c, "f.ini", out, sizeof out), 2);
    CHECK_STR(out, "f.ini: warning: [admin] listen 0.0.0.0:7701 is not loopback or a unix socket; "
                   "the admin listener has no authentication\n"
                   "f.ini: warning: [admin] listen [::]:2 is not loopback or a unix socket; "
                   "the admin listener has no authentication\n");
    CHECK_EQ(config_warnings(&c, "f.ini", NULL, 0), 2);
    config_free(&c);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
