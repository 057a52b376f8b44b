/* test_msg: the wire format of PROTOCOL.md: the test vectors byte for byte,
 * the splitter (whole, cut, back to back, every violation, early detection,
 * the max_frame edge, a fixed-seed fuzz against a reference model), error
 * payloads and the error and command names. */
#include "msg.h"
#include "test.h"

/* Parses hex digits into out, skipping spaces. Returns the byte count. */
static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = 0;
    int hi = -1;
    for (const char *p = hex; *p; p++) {
        int v;
        if (*p == ' ')
            continue;
        if (*p >= '0' && *p <= '9')
            v = *p - '0';
        else if (*p >= 'a' && *p <= 'f')
            v = *p - 'a' + 10;
        else
            TEST_FAIL("bad hex digit '%c' in %s", *p, hex);
        if (hi < 0) {
            hi = v;
        } else {
            CHECK(n < cap);
            out[n++] = (uint8_t)(hi << 4 | v);
            hi = -1;
        }
    }
    CHECK(hi < 0);
    return n;
}

static void check_hex(const uint8_t *got, size_t n, const char *hex)
{
    uint8_t want[256];
    size_t wn = unhex(hex, want, sizeof want);
    if (n != wn || memcmp(got, want, n) != 0) {
        fprintf(stderr, "  got:  ");
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, "%02x%s", got[i], i % 4 == 3 ? " " : "");
        fprintf(stderr, "\n  want: %s\n", hex);
        TEST_FAIL("bytes differ (%zu vs %zu bytes)", n, wn);
    }
}

/* msg_split on an exact heap copy of p[0..n), so ASan catches any read past n. */
static long split_exact(const uint8_t *p, size_t n, uint32_t max_frame, struct msg_header *h)
{
    uint8_t *copy = malloc(n ? n : 1);
    CHECK(copy != NULL);
    if (n)
        memcpy(copy, p, n);
    long r = msg_split(copy, n, max_frame, h);
    free(copy);
    return r;
}

/* A header with arbitrary field values. */
static void raw_header(uint8_t out[16], uint32_t magic, uint32_t version, uint32_t command,
                       uint32_t length)
{
    msg_put_u32(out, magic);
    msg_put_u32(out + 4, version);
    msg_put_u32(out + 8, command);
    msg_put_u32(out + 12, length);
}

#define MAX_FRAME (1024u * 1024u)

TEST(vector_ping_request)
{
    uint8_t f[18];
    msg_header_encode(f, MSG_CMD_PING, 2);
    memcpy(f + 16, "hi", 2);
    check_hex(f, sizeof f, "4d534750 00000001 00000001 00000002 6869");
}

TEST(vector_ping_reply)
{
    uint8_t f[18];
    msg_header_encode(f, MSG_FLAG_REPLY | MSG_CMD_PING, 2);
    memcpy(f + 16, "hi", 2);
    check_hex(f, sizeof f, "4d534750 00000001 80000001 00000002 6869");
}

TEST(vector_echo_empty)
{
    uint8_t f[16];
    msg_header_encode(f, MSG_CMD_ECHO, 0);
    check_hex(f, sizeof f, "4d534750 00000001 00000002 00000000");
}

TEST(vector_conn_error_bad_magic)
{
    uint8_t f[64];
    memset(f, 0xEE, sizeof f);
    size_t plen = msg_error_payload(f + 16, sizeof f - 16, MSG_ERR_BAD_MAGIC, "bad magic");
    CHECK_EQ(plen, 13);
    CHECK_EQ(MSG_CONN_ERROR, 0xC0000000u);
    msg_header_encode(f, MSG_CONN_ERROR, (uint32_t)plen);
    check_hex(f, 16 + plen, "4d534750 00000001 c0000000 0000000d 00000005 626164206d61676963");
    CHECK_EQ(f[16 + plen], 0xEE); /* nothing written past the payload */
}

TEST(vectors_split_and_decode)
{
    uint8_t f[64];
    struct msg_header h;
    size_t n = unhex("4d534750 00000001 00000001 00000002 6869", f, sizeof f);
    CHECK_EQ(split_exact(f, n, MAX_FRAME, &h), 18);
    CHECK_EQ(h.magic, MSG_MAGIC);
    CHECK_EQ(h.version, 1);
    CHECK_EQ(h.command, MSG_CMD_PING);
    CHECK_EQ(h.length, 2);

    n = unhex("4d534750 00000001 80000001 00000002 6869", f, sizeof f);
    CHECK_EQ(split_exact(f, n, MAX_FRAME, &h), 18);
    CHECK_EQ(h.command, 0x80000001u);

    n = unhex("4d534750 00000001 00000002 00000000", f, sizeof f);
    CHECK_EQ(split_exact(f, n, MAX_FRAME, &h), 16);
    CHECK_EQ(h.command, MSG_CMD_ECHO);
    CHECK_EQ(h.length, 0);

    n = unhex("4d534750 00000001 c0000000 0000000d 00000005 626164206d61676963", f, sizeof f);
    CHECK_EQ(split_exact(f, n, MAX_FRAME, &h), 29);
    CHECK_EQ(h.command, MSG_CONN_ERROR);
    CHECK_EQ(h.length, 13);
    CHECK_EQ(msg_get_u32(f + 16), MSG_ERR_BAD_MAGIC);
}

TEST(header_encode_decode_roundtrip)
{
    static const uint32_t cmds[] = {0, 1, 0x3FFFFFFF, 0x80000001, 0xC0000000, 0xFFFFFFFF};
    static const uint32_t lens[] = {0, 1, 255, 256, 0x01020304, 0xFFFFFFFF};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        for (size_t j = 0; j < sizeof lens / sizeof lens[0]; j++) {
            uint8_t f[16];
            struct msg_header h;
            msg_header_encode(f, cmds[i], lens[j]);
            msg_header_decode(f, &h);
            CHECK_EQ(h.magic, MSG_MAGIC);
            CHECK_EQ(h.version, MSG_VERSION);
            CHECK_EQ(h.command, cmds[i]);
            CHECK_EQ(h.length, lens[j]);
            CHECK_EQ(f[12], lens[j] >> 24); /* big-endian */
            CHECK_EQ(f[15], lens[j] & 0xFF);
        }
    }
    uint8_t b[4];
    msg_put_u32(b, 0x01020304);
    CHECK_MEM(b, "\x01\x02\x03\x04", 4);
    CHECK_EQ(msg_get_u32((const uint8_t *)"\xFF\x00\x80\x01"), 0xFF008001u);
}

TEST(split_whole_frame)
{
    uint8_t f[16 + 300];
    struct msg_header h;
    msg_header_encode(f, MSG_CMD_ECHO, 300);
    for (int i = 0; i < 300; i++)
        f[16 + i] = (uint8_t)i;
    memset(&h, 0, sizeof h);
    CHECK_EQ(split_exact(f, sizeof f, MAX_FRAME, &h), 316);
    CHECK_EQ(h.magic, MSG_MAGIC);
    CHECK_EQ(h.version, MSG_VERSION);
    CHECK_EQ(h.command, MSG_CMD_ECHO);
    CHECK_EQ(h.length, 300);

    /* Extra bytes after the frame do not change the answer. */
    uint8_t g[16 + 300 + 7];
    memcpy(g, f, sizeof f);
    memcpy(g + sizeof f, "MSGPxyz", 7);
    CHECK_EQ(split_exact(g, sizeof g, MAX_FRAME, &h), 316);
    CHECK_EQ(h.length, 300);
}

TEST(split_every_prefix_needs_more)
{
    static const uint32_t lens[] = {0, 1, 2, 37, 1000};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        uint32_t len = lens[k];
        size_t total = 16 + len;
        uint8_t *f = malloc(total);
        CHECK(f != NULL);
        msg_header_encode(f, 0x80000000u | MSG_CMD_PUBLISH, len);
        for (uint32_t i = 0; i < len; i++)
            f[16 + i] = (uint8_t)(i * 7 + 0x4D); /* payload may look like anything */
        for (size_t n = 0; n < total; n++) {
            struct msg_header h;
            long r = split_exact(f, n, MAX_FRAME, &h);
            if (r != 0)
                TEST_FAIL("length %u cut at %zu: got %ld, want 0", len, n, r);
        }
        struct msg_header h;
        CHECK_EQ(split_exact(f, total, MAX_FRAME, &h), (long)total);
        CHECK_EQ(h.length, len);
        free(f);
    }
}

TEST(split_back_to_back)
{
    static const uint32_t lens[] = {2, 0, 1, 5, 300, 0, 16, 3};
    uint8_t stream[4096];
    size_t n = 0;
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        msg_header_encode(stream + n, (uint32_t)(100 + i), lens[i]);
        n += 16;
        for (uint32_t j = 0; j < lens[i]; j++)
            stream[n++] = (uint8_t)(i + j);
    }
    size_t off = 0;
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        struct msg_header h;
        long r = split_exact(stream + off, n - off, MAX_FRAME, &h);
        CHECK_EQ(r, 16 + (long)lens[i]);
        CHECK_EQ(h.command, 100 + i);
        CHECK_EQ(h.length, lens[i]);
        for (uint32_t j = 0; j < lens[i]; j++)
            CHECK_EQ(stream[off + 16 + j], (uint8_t)(i + j));
        off += (size_t)r;
    }
    CHECK_EQ(off, n);
    struct msg_header h;
    CHECK_EQ(split_exact(stream + off, 0, MAX_FRAME, &h), 0);

    /* The last frame half there: the earlier ones split, then "need more". */
    size_t cut = n - 2;
    off = 0;
    for (size_t i = 0; i + 1 < sizeof lens / sizeof lens[0]; i++) {
        long r = split_exact(stream + off, cut - off, MAX_FRAME, &h);
        CHECK_EQ(r, 16 + (long)lens[i]);
        off += (size_t)r;
    }
    CHECK_EQ(split_exact(stream + off, cut - off, MAX_FRAME, &h), 0);
}

TEST(split_bad_magic_early)
{
    struct msg_header h;
    const uint8_t *s = (const uint8_t *)"MSGP";
    CHECK_EQ(split_exact((const uint8_t *)"G", 1, MAX_FRAME, &h), -MSG_ERR_BAD_MAGIC);
    CHECK_EQ(split_exact((const uint8_t *)"\0", 1, MAX_FRAME, &h), -MSG_ERR_BAD_MAGIC);
    CHECK_EQ(split_exact((const uint8_t *)"m", 1, MAX_FRAME, &h), -MSG_ERR_BAD_MAGIC);
    CHECK_EQ(split_exact(s, 0, MAX_FRAME, &h), 0);
    CHECK_EQ(split_exact(s, 1, MAX_FRAME, &h), 0);
    CHECK_EQ(split_exact(s, 2, MAX_FRAME, &h), 0);
    CHECK_EQ(split_exact(s, 3, MAX_FRAME, &h), 0);
    CHECK_EQ(split_exact(s, 4, MAX_FRAME, &h), 0);
    CHECK_EQ(split_exact((const uint8_t *)"MX", 2, MAX_FRAME, &h), -MSG_ERR_BAD_MAGIC);
    CHECK_EQ(split_exact((const uint8_t *)"MSX", 3, MAX_FRAME, &h), -MSG_ERR_BAD_MAGIC);
    CHECK_EQ(split_exact((const uint8_t *)"MSGQ", 4, MAX_FRAME, &h), -MSG_ERR_BAD_MAGIC);
    CHECK_EQ(split_exact((const uint8_t *)"GET / HTTP/1.1\r\n", 16, MAX_FRAME, &h),
             -MSG_ERR_BAD_MAGIC);

    /* Bad magic wins over a bad version and a bad length. */
    uint8_t f[16];
    raw_header(f, 0x4D534751, 7, 1, 0xFFFFFFFF);
    for (size_t n = 4; n <= 16; n++)
        CHECK_EQ(split_exact(f, n, MAX_FRAME, &h), -MSG_ERR_BAD_MAGIC);
}

TEST(split_byte_swapped_magic)
{
    struct msg_header h;
    uint8_t f[18];
    raw_header(f, 0x5047534D, 1, 1, 2);
    memcpy(f + 16, "hi", 2);
    CHECK_MEM(f, "PGSM", 4);
    for (size_t n = 1; n <= sizeof f; n++)
        CHECK_EQ(split_exact(f, n, MAX_FRAME, &h), -MSG_ERR_BAD_MAGIC);
}

TEST(split_bad_version)
{
    static const uint32_t versions[] = {0, 2, 0xFFFFFFFF, 0x00000101, 0x01000000, 0x10};
    struct msg_header h;
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        uint8_t f[20];
        raw_header(f, MSG_MAGIC, versions[i], MSG_CMD_PING, 4);
        memcpy(f + 16, "abcd", 4);
        /* From the 8th byte on, whatever follows. */
        for (size_t n = 8; n <= sizeof f; n++) {
            long r = split_exact(f, n, MAX_FRAME, &h);
            if (r != -MSG_ERR_BAD_VERSION)
                TEST_FAIL("version 0x%08x, n=%zu: got %ld", versions[i], n, r);
        }
    }
    /* A version that could still become 1 is not refused before its 4 bytes. */
    uint8_t f[16];
    raw_header(f, MSG_MAGIC, 0, 1, 0); /* 00 00 00 | 00 */
    CHECK_EQ(split_exact(f, 5, MAX_FRAME, &h), 0);
    CHECK_EQ(split_exact(f, 6, MAX_FRAME, &h), 0);
    CHECK_EQ(split_exact(f, 7, MAX_FRAME, &h), 0);
    CHECK_EQ(split_exact(f, 8, MAX_FRAME, &h), -MSG_ERR_BAD_VERSION);
    raw_header(f, MSG_MAGIC, 2, 1, 0); /* 00 00 00 | 02 */
    CHECK_EQ(split_exact(f, 7, MAX_FRAME, &h), 0);
    CHECK_EQ(split_exact(f, 8, MAX_FRAME, &h), -MSG_ERR_BAD_VERSION);
}

TEST(split_bad_version_early)
{
    struct msg_header h;
    uint8_t f[16];
    /* First version byte 0x01: version >= 0x01000000, never 1. */
    raw_header(f, MSG_MAGIC, 0x01000000, 1, 0);
    CHECK_EQ(split_exact(f, 4, MAX_FRAME, &h), 0);
    CHECK_EQ(split_exact(f, 5, MAX_FRAME, &h), -MSG_ERR_BAD_VERSION);
    CHECK_EQ(split_exact(f, 6, MAX_FRAME, &h), -MSG_ERR_BAD_VERSION);
    /* 0xFFFFFFFF: refused at its first byte. */
    raw_header(f, MSG_MAGIC, 0xFFFFFFFF, 1, 0);
    CHECK_EQ(split_exact(f, 5, MAX_FRAME, &h), -MSG_ERR_BAD_VERSION);
    /* 00 01 ..: refused at the second byte. */
    raw_header(f, MSG_MAGIC, 0x00010000, 1, 0);
    CHECK_EQ(split_exact(f, 5, MAX_FRAME, &h), 0);
    CHECK_EQ(split_exact(f, 6, MAX_FRAME, &h), -MSG_ERR_BAD_VERSION);
    /* 00 00 01 ..: refused at the third byte. */
    raw_header(f, MSG_MAGIC, 0x00000100, 1, 0);
    CHECK_EQ(split_exact(f, 6, MAX_FRAME, &h), 0);
    CHECK_EQ(split_exact(f, 7, MAX_FRAME, &h), -MSG_ERR_BAD_VERSION);
    /* The good version: "need more" at every cut of the version field. */
    raw_header(f, MSG_MAGIC, 1, 1, 0);
    for (size_t n = 4; n < 16; n++)
        CHECK_EQ(split_exact(f, n, MAX_FRAME, &h), 0);
}

TEST(split_too_large_from_header)
{
    static const uint32_t maxes[] = {MAX_FRAME, 16384, 0, 1};
    for (size_t m = 0; m < sizeof maxes / sizeof maxes[0]; m++) {
        uint32_t max = maxes[m];
        const uint32_t lens[] = {max + 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF};
        for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
            uint8_t f[16];
            struct msg_header h;
            msg_header_encode(f, MSG_CMD_ECHO, lens[i]);
            long r = split_exact(f, 16, max, &h); /* the header alone, no payload */
            if (r != -MSG_ERR_TOO_LARGE)
                TEST_FAIL("max %u, length 0x%08x: got %ld", max, lens[i], r);
            /* Not before the length is complete. */
            for (size_t n = 0; n < 16; n++)
                CHECK_EQ(split_exact(f, n, max, &h), 0);
        }
    }
}

TEST(split_length_equal_max_accepted)
{
    static const uint32_t maxes[] = {0, 1, 1000, 65536};
    for (size_t m = 0; m < sizeof maxes / sizeof maxes[0]; m++) {
        uint32_t max = maxes[m];
        size_t total = 16 + (size_t)max;
        uint8_t *f = malloc(total);
        CHECK(f != NULL);
        msg_header_encode(f, MSG_CMD_ECHO, max);
        memset(f + 16, 'x', max);
        struct msg_header h;
        if (max > 0) {
            CHECK_EQ(split_exact(f, 16, max, &h), 0);
            CHECK_EQ(split_exact(f, total - 1, max, &h), 0);
        }
        memset(&h, 0, sizeof h);
        CHECK_EQ(split_exact(f, total, max, &h), (long)total);
        CHECK_EQ(h.length, max);
        /* And one byte under the limit too. */
        if (max > 0) {
            msg_header_encode(f, MSG_CMD_ECHO, max - 1);
            CHECK_EQ(split_exact(f, total - 1, max, &h), (long)total - 1);
        }
        free(f);
    }
    /* The whole u32 range allowed: 0xFFFFFFFF is not too large, just incomplete. */
    uint8_t g[16];
    struct msg_header h;
    msg_header_encode(g, MSG_CMD_ECHO, 0xFFFFFFFF);
    CHECK_EQ(split_exact(g, 16, 0xFFFFFFFF, &h), 0);
}

TEST(split_violation_is_sticky)
{
    /* Once refused, more bytes never make a frame acceptable. */
    uint8_t f[40];
    struct msg_header h;
    raw_header(f, MSG_MAGIC, 1, 1, 24);
    memset(f + 16, 0, 24);
    f[2] = 'X';
    for (size_t n = 3; n <= sizeof f; n++)
        CHECK_EQ(split_exact(f, n, MAX_FRAME, &h), -MSG_ERR_BAD_MAGIC);
    raw_header(f, MSG_MAGIC, 1, 1, 24);
    f[6] = 9;
    for (size_t n = 7; n <= sizeof f; n++)
        CHECK_EQ(split_exact(f, n, MAX_FRAME, &h), -MSG_ERR_BAD_VERSION);
    raw_header(f, MSG_MAGIC, 1, 1, 24);
    for (size_t n = 16; n <= sizeof f; n++)
        CHECK_EQ(split_exact(f, n, 23, &h), -MSG_ERR_TOO_LARGE);
}

/* xorshift64*: a fixed-seed generator, so a failure reproduces. */
static uint64_t rng_state = 0x853C49E6748FEA9Bull;

static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static size_t rng_below(size_t n)
{
    return n ? (size_t)(rng() % n) : 0;
}

/* The splitter's contract, written out independently: each byte of magic and
 * version is checked as soon as it is in; then the length; then the payload. */
static long model_split(const uint8_t *p, size_t n, uint32_t max_frame)
{
    static const uint8_t want[8] = {'M', 'S', 'G', 'P', 0, 0, 0, 1};
    for (size_t i = 0; i < 8 && i < n; i++)
        if (p[i] != want[i])
            return i < 4 ? -MSG_ERR_BAD_MAGIC : -MSG_ERR_BAD_VERSION;
    if (n < 16)
        return 0;
    uint32_t len = (uint32_t)p[12] << 24 | (uint32_t)p[13] << 16 | (uint32_t)p[14] << 8 | p[15];
    if (len > max_frame)
        return -MSG_ERR_TOO_LARGE;
    return n >= 16 + (size_t)len ? 16 + (long)len : 0;
}

TEST(split_fuzz_never_exceeds_n)
{
    enum { ITER = 200000, MAXLEN = 200 };
    uint8_t buf[MAXLEN];
    long counts[4] = {0}; /* frames, need-more, violations, random-garbage cases */
    for (int it = 0; it < ITER; it++) {
        size_t blen = rng_below(MAXLEN + 1);
        unsigned mode = (unsigned)rng_below(4);
        for (size_t i = 0; i < blen; i++)
            buf[i] = (uint8_t)rng();
        if (mode > 0 && blen >= 16) {
            /* Mostly a plausible header with a small length, then mutations. */
            msg_header_encode(buf, (uint32_t)rng(), (uint32_t)rng_below(MAXLEN));
            size_t muts = mode == 1 ? 0 : rng_below(3);
            for (size_t k = 0; k < muts; k++)
                buf[rng_below(16)] ^= (uint8_t)(1u << rng_below(8));
        } else {
            counts[3]++;
        }
        size_t n = rng_below(blen + 1);
        uint32_t max_frame;
        switch (rng_below(4)) {
        case 0: max_frame = 0; break;
        case 1: max_frame = (uint32_t)rng_below(MAXLEN); break;
        case 2: max_frame = MAX_FRAME; break;
        default: max_frame = (uint32_t)rng(); break;
        }
        struct msg_header h = {0, 0, 0, 0};
        long r = split_exact(buf, n, max_frame, &h);
        if (r > (long)n)
            TEST_FAIL("iteration %d: result %ld exceeds n=%zu", it, r, n);
        if (r > 0) {
            if (r != 16 + (long)h.length)
                TEST_FAIL("iteration %d: result %ld but header length %u", it, r, h.length);
            CHECK(h.length <= max_frame);
            CHECK_EQ(h.magic, MSG_MAGIC);
            CHECK_EQ(h.version, MSG_VERSION);
            CHECK_EQ(h.command, msg_get_u32(buf + 8));
            CHECK_EQ(h.length, msg_get_u32(buf + 12));
            counts[0]++;
        } else if (r == 0) {
            counts[1]++;
        } else {
            CHECK(r == -MSG_ERR_BAD_MAGIC || r == -MSG_ERR_BAD_VERSION || r == -MSG_ERR_TOO_LARGE);
            counts[2]++;
        }
        long want = model_split(buf, n, max_frame);
        if (r != want)
            TEST_FAIL("iteration %d: n=%zu max=%u: got %ld, model says %ld", it, n, max_frame,
                      r, want);
    }
    /* Every outcome was exercised often. */
    CHECK(counts[0] > 1000);
    CHECK(counts[1] > 1000);
    CHECK(counts[2] > 1000);
    CHECK(counts[3] > 1000);
}

TEST(error_payload_truncates_to_cap)
{
    uint8_t out[32];
    /* Too small for the code: nothing written. */
    for (size_t cap = 0; cap < 4; cap++) {
        memset(out, 0xEE, sizeof out);
        CHECK_EQ(msg_error_payload(out, cap, 5, "bad magic"), 0);
        for (size_t i = 0; i < sizeof out; i++)
            CHECK_EQ(out[i], 0xEE);
    }
    memset(out, 0xEE, sizeof out);
    CHECK_EQ(msg_error_payload(out, 4, MSG_ERR_TOO_LARGE, "too large"), 4);
    CHECK_MEM(out, "\0\0\0\x04", 4);
    CHECK_EQ(out[4], 0xEE);

    for (size_t cap = 5; cap <= 13; cap++) {
        memset(out, 0xEE, sizeof out);
        CHECK_EQ(msg_error_payload(out, cap, 0x01020304, "bad magic"), cap);
        CHECK_MEM(out, "\x01\x02\x03\x04", 4);
        CHECK_MEM(out + 4, "bad magic", cap - 4);
        CHECK_EQ(out[cap], 0xEE);
    }
    memset(out, 0xEE, sizeof out);
    CHECK_EQ(msg_error_payload(out, sizeof out, 5, "bad magic"), 13);
    CHECK_MEM(out, "\0\0\0\x05" "bad magic", 13);
    CHECK_EQ(out[13], 0xEE); /* no terminating NUL */

    /* No text, empty text. */
    memset(out, 0xEE, sizeof out);
    CHECK_EQ(msg_error_payload(out, sizeof out, 7, NULL), 4);
    CHECK_MEM(out, "\0\0\0\x07", 4);
    CHECK_EQ(out[4], 0xEE);
    CHECK_EQ(msg_error_payload(out, sizeof out, 0xFFFFFFFF, ""), 4);
    CHECK_MEM(out, "\xFF\xFF\xFF\xFF", 4);
    CHECK_EQ(out[4], 0xEE);
}

TEST(error_names)
{
    static const char *const names[] = {
        NULL, "UNKNOWN_COMMAND", "BAD_PAYLOAD", "NOT_AUTHENTICATED", "TOO_LARGE",
        "BAD_MAGIC", "BAD_VERSION", "OVERLOADED", "SHUTTING_DOWN", "DISABLED",
        "IDLE_TIMEOUT", "AUTH_FAILED", "LIMIT_EXCEEDED",
    };
    CHECK_EQ(MSG_ERR_MAX, 12);
    for (uint32_t c = 1; c <= 12; c++)
        CHECK_STR(msg_error_name(c), names[c]);
    CHECK_STR(msg_error_name(MSG_ERR_BAD_MAGIC), "BAD_MAGIC");
    CHECK_STR(msg_error_name(0), "UNKNOWN");
    CHECK_STR(msg_error_name(13), "UNKNOWN");
    CHECK_STR(msg_error_name(100), "UNKNOWN");
    CHECK_STR(msg_error_name(0x80000005), "UNKNOWN");
    CHECK_STR(msg_error_name(0xFFFFFFFF), "UNKNOWN");
}

TEST(command_names)
{
    CHECK_STR(msg_command_name(1), "PING");
    CHECK_STR(msg_command_name(2), "ECHO");
    CHECK_STR(msg_command_name(3), "AUTH");
    CHECK_STR(msg_command_name(4), "STATS");
    CHECK_STR(msg_command_name(5), "DELAY");
    CHECK_STR(msg_command_name(16), "SUBSCRIBE");
    CHECK_STR(msg_command_name(17), "UNSUBSCRIBE");
    CHECK_STR(msg_command_name(18), "PUBLISH");
    CHECK_STR(msg_command_name(19), "MESSAGE");
    CHECK_STR(msg_command_name(20), "GOAWAY");
    CHECK(msg_command_name(0) == NULL);
    CHECK_STR(msg_command_name(6), "HELLO");
    for (uint32_t c = 7; c <= 15; c++)
        CHECK(msg_command_name(c) == NULL);
    CHECK(msg_command_name(21) == NULL);
    CHECK(msg_command_name(MSG_CMD_MASK) == NULL);
    CHECK(msg_command_name(0xFFFFFFFF) == NULL);
}

int main(int argc, char **argv) { return test_main(argc, argv); }
