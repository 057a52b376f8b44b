/* fuzz_msg_stream: the msg protocol's splitter, decoder and dispatch as a
 * connection drives them: the real proto_msg (split/handle/violation) and
 * command table on a struct pipeline, fed through the conn.c emulator of
 * fuzz_common.h, with one reactor's mailbox turn for PUBLISH fan-outs.
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
 *   [2..3]        seed of the read sizes and of when the mailbox turns
 * delay_command stays off, so no worker job is ever created (pool = NULL).
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
 *  - the counters (frames_in/out, replies_dropped, errors.*, violations,
 *    subscriptions) agree with the output;
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
#include "commands.h"
#include "config.h"
#include "msg.h"
#include "pipeline.h"
#include "proto_msg.h"
#include "stats.h"

#if __has_include("fanout.h") && __has_include("pubsub.h")
#define FUZZ_PUBSUB 1
#include <stdatomic.h>

#include "fanout.h"
#include "mailbox.h"
#include "pubsub.h"
#else
#define FUZZ_PUBSUB 0
#endif

#include "fuzz_common.h"

#define PARAM_BYTES 4
#define PING_MAX 1024u
#define PREAUTH_MAX (16u * 1024u)
#define TOPIC_MAX 255u
#define CMD_SUBSCRIBE 16u
#define CMD_UNSUBSCRIBE 17u
#define CMD_PUBLISH 18u
#define CMD_MESSAGE 19u

static const uint64_t max_frames[16] = {
    64, 65, 100, 127, 255, 256, 1000, 1024,
    1025, 4096, 16383, 16384, 16385, 65536, 1u << 20, 256u << 20,
};
static const size_t max_chunks[4] = {1, 7, 64, 4096};
static const uint32_t max_subs[4] = {64, 1, 2, 3};
static char tok1[] = "s3cret", tok2[] = "tok";
static char *tokens[] = {tok1, tok2};

/* The reply the model expects for one request. */
enum exp_kind {
    EXP_PAYLOAD,    /* REPLY | cmd with the payload at stream[off..off+len) */
    EXP_STATS,      /* REPLY | STATS, "name value" lines */
    EXP_PUBLISH,    /* REPLY | PUBLISH, u32 count */
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
    bool closed;             /* connection-level error queued */
    bool violated;
    long vcode;
    long last_split;
    uint64_t requests, client_replies, dropped;
    struct exp *exps;        /* one per request, in order */
    size_t nexps;
    struct topic *subs;      /* the model's topic set */
    uint32_t nsubs;
    uint64_t publishes, delivered;
    struct fuzz_rng rng;     /* when the mailbox turns */
#if FUZZ_PUBSUB
    struct pubsub ps;
#endif
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

static bool token_ok(const struct config *cfg, const uint8_t *p, size_t n)
{
    if (cfg->ntokens == 0)
        return true;
    for (int i = 0; i < cfg->ntokens; i++)
        if (strlen(cfg->tokens[i]) == n && memcmp(cfg->tokens[i], p, n) == 0)
            return true;
    return false;
}

static int topic_find(const struct run *r, const uint8_t *t, size_t n)
{
    for (uint32_t i = 0; i < r->nsubs; i++)
        if (r->subs[i].len == n && memcmp(r->subs[i].name, t, n) == 0)
            return (int)i;
    return -1;
}

/* ---- the reactor's mailbox turn (reactor.c's fanout_visit and fanout_done,
 * for one reactor and this one connection, around the same pubsub_deliver
 * and commands_publish_reply) ---- */

#if FUZZ_PUBSUB
static struct mailbox box;
static struct mailbox *boxes[1];

/* The real delivery (pubsub_deliver, the slow-consumer policy included);
 * this only checks it is this connection and counts. */
static void queued_to(struct pipeline *pl, void *arg)
{
    struct run *r = arg;
    FUZZ_CHECK(pl == r->pl, "a MESSAGE for a pipeline that is not the connection's");
    r->delivered++;
}

static void mailbox_turn(struct fuzz_conn *fc)
{
    struct run *r = cur;
    struct pipeline *pl = fc->pl;
    struct mailbox_item *it;
    while ((it = mailbox_take(&box)) != NULL) {
        while (it) {
            struct mailbox_item *next = it->next;
            struct fanout *f = ((struct fanout_item *)it)->f;
            FUZZ_CHECK(it->kind == FANOUT_MSG_VISIT || it->kind == FANOUT_MSG_DONE,
                       "mailbox item of kind %d", it->kind);
            FUZZ_CHECK(f->kind == FANOUT_PUBLISH && f->nreactors == 1 && f->origin == 0 &&
                           f->conn_id == pl->conn_id, "a fan-out that is not this PUBLISH");
            if (it->kind == FANOUT_MSG_VISIT) {
                const uint8_t *topic = f->data + MSG_HEADER_LEN + 1;
                size_t tlen = f->data[MSG_HEADER_LEN];
                FUZZ_CHECK(f->len >= MSG_HEADER_LEN + 1 + tlen && tlen >= 1, "PUBLISH fan-out data");
                FUZZ_CHECK(msg_get_u32(f->data + 8) == CMD_MESSAGE &&
                               msg_get_u32(f->data + 12) == f->len - MSG_HEADER_LEN,
                           "the MESSAGE frame of a fan-out");
                uint32_t skipped;
                uint32_t n = pubsub_deliver(&r->ps, f->data, f->len, pl->env->cfg->out_high_water,
                                            queued_to, r, &skipped);
                FUZZ_CHECK(n + skipped == (topic_find(r, topic, tlen) >= 0 ? 1u : 0u),
                           "pubsub_deliver found %u subscribers, the model %d", n + skipped,
                           topic_find(r, topic, tlen) >= 0);
                atomic_fetch_add_explicit(&f->count, n, memory_order_relaxed);
                fanout_visited(f);
                fanout_release(f);
            } else {
                struct buffer reply = BUFFER_INIT;
                FUZZ_CHECK(commands_publish_reply(
                               &reply, (uint32_t)atomic_load_explicit(&f->count,
                                                                      memory_order_relaxed)) == 0,
                           "out of memory");
                stats_add(pl->env->stats, STATS_FRAMES_OUT, 1);
                uint64_t t0;
                int idx;
                FUZZ_CHECK(pipeline_complete(pl, f->seq, &reply, &t0, &idx) == 0,
                           "no reply slot %u for a PUBLISH", f->seq);
                buffer_free(&reply);
                fanout_release(f);
            }
            it = next;
        }
    }
}

/* In the chunked run the mailbox turn sometimes waits a read or two, as
 * when a read event comes first; in the one-piece run it comes every turn. */
static void maybe_mailbox_turn(struct fuzz_conn *fc)
{
    /* One thread: the list can be looked at without the lock, which spares
     * the eventfd read of an empty mailbox_take(). */
    if (!box.head)
        return;
    if (cur->rng.s == 0 || (fuzz_rng_next(&cur->rng) & 1))
        mailbox_turn(fc);
}
#endif

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
    const struct cmd_def *def = (cmd & MSG_FLAG_REPLY) ? NULL : commands_find(cmd);
    bool needs_auth = cmd == MSG_CMD_ECHO || cmd == MSG_CMD_STATS || cmd == MSG_CMD_DELAY ||
                      cmd == CMD_SUBSCRIBE || cmd == CMD_UNSUBSCRIBE || cmd == CMD_PUBLISH;
    if (def)
        FUZZ_CHECK(def->number == cmd, "commands_find(%u) gave %u", cmd, def->number);

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
            FUZZ_CHECK(cmd == 0 || cmd > MSG_CMD_DELAY, "command %u has no handler", cmd);
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
            if (token_ok(cfg, payload, plen)) {
                expect(r, EXP_PAYLOAD, cmd, 0, poff, 0);
                r->authed = true;
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
        } else if (cmd == CMD_PUBLISH) {
            if (plen < 2 || payload[0] == 0 || (size_t)payload[0] + 1 > plen) {
                expect(r, EXP_ERROR, cmd, MSG_ERR_BAD_PAYLOAD, 0, 0);
            } else {
                expect(r, EXP_PUBLISH, cmd, 0, 0, 0);
                r->publishes++;
            }
        } else {
            expect(r, EXP_ANY, cmd, 0, 0, 0);
        }
    }

    proto_msg.handle(pl, frame, len);

    FUZZ_CHECK(pl->authed == r->authed, "authed %d, model %d", pl->authed, r->authed);
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

static const struct proto checked_msg = {
    .name = "msg(checked)",
    .counted = true,
    .split = split_w,
    .handle = handle_w,
    .violation = violation_w,
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
    uint64_t frames = 0, pushes = 0, errors[MSG_ERR_MAX + 1] = {0};
    bool conn_error_seen = false;
    while (off < wn) {
        FUZZ_CHECK(!conn_error_seen, "output goes on after the connection-level error");
        const uint8_t *f = w + off;
        size_t fl = frame_at(f, wn - off);
        uint32_t word = msg_get_u32(f + 8);
        frames++;
        off += fl;
        if (!(word & MSG_FLAG_REPLY)) {
            /* A push. Here only MESSAGEs (no heartbeat, no drain notice). */
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
    FUZZ_CHECK(pushes == r->delivered, "%llu MESSAGEs sent, %llu delivered",
               (unsigned long long)pushes, (unsigned long long)r->delivered);

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
#if FUZZ_PUBSUB
    FUZZ_CHECK(stats_get(st, STATS_SUBSCRIPTIONS) == r->nsubs, "subscriptions %llu, model %u",
               (unsigned long long)stats_get(st, STATS_SUBSCRIPTIONS), r->nsubs);
    FUZZ_CHECK(stats_get(st, STATS_PUBLISHED) == r->publishes, "published %llu, model %llu",
               (unsigned long long)stats_get(st, STATS_PUBLISHED),
               (unsigned long long)r->publishes);
#endif
}

/* ---- one run ------------------------------------------------------------ */

struct result {
    struct buffer wire;
    size_t handled;
    bool closed;
};

static void run_stream(const struct config *cfg, bool draining, unsigned per_turn,
                       const uint8_t *s, size_t n, size_t max_chunk, uint32_t seed,
                       struct result *res)
{
    struct stats_registry reg;
    FUZZ_CHECK(stats_registry_init(&reg, 1) == 0, "out of memory");
    struct run r = {.cfg = cfg, .stream = s, .stream_len = n};
    struct pipeline_env env = {
        .cfg = cfg, .stats = &reg.reactors[0], .all = &reg, .reactor = 0,
        .pool = NULL, .draining = draining,
#if FUZZ_PUBSUB
        .pubsub = &r.ps, .nreactors = 1, .boxes = boxes,
#endif
    };
    struct pipeline pl = {.proto = &checked_msg, .env = &env, .conn_id = 1};
    struct fuzz_conn fc = {.pl = &pl, .frames_per_turn = per_turn, .high = cfg->out_high_water};
    struct fuzz_rng rng = {seed};
    r.pl = &pl;
    r.exps = malloc(sizeof *r.exps * (n / MSG_HEADER_LEN + 1));
    r.subs = malloc(sizeof *r.subs * cfg->max_subscriptions);
    FUZZ_CHECK(r.exps && r.subs, "out of memory");
#if FUZZ_PUBSUB
    pubsub_init(&r.ps);
    r.rng.s = max_chunk ? seed ^ 0x5A5A5A5Au : 0;
    fc.poll = maybe_mailbox_turn;
#endif
    cur = &r;

    fuzz_conn_feed(&fc, s, n, max_chunk, &rng);
#if FUZZ_PUBSUB
    mailbox_turn(&fc); /* every fan-out comes back before the connection ends */
    fuzz_conn_settle(&fc);
    mailbox_turn(&fc);
    fuzz_conn_flush(&fc);
#endif

    /* Nothing processable left behind. */
    if (!r.closed) {
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
    FUZZ_CHECK(pl.slots_head == NULL && pl.jobs_pending == 0 && pl.held_bytes == 0,
               "reply slots left after every fan-out came back");
    FUZZ_CHECK(!!(pl.flags & PIPELINE_CLOSE) == r.closed, "close flag disagrees");
    FUZZ_CHECK(r.nexps == r.requests, "requests");

    check_output(&r, &fc.wire, env.stats);

    res->wire = fc.wire;
    fc.wire = (struct buffer)BUFFER_INIT;
    res->handled = r.handled_off;
    res->closed = r.closed;
    fuzz_conn_free(&fc);
#if FUZZ_PUBSUB
    pubsub_remove_all(&r.ps, &pl); /* what closing the connection does */
    FUZZ_CHECK(r.ps.ntopics == 0, "%u topics left after the last subscriber went", r.ps.ntopics);
    pubsub_free(&r.ps);
#endif
    pipeline_free(&pl);
    stats_registry_free(&reg);
    free(r.exps);
    free(r.subs);
    cur = NULL;
}

/* The reply frames (pushes aside) are the same, byte for byte, except the
 * payloads of STATS (uptime) and PUBLISH (fan-out timing) replies. */
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
        if (wa != (MSG_FLAG_REPLY | MSG_CMD_STATS) && wa != (MSG_FLAG_REPLY | CMD_PUBLISH))
            FUZZ_CHECK(fa == fb && memcmp(p + i, q + j, fa) == 0,
                       "chunked and one-piece replies differ at reply %zu (%08x)", k, wa);
        i += fa, j += fb, k++;
    }
    FUZZ_CHECK(i >= pn && j >= qn, "chunked and one-piece runs sent different numbers of replies");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < PARAM_BYTES)
        return 0;
#if FUZZ_PUBSUB
    if (!boxes[0]) {
        FUZZ_CHECK(mailbox_init(&box) == 0, "mailbox_init");
        boxes[0] = &box;
    }
#endif
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
    run_stream(&cfg, draining, per_turn, s, n, max_chunk, seed, &chunked);
    run_stream(&cfg, draining, FUZZ_CONN_FRAMES_PER_TURN, s, n, 0, seed, &whole);
    FUZZ_CHECK(chunked.handled == whole.handled && chunked.closed == whole.closed,
               "chunked run handled %zu bytes (closed %d), one-piece %zu (closed %d)",
               chunked.handled, chunked.closed, whole.handled, whole.closed);
    compare_replies(&chunked.wire, &whole.wire);
    buffer_free(&chunked.wire);
    buffer_free(&whole.wire);
    return 0;
}
