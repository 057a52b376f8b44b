/* msgclient: a small blocking client of the msg protocol (PROTOCOL.md) built on
 * poll(2): connect with a timeout, optional AUTH, calls and pipelined
 * send/receive, transparent answers to server PINGs, MESSAGE and DELIVER pushes,
 * GOAWAY, DIRECT, a heartbeat of its own that notices a dead server,
 * reconnection with exponential back-off and random jitter, and optionally
 * HELLO with payload compression (zstd, deflate).
 *
 * A struct msgclient belongs to one thread at a time (the caller's): no
 * function here may be called on the same client from two threads at once,
 * not even to wait on it from one thread while another sends. Every call
 * does its I/O itself on the caller's thread (there is no thread inside), and
 * the buffers, queues and counters have no lock, so sharing one handle would
 * corrupt them. To have one thread wait for pushes while others make calls,
 * give each its own struct msgclient (connections are cheap), or funnel the
 * other threads' requests to the waiting thread through a queue of your own
 * and let it call msgclient_send between its waits (short timeout_ms).
 *
 * Functions return >= 0 on success and -errno on failure; a reply that is an
 * error reply is not a failure of the call: it returns MSGCLIENT_ERROR_REPLY
 * with the code and text in the struct msgclient_reply. */
#ifndef MSGD_MSGCLIENT_H
#define MSGD_MSGCLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define MSGCLIENT_ERROR_REPLY 1       /* result: the server sent an error reply */
#define MSGCLIENT_TEXT_MAX 256        /* error texts kept, with the NUL */
#define MSGCLIENT_MESSAGES_MAX 65536  /* MESSAGE pushes queued; more are dropped */
#define MSGCLIENT_DELIVERS_MAX 65536  /* DELIVER pushes queued; more are dropped */
#define MSGCLIENT_DIRECT_REPLY_LEN 8  /* DIRECT's reply: u32 local, u32 remote */
#define MSGCLIENT_HEARTBEAT_SERVER (-1) /* heartbeat_ms: the server's (see there) */

/* Called with each MESSAGE push (topic, then message bytes) from inside the
 * call that read it, on that call's thread. The bytes are valid only during
 * the call. */
typedef void (*msgclient_message_fn)(void *user, const uint8_t *topic, size_t topic_len,
                                     const uint8_t *data, size_t data_len);

/* Called with each DELIVER push (the sender's identity, empty when the sender
 * has none, then the message bytes) like msgclient_message_fn. */
typedef void (*msgclient_deliver_fn)(void *user, const uint8_t *sender, size_t sender_len,
                                     const uint8_t *data, size_t data_len);

struct msgclient_options {
    const char *addr;              /* as msgclient_resolve takes it (copied) */
    const char *token;             /* AUTH token sent after each connect; NULL: none (copied) */
    int connect_timeout_ms;        /* per connect attempt; < 0: no limit */
    int timeout_ms;                /* per wait for a reply or a flush; < 0: no limit */
    bool reconnect;                /* reconnect after GOAWAY or a lost connection */
    unsigned backoff_initial_ms;   /* first back-off step */
    unsigned backoff_max_ms;       /* back-off cap */
    unsigned reconnect_attempts;   /* connect attempts per reconnect, >= 1 */
    uint32_t max_frame;            /* largest payload accepted from the server */
    msgclient_message_fn on_message; /* NULL: MESSAGEs queue for msgclient_recv_message */
    msgclient_deliver_fn on_deliver; /* NULL: DELIVERs queue for msgclient_recv_deliver */
    void *user;                    /* passed to on_message and on_deliver */
    uint64_t seed;                 /* jitter seed; 0: a random one */
    /* The client's own heartbeat, active while a call waits on the socket:
     * after heartbeat_ms with nothing received it sends a PING (its reply is
     * swallowed); after dead_after_ms with nothing received at all it
     * declares the server dead: the connection is closed, each request owed
     * a reply fails with -ETIMEDOUT, and the waiting call returns -ETIMEDOUT
     * with msgclient_connected() false. A reply comes after every reply
     * before it (PROTOCOL.md rule 1), so dead_after_ms must exceed the
     * slowest request. 0 turns either off.
     * heartbeat_ms MSGCLIENT_HEARTBEAT_SERVER (any negative value; the
     * default) follows the server: on a connection whose HELLO reply carries
     * heartbeat_ms (not 0), that is the client's heartbeat too, capped at a
     * third of dead_after_ms (when that is on) so that a PING still has time
     * to be answered; otherwise (no HELLO, a server older than HELLO, or a
     * server whose heartbeat is off) it is 30 s. HELLO goes out only when
     * compress is set (below): a caller who wants the server's heartbeat
     * without compression sets compress = "none", which costs one round
     * trip per connect. Without it no HELLO is sent, because a client that
     * did not ask for HELLO keeps the wire exactly as it was before HELLO
     * existed. msgclient_heartbeat_ms() says what is in force. */
    int heartbeat_ms;
    int dead_after_ms;
    /* HELLO and compression (PROTOCOL.md "HELLO", "Compression"). NULL: no
     * HELLO is sent (the behaviour before HELLO existed). Otherwise the
     * codecs to offer, best first, comma-separated ("zstd", "deflate",
     * "zstd,deflate"; "" or "none": HELLO offering none): after each
     * connect, before AUTH, the client sends HELLO (client=msgclient/VERSION
     * and compress=...) and waits for the reply. With a codec agreed, each
     * request of at least the server's compress_min bytes goes compressed
     * when that makes it smaller, and compressed replies and pushes are
     * decompressed, never past max_frame. A server that answers HELLO with
     * an error reply (one older than HELLO) is used without compression.
     * msgclient_new fails (NULL, errno EINVAL) for an unknown codec name. */
    const char *compress;          /* copied */
    int compress_level;            /* zstd 1..19, deflate clamped to 1..9; 0: 1 */
    /* TLS (msgclient_tls.h): the server's certificate is checked against
     * tls_cafile (NULL: the system's CAs) and the host of addr; a client
     * certificate and key are sent when both are set. The files are read
     * by msgclient_new. */
    bool tls;
    const char *tls_cafile, *tls_certfile, *tls_keyfile;
};

/* One reply. payload is malloc'd (NULL when len is 0) and owned by the caller:
 * release it with msgclient_reply_free. For an error reply (ERROR bit set,
 * including the connection-level error 0xC0000000) error_code and error_text
 * hold the decoded error payload; otherwise error_code is 0. */
struct msgclient_reply {
    uint32_t command;              /* the whole command word, REPLY/ERROR bits included */
    uint8_t *payload;
    size_t len;
    uint32_t error_code;
    char error_text[MSGCLIENT_TEXT_MAX];
};

/* One MESSAGE push. buf is malloc'd and holds the topic and the data, each
 * followed by a NUL (not counted in the lengths); topic and data point into it.
 * Release with msgclient_message_free. */
struct msgclient_message {
    uint8_t *buf;
    const uint8_t *topic;
    size_t topic_len;
    const uint8_t *data;
    size_t data_len;
};

/* One DELIVER push, laid out like struct msgclient_message: buf holds the
 * sender (sender_len 0 when the sender had no identity) and the data, each
 * followed by a NUL. Release with msgclient_deliver_free. */
struct msgclient_deliver {
    uint8_t *buf;
    const uint8_t *sender;
    size_t sender_len;
    const uint8_t *data;
    size_t data_len;
};

struct msgclient;

/* Fills o with the defaults: no address, no token, 5 s timeouts, no
 * reconnect, back-off 100 ms doubling to 5 s, 8 attempts, max_frame 256 MiB,
 * heartbeat MSGCLIENT_HEARTBEAT_SERVER (the server's heartbeat from HELLO,
 * else 30 s: see heartbeat_ms), dead after 90 s, no HELLO (compress
 * NULL), compression level 1. Thread-safe. */
void msgclient_options_init(struct msgclient_options *o);

/* A new, unconnected client with a copy of o. NULL when out of memory
 * (errno ENOMEM) or when o->compress names an unknown codec (errno EINVAL).
 * Any thread; the client then belongs to that thread. */
struct msgclient *msgclient_new(const struct msgclient_options *o);

/* Closes the connection (if any) and frees everything, queued replies and
 * messages included. c may be NULL. The owning thread. */
void msgclient_free(struct msgclient *c);

/* Connects to o->addr (closing any previous connection first): a non-blocking
 * connect bounded by connect_timeout_ms over each resolved address, then
 * TCP_NODELAY, then HELLO when o->compress is set (see there; -EPROTO when
 * the server chose a codec that was not offered), then AUTH when a token is
 * set. Returns 0; MSGCLIENT_ERROR_REPLY
 * when AUTH got an error reply (in *reply when reply is not NULL; the
 * connection stays open); or -errno (-ECONNREFUSED, -ETIMEDOUT, -EINVAL for a
 * bad address, ...) with the reason in msgclient_error(). The owning thread. */
int msgclient_connect(struct msgclient *c, struct msgclient_reply *reply);

/* Like msgclient_connect but waits first, and retries: attempt i (from 0)
 * waits msgclient_backoff_ms(i, ...) before it connects, up to
 * reconnect_attempts attempts. Returns what the last attempt returned. The
 * owning thread. */
int msgclient_reconnect(struct msgclient *c, struct msgclient_reply *reply);

/* Uses fd, an already connected stream socket, as the connection (closing any
 * previous one). The client owns fd from then on and makes it non-blocking.
 * No HELLO and no AUTH is sent (no compression on it). Returns 0 or
 * -EINVAL. The owning thread. */
int msgclient_adopt(struct msgclient *c, int fd);

/* Closes the connection. Requests still waiting for replies are answered with
 * -ECONNRESET by msgclient_recv. The owning thread. */
void msgclient_close(struct msgclient *c);

/* Queues one request (cmd must have the REPLY and ERROR bits clear) for
 * sending; it goes out at the next flush, recv or call. When the connection is
 * gone, or going away (GOAWAY) with no reply owed, and reconnect is set, it
 * reconnects first (msgclient_reconnect). Returns 0, -EINVAL, -ENOTCONN,
 * -ENOMEM, or a reconnect failure (an AUTH error reply on reconnect gives
 * -EACCES). The owning thread. */
int msgclient_send(struct msgclient *c, uint32_t cmd, const void *payload, size_t len);

/* Writes everything queued, reading (and queueing) whatever arrives meanwhile.
 * Returns 0, -ETIMEDOUT, -EINTR, or -ECONNRESET/-EPIPE. The owning thread. */
int msgclient_flush(struct msgclient *c);

/* The reply to the oldest request sent and not yet answered, waiting up to
 * timeout_ms for it while it flushes, answers server PINGs, delivers MESSAGEs
 * and notes GOAWAY. Returns 0 (a reply), MSGCLIENT_ERROR_REPLY (an error
 * reply, or the connection-level error, after which the connection is
 * closed), -ETIMEDOUT, -EINTR (a signal arrived), -ECONNRESET (the connection
 * was lost: once for each request that was owed a reply), -EPROTO (the server
 * broke the framing, or sent a compressed payload that does not decompress,
 * or would decompress past max_frame; the connection is closed), -ENOMSG
 * (no request is waiting). *reply is filled only for 0 and
 * MSGCLIENT_ERROR_REPLY. The owning thread. */
int msgclient_recv(struct msgclient *c, struct msgclient_reply *reply);

/* msgclient_send, then msgclient_recv: returns what msgclient_recv returns,
 * or the send failure. Replies owed to earlier pipelined requests must be
 * received first, or this returns the first of them. The owning thread. */
int msgclient_call(struct msgclient *c, uint32_t cmd, const void *payload, size_t len,
                   struct msgclient_reply *reply);

/* The next MESSAGE push (queued ones first), waiting up to timeout_ms (< 0:
 * no limit) while answering PINGs; replies that arrive meanwhile are queued
 * for msgclient_recv. Only when on_message is NULL. Returns 0, -ETIMEDOUT
 * (no push in time; or, with msgclient_connected() now false, the server
 * was declared dead: see heartbeat_ms and dead_after_ms),
 * -EINTR, -ECONNRESET (lost; the connection is closed), -ECONNABORTED (the
 * server sent the connection-level error: msgclient_error() says which),
 * -EPROTO, -ENOTCONN or -EINVAL. The owning thread. */
int msgclient_recv_message(struct msgclient *c, struct msgclient_message *m, int timeout_ms);

/* The next DELIVER push, exactly as msgclient_recv_message does for MESSAGE
 * (same waiting, same results); only when on_deliver is NULL. MESSAGEs that
 * arrive meanwhile stay queued for msgclient_recv_message. The owning thread. */
int msgclient_recv_deliver(struct msgclient *c, struct msgclient_deliver *d, int timeout_ms);

/* DIRECT: sends message (len bytes) to every connection of identity (1..255
 * bytes) and waits for the reply like msgclient_call. Returns 0 with *local
 * (connections on the server's node it was queued to) and *remote (other
 * nodes it was forwarded to) set; MSGCLIENT_ERROR_REPLY with *reply filled
 * (NOT_AUTHENTICATED when this connection has no identity); -EINVAL for an
 * identity length outside 1..255; -EBADMSG when the reply is not 8 bytes of
 * REPLY|DIRECT (*reply then holds it); or what msgclient_call returns.
 * *reply belongs to the caller for 0, MSGCLIENT_ERROR_REPLY and -EBADMSG.
 * Earlier pipelined replies must be received first. The owning thread. */
int msgclient_direct(struct msgclient *c, const void *identity, size_t identity_len,
                     const void *message, size_t len, uint32_t *local, uint32_t *remote,
                     struct msgclient_reply *reply);

/* Encodes DIRECT's request payload (u8 identity length, identity, message)
 * into out. Returns its length (1 + identity_len + len), -EINVAL for an
 * identity length outside 1..255, or -ENOSPC when out holds fewer than that
 * many bytes (nothing written). Thread-safe. */
long msgclient_encode_direct(uint8_t *out, size_t outlen, const void *identity,
                             size_t identity_len, const void *message, size_t len);

/* Decodes DIRECT's reply payload. Returns 0, or -EBADMSG when len is not 8.
 * Thread-safe. */
int msgclient_decode_direct_reply(const uint8_t *p, size_t len, uint32_t *local,
                                  uint32_t *remote);

/* Frees what a reply, a message or a delivery holds and clears it. NULL-safe.
 * Any thread. */
void msgclient_reply_free(struct msgclient_reply *r);
void msgclient_message_free(struct msgclient_message *m);
void msgclient_deliver_free(struct msgclient_deliver *d);

/* State, for the owning thread. */
bool msgclient_connected(const struct msgclient *c);
/* True once a GOAWAY arrived on the current connection; *ms_left and *reason
 * (NUL-terminated, owned by c) are set when not NULL. */
bool msgclient_going_away(const struct msgclient *c, uint32_t *ms_left, const char **reason);
/* Requests sent (or queued) and not yet answered. */
size_t msgclient_pending(const struct msgclient *c);
/* The latest failure, in words ("connect 127.0.0.1:7700: Connection refused"). */
const char *msgclient_error(const struct msgclient *c);
/* Server PINGs answered, unexpected or malformed frames dropped (a MESSAGE
 * or DELIVER whose length byte points past its payload among them), MESSAGEs
 * and DELIVERs dropped (queue full), and reconnects made, over the client's
 * life. */
uint64_t msgclient_pings_answered(const struct msgclient *c);
uint64_t msgclient_frames_dropped(const struct msgclient *c);
uint64_t msgclient_messages_dropped(const struct msgclient *c);
uint64_t msgclient_delivers_dropped(const struct msgclient *c);
uint64_t msgclient_reconnects(const struct msgclient *c);
/* Heartbeat PINGs this client sent, and connections it declared dead. */
uint64_t msgclient_heartbeats_sent(const struct msgclient *c);
/* The heartbeat in force on the current connection, in ms (0: off): the
 * caller's heartbeat_ms, or with MSGCLIENT_HEARTBEAT_SERVER the server's
 * from HELLO (capped) or 30 s. */
int msgclient_heartbeat_ms(const struct msgclient *c);
uint64_t msgclient_dead_declared(const struct msgclient *c);
/* Bytes received on the current connection (or the last one, once it is
 * gone): 0 means the server never said anything on it. */
uint64_t msgclient_conn_bytes_in(const struct msgclient *c);
/* The codec HELLO agreed on the current connection: "zstd", "deflate", or
 * "none" (also without HELLO, and once the connection is gone). */
const char *msgclient_codec(const struct msgclient *c);
/* The server's HELLO reply on the current connection (key=value lines,
 * NUL-terminated, owned by c), or NULL when no HELLO was answered on it. */
const char *msgclient_hello_reply(const struct msgclient *c);
/* Over the client's life: requests sent compressed, and replies and pushes
 * received compressed (decompressed before anything else saw them). */
uint64_t msgclient_compressed_sent(const struct msgclient *c);
uint64_t msgclient_compressed_received(const struct msgclient *c);

/* The wait before reconnect attempt `attempt` (0 = the first): the step
 * cap = min(max_ms, initial_ms * 2^attempt), then a uniformly random value in
 * [cap/2, cap] ("equal jitter") drawn from *rng (a xorshift state, never 0;
 * updated). Thread-safe for distinct rng states. */
unsigned msgclient_backoff_ms(unsigned attempt, unsigned initial_ms, unsigned max_ms,
                              uint64_t *rng);

/* Decodes an error payload (u32 code, text): *code and text (NUL-terminated,
 * cut to textlen, control bytes replaced by '?'). Returns 0, or -EINVAL when
 * the payload is shorter than 4 bytes (then *code is 0). Thread-safe. */
int msgclient_decode_error(const uint8_t *p, size_t len, uint32_t *code, char *text,
                           size_t textlen);

/* Splits "HOST:PORT" or "[IPV6]:PORT" into host (brackets removed) and port.
 * Returns 0 or -EINVAL (no port, port not 1..65535, host too long). Thread-safe. */
int msgclient_split_hostport(const char *addr, char *host, size_t hostlen, char *port,
                             size_t portlen);

#define MSGCLIENT_ADDRS_MAX 16        /* addresses msgclient tries per connect */
#define MSGCLIENT_UNIX_PATH_MAX 107   /* longest unix socket path (sun_path less its NUL) */

/* One address to connect to. */
struct msgclient_addr {
    struct sockaddr_storage ss;
    socklen_t len;
};

/* The client tools' one resolver (msgclient, msgcli and msgbench all use it).
 * text is the daemon's grammar (net_parse_addr: "unix:/path", "[IPV6]:PORT",
 * "A.B.C.D:PORT", "localhost:PORT" as 127.0.0.1) with PORT 1..65535, or
 * "NAME:PORT" with a DNS name, looked up with getaddrinfo. Fills out with up
 * to max (>= 1) addresses in the order to try. Returns how many (>= 1), or
 * -errno (-EINVAL for a malformed text, -EHOSTUNREACH when the name does not
 * resolve) with the reason in err. Thread-safe; may block on DNS. */
int msgclient_resolve(const char *text, struct msgclient_addr *out, int max, char *err,
                      size_t errlen);

/* The address text a tool's -h HOST -p PORT or -u PATH options mean:
 * "unix:/path" when unix_path is not NULL (with or without its "unix:"),
 * else "[HOST]:PORT" for an IPv6 host given without brackets, else
 * "HOST:PORT". Returns 0, -EINVAL for a unix path that is not absolute or does
 * not fit sun_path, or -ENAMETOOLONG when out is too small. Thread-safe. */
int msgclient_target(const char *host, unsigned port, const char *unix_path, char *out,
                     size_t outlen);

#endif
