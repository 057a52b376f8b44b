/* proxy: PROXY protocol v1 (a text line) and v2 (a binary header). */
#include "proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char v1_sig[] = "PROXY ";

/* A port: 1 to 5 digits, at most 65535. */
static int parse_port(const char *s, uint16_t *port)
{
    size_t n = strlen(s);
    if (n == 0 || n > 5)
        return -1;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

static int fill_ip(int family, const char *ip, const char *port, struct sockaddr_storage *out)
{
    uint16_t pt;
    if (parse_port(port, &pt) < 0)
        return -1;
    memset(out, 0, sizeof *out);
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)out;
        a->sin_family = AF_INET;
        a->sin_port = htons(pt);
        return inet_pton(AF_INET, ip, &a->sin_addr) == 1 ? 0 : -1;
    }
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)out;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(pt);
    return inet_pton(AF_INET6, ip, &a->sin6_addr) == 1 ? 0 : -1;
}

/* "PROXY TCP4 SRC DST SPORT DPORT\r\n", "PROXY TCP6 ...", "PROXY UNKNOWN...\r\n". */
static long parse_v1(const uint8_t *p, size_t n, struct proxy_header *h)
{
    size_t lim = n < PROXY_V1_MAX ? n : PROXY_V1_MAX;
    size_t end = 0;
    while (end + 1 < lim && !(p[end] == '\r' && p[end + 1] == '\n'))
        end++;
    if (end + 1 >= lim) {
        for (size_t i = 0; i < lim; i++) /* a line holds no NUL, and \n only after \r */
            if (p[i] == 0 || (p[i] == '\n' && (i == 0 || p[i - 1] != '\r')))
                return -EPROTO;
        return n >= PROXY_V1_MAX ? -E2BIG : 0;
    }
    char line[PROXY_V1_MAX + 1];
    memcpy(line, p, end);
    line[end] = '\0';
    if (strlen(line) != end || strchr(line, '\n'))
        return -EPROTO; /* a NUL or a bare \n: refused as they would be before the end */
    memset(h, 0, sizeof *h);
    h->version = 1;
    char *f[7] = {0};
    int nf = 0;
    for (char *s = line, *sp; nf < 7 && s; s = sp ? sp + 1 : NULL) {
        sp = strchr(s, ' ');
        if (sp)
            *sp = '\0';
        f[nf++] = s;
    }
    if (nf >= 2 && strcmp(f[1], "UNKNOWN") == 0) {
        h->local = true;
        return (long)end + 2;
    }
    if (nf != 6 || (strcmp(f[1], "TCP4") != 0 && strcmp(f[1], "TCP6") != 0))
        return -EPROTO;
    int family = f[1][3] == '4' ? AF_INET : AF_INET6;
    if (fill_ip(family, f[2], f[4], &h->src) < 0 || fill_ip(family, f[3], f[5], &h->dst) < 0)
        return -EPROTO;
    return (long)end + 2;
}

static void fill_raw(int family, const uint8_t *addr, const uint8_t *port,
                     struct sockaddr_storage *out)
{
    memset(out, 0, sizeof *out);
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)out;
        a->sin_family = AF_INET;
        memcpy(&a->sin_addr, addr, 4);
        memcpy(&a->sin_port, port, 2);
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)out;
        a->sin6_family = AF_INET6;
        memcpy(&a->sin6_addr, addr, 16);
        memcpy(&a->sin6_port, port, 2);
    }
}

static long parse_v2(const uint8_t *p, size_t n, struct proxy_header *h)
{
    if (n < 16)
        return 0;
    unsigned ver = p[12] >> 4, cmd = p[12] & 15, fam = p[13] >> 4, proto = p[13] & 15;
    size_t len = (size_t)p[14] << 8 | p[15];
    if (ver != 2 || cmd > 1 || fam > 3 || proto > 2)
        return -EPROTO;
    if (len > PROXY_V2_MAX)
        return -E2BIG;
    if (n < 16 + len)
        return 0;
    memset(h, 0, sizeof *h);
    h->version = 2;
    const uint8_t *a = p + 16;
    if (cmd == 0 || fam == 0 || fam == 3) { /* LOCAL, UNSPEC, or unix: the socket's own */
        if (fam == 3 && cmd == 1 && len < 216)
            return -EPROTO;
        h->local = true;
        return (long)(16 + len);
    }
    if (proto != 1) /* a stream server takes stream connections only */
        return -EPROTO;
    if (fam == 1) {
        if (len < 12)
            return -EPROTO;
        fill_raw(AF_INET, a, a + 8, &h->src);
        fill_raw(AF_INET, a + 4, a + 10, &h->dst);
    } else {
        if (len < 36)
            return -EPROTO;
        fill_raw(AF_INET6, a, a + 32, &h->src);
        fill_raw(AF_INET6, a + 16, a + 34, &h->dst);
    }
    return (long)(16 + len);
}

long proxy_parse(const uint8_t *p, size_t n, struct proxy_header *h)
{
    if (n == 0)
        return 0;
    if (p[0] == 'P') {
        for (size_t i = 0; i < n && i < sizeof v1_sig - 1; i++)
            if (p[i] != (uint8_t)v1_sig[i])
                return -EPROTO;
        return n < sizeof v1_sig - 1 ? 0 : parse_v1(p, n, h);
    }
    for (size_t i = 0; i < n && i < sizeof v2_sig; i++)
        if (p[i] != v2_sig[i])
            return -EPROTO;
    return parse_v2(p, n, h);
}

int proxy_format(const struct sockaddr_storage *a, char *out, size_t outlen)
{
    char ip[INET6_ADDRSTRLEN];
    int w;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)a;
        inet_ntop(AF_INET, &s->sin_addr, ip, sizeof ip);
        w = snprintf(out, outlen, "%s:%u", ip, ntohs(s->sin_port));
    } else if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)a;
        inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof ip);
        w = snprintf(out, outlen, "[%s]:%u", ip, ntohs(s->sin6_port));
    } else {
        return -EAFNOSUPPORT;
    }
    return w < 0 || (size_t)w >= outlen ? -ENOSPC : 0;
}

int proxy_cidr_parse(const char *s, struct proxy_cidr *out)
{
    char buf[64];
    size_t n = strlen(s);
    if (n == 0 || n >= sizeof buf)
        return -EINVAL;
    memcpy(buf, s, n + 1);
    char *slash = strchr(buf, '/');
    int bits = -1;
    if (slash) {
        *slash = '\0';
        const char *b = slash + 1;
        if (!*b || strlen(b) > 3)
            return -EINVAL;
        bits = 0;
        for (; *b; b++) {
            if (*b < '0' || *b > '9')
                return -EINVAL;
            bits = bits * 10 + (*b - '0');
        }
    }
    char *ip = buf;
    size_t il = strlen(ip);
    if (il >= 2 && ip[0] == '[' && ip[il - 1] == ']') {
        ip[il - 1] = '\0';
        ip++;
    }
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, ip, out->addr) == 1) {
        out->family = AF_INET;
        if (bits > 32)
            return -EINVAL;
        out->bits = (uint8_t)(bits < 0 ? 32 : bits);
    } else if (inet_pton(AF_INET6, ip, out->addr) == 1) {
        out->family = AF_INET6;
        if (bits > 128)
            return -EINVAL;
        out->bits = (uint8_t)(bits < 0 ? 128 : bits);
    } else {
        return -EINVAL;
    }
    return 0;
}

static bool prefix_equal(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned whole = bits / 8, rest = bits % 8;
    if (memcmp(a, b, whole) != 0)
        return false;
    if (!rest)
        return true;
    uint8_t mask = (uint8_t)(0xFF << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

bool proxy_cidr_match(const struct proxy_cidr *c, const struct sockaddr_storage *a)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    const uint8_t *ip;
    int family = a->ss_family;
    if (family == AF_INET) {
        ip = (const uint8_t *)&((const struct sockaddr_in *)a)->sin_addr;
    } else if (family == AF_INET6) {
        ip = (const uint8_t *)&((const struct sockaddr_in6 *)a)->sin6_addr;
        if (c->family == AF_INET && memcmp(ip, mapped, 12) == 0) {
            ip += 12;
            family = AF_INET;
        }
    } else {
        return false;
    }
    return family == c->family && prefix_equal(ip, c->addr, c->bits);
}
