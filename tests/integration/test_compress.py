"""HELLO and payload compression (PROTOCOL.md "HELLO", "Compression"),
checked with Python's own zlib and zstandard (not the daemon's code): the
agreed codec, a second HELLO, COMPRESSED before HELLO, both codecs both ways,
small and incompressible payloads sent plain, garbage (BAD_PAYLOAD, the
connection goes on), bombs (connection-level TOO_LARGE, also under the
pre-auth cap), error replies never compressed, worker and deferred replies
compressed in order, a PUBLISH/DIRECT compressed once per codec for
many receivers on several reactors, and big replies compressed on the worker
pool (DESIGN.md "Compression off the reactor"): in order with what is
pipelined around them, with their reactor free meanwhile, dropped when their
connection closes first, delivered through a drain, and compressed inline
when the worker queue is full; big PUBLISH and DIRECT frames compressed on
the workers too, with the sender's later requests held behind them."""
import os
import select
import signal
import socket
import struct
import sys
import time
import unittest
import zlib

import msgproto as mp
from harness import MsgdTestCase, module_path, timeout, wait_until

try:
    import zstandard
except ImportError:  # Debian's python3-zstandard, for a python3 not Debian's own
    sys.path.append("/usr/lib/python3/dist-packages")
    import zstandard

ZC = zstandard.ZstdCompressor(level=3)
ZD = zstandard.ZstdDecompressor()

TEXT = b"".join(b"line %d: the quick brown fox jumps over the lazy dog\n" % i
                for i in range(200))  # ~11 KB, compresses well


def hello_payload(**keys):
    return "".join("%s=%s\n" % kv for kv in keys.items()).encode()


def parse_hello(payload):
    out = {}
    for line in payload.decode().splitlines():
        k, _, v = line.partition("=")
        out[k] = v
    return out


def compress(codec, data):
    return ZC.compress(data) if codec == "zstd" else zlib.compress(data)


def decompress(codec, data):
    if codec == "zstd":
        return ZD.decompress(data, max_output_size=64 << 20)
    return zlib.decompress(data)


class CompressionTests(MsgdTestCase):
    config = {"server": {"reactors": 3, "workers": 1},
              "msg": {"compress_min": "256", "max_frame": "256K"},
              "diagnostics": {"delay_command": "on"},
              "limits": {"output_high_water": "1M", "output_low_water": "256K",
                         "output_hard_limit": "8M"}}

    def hello(self, c, codecs):
        cmd, payload = c.call(mp.HELLO, hello_payload(client="test/1", compress=codecs,
                                                      future_key="ignored"), timeout(1))
        self.assertEqual(cmd, mp.reply_cmd(mp.HELLO), mp.describe(cmd, payload))
        return parse_hello(payload)

    def session(self, codec):
        c = self.connect()
        self.assertEqual(self.hello(c, codec)["compress"], codec)
        return c

    def recv_plain(self, c, codec):
        """The next frame with its payload decompressed -> (cmd, payload, was_compressed)."""
        cmd, payload = c.recv_frame(timeout(1))
        if cmd & mp.COMPRESSED:
            return cmd & ~mp.COMPRESSED, decompress(codec, payload), True
        return cmd, payload, False

    def test_vector_and_reply_keys(self):
        self.assertEqual(mp.encode(mp.HELLO, b"compress=zstd,deflate").hex(),
                         "4d534750000000010000000600000015"
                         "636f6d70726573733d7a7374642c6465666c617465")
        c = self.connect()
        r = self.hello(c, "zstd,deflate")
        for key in ("server", "protocol", "compress", "compress_min", "max_frame",
                    "heartbeat_ms", "idle_ms", "node", "features"):
            self.assertIn(key, r)
        self.assertEqual(r["compress"], "zstd")
        self.assertTrue(r["server"].startswith("msgd/"))
        self.assertEqual(r["protocol"], "1")
        self.assertEqual(r["compress_min"], "256")
        self.assertEqual(r["max_frame"], str(256 * 1024))
        self.assertEqual(set(r["features"].split(",")),
                         {"auth", "pubsub", "direct", "compress"})

    def test_choices(self):
        self.assertEqual(self.hello(self.connect(), "lz4,deflate,zstd")["compress"], "deflate")
        self.assertEqual(self.hello(self.connect(), "lz4")["compress"], "none")
        c = self.connect()
        cmd, payload = c.call(mp.HELLO, b"client=x\n", timeout(1))
        r = parse_hello(payload)
        self.assertEqual(r["compress"], "none")
        self.assertNotIn("compress", r["features"].split(","))

    def test_second_hello_is_refused(self):
        c = self.session("zstd")
        self.assert_error(c.call(mp.HELLO, b"compress=deflate", timeout(1)), mp.HELLO,
                          mp.BAD_PAYLOAD)
        # The first agreement still holds.
        c.send_frame(mp.ECHO | mp.COMPRESSED, compress("zstd", TEXT))
        cmd, payload, was = self.recv_plain(c, "zstd")
        self.assertEqual((cmd, payload, was), (mp.reply_cmd(mp.ECHO), TEXT, True))

    def test_compressed_before_hello_is_unknown(self):
        c = self.connect()
        self.assert_error(c.call(mp.ECHO | mp.COMPRESSED, compress("zstd", TEXT), timeout(1)),
                          mp.ECHO, mp.UNKNOWN_COMMAND)
        c2 = self.connect()
        self.hello(c2, "lz4")  # no codec agreed
        self.assert_error(c2.call(mp.ECHO | mp.COMPRESSED, compress("zstd", TEXT), timeout(1)),
                          mp.ECHO, mp.UNKNOWN_COMMAND)

    def test_both_codecs_both_ways(self):
        for codec in ("zstd", "deflate"):
            with self.subTest(codec=codec):
                c = self.session(codec)
                # Compressed request, compressed reply.
                c.send_frame(mp.ECHO | mp.COMPRESSED, compress(codec, TEXT))
                self.assertEqual(self.recv_plain(c, codec), (mp.reply_cmd(mp.ECHO), TEXT, True))
                # A plain request gets a compressed reply too.
                c.send_frame(mp.ECHO, TEXT)
                self.assertEqual(self.recv_plain(c, codec), (mp.reply_cmd(mp.ECHO), TEXT, True))
                # Below compress_min: plain.
                c.send_frame(mp.ECHO, TEXT[:200])
                self.assertEqual(self.recv_plain(c, codec),
                                 (mp.reply_cmd(mp.ECHO), TEXT[:200], False))
                # Incompressible: plain, since compressing would not make it smaller.
                noise = os.urandom(4000)
                c.send_frame(mp.ECHO, noise)
                self.assertEqual(self.recv_plain(c, codec), (mp.reply_cmd(mp.ECHO), noise, False))
                # A compressed request whose reply is small.
                c.send_frame(mp.PING | mp.COMPRESSED, compress(codec, b"hi"))
                self.assertEqual(self.recv_plain(c, codec), (mp.reply_cmd(mp.PING), b"hi", False))

    def test_a_client_without_hello_gets_plain_frames(self):
        c = self.connect()
        self.assert_frame(c.call(mp.ECHO, TEXT, timeout(1)), mp.reply_cmd(mp.ECHO), TEXT)

    def test_garbage_is_bad_payload_and_the_connection_goes_on(self):
        for codec in ("zstd", "deflate"):
            with self.subTest(codec=codec):
                c = self.session(codec)
                good = compress(codec, TEXT)
                for junk in (b"not compressed at all", good[:len(good) // 2], good + b"x", b""):
                    self.assert_error(c.call(mp.ECHO | mp.COMPRESSED, junk, timeout(1)),
                                      mp.ECHO, mp.BAD_PAYLOAD)
                self.assertEqual(c.call(mp.PING, b"alive", timeout(1)),
                                 (mp.reply_cmd(mp.PING), b"alive"))

    def test_error_replies_are_never_compressed(self):
        c = self.session("zstd")
        cmd, payload = c.call(mp.SUBSCRIBE, b"", timeout(1))  # BAD_PAYLOAD
        self.assertEqual(cmd, mp.error_cmd(mp.SUBSCRIBE))
        cmd, payload = c.call(mp.DELAY, struct.pack(">I", 70000) + TEXT, timeout(1))
        self.assertEqual(cmd, mp.error_cmd(mp.DELAY))

    def test_bombs_close_with_too_large(self):
        zeros = bytes(300 * 1024)  # past max_frame (256K) once decompressed
        for codec in ("zstd", "deflate"):
            with self.subTest(codec=codec):
                c = self.session(codec)
                bomb = compress(codec, zeros)
                self.assertLess(len(bomb), 2000)
                c.send_frame(mp.ECHO | mp.COMPRESSED, bomb)
                self.assert_error(c.recv_frame(timeout(1)), 0, mp.TOO_LARGE)
                c.expect_eof(timeout(1))
        # A zstd frame that does not declare its size is cut while it is
        # decompressed.
        c = self.session("zstd")
        stream = zstandard.ZstdCompressor(write_content_size=False).compressobj()
        bomb = stream.compress(zeros) + stream.flush()
        c.send_frame(mp.ECHO | mp.COMPRESSED, bomb)
        self.assert_error(c.recv_frame(timeout(1)), 0, mp.TOO_LARGE)
        c.expect_eof(timeout(1))
        # Exactly max_frame is fine.
        c = self.session("deflate")
        c.send_frame(mp.ECHO | mp.COMPRESSED, compress("deflate", bytes(256 * 1024)))
        cmd, payload, _ = self.recv_plain(c, "deflate")
        self.assertEqual((cmd, len(payload)), (mp.reply_cmd(mp.ECHO), 256 * 1024))

    def test_worker_and_deferred_replies_are_compressed_in_order(self):
        c = self.session("deflate")
        c.send_frame(mp.DELAY, struct.pack(">I", 50) + TEXT)
        c.send_frame(mp.ECHO | mp.COMPRESSED, compress("deflate", TEXT[::-1]))
        c.send_frame(mp.PUBLISH, b"\x05nobody" + TEXT)  # a deferred reply (count 0)
        self.assertEqual(self.recv_plain(c, "deflate"), (mp.reply_cmd(mp.DELAY), TEXT, True))
        self.assertEqual(self.recv_plain(c, "deflate"),
                         (mp.reply_cmd(mp.ECHO), TEXT[::-1], True))
        self.assertEqual(self.recv_plain(c, "deflate"),
                         (mp.reply_cmd(mp.PUBLISH), struct.pack(">I", 0), False))

    def test_nothing_compressed_reaches_the_wire_before_the_hello_reply(self):
        """A DELAY sent before HELLO completes after it: its reply goes out
        plain (the client could not know the codec yet). So does a push
        queued while that DELAY holds HELLO's reply back, since pushes go
        ahead of held replies. What follows HELLO's reply is compressed."""
        c = self.connect()
        self.assert_frame(c.call(mp.SUBSCRIBE, b"news", timeout(1)),
                          mp.reply_cmd(mp.SUBSCRIBE), b"")
        mon = self.connect()
        before = self.stats(mon)["compressions"]
        # The DELAY (2 s, scaled like every wait) outlasts the steps below.
        c.send_raw(mp.encode(mp.DELAY, struct.pack(">I", int(timeout(0.4) * 1000)) + TEXT) +
                   mp.encode(mp.HELLO, hello_payload(compress="zstd")) +
                   mp.encode(mp.ECHO, TEXT[::-1]))
        # HELLO has been handled once the ECHO behind it has been compressed;
        # then a push to c.
        wait_until(lambda: self.stats(mon)["compressions"] > before, timeout(1),
                   "the ECHO after HELLO compressed")
        self.assertEqual(mon.call(mp.PUBLISH, b"\x04news" + TEXT, timeout(1)),
                         (mp.reply_cmd(mp.PUBLISH), struct.pack(">I", 1)))
        got = [c.recv_frame(timeout(2)) for _ in range(4)]
        self.assertEqual([cmd for cmd, _ in got],
                         [mp.MESSAGE, mp.reply_cmd(mp.DELAY), mp.reply_cmd(mp.HELLO),
                          mp.reply_cmd(mp.ECHO) | mp.COMPRESSED])
        self.assertEqual(got[0][1], b"\x04news" + TEXT)
        self.assertEqual(got[1][1], TEXT)
        self.assertEqual(parse_hello(got[2][1])["compress"], "zstd")
        self.assertEqual(decompress("zstd", got[3][1]), TEXT[::-1])
        # Once nothing from before HELLO is out, pushes are compressed too.
        mon.call(mp.PUBLISH, b"\x04news" + TEXT, timeout(1))
        self.assertEqual(self.recv_plain(c, "zstd"), (mp.MESSAGE, b"\x04news" + TEXT, True))

    def test_publish_is_compressed_once_per_codec(self):
        mon = self.connect()
        subs = {"zstd": [], "deflate": [], "none": []}
        for i in range(9):  # round robin over 3 reactors: each codec on each reactor
            codec = ("zstd", "deflate", "none")[i % 3] if i < 3 else \
                ("zstd", "deflate", "none")[(i // 3 + i) % 3]
            c = self.connect()
            if codec != "none":
                self.assertEqual(self.hello(c, codec)["compress"], codec)
            self.assert_frame(c.call(mp.SUBSCRIBE, b"news", timeout(1)),
                              mp.reply_cmd(mp.SUBSCRIBE), b"")
            subs[codec].append(c)
        before = self.stats(mon)["compressions"]
        pub = self.connect()
        cmd, payload = pub.call(mp.PUBLISH, b"\x04news" + TEXT, timeout(1))
        self.assertEqual((cmd, payload), (mp.reply_cmd(mp.PUBLISH), struct.pack(">I", 9)))
        for codec, conns in subs.items():
            for c in conns:
                cmd, payload, was = self.recv_plain(c, codec if codec != "none" else "zstd")
                self.assertEqual(cmd, mp.MESSAGE)
                self.assertEqual(payload, b"\x04news" + TEXT)
                self.assertEqual(was, codec != "none", codec)
        # Two codecs in use: the payload went through a compressor twice,
        # however many receivers (the PUBLISH reply itself is small).
        self.assertEqual(self.stats(mon)["compressions"] - before, 2)

    def test_direct_is_compressed_for_its_receivers(self):
        recv_z = self.connect()
        self.hello(recv_z, "zstd")
        self.assert_frame(recv_z.call(mp.AUTH, b"zoe", timeout(1)), mp.reply_cmd(mp.AUTH), b"")
        recv_p = self.connect()
        self.assert_frame(recv_p.call(mp.AUTH, b"zoe", timeout(1)), mp.reply_cmd(mp.AUTH), b"")
        sender = self.connect()
        self.assert_frame(sender.call(mp.AUTH, b"sam", timeout(1)), mp.reply_cmd(mp.AUTH), b"")
        cmd, payload = sender.call(mp.DIRECT, b"\x03zoe" + TEXT, timeout(1))
        self.assertEqual((cmd, payload), (mp.reply_cmd(mp.DIRECT), struct.pack(">II", 2, 0)))
        want = b"\x03sam" + TEXT
        self.assertEqual(self.recv_plain(recv_z, "zstd"), (mp.DELIVER, want, True))
        self.assertEqual(self.recv_plain(recv_p, "zstd"), (mp.DELIVER, want, False))


def big_text(n, tag):
    """n bytes of compressible text, different for each tag."""
    out = b"".join(b"%s %d: the quick brown fox jumps over the lazy dog %d\n" % (tag, i, i * 7919)
                   for i in range(n // 40 + 1))
    return out[:n]


# Past both codecs' thresholds for compressing on the worker pool (zstd 64 KiB,
# deflate 16 KiB; src/proto_msg_codec.c).
BIG = 300 * 1024


def delay_req(ms, body=b""):
    return mp.encode(mp.DELAY, struct.pack(">I", ms) + body)


def big_config(**server):
    """A config for big replies: one reactor with one worker unless server says."""
    return {"server": dict({"reactors": 1, "workers": 1}, **server),
            "msg": {"max_frame": "2M"},
            "diagnostics": {"delay_command": "on"},
            "limits": {"output_high_water": "4M", "output_low_water": "1M",
                       "output_hard_limit": "32M"}}


class BigReplyTests(MsgdTestCase):
    """Replies big enough to be compressed on the worker pool."""
    config = big_config(reactors=2, workers=2)

    def test_big_replies_in_order_with_small_ones_pipelined(self):
        for codec in ("zstd", "deflate"):
            with self.subTest(codec=codec):
                c = self.connect()
                cmd, payload = c.call(mp.HELLO, b"compress=" + codec.encode(), timeout(1))
                self.assertEqual(parse_hello(payload)["compress"], codec)
                b1, b2, b3, b4 = (big_text(BIG + k, b"%s-%d" % (codec.encode(), k))
                                  for k in range(4))
                # One write: inline and worker commands, big and small,
                # plain and COMPRESSED requests, interleaved.
                c.send_raw(mp.encode(mp.ECHO, b1) + mp.encode(mp.PING, b"p1") +
                           mp.encode(mp.ECHO, b2) + mp.encode(mp.ECHO, b"small") +
                           delay_req(5, b3) + mp.encode(mp.ECHO | mp.COMPRESSED, compress(codec, b4)) +
                           mp.encode(mp.ECHO, TEXT) + mp.encode(mp.PING, b"p2"))
                want = [(mp.ECHO, b1, True), (mp.PING, b"p1", False), (mp.ECHO, b2, True),
                        (mp.ECHO, b"small", False), (mp.DELAY, b3, True), (mp.ECHO, b4, True),
                        (mp.ECHO, TEXT, True), (mp.PING, b"p2", False)]
                for i, (wcmd, wpayload, wz) in enumerate(want):
                    cmd, payload = c.recv_frame(timeout(2))
                    was = bool(cmd & mp.COMPRESSED)
                    if was:
                        payload = decompress(codec, payload)
                    self.assertEqual(cmd & ~mp.COMPRESSED, mp.reply_cmd(wcmd),
                                     "reply %d: %s" % (i, mp.describe(cmd, b"")))
                    self.assertTrue(payload == wpayload, "reply %d: payload differs (%d bytes, "
                                    "want %d)" % (i, len(payload), len(wpayload)))
                    self.assertEqual(was, wz, "reply %d compressed" % i)
                self.assertTrue(c.quiet(0))

    def test_incompressible_big_reply_goes_plain(self):
        c = self.connect()
        c.call(mp.HELLO, b"compress=deflate", timeout(1))
        noise = os.urandom(BIG)
        c.send_raw(mp.encode(mp.ECHO, noise) + mp.encode(mp.PING, b"after"))
        self.assertEqual(c.recv_frame(timeout(2)), (mp.reply_cmd(mp.ECHO), noise))
        self.assertEqual(c.recv_frame(timeout(2)), (mp.reply_cmd(mp.PING), b"after"))

    def test_a_client_without_a_codec_gets_big_replies_plain(self):
        c = self.connect()
        b = big_text(BIG, b"plain")
        self.assertEqual(c.call(mp.ECHO, b, timeout(2)), (mp.reply_cmd(mp.ECHO), b))


class OneWorkerBase(MsgdTestCase):
    """One worker (and one reactor unless REACTORS says): a DELAY holds the
    worker, so a big compression waits in the queue behind it for as long as
    the test needs, with no sleep and no race."""
    shared_daemon = False
    REACTORS = 1
    EXTRA = {}                         # more config sections

    def setUp(self):
        super().setUp()
        self.d = self.start_daemon(dict(big_config(reactors=self.REACTORS), **self.EXTRA))
        self.probe = self.connect(daemon=self.d)

    def stat(self, name):
        return self.stats(self.probe).get(name, 0)

    def hold_worker(self, ms):
        """A connection whose DELAY ms now runs on (or waits for) the only worker."""
        a = self.connect(daemon=self.d)
        jobs = self.stat("worker_jobs")
        a.send_raw(delay_req(ms, b"held"))
        wait_until(lambda: self.stat("worker_jobs") > jobs, timeout(), "the DELAY to be queued")
        return a

    def hello(self, c, codec):
        cmd, p = c.call(mp.HELLO, b"compress=" + codec.encode(), timeout(1))
        self.assertEqual(parse_hello(p)["compress"], codec)

    def first_the_holders(self, holders, others, what):
        """what was handed to the workers behind the holders' DELAYs, not done
        on the reactor: the reactor still answers others (the probe), and
        none of others is readable before a holder (it may be too by the
        time we look, never alone). Reads the holders' DELAY replies."""
        self.assertEqual(self.probe.call(mp.PING, b"free", timeout(1)),
                         (mp.reply_cmd(mp.PING), b"free"))
        r, _, _ = select.select(holders + others, [], [], timeout(2))
        self.assertTrue(set(r) & set(holders), "%s came before the DELAY holding the "
                        "worker: done on the reactor?" % what)
        for h in holders:
            self.assertEqual(h.recv_frame(timeout(2)), (mp.reply_cmd(mp.DELAY), b"held"))


class BigCompressionOffReactorTests(OneWorkerBase):
    """Big replies: compressed on the worker pool, off the reactor."""

    def send_big(self, codec, payload, extra=b""):
        """A connection with codec that sent a big ECHO (then extra), once the
        reactor has handed its compression to the worker queue."""
        z = self.connect(daemon=self.d)
        cmd, p = z.call(mp.HELLO, b"compress=" + codec.encode(), timeout(1))
        self.assertEqual(parse_hello(p)["compress"], codec)
        before = self.stat("compressions")
        z.send_raw(mp.encode(mp.ECHO, payload) + extra)
        wait_until(lambda: self.stat("compressions") > before, timeout(),
                   "the big ECHO's compression to be handed over")
        return z

    def test_the_reactor_answers_others_while_a_big_reply_is_compressed(self):
        for codec in ("zstd", "deflate"):
            with self.subTest(codec=codec):
                a = self.hold_worker(300)
                b = big_text(BIG, codec.encode())
                z = self.send_big(codec, b, mp.encode(mp.PING, b"behind"))
                self.first_the_holders([a], [z], "the big ECHO's reply")
                cmd, payload = z.recv_frame(timeout(2))
                self.assertEqual(cmd, mp.reply_cmd(mp.ECHO) | mp.COMPRESSED)
                self.assertTrue(decompress(codec, payload) == b)
                self.assertEqual(z.recv_frame(timeout(1)), (mp.reply_cmd(mp.PING), b"behind"))

    def test_a_connection_that_closes_while_its_reply_is_compressed(self):
        a = self.hold_worker(500)
        dropped = self.stat("worker_results_dropped")
        z = self.send_big("zstd", big_text(BIG, b"gone"))
        z.close_rst()
        self.assertEqual(a.recv_frame(timeout(2)), (mp.reply_cmd(mp.DELAY), b"held"))
        wait_until(lambda: self.stat("worker_results_dropped") > dropped, timeout(),
                   "the compressed reply of the closed connection to be dropped")
        # The reactor and its worker go on.
        z2 = self.connect(daemon=self.d)
        z2.call(mp.HELLO, b"compress=deflate", timeout(1))
        b = big_text(BIG, b"next")
        cmd, payload = z2.call(mp.ECHO, b, timeout(2))
        self.assertEqual(cmd, mp.reply_cmd(mp.ECHO) | mp.COMPRESSED)
        self.assertTrue(decompress("deflate", payload) == b)

    def test_a_drain_delivers_a_compression_in_flight(self):
        a = self.hold_worker(500)
        b = big_text(BIG, b"drain")
        z = self.send_big("deflate", b)
        self.d.send_signal(signal.SIGTERM)
        # Rule 6: the GOAWAY (a push) first, then the reply owed, then the close.
        cmd, payload = z.recv_frame(timeout(2))
        self.assertEqual(cmd, mp.GOAWAY, mp.describe(cmd, payload))
        cmd, payload = z.recv_frame(timeout(2))
        self.assertEqual(cmd, mp.reply_cmd(mp.ECHO) | mp.COMPRESSED, mp.describe(cmd, b""))
        self.assertTrue(decompress("deflate", payload) == b)
        z.expect_eof(timeout(2))
        self.assertEqual(a.recv_frame(timeout(2))[0], mp.GOAWAY)
        self.assertEqual(a.recv_frame(timeout(2)), (mp.reply_cmd(mp.DELAY), b"held"))
        a.expect_eof(timeout(2))
        self.assertEqual(self.d.wait_exit(timeout(4)), 0, self.d.log_tail())


class BigDecompressionOffReactorTests(OneWorkerBase):
    """Big COMPRESSED requests: decompressed on the worker pool, within
    max_frame, while the sender's later requests wait behind them and the
    reactor serves everyone else."""

    def send_compressed(self, codec, frames):
        """A connection with codec that sent frames, once the reactor has
        handed the first one's decompression to the worker queue."""
        z = self.connect(daemon=self.d)
        self.hello(z, codec)
        before = self.stat("decompressions")
        z.send_raw(frames)
        wait_until(lambda: self.stat("decompressions") > before, timeout(),
                   "the big request's decompression to be handed over")
        return z

    def test_the_reactor_answers_others_while_a_big_request_is_decompressed(self):
        # zstd's size comes from the frame header (with and without it:
        # then it is guessed from the length, as deflate's always is).
        # Without it, the guess (4 times the length) needs a payload that
        # compresses less than big_text: random letters (about 1.7 times).
        # The bounds (src/proto_msg_decompress.c): zstd 2 MiB, deflate 64 KiB.
        unsized = zstandard.ZstdCompressor(level=3, write_content_size=False)
        letters = bytes(97 + x % 26 for x in os.urandom(1 << 20))
        cases = [("zstd", "sized", ZC.compress, big_text(2 << 20, b"zstd")),
                 ("zstd", "unsized", unsized.compress, letters),
                 ("deflate", "-", zlib.compress, big_text(BIG, b"deflate"))]
        for codec, kind, squeeze, b in cases:
            with self.subTest(codec=codec, kind=kind):
                a = self.hold_worker(300)
                # STATS ignores its payload: its small reply needs no worker,
                # so only the decompression can make it wait.
                z = self.send_compressed(codec, mp.encode(mp.STATS | mp.COMPRESSED, squeeze(b)) +
                                         mp.encode(mp.PING, b"behind"))
                self.first_the_holders([a], [z], "the big STATS's reply")
                cmd, payload = z.recv_frame(timeout(2))
                self.assertEqual(cmd & ~mp.COMPRESSED, mp.reply_cmd(mp.STATS))
                if cmd & mp.COMPRESSED:
                    payload = decompress(codec, payload)
                self.assertIn(b"\nworker_jobs ", payload)
                self.assertEqual(z.recv_frame(timeout(1)), (mp.reply_cmd(mp.PING), b"behind"))

    def test_garbage_and_bombs_of_big_requests(self):
        # A zstd frame that declares 2 MiB but holds garbage: BAD_PAYLOAD
        # from the worker, and the request behind it is answered.
        fake = bytearray(ZC.compress(big_text(2 << 20, b"fake")))
        fake[len(fake) // 2:] = bytes(len(fake) - len(fake) // 2)
        z = self.send_compressed("zstd", mp.encode(mp.ECHO | mp.COMPRESSED, bytes(fake)) +
                                 mp.encode(mp.PING, b"still here"))
        self.assert_error(z.recv_frame(timeout(2)), mp.ECHO | mp.COMPRESSED, mp.BAD_PAYLOAD)
        self.assertEqual(z.recv_frame(timeout(1)), (mp.reply_cmd(mp.PING), b"still here"))
        # Past max_frame (2M) once decompressed: connection-level TOO_LARGE,
        # found on a worker (deflate, zstd without a declared size) or at
        # once on the reactor (a zstd frame that declares more).
        letters = bytes(97 + x % 26 for x in os.urandom(5 << 19))  # 2.5 MiB, ~1.6 MiB deflated
        unsized = zstandard.ZstdCompressor(level=3, write_content_size=False)
        for codec, kind, squeeze in (("zstd", "declared", ZC.compress),
                                     ("zstd", "unsized", unsized.compress),
                                     ("deflate", "-", zlib.compress)):
            with self.subTest(codec=codec, kind=kind):
                violations = self.stat("closed_by_limit.protocol_violation")
                z = self.send_compressed(codec, mp.encode(mp.ECHO | mp.COMPRESSED,
                                                          squeeze(letters)))
                cmd, payload = z.recv_frame(timeout(2))
                self.assertEqual(cmd, mp.CONN_ERROR, mp.describe(cmd, payload))
                self.assertEqual(struct.unpack(">I", payload[:4])[0], mp.TOO_LARGE)
                z.expect_eof(timeout(2))
                self.assertEqual(self.stat("closed_by_limit.protocol_violation"), violations + 1)

    def test_a_drain_answers_a_request_being_decompressed_and_what_follows(self):
        """Rule 6: what was read before the drain is answered, the request
        on the worker and the one held behind it included."""
        a = self.hold_worker(500)
        b = big_text(BIG, b"drain")
        z = self.send_compressed("deflate", mp.encode(mp.ECHO | mp.COMPRESSED, zlib.compress(b)) +
                                 mp.encode(mp.PING, b"behind"))
        self.d.send_signal(signal.SIGTERM)
        self.assertEqual(z.recv_frame(timeout(2))[0], mp.GOAWAY)
        cmd, payload = z.recv_frame(timeout(2))
        self.assertEqual(cmd, mp.reply_cmd(mp.ECHO) | mp.COMPRESSED, mp.describe(cmd, b""))
        self.assertTrue(decompress("deflate", payload) == b)
        self.assertEqual(z.recv_frame(timeout(1)), (mp.reply_cmd(mp.PING), b"behind"))
        z.expect_eof(timeout(2))
        self.assertEqual(a.recv_frame(timeout(2))[0], mp.GOAWAY)
        self.assertEqual(a.recv_frame(timeout(2)), (mp.reply_cmd(mp.DELAY), b"held"))
        self.assertEqual(self.d.wait_exit(timeout(4)), 0, self.d.log_tail())

    def test_a_half_close_answers_a_request_being_decompressed_and_what_follows(self):
        """Rule 7: a client that sent everything and shut its side down gets
        every answer. Enough PINGs first that the end of its stream is read
        before the big request is reached (a turn handles at most a few
        thousand frames), so the end is known while the request is out."""
        a = self.hold_worker(500)
        b = big_text(BIG, b"half")
        n = 20000
        z = self.connect(daemon=self.d)
        self.hello(z, "deflate")
        z.send_raw(mp.encode(mp.PING, b"p") * n + mp.encode(mp.ECHO | mp.COMPRESSED,
                                                            zlib.compress(b)) +
                   mp.encode(mp.PING, b"behind"))
        z.sock.shutdown(socket.SHUT_WR)
        for _ in range(n):
            self.assertEqual(z.recv_frame(timeout(2)), (mp.reply_cmd(mp.PING), b"p"))
        self.assertEqual(a.recv_frame(timeout(2)), (mp.reply_cmd(mp.DELAY), b"held"))
        cmd, payload = z.recv_frame(timeout(2))
        self.assertEqual(cmd, mp.reply_cmd(mp.ECHO) | mp.COMPRESSED, mp.describe(cmd, b""))
        self.assertTrue(decompress("deflate", payload) == b)
        self.assertEqual(z.recv_frame(timeout(1)), (mp.reply_cmd(mp.PING), b"behind"))
        z.expect_eof(timeout(2))

    def test_a_connection_that_resets_while_its_request_is_decompressed(self):
        """Its input is held, so the reset is seen once the request is back
        and handled: then it closes, and the reactor and worker go on."""
        a = self.hold_worker(500)
        live = self.stat("connections_current")
        b = big_text(BIG, b"gone")
        z = self.send_compressed("deflate", mp.encode(mp.STATS | mp.COMPRESSED, zlib.compress(b)))
        z.close_rst()
        self.assertEqual(a.recv_frame(timeout(2)), (mp.reply_cmd(mp.DELAY), b"held"))
        wait_until(lambda: self.stat("connections_current") == live, timeout(),
                   "the reset connection to be closed")
        z2 = self.connect(daemon=self.d)
        self.hello(z2, "deflate")
        z2.send_frame(mp.ECHO | mp.COMPRESSED, zlib.compress(b))
        cmd, payload = z2.recv_frame(timeout(2))
        self.assertEqual(cmd, mp.reply_cmd(mp.ECHO) | mp.COMPRESSED)
        self.assertTrue(decompress("deflate", payload) == b)


class HeldInputIsNotIdleTests(OneWorkerBase):
    """A connection whose input is held while its big request waits for a
    worker is not idle: what it sent since is unread, heartbeat answers
    included. Its silence counts again from the release. idle_timeout 1 s,
    the worker held 2.5 s (scaled)."""
    EXTRA = {"timeouts": {"heartbeat_interval": 0, "idle_timeout": "1s"}}

    def test_a_held_connection_outlives_the_idle_timeout(self):
        # The holder itself is closed as idle meanwhile; its DELAY still
        # keeps the worker.
        self.hold_worker(int(timeout(0.5) * 1000))
        b = big_text(BIG, b"held")
        z = self.connect(daemon=self.d)
        self.hello(z, "deflate")
        before = self.stat("decompressions")
        z.send_raw(mp.encode(mp.STATS | mp.COMPRESSED, zlib.compress(b)) +
                   mp.encode(mp.PING, b"behind"))
        wait_until(lambda: self.stat("decompressions") > before, timeout(0.15),
                   "the decompression handed over")
        cmd, payload = z.recv_frame(timeout(1))
        self.assertEqual(cmd & ~mp.COMPRESSED, mp.reply_cmd(mp.STATS), mp.describe(cmd, b""))
        self.assertEqual(z.recv_frame(timeout(1)), (mp.reply_cmd(mp.PING), b"behind"))
        released = time.monotonic()
        # Then a whole idle_timeout of its own before it is closed as idle
        # (not what was left of one that began during the hold).
        cmd, payload = z.recv_frame(timeout(1))
        self.assertEqual(cmd, mp.CONN_ERROR, mp.describe(cmd, payload))
        self.assertEqual(struct.unpack(">I", payload[:4])[0], mp.IDLE_TIMEOUT)
        self.assertGreater(time.monotonic() - released, 0.8, "closed as idle too soon after "
                           "its input was let go")


PUSH_BACK, MODULE_PUSH = 1110, 1199  # tests/modules/apitest.c


class BigModulePushOffReactorTests(OneWorkerBase):
    """A module's big push (msgd_send) to a connection with a codec is
    compressed on the workers too; data pushes after it (a MESSAGE) wait
    behind it, so pushes keep their order."""
    EXTRA = {"modules": {"load": module_path("apitest")}}

    def test_a_big_push_waits_for_the_workers_and_keeps_its_order(self):
        for codec in ("zstd", "deflate"):
            with self.subTest(codec=codec):
                a = self.hold_worker(300)
                c = self.connect(daemon=self.d)
                self.hello(c, codec)
                topic = codec.encode()  # one per round: the last round's c stays subscribed
                self.assertEqual(c.call(mp.SUBSCRIBE, topic, timeout(1)),
                                 (mp.reply_cmd(mp.SUBSCRIBE), b""))
                b = big_text(BIG, codec.encode())
                before = self.stat("compressions")
                c.send_raw(mp.encode(PUSH_BACK, b) + mp.encode(mp.PING, b"behind"))
                wait_until(lambda: self.stat("compressions") > before, timeout(),
                           "the push's compression to be handed over")
                pub = self.connect(daemon=self.d)
                message = bytes([len(topic)]) + topic + b"after"
                self.assertEqual(pub.call(mp.PUBLISH, message, timeout(1)),
                                 (mp.reply_cmd(mp.PUBLISH), struct.pack(">I", 1)))
                self.first_the_holders([a], [c], "the big push")
                got = [c.recv_frame(timeout(2)) for _ in range(4)]
                cmds = [cmd for cmd, _ in got]
                self.assertEqual(cmds[0], MODULE_PUSH | mp.COMPRESSED, cmds)
                self.assertTrue(decompress(codec, got[0][1]) == b)
                self.assertLess(cmds.index(mp.reply_cmd(PUSH_BACK)),
                                cmds.index(mp.reply_cmd(mp.PING)), cmds)
                self.assertIn((mp.MESSAGE, message), got)
                self.assertEqual(got[cmds.index(mp.reply_cmd(PUSH_BACK))][1],
                                 struct.pack(">i", 0))


class BigFanoutOffReactorTests(OneWorkerBase):
    """A PUBLISH or DIRECT too big to compress on the reactor is compressed
    on the workers, once per codec in use, while the sender's later requests
    wait behind it (their order holds) and the reactor serves everyone else."""

    def subscribers(self, topic):
        subs = {}
        for codec in ("zstd", "deflate", None):
            c = self.connect(daemon=self.d)
            if codec:
                self.hello(c, codec)
            self.assertEqual(c.call(mp.SUBSCRIBE, topic, timeout(1)),
                             (mp.reply_cmd(mp.SUBSCRIBE), b""))
            subs[codec] = c
        return subs

    def hold_workers(self):
        """Every reactor's only worker held (connections go round robin)."""
        return [self.hold_worker(300) for _ in range(self.REACTORS)]

    def expect_message(self, c, codec, want, compressed):
        cmd, payload = c.recv_frame(timeout(3))
        self.assertEqual(cmd & ~mp.COMPRESSED, mp.MESSAGE, mp.describe(cmd, b""))
        self.assertEqual(bool(cmd & mp.COMPRESSED), compressed)
        if compressed:
            payload = decompress(codec, payload)
        self.assertTrue(payload == want, "MESSAGE differs (%d bytes, want %d)"
                        % (len(payload), len(want)))

    def test_a_big_publish_waits_for_the_workers_and_keeps_its_order(self):
        subs = self.subscribers(b"big")
        holders = self.hold_workers()
        big = bytes([3]) + b"big" + big_text(BIG, b"fan")
        small = bytes([3]) + b"big" + b"after"
        pub = self.connect(daemon=self.d)
        before = self.stat("compressions")
        pub.send_raw(mp.encode(mp.PUBLISH, big) + mp.encode(mp.PUBLISH, small) +
                     mp.encode(mp.PING, b"behind"))
        wait_until(lambda: self.stat("compressions") >= before + 2, timeout(),
                   "the PUBLISH's two compressions to be handed over")
        self.first_the_holders(holders, [pub] + list(subs.values()), "the fan-out")
        for want in (b"\x00\x00\x00\x03", b"\x00\x00\x00\x03"):
            self.assertEqual(pub.recv_frame(timeout(3)), (mp.reply_cmd(mp.PUBLISH), want))
        self.assertEqual(pub.recv_frame(timeout(1)), (mp.reply_cmd(mp.PING), b"behind"))
        for codec, c in subs.items():
            self.expect_message(c, codec, big, codec is not None)
            self.expect_message(c, codec, small, False)

    def test_a_publisher_gone_meanwhile_still_has_its_message_delivered(self):
        subs = self.subscribers(b"left")
        holders = self.hold_workers()
        big = bytes([4]) + b"left" + big_text(BIG, b"bye")
        pub = self.connect(daemon=self.d)
        before = self.stat("compressions")
        pub.send_raw(mp.encode(mp.PUBLISH, big))
        wait_until(lambda: self.stat("compressions") >= before + 2, timeout(),
                   "the PUBLISH's compressions to be handed over")
        pub.close_rst()
        self.first_the_holders(holders, list(subs.values()), "the fan-out")
        for codec, c in subs.items():
            self.expect_message(c, codec, big, codec is not None)

    def test_a_big_direct_is_compressed_on_the_workers(self):
        rcv = self.connect(daemon=self.d)
        self.assertEqual(rcv.call(mp.AUTH, b"rcv", timeout(1)), (mp.reply_cmd(mp.AUTH), b""))
        self.hello(rcv, "deflate")
        snd = self.connect(daemon=self.d)
        self.assertEqual(snd.call(mp.AUTH, b"snd", timeout(1)), (mp.reply_cmd(mp.AUTH), b""))
        holders = self.hold_workers()
        body = big_text(BIG, b"direct")
        before = self.stat("compressions")
        snd.send_raw(mp.encode(mp.DIRECT, b"\x03rcv" + body) + mp.encode(mp.PING, b"behind"))
        wait_until(lambda: self.stat("compressions") > before, timeout(),
                   "the DIRECT's compression to be handed over")
        self.first_the_holders(holders, [snd, rcv], "the DELIVER")
        self.assertEqual(snd.recv_frame(timeout(3)),
                         (mp.reply_cmd(mp.DIRECT), struct.pack(">II", 1, 0)))
        self.assertEqual(snd.recv_frame(timeout(1)), (mp.reply_cmd(mp.PING), b"behind"))
        cmd, payload = rcv.recv_frame(timeout(3))
        self.assertEqual(cmd, mp.DELIVER | mp.COMPRESSED, mp.describe(cmd, b""))
        self.assertTrue(decompress("deflate", payload) == b"\x03snd" + body)


class BigFanoutTwoReactorsTests(BigFanoutOffReactorTests):
    """The same with two reactors: the other reactor's share crosses its
    mailbox once the frames are back."""
    REACTORS = 2


class FullWorkerQueueTests(MsgdTestCase):
    shared_daemon = False

    def test_a_full_worker_queue_compresses_inline(self):
        d = self.start_daemon(big_config(worker_queue=1))
        probe = self.connect(daemon=d)
        stat = lambda name: self.stats(probe).get(name, 0)
        # One DELAY running, one waiting: the queue (1) is full. A DELAY that
        # finds it full (the first not yet taken by the worker) is retried.
        a = self.connect(daemon=d)
        a.send_raw(delay_req(1000, b"first"))
        wait_until(lambda: stat("worker_jobs") >= 1, timeout(), "the first DELAY queued")
        w = self.connect(daemon=d)
        for _ in range(100):
            w.send_raw(delay_req(1000, b"second"))
            wait_until(lambda: stat("worker_jobs") >= 2 or not w.quiet(0), timeout(),
                       "the second DELAY queued or refused")
            if stat("worker_jobs") >= 2:
                break
            self.assert_error(w.recv_frame(timeout(1)), mp.DELAY, mp.OVERLOADED)
        else:
            self.fail("the second DELAY never found room")
        z = self.connect(daemon=d)
        z.call(mp.HELLO, b"compress=zstd", timeout(1))
        b = big_text(BIG, b"inline")
        z.send_frame(mp.ECHO, b)
        # Nothing is lost: compressed on the reactor, so it is not behind the
        # two DELAYs (2 s of the only worker).
        r, _, _ = select.select([z, w], [], [], timeout(3))
        self.assertIn(z, r)
        cmd, payload = z.recv_frame(timeout(2))
        self.assertEqual(cmd, mp.reply_cmd(mp.ECHO) | mp.COMPRESSED)
        self.assertTrue(ZD.decompress(payload) == b)
        self.assertEqual(a.recv_frame(timeout(2)), (mp.reply_cmd(mp.DELAY), b"first"))
        self.assertEqual(w.recv_frame(timeout(2)), (mp.reply_cmd(mp.DELAY), b"second"))


class PreAuthCompressionTests(MsgdTestCase):
    config = {"auth": {"tokens": "ann:secret"}}

    def test_the_pre_auth_cap_counts_decompressed_bytes(self):
        c = self.connect()
        cmd, payload = c.call(mp.HELLO, b"compress=zstd", timeout(1))
        self.assertEqual(parse_hello(payload)["compress"], "zstd")
        # 20 KB of text compresses to far less than 16 KiB, but is more.
        c.send_frame(mp.AUTH | mp.COMPRESSED, compress("zstd", TEXT * 2))
        self.assert_error(c.recv_frame(timeout(1)), 0, mp.TOO_LARGE)
        c.expect_eof(timeout(1))
        # After AUTH, max_frame applies.
        c = self.connect()
        c.call(mp.HELLO, b"compress=zstd", timeout(1))
        c.send_frame(mp.AUTH | mp.COMPRESSED, compress("zstd", b"secret"))
        self.assertEqual(self.recv_plain_cmd(c), mp.reply_cmd(mp.AUTH))
        c.send_frame(mp.ECHO | mp.COMPRESSED, compress("zstd", TEXT * 2))
        cmd, payload = c.recv_frame(timeout(1))
        self.assertEqual(cmd, mp.reply_cmd(mp.ECHO) | mp.COMPRESSED)
        self.assertEqual(ZD.decompress(payload), TEXT * 2)

    def recv_plain_cmd(self, c):
        return c.recv_frame(timeout(1))[0]


if __name__ == "__main__":
    unittest.main()
