"""No file descriptor leaks: after many connections come and go, the daemon's
fd count returns to what it was right after READY."""

import os
import unittest

import msgproto as mp
from harness import MsgdTestCase, wait_until, timeout


class FdBaselineTests(MsgdTestCase):
    config = {"server": {"reactors": 2}}

    def test_fd_count_returns_to_baseline(self):
        d = self.daemon
        # The count right after READY can still include the socket sd_notify
        # used to send READY (libsystemd closes it after the datagram has left).
        # The acceptor runs on the thread that notified, so once a connection
        # has been served that socket is gone: the baseline is the count with
        # one served client open, minus that client's fd, confirmed below once
        # the client is closed.
        with d.client() as warm:
            self.assert_frame(warm.call(mp.PING, b"warm"), mp.REPLY | mp.PING, b"warm")
            baseline = d.fd_count() - 1
        self._wait_fds(baseline, "the baseline after the warm-up client closed")
        clients = []
        try:
            for i in range(500):
                clients.append(d.client())
            for i, c in enumerate(clients):
                self.assert_frame(c.call(mp.PING, b"fd-%d" % i), mp.REPLY | mp.PING, b"fd-%d" % i)
            # the count itself works: every connection holds a daemon fd
            self.assertGreaterEqual(d.fd_count(), baseline + 500)
            # some echo connections and some that vanish mid-frame with a RST
            for i in range(50):
                e = d.client("echo")
                clients.append(e)
                e.send_raw(b"echo-%d" % i)
                self.assertEqual(e.recv_exact(len(b"echo-%d" % i)), b"echo-%d" % i)
            for i in range(50):
                r = d.client()
                r.send_raw(mp.encode(mp.ECHO, b"q" * 40)[:30])
                r.close_rst()
        finally:
            for c in clients:
                c.close()

        # wait until the daemon has seen every close: one polling client left
        def settled():
            with d.client() as p:
                return self.stats(p).get("connections_current") == 1
        wait_until(settled, timeout(2), "connections_current == 1 (only the polling client)")

        # then, with no client of ours open, the fd count returns to the baseline
        self._wait_fds(baseline, "the baseline after 600 connections")

    def _wait_fds(self, baseline, what):
        last = {}

        def back():
            last["n"] = self.daemon.fd_count()
            return last["n"] == baseline
        try:
            wait_until(back, timeout(2), "fd count == %d (%s)" % (baseline, what))
        except AssertionError as e:
            raise AssertionError("%s; last count %r; fds: %s" % (e, last.get("n"), self._fd_list()))

    def _fd_list(self):
        out = []
        base = "/proc/%d/fd" % self.daemon.pid
        for name in sorted(os.listdir(base), key=int):
            try:
                out.append("%s->%s" % (name, os.readlink(os.path.join(base, name))))
            except OSError:
                pass
        return ", ".join(out)


if __name__ == "__main__":
    unittest.main()
