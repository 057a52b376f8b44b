/* proto_msg: the msg protocol (PROTOCOL.md) on a pipeline: its splitter,
 * its decoder and dispatch through the command table, and its encoders.
 * Reactor thread only. */
#ifndef MSGD_PROTO_MSG_H
#define MSGD_PROTO_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "cmdtab.h"
#include "codec.h"
#include "module.h"
#include "pipeline.h"
#include "pubsub.h"


/* One module's data on one connection (msgd_conn_set_data). */
struct module_data {
    struct module_data *next;
    const struct msgd_module *owner;
    void *data;
    void (*free_fn)(void *data);
};

/* A msgd_conn (module.h) is a msg connection's pipeline, seen from modules. */
static inline struct pipeline *proto_msg_pl(const msgd_conn *c)
{
    return (struct pipeline *)(uintptr_t)c;
}

static inline msgd_conn *proto_msg_conn(struct pipeline *pl) { return (msgd_conn *)(void *)pl; }

extern const struct proto proto_msg;

/* The largest payload a client may send before it has authenticated. */
#define PROTO_MSG_PREAUTH_MAX (16u * 1024u)

/* What the msg protocol keeps per connection (pl->state), allocated the
 * first time something is kept: a connection that never authenticates or
 * subscribes holds none. Reactor thread only. */
struct msg_conn {
    bool authed;                 /* an AUTH succeeded (rule 5) */
    bool helloed;                /* a HELLO was answered (a second one is refused) */
    uint8_t auth_failures;       /* wrong tokens so far */
    uint8_t identity_len;        /* 0: no identity */
    char *identity;              /* what the AUTH gave it (PROTOCOL "Identities"), or NULL */
    struct pubsub_subs *subs;    /* its topics (pubsub.h), or NULL */
    struct pubsub_subs *ident;   /* its entry in the reactor's identity table, or NULL */
    struct module_data *mods;    /* modules' data for it (module.c), or NULL */
};

/* pl's msg state, allocated when missing; NULL when out of memory. */
struct msg_conn *proto_msg_state(struct pipeline *pl);

/* pl's msg state, or NULL when it has none yet. */
static inline struct msg_conn *proto_msg_peek(const struct pipeline *pl)
{
    return pl->state;
}

/* Whether an AUTH succeeded on pl. */
static inline bool proto_msg_authed(const struct pipeline *pl)
{
    const struct msg_conn *m = proto_msg_peek(pl);
    return m && m->authed;
}

/* pl's identity and its length, or NULL (and 0) when it has none. */
static inline const char *proto_msg_identity(const struct pipeline *pl, size_t *len)
{
    const struct msg_conn *m = proto_msg_peek(pl);
    *len = m && m->identity ? m->identity_len : 0;
    return m ? m->identity : NULL;
}

/* Gives pl the identity of len (1..255) bytes at id, or none (len 0).
 * Returns 0 or -ENOMEM. */
int proto_msg_set_identity(struct pipeline *pl, const void *id, size_t len);

/* Handles one request to def on pl (rule 1's order kept): inline and
 * deferred handlers run now, worker handlers go to the pool. A request left
 * unanswered is answered OVERLOADED. */
void proto_msg_dispatch(struct pipeline *pl, const struct cmd_def *def, uint32_t cmd,
                        const uint8_t *payload, size_t len);

/* For the built-in commands: the request's pipeline (NULL on a worker
 * thread). */
struct pipeline *proto_msg_req_pipeline(msgd_req *req);

/* For the built-in commands: holds the request's place in the reply order,
 * as msgd_defer does, and returns its sequence number for
 * pipeline_complete_late, or -ENOMEM (the pipeline is then marked failed). */
long proto_msg_req_reserve(msgd_req *req);

/* An AUTH succeeded on pl: every module's on_auth hears of it. */
void proto_msg_authenticated(struct pipeline *pl);

/* Queues the reply to request command cmd: REPLY | cmd, then payload. */
void proto_msg_reply(struct pipeline *pl, uint32_t cmd, const void *payload, size_t len);

/* Connection conn_id on env's reactor ran out of memory finishing a
 * request away from its callbacks (a reply it is owed cannot be made): it is
 * closed at the end of the turn, like any pipeline that failed. Nothing
 * happens when it has gone. Reactor thread. */
void proto_msg_fail(const struct pipeline_env *env, uint64_t conn_id);

/* Completes slot seq of connection conn_id on env's reactor with the reply
 * REPLY | cmd, then payload (the answer of a deferred command, once its
 * fan-out has reported). A reply that cannot be encoded leaves the slot
 * empty so the order goes on. Reactor thread only. */
void proto_msg_reply_late(const struct pipeline_env *env, uint64_t conn_id, uint32_t seq,
                          uint32_t cmd, const void *payload, size_t len);

/* ---- the codec HELLO agreed (proto_msg_codec.c) ---- */

/* Sets pl's codec (CODEC_NONE: none), keeping count of each codec's users. */
void proto_msg_codec_set(struct pipeline *pl, unsigned id);

/* Queues a frame with command word word and payload: compressed with pl's
 * codec when it has one, the frame is not an error, the payload is at least
 * compress_min and it came out smaller. As a data push (pipeline_push_data2)
 * or in reply order. A big frame (past a size per codec, proto_msg_codec.c)
 * is compressed on env's worker pool: its place is held (a reply's in the
 * reply order, as for a worker job; a push's there too, and ahead of the
 * data pushes after it) and a copy of it goes to a worker; when the queue is
 * full it is compressed here instead. */
void proto_msg_write_frame(struct pipeline *pl, uint32_t word, const void *p, size_t len, bool push);

/* pipeline_complete_late for a whole reply frame (a worker's, a deferred
 * one's), compressed first on the same terms when its connection has a
 * codec: a big one on the worker pool, its slot completed when it comes
 * back (frame is taken over all the same). Returns 0, or -ENOENT when the
 * connection or its slot has gone (the frame is dropped). */
int proto_msg_complete(const struct pipeline_env *env, uint64_t conn_id, uint32_t seq,
                       struct buffer *frame);

/* Decompresses a COMPRESSED request's payload with pl's codec into out, at
 * most max bytes (codec_decompress: -EFBIG, -EBADMSG, -ENOMEM). */
long proto_msg_decompress(struct pipeline *pl, const uint8_t *p, size_t len, size_t max,
                          struct buffer *out);

/* The calling worker thread's codec state (made on first use, freed when the
 * thread exits), or NULL when out of memory. Worker threads only. */
struct codec_ctx *proto_msg_worker_codec(void);

/* ---- big requests decompressed on the worker pool (proto_msg_decompress.c) ---- */

/* For a COMPRESSED request cmd on pl whose payload (len bytes at p) likely
 * decompresses to more than an ordinary handler's worth of reactor time:
 * copies it into a worker job that decompresses it within max bytes, holds
 * pl's input (PIPELINE_HOLD) and returns true. When the job comes back to
 * pl's reactor, proto_msg_decompressed handles the outcome there, in the
 * request's place, and the held input goes on. Returns false when it is not
 * worth it or cannot be done now (no workers, a full queue, no memory): the
 * caller decompresses inline. Reactor thread. */
bool proto_msg_decompress_offload(struct pipeline *pl, uint32_t cmd, const uint8_t *p, size_t len,
                                  size_t max);

/* A COMPRESSED request's outcome (codec_decompress's n, plain's bytes):
 * handled as if sent plain, or answered BAD_PAYLOAD, or the connection ended
 * with TOO_LARGE (-EFBIG) or marked failed (-ENOMEM). Reactor thread. */
void proto_msg_decompressed(struct pipeline *pl, uint32_t cmd, long n, const struct buffer *plain);

/* A push frame that many receivers share (a PUBLISH's MESSAGE, a DIRECT's
 * DELIVER), encoded once: plain, and compressed once for each codec some
 * connection uses now (where that pays). Laid out in one block: a u32 length
 * per codec (0: none), then the frames, the plain one first. */
struct proto_msg_frames {
    bool used[CODEC_COUNT];
    struct buffer z[CODEC_COUNT];      /* the compressed payloads */
};

/* Whether a payload of len bytes would be compressed for anyone. */
bool proto_msg_frames_wanted(const struct pipeline_env *env, size_t len);

/* Compresses the payload for every codec in use. */
void proto_msg_frames_prepare(const struct pipeline_env *env, struct proto_msg_frames *fr,
                              const void *payload, size_t len);

/* The block's size for a plain payload of len bytes. */
size_t proto_msg_frames_size(const struct proto_msg_frames *fr, size_t len);

/* Writes the block into dst (proto_msg_frames_size bytes) but for the plain
 * payload, and returns where the caller puts it (len bytes). */
uint8_t *proto_msg_frames_write(uint8_t *dst, uint32_t word, const struct proto_msg_frames *fr,
                                size_t len);

/* Gives the compressed payloads' memory back. */
void proto_msg_frames_free(const struct pipeline_env *env, struct proto_msg_frames *fr);

/* Called on the reactor when a fan-out's frames were compressed on the
 * worker pool: data (len bytes) is what the caller handed over, fr the
 * compressed payloads (views into the job: read them, do not free them),
 * conn_id and seq the sender and its reply slot (the connection may have
 * gone meanwhile). */
typedef void (*proto_msg_frames_ready_fn)(const struct pipeline_env *env, uint64_t conn_id,
                                          uint32_t seq, const uint8_t *data, size_t len,
                                          const struct proto_msg_frames *fr);

/* Whether compressing a fan-out payload of len bytes for the codecs in use
 * would hold the reactor longer than an ordinary handler (the same bounds
 * as for replies): then proto_msg_frames_offload is worth it. */
bool proto_msg_frames_big(const struct pipeline_env *env, size_t len);

/* For a fan-out whose payload (the bytes from off on of data's ndata
 * pieces, taken in order) is big (proto_msg_frames_big): copies the pieces
 * into a worker job that compresses the payload once for each codec in use,
 * and returns true. ready then runs on pl's reactor with the pieces as one
 * block, and until it has run pl's input is held (PIPELINE_HOLD: nothing
 * more it sent is handled), so the sender's later requests keep their order
 * behind this one. Returns false when it cannot be done now (no workers, a
 * full queue, no memory): the caller prepares the frames inline. seq is
 * pl's reply slot for the request, reserved by the caller. Reactor thread. */
bool proto_msg_frames_offload(struct pipeline *pl, uint32_t seq, const struct iovec *data,
                              int ndata, size_t off, proto_msg_frames_ready_fn ready);

/* Reads a block back: the frame for each codec. Any thread. */
void proto_msg_frames_view(const uint8_t *block, struct pubsub_frames *out);

/* Queues an error reply to cmd: REPLY | ERROR | cmd, u32 code, text. */
void proto_msg_error(struct pipeline *pl, uint32_t cmd, uint32_t code, const char *text);

/* Queues the connection-level error (command 0xC0000000) and asks for the
 * connection to close once its output is flushed. */
void proto_msg_conn_error(struct pipeline *pl, uint32_t code, const char *text);

#endif
