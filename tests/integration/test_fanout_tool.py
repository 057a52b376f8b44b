"""msgfanout, the fan-out benchmark's client (scripts/bench/fanout.py;
docs/BENCHMARKS.md "Fan-out against redis"): against the real msgd (msg
protocol, with and without AUTH, closed and open loop) and a real
redis-server (RESP) it reports every message delivered (completeness 100%)
and exits 0; against a small fake msg server written here that repeats a
message, cuts one short, or leaves one out while counting it, it exits 1
and names the error.

The binary sits beside MSGD_BIN (BUILD/msgfanout)."""

import json
import os
import socket
import struct
import subprocess
import threading
import unittest

import harness
import msgproto as mp
from harness import MsgdTestCase, timeout
from redisproc import RedisServer

MSGFANOUT = os.path.join(os.path.dirname(harness.MSGD_BIN), "msgfanout")
TOKEN = "fan-secret"


class FanoutRun:
    """One msgfanout run, to completion, under a timeout."""

    def __init__(self, case, args, wait=None):
        if not (os.path.isfile(MSGFANOUT) and os.access(MSGFANOUT, os.X_OK)):
            case.fail("%s not found (build it with make)" % MSGFANOUT)
        cmd = [MSGFANOUT, "--json"] + [str(a) for a in args]
        try:
            p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               errors="replace", timeout=wait or timeout(4))
        except subprocess.TimeoutExpired as e:
            case.fail("msgfanout %s did not finish within %.1f s" % (" ".join(cmd), e.timeout))
        self.rc, self.stdout, self.stderr = p.returncode, p.stdout, p.stderr
        case.assertEqual(harness.find_markers(p.stderr), [], repr(self))
        case.assertGreaterEqual(p.returncode, 0, "killed by a signal: %r" % self)
        lines = p.stdout.strip().splitlines()
        case.assertTrue(lines, "no report: %r" % self)
        self.report = json.loads(lines[-1])

    def __repr__(self):
        return "rc=%r\nstdout=%r\nstderr=%r" % (self.rc, self.stdout[-2000:], self.stderr[-2000:])


def limits():
    """Every wait of a run, scaled for sanitizer builds."""
    return ["--timeout", timeout(1), "--drain", timeout(1)]


class CompleteMixin:
    def assert_complete(self, run, published, expected):
        r = run.report
        self.assertEqual(run.rc, 0, repr(run))
        self.assertEqual(r["published"], published, repr(run))
        self.assertEqual(r["replies"], published, repr(run))
        self.assertEqual(r["expected"], expected, repr(run))
        self.assertEqual(r["received"], expected, repr(run))
        self.assertEqual(r["queued"], expected, repr(run))
        self.assertEqual(r["completeness"], 1.0, repr(run))
        self.assertEqual(r["dropped_by_server"], 0, repr(run))
        self.assertEqual(r["gaps"], 0, repr(run))
        self.assertTrue(r["drained"], repr(run))
        self.assertEqual(sum(r["errors"].values()), 0, repr(run))
        self.assertGreater(r["latency_us"]["samples"], 0, repr(run))


class MsgdFanoutTests(CompleteMixin, MsgdTestCase):
    config = {"server": {"reactors": 2}, "log": {"level": "info"}}

    def test_two_publishers_five_subscribers_all_delivered(self):
        run = FanoutRun(self, ["--addr", "127.0.0.1:%d" % self.daemon.port(),
                               "--publishers", 2, "--subscribers", 5, "--messages", 300,
                               "--outstanding", 16, "--seconds", timeout(2),
                               "--server-pid", self.daemon.pid] + limits())
        self.assert_complete(run, 600, 3000)
        server = run.report["server"]
        self.assertEqual(server["pid"], self.daemon.pid)
        self.assertGreater(server["rss_kb"], 0)
        self.assertGreaterEqual(server["hwm_kb"], server["rss_kb"])

    def test_topics_each_publisher_its_own(self):
        """2 publishers on 2 topics, 6 subscribers: 3 per topic, so each
        message reaches 3."""
        run = FanoutRun(self, ["--addr", "127.0.0.1:%d" % self.daemon.port(),
                               "--publishers", 2, "--topics", 2, "--subscribers", 6,
                               "--messages", 100, "--size", 1024, "--topic-prefix", "tt",
                               "--seconds", timeout(2)] + limits())
        self.assert_complete(run, 200, 600)

    def test_open_loop_for_a_time(self):
        run = FanoutRun(self, ["--addr", "127.0.0.1:%d" % self.daemon.port(),
                               "--subscribers", 4, "--rate", 2000, "--seconds", 0.3,
                               "--warmup", 0.1] + limits())
        r = run.report
        self.assertEqual(run.rc, 0, repr(run))
        self.assertGreater(r["published"], 100, repr(run))
        self.assertEqual(r["received"], r["published"] * 4, repr(run))
        self.assertEqual(r["completeness"], 1.0, repr(run))
        self.assertGreater(r["deliveries_per_s"], 0, repr(run))
        self.assertGreater(r["latency_us"]["samples"], 0, repr(run))

    def test_text_report(self):
        if not (os.path.isfile(MSGFANOUT) and os.access(MSGFANOUT, os.X_OK)):
            self.fail("%s not found (build it with make)" % MSGFANOUT)
        p = subprocess.run([MSGFANOUT, "--addr", "127.0.0.1:%d" % self.daemon.port(),
                            "--subscribers", "3", "--messages", "20", "--seconds", str(timeout(2))],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout(4))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("completeness: 100.0000% (60 received of 60 expected", p.stdout)
        self.assertIn("errors:       0 ", p.stdout)

    def test_bad_option(self):
        p = subprocess.run([MSGFANOUT, "--addr", "127.0.0.1:1", "--size", "3"],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout(2))
        self.assertEqual(p.returncode, 2, p.stderr)


class MsgdAuthFanoutTests(CompleteMixin, MsgdTestCase):
    config = {"server": {"reactors": 1}, "auth": {"tokens": TOKEN}}

    def test_token(self):
        run = FanoutRun(self, ["--addr", "127.0.0.1:%d" % self.daemon.port(), "--token", TOKEN,
                               "--subscribers", 3, "--messages", 50,
                               "--seconds", timeout(2)] + limits())
        self.assert_complete(run, 50, 150)

    def test_without_the_token_the_subscribe_is_refused(self):
        run = FanoutRun(self, ["--addr", "127.0.0.1:%d" % self.daemon.port(),
                               "--subscribers", 2, "--messages", 5,
                               "--seconds", timeout(2)] + limits())
        self.assertEqual(run.rc, 1, repr(run))
        self.assertIn("NOT_AUTHENTICATED", run.report["first_error"], repr(run))


class RedisFanoutTests(CompleteMixin, unittest.TestCase):
    def setUp(self):
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.cleanup)

    def test_resp_two_publishers_five_subscribers(self):
        run = FanoutRun(self, ["--proto", "resp", "--addr", self.redis.addr,
                               "--publishers", 2, "--subscribers", 5, "--messages", 300,
                               "--outstanding", 16, "--seconds", timeout(2),
                               "--server-pid", self.redis.proc.pid] + limits())
        self.assert_complete(run, 600, 3000)
        self.assertGreater(run.report["server"]["rss_kb"], 0)

    def test_resp_open_loop_1_kib(self):
        run = FanoutRun(self, ["--proto", "resp", "--addr", self.redis.addr,
                               "--subscribers", 3, "--size", 1024, "--rate", 1000,
                               "--seconds", 0.3, "--warmup", 0.05] + limits())
        self.assertEqual(run.rc, 0, repr(run))
        self.assertGreater(run.report["published"], 50, repr(run))
        self.assertEqual(run.report["received"], run.report["published"] * 3, repr(run))


# ---- a fake msg server that breaks the stream on purpose ----------------------------

class FakeFanoutServer:
    """Accepts msgfanout's connections on a loopback port. SUBSCRIBE gets its
    empty reply; each PUBLISH is answered with the number of subscribers and
    passed to them as MESSAGE, except that message number `bad` is broken as
    `mode` says: "repeat" sends it twice, "short" cuts its last byte,
    "skip" leaves it out for the first subscriber (still counted)."""

    def __init__(self, mode, bad=3):
        self.mode, self.bad = mode, bad
        self.lock = threading.Lock()
        self.subs = []
        self.stop = threading.Event()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind((harness.HOST, 0))
        self.listener.listen(16)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.threads = [threading.Thread(target=self.accept, daemon=True)]
        self.threads[0].start()

    def accept(self):
        while not self.stop.is_set():
            try:
                s, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            s.settimeout(timeout())
            t = threading.Thread(target=self.serve, args=(s,), daemon=True)
            self.threads.append(t)
            t.start()

    def serve(self, s):
        buf = b""
        published = 0
        try:
            while not self.stop.is_set():
                while len(buf) >= 16:
                    _, _, cmd, n = struct.unpack(">IIII", buf[:16])
                    if len(buf) < 16 + n:
                        break
                    payload, buf = buf[16:16 + n], buf[16 + n:]
                    if cmd == mp.SUBSCRIBE:
                        with self.lock:
                            s.sendall(mp.encode(mp.REPLY | mp.SUBSCRIBE, b""))
                            self.subs.append(s)
                    elif cmd == mp.PUBLISH:
                        self.fan(s, payload, published)
                        published += 1
                data = s.recv(65536)
                if not data:
                    return
                buf += data
        except OSError:
            return
        finally:
            s.close()

    def fan(self, pub, payload, i):
        with self.lock:
            for k, sub in enumerate(self.subs):
                frame = payload
                if i == self.bad and self.mode == "short":
                    frame = payload[:-1]
                if i == self.bad and self.mode == "skip" and k == 0:
                    continue
                sub.sendall(mp.encode(mp.MESSAGE, frame))
                if i == self.bad and self.mode == "repeat":
                    sub.sendall(mp.encode(mp.MESSAGE, frame))
            pub.sendall(mp.encode(mp.REPLY | mp.PUBLISH, struct.pack(">I", len(self.subs))))

    def close(self):
        self.stop.set()
        self.listener.close()
        for t in self.threads:
            t.join(timeout())


class CheckerTests(unittest.TestCase):
    def broken_run(self, mode):
        srv = FakeFanoutServer(mode)
        self.addCleanup(srv.close)
        run = FanoutRun(self, ["--addr", "127.0.0.1:%d" % srv.port, "--subscribers", 2,
                               "--messages", 8, "--outstanding", 1, "--seconds", timeout(2),
                               "--timeout", timeout(1), "--drain", 0.5])
        self.assertEqual(run.rc, 1, repr(run))
        return run

    def test_a_repeated_message_is_an_error(self):
        run = self.broken_run("repeat")
        self.assertEqual(run.report["errors"]["sequence"], 2, repr(run))
        self.assertIn("publisher 0 sequence 3 after 3 (repeated)", run.report["first_error"])
        self.assertIn("repeated", run.stderr)

    def test_a_short_message_is_an_error(self):
        run = self.broken_run("short")
        self.assertEqual(run.report["errors"]["size"], 2, repr(run))
        self.assertIn("a message of 63 bytes, expected 64", run.report["first_error"])

    def test_a_missing_message_the_server_counted_is_an_error(self):
        run = self.broken_run("skip")
        r = run.report
        self.assertEqual(r["received"], 15, repr(run))
        self.assertEqual(r["queued"], 16, repr(run))
        self.assertEqual(r["gaps"], 1, repr(run))
        self.assertEqual(r["errors"]["incomplete"], 1, repr(run))
        self.assertIn("incomplete: received 15 deliveries, the server reported queueing 16",
                      r["first_error"])


if __name__ == "__main__":
    unittest.main()
