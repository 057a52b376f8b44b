/* test_proxy: PROXY protocol v1 and v2 headers (HAProxy's specification):
 * the addresses they carry, LOCAL and UNKNOWN, every prefix of a valid
 * header asking for more, the first impossible byte refusing at once,
 * lengths past the caps refused from the header alone, and the bytes after
 * the header left alone. */
#include "proxy.h"
#include "test.h"

#include <arpa/inet.h>
#include <errno.h>

static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

static void check_src(const struct proxy_header *h, const char *want)
{
    char got[64];
    CHECK_EQ(proxy_format(&h->src, got, sizeof got), 0);
    CHECK_STR(got, want);
}

/* Every proper prefix of a whole header needs more; the whole parses. */
static long check_prefixes(const uint8_t *p, size_t n, struct proxy_header *h)
{
    for (size_t i = 0; i < n; i++)
        CHECK_EQ(proxy_parse(p, i, h), 0);
    return proxy_parse(p, n, h);
}

TEST(v1_tcp4_tcp6_unknown)
{
    struct proxy_header h;
    const char *s = "PROXY TCP4 192.0.2.1 198.51.100.7 56324 7700\r\nMSGP";
    size_t hl = strlen(s) - 4;
    CHECK_EQ(check_prefixes((const uint8_t *)s, hl, &h), (long)hl);
    CHECK_EQ(proxy_parse((const uint8_t *)s, strlen(s), &h), (long)hl); /* stops at the line */
    CHECK_EQ(h.version, 1);
    CHECK(!h.local);
    check_src(&h, "192.0.2.1:56324");
    s = "PROXY TCP6 2001:db8::1 ::1 1 65535\r\n";
    CHECK_EQ(proxy_parse((const uint8_t *)s, strlen(s), &h), (long)strlen(s));
    check_src(&h, "[2001:db8::1]:1");
    s = "PROXY UNKNOWN ffff::1 whatever\r\n";
    CHECK_EQ(proxy_parse((const uint8_t *)s, strlen(s), &h), (long)strlen(s));
    CHECK(h.local);
    s = "PROXY UNKNOWN\r\n";
    CHECK_EQ(proxy_parse((const uint8_t *)s, strlen(s), &h), (long)strlen(s));
}

TEST(v1_refusals)
{
    struct proxy_header h;
    static const char *const bad[] = {
        "PROXY TCP4 192.0.2.1 198.51.100.7 56324\r\n",        /* a field short */
        "PROXY TCP4 192.0.2.1 198.51.100.7 56324 7700 9\r\n", /* one too many */
        "PROXY TCP4 192.0.2.1 198.51.100.7 65536 7700\r\n",   /* port */
        "PROXY TCP4 ::1 ::1 1 2\r\n",                          /* family */
        "PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",
        "PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n",                 /* two spaces */
        "PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n",                    /* no \r */
        "PROXY TCP4 1.2.3.4 1.2.3.4 -1 2\r\n",
        "PROXY\r\n",
        "proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n",
        "MSGP",                                               /* a client without a balancer */
        "PROXZ",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_EQ(proxy_parse((const uint8_t *)bad[i], strlen(bad[i]), &h), -EPROTO);
    /* 107 bytes without a line end: too long, not "need more". */
    char longline[200] = "PROXY UNKNOWN ";
    memset(longline + 14, 'x', 150);
    CHECK_EQ(proxy_parse((const uint8_t *)longline, 106, &h), 0);
    CHECK_EQ(proxy_parse((const uint8_t *)longline, 107, &h), -E2BIG);
    CHECK_EQ(proxy_parse((const uint8_t *)longline, 160, &h), -E2BIG);
    /* A NUL inside the line is refused before the line ends. */
    CHECK_EQ(proxy_parse((const uint8_t *)"PROXY TCP4 1\0", 13, &h), -EPROTO);
}

static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const uint8_t *addr, size_t alen)
{
    memcpy(out, sig, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (uint8_t)(alen >> 8);
    out[15] = (uint8_t)alen;
    if (alen)
        memcpy(out + 16, addr, alen);
    return 16 + alen;
}

TEST(v2_families_and_tlvs)
{
    struct proxy_header h;
    uint8_t buf[4096];
    /* TCP over IPv4, with a TLV after the addresses (skipped). */
    uint8_t a4[12 + 7] = {192, 0, 2, 1, 127, 0, 0, 1, 0xDC, 0x04, 0x1E, 0x14,
                          0x04, 0x00, 0x04, 'a', 'b', 'c', 'd'};
    size_t n = v2(buf, 0x21, 0x11, a4, sizeof a4);
    memcpy(buf + n, "MSGP", 4);
    CHECK_EQ(check_prefixes(buf, n, &h), (long)n);
    CHECK_EQ(proxy_parse(buf, n + 4, &h), (long)n);
    CHECK_EQ(h.version, 2);
    CHECK(!h.local);
    check_src(&h, "192.0.2.1:56324");
    /* IPv6. */
    uint8_t a6[36] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1, [31] = 1, [32] = 0, [33] = 80, [34] = 0x1E,
                      [35] = 0x14};
    n = v2(buf, 0x21, 0x21, a6, sizeof a6);
    CHECK_EQ(proxy_parse(buf, n, &h), (long)n);
    check_src(&h, "[2001:db8::1]:80");
    /* LOCAL (a balancer's health check), UNSPEC, and unix: the socket's own. */
    n = v2(buf, 0x20, 0x00, NULL, 0);
    CHECK_EQ(proxy_parse(buf, n, &h), 16);
    CHECK(h.local);
    n = v2(buf, 0x21, 0x00, a4, 5);
    CHECK_EQ(proxy_parse(buf, n, &h), 21);
    CHECK(h.local);
    uint8_t un[216] = {0};
    n = v2(buf, 0x21, 0x31, un, sizeof un);
    CHECK_EQ(proxy_parse(buf, n, &h), (long)n);
    CHECK(h.local);
}

TEST(v2_refusals)
{
    struct proxy_header h;
    uint8_t buf[4096], a4[12] = {0};
    size_t n = v2(buf, 0x11, 0x11, a4, 12); /* version 1 in a v2 header */
    CHECK_EQ(proxy_parse(buf, n, &h), -EPROTO);
    n = v2(buf, 0x22, 0x11, a4, 12);        /* command 2 */
    CHECK_EQ(proxy_parse(buf, n, &h), -EPROTO);
    n = v2(buf, 0x21, 0x41, a4, 12);        /* family 4 */
    CHECK_EQ(proxy_parse(buf, n, &h), -EPROTO);
    n = v2(buf, 0x21, 0x12, a4, 12);        /* datagrams */
    CHECK_EQ(proxy_parse(buf, n, &h), -EPROTO);
    n = v2(buf, 0x21, 0x11, a4, 11);        /* too short for IPv4 */
    CHECK_EQ(proxy_parse(buf, n, &h), -EPROTO);
    n = v2(buf, 0x21, 0x21, a4, 12);        /* too short for IPv6 */
    CHECK_EQ(proxy_parse(buf, n, &h), -EPROTO);
    /* A length past the cap is refused from the 16 bytes alone. */
    v2(buf, 0x21, 0x11, a4, 12);
    buf[14] = (uint8_t)((PROXY_V2_MAX + 1) >> 8);
    buf[15] = (uint8_t)(PROXY_V2_MAX + 1);
    CHECK_EQ(proxy_parse(buf, 16, &h), -E2BIG);
    buf[14] = 0xFF;
    buf[15] = 0xFF;
    CHECK_EQ(proxy_parse(buf, 16, &h), -E2BIG);
    /* The signature is refused at its first wrong byte. */
    memcpy(buf, sig, 12);
    buf[5] = 'x';
    CHECK_EQ(proxy_parse(buf, 6, &h), -EPROTO);
    CHECK_EQ(proxy_parse(buf, 5, &h), 0);
}

static struct sockaddr_storage sa(const char *ip)
{
    struct sockaddr_storage a;
    memset(&a, 0, sizeof a);
    if (strchr(ip, ':')) {
        a.ss_family = AF_INET6;
        inet_pton(AF_INET6, ip, &((struct sockaddr_in6 *)&a)->sin6_addr);
    } else {
        a.ss_family = AF_INET;
        inet_pton(AF_INET, ip, &((struct sockaddr_in *)&a)->sin_addr);
    }
    return a;
}

TEST(cidr_blocks)
{
    struct proxy_cidr c;
    struct sockaddr_storage a;
    CHECK_EQ(proxy_cidr_parse("127.0.0.1", &c), 0);
    a = sa("127.0.0.1");
    CHECK(proxy_cidr_match(&c, &a));
    a = sa("127.0.0.2");
    CHECK(!proxy_cidr_match(&c, &a));
    a = sa("::ffff:127.0.0.1"); /* an IPv4 client on a dual-stack socket */
    CHECK(proxy_cidr_match(&c, &a));
    CHECK_EQ(proxy_cidr_parse("10.1.0.0/15", &c), 0);
    a = sa("10.0.255.255");
    CHECK(proxy_cidr_match(&c, &a));
    a = sa("10.2.0.0");
    CHECK(!proxy_cidr_match(&c, &a));
    CHECK_EQ(proxy_cidr_parse("0.0.0.0/0", &c), 0);
    a = sa("203.0.113.9");
    CHECK(proxy_cidr_match(&c, &a));
    a = sa("::1");
    CHECK(!proxy_cidr_match(&c, &a)); /* families do not mix */
    CHECK_EQ(proxy_cidr_parse("[fd00::]/8", &c), 0);
    a = sa("fdff::1");
    CHECK(proxy_cidr_match(&c, &a));
    a = sa("fe00::1");
    CHECK(!proxy_cidr_match(&c, &a));
    static const char *const bad[] = {"", "1.2.3.4/33", "::1/129", "1.2.3", "1.2.3.4/", "x/8",
                                      "1.2.3.4/8/8", "1.2.3.4/-1", "example.com"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_EQ(proxy_cidr_parse(bad[i], &c), -EINVAL);
}

int main(int argc, char **argv) { return test_main(argc, argv); }
