/* module.h: the msgd module API, the one header a module includes.
 *
 * A module is a shared object named in [modules] load (or built into msgd:
 * PING, PUBLISH and every other built-in command are registered through
 * these same calls). It exports one symbol, `msgd_module`, a struct
 * msgd_module whose api_version is MSGD_MODULE_API_VERSION; msgd refuses a
 * module built for another version.
 *
 * Threads. msgd runs a main thread, N reactor threads (each owns its
 * connections) and a worker pool per reactor. Every function below says
 * which thread may call it:
 *   - "main thread, start-up": from the module's config and init callbacks;
 *   - "reactor thread": from a handler, an event or a timer of the reactor
 *     that owns what is named (a msgd_conn is only ever seen on its own
 *     reactor's thread);
 *   - "any thread": from anywhere, the module's own threads included, while
 *     msgd runs (from init until fini).
 * A call from the wrong thread, or naming a connection that has gone, returns
 * an error (-EPERM, -ENOENT); it never touches another connection.
 *
 * Errors are returned as negative errno values, never logged for you. */
#ifndef MSGD_MODULE_H
#define MSGD_MODULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on every change a built module would notice. */
#define MSGD_MODULE_API_VERSION 1u

/* Command numbers 1024 .. MSGD_COMMAND_MAX belong to modules. */
#define MSGD_COMMAND_MIN 1024u
#define MSGD_COMMAND_MAX 0x1FFFFFFFu

/* Error codes a reply may carry (PROTOCOL.md); a module may use its own
 * codes above 1000. */
enum msgd_error {
    MSGD_ERR_UNKNOWN_COMMAND = 1,
    MSGD_ERR_BAD_PAYLOAD = 2,
    MSGD_ERR_NOT_AUTHENTICATED = 3,
    MSGD_ERR_TOO_LARGE = 4,
    MSGD_ERR_OVERLOADED = 7,
    MSGD_ERR_SHUTTING_DOWN = 8,
    MSGD_ERR_DISABLED = 9,
    MSGD_ERR_AUTH_FAILED = 11,
    MSGD_ERR_LIMIT_EXCEEDED = 12,
};

typedef struct msgd_conn msgd_conn;       /* a msg connection, on its reactor's thread */
typedef struct msgd_req msgd_req;         /* one request being handled */
typedef struct msgd_deferred msgd_deferred; /* a deferred reply's place in the order */

/* ---- the module ------------------------------------------------------- */

struct msgd_module {
    uint32_t api_version;              /* MSGD_MODULE_API_VERSION */
    const char *name;                  /* its config section [name]; 1..63 of [a-z0-9_], not
                                        * one of msgd's own sections, unique */
    /* Optional. One key of the section [name]: returns 0, -ENOENT for a key
     * it does not know, or -EINVAL with the reason in err. msgd reports
     * either as FILE:LINE, at start and in `msgd -t`. Main thread, start-up. */
    int (*config)(const char *key, const char *value, char *err, size_t errlen);
    /* Optional. Registers commands; returns 0 or -errno with the reason in
     * err (msgd then refuses to start). Runs in `msgd -t` too, so it must
     * not start threads or touch the network. Main thread, start-up. */
    int (*init)(const struct msgd_module *self, char *err, size_t errlen);
    /* Optional. Called once before the reactors start, after privileges
     * are dropped: start the module's own threads here. Returns 0, or
     * -errno with the reason in err: msgd then logs it and does not start
     * (fini still runs). Not called by `msgd -t`. Main thread. */
    int (*start)(char *err, size_t errlen);
    /* Optional connection events, on the connection's reactor thread. */
    void (*on_open)(msgd_conn *c);     /* a msg connection was accepted */
    void (*on_auth)(msgd_conn *c);     /* an AUTH of it succeeded: each time, and the
                                        * identity may differ from the last one's */
    void (*on_close)(msgd_conn *c);    /* it is closing; msgd_send to it fails */
    /* Optional. Called once after every reactor has stopped, before the
     * process exits: stop the module's threads, free what it holds.
     * Main thread. */
    void (*fini)(void);
};

/* ---- commands --------------------------------------------------------- */

enum msgd_where {
    MSGD_INLINE,   /* the handler runs on the connection's reactor and answers at once */
    MSGD_WORKER,   /* the handler runs on the reactor's worker pool (a blocking call is fine) */
    MSGD_DEFERRED, /* the handler runs on the reactor and takes a reply handle (msgd_defer) */
};

#define MSGD_NEEDS_AUTH 1u             /* NOT_AUTHENTICATED before AUTH, when tokens are set */

/* Handles one request. payload is valid only during the call. The handler
 * answers with msgd_reply or msgd_error, or (on a reactor) takes a reply
 * handle with msgd_defer. A handler that returns without doing any of these
 * has its request answered OVERLOADED "no answer". */
typedef void (*msgd_handler_fn)(msgd_req *req, const uint8_t *payload, size_t len);

struct msgd_command {
    uint32_t number;                   /* MSGD_COMMAND_MIN .. MSGD_COMMAND_MAX */
    const char *name;                  /* 1..31 bytes, for STATS and metrics */
    enum msgd_where where;
    unsigned flags;                    /* MSGD_NEEDS_AUTH */
    msgd_handler_fn handler;
    /* MSGD_WORKER only, optional: runs on the reactor before the job is
     * queued; if it answers (an error, say) the job is not queued. */
    msgd_handler_fn check;
};

/* Registers cmd (copied). Returns 0, -EINVAL (a number out of range, a bad
 * name, no handler), -EEXIST (the number is taken: err says by whom),
 * -ENOSPC (too many commands) or -EPERM (outside init). Main thread,
 * start-up (the module's init). */
int msgd_command_register(const struct msgd_module *self, const struct msgd_command *cmd, char *err,
                          size_t errlen);

/* ---- answering a request ---------------------------------------------- */

/* The request's command number, and its connection's id. Any thread that
 * runs the handler, during the call. */
uint32_t msgd_req_command(const msgd_req *req);
uint64_t msgd_req_conn_id(const msgd_req *req);

/* The request's connection, or NULL on a worker thread. During the call. */
msgd_conn *msgd_req_conn(msgd_req *req);

/* Answers the request with payload (REPLY | command). Returns 0, -EALREADY
 * when it was answered already (or deferred), or -ENOMEM. The thread that
 * runs the handler, during the call. */
int msgd_reply(msgd_req *req, const void *payload, size_t len);

/* Answers the request with an error: u32 code, then text (cut at 200 bytes).
 * Returns as msgd_reply. During the call. */
int msgd_error(msgd_req *req, uint32_t code, const char *text);

/* Holds the request's place in its connection's reply order and returns the
 * handle to answer it later. Replies to later requests wait behind it.
 * NULL means there is nothing to defer: the request was answered already
 * (or deferred), or msgd answered it OVERLOADED because memory ran out, or
 * this is a worker thread (whose request msgd answers when the handler
 * returns unanswered). Reactor thread, during the call. */
msgd_deferred *msgd_defer(msgd_req *req);

/* Answer a deferred request, exactly once: the handle is consumed. The reply
 * takes its place in the order; if the connection has gone it is dropped
 * and counted. Returns 0, or -ESHUTDOWN when msgd has stopped (the handle
 * is freed all the same; so fini may drop the handles it still holds).
 * Any thread. */
int msgd_deferred_reply(msgd_deferred *r, const void *payload, size_t len);
int msgd_deferred_error(msgd_deferred *r, uint32_t code, const char *text);

/* Gives up a deferred request: its client gets OVERLOADED "dropped by the
 * module", so the order goes on. The handle is consumed. Any thread. */
void msgd_deferred_drop(msgd_deferred *r);

/* Sleeps up to ms milliseconds in a worker handler; returns 0, or
 * -ECANCELED early when msgd is stopping. -EPERM off a worker thread.
 * Worker thread, during the call. */
int msgd_worker_sleep(msgd_req *req, uint32_t ms);

/* ---- connections by id -------------------------------------------------- */

/* Queues a push frame (command, then payload) to connection conn_id, after
 * whatever it was sent before. On the connection's own reactor it returns
 * 0, -ENOENT (the connection has gone or is closing; a stale id never names
 * the next connection), -ENOBUFS (the connection is above
 * output_high_water: the push is dropped, as MESSAGE would be), -EMSGSIZE
 * (len > max_frame) or -EINVAL (command 0 or above MSGD_COMMAND_MAX). From any
 * other thread the push is posted to that reactor and 0 means queued: one
 * that finds the connection gone, full or the push too large there is
 * dropped and counted (`module_pushes_dropped`). From any thread, -EINVAL
 * comes at once, and so do -ENOMEM and -ESHUTDOWN (msgd is not running).
 * Order: pushes from one thread to one connection arrive in the order they
 * were sent; pushes from different threads have no order between them (one
 * sent on the connection's own reactor goes out at once, one from elsewhere
 * when that reactor next reads its mailbox). Any thread. */
int msgd_send(uint64_t conn_id, uint32_t command, const void *payload, size_t len);

/* Closes connection conn_id once what it was sent is flushed, after a
 * connection-level error frame with code and text (code 0: no frame).
 * Returns 0 or -ENOENT as msgd_send. Any thread. */
int msgd_close(uint64_t conn_id, uint32_t code, const char *text);

/* ---- a connection, on its reactor --------------------------------------- */

/* Its id, valid on any thread for msgd_send and msgd_close. */
uint64_t msgd_conn_id(const msgd_conn *c);

/* The index of the reactor that owns it (0 .. msgd_reactors() - 1). */
int msgd_conn_reactor(const msgd_conn *c);

/* Its identity (what AUTH gave it; PROTOCOL.md "Identities") and its length,
 * or NULL (and 0) before that or without one. Reactor thread. */
const char *msgd_conn_identity(const msgd_conn *c, size_t *len);

/* Writes the peer's address ("1.2.3.4:5", "[::1]:5", "unix:/path") into buf.
 * Returns 0, or -ENOSPC when it does not fit. Reactor thread. */
int msgd_conn_peer(const msgd_conn *c, char *buf, size_t len);

/* Writes the address of the listener it came in on (the local address of the
 * connection) into buf. Returns as msgd_conn_peer. Reactor thread. */
int msgd_conn_listener(const msgd_conn *c, char *buf, size_t len);

/* The module's data for c, or NULL. Reactor thread. */
void *msgd_conn_data(const msgd_conn *c, const struct msgd_module *self);

/* Sets the module's data for c (replacing any, whose free_fn runs first).
 * free_fn (may be NULL) runs on the reactor thread when the connection has
 * closed, after every on_close. Returns 0 or -ENOMEM. Reactor thread. */
int msgd_conn_set_data(msgd_conn *c, const struct msgd_module *self, void *data,
                       void (*free_fn)(void *data));

/* ---- reactors and timers ---------------------------------------------- */

/* How many reactors run; and the calling thread's reactor index, or -1 when
 * it is not a reactor thread. Any thread. */
int msgd_reactors(void);
int msgd_reactor_index(void);

/* Called on the reactor that started the timer, with its id and arg. */
typedef void (*msgd_timer_fn)(uint64_t timer_id, void *arg);

/* Starts a timer on the calling reactor: first after after_s seconds, then
 * every repeat_s seconds (0: once). Stores its id (never 0) in *id. Returns
 * 0, -EINVAL (negative or non-finite times, no fn), -ENOMEM, or -EPERM off
 * a reactor thread. A one-shot timer's id goes stale once its callback
 * returns. Reactor thread. */
int msgd_timer_start(double after_s, double repeat_s, msgd_timer_fn fn, void *arg, uint64_t *id);

/* Cancels timer id; allowed inside its own callback (no further call, the
 * memory goes once the callback returns). Returns 0, -ENOENT (it fired once
 * already, or was cancelled), or -EPERM on any thread but the one that
 * started it. Timers still running when msgd stops are cancelled without a
 * call. Reactor thread (the timer's). */
int msgd_timer_stop(uint64_t id);

/* ---- logging and config values ---------------------------------------- */

enum msgd_log_level { MSGD_LOG_ERROR = 0, MSGD_LOG_WARN, MSGD_LOG_INFO, MSGD_LOG_DEBUG };

/* Logs one line through msgd's logger (journald priorities). Any thread. */
void msgd_log(enum msgd_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Parse a config value as msgd's own keys do: a duration ("1.5s", "250ms",
 * "2m", "1h"; a bare number is seconds) into seconds, a size ("64", "16K",
 * "1M") into bytes, a switch (on/off, yes/no, true/false, 1/0). Return 0 or
 * -EINVAL. Any thread. */
int msgd_parse_duration(const char *value, double *seconds);
int msgd_parse_size(const char *value, uint64_t *bytes);
int msgd_parse_bool(const char *value, bool *on);

#ifdef __cplusplus
}
#endif

#endif
