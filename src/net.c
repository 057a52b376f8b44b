/* net: address parsing, listening sockets and socket names. */
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* A port: 1 to 5 decimal digits, 0..65535. */
static int parse_port(const char *s, in_port_t *port)
{
    unsigned long v = 0;
    size_t n = 0;
    for (; s[n] >= '0' && s[n] <= '9' && n < 5; n++)
        v = v * 10 + (unsigned long)(s[n] - '0');
    if (n == 0 || s[n] != '\0' || v > 65535)
        return -EINVAL;
    *port = htons((in_port_t)v);
    return 0;
}

int net_parse_addr(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    if (strnlen(text, NET_NAME_LEN) >= NET_NAME_LEN)
        return -EINVAL;
    if (strncmp(text, "unix:", 5) == 0) {
        struct sockaddr_un *un = (struct sockaddr_un *)ss;
        const char *path = text + 5;
        if (path[0] != '/' || strlen(path) >= sizeof un->sun_path)
            return -EINVAL;
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, path);
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
        return 0;
    }
    char host[64];
    const char *port;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':' || (size_t)(close - text - 1) >= sizeof host)
            return -EINVAL;
        memcpy(host, text + 1, (size_t)(close - text - 1));
        host[close - text - 1] = '\0';
        port = close + 2;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        in6->sin6_family = AF_INET6;
        if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1 || parse_port(port, &in6->sin6_port))
            return -EINVAL;
        *len = sizeof *in6;
        return 0;
    }
    const char *colon = strrchr(text, ':');
    if (!colon || colon == text || (size_t)(colon - text) >= sizeof host)
        return -EINVAL;
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = '\0';
    port = colon + 1;
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    in4->sin_family = AF_INET;
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &in4->sin_addr) != 1 || parse_port(port, &in4->sin_port))
        return -EINVAL;
    *len = sizeof *in4;
    return 0;
}

/* Whether something listens on the unix socket at ss: a connect that is
 * refused means the file is stale; one that succeeds, or finds the backlog
 * full, means it is alive. */
static int unix_in_use(const struct sockaddr_storage *ss, socklen_t len)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    int rc = connect(fd, (const struct sockaddr *)ss, len);
    int alive = rc == 0 || errno == EAGAIN || errno == EINPROGRESS;
    close(fd);
    return alive;
}

int net_listen(const char *text, int backlog, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (net_parse_addr(text, &ss, &len) < 0) {
        snprintf(err, errlen, "%s: not an address (" NET_ADDR_FORMS ")", text);
        return -EINVAL;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "%s: socket: %s", text, strerror(e));
        return -e;
    }
    int one = 1;
    const char *step = "setsockopt";
    if (ss.ss_family == AF_UNIX) {
        const char *path = ((struct sockaddr_un *)&ss)->sun_path;
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
            if (unix_in_use(&ss, len)) {
                snprintf(err, errlen, "%s: another process listens on it", text);
                close(fd);
                return -EADDRINUSE;
            }
            unlink(path); /* a stale socket from an earlier run */
        }
    } else if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) {
        goto fail;
    }
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    step = "bind";
    if (bind(fd, (struct sockaddr *)&ss, len) < 0)
        goto fail;
    step = "chmod";
    if (ss.ss_family == AF_UNIX && chmod(((struct sockaddr_un *)&ss)->sun_path, 0660) < 0)
        goto fail;
    step = "listen";
    if (listen(fd, backlog) < 0)
        goto fail;
    return fd;
fail:;
    int e = errno;
    snprintf(err, errlen, "%s: %s: %s", text, step, strerror(e));
    close(fd);
    return -e;
}

void net_format(const struct sockaddr *sa, socklen_t len, char *out, size_t outlen)
{
    char host[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in4->sin_addr, host, sizeof host);
        snprintf(out, outlen, "%s:%u", host, ntohs(in4->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(out, outlen, "[%s]:%u", host, ntohs(in6->sin6_port));
    } else if (sa->sa_family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
        size_t plen = len > offsetof(struct sockaddr_un, sun_path)
                          ? len - offsetof(struct sockaddr_un, sun_path) : 0;
        snprintf(out, outlen, "unix:%.*s", (int)strnlen(un->sun_path, plen), un->sun_path);
    } else {
        snprintf(out, outlen, "?");
    }
}

int net_local_name(int fd, char *out, size_t outlen)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -errno;
    net_format((struct sockaddr *)&ss, len, out, outlen);
    return 0;
}

int net_peer_name(int fd, char *out, size_t outlen)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
        return -errno;
    net_format((struct sockaddr *)&ss, len, out, outlen);
    return 0;
}

int net_set_nodelay(int fd)
{
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
        return errno == EOPNOTSUPP || errno == ENOPROTOOPT ? 0 : -errno;
    return 0;
}
