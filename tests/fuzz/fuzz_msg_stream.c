/* fuzz_msg_stream: the msg protocol's splitter, decoder and dispatch as a
 * connection drives them: the real proto_msg (split/handle/violation) and
 * command table on a struct pipeline, fed through the conn.c emulator of
 * fuzz_common.h, with one reactor (whose PUBLISH and DIRECT deliver and
 * answer inside their handler) and its mailbox turn.
 *
 * Input: 4 parameter bytes, then the byte stream a client sends.
 *   [0] bits 0-3  max_frame (table below)
 *       bit 4     auth on: tokens "s3cret" and "tok" (pre-auth limit 16 KiB)
 *       bit 5     draining (rule 6: SHUTTING_DOWN for all but PING)
 *       bit 6     output_high_water = 64 (turns end on back-pressure, slow
 *                 subscribers are skipped)
 *       bit 7     3 frames per turn (turns end at the cap)
 *   [1] bits 0-1  largest read: 1, 7, 64 or 4096 bytes
 *       bits 2-3  max_subscriptions: 64, 1, 2 or 3
 *       bit 4     a third run: the peer hangs up once the stream is sent,
 *                 before the fan-outs come back (late replies find no
 *                 connection; what is left in the mailbox is dropped)
 *   [2..3]        seed of the read sizes and of when the mailbox turns
 * delay_command stays off, so no worker job is ever created (pool = NULL).
 *
 * The reactor is fuzz_common.h's emulator: its pipeline_host_ops serve the
 * one connection, and its mailbox runs whatever production items are posted
 * to it with mailbox_run(); the connection's close calls the real proto_msg
 * free.
 *
 * Invariants (abort on violation):
 *  - split agrees with an independent reference splitter, never returns more
 *    than it was given, and a frame it returns has a valid header, length <=
 *    the effective max_frame and 16 + length == the result;
 *  - the frames handled are exactly the stream's bytes, in order (nothing
 *    skipped, repeated or consumed beyond what was given); at the end of a
 *    stream that did not close, what is left is an incomplete frame;
 *  - the output is well-formed frames: each request gets exactly one reply,
 *    in request order (rule 1), with the command word, error code and payload
 *    PROTOCOL.md prescribes (a model of PING/ECHO/AUTH/STATS/DELAY and of
 *    SUBSCRIBE/UNSUBSCRIBE/PUBLISH with its own topic set); a client REPLY
 *    frame gets none; the only pushes are MESSAGEs, one per delivery; after a
 *    violation (or a third wrong AUTH) nothing more is handled and exactly one
 *    connection-level error (0xC0000000) ends the output;
 *  - each PUBLISH visit finds the connection subscribed exactly when the
 *    model's topic set says so (it queues the MESSAGE or skips it as a slow
 *    consumer); the PUBLISH replies' counts add up to the MESSAGEs sent;
 *    no reply comes late (kick): one reactor answers PUBLISH and DIRECT in
 *    their handlers;
 *  - the counters (frames_in/out, replies_dropped, errors.*, violations,
 *    subscriptions, published, messages delivered/dropped) agree with the
 *    output, and the subscriptions gauge is back to 0 once the connection
 *    closed (with or without a hang-up), leaving no topic behind;
 *  - the replies do not depend on the chunking: the same stream read in one
 *    piece gives the same reply frames (STATS text and PUBLISH counts, which
 *    hold the uptime and fan-out timing, compared by command word only).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buffer.h"
#include "cmdtab.h"
#include "mod_builtin.h"
#include "config.h"
#include "mailbox.h"
#include "msg.h"
#include "pipeline.h"
#include "proto_msg.h"
#include "pubsub.h"
#include "stats.h"

#include "fuzz_common.h"

/* MESSAGEs skipped for the connection as a slow consumer. */
static uint64_t msgs_dropped(const struct pipeline *pl)
{
    const struct msg_conn *m = proto_msg_peek(pl);
    return m && m->subs ? m->subs->dropped : 0;
}

#define PARAM_BYTES 4
#define PING_MAX 1024u
#define PREAUTH_MAX (16u * 1024u)
#define TOPIC_MAX 255u
#define CMD_SUBSCRIBE 16u
#define CMD_UNSUBSCRIBE 17u
#define CMD_PUBLISH 18u
#define CMD_MESSAGE 19u
#define CMD_DIRECT 21u
#define CMD_DELIVER 22u

static const uint64_t max_frames[16] = {
    64, 65, 100, 127, 255, 256, 1000, 1024,
    1025, 4096, 16383, 16384, 16385, 65536, 1u << 20, 256u << 20,
};
static const size_t max_chunks[4] = {1, 7, 64, 4096};
static const uint32_t max_subs[4] = {64, 1, 2, 3};
static char tok1[] = "s3cret", tok2[] = "tom:tok"; /* a bare token, and one of identity tom */
static char *tokens[] = {tok1, tok2};

/* The reply the model expects for one request. */
enum exp_kind {
    EXP_PAYLOAD,    /* REPLY | cmd with the payload at stream[off..off+len) */
    EXP_STATS,      /* REPLY | STATS, "name value" lines */
    EXP_PUBLISH,    /* REPLY | PUBLISH, u32 count */
    EXP_DIRECT,     /* REPLY | DIRECT, u32 count, u32 0 */
    EXP_ERROR,      /* REPLY | ERROR | cmd, code */
    EXP_CONN_ERROR, /* 0xC0000000, code, then the close */
    EXP_ANY,        /* a command this model does not know: REPLY [| ERROR] | cmd */
};

struct exp {
    enum exp_kind kind;
    uint32_t cmd, code;
    size_t off, len;
};

struct topic {
    size_t len;
    uint8_t name[TOPIC_MAX];
};

/* What the model expects of one run, and what it saw. */
struct run {
    const struct config *cfg;
    struct pipeline *pl;
    const uint8_t *stream;
    size_t stream_len;
    size_t handled_off;      /* stream bytes handled as frames so far */
    bool authed;
    unsigned auth_failures;
    uint8_t ident[256];      /* the model's identity of the connection */
    size_t ident_len;        /* 0: none */
    bool closed;             /* connection-level error queued */
    bool violated;
    long vcode;
    long last_split;
    uint64_t requests, client_replies, dropped;
    struct exp *exps;        /* one per request, in order */
    size_t nexps;
    struct topic *subs;      /* the model's topic set */
    uint32_t nsubs;
    uint64_t publishes;
    size_t *pubs;            /* each PUBLISH's payload, as a stream offset */
    size_t npubs, visited;   /* PUBLISHes fanned out; visited so far */
    uint64_t publish_counts; /* the counts the PUBLISH replies carry, summed */
    size_t *directs;         /* each DIRECT's payload, as a stream offset */
    size_t ndirects, dvisited;
    uint64_t deliver_skips;  /* DELIVERs skipped (slow consumer), over every turn */
    struct fuzz_rng rng;     /* when the mailbox turns */
    struct fuzz_host host;   /* the reactor: its services and its mailbox */
    struct pubsub ps;
    struct pubsub ids;       /* the reactor's identity table (DIRECT) */
};

static struct run *cur; /* the run the wrappers check (one thread) */

static uint64_t effective_max(const struct run *r)
{
    uint64_t max = r->cfg->max_frame;
    if (r->cfg->ntokens > 0 && !r->authed && max > PREAUTH_MAX)
        max = PREAUTH_MAX;
    return max;
}

/* The splitter as PROTOCOL.md and msg.h describe it, written independently:
 * a byte that cannot start a valid magic/version refuses the stream at once,
 * a length over max refuses it from the header alone. */
static long ref_split(const uint8_t *p, size_t n, uint64_t max)
{
    static const uint8_t head[8] = {'M', 'S', 'G', 'P', 0, 0, 0, 1};
    for (size_t i = 0; i < 8 && i < n; i++)
        if (p[i] != head[i])
            return i < 4 ? -MSG_ERR_BAD_MAGIC : -MSG_ERR_BAD_VERSION;
    if (n < 16)
        return 0;
    uint64_t len = msg_get_u32(p + 12);
    if (len > max)
        return -MSG_ERR_TOO_LARGE;
    return n >= 16 + len ? (long)(16 + len) : 0;
}

/* One frame at p (n bytes available): checks the header, returns its size. */
static size_t frame_at(const uint8_t *p, size_t n)
{
    FUZZ_CHECK(n >= MSG_HEADER_LEN, "output ends inside a header (%zu bytes)", n);
    FUZZ_CHECK(msg_get_u32(p) == MSG_MAGIC, "output frame magic %08x", msg_get_u32(p));
    FUZZ_CHECK(msg_get_u32(p + 4) == MSG_VERSION, "output frame version %u", msg_get_u32(p + 4));
    uint32_t len = msg_get_u32(p + 12);
    FUZZ_CHECK(len <= n - MSG_HEADER_LEN, "output frame length %u, %zu bytes left", len,
               n - MSG_HEADER_LEN);
    return MSG_HEADER_LEN + len;
}

/* An error frame's payload: u32 code, then short text. */
static void check_error_payload(const uint8_t *f, uint32_t want_code)
{
    uint32_t len = msg_get_u32(f + 12);
    FUZZ_CHECK(len >= 4 && len <= 256, "error payload of %u bytes", len);
    uint32_t code = msg_get_u32(f + 16);
    FUZZ_CHECK(code >= 1 && code <= MSG_ERR_MAX, "error code %u", code);
    if (want_code)
        FUZZ_CHECK(code == want_code, "error code %u, want %u", code, want_code);
}

/* STATS text: "name value\n" lines. */
static void check_stats_text(const uint8_t *p, size_t n)
{
    FUZZ_CHECK(n > 0 && n <= 16384 && p[n - 1] == '\n', "STATS text of %zu bytes", n);
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\n')
            continue;
        const uint8_t *sp = memchr(p + start, ' ', i - start);
        FUZZ_CHECK(sp && sp > p + start && sp + 1 < p + i, "STATS line without 'name value'");
        start = i + 1;
    }
}

/* Whether token p matches an entry's token part; *who, *wlen: its identity. */
static bool token_ok(const struct config *cfg, const uint8_t *p, size_t n, const char **who,
                     size_t *wlen)
{
    for (int i = 0; i < cfg->ntokens; i++) {
        const char *e = cfg->tokens[i], *colon = strchr(e, ':'), *t = colon ? colon + 1 : e;
        if (strlen(t) == n && memcmp(t, p, n) == 0) {
            *who = colon ? e : NULL;
            *wlen = colon ? (size_t)(colon - e) : 0;
            return true;
        }
    }
    return false;
}

/* MESSAGEs and DELIVERs skipped for the connection as a slow consumer. */
static uint64_t delivers_dropped(const struct pipeline *pl)
{
    const struct msg_conn *m = proto_msg_peek(pl);
    return m && m->ident ? m->ident->dropped : 0;
}

static int topic_find(const struct run *r, const uint8_t *t, size_t n)
{
    for (uint32_t i = 0; i < r->nsubs; i++)
        if (r->subs[i].len == n && memcmp(r->subs[i].name, t, n) == 0)
            return (int)i;
    return -1;
}

/* ---- deliveries: with one reactor a PUBLISH or DIRECT visits the
 * reactor's table inside its handler (fanout_run_alone) ---- */

/* Counts what the handler just run delivered against the model. Every
 * PUBLISH and DIRECT handled since the last check visited the table once,
 * with the topic set and identity the model has now: each visit either
 * queued its frame to the one connection (a defer) or skipped it as a slow
 * consumer, or found the connection not holding the key. */
static void check_deliveries(struct run *r, uint64_t defers, uint64_t mdropped, uint64_t ddropped)
{
    uint64_t want = 0;
    for (; r->visited < r->npubs; r->visited++) {
        const uint8_t *p = r->stream + r->pubs[r->visited];
        want += topic_find(r, p + 1, p[0]) >= 0;
    }
    for (; r->dvisited < r->ndirects; r->dvisited++) {
        const uint8_t *p = r->stream + r->directs[r->dvisited];
        want += r->ident_len == p[0] && memcmp(r->ident, p + 1, p[0]) == 0;
    }
    /* The identity's record is made anew by each AUTH, so its skips are
     * summed handler by handler. */
    uint64_t dskipped = delivers_dropped(r->pl) - ddropped;
    r->deliver_skips += dskipped;
    uint64_t skipped = msgs_dropped(r->pl) - mdropped + dskipped;
    FUZZ_CHECK(r->host.defers - defers + skipped == want,
               "the visits queued %llu MESSAGEs/DELIVERs and skipped %llu, the model wants %llu",
               (unsigned long long)(r->host.defers - defers), (unsigned long long)skipped,
               (unsigned long long)want);
}

/* One reactor turn: whatever the mailbox holds runs. */
static unsigned reactor_turn(struct fuzz_host *h) { return fuzz_host_turn(h); }

/* In the chunked run the mailbox turn sometimes waits a read or two, as
 * when a read event comes first; in the one-piece run it comes every turn. */
static void maybe_mailbox_turn(struct fuzz_conn *fc)
{
    if (fuzz_mailbox_due(&fuzz_host_of(fc->pl)->box, &cur->rng))
        reactor_turn(fuzz_host_of(fc->pl));
}

/* ---- wrappers around the real proto_msg -------------------------------- */

static long split_w(struct pipeline *pl, const uint8_t *p, size_t n)
{
    struct run *r = cur;
    FUZZ_CHECK(!r->closed, "split called after the connection-level error");
    FUZZ_CHECK(n <= r->stream_len - r->handled_off, "split sees %zu bytes, %zu unhandled", n,
               r->stream_len - r->handled_off);
    size_t cmp = n < 16 ? n : 16;
    FUZZ_CHECK(memcmp(p, r->stream + r->handled_off, cmp) == 0,
               "split sees bytes that are not the stream's at offset %zu", r->handled_off);
    long got = proto_msg.split(pl, p, n);
    long want = ref_split(p, n, effective_max(r));
    FUZZ_CHECK(got == want, "split of %zu bytes at offset %zu: got %ld, want %ld (max %llu)", n,
               r->handled_off, got, want, (unsigned long long)effective_max(r));
    FUZZ_CHECK(got <= (long)n, "split returned %ld > n %zu", got, n);
    if (got > 0) {
        uint32_t len = msg_get_u32(p + 12);
        FUZZ_CHECK(msg_get_u32(p) == MSG_MAGIC && msg_get_u32(p + 4) == MSG_VERSION, "bad header");
        FUZZ_CHECK(len <= effective_max(r) && len <= r->cfg->max_frame, "frame of %u > max", len);
        FUZZ_CHECK((long)MSG_HEADER_LEN + (long)len == got, "16 + %u != %ld", len, got);
    }
    r->last_split = got;
    return got;
}

static void expect(struct run *r, enum exp_kind kind, uint32_t cmd, uint32_t code, size_t off,
                   size_t len)
{
    r->exps[r->nexps++] = (struct exp){kind, cmd, code, off, len};
}

static void handle_w(struct pipeline *pl, const uint8_t *frame, size_t len)
{
    struct run *r = cur;
    const struct config *cfg = r->cfg;
    FUZZ_CHECK(!r->closed, "frame handled after the connection-level error");
    FUZZ_CHECK(r->last_split == (long)len, "handle(%zu) after split returned %ld", len,
               r->last_split);
    FUZZ_CHECK(len <= r->stream_len - r->handled_off &&
                   memcmp(frame, r->stream + r->handled_off, len) == 0,
               "the frame handled is not the stream's next %zu bytes (offset %zu)", len,
               r->handled_off);
    size_t poff = r->handled_off + MSG_HEADER_LEN; /* the payload, in the stream */
    r->handled_off += len;
    r->last_split = 0;

    uint32_t cmd = msg_get_u32(frame + 8);
    const uint8_t *payload = frame + MSG_HEADER_LEN;
    size_t plen = len - MSG_HEADER_LEN;
    const struct cmd_def *def = (cmd & MSG_FLAG_REPLY) ? NULL : cmdtab_find(cmd);
    bool needs_auth = cmd == MSG_CMD_ECHO || cmd == MSG_CMD_STATS || cmd == MSG_CMD_DELAY ||
                      cmd == CMD_DIRECT ||
                      cmd == CMD_SUBSCRIBE || cmd == CMD_UNSUBSCRIBE || cmd == CMD_PUBLISH;
    if (def)
        FUZZ_CHECK(def->number == cmd, "cmdtab_find(%u) gave %u", cmd, def->number);

    /* The model's answer, decided before the handler changes any state. */
    if (cmd & MSG_FLAG_REPLY) {
        r->client_replies++;
        if (cmd != (MSG_FLAG_REPLY | MSG_CMD_PING))
            r->dropped++;
    } else {
        r->requests++;
        if (pl->env->draining && cmd != MSG_CMD_PING) {
            expect(r, EXP_ERROR, cmd, MSG_ERR_SHUTTING_DOWN, 0, 0);
        } else if (!def) {
            FUZZ_CHECK(cmd == 0 || (cmd > MSG_CMD_DELAY && cmd != CMD_DIRECT),
                       "command %u has no handler", cmd);
            expect(r, EXP_ERROR, cmd, MSG_ERR_UNKNOWN_COMMAND, 0, 0);
        } else if (needs_auth && !r->authed && cfg->ntokens > 0) {
            expect(r, EXP_ERROR, cmd, MSG_ERR_NOT_AUTHENTICATED, 0, 0);
        } else if (cmd == MSG_CMD_PING) {
            if (plen > PING_MAX)
                expect(r, EXP_ERROR, cmd, MSG_ERR_BAD_PAYLOAD, 0, 0);
            else
                expect(r, EXP_PAYLOAD, cmd, 0, poff, plen);
        } else if (cmd == MSG_CMD_ECHO) {
            expect(r, EXP_PAYLOAD, cmd, 0, poff, plen);
        } else if (cmd == MSG_CMD_AUTH) {
            const char *who = NULL;
            size_t wlen = 0;
            if (cfg->ntokens == 0 && (plen == 0 || plen > 255)) {
                expect(r, EXP_ERROR, cmd, MSG_ERR_BAD_PAYLOAD, 0, 0);
            } else if (cfg->ntokens == 0 || token_ok(cfg, payload, plen, &who, &wlen)) {
                expect(r, EXP_PAYLOAD, cmd, 0, poff, 0);
                r->authed = true;
                if (cfg->ntokens == 0) {
                    who = (const char *)payload;
                    wlen = plen;
                }
                r->ident_len = wlen;
                if (wlen)
                    memcpy(r->ident, who, wlen);
            } else if (++r->auth_failures >= 3) {
                expect(r, EXP_CONN_ERROR, cmd, MSG_ERR_AUTH_FAILED, 0, 0);
                r->closed = true;
            } else {
                expect(r, EXP_ERROR, cmd, MSG_ERR_AUTH_FAILED, 0, 0);
            }
        } else if (cmd == MSG_CMD_STATS) {
            expect(r, EXP_STATS, cmd, 0, 0, 0);
        } else if (cmd == MSG_CMD_DELAY) { /* switched off */
            expect(r, EXP_ERROR, cmd, MSG_ERR_DISABLED, 0, 0);
        } else if (cmd == CMD_SUBSCRIBE || cmd == CMD_UNSUBSCRIBE) {
            int at = plen >= 1 && plen <= TOPIC_MAX ? topic_find(r, payload, plen) : -1;
            if (plen < 1 || plen > TOPIC_MAX) {
                expect(r, EXP_ERROR, cmd, MSG_ERR_BAD_PAYLOAD, 0, 0);
            } else if (cmd == CMD_UNSUBSCRIBE) {
                if (at >= 0)
                    r->subs[at] = r->subs[--r->nsubs];
                expect(r, EXP_PAYLOAD, cmd, 0, poff, 0);
            } else if (at < 0 && r->nsubs >= cfg->max_subscriptions) {
                expect(r, EXP_ERROR, cmd, MSG_ERR_LIMIT_EXCEEDED, 0, 0);
            } else {
                if (at < 0) {
                    r->subs[r->nsubs].len = plen;
                    memcpy(r->subs[r->nsubs++].name, payload, plen);
                }
                expect(r, EXP_PAYLOAD, cmd, 0, poff, 0);
            }
        } else if (cmd == CMD_DIRECT) {
            if (r->ident_len == 0) {
                expect(r, EXP_ERROR, cmd, MSG_ERR_NOT_AUTHENTICATED, 0, 0);
            } else if (plen < 1 || payload[0] == 0 || (size_t)payload[0] + 1 > plen) {
                expect(r, EXP_ERROR, cmd, MSG_ERR_BAD_PAYLOAD, 0, 0);
            } else {
                expect(r, EXP_DIRECT, cmd, 0, 0, 0);
                r->directs[r->ndirects++] = poff;
            }
        } else if (cmd == CMD_PUBLISH) {
            if (plen < 2 || payload[0] == 0 || (size_t)payload[0] + 1 > plen) {
                expect(r, EXP_ERROR, cmd, MSG_ERR_BAD_PAYLOAD, 0, 0);
            } else {
                expect(r, EXP_PUBLISH, cmd, 0, 0, 0);
                r->pubs[r->npubs++] = poff;
                r->publishes++;
            }
        } else {
            expect(r, EXP_ANY, cmd, 0, 0, 0);
        }
    }

    uint64_t defers = r->host.defers, mdropped = msgs_dropped(pl), ddropped = delivers_dropped(pl);
    proto_msg.handle(pl, frame, len);
    check_deliveries(r, defers, mdropped, ddropped);

    FUZZ_CHECK(proto_msg_authed(pl) == r->authed, "authed %d, model %d", proto_msg_authed(pl),
               r->authed);
    FUZZ_CHECK(!!(pl->flags & PIPELINE_CLOSE) == r->closed, "close flag %d, model %d",
               !!(pl->flags & PIPELINE_CLOSE), r->closed);
    FUZZ_CHECK(!(pl->flags & PIPELINE_FAILED), "pipeline failed");
}

static void violation_w(struct pipeline *pl, long code)
{
    struct run *r = cur;
    FUZZ_CHECK(!r->closed && !r->violated, "a second violation or one after the close");
    FUZZ_CHECK(code == r->last_split, "violation(%ld) after split returned %ld", code, r->last_split);
    FUZZ_CHECK(code == -MSG_ERR_BAD_MAGIC || code == -MSG_ERR_BAD_VERSION ||
                   code == -MSG_ERR_TOO_LARGE, "violation code %ld", code);
    proto_msg.violation(pl, code);
    FUZZ_CHECK(pl->flags & PIPELINE_CLOSE, "a violation did not close");
    r->closed = r->violated = true;
    r->vcode = code;
}

/* conn.c's conn_close: the real free leaves the connection's topics. */
static void free_w(struct pipeline *pl)
{
    proto_msg.free(pl);
    FUZZ_CHECK(pl->state == NULL, "msg state left after the protocol's free");
}

static const struct proto checked_msg = {
    .name = "msg(checked)",
    .counted = true,
    .split = split_w,
    .handle = handle_w,
    .violation = violation_w,
    .free = free_w,
};

/* ---- the whole output ---------------------------------------------------- */

/* Checks reply frame f (fl bytes) against expectation e. */
static void check_reply(const struct run *r, const struct exp *e, const uint8_t *f, size_t k)
{
    uint32_t word = msg_get_u32(f + 8), flen = msg_get_u32(f + 12);
    uint32_t err_word = MSG_FLAG_REPLY | MSG_FLAG_ERROR | (e->cmd & MSG_CMD_MASK);
    switch (e->kind) {
    case EXP_PAYLOAD:
        FUZZ_CHECK(word == (MSG_FLAG_REPLY | e->cmd), "reply %zu: word %08x to %08x", k, word, e->cmd);
        FUZZ_CHECK(flen == e->len && (e->len == 0 || memcmp(f + 16, r->stream + e->off, e->len) == 0),
                   "reply %zu to %08x: %u payload bytes, want %zu", k, e->cmd, flen, e->len);
        break;
    case EXP_STATS:
        FUZZ_CHECK(word == (MSG_FLAG_REPLY | e->cmd), "reply %zu: word %08x to STATS", k, word);
        check_stats_text(f + 16, flen);
        break;
    case EXP_PUBLISH:
        FUZZ_CHECK(word == (MSG_FLAG_REPLY | e->cmd), "reply %zu: word %08x to PUBLISH", k, word);
        FUZZ_CHECK(flen == 4 && msg_get_u32(f + 16) <= 1, "PUBLISH reply %zu: %u bytes, count %u",
                   k, flen, flen == 4 ? msg_get_u32(f + 16) : 0);
        break;
    case EXP_DIRECT:
        FUZZ_CHECK(word == (MSG_FLAG_REPLY | e->cmd), "reply %zu: word %08x to DIRECT", k, word);
        FUZZ_CHECK(flen == 8 && msg_get_u32(f + 16) <= 1 && msg_get_u32(f + 20) == 0,
                   "DIRECT reply %zu: %u bytes", k, flen);
        break;
    case EXP_ERROR:
        FUZZ_CHECK(word == err_word, "reply %zu: error word %08x to %08x", k, word, e->cmd);
        check_error_payload(f, e->code);
        break;
    case EXP_CONN_ERROR:
        FUZZ_CHECK(word == MSG_CONN_ERROR, "reply %zu: connection error word %08x", k, word);
        check_error_payload(f, e->code);
        break;
    case EXP_ANY:
        FUZZ_CHECK(word == (MSG_FLAG_REPLY | e->cmd) || word == err_word,
                   "reply %zu: word %08x to %08x", k, word, e->cmd);
        if (word == err_word)
            check_error_payload(f, 0);
        break;
    }
}

/* FUZZ_DUMP=1 in the environment: each run's output frames on stderr. */
static void dump_output(const struct buffer *wire)
{
    static int on = -1;
    if (on < 0)
        on = getenv("FUZZ_DUMP") != NULL;
    if (!on)
        return;
    const uint8_t *w = fuzz_bytes(wire);
    size_t wn = buffer_readable(wire), off = 0;
    fprintf(stderr, "-- output, %zu bytes\n", wn);
    while (off + MSG_HEADER_LEN <= wn) {
        uint32_t len = msg_get_u32(w + off + 12);
        fprintf(stderr, "   %08x len %u", msg_get_u32(w + off + 8), len);
        if ((msg_get_u32(w + off + 8) & MSG_FLAG_ERROR) && len >= 4 && off + 20 <= wn)
            fprintf(stderr, " code %u", msg_get_u32(w + off + 16));
        fputc('\n', stderr);
        off += MSG_HEADER_LEN + len;
    }
}

static void check_output(const struct run *r, const struct buffer *wire, const struct stats *st)
{
    dump_output(wire);
    const uint8_t *w = fuzz_bytes(wire);
    size_t wn = buffer_readable(wire), off = 0, k = 0;
    uint64_t frames = 0, pushes = 0, counts = 0, delivers = 0, dcounts = 0;
    uint64_t errors[MSG_ERR_MAX + 1] = {0};
    bool conn_error_seen = false;
    while (off < wn) {
        FUZZ_CHECK(!conn_error_seen, "output goes on after the connection-level error");
        const uint8_t *f = w + off;
        size_t fl = frame_at(f, wn - off);
        uint32_t word = msg_get_u32(f + 8);
        frames++;
        off += fl;
        if (!(word & MSG_FLAG_REPLY)) {
            /* A push. Here only MESSAGEs and DELIVERs (to itself): no
             * heartbeat, no drain notice. */
            if (word == CMD_DELIVER) {
                FUZZ_CHECK(fl >= MSG_HEADER_LEN + 2 && f[16] >= 1 &&
                               f[16] + 1u <= fl - MSG_HEADER_LEN,
                           "DELIVER payload (the sender has an identity)");
                delivers++;
                continue;
            }
            FUZZ_CHECK(word == CMD_MESSAGE, "push %08x", word);
            FUZZ_CHECK(fl >= MSG_HEADER_LEN + 2 && f[16] >= 1 && f[16] + 1u <= fl - MSG_HEADER_LEN,
                       "MESSAGE payload");
            pushes++;
            continue;
        }
        if (word & MSG_FLAG_ERROR) {
            FUZZ_CHECK(fl >= MSG_HEADER_LEN + 4, "error frame of %zu bytes", fl);
            uint32_t code = msg_get_u32(f + 16);
            if (code <= MSG_ERR_MAX)
                errors[code]++;
        }
        if (k < r->nexps) {
            check_reply(r, &r->exps[k], f, k);
            if (r->exps[k].kind == EXP_PUBLISH)
                counts += msg_get_u32(f + 16);
            if (r->exps[k].kind == EXP_DIRECT)
                dcounts += msg_get_u32(f + 16);
            conn_error_seen = r->exps[k].kind == EXP_CONN_ERROR;
            k++;
        } else {
            FUZZ_CHECK(r->violated && word == MSG_CONN_ERROR,
                       "frame %08x after the reply to every request", word);
            check_error_payload(f, (uint32_t)-r->vcode);
            conn_error_seen = true;
        }
    }
    FUZZ_CHECK(k == r->nexps, "%zu replies for %zu requests", k, r->nexps);
    FUZZ_CHECK(conn_error_seen == r->closed, "closed %d, connection-level error sent %d", r->closed,
               conn_error_seen);
    /* One reactor: every MESSAGE is this connection's, queued by a visit
     * (which defers the connection) and counted in its PUBLISH's reply. */
    FUZZ_CHECK(pushes + delivers == r->host.defers, "%llu MESSAGEs and %llu DELIVERs sent, %llu queued",
               (unsigned long long)pushes, (unsigned long long)delivers,
               (unsigned long long)r->host.defers);
    FUZZ_CHECK(dcounts == delivers, "the DIRECT replies count %llu deliveries, %llu DELIVERs sent",
               (unsigned long long)dcounts, (unsigned long long)delivers);
    FUZZ_CHECK(counts == pushes, "the PUBLISH replies count %llu deliveries, %llu MESSAGEs sent",
               (unsigned long long)counts, (unsigned long long)pushes);
    /* One reactor and no cluster: PUBLISH and DIRECT are answered in their
     * handler, never late. */
    FUZZ_CHECK(r->host.kicks == 0, "%llu late replies for %llu PUBLISH and %zu DIRECT requests",
               (unsigned long long)r->host.kicks, (unsigned long long)r->publishes, r->ndirects);
    FUZZ_CHECK(stats_get(st, STATS_DIRECTS) == r->ndirects &&
                   stats_get(st, STATS_DELIVERS) == delivers &&
                   stats_get(st, STATS_DELIVERS_DROPPED) == r->deliver_skips,
               "directs %llu (model %zu), delivers %llu (sent %llu), dropped %llu",
               (unsigned long long)stats_get(st, STATS_DIRECTS), r->ndirects,
               (unsigned long long)stats_get(st, STATS_DELIVERS), (unsigned long long)delivers,
               (unsigned long long)stats_get(st, STATS_DELIVERS_DROPPED));

    FUZZ_CHECK(stats_get(st, STATS_FRAMES_OUT) == frames, "frames_out %llu, sent %llu",
               (unsigned long long)stats_get(st, STATS_FRAMES_OUT), (unsigned long long)frames);
    FUZZ_CHECK(stats_get(st, STATS_REPLIES_DROPPED) == r->dropped, "replies_dropped %llu, want %llu",
               (unsigned long long)stats_get(st, STATS_REPLIES_DROPPED),
               (unsigned long long)r->dropped);
    FUZZ_CHECK(stats_get(st, STATS_CLOSED_VIOLATION) == (r->violated ? 1u : 0u), "violations");
    for (uint32_t c = 1; c <= MSG_ERR_MAX; c++)
        FUZZ_CHECK(stats_get(st, (enum stats_id)(STATS_ERRORS + c)) == errors[c],
                   "errors.%s %llu, sent %llu", msg_error_name(c),
                   (unsigned long long)stats_get(st, (enum stats_id)(STATS_ERRORS + c)),
                   (unsigned long long)errors[c]);
    FUZZ_CHECK(stats_get(st, STATS_SUBSCRIPTIONS) == r->nsubs, "subscriptions %llu, model %u",
               (unsigned long long)stats_get(st, STATS_SUBSCRIPTIONS), r->nsubs);
    FUZZ_CHECK(stats_get(st, STATS_PUBLISHED) == r->publishes, "published %llu, model %llu",
               (unsigned long long)stats_get(st, STATS_PUBLISHED),
               (unsigned long long)r->publishes);
    FUZZ_CHECK(stats_get(st, STATS_MESSAGES_DELIVERED) == pushes &&
                   stats_get(st, STATS_MESSAGES_DROPPED) == msgs_dropped(r->pl),
               "messages delivered %llu (sent %llu), dropped %llu (skipped %llu)",
               (unsigned long long)stats_get(st, STATS_MESSAGES_DELIVERED),
               (unsigned long long)pushes, (unsigned long long)stats_get(st, STATS_MESSAGES_DROPPED),
               (unsigned long long)msgs_dropped(r->pl));
}

/* ---- one run ------------------------------------------------------------ */

struct result {
    struct buffer wire;
    size_t handled;
    bool closed;
};

/* Drains the reactor's mailbox: every fan-out comes back, and the input it
 * held back (a turn that stopped on back-pressure) gets its turns. */
static void drain(struct fuzz_conn *fc)
{
    struct fuzz_host *h = fuzz_host_of(fc->pl);
    do {
        while (reactor_turn(h) > 0)
            ;
        fuzz_conn_settle(fc);
    } while (h->box.head);
    fuzz_conn_flush(fc);
}

/* hangup: the peer resets the connection once the stream is sent, before
 * the mailbox turns: conn.c's conn_close (the protocol's free, the pipeline
 * freed), then up to two mailbox turns whose late replies find no
 * connection, then the reactor stops and drops what is left. Only the
 * bookkeeping is checked then: not the output, which ends where it was cut. */
static void run_stream(const struct config *cfg, bool draining, unsigned per_turn,
                       const uint8_t *s, size_t n, size_t max_chunk, uint32_t seed, bool hangup,
                       struct result *res)
{
    struct stats_registry reg;
    FUZZ_CHECK(stats_registry_init(&reg, 1) == 0, "out of memory");
    struct buffer_pool bufs;
    buffer_pool_init(&bufs, 1u << 20, 256u << 10);
    struct run r = {.cfg = cfg, .stream = s, .stream_len = n};
    struct mailbox *boxes[1] = {&r.host.box};
    struct pipeline_env env = {
        .cfg = cfg, .stats = &reg.reactors[0], .all = &reg, .reactor = 0,
        .pool = NULL, .draining = draining, .pubsub = &r.ps, .identities = &r.ids, .nreactors = 1, .boxes = boxes,
        .bufs = &bufs, .ops = fuzz_host_ops(), .host = &r.host,
    };
    struct pipeline pl = {.proto = &checked_msg, .env = &env, .conn_id = 1};
    struct fuzz_conn fc = {.pl = &pl, .frames_per_turn = per_turn, .high = cfg->out_high_water};
    struct fuzz_rng rng = {seed};
    fuzz_host_init(&r.host, &fc, &env);
    r.pl = &pl;
    r.exps = malloc(sizeof *r.exps * (n / MSG_HEADER_LEN + 1));
    r.pubs = malloc(sizeof *r.pubs * (n / MSG_HEADER_LEN + 1));
    r.directs = malloc(sizeof *r.directs * (n / MSG_HEADER_LEN + 1));
    r.subs = malloc(sizeof *r.subs * cfg->max_subscriptions);
    FUZZ_CHECK(r.exps && r.pubs && r.directs && r.subs, "out of memory");
    pubsub_init(&r.ps);
    pubsub_init(&r.ids);
    r.rng.s = max_chunk ? seed ^ 0x5A5A5A5Au : 0;
    fc.poll = maybe_mailbox_turn;
    cur = &r;

    fuzz_conn_feed(&fc, s, n, max_chunk, &rng);
    if (hangup) {
        fuzz_host_close(&r.host);
        r.nsubs = 0; /* the closing connection left its topics */
        r.ident_len = 0; /* and its identity */
        pipeline_free(&pl);
        for (uint32_t turns = fuzz_rng_next(&rng) % 3; turns > 0; turns--)
            reactor_turn(&r.host);
        FUZZ_CHECK(r.host.kicks == 0, "%llu late replies for %llu PUBLISHes and %zu DIRECTs",
                   (unsigned long long)r.host.kicks, (unsigned long long)r.publishes, r.ndirects);
    } else {
        drain(&fc);
    }

    /* Nothing processable left behind. */
    if (!r.closed && !hangup) {
        long left = ref_split(s + r.handled_off, n - r.handled_off, effective_max(&r));
        FUZZ_CHECK(left == 0, "stream left at offset %zu of %zu with split %ld unprocessed",
                   r.handled_off, n, left);
    }
    FUZZ_CHECK(fc.bytes_used <= fc.bytes_fed && fc.bytes_fed <= n, "used %llu, fed %llu, n %zu",
               (unsigned long long)fc.bytes_used, (unsigned long long)fc.bytes_fed, n);
    if (!r.violated)
        FUZZ_CHECK(fc.bytes_used == r.handled_off, "consumed %llu, handled %zu",
                   (unsigned long long)fc.bytes_used, r.handled_off);
    FUZZ_CHECK(fc.frames_in == r.requests + r.client_replies, "frames_in");
    FUZZ_CHECK(r.nexps == r.requests, "requests");

    if (!hangup) {
        FUZZ_CHECK(pl.slots_head == NULL && pl.jobs_pending == 0 && pl.held_bytes == 0,
                   "reply slots left after every fan-out came back");
        FUZZ_CHECK(!!(pl.flags & PIPELINE_CLOSE) == r.closed, "close flag disagrees");
        check_output(&r, &fc.wire, env.stats);
        fuzz_host_close(&r.host); /* the connection closes at last */
        pipeline_free(&pl);
    }
    FUZZ_CHECK(stats_get(env.stats, STATS_SUBSCRIPTIONS) == 0,
               "subscriptions %llu after the connection closed",
               (unsigned long long)stats_get(env.stats, STATS_SUBSCRIPTIONS));
    FUZZ_CHECK(r.ps.ntopics == 0, "%u topics left after the last subscriber went", r.ps.ntopics);
    FUZZ_CHECK(r.ids.ntopics == 0, "%u identities left after the connection went", r.ids.ntopics);
    fuzz_host_free(&r.host); /* drops what the mailbox still holds */

    if (res) {
        res->wire = fc.wire;
        fc.wire = (struct buffer)BUFFER_INIT;
        res->handled = r.handled_off;
        res->closed = r.closed;
    }
    fuzz_conn_free(&fc);
    pubsub_free(&r.ps);
    pubsub_free(&r.ids);
    buffer_pool_free(&bufs);
    stats_registry_free(&reg);
    free(r.exps);
    free(r.pubs);
    free(r.directs);
    free(r.subs);
    cur = NULL;
}

/* The reply frames (pushes aside) are the same, byte for byte, except the
 * payloads of STATS (uptime), PUBLISH and DIRECT (fan-out timing: whether
 * the visit came before or after a later SUBSCRIBE or AUTH) replies. */
static void compare_replies(const struct buffer *a, const struct buffer *b)
{
    const uint8_t *p = fuzz_bytes(a), *q = fuzz_bytes(b);
    size_t pn = buffer_readable(a), qn = buffer_readable(b), i = 0, j = 0, k = 0;
    for (;;) {
        while (i < pn && !(msg_get_u32(p + i + 8) & MSG_FLAG_REPLY))
            i += frame_at(p + i, pn - i);
        while (j < qn && !(msg_get_u32(q + j + 8) & MSG_FLAG_REPLY))
            j += frame_at(q + j, qn - j);
        if (i >= pn || j >= qn)
            break;
        size_t fa = frame_at(p + i, pn - i), fb = frame_at(q + j, qn - j);
        uint32_t wa = msg_get_u32(p + i + 8), wb = msg_get_u32(q + j + 8);
        FUZZ_CHECK(wa == wb, "chunked and one-piece replies differ at reply %zu: %08x vs %08x", k,
                   wa, wb);
        if (wa != (MSG_FLAG_REPLY | MSG_CMD_STATS) && wa != (MSG_FLAG_REPLY | CMD_PUBLISH) &&
            wa != (MSG_FLAG_REPLY | CMD_DIRECT))
            FUZZ_CHECK(fa == fb && memcmp(p + i, q + j, fa) == 0,
                       "chunked and one-piece replies differ at reply %zu (%08x)", k, wa);
        i += fa, j += fb, k++;
    }
    FUZZ_CHECK(i >= pn && j >= qn, "chunked and one-piece runs sent different numbers of replies");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool registered;
    if (!registered) {
        char why[256];
        FUZZ_CHECK(mod_builtin_add(why, sizeof why) == 0, "%s", why);
        registered = true;
    }
    if (size < PARAM_BYTES)
        return 0;
    struct config cfg;
    config_defaults(&cfg);
    cfg.max_frame = max_frames[data[0] & 15];
    if (data[0] & 0x10) {
        cfg.tokens = tokens;
        cfg.ntokens = 2;
    }
    bool draining = data[0] & 0x20;
    if (data[0] & 0x40) {
        cfg.out_high_water = 64;
        cfg.out_low_water = 32;
        cfg.out_hard_limit = 64 + cfg.max_frame + 16;
    }
    cfg.delay_command = false; /* no worker jobs: pool stays NULL */
    cfg.max_subscriptions = max_subs[data[1] >> 2 & 3];
    unsigned per_turn = data[0] & 0x80 ? 3 : FUZZ_CONN_FRAMES_PER_TURN;
    size_t max_chunk = max_chunks[data[1] & 3];
    uint32_t seed = (uint32_t)data[2] << 8 | data[3] | 0x10000u;
    const uint8_t *s = data + PARAM_BYTES;
    size_t n = size - PARAM_BYTES;

    struct result chunked, whole;
    run_stream(&cfg, draining, per_turn, s, n, max_chunk, seed, false, &chunked);
    run_stream(&cfg, draining, FUZZ_CONN_FRAMES_PER_TURN, s, n, 0, seed, false, &whole);
    if (data[1] & 0x10)
        run_stream(&cfg, draining, per_turn, s, n, max_chunk, seed, true, NULL);
    FUZZ_CHECK(chunked.handled == whole.handled && chunked.closed == whole.closed,
               "chunked run handled %zu bytes (closed %d), one-piece %zu (closed %d)",
               chunked.handled, chunked.closed, whole.handled, whole.closed);
    compare_replies(&chunked.wire, &whole.wire);
    buffer_free(&chunked.wire);
    buffer_free(&whole.wire);
    return 0;
}
