/* proto_http: one request head per frame, parsed in place and answered at
 * once: /metrics (metrics.h), /healthz, /readyz (503 while draining); 404,
 * 405, and 400/413/431/505 with a close. Nothing is allocated by a size the
 * peer chose: a head is at most PROTO_HTTP_HEAD_MAX bytes of the input. */
#include "proto_http.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "buffer.h"
#include "metrics.h"
#include "stats.h"

#define TEXT_PLAIN "text/plain; charset=utf-8"

long proto_http_split(const uint8_t *p, size_t n)
{
    size_t look = n < PROTO_HTTP_HEAD_MAX ? n : PROTO_HTTP_HEAD_MAX;
    size_t line = 0;
    const uint8_t *nl;
    while (line < look && (nl = memchr(p + line, '\n', look - line)) != NULL) {
        size_t end = (size_t)(nl - p);
        if (end == line || (end == line + 1 && p[line] == '\r'))
            return (long)end + 1;
        line = end + 1;
    }
    return n >= PROTO_HTTP_HEAD_MAX ? PROTO_HTTP_ERR_HEAD_TOO_LARGE : 0;
}

/* ---- parsing a head ---- */

enum http_method { METHOD_GET, METHOD_HEAD, METHOD_OTHER };

struct http_req {
    enum http_method method;
    const uint8_t *path;         /* the target's path, without query or fragment */
    size_t path_len;
    int minor;                   /* HTTP/1.minor */
    bool close;                  /* Connection: close */
    bool keep_alive;             /* Connection: keep-alive (asks it of HTTP/1.0) */
    unsigned hosts;              /* Host fields */
    bool body;                   /* Content-Length > 0 or Transfer-Encoding */
};

/* A line of the head: [p, p + len) without its LF and a CR before it. */
struct line {
    const uint8_t *p;
    size_t len;
};

/* The next line at *off of head (n bytes, ending in an empty line). */
static struct line next_line(const uint8_t *head, size_t n, size_t *off)
{
    const uint8_t *p = head + *off;
    const uint8_t *nl = memchr(p, '\n', n - *off);
    size_t len = nl ? (size_t)(nl - p) : n - *off;
    *off += len + (nl ? 1 : 0);
    if (len > 0 && p[len - 1] == '\r')
        len--;
    return (struct line){p, len};
}

static bool is_tchar(uint8_t ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

static bool all_tchars(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!is_tchar(p[i]))
            return false;
    return n > 0;
}

static bool token_is(const uint8_t *p, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp((const char *)p, word, n) == 0;
}

/* Parses "METHOD SP TARGET SP HTTP/1.x". Returns 0, 400 or 505. */
static int parse_request_line(struct line l, struct http_req *r)
{
    const uint8_t *sp1 = memchr(l.p, ' ', l.len);
    if (!sp1)
        return 400;
    size_t mlen = (size_t)(sp1 - l.p);
    r->method = mlen == 3 && memcmp(l.p, "GET", 3) == 0    ? METHOD_GET
                : mlen == 4 && memcmp(l.p, "HEAD", 4) == 0 ? METHOD_HEAD
                                                           : METHOD_OTHER;
    const uint8_t *t = sp1 + 1, *end = l.p + l.len;
    const uint8_t *sp2 = memchr(t, ' ', (size_t)(end - t));
    if (!all_tchars(l.p, mlen) || !sp2 || sp2 == t)
        return 400;
    for (const uint8_t *q = t; q < sp2; q++)
        if (*q <= ' ' || *q >= 127)
            return 400;
    const uint8_t *v = sp2 + 1;
    if (end - v != 8 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' || v[6] != '.' ||
        v[7] < '0' || v[7] > '9')
        return 400;
    /* absolute-form: skip "scheme://authority" */
    size_t tlen = (size_t)(sp2 - t);
    const uint8_t *sch = tlen > 3 ? memchr(t, ':', tlen) : NULL;
    if (t[0] != '/' && sch && sch + 3 <= sp2 && memcmp(sch, "://", 3) == 0 &&
        all_tchars(t, (size_t)(sch - t))) {
        const uint8_t *a = sch + 3;
        const uint8_t *slash = memchr(a, '/', (size_t)(sp2 - a));
        t = slash ? slash : sp2;
    } else if (t[0] != '/') {
        return 400;
    }
    size_t plen = 0;
    while (t + plen < sp2 && t[plen] != '?' && t[plen] != '#')
        plen++;
    r->path = plen ? t : (const uint8_t *)"/";
    r->path_len = plen ? plen : 1;
    if (v[5] != '1')
        return 505;
    r->minor = v[7] - '0';
    return 0;
}

/* The comma-separated options of a Connection field. */
static void parse_connection(const uint8_t *v, size_t n, struct http_req *r)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ',' || v[i] == ' ' || v[i] == '\t'))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
            i++;
        if (token_is(v + s, i - s, "close"))
            r->close = true;
        else if (token_is(v + s, i - s, "keep-alive"))
            r->keep_alive = true;
    }
}

/* Parses one "name: value" field line. Returns 0 or 400. */
static int parse_field(struct line l, struct http_req *r)
{
    if (l.len == 0 || l.p[0] == ' ' || l.p[0] == '\t')
        return 400; /* obsolete line folding */
    const uint8_t *colon = memchr(l.p, ':', l.len);
    if (!colon || !all_tchars(l.p, (size_t)(colon - l.p)))
        return 400;
    size_t nlen = (size_t)(colon - l.p);
    const uint8_t *v = colon + 1, *end = l.p + l.len;
    for (const uint8_t *q = v; q < end; q++)
        if ((*q < ' ' && *q != '\t') || *q == 127)
            return 400;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    size_t vlen = (size_t)(end - v);
    if (token_is(l.p, nlen, "content-length")) {
        if (vlen == 0)
            return 400;
        for (size_t i = 0; i < vlen; i++) {
            if (v[i] < '0' || v[i] > '9')
                return 400;
            if (v[i] != '0')
                r->body = true; /* any length but 0, however many digits */
        }
    } else if (token_is(l.p, nlen, "transfer-encoding")) {
        r->body = true;
    } else if (token_is(l.p, nlen, "connection")) {
        parse_connection(v, vlen, r);
    } else if (token_is(l.p, nlen, "host")) {
        r->hosts++;
    }
    return 0;
}

/* Parses a whole head. Returns 0, or the status of the refusal (400, 413,
 * 505), after which the connection closes. */
static int parse_head(const uint8_t *head, size_t n, struct http_req *r)
{
    size_t off = 0;
    int st = parse_request_line(next_line(head, n, &off), r);
    if (st)
        return st;
    for (;;) {
        struct line l = next_line(head, n, &off);
        if (l.len == 0)
            break; /* the empty line that ends the head (split made sure of it) */
        if ((st = parse_field(l, r)) != 0)
            return st;
    }
    if (r->minor >= 1 && r->hosts != 1)
        return 400; /* RFC 9112 3.2: exactly one Host in HTTP/1.1 */
    return r->body ? 413 : 0;
}

/* ---- answers ---- */

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* What an answer says besides its status and body. */
struct answer {
    const char *type;            /* Content-Type */
    bool head;                   /* HEAD: the length of the body, not the body */
    bool close;                  /* Connection: close, then close */
    bool keep_alive;             /* Connection: keep-alive (an HTTP/1.0 client asked) */
    bool allow;                  /* Allow: GET, HEAD (405) */
};

static void respond(struct pipeline *pl, int status, const struct answer *a, const void *body,
                    size_t len)
{
    char date[64] = "";
    struct tm tm;
    time_t now = time(NULL);
    if (gmtime_r(&now, &tm))
        strftime(date, sizeof date, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
    char hdr[512];
    int n = snprintf(hdr, sizeof hdr,
                     "HTTP/1.1 %d %s\r\n%sServer: msgd\r\nContent-Type: %s\r\n"
                     "Content-Length: %zu\r\n%s%s\r\n",
                     status, reason(status), date, a->type, len,
                     a->allow ? "Allow: GET, HEAD\r\n" : "",
                     a->close ? "Connection: close\r\n"
                              : a->keep_alive ? "Connection: keep-alive\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof hdr) {
        pl->flags |= PIPELINE_FAILED;
        return;
    }
    pipeline_write2(pl, hdr, (size_t)n, body, a->head ? 0 : len);
    if (a->close)
        pipeline_close_after_flush(pl);
}

/* A short text answer: the status line's words as the body. */
static void respond_text(struct pipeline *pl, int status, const struct answer *a)
{
    char body[64];
    int n = snprintf(body, sizeof body, "%d %s\n", status, reason(status));
    respond(pl, status, a, body, (size_t)n);
}

/* A refusal that ends the connection (400, 413, 431, 505). */
static void refuse(struct pipeline *pl, int status, bool head)
{
    struct answer a = {.type = TEXT_PLAIN, .head = head, .close = true};
    if (pl->env && pl->env->stats)
        stats_add(pl->env->stats, STATS_CLOSED_VIOLATION, 1);
    respond_text(pl, status, &a);
}

static void serve_metrics(struct pipeline *pl, struct answer *a)
{
    struct buffer body = BUFFER_INIT;
    if (!pl->env || !pl->env->all || metrics_format(pl->env->all, &body) < 0) {
        buffer_free(&body);
        a->close = true;
        respond_text(pl, 500, a);
        return;
    }
    a->type = METRICS_CONTENT_TYPE;
    respond(pl, 200, a, buffer_peek(&body), buffer_readable(&body));
    buffer_free(&body);
}

static bool path_is(const struct http_req *r, const char *p)
{
    return strlen(p) == r->path_len && memcmp(r->path, p, r->path_len) == 0;
}

static void http_handle_cb(struct pipeline *pl, const uint8_t *frame, size_t len)
{
    if (frame[0] == '\n' || (frame[0] == '\r' && len == 2))
        return; /* an empty line before a request (RFC 9112 2.2) */
    struct http_req r = {.method = METHOD_OTHER};
    int st = parse_head(frame, len, &r);
    if (st) {
        refuse(pl, st, r.method == METHOD_HEAD);
        return;
    }
    struct answer a = {
        .type = TEXT_PLAIN,
        .head = r.method == METHOD_HEAD,
        .close = r.close || (r.minor == 0 && !r.keep_alive),
        .keep_alive = r.minor == 0 && r.keep_alive && !r.close,
    };
    bool metrics = path_is(&r, "/metrics"), health = path_is(&r, "/healthz"),
         ready = path_is(&r, "/readyz");
    if (!metrics && !health && !ready) {
        respond_text(pl, 404, &a);
    } else if (r.method == METHOD_OTHER) {
        a.allow = true;
        respond_text(pl, 405, &a);
    } else if (metrics) {
        serve_metrics(pl, &a);
    } else if (health) {
        respond(pl, 200, &a, "ok\n", 3);
    } else if (pl->env && pl->env->draining) {
        respond(pl, 503, &a, "draining\n", 9);
    } else {
        respond(pl, 200, &a, "ready\n", 6);
    }
}

static void http_violation_cb(struct pipeline *pl, long code)
{
    (void)code; /* the one split error: the head passed PROTO_HTTP_HEAD_MAX */
    refuse(pl, 431, false);
}

static long http_split_cb(struct pipeline *pl, const uint8_t *p, size_t n)
{
    (void)pl;
    return proto_http_split(p, n);
}

const struct proto proto_http = {
    .name = "http",
    .counted = false,
    .serves_drain = true,
    .split = http_split_cb,
    .handle = http_handle_cb,
    .violation = http_violation_cb,
};
