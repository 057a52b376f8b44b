"""Worker commands (DELAY, PROTOCOL.md): reply order across inline and worker
commands (rule 1), the reactor never blocked by a job, the bounded queue
(rule 8, OVERLOADED), DISABLED/BAD_PAYLOAD, results for connections that went
away (churn), and a stop with a job in flight (rule 6)."""

import os
import random
import select
import signal
import struct
import sys
import threading
import time
import unittest
from collections import deque

import msgproto as mp
from harness import MsgdTestCase, SCALE, timeout, wait_until

DELAY_ON = {"diagnostics": {"delay_command": "on"}}
DRAIN_S = 2.0  # drain_timeout in the harness's default config


def delay_req(ms, body=b""):
    """A DELAY request frame: u32 BE milliseconds, then the bytes to return."""
    return mp.encode(mp.DELAY, mp.u32(ms) + body)


def pause(seconds):
    threading.Event().wait(seconds)


class WorkerOrderTests(MsgdTestCase):
    config = dict(DELAY_ON, server={"reactors": 2, "workers": 2})

    def _recv(self, c, deadline, what):
        try:
            got = c.recv_frame(max(0.0, deadline - time.monotonic()))
        except (mp.Timeout, mp.ConnectionClosed) as e:
            self.fail("%s: %s" % (what, e))
        return got, time.monotonic()

    def test_delay_then_echo_in_one_write(self):
        c = self.connect()
        t0 = time.monotonic()
        c.send_raw(delay_req(300, b"slow") + mp.encode(mp.ECHO, b"fast"))
        deadline = t0 + 0.3 + timeout()
        got, t1 = self._recv(c, deadline, "the DELAY reply")
        self.assert_frame(got, mp.REPLY | mp.DELAY, b"slow",
                          "first reply (the ECHO must wait for the DELAY before it)")
        self.assertGreaterEqual(t1 - t0, 0.29, "DELAY 300 ms answered after %.0f ms"
                                % ((t1 - t0) * 1000))
        got, t2 = self._recv(c, deadline, "the ECHO reply")
        self.assert_frame(got, mp.REPLY | mp.ECHO, b"fast", "second reply")
        self.assertGreaterEqual(t2 - t0, 0.29, "the ECHO reply left %.0f ms after the request, "
                                "before the DELAY 300 ms ahead of it" % ((t2 - t0) * 1000))
        self.assertTrue(c.quiet(0))

    def test_mixed_pipeline_order(self):
        c = self.connect()
        reqs = [
            (mp.encode(mp.ECHO, b"a"), mp.REPLY | mp.ECHO, b"a"),
            (delay_req(200, b"b"), mp.REPLY | mp.DELAY, b"b"),
            (mp.encode(mp.ECHO, b"c"), mp.REPLY | mp.ECHO, b"c"),
            (delay_req(50, b"d"), mp.REPLY | mp.DELAY, b"d"),
            (mp.encode(mp.PING, b"e"), mp.REPLY | mp.PING, b"e"),
            (delay_req(0, b"f"), mp.REPLY | mp.DELAY, b"f"),
            (mp.encode(mp.ECHO, b"g"), mp.REPLY | mp.ECHO, b"g"),
        ]
        for rnd in range(3):
            with self.subTest(round=rnd):
                t0 = time.monotonic()
                c.send_raw(b"".join(r[0] for r in reqs))
                deadline = t0 + 0.25 + timeout()
                for i, (_, cmd, payload) in enumerate(reqs):
                    got, t = self._recv(c, deadline, "reply %d of the mixed pipeline" % i)
                    self.assert_frame(got, cmd, payload, "reply %d of the mixed pipeline" % i)
                    if i >= 1:
                        self.assertGreaterEqual(t - t0, 0.19, "reply %d (%s) %.0f ms after the "
                                                "write, before the DELAY 200 ahead of it"
                                                % (i, mp.describe(cmd, payload), (t - t0) * 1000))
                self.assertTrue(c.quiet(0), "extra frames after the pipeline")

    def test_malformed_delay(self):
        c = self.connect()
        for name, payload in (("3-byte payload", b"\x00\x00\x01"),
                              ("empty payload", b""),
                              ("60001 ms", mp.u32(60001) + b"x"),
                              ("0xFFFFFFFF ms", mp.u32(0xFFFFFFFF))):
            with self.subTest(name):
                t0 = time.monotonic()
                got = c.call(mp.DELAY, payload)
                self.assert_error(got, mp.DELAY, mp.BAD_PAYLOAD, name)
                self.assertLess(time.monotonic() - t0, timeout(0.5))
        # the connection stays open, and an error reply keeps its place in line
        c.send_raw(delay_req(100, b"x") + mp.encode(mp.DELAY, b"\x00\x01") +
                   mp.encode(mp.ECHO, b"y"))
        self.assert_frame(c.recv_frame(), mp.REPLY | mp.DELAY, b"x")
        self.assert_error(c.recv_frame(), mp.DELAY, mp.BAD_PAYLOAD, "after a DELAY")
        self.assert_frame(c.recv_frame(), mp.REPLY | mp.ECHO, b"y")
        self.assert_frame(c.call(mp.PING, b"ok"), mp.REPLY | mp.PING, b"ok")


class DelayDisabledTests(MsgdTestCase):
    config = {"diagnostics": None}  # the default: delay_command = off

    def test_delay_disabled_by_default(self):
        c = self.connect()
        for payload in (mp.u32(10) + b"x", mp.u32(0), b"", b"\x00"):
            with self.subTest(payload=payload):
                self.assert_error(c.call(mp.DELAY, payload), mp.DELAY, mp.DISABLED)
        self.assert_frame(c.call(mp.PING, b"open"), mp.REPLY | mp.PING, b"open",
                          "the connection stays open after DISABLED")
        s = self.stats(c)
        self.assertEqual(s.get("worker_jobs"), 0, "a disabled DELAY reached a worker")


class SingleReactorTests(MsgdTestCase):
    shared_daemon = False

    def _wait_jobs(self, c, n):
        """Polls STATS over c until worker_jobs >= n (the DELAY was read and queued)."""
        return wait_until(lambda: self.stats(c).get("worker_jobs", 0) >= n, timeout(),
                          "worker_jobs >= %d" % n)

    def test_reactor_not_blocked_by_job(self):
        d = self.start_daemon(dict(DELAY_ON, server={"reactors": 1, "workers": 1}))
        a = self.connect(daemon=d)
        b = self.connect(daemon=d)
        t0 = time.monotonic()
        a.send_raw(delay_req(1000, b"from-a"))
        self._wait_jobs(b, 1)
        limit = 0.2 * SCALE
        n = 0
        while time.monotonic() - t0 < 0.7:
            t = time.monotonic()
            self.assert_frame(b.call(mp.PING, b"b%d" % n, timeout()), mp.REPLY | mp.PING, b"b%d" % n)
            took = time.monotonic() - t
            self.assertLess(took, limit, "client B's PING took %.0f ms while client A's DELAY "
                            "1000 ms ran on the only reactor's worker" % (took * 1000))
            n += 1
            pause(0.05)
        self.assertGreater(n, 0)
        self.assertLess(time.monotonic() - t0, 1.0, "too slow to test anything")
        self.assertTrue(a.quiet(0), "A's DELAY 1000 ms answered before 1 s")
        cmd, payload = a.recv_frame(1.0 + timeout())
        t1 = time.monotonic()
        self.assert_frame((cmd, payload), mp.REPLY | mp.DELAY, b"from-a")
        self.assertGreaterEqual(t1 - t0, 0.99)

    def _collect(self, c, tags, first_index=0):
        """Reads one reply per tag (in order): 'D' for the DELAY reply carrying
        that tag, 'O' for OVERLOADED. Anything else fails."""
        results = []
        deadline = time.monotonic() + len(tags) * 0.2 + timeout()
        for i, tag in enumerate(tags, first_index):
            try:
                cmd, payload = c.recv_frame(max(0.0, deadline - time.monotonic()))
            except mp.Timeout:
                self.fail("reply %d: timed out; got %s" % (i, "".join(results)))
            if cmd == mp.error_cmd(mp.DELAY):
                code, text = mp.decode_error(payload)
                self.assertEqual(code, mp.OVERLOADED, "reply %d: %s" % (i, mp.describe(cmd, payload)))
                results.append("O")
            else:
                self.assert_frame((cmd, payload), mp.REPLY | mp.DELAY, tag,
                                  "reply %d (replies in request order, each with its tag)" % i)
                results.append("D")
        return "".join(results)

    def test_queue_overflow(self):
        d = self.start_daemon(dict(DELAY_ON, server={"reactors": 1, "workers": 1,
                                                     "worker_queue": 2}))
        c = self.connect(daemon=d)
        other = self.connect(daemon=d)

        def tags_for(phase):
            return [b"job-%s-%d-%s" % (phase, i, os.urandom(4).hex().encode()) for i in range(10)]

        # 1. ten DELAY 200 ms in one write: the first two always fit the
        # queue; at most one more (if the idle worker took the first before
        # the third was read); the rest are OVERLOADED at once
        tags = tags_for(b"burst")
        errors_before = self.stats(other)["errors.OVERLOADED"]
        c.send_raw(b"".join(delay_req(200, t) for t in tags))
        t0 = time.monotonic()
        self.assert_frame(other.call(mp.PING, b"x"), mp.REPLY | mp.PING, b"x")
        self.assertLess(time.monotonic() - t0, 0.2 * SCALE, "the reactor blocked on a full queue")
        pattern = self._collect(c, tags)
        self.assertTrue(c.quiet(0))
        nd = pattern.count("D")
        self.assertEqual(pattern[:2], "DD", "one write of 10 DELAYs: %s" % pattern)
        self.assertGreaterEqual(pattern.count("O"), 1, "no OVERLOADED: %s" % pattern)
        self.assertLessEqual(nd, 3, "one write of 10 DELAYs: %s (1 worker + worker_queue 2)" % pattern)
        self.assertEqual(self.stats(other)["errors.OVERLOADED"] - errors_before, 10 - nd)

        # 2. the running job does not count: with one DELAY already running,
        # two more wait and the rest get OVERLOADED
        tags = tags_for(b"running")
        jobs = self.stats(other)["worker_jobs"]
        t0 = time.monotonic()
        c.send_raw(delay_req(200, tags[0]))
        wait_until(lambda: self.stats(other)["worker_jobs"] > jobs, timeout(), "the first DELAY queued")
        # the idle worker takes a queued job within microseconds; this pause
        # (not a synchronisation: nothing outside shows the job started) makes
        # sure it did before the burst
        pause(0.05)
        c.send_raw(b"".join(delay_req(200, t) for t in tags[1:]))
        sent = time.monotonic() - t0
        pattern = self._collect(c, tags)
        self.assertTrue(c.quiet(0))
        if sent < 0.15:  # the first was still running when the burst came
            self.assertEqual(pattern, "DDD" + "O" * 7,
                             "one DELAY running, then 9 in one write with worker_queue = 2: %s "
                             "(expected 1 running + 2 waiting accepted: the queue limit counts "
                             "waiting jobs, not running ones)" % pattern)
        else:
            self.assertGreaterEqual(pattern.count("D"), 3, pattern)
            self.assertGreaterEqual(pattern.count("O"), 1, pattern)


class ChurnTests(MsgdTestCase):
    shared_daemon = False
    ROUNDS = 2000

    def test_churn_results_for_gone_connections(self):
        d = self.start_daemon(dict(DELAY_ON, server={"reactors": 2, "workers": 2,
                                                     "worker_queue": 100000}))
        port = d.port("msg")
        checker = self.connect(daemon=d)
        checker_echo = self.connect(daemon=d)
        churn_err = []
        churn_done = threading.Event()
        counts = {"rounds": 0, "rst": 0, "refused": 0}

        def churn():
            rng = random.Random(1234)
            try:
                for i in range(self.ROUNDS):
                    try:
                        cl = mp.Client("127.0.0.1", port, timeout=timeout())
                    except OSError:
                        counts["refused"] += 1
                        continue
                    try:
                        cl.send_raw(delay_req(20, b"churn-%d-%016x" % (i, rng.getrandbits(64))))
                    except OSError:
                        pass
                    if i % 2:
                        cl.close_rst()
                        counts["rst"] += 1
                    else:
                        cl.close()
                    counts["rounds"] += 1
            except BaseException as e:  # reported by the main thread
                churn_err.append(repr(e))
            finally:
                churn_done.set()

        t = threading.Thread(target=churn, daemon=True)
        t0 = time.monotonic()
        t.start()
        # two long-lived checkers: one pipelines [DELAY 5 ms, ECHO, ECHO]
        # (its replies wait behind the churn's jobs on its reactor), one only
        # ECHOs (many replies); every tag is unique to its request
        checkers = [_Checker(self, checker, b"dly", (mp.DELAY, mp.ECHO, mp.ECHO), 6),
                    _Checker(self, checker_echo, b"ech", (mp.ECHO,) * 4, 8)]
        deadline = t0 + timeout(5)
        # the checkers go on until the churn is over and every churn
        # connection is gone (its results delivered or dropped), then drain
        s_conn = self.connect(daemon=d)
        sending = True
        next_poll = 0.0
        try:
            while sending or any(k.pending for k in checkers):
                now = time.monotonic()
                self.assertLess(now, deadline, "checkers out of time: %s"
                                % ["%d checked, %d pending" % (k.checked, len(k.pending))
                                   for k in checkers])
                if sending and churn_done.is_set() and now >= next_poll:
                    next_poll = now + 0.2
                    if self.stats(s_conn).get("connections_current") == 3:
                        sending = False
                if sending:
                    for k in checkers:
                        k.refill()
                r, _, _ = select.select([k.client for k in checkers], [], [],
                                        min(0.2, max(0.0, deadline - time.monotonic())))
                for k in checkers:
                    if k.client in r or k.client.reader.pending():
                        k.read_ready()
        finally:
            churn_done.wait(timeout(5))
            t.join(timeout())
        self.assertFalse(t.is_alive(), "churn thread still running")
        self.assertEqual(churn_err, [])
        self.assertGreaterEqual(counts["rounds"], 1000, counts)
        checked = "+".join(str(k.checked) for k in checkers)
        for k in checkers:
            self.assertGreater(k.checked, 0, "checker %r got no reply" % k.name)
            self.assertTrue(k.client.quiet(0), "extra frame on checker %r" % k.name)
            k.client.close()

        last = {}

        def settled():
            last["s"] = self.stats(s_conn)
            return last["s"].get("connections_current") == 1
        try:
            wait_until(settled, timeout(4), "connections_current == 1 after the churn")
        except AssertionError as e:
            self.fail("%s; last STATS: connections_current=%r worker_jobs=%r "
                      "worker_results_dropped=%r" % (e, last["s"].get("connections_current"),
                                                    last["s"].get("worker_jobs"),
                                                    last["s"].get("worker_results_dropped")))
        s = last["s"]
        took = time.monotonic() - t0
        sys.stderr.write("\n[churn] %d rounds (%d RST, %d refused), checkers %s replies, "
                         "worker_jobs %s, worker_results_dropped %s, %.1f s\n"
                         % (counts["rounds"], counts["rst"], counts["refused"], checked,
                            s.get("worker_jobs"), s.get("worker_results_dropped"), took))
        self.assertGreater(s.get("worker_results_dropped", 0), 0, s)
        self.assertGreaterEqual(s.get("worker_jobs", 0), checkers[0].checked // 3)
        self.assert_frame(s_conn.call(mp.PING, b"end"), mp.REPLY | mp.PING, b"end")


class _Checker:
    """A long-lived client that pipelines requests tagged with tags only it
    knows and checks that every reply is the next one it is owed."""

    def __init__(self, test, client, name, kinds, window):
        self.test = test
        self.client = client
        self.name = name
        self.kinds = kinds
        self.window = window
        self.pending = deque()
        self.seq = 0
        self.checked = 0

    def refill(self):
        if len(self.pending) + len(self.kinds) > self.window:
            return
        batch = b""
        for kind in self.kinds:
            tag = b"%s-%d-%s" % (self.name, self.seq, os.urandom(6).hex().encode())
            self.seq += 1
            batch += delay_req(5, tag) if kind == mp.DELAY else mp.encode(kind, tag)
            self.pending.append((mp.REPLY | kind, tag))
        self.client.send_raw(batch)

    def read_ready(self):
        """Checks every whole frame that can be read without waiting."""
        first = True
        while True:
            try:
                cmd, payload = self.client.recv_frame(0 if not first else 0.01)
            except mp.Timeout:
                return
            first = False
            if not self.pending:
                self.test.fail("checker %r: unexpected frame %s"
                               % (self.name, mp.describe(cmd, payload)))
            want_cmd, want_tag = self.pending.popleft()
            if cmd != want_cmd or payload != want_tag:
                self.test.fail("checker %r reply %d: expected %s, got %s (foreign data or out "
                               "of order)" % (self.name, self.checked, mp.describe(want_cmd, want_tag),
                                              mp.describe(cmd, payload)))
            self.checked += 1
            if not self.client.reader.pending():
                return


class StopWithJobTests(MsgdTestCase):
    shared_daemon = False

    def test_sigterm_with_delay_in_flight(self):
        d = self.start_daemon(DELAY_ON)
        c = self.connect(daemon=d)
        probe = self.connect(daemon=d)
        c.send_raw(delay_req(5000, b"long"))
        wait_until(lambda: self.stats(probe).get("worker_jobs", 0) >= 1, timeout(),
                   "the DELAY to be queued")
        t0 = time.monotonic()
        d.send_signal(signal.SIGTERM)
        try:
            cmd, payload = c.recv_frame(timeout())
        except mp.ConnectionClosed:
            self.fail("closed without a GOAWAY")
        t_goaway = time.monotonic()
        self.assertEqual(cmd, mp.GOAWAY, "expected GOAWAY first, got %s" % mp.describe(cmd, payload))
        self.assertGreaterEqual(len(payload), 4)
        (ms,) = struct.unpack(">I", payload[:4])
        self.assertLessEqual(ms, DRAIN_S * 1000)
        # the connection owes the DELAY (5 s): it stays open until the drain
        # deadline, and nothing else comes (the job is abandoned)
        rest = c.expect_eof(DRAIN_S + timeout(0.4), allow_data=True, allow_reset=True)
        t_eof = time.monotonic() - t0
        r = mp.FrameReader()
        r.feed(rest)
        extra = [mp.describe(f.cmd, f.payload) for f in r.frames()]
        self.assertEqual(extra, [], "frames after GOAWAY (a DELAY 5000 cannot be due before the "
                         "2 s drain deadline)")
        early = time.monotonic() - t_goaway - ms / 1000.0
        self.assertGreaterEqual(early, -0.05,
                                "closed %.0f ms before the deadline the GOAWAY announced (%d ms) "
                                "while owing a DELAY reply" % (-early * 1000, ms))
        rc = d.wait_exit(DRAIN_S + timeout(0.4))
        took = time.monotonic() - t0
        if rc is None:
            d.kill()
            self.fail("msgd did not exit within %.1f s of SIGTERM with a DELAY 5000 in flight\n%s"
                      % (DRAIN_S + timeout(0.4), d.log_tail()))
        self.assertEqual(rc, 0, d.log_tail())
        self.assertLess(took, DRAIN_S + timeout(0.4))
        sys.stderr.write("\n[stop] EOF %.0f ms, exit %.0f ms after SIGTERM\n"
                         % (t_eof * 1000, took * 1000))


if __name__ == "__main__":
    unittest.main()
