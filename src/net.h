/* net: sockets. Address parsing, listening sockets, socket options and
 * names. Returns -errno; setup functions also say why in err. */
#ifndef MSGD_NET_H
#define MSGD_NET_H

#include <stddef.h>
#include <sys/socket.h>

#define NET_NAME_LEN 128   /* enough for "unix:/108 bytes" and "[v6]:port" */

/* The one address grammar (CONFIG.md "The file"), in words for error texts. */
#define NET_ADDR_FORMS "IPV4:PORT, localhost:PORT, [IPV6]:PORT or unix:/path"

/* Parses an address of the one grammar into *ss and *len: "A.B.C.D:PORT"
 * (dotted-quad IPv4) or "localhost:PORT" (127.0.0.1), "[IPV6]:PORT", with
 * PORT 0..65535 in decimal, or "unix:/path" (an absolute path shorter than
 * sun_path). No DNS: any other host name is -EINVAL. The whole text is
 * shorter than NET_NAME_LEN. The configuration's check (config_check_addr)
 * is this function, so what `msgd -t` accepts binds. Returns 0 or -EINVAL.
 * Thread-safe. */
int net_parse_addr(const char *text, struct sockaddr_storage *ss, socklen_t *len);

/* Opens a non-blocking, close-on-exec listening socket on text's address with
 * SO_REUSEADDR. A unix socket file that already exists is unlinked only when
 * nothing listens on it (a connect is refused); a live one is -EADDRINUSE,
 * as a TCP port in use is. Unix sockets get mode 0660. Returns the fd, or
 * -errno with the reason in err. Main thread. */
int net_listen(const char *text, int backlog, char *err, size_t errlen);

/* Writes fd's local address (with the port the kernel chose) as text. */
int net_local_name(int fd, char *out, size_t outlen);

/* Writes fd's peer address as text. */
int net_peer_name(int fd, char *out, size_t outlen);

/* Formats a socket address as "1.2.3.4:5", "[::1]:5" or "unix:/path". */
void net_format(const struct sockaddr *sa, socklen_t len, char *out, size_t outlen);

/* Sets TCP_NODELAY on a TCP socket; a no-op (0) for other families. */
int net_set_nodelay(int fd);

#endif
