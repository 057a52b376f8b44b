/* proxy: the PROXY protocol header (HAProxy's specification, versions 1 and
 * 2) that a load balancer sends before the client's bytes, carrying the
 * client's address. A parser only: no I/O, no allocation, whatever the
 * header claims. Base layer. */
#ifndef MSGD_PROXY_H
#define MSGD_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define PROXY_V1_MAX 107        /* the longest v1 line, "\r\n" included */
#define PROXY_V2_MAX 2048       /* the most bytes a v2 header may carry after its 16 */
#define PROXY_HEADER_S 10.0     /* the longest wait for a header, whatever idle_timeout says */

/* What a header said. */
struct proxy_header {
    int version;                /* 1 or 2 */
    bool local;                 /* v2 LOCAL, or v1 UNKNOWN: keep the socket's own addresses */
    struct sockaddr_storage src, dst; /* the client and the address it reached (AF_INET or
                                 * AF_INET6; AF_UNSPEC when local or not an IP family) */
};

/* Looks at the n bytes at p, the start of a stream that must open with a
 * PROXY header. Returns the header's length (> 0) with *h filled, 0 when
 * more bytes are needed (nothing is wrong so far), or -EPROTO when the
 * bytes cannot be a PROXY header (decided at the first byte that rules it
 * out), or -E2BIG when it would be longer than PROXY_V1_MAX or 16 +
 * PROXY_V2_MAX. The result never exceeds n. Thread-safe. */
long proxy_parse(const uint8_t *p, size_t n, struct proxy_header *h);

/* An address block of proxy_from: an IPv4 or IPv6 address and a prefix. */
struct proxy_cidr {
    int family;                 /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    uint8_t bits;               /* 0..32 or 0..128 */
};

/* Parses "ADDR" or "ADDR/BITS" (IPv4 or IPv6, brackets allowed around an
 * IPv6 address). Returns 0 or -EINVAL. Thread-safe. */
int proxy_cidr_parse(const char *s, struct proxy_cidr *out);

/* Whether a (an IPv4 or IPv6 socket address; an IPv4-mapped IPv6 one counts
 * as IPv4) is inside c. */
bool proxy_cidr_match(const struct proxy_cidr *c, const struct sockaddr_storage *a);

/* Writes an address as msgd shows peers ("1.2.3.4:5", "[::1]:5"). Returns
 * 0, or -EAFNOSUPPORT for another family, or -ENOSPC. */
int proxy_format(const struct sockaddr_storage *a, char *out, size_t outlen);

#endif
