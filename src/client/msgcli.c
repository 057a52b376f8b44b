/* msgcli: one msg-protocol command from a shell (CONFIG.md), on the msgclient
 * library. Exit 0 on success, 1 on an error reply, 2 on a connection problem
 * or bad usage. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/msgclient.h"
#include "msg.h"

#define EXIT_OK 0
#define EXIT_REPLY 1       /* an error reply (or a reply that makes no sense) */
#define EXIT_CONN 2        /* refused, timed out, lost; also bad usage */
#define SUB_POLL_MS 200    /* sub and listen re-check for SIGINT at least this often */

static const char *prog = "msgcli";

static void usage(FILE *f)
{
    fprintf(f,
        "usage: msgcli [-h HOST] [-p PORT] [-u unix:/path] [-a TOKEN] [-t SECONDS]\n"
        "              [--heartbeat SECONDS] [--dead-after SECONDS] [--attempts N]\n"
        "              [--tls] [--cacert FILE] [--cert FILE --key FILE] COMMAND [ARGS]\n"
        "\n"
        "commands:\n"
        "  ping             PING the server; prints PONG\n"
        "  echo TEXT        ECHO; prints the text that came back\n"
        "  stats            STATS; prints the server's counters, one per line\n"
        "  delay MS TEXT    DELAY (a worker job); prints TEXT after MS milliseconds\n"
        "  sub TOPIC...     SUBSCRIBE; prints \"TOPIC MESSAGE\" for each message until\n"
        "                   interrupted (Ctrl-C); reconnects and resubscribes if the\n"
        "                   server goes away or is declared dead (see --dead-after);\n"
        "                   exits 2 when the reconnect attempts run out or the new\n"
        "                   connection does not answer\n"
        "  pub TOPIC TEXT   PUBLISH; prints how many subscribers it was queued to\n"
        "  send IDENTITY TEXT\n"
        "                   DIRECT to every connection of IDENTITY (this connection\n"
        "                   needs an identity: -a TOKEN); prints \"LOCAL REMOTE\": the\n"
        "                   connections on the server's node and the other nodes it\n"
        "                   went to\n"
        "  listen           prints \"SENDER TEXT\" for each DELIVER to this connection's\n"
        "                   identity (needs -a TOKEN; SENDER is - when the sender had\n"
        "                   none) until interrupted; reconnects like sub (each\n"
        "                   connection's AUTH shows that the server answers)\n"
        "  raw CMD [HEX]    any command number (decimal or 0x hex) with a payload in hex\n"
        "                   digits; prints the reply's command word and payload in hex\n"
        "\n"
        "options:\n"
        "  -h HOST          server host (default 127.0.0.1)\n"
        "  -p PORT          server port (default 7700)\n"
        "  -u unix:/path    connect to a unix socket instead\n"
        "  -a TOKEN         authenticate with TOKEN first\n"
        "  -t SECONDS       connect and reply timeout (default 5; decimals allowed)\n"
        "  --heartbeat SECONDS\n"
        "                   PING a server that has been silent this long (default 30;\n"
        "                   0: never)\n"
        "  --dead-after SECONDS\n"
        "                   declare a server that sent nothing for this long dead, and\n"
        "                   drop the connection (default 3 heartbeats; 0: never)\n"
        "  --attempts N     connect attempts per reconnect of sub and listen, with\n"
        "                   back-off and jitter (default 8)\n"
        "  --tls            speak TLS (checking the server's certificate against the\n"
        "                   system's CAs and HOST)\n"
        "  --cacert FILE    check it against the CAs in FILE instead (implies --tls)\n"
        "  --cert FILE --key FILE\n"
        "                   present this client certificate (implies --tls)\n"
        "  --help           print this and exit\n"
        "\n"
        "exit status: 0 ok; 1 the server answered with an error (its code name and\n"
        "text go to stderr) or with a reply that does not fit the request; 2 the\n"
        "connection was refused, timed out, was lost or did not speak the msg\n"
        "protocol, or the command line is wrong\n");
}

__attribute__((format(printf, 1, 2)))
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: usage error: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(try msgcli --help)\n");
    return EXIT_CONN;
}

/* Parses an unsigned 32-bit number: decimal, or hex with 0x. */
static int parse_u32(const char *s, uint32_t *out)
{
    int base = 10;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    if (!*s || *s == '-' || *s == '+' || *s == ' ')
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, base);
    if (errno || *end || v > UINT32_MAX)
        return -EINVAL;
    *out = (uint32_t)v;
    return 0;
}

static int hex_value(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Hex digits (an optional 0x, spaces and colons between bytes ignored) into a
 * malloc'd buffer. Returns 0 or -EINVAL. */
static int parse_hex(const char *s, uint8_t **out, size_t *len)
{
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
        s += 2;
    uint8_t *buf = malloc(strlen(s) / 2 + 1);
    if (!buf)
        return -ENOMEM;
    size_t n = 0;
    int hi = -1;
    for (; *s; s++) {
        if (*s == ' ' || *s == ':') {
            if (hi >= 0)
                break;
            continue;
        }
        int v = hex_value((unsigned char)*s);
        if (v < 0)
            break;
        if (hi < 0) {
            hi = v;
        } else {
            buf[n++] = (uint8_t)(hi << 4 | v);
            hi = -1;
        }
    }
    if (*s || hi >= 0) {
        free(buf);
        return -EINVAL;
    }
    *out = buf;
    *len = n;
    return 0;
}

static void print_hex(FILE *f, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%02x", p[i]);
}

/* Reports an error reply on stderr. */
static void report_error_reply(const char *what, const struct msgclient_reply *r)
{
    if (r->command == MSG_CONN_ERROR)
        fprintf(stderr, "%s: %s: connection-level error %s (%u): %s\n", prog, what,
                msg_error_name(r->error_code), r->error_code, r->error_text);
    else
        fprintf(stderr, "%s: %s: error reply %s (%u): %s\n", prog, what,
                msg_error_name(r->error_code), r->error_code, r->error_text);
}

/* The exit status for a call's result; reports failures. */
static int call_status(struct msgclient *c, const char *what, int rc,
                       const struct msgclient_reply *r)
{
    if (rc == 0)
        return EXIT_OK;
    if (rc == MSGCLIENT_ERROR_REPLY) {
        report_error_reply(what, r);
        return EXIT_REPLY;
    }
    if (rc == -ETIMEDOUT)
        fprintf(stderr, "%s: %s: timed out waiting for the reply\n", prog, what);
    else if (rc == -EPROTO)
        fprintf(stderr, "%s: %s: %s\n", prog, what, msgclient_error(c));
    else if (rc == -ECONNRESET || rc == -ECONNABORTED)
        fprintf(stderr, "%s: %s: connection lost (%s)\n", prog, what, msgclient_error(c));
    else
        fprintf(stderr, "%s: %s: %s\n", prog, what, strerror(-rc));
    return EXIT_CONN;
}

/* A call whose reply must be REPLY|cmd; returns the exit status, *r filled on 0. */
static int do_call(struct msgclient *c, const char *what, uint32_t cmd, const void *p,
                   size_t len, struct msgclient_reply *r)
{
    memset(r, 0, sizeof *r);
    int rc = msgclient_call(c, cmd, p, len, r);
    int st = call_status(c, what, rc, r);
    if (st != EXIT_OK) {
        msgclient_reply_free(r);
        return st;
    }
    if (r->command != (MSG_FLAG_REPLY | cmd)) {
        fprintf(stderr, "%s: %s: unexpected reply 0x%08X (want 0x%08X)\n", prog, what,
                r->command, MSG_FLAG_REPLY | cmd);
        msgclient_reply_free(r);
        return EXIT_REPLY;
    }
    return EXIT_OK;
}

static int connect_status(struct msgclient *c, int rc, const struct msgclient_reply *r)
{
    if (rc == 0)
        return EXIT_OK;
    if (rc == MSGCLIENT_ERROR_REPLY) {
        report_error_reply("AUTH", r);
        return EXIT_REPLY;
    }
    fprintf(stderr, "%s: %s\n", prog, msgclient_error(c));
    return EXIT_CONN;
}

static void print_payload_line(const struct msgclient_reply *r)
{
    if (r->len)
        fwrite(r->payload, 1, r->len, stdout);
    if (r->len == 0 || r->payload[r->len - 1] != '\n')
        fputc('\n', stdout);
}

/* ---- sub, listen, send ------------------------------------------------------- */

static volatile sig_atomic_t interrupted;
static unsigned reconnect_attempts = 8;   /* --attempts */

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static int subscribe_all(struct msgclient *c, char **topics, int ntopics)
{
    for (int i = 0; i < ntopics; i++) {
        struct msgclient_reply r;
        int st = do_call(c, "SUBSCRIBE", MSG_CMD_SUBSCRIBE, topics[i], strlen(topics[i]), &r);
        if (st != EXIT_OK)
            return st;
        msgclient_reply_free(&r);
        fprintf(stderr, "%s: subscribed to %s\n", prog, topics[i]);
    }
    return EXIT_OK;
}

static void print_push(const uint8_t *key, size_t key_len, const uint8_t *data,
                       size_t data_len)
{
    if (key_len)
        fwrite(key, 1, key_len, stdout);
    else
        fputc('-', stdout);
    fputc(' ', stdout);
    fwrite(data, 1, data_len, stdout);
    fputc('\n', stdout);
    fflush(stdout);
}

/* Waits for the next push sub (MESSAGE) or listen (DELIVER) prints, and
 * prints it. Returns what msgclient_recv_message/_deliver returned. */
static int print_next_push(struct msgclient *c, bool deliver)
{
    int rc;
    if (deliver) {
        struct msgclient_deliver d;
        rc = msgclient_recv_deliver(c, &d, SUB_POLL_MS);
        if (rc == 0) {
            print_push(d.sender, d.sender_len, d.data, d.data_len);
            msgclient_deliver_free(&d);
        }
    } else {
        struct msgclient_message m;
        rc = msgclient_recv_message(c, &m, SUB_POLL_MS);
        if (rc == 0) {
            print_push(m.topic, m.topic_len, m.data, m.data_len);
            msgclient_message_free(&m);
        }
    }
    return rc;
}

/* What sub does after each connect: SUBSCRIBE to every topic (a silent
 * server fails it: exit 2). listen needs nothing (AUTH, which a silent
 * server fails too, gave the identity), and says it is ready. */
static int after_connect(struct msgclient *c, bool deliver, char **topics, int ntopics)
{
    if (!deliver)
        return subscribe_all(c, topics, ntopics);
    fprintf(stderr, "%s: listening\n", prog);
    return EXIT_OK;
}

/* sub (MESSAGE pushes) and listen (DELIVER pushes): print each one until
 * SIGINT or SIGTERM; reconnect (and subscribe again) when the connection is
 * lost or the server went away. */
static int cmd_pushes(struct msgclient *c, bool deliver, char **topics, int ntopics)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;                       /* no SA_RESTART: poll returns EINTR */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    int st = after_connect(c, deliver, topics, ntopics);
    if (st != EXIT_OK)
        return interrupted ? EXIT_OK : st;
    while (!interrupted) {
        int rc = print_next_push(c, deliver);
        /* -ETIMEDOUT with the connection open: no push within SUB_POLL_MS */
        if (rc == 0 || (rc == -ETIMEDOUT && msgclient_connected(c)) || rc == -EINTR)
            continue;
        if (rc == -ECONNRESET || rc == -ECONNABORTED || rc == -EPROTO || rc == -ENOTCONN ||
            rc == -ETIMEDOUT) {
            fprintf(stderr, "%s: %s; reconnecting\n", prog, msgclient_error(c));
            struct msgclient_reply r;
            memset(&r, 0, sizeof r);
            rc = msgclient_reconnect(c, &r);
            if (rc == -EINTR && interrupted)
                break;
            if (rc < 0 && rc != -EINTR)
                fprintf(stderr, "%s: giving up after %u connect attempts\n", prog,
                        reconnect_attempts);
            st = connect_status(c, rc, &r);
            msgclient_reply_free(&r);
            if (st != EXIT_OK)
                return st;
            st = after_connect(c, deliver, topics, ntopics);
            if (st != EXIT_OK)
                return interrupted ? EXIT_OK : st;
            continue;
        }
        fprintf(stderr, "%s: %s\n", prog, strerror(-rc));
        return EXIT_CONN;
    }
    return EXIT_OK;
}

/* send: DIRECT, then "LOCAL REMOTE". */
static int cmd_send(struct msgclient *c, const char *identity, const char *text)
{
    struct msgclient_reply r;
    memset(&r, 0, sizeof r);
    uint32_t local = 0, remote = 0;
    int rc = msgclient_direct(c, identity, strlen(identity), text, strlen(text), &local,
                              &remote, &r);
    int st;
    if (rc == -EBADMSG) {
        fprintf(stderr, "%s: %s\n", prog, msgclient_error(c));
        st = EXIT_REPLY;
    } else {
        st = call_status(c, "DIRECT", rc, &r);
        if (st == EXIT_OK)
            printf("%u %u\n", local, remote);
    }
    msgclient_reply_free(&r);
    return st;
}

/* ---- main -------------------------------------------------------------------- */

static int need_args(const char *cmd, int have, int min, int max)
{
    if (have < min || (max >= 0 && have > max)) {
        fprintf(stderr, "%s: usage error: %s takes %s\n(try msgcli --help)\n", prog, cmd,
                strcmp(cmd, "ping") == 0 || strcmp(cmd, "stats") == 0 ? "no arguments" :
                strcmp(cmd, "echo") == 0 ? "TEXT" :
                strcmp(cmd, "delay") == 0 ? "MS TEXT" :
                strcmp(cmd, "sub") == 0 ? "one or more TOPICs" :
                strcmp(cmd, "pub") == 0 ? "TOPIC TEXT" :
                strcmp(cmd, "send") == 0 ? "IDENTITY TEXT" :
                strcmp(cmd, "listen") == 0 ? "no arguments" : "CMD [HEX]");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *port = "7700", *unix_path = NULL, *token = NULL;
    double timeout_s = 5.0;
    double heartbeat_s = 30.0, dead_after_s = -1.0;   /* -1: 3 heartbeats */
    bool tls = false;
    const char *cafile = NULL, *certfile = NULL, *keyfile = NULL;
    static const struct option longopts[] = {
        {"tls", no_argument, NULL, 'T'},
        {"cacert", required_argument, NULL, 'C'},
        {"cert", required_argument, NULL, 'E'},
        {"key", required_argument, NULL, 'Y'},
        {"help", no_argument, NULL, 'H'},
        {"heartbeat", required_argument, NULL, 'K'},
        {"dead-after", required_argument, NULL, 'D'},
        {"attempts", required_argument, NULL, 'N'},
        {NULL, 0, NULL, 0},
    };
    signal(SIGPIPE, SIG_IGN);
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "+:h:p:u:a:t:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = optarg; break;
        case 'u': unix_path = optarg; break;
        case 'a': token = optarg; break;
        case 't': {
            char *end;
            errno = 0;
            timeout_s = strtod(optarg, &end);
            if (errno || *end || end == optarg || !(timeout_s > 0) || timeout_s > 86400)
                return usage_error("-t wants seconds (> 0), not '%s'", optarg);
            break;
        }
        case 'K':
        case 'D': {
            char *end;
            errno = 0;
            double v = strtod(optarg, &end);
            if (errno || *end || end == optarg || !(v >= 0) || v > 86400)
                return usage_error("--%s wants seconds (>= 0), not '%s'",
                                   opt == 'K' ? "heartbeat" : "dead-after", optarg);
            *(opt == 'K' ? &heartbeat_s : &dead_after_s) = v;
            break;
        }
        case 'N': {
            uint32_t n;
            if (parse_u32(optarg, &n) < 0 || n < 1 || n > 1000000)
                return usage_error("--attempts wants a count 1..1000000, not '%s'", optarg);
            reconnect_attempts = n;
            break;
        }
        case 'T': tls = true; break;
        case 'C': cafile = optarg; break;
        case 'E': certfile = optarg; break;
        case 'Y': keyfile = optarg; break;
        case 'H': usage(stdout); return EXIT_OK;
        case ':':
            if (optopt && optopt < 256)
                return usage_error("-%c needs an argument", optopt);
            return usage_error("%s needs an argument", argv[optind - 1]);
        default:
            if (optopt)
                return usage_error("unknown option -%c", optopt);
            return usage_error("unknown option %s", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return usage_error("%s", "no command given");
    const char *cmd = argv[optind];
    char **args = argv + optind + 1;
    int nargs = argc - optind - 1;

    uint32_t pv;
    if (parse_u32(port, &pv) < 0 || pv < 1 || pv > 65535)
        return usage_error("-p wants a port 1..65535, not '%s'", port);

    char addr[512];
    int trc = msgclient_target(host, pv, unix_path, addr, sizeof addr);
    if (trc == -EINVAL)
        return usage_error("-u wants unix:/path (at most %d bytes), not '%s'",
                           MSGCLIENT_UNIX_PATH_MAX, unix_path);
    if (trc < 0)
        return usage_error("-h wants a host name or address, not '%.64s...'", host);

    /* check the command's arguments before connecting */
    uint32_t raw_cmd = 0, delay_ms = 0;
    uint8_t *payload = NULL;
    size_t plen = 0;
    int timeout_ms = (int)(timeout_s * 1000 + 0.5);
    if (timeout_ms < 1)
        timeout_ms = 1;
    int call_timeout_ms = timeout_ms;
    if (strcmp(cmd, "ping") == 0 || strcmp(cmd, "stats") == 0) {
        if (need_args(cmd, nargs, 0, 0) < 0)
            return EXIT_CONN;
    } else if (strcmp(cmd, "echo") == 0) {
        if (need_args(cmd, nargs, 1, 1) < 0)
            return EXIT_CONN;
    } else if (strcmp(cmd, "delay") == 0) {
        if (need_args(cmd, nargs, 2, 2) < 0)
            return EXIT_CONN;
        if (args[0][0] == '0' && (args[0][1] == 'x' || args[0][1] == 'X'))
            return usage_error("delay wants MS in decimal, not '%s'", args[0]);
        if (parse_u32(args[0], &delay_ms) < 0)
            return usage_error("delay wants MS as a whole number, not '%s'", args[0]);
        long long t = (long long)timeout_ms + delay_ms;
        call_timeout_ms = t > 0x7fffffff ? 0x7fffffff : (int)t;
    } else if (strcmp(cmd, "sub") == 0) {
        if (need_args(cmd, nargs, 1, -1) < 0)
            return EXIT_CONN;
        for (int i = 0; i < nargs; i++)
            if (strlen(args[i]) < 1 || strlen(args[i]) > 255)
                return usage_error("a topic is 1..255 bytes: '%s'", args[i]);
    } else if (strcmp(cmd, "pub") == 0) {
        if (need_args(cmd, nargs, 2, 2) < 0)
            return EXIT_CONN;
        if (strlen(args[0]) < 1 || strlen(args[0]) > 255)
            return usage_error("a topic is 1..255 bytes: '%s'", args[0]);
    } else if (strcmp(cmd, "send") == 0) {
        if (need_args(cmd, nargs, 2, 2) < 0)
            return EXIT_CONN;
        if (strlen(args[0]) < 1 || strlen(args[0]) > 255)
            return usage_error("an identity is 1..255 bytes: '%s'", args[0]);
    } else if (strcmp(cmd, "listen") == 0) {
        if (need_args(cmd, nargs, 0, 0) < 0)
            return EXIT_CONN;
        if (!token)
            return usage_error("%s", "listen needs -a TOKEN: DELIVERs go to the connections "
                               "of an identity, and AUTH is what gives one");
    } else if (strcmp(cmd, "raw") == 0) {
        if (need_args(cmd, nargs, 1, 2) < 0)
            return EXIT_CONN;
        if (parse_u32(args[0], &raw_cmd) < 0)
            return usage_error("raw wants CMD in decimal or 0x hex, not '%s'", args[0]);
        if (raw_cmd & MSG_FLAG_REPLY)
            return usage_error("raw CMD %s has the REPLY bit set: nothing would answer it",
                               args[0]);
        if (nargs == 2 && parse_hex(args[1], &payload, &plen) < 0)
            return usage_error("raw wants HEX as pairs of hex digits, not '%s'", args[1]);
    } else {
        return usage_error("unknown command '%s'", cmd);
    }

    struct msgclient_options o;
    msgclient_options_init(&o);
    o.addr = addr;
    o.token = token;
    o.connect_timeout_ms = timeout_ms;
    o.timeout_ms = call_timeout_ms;
    o.reconnect = strcmp(cmd, "sub") == 0 || strcmp(cmd, "listen") == 0;
    o.reconnect_attempts = reconnect_attempts;
    if ((certfile != NULL) != (keyfile != NULL))
        return usage_error("%s", "--cert and --key go together");
    o.tls = tls || cafile || certfile;
    o.tls_cafile = cafile;
    o.tls_certfile = certfile;
    o.tls_keyfile = keyfile;
    if (dead_after_s < 0)
        dead_after_s = 3 * heartbeat_s;
    o.heartbeat_ms = (int)(heartbeat_s * 1000 + 0.5);
    o.dead_after_ms = (int)(dead_after_s * 1000 + 0.5);
    if (heartbeat_s > 0 && o.heartbeat_ms < 1)
        o.heartbeat_ms = 1;
    if (dead_after_s > 0 && o.dead_after_ms < 1)
        o.dead_after_ms = 1;
    struct msgclient *c = msgclient_new(&o);
    if (!c) {
        fprintf(stderr, "%s: out of memory\n", prog);
        free(payload);
        return EXIT_CONN;
    }
    struct msgclient_reply r;
    memset(&r, 0, sizeof r);
    int st = connect_status(c, msgclient_connect(c, &r), &r);
    msgclient_reply_free(&r);
    if (st != EXIT_OK)
        goto out;

    if (strcmp(cmd, "ping") == 0) {
        st = do_call(c, "PING", MSG_CMD_PING, NULL, 0, &r);
        if (st == EXIT_OK)
            printf("PONG\n");
    } else if (strcmp(cmd, "echo") == 0) {
        st = do_call(c, "ECHO", MSG_CMD_ECHO, args[0], strlen(args[0]), &r);
        if (st == EXIT_OK) {
            if (r.len)
                fwrite(r.payload, 1, r.len, stdout);
            fputc('\n', stdout);
        }
    } else if (strcmp(cmd, "stats") == 0) {
        st = do_call(c, "STATS", MSG_CMD_STATS, NULL, 0, &r);
        if (st == EXIT_OK)
            print_payload_line(&r);
    } else if (strcmp(cmd, "delay") == 0) {
        size_t tl = strlen(args[1]);
        payload = malloc(4 + tl);
        if (!payload) {
            fprintf(stderr, "%s: out of memory\n", prog);
            st = EXIT_CONN;
            goto out;
        }
        msg_put_u32(payload, delay_ms);
        memcpy(payload + 4, args[1], tl);
        st = do_call(c, "DELAY", MSG_CMD_DELAY, payload, 4 + tl, &r);
        if (st == EXIT_OK) {
            if (r.len)
                fwrite(r.payload, 1, r.len, stdout);
            fputc('\n', stdout);
        }
    } else if (strcmp(cmd, "sub") == 0) {
        st = cmd_pushes(c, false, args, nargs);
    } else if (strcmp(cmd, "listen") == 0) {
        st = cmd_pushes(c, true, NULL, 0);
    } else if (strcmp(cmd, "send") == 0) {
        st = cmd_send(c, args[0], args[1]);
    } else if (strcmp(cmd, "pub") == 0) {
        size_t tl = strlen(args[0]), ml = strlen(args[1]);
        payload = malloc(1 + tl + ml);
        if (!payload) {
            fprintf(stderr, "%s: out of memory\n", prog);
            st = EXIT_CONN;
            goto out;
        }
        payload[0] = (uint8_t)tl;
        memcpy(payload + 1, args[0], tl);
        memcpy(payload + 1 + tl, args[1], ml);
        st = do_call(c, "PUBLISH", MSG_CMD_PUBLISH, payload, 1 + tl + ml, &r);
        if (st == EXIT_OK) {
            if (r.len == 4) {
                printf("%u\n", msg_get_u32(r.payload));
            } else {
                fprintf(stderr, "%s: PUBLISH: the reply is %zu bytes, not a u32 count\n",
                        prog, r.len);
                st = EXIT_REPLY;
            }
        }
    } else { /* raw */
        memset(&r, 0, sizeof r);
        int rc = msgclient_call(c, raw_cmd, payload, plen, &r);
        char what[48];
        snprintf(what, sizeof what, "command %u (0x%08X)", raw_cmd, raw_cmd);
        st = call_status(c, what, rc, &r);
        if (st == EXIT_OK) {
            printf("0x%08X", r.command);
            if (r.len) {
                fputc(' ', stdout);
                print_hex(stdout, r.payload, r.len);
            }
            fputc('\n', stdout);
        }
    }
    msgclient_reply_free(&r);
out:
    free(payload);
    msgclient_free(c);
    if (fflush(stdout) != 0 && st == EXIT_OK)
        st = EXIT_CONN;
    return st;
}
