#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets, deterministically:

    tests/fuzz/corpus/msg_stream/   the PROTOCOL.md test vectors, pipelined
                                    frames, every malformed header, unknown
                                    commands, client replies, auth, drain
    tests/fuzz/corpus/config/       conf/msgd.ini and a variant per kind of error
    tests/fuzz/corpus/admin/        command lines
    tests/fuzz/corpus/codec/        compressed payloads: zstd and deflate,
                                    valid, cut short, with trailing bytes,
                                    lying about their size, and bombs
    tests/fuzz/corpus/http/         request heads: keep-alive, pipelined, every
                                    refusal (400, 413, 431, 505), HEAD, HTTP/1.0
    tests/fuzz/corpus/proxy/        PROXY protocol v1 and v2 headers: every
                                    family, LOCAL, UNKNOWN, TLVs, refusals
    tests/fuzz/<target>.dict        libFuzzer dictionaries

Each corpus directory is emptied and rewritten, so running this again gives
the same files. Python 3 standard library only.

    python3 tests/fuzz/make_corpus.py
"""
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

MAGIC = 0x4D534750
REPLY = 0x80000000
ERROR = 0x40000000
CONN_ERROR = REPLY | ERROR

# fuzz_msg_stream's parameter bytes (see the top of fuzz_msg_stream.c).
MAX_FRAMES = [64, 65, 100, 127, 255, 256, 1000, 1024,
              1025, 4096, 16383, 16384, 16385, 65536, 1 << 20, 256 << 20]
AUTH, DRAINING, SMALL_HIGH, SMALL_TURN = 0x10, 0x20, 0x40, 0x80
CHUNK_1, CHUNK_7, CHUNK_64, CHUNK_4096 = 0, 1, 2, 3


def frame(command, payload=b"", magic=MAGIC, version=1, length=None):
    if length is None:
        length = len(payload)
    return struct.pack(">IIII", magic, version, command, length) + payload


def err_payload(code, text):
    return struct.pack(">I", code) + text.encode()


MAX_SUBS = [64, 1, 2, 3]


def msg_params(max_frame=1 << 20, flags=0, chunk=CHUNK_7, seed=0x1234, max_subs=64):
    return bytes([MAX_FRAMES.index(max_frame) | flags, chunk | MAX_SUBS.index(max_subs) << 2,
                  seed >> 8 & 255, seed & 255])


def publish(topic, message):
    return frame(18, bytes([len(topic)]) + topic + message)


def msg_corpus():
    ping_hi = bytes.fromhex("4d534750000000010000000100000002" "6869")
    ping_reply = bytes.fromhex("4d534750000000018000000100000002" "6869")
    echo_empty = bytes.fromhex("4d534750000000010000000200000000")
    bad_magic_err = bytes.fromhex("4d53475000000001c00000000000000d" "00000005626164206d61676963")
    assert ping_hi == frame(1, b"hi") and echo_empty == frame(2)
    assert bad_magic_err == frame(CONN_ERROR, err_payload(5, "bad magic"))
    p = msg_params
    c = {
        # PROTOCOL.md test vectors
        "vector_ping_hi": p() + ping_hi,
        "vector_ping_reply": p() + ping_reply,
        "vector_echo_empty": p() + echo_empty,
        "vector_bad_magic_error": p() + bad_magic_err,
        # sticky and half packets
        "pipelined": p(chunk=CHUNK_7) + ping_hi + echo_empty + frame(2, b"hello")
        + frame(4) + frame(3, b"any") + frame(5, struct.pack(">I", 10) + b"zz") + ping_hi,
        "pipelined_bytewise": p(chunk=CHUNK_1, seed=7) + frame(1, b"a" * 40) + frame(2, b"b" * 70)
        + ping_hi,
        "pipelined_small_turns": p(max_frame=1024, flags=SMALL_HIGH | SMALL_TURN, chunk=CHUNK_64)
        + b"".join(frame(2, bytes([i]) * 30) for i in range(12)),
        "partial_last_frame": p() + ping_hi + frame(2, b"hello")[:11],
        "partial_last_payload": p() + frame(2, b"x" * 20, length=30),
        "stats_between": p() + ping_hi + frame(4) + ping_hi,
        # malformed headers: each a connection-level error, then a close
        "bad_magic": p() + frame(1, b"hi", magic=0x58534750),
        "bad_magic_swapped": p() + frame(1, b"hi", magic=0x5047534D),
        "bad_magic_after_frames": p() + ping_hi + echo_empty + b"MSGX" + ping_hi,
        "bad_version_0": p() + frame(1, b"hi", version=0),
        "bad_version_2": p() + frame(1, b"hi", version=2),
        "bad_version_ffffffff": p() + frame(1, b"hi", version=0xFFFFFFFF),
        "too_large_max_plus_1": p(max_frame=1024) + ping_hi + frame(2, length=1025) + b"x" * 40,
        "too_large_7fffffff": p() + frame(2, length=0x7FFFFFFF),
        "too_large_80000000": p() + frame(2, length=0x80000000),
        "too_large_ffffffff": p() + frame(2, length=0xFFFFFFFF),
        "http_get": p() + b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "ping_over_1k": p(max_frame=4096) + frame(1, b"p" * 1025) + ping_hi,
        # unknown commands: answered, the connection goes on
        "unknown_commands": p() + frame(0) + frame(6) + frame(19, b"\x01tx") + frame(20, b"\0\0\0\1")
        + frame(16, b"topic") + frame(0x3FFFFFFF) + frame(ERROR | 1, b"hi") + ping_hi,
        # client replies: no answer
        "client_replies": p() + ping_reply + frame(REPLY | 2, b"x") + frame(CONN_ERROR | 1)
        + bad_magic_err + ping_hi,
        # identities and DIRECT: to itself (a DELIVER push), to nobody, before AUTH,
        # bad payloads; then with tokens, tom's token gives the identity tom
        "direct_self": p(chunk=CHUNK_64) + frame(21, b"\x03bobyo") + frame(3, b"bob")
        + frame(21, b"\x03bobyo") + frame(21, b"\x05nobodyx") + frame(21, b"") + frame(21, b"\x09ab")
        + frame(3, b"") + ping_hi,
        "direct_tokens": p(flags=AUTH) + frame(3, b"tok") + frame(21, b"\x03tomhi")
        + frame(3, b"s3cret") + frame(21, b"\x03tomhi") + ping_hi,
        # auth on (tokens "s3cret" and "tom:tok")
        "auth_ok": p(flags=AUTH) + frame(2, b"early") + frame(3, b"s3cret") + frame(2, b"late")
        + frame(4),
        "auth_third_failure": p(flags=AUTH) + frame(3, b"a") + frame(3, b"b") + ping_hi
        + frame(3, b"c") + ping_hi,
        "auth_preauth_too_large": p(flags=AUTH) + frame(1, b"hi") + frame(2, length=16385),
        "auth_then_large": p(max_frame=65536, flags=AUTH, chunk=CHUNK_4096) + frame(3, b"tok")
        + frame(2, b"L" * 2000),
        # publish/subscribe on one connection (the publisher is its own subscriber)
        "pubsub": p(chunk=CHUNK_64) + frame(16, b"news") + publish(b"news", b"hello") + ping_hi
        + frame(17, b"news") + publish(b"news", b"gone") + frame(17, b"never") + ping_hi,
        "pubsub_bad_payloads": p() + frame(16) + frame(16, b"t" * 256) + frame(17) + frame(18)
        + frame(18, b"\x00x") + frame(18, b"\x05news") + frame(18, b"\x01") + ping_hi,
        "pubsub_limit": p(max_subs=1) + frame(16, b"a") + frame(16, b"b") + frame(16, b"a")
        + frame(17, b"a") + frame(16, b"b") + publish(b"b", b"m"),
        "pubsub_slow_subscriber": p(max_frame=4096, flags=SMALL_HIGH, chunk=CHUNK_4096)
        + frame(16, b"t") + b"".join(publish(b"t", bytes([65 + i]) * 100) for i in range(4)),
        # MESSAGEs of 2 KiB and more are shared pieces among the replies
        # (outq.h): small and big ones interleaved with PINGs
        "pubsub_shared_pieces": p(max_frame=65536, chunk=CHUNK_4096) + frame(16, b"s")
        + publish(b"s", b"B" * 3000) + ping_hi + publish(b"s", b"b" * 10) + ping_hi
        + publish(b"s", b"C" * 2030) + publish(b"s", b"D" * 9000) + ping_hi,
        "pubsub_then_violation": p(chunk=CHUNK_1) + frame(16, b"x") + publish(b"x", b"1") + ping_hi
        + b"MSGQ",
        # drain: SHUTTING_DOWN but for PING
        "draining": p(flags=DRAINING) + ping_hi + frame(2, b"x") + frame(5, b"\0\0\0\0") + ping_hi,
        # draining: a word with PING's number and a flag (COMPRESSED, ERROR) is
        # not PING: SHUTTING_DOWN, like any other command (fuzz_msg_stream
        # found ERROR | PING answered UNKNOWN_COMMAND)
        "draining_compressed_words": p(flags=DRAINING) + frame(0x20000001) + frame(0x3FFFFFFF)
        + frame(0x40000001, b"hi") + frame(6) + ping_hi,
    }
    return c


def config_corpus():
    with open(os.path.join(ROOT, "conf", "msgd.ini"), "rb") as f:
        full = f.read()
    c = {
        "msgd_ini": full,
        "empty": b"",
        "minimal": b"[msg]\nlisten = 127.0.0.1:0\n",
        "every_syntax": (
            b"\xef\xbb\xbf; bom and crlf\r\n[server]\r\nreactors = 4\r\nworkers=1\r\n"
            b"user = msgd_user.1\r\n[msg]\r\nlisten = [::1]:7700, unix:/run/msgd.sock ,localhost:1\r\n"
            b"max_frame = 64K\r\n[echo]\r\nlisten = 0.0.0.0:7\r\n[admin]\r\nlisten =\r\n"
            b"[timeouts]\r\nheartbeat_interval = 1.5s\r\nidle_timeout = 2m\r\n"
            b"drain_timeout = 250ms\r\n[limits]\r\noutput_high_water = 2m\r\n"
            b"output_low_water = 1k\r\noutput_hard_limit = 1G\r\nmax_subscriptions = 1\r\n"
            b"[auth]\r\ntokens = a, bb ,ccc\r\n[log]\r\nlevel = DEBUG\r\n"
            b"[diagnostics]\r\ndelay_command = yes\r\n# done\r\n"),
        "timeouts_off": b"[timeouts]\nheartbeat_interval = 0\nidle_timeout = 0\n",
        "section_twice": b"[server]\nworkers = 3\n[msg]\nmax_frame = 128\n[server]\nbacklog = 5\n",
        # one kind of error each
        "err_unknown_section": b"[nope]\nkey = 1\n[server]\nworkers = 2\n",
        "err_unknown_key": b"[server]\nthreads = 4\n",
        "err_duplicate_key": b"[server]\nworkers = 2\nworkers = 3\n",
        "err_outside_section": b"workers = 2\n",
        "err_no_bracket": b"[server\nworkers = 2\n",
        "err_text_after_bracket": b"[server] extra\n",
        "err_not_key_value": b"[server]\njust words\n",
        "err_long_line": b"[auth]\ntokens = " + b"t" * 200 + b"\n",
        "err_nul_byte": b"[server]\nworkers = 2\x00\n",
        "err_bad_duration": b"[timeouts]\nheartbeat_interval = 5 parsecs\n",
        "err_bad_size": b"[msg]\nmax_frame = 1T\n",
        "err_range": b"[server]\nreactors = 257\nworkers = 0\n[msg]\nmax_frame = 63\n",
        "err_bad_bool": b"[diagnostics]\ndelay_command = maybe\n",
        "err_bad_level": b"[log]\nlevel = loud\n",
        "err_bad_user": b"[server]\nuser = root;rm\n",
        "err_bad_listen": b"[msg]\nlisten = 127.0.0.1:70000, [fe80::1:80\n",
        "err_too_many_addrs": b"[echo]\nlisten = " + b",".join(b"[::]:%d" % i for i in range(17)) + b"\n",
        "err_long_token": b"[auth]\ntokens = ok," + b"x" * 129 + b"\n",
        "err_idle_le_heartbeat": b"[timeouts]\nheartbeat_interval = 30s\nidle_timeout = 30s\n",
        "err_low_ge_high": b"[limits]\noutput_high_water = 1M\noutput_low_water = 1M\n",
        "err_hard_too_small": b"[msg]\nmax_frame = 1M\n[limits]\noutput_hard_limit = 2M\n",
    }
    return c


# zstd frames made once with python3-zstandard (kept as hex so that this
# script needs only the standard library): text with its size, 1 MiB of
# zeros with and without its size, and an empty frame without a size.
ZSTD_TEXT = bytes.fromhex(
    "28b52ffd607002b50100b40274686520717569636b2062726f776e20666f78206a756d7073206f766572"
    "20746865206c617a7920646f6702003d9f2a30686719")
ZSTD_MIB = bytes.fromhex(
    "28b52ffda0000010004c000008000100fcff39100202001000020010000200100002001000020010000200"
    "100003001000")
ZSTD_MIB_NO_SIZE = bytes.fromhex(
    "28b52ffd00585400001000000100fbff39c00202001000020010000200100002001000020010000200100002"
    "001000010000")
ZSTD_EMPTY_NO_SIZE = bytes.fromhex("28b52ffd0000010000")

# fuzz_codec's parameter byte: codec bit, then the bound's index.
CODEC_BOUNDS = [0, 1, 100, 4096, 65536, 65537, 1 << 20, 4 << 20]


def codec_params(codec, bound):
    return bytes([(1 if codec == "deflate" else 0) | CODEC_BOUNDS.index(bound) << 1])


def codec_corpus():
    import zlib
    text = b"the quick brown fox jumps over the lazy dog " * 20
    z = lambda data, level=6: zlib.compress(data, level)
    zp = lambda bound: codec_params("zstd", bound)
    dp = lambda bound: codec_params("deflate", bound)
    lying = bytearray(ZSTD_TEXT)
    lying[5] ^= 0x10  # the declared content size, changed
    return {
        "zstd_text": zp(4096) + ZSTD_TEXT,
        "zstd_text_exact": zp(1 << 20) + ZSTD_TEXT,
        "zstd_text_too_small": zp(100) + ZSTD_TEXT,
        "zstd_cut": zp(4096) + ZSTD_TEXT[:-5],
        "zstd_trailing": zp(4096) + ZSTD_TEXT + b"\0",
        "zstd_two_frames": zp(4096) + ZSTD_TEXT + ZSTD_TEXT,
        "zstd_lying_size": zp(4096) + bytes(lying),
        "zstd_bomb": zp(65536) + ZSTD_MIB,
        "zstd_bomb_no_size": zp(65537) + ZSTD_MIB_NO_SIZE,
        "zstd_mib_fits": zp(4 << 20) + ZSTD_MIB_NO_SIZE,
        "zstd_empty": zp(0) + ZSTD_EMPTY_NO_SIZE,
        "zstd_garbage": zp(4096) + b"not zstd at all",
        "deflate_text": dp(4096) + z(text),
        "deflate_text_too_small": dp(100) + z(text),
        "deflate_cut": dp(4096) + z(text)[:-3],
        "deflate_trailing": dp(4096) + z(text) + b"xy",
        "deflate_bomb": dp(65536) + z(bytes(1 << 20), 9),
        "deflate_mib_fits": dp(1 << 20) + z(bytes(1 << 20), 9),
        "deflate_empty": dp(0) + z(b""),
        "deflate_stored": dp(4096) + z(text, 0),
        "deflate_garbage": dp(4096) + b"\x78\x9c garbage",
    }


PROXY_V2_SIG = bytes([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A])


def proxy_v2(ver_cmd, fam, addr):
    return PROXY_V2_SIG + bytes([ver_cmd, fam]) + struct.pack(">H", len(addr)) + addr


def proxy_corpus():
    a4 = bytes([192, 0, 2, 1, 127, 0, 0, 1]) + struct.pack(">HH", 56324, 7700)
    a6 = bytes(15) + b"\x01" + bytes(15) + b"\x01" + struct.pack(">HH", 1, 2)
    tlv = b"\x04\x00\x04abcd"
    return {
        "v1_tcp4": b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 7700\r\nMSGP",
        "v1_tcp6": b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n",
        "v1_unknown": b"PROXY UNKNOWN\r\n",
        "v1_unknown_addrs": b"PROXY UNKNOWN ffff::1 ::2 3 4\r\n",
        "v1_too_long": b"PROXY UNKNOWN " + b"x" * 120,
        "v1_bad_port": b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 1\r\n",
        "v1_lf_only": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        "v2_tcp4": proxy_v2(0x21, 0x11, a4) + b"MSGP",
        "v2_tcp4_tlv": proxy_v2(0x21, 0x11, a4 + tlv),
        "v2_tcp6": proxy_v2(0x21, 0x21, a6),
        "v2_local": proxy_v2(0x20, 0x00, b""),
        "v2_unspec": proxy_v2(0x21, 0x00, b"12345"),
        "v2_unix": proxy_v2(0x21, 0x31, bytes(216)),
        "v2_short_addr": proxy_v2(0x21, 0x11, a4[:11]),
        "v2_bad_version": proxy_v2(0x11, 0x11, a4),
        "v2_huge_len": PROXY_V2_SIG + b"\x21\x11\xff\xff",
        "v2_dgram": proxy_v2(0x21, 0x12, a4),
        "plain_msg": bytes.fromhex("4d534750000000010000000100000002" "6869"),
    }


RELOAD_FAILS = 16


def admin_params(chunk=1, flags=0, seed=0x0101):
    return bytes([chunk | flags, seed >> 8 & 255, seed & 255])


def admin_corpus():
    p = admin_params
    return {
        "help": p() + b"help\n",
        "stats": p() + b"stats\n",
        "quit": p() + b"quit\nhelp\n",
        "unknown": p() + b"bogus\n",
        "blanks_crlf": p(chunk=0) + b"  help \r\n\n\t\r\n",
        "pipelined": p(chunk=2, flags=8) + b"help\nstats\nfoo bar\nconns\nreload\nmetrics\nquit\nhelp\n",
        "long_line": p(chunk=3) + b"x" * 1025,
        "max_line": p(chunk=3, flags=4) + b"h" * 1024 + b"\nhelp\n",
        "partial": p() + b"help\nsta",
        "conns_reload": p(chunk=1) + b"conns\nreload\nhelp\nconns\n",
        "reload_fails": p(chunk=2, flags=RELOAD_FAILS) + b"reload\nmetrics\nquit\n",
        "nul_in_line": p() + b"help\x00junk\nstats\x00\n",
    }


HTTP_DRAINING = 16


def http_params(chunk=1, flags=0, seed=0x01):
    return bytes([chunk | flags, seed])


def http_req(method="GET", path="/healthz", version="HTTP/1.1", fields=("Host: m",), eol="\r\n"):
    return (eol.join(["%s %s %s" % (method, path, version)] + list(fields)) + eol + eol).encode()


def http_corpus():
    p, r = http_params, http_req
    return {
        "healthz": p() + r(),
        "metrics": p(chunk=3) + r(path="/metrics"),
        "readyz_draining": p(flags=HTTP_DRAINING) + r(path="/readyz"),
        "keep_alive": p(chunk=2) + r() + r(path="/readyz") + r(method="HEAD", path="/metrics"),
        "pipelined_small_turns": p(chunk=3, flags=4 | 8) + b"".join(
            r(path=x) for x in ("/healthz", "/nope", "/readyz", "/healthz?a=b", "/metrics")),
        "bytewise": p(chunk=0, seed=7) + r(fields=("Host: m", "User-Agent: x", "Accept: */*")),
        "lf_only": p() + r(eol="\n") + r(path="/readyz", eol="\n"),
        "blank_lines_first": p() + b"\r\n\n" + r(),
        "not_found": p() + r(path="/") + r(path="http://h:1/healthz"),
        "method_405": p() + r(method="POST", fields=("Host: m", "Content-Length: 0")) + r(),
        "body_413": p() + r(method="POST", fields=("Host: m", "Content-Length: 12")) + b"hello world!",
        "chunked_413": p() + r(method="POST", fields=("Host: m", "Transfer-Encoding: chunked")),
        "no_host_400": p() + r(fields=()),
        "folded_400": p() + r(fields=("Host: m", " folded")),
        "bad_line_400": p() + b"GET /healthz\r\n\r\n",
        "version_505": p() + r(version="HTTP/2.0"),
        "http10": p() + r(version="HTTP/1.0", fields=()) + r(),
        "http10_keep_alive": p() + r(version="HTTP/1.0", fields=("Connection: keep-alive",)) * 2,
        "connection_close": p() + r(fields=("Host: m", "Connection: close")) + r(),
        "head_431": p(chunk=3) + b"GET /healthz HTTP/1.1\r\nHost: m\r\nX: " + b"a" * 8200,
        "head_at_cap": p(chunk=3) + r(fields=("Host: m", "X: " + "b" * (8192 - 39))),
    }


def dicts():
    be = lambda v: struct.pack(">I", v)
    msg = [b"MSGP", be(1), be(REPLY | 1), be(CONN_ERROR), be(ERROR), be(REPLY),
           be(2), be(3), be(4), be(5), be(16), be(17), be(18), be(19), be(20), be(0x400),
           be(0x401), be(0x4001), be(21), be(22), b"s3cret", b"tok", b"tom"]
    cfg = [b"[server]", b"[msg]", b"[echo]", b"[admin]", b"[timeouts]", b"[limits]", b"[auth]",
           b"[log]", b"[diagnostics]", b"reactors", b"workers", b"worker_queue",
           b"max_connections", b"backlog", b"user", b"listen", b"max_frame",
           b"heartbeat_interval", b"idle_timeout", b"drain_timeout", b"output_high_water",
           b"output_low_water", b"output_hard_limit", b"max_subscriptions", b"tokens", b"level",
           b"delay_command", b" = ", b"ms", b"unix:/", b"[::1]:", b"127.0.0.1:", b"on", b"off",
           b"debug", b"\r\n", b"; ", b"256M", b"64G"]
    adm = [b"help", b"stats", b"quit", b"conns", b"reload", b"metrics", b"stall", b"\r\n"]
    http = [b"GET ", b"HEAD ", b"POST ", b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", b"/metrics",
            b"/healthz", b"/readyz", b"Host: m\r\n", b"Connection: close\r\n",
            b"Connection: keep-alive\r\n", b"Content-Length: ", b"Transfer-Encoding: chunked",
            b"\r\n\r\n", b"\n\n", b"http://h", b"?q=1"]
    out = {}
    for name, words in (("msg_stream", msg), ("config", cfg), ("admin", adm), ("http", http)):
        lines = ["# libFuzzer dictionary for fuzz_%s (written by make_corpus.py)" % name]
        for w in words:
            lines.append('"%s"' % "".join(
                chr(b) if 32 <= b < 127 and chr(b) not in '"\\' else "\\x%02X" % b for b in w))
        out[name] = "\n".join(lines) + "\n"
    return out


def main():
    for target, files in (("msg_stream", msg_corpus()), ("config", config_corpus()),
                          ("admin", admin_corpus()), ("codec", codec_corpus()),
                          ("http", http_corpus()), ("proxy", proxy_corpus())):
        d = os.path.join(HERE, "corpus", target)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for name, data in sorted(files.items()):
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        print("%s: %d files" % (d, len(files)))
    for name, text in dicts().items():
        with open(os.path.join(HERE, name + ".dict"), "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
