/* acceptor: the accept side of the main loop. Opens the listeners named by
 * the configuration, accepts in a capped loop, enforces max_connections, and
 * hands each fd round robin to a reactor. Main thread only. */
#ifndef MSGD_ACCEPTOR_H
#define MSGD_ACCEPTOR_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "log.h"
#include "net.h"
#include "pipeline.h"
#include "reactor.h"
#include "stats.h"

struct acceptor;
struct ssl_ctx_st;

struct listener {
    int fd;
    const struct proto *proto;
    char name[NET_NAME_LEN];           /* the bound address, real port included */
    int adopted;                       /* passed by systemd (socket activation) */
    int tls;                           /* its connections run inside TLS (tls_listen) */
    size_t proxy_off;                  /* its section's struct config_proxy, or 0: none */
    ev_io watcher;
    struct acceptor *owner;
};

struct acceptor {
    struct ev_loop *loop;
    struct listener *ls;
    int nls;
    struct reactor *reactors;
    int nreactors;
    unsigned next;                     /* round-robin position */
    struct stats_registry *reg;
    uint64_t max_connections;
    int paused;                        /* listeners stopped after EMFILE/ENFILE */
    int shut;                          /* the drain began: only listeners that serve
                                        * through it (http) accept */
    ev_timer resume_timer;
    struct log_ratelimit rl_fd, rl_max;
    struct ssl_ctx_st *tls_ctx;        /* the TLS context new connections get, or NULL */
    const struct config *cfg;          /* set before start: the server's live configuration
                                        * (proxy_from is read from it at each accept) */
};

/* Whether any listener runs TLS (its connections need acceptor_set_tls). */
int acceptor_has_tls(const struct acceptor *a);

/* Gives the TLS listeners' new connections ctx (a reference taken over);
 * drops the reference to the previous one, which connections already open
 * keep using. */
void acceptor_set_tls(struct acceptor *a, struct ssl_ctx_st *ctx);

/* Opens every listener of cfg (msg, echo, admin, http, tls). Sockets passed by
 * systemd (LISTEN_FDS) are adopted first, matched by FileDescriptorName=
 * ("msg", "echo", "admin", "http") or else by configured address; a protocol that got a
 * passed socket binds none of its configured addresses. Returns 0, or -errno
 * with the reason in err (nothing left open). */
int acceptor_open(struct acceptor *a, const struct config *cfg, char *err, size_t errlen);

/* Appends one line "PATH: warning: ..." for each socket systemd passed
 * (LISTEN_FDS) that a listener would use although it is not one of that
 * listener's configured addresses: socket activation overrides `listen`
 * (CONFIG.md "Socket activation"). Leaves the sockets and the environment
 * as they are, so it serves `msgd -t` and the start alike. Returns how many.
 * Main thread. */
int acceptor_passed_warnings(const struct config *cfg, const char *path, char *out, size_t outlen);

/* Starts accepting on loop, handing connections to the reactors. */
void acceptor_start(struct acceptor *a, struct ev_loop *loop, struct reactor *reactors,
                    int nreactors, struct stats_registry *reg, uint64_t max_connections);

/* Stops accepting (the sockets stay open). */
void acceptor_stop(struct acceptor *a);

/* Stops accepting for good (the drain) and closes the listeners this process
 * bound itself: a new connection is refused at once rather than left in a
 * backlog that nobody will accept, so its client backs off and retries, and
 * reaches the next instance. Sockets passed by systemd stay open: systemd
 * holds them too and queues connections for the next instance. Listeners
 * whose protocol serves_drain (http) keep accepting until acceptor_stop. */
void acceptor_shut(struct acceptor *a);

/* Closes the listening sockets (and unlinks unix socket paths). */
void acceptor_close(struct acceptor *a);

/* Writes "msg=ADDR[,ADDR] echo=ADDR admin=ADDR http=ADDR tls=ADDR" for the open
 * listeners. */
void acceptor_describe(const struct acceptor *a, char *out, size_t outlen);

#endif
