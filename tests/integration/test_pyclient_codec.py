"""The Python package's codec offline (no daemon): docs/PROTOCOL.md's test
vectors, framing across any read boundaries, the reply queue with pushes in
between, HELLO, deflate and zstd round trips and their size bounds, the
back-off, and a real `pip install --no-build-isolation` of clients/python.

zstd needs the optional zstandard package: where it is missing, the tests
check that the client leaves zstd out of its offer and says what to install.
"""

import os
import random
import subprocess
import sys
import tempfile
import shutil
import unittest
import zlib

import harness

PKG_DIR = os.path.join(harness.REPO, "clients", "python")
if PKG_DIR not in sys.path:
    sys.path.insert(0, PKG_DIR)

import msgd  # noqa: E402
from msgd import protocol as p  # noqa: E402
from msgd._core import Core  # noqa: E402
from msgd._options import Options, apply_hello  # noqa: E402

VECTORS = {   # docs/PROTOCOL.md section 11
    "ping_hi": "4d534750 00000001 00000001 00000002 6869",
    "ping_hi_reply": "4d534750 00000001 80000001 00000002 6869",
    "echo_empty": "4d534750 00000001 00000002 00000000",
    "bad_magic": "4d534750 00000001 c0000000 0000000d 00000005 626164206d61676963",
    "hello": "4d534750 00000001 00000006 00000015 636f6d70726573733d7a7374642c6465666c617465",
    "direct": "4d534750 00000001 00000015 00000006 03626f62796f",
}


def vec(name):
    return bytes.fromhex(VECTORS[name].replace(" ", ""))


class VectorTests(unittest.TestCase):

    def test_vectors_in_the_docs_match(self):
        """The vectors here are the ones in docs/PROTOCOL.md."""
        with open(os.path.join(harness.REPO, "docs", "PROTOCOL.md")) as f:
            doc = f.read()
        for name, hexs in VECTORS.items():
            self.assertIn("`%s`" % hexs, doc, name)

    def test_encode(self):
        self.assertEqual(p.encode_frame(p.PING, b"hi"), vec("ping_hi"))
        self.assertEqual(p.encode_frame(p.reply_command(p.PING), b"hi"), vec("ping_hi_reply"))
        self.assertEqual(p.encode_frame(p.ECHO), vec("echo_empty"))
        self.assertEqual(p.encode_frame(p.CONN_ERROR, p.encode_error(5, "bad magic")),
                         vec("bad_magic"))
        self.assertEqual(p.encode_frame(p.HELLO, p.encode_hello({"compress": ["zstd", "deflate"]})),
                         vec("hello"))
        self.assertEqual(p.encode_frame(p.DIRECT, p.encode_direct("bob", b"yo")), vec("direct"))

    def test_decode_across_any_boundaries(self):
        stream = b"".join(vec(n) for n in VECTORS)
        want = [(p.PING, b"hi"), (p.REPLY | p.PING, b"hi"), (p.ECHO, b""),
                (p.CONN_ERROR, p.encode_error(5, "bad magic")),
                (p.HELLO, b"compress=zstd,deflate"), (p.DIRECT, b"\x03bobyo")]
        for size in (1, 2, 3, 7, 16, 17, len(stream)):
            d = p.FrameDecoder()
            got = []
            for i in range(0, len(stream), size):
                got += d.feed(stream[i:i + size])
            self.assertEqual(got, want, size)
            self.assertEqual(d.buffered(), 0)
        self.assertEqual(p.decode_error(want[3][1]), (5, "bad magic"))
        self.assertEqual(p.parse_hello(b"compress=zstd,deflate"), {"compress": "zstd,deflate"})

    def test_decoder_rejects_bad_frames_before_their_payload(self):
        with self.assertRaisesRegex(p.ProtocolError, "magic"):
            p.FrameDecoder().feed(b"XSGP" + vec("echo_empty")[4:])
        with self.assertRaisesRegex(p.ProtocolError, "version"):
            p.FrameDecoder().feed(vec("echo_empty")[:7] + b"\x02" + vec("echo_empty")[8:])
        d = p.FrameDecoder(max_frame=100)
        with self.assertRaisesRegex(p.ProtocolError, "over the limit"):
            d.feed(p.HEADER.pack(p.MAGIC, p.VERSION, p.ECHO, 101))    # no payload sent yet
        self.assertEqual(p.FrameDecoder(100).feed(p.encode_frame(p.ECHO, b"x" * 100)),
                         [(p.ECHO, b"x" * 100)])

    def test_payload_layouts(self):
        self.assertEqual(p.encode_publish("news", b"it works"), b"\x04newsit works")
        self.assertEqual(p.decode_message(b"\x04newsit works"), (b"news", b"it works"))
        self.assertEqual(p.decode_deliver(b"\x00anon"), (b"", b"anon"))
        self.assertEqual(p.decode_goaway(p.u32(1500) + b"reload"), (1500, "reload"))
        self.assertEqual(p.decode_direct_reply(bytes.fromhex("0000000300000001")), (3, 1))
        self.assertEqual(p.encode_delay(20, b"x"), b"\x00\x00\x00\x14x")
        for bad in (b"", b"\x05abc", b"\x00x"):
            with self.assertRaises(p.ProtocolError):
                p.decode_message(bad)
        for bad in ("", "x" * 256):
            with self.assertRaises(ValueError):
                p.encode_publish(bad, b"")
            with self.assertRaises(ValueError):
                p.encode_direct(bad, b"")
        with self.assertRaises(TypeError):
            p.encode_publish(5, b"")
        self.assertEqual(p.parse_stats(b"a 1\nb 2.5\nc text here\n"),
                         {"a": 1, "b": 2.5, "c": "text here"})
        with self.assertRaises(ValueError):
            p.encode_hello({"k": "two\nlines"})


class CoreTests(unittest.TestCase):
    """The reply queue and pushes, fed bytes the way a server sends them."""

    def core(self, **kw):
        self.pushes = []
        self.goaways = []
        return Core(on_push=self.pushes.append,
                    on_goaway=lambda ms, r: self.goaways.append((ms, r)), **kw)

    def test_replies_in_order_with_pushes_between_and_pings_answered(self):
        c = self.core()
        reqs = [c.request(p.ECHO, b"%d" % i)[0] for i in range(5)]
        hb = c.heartbeat_ping()
        self.assertTrue(c.heartbeat_owed)
        self.assertEqual(hb, p.encode_frame(p.PING, b"hb"))
        stream = b""
        for i in range(5):
            stream += p.encode_frame(p.REPLY | p.ECHO, b"%d" % i)
            if i == 1:
                stream += p.encode_frame(p.PING, b"srv")
                stream += p.encode_frame(p.MESSAGE, p.encode_publish("t", b"m"))
                stream += p.encode_frame(p.DELIVER, b"\x00anon")
                stream += p.encode_frame(1500, b"module push")
        stream += p.encode_frame(p.REPLY | p.PING, b"hb")
        stream += p.encode_frame(p.GOAWAY, p.u32(250) + b"bye")
        out = b""
        for i in range(len(stream)):
            out += c.receive(stream[i:i + 1])
        self.assertEqual(out, vec("ping_hi_reply").replace(b"\x00\x02hi", b"\x00\x03srv"))
        self.assertEqual([r.value for r in reqs], [b"%d" % i for i in range(5)])
        self.assertEqual(self.pushes, [msgd.Message("t", b"m"), msgd.Delivery(None, b"anon"),
                                       msgd.Push(1500, b"module push")])
        self.assertFalse(c.heartbeat_owed)
        self.assertEqual(self.goaways, [(250, "bye")])
        self.assertEqual(c.pings_answered, 1)
        self.assertFalse(c.pending)

    def test_error_replies_are_typed(self):
        c = self.core()
        r1 = c.request(p.DELAY, b"")[0]
        r2 = c.request(0, b"")[0]
        r3 = c.request(p.ECHO, b"")[0]
        r4 = c.request(p.ECHO, b"")[0]
        c.receive(p.encode_frame(p.error_command(p.DELAY), p.encode_error(9, "off")))
        c.receive(p.encode_frame(p.CONN_ERROR, p.encode_error(1, "unknown")))   # rule 4
        c.receive(p.encode_frame(p.CONN_ERROR, p.encode_error(4, "too large")))
        self.assertIsInstance(r1.error, msgd.Disabled)
        self.assertEqual((r1.error.code, r1.error.text), (9, "off"))
        self.assertIsInstance(r2.error, msgd.UnknownCommand)
        self.assertFalse(r2.error.connection_level)
        self.assertIsInstance(r3.error, msgd.TooLarge)
        self.assertTrue(r3.error.connection_level)
        self.assertIsInstance(c.conn_error, msgd.TooLarge)
        c.fail_all(c.loss_error("closed"))
        self.assertIsInstance(r4.error, msgd.ConnectionLost)
        self.assertIn("TOO_LARGE", str(r4.error))
        e = msgd.error_from_reply(4242, "module says no", 1030)
        self.assertEqual((type(e), e.code), (msgd.MsgdError, 4242))

    def test_compressed_frame_without_a_codec_fails_only_its_request(self):
        c = self.core()
        r1 = c.request(p.ECHO, b"a")[0]
        r2 = c.request(p.ECHO, b"b")[0]
        c.receive(p.encode_frame(p.REPLY | p.ECHO | p.COMPRESSED, zlib.compress(b"a")))
        c.receive(p.encode_frame(p.REPLY | p.ECHO, b"b"))
        self.assertIsInstance(r1.error, msgd.ProtocolError)
        self.assertIn("no codec", str(r1.error))
        self.assertEqual(r2.value, b"b")

    def test_hello_agrees_deflate_and_frames_compress_both_ways(self):
        o = Options(compress=["deflate"])
        self.assertTrue(o.hello)
        self.assertEqual(p.parse_hello(p.encode_hello(o.hello_fields()))["compress"], "deflate")
        c = self.core(compress_min=64, max_frame=4096)
        r = c.request(p.HELLO, p.encode_hello(o.hello_fields()),
                      lambda pl: apply_hello(c, o, pl))[0]
        # the HELLO reply and a compressed reply in one read: the codec
        # applies from the very next frame
        big = b"abc" * 500
        e = c.request(p.ECHO, b"")[0]
        c.receive(p.encode_frame(p.REPLY | p.HELLO,
                                 b"server=msgd/1\nprotocol=1\ncompress=deflate\n"
                                 b"heartbeat_ms=2000\nfeatures=pubsub")
                  + p.encode_frame(p.REPLY | p.ECHO | p.COMPRESSED, zlib.compress(big))
                  + p.encode_frame(p.MESSAGE | p.COMPRESSED,
                                   zlib.compress(p.encode_publish("z", big))))
        self.assertEqual(r.value["compress"], "deflate")
        self.assertEqual(c.codec.name, "deflate")
        self.assertEqual(e.value, big)
        self.assertEqual(self.pushes, [msgd.Message("z", big)])
        self.assertEqual(o.intervals(r.value), (2.0, 6.0))
        # requests: compressed at compress_min and up when smaller
        f = c.encode(p.ECHO, big)
        self.assertEqual(p.HEADER.unpack_from(f)[2], p.ECHO | p.COMPRESSED)
        self.assertEqual(zlib.decompress(f[16:]), big)
        self.assertEqual(c.encode(p.ECHO, b"x" * 63), p.encode_frame(p.ECHO, b"x" * 63))
        rnd = random.Random(1).randbytes(200)
        self.assertEqual(c.encode(p.ECHO, rnd), p.encode_frame(p.ECHO, rnd))   # no gain
        # a bomb past max_frame fails its request, and the connection goes on
        b = c.request(p.ECHO, b"")[0]
        n = c.request(p.ECHO, b"")[0]
        c.receive(p.encode_frame(p.REPLY | p.ECHO | p.COMPRESSED, zlib.compress(b"\0" * 4097))
                  + p.encode_frame(p.REPLY | p.ECHO, b"next"))
        self.assertIsInstance(b.error, msgd.ProtocolError)
        self.assertIn("limit", str(b.error))
        self.assertEqual(n.value, b"next")

    def test_hello_choice_not_offered_is_an_error(self):
        o = Options(compress=["deflate"])
        c = self.core()
        with self.assertRaises(p.ProtocolError):
            apply_hello(c, o, b"compress=gzip")
        self.assertEqual(apply_hello(c, Options(), b"compress=none"), {"compress": "none"})
        self.assertIsNone(c.codec)

    def test_heartbeat_intervals(self):
        self.assertEqual(Options().intervals(None), (30.0, 90.0))
        self.assertEqual(Options().intervals({"heartbeat_ms": "500"}), (0.5, 1.5))
        self.assertEqual(Options(heartbeat=0).intervals(None), (0, 0))
        self.assertEqual(Options(heartbeat=1, dead_after=5).intervals(None), (1, 5))
        self.assertEqual(Options(dead_after=4).intervals(None), (2.0, 4))
        with self.assertRaises(ValueError):
            Options(dead_after=0)

    def test_full_jitter_backoff(self):
        rng = random.Random(7)
        for attempt in range(12):
            cap = min(5.0, 0.1 * 2 ** attempt)
            waits = [p.full_jitter(attempt, 0.1, 5.0, rng.random) for _ in range(200)]
            self.assertTrue(all(0 <= w <= cap for w in waits), attempt)
            self.assertLess(min(waits), cap * 0.1)       # full jitter: down to ~0
            self.assertGreater(max(waits), cap * 0.9)
        self.assertEqual(p.full_jitter(1000, 0.1, 5.0, lambda: 0.999999), 5.0 * 0.999999)


class CodecTests(unittest.TestCase):

    def check_bounds(self, codec):
        data = b"".join(b"line %d of the test\n" % i for i in range(5000))
        z = codec.compress(data)
        self.assertLess(len(z), len(data) // 4)
        self.assertEqual(codec.decompress(z, len(data)), data)
        with self.assertRaisesRegex(p.DecompressionError, "limit"):
            codec.decompress(z, len(data) - 1)
        bomb = codec.compress(b"\0" * (64 << 20))             # 64 MiB of zeros
        self.assertLess(len(bomb), 1 << 20)
        with self.assertRaisesRegex(p.DecompressionError, "limit"):
            codec.decompress(bomb, 1 << 20)
        with self.assertRaises(p.DecompressionError):
            codec.decompress(z[:-4], len(data))               # cut short
        with self.assertRaises(p.DecompressionError):
            codec.decompress(z + b"junk", len(data))          # trailing bytes
        with self.assertRaises(p.DecompressionError):
            codec.decompress(b"not compressed at all", 1000)
        self.assertEqual(codec.decompress(codec.compress(b""), 0), b"")

    def test_deflate_is_zlib_and_bounded(self):
        d = p.make_codec("deflate")
        self.assertEqual(zlib.decompress(d.compress(b"x" * 100)), b"x" * 100)  # RFC 1950
        self.check_bounds(d)

    def test_zstd_when_present_and_a_clear_message_when_not(self):
        if p.zstd_available():
            z = p.make_codec("zstd")
            import zstandard
            self.assertEqual(zstandard.ZstdDecompressor().decompress(z.compress(b"y" * 99)),
                             b"y" * 99)
            self.check_bounds(z)
            self.assertEqual(p.available_codecs(), ["zstd", "deflate"])
            self.assertEqual(Options(compress=True).compress, ["zstd", "deflate"])
        else:
            self.assertEqual(p.available_codecs(), ["deflate"])
            with self.assertRaisesRegex(ImportError, "zstandard"):
                p.make_codec("zstd")
            self.assertEqual(Options(compress=["zstd", "deflate"]).compress, ["deflate"])
            with self.assertRaisesRegex(ImportError, "zstandard"):
                Options(compress=["zstd"])
        with self.assertRaises(ValueError):
            Options(compress=["lz4"])


def _pip_python():
    """An interpreter that can `pip install --no-build-isolation` a setuptools
    project: pip, setuptools and (for setuptools before 70.1) wheel. This
    one first, then Debian's (scripts/deps.sh installs python3-pip,
    python3-setuptools and python3-wheel)."""
    probe = ("import setuptools, pip\n"
             "v = tuple(int(x) for x in setuptools.__version__.split('.')[:2])\n"
             "v >= (70, 1) or __import__('wheel')\n")
    for exe in (sys.executable, "/usr/bin/python3"):
        if exe and os.path.exists(exe) and subprocess.run(
                [exe, "-c", probe], capture_output=True, timeout=harness.timeout(4)).returncode == 0:
            return exe
    return None


class InstallTests(unittest.TestCase):

    def test_pip_install_offline(self):
        exe = _pip_python()
        if exe is None:
            self.skipTest("no python with pip, setuptools and wheel (scripts/deps.sh)")
        tmp = tempfile.mkdtemp(prefix="msgd-pip-")
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        target = os.path.join(tmp, "site")
        src = os.path.join(tmp, "src")
        shutil.copytree(PKG_DIR, src, ignore=shutil.ignore_patterns(
            "__pycache__", "build", "*.egg-info"))   # the source tree stays clean
        r = subprocess.run([exe, "-m", "pip", "install", "--no-build-isolation", "--no-index",
                            "--no-deps", "--disable-pip-version-check", "--target", target, src],
                           capture_output=True, text=True, timeout=harness.timeout(24),
                           cwd=tmp)
        self.assertEqual(r.returncode, 0, r.stdout[-3000:] + r.stderr[-3000:])
        check = ("import sys; sys.path.insert(0, %r); import msgd, msgd.aio, msgd.protocol;"
                 "assert msgd.__file__.startswith(%r), msgd.__file__;"
                 "assert msgd.protocol.encode_frame(1, b'hi').hex() == %r;"
                 "print(msgd.__version__)" % (target, target, vec("ping_hi").hex()))
        r = subprocess.run([exe, "-c", check], capture_output=True, text=True,
                           timeout=harness.timeout(4), cwd=tmp)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), msgd.__version__)


if __name__ == "__main__":
    unittest.main()
