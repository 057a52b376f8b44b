"""Clean stops: SIGTERM and SIGINT exit 0, idle or with clients connected;
msg clients get GOAWAY before the close (PROTOCOL.md rule 6, Drain)."""

import os
import signal
import struct
import time
import unittest

import msgproto as mp
from harness import MsgdTestCase, timeout

DRAIN_MS = 2000  # drain_timeout in the default test config


class SignalTests(MsgdTestCase):
    shared_daemon = False

    def _stop(self, d, sig):
        rc = d.stop(sig, timeout(2))
        self.assertEqual(rc, 0, "msgd exited with %r after %s\n%s"
                         % (rc, signal.Signals(sig).name, d.log_tail()))

    def test_sigterm_exits_0(self):
        self._stop(self.start_daemon(), signal.SIGTERM)

    def test_sigint_exits_0(self):
        self._stop(self.start_daemon(), signal.SIGINT)

    def test_only_the_main_thread_takes_signals(self):
        # DESIGN.md: the main thread owns SIGTERM/SIGINT/SIGHUP. Every thread
        # blocks them: the others (reactors, workers, the log writer) from
        # birth, or a process signal may run libev's handler there (under
        # TSan that handler waited for the thread's next intercepted call);
        # the main thread too, since its loop reads them from a signalfd
        # (with a handler, TSan sometimes never ran it at all).
        d = self.start_daemon({"server": {"reactors": 2, "workers": 2}})
        wanted = (1 << (signal.SIGHUP - 1)) | (1 << (signal.SIGINT - 1)) | \
            (1 << (signal.SIGTERM - 1))
        tasks = sorted(int(t) for t in os.listdir("/proc/%d/task" % d.pid))
        self.assertGreaterEqual(len(tasks), 1 + 2 + 2 * 2, tasks)  # main, reactors, workers
        unblocked = []
        for tid in tasks:
            try:
                with open("/proc/%d/task/%d/status" % (d.pid, tid)) as f:
                    status = f.read()
            except FileNotFoundError:
                continue  # a thread that ended meanwhile
            comm = next(l.split()[1] for l in status.splitlines() if l.startswith("Name:"))
            blk = int(next(l.split()[1] for l in status.splitlines()
                           if l.startswith("SigBlk:")), 16)
            if blk & wanted != wanted:
                unblocked.append((tid, comm, "%016x" % blk))
        self.assertEqual(unblocked, [], "threads that can take SIGHUP/SIGINT/SIGTERM")
        self._stop(d, signal.SIGTERM)

    def _daemon_with_clients(self):
        d = self.start_daemon()
        msg = []
        for i in range(3):
            c = self.connect(daemon=d)
            self.assert_frame(c.call(mp.PING, b"s%d" % i), mp.REPLY | mp.PING, b"s%d" % i)
            msg.append(c)
        e = self.connect("echo", daemon=d)
        e.send_raw(b"ping")
        self.assertEqual(e.recv_exact(4), b"ping")
        return d, msg, e

    def _expect_exit_0(self, d, sig, t0):
        rc = d.wait_exit(timeout(2))
        if rc is None:
            d.kill()
            self.fail("msgd did not exit within %.1fs of %s with clients connected\n%s"
                      % (timeout(2), signal.Signals(sig).name, d.log_tail()))
        self.assertEqual(rc, 0, d.log_tail())
        self.assertLess(time.monotonic() - t0, timeout(2))

    def _with_clients(self, sig):
        d, msg, e = self._daemon_with_clients()
        t0 = time.monotonic()
        d.send_signal(sig)
        # every client is closed; before the close a msg client may only get GOAWAY
        for i, c in enumerate(msg):
            rest = c.expect_eof(timeout(2), allow_data=True)
            r = mp.FrameReader()
            r.feed(rest)
            for f in r.frames():
                self.assertEqual(f.cmd, mp.GOAWAY, "client %d got %s before the close"
                                 % (i, mp.describe(f.cmd, f.payload)))
            self.assertEqual(r.pending(), 0, "client %d: partial frame before the close" % i)
        e.expect_eof(timeout(2))
        self._expect_exit_0(d, sig, t0)

    def test_sigterm_with_clients(self):
        self._with_clients(signal.SIGTERM)

    def test_sigint_with_clients(self):
        self._with_clients(signal.SIGINT)

    def test_sigterm_sends_goaway(self):
        d, msg, e = self._daemon_with_clients()
        t0 = time.monotonic()
        d.send_signal(signal.SIGTERM)
        # each idle msg client gets GOAWAY, then the close (it owes nothing)
        for i, c in enumerate(msg):
            try:
                cmd, payload = c.recv_frame(timeout(2))
            except mp.ConnectionClosed:
                self.fail("client %d: closed without a GOAWAY" % i)
            self.assertEqual(cmd, mp.GOAWAY, "client %d: expected GOAWAY, got %s"
                             % (i, mp.describe(cmd, payload)))
            self.assertGreaterEqual(len(payload), 4, "GOAWAY payload: u32 ms + reason")
            (ms,) = struct.unpack(">I", payload[:4])
            self.assertLessEqual(ms, DRAIN_MS, "GOAWAY ms beyond drain_timeout")
            payload[4:].decode("utf-8")
            c.expect_eof(timeout(2))
        e.expect_eof(timeout(2))
        self._expect_exit_0(d, signal.SIGTERM, t0)


if __name__ == "__main__":
    unittest.main()
