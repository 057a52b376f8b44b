"""[server] max_connections: connections past the limit are closed at once."""

import time
import unittest

import msgproto as mp
from harness import MsgdTestCase, timeout, poll_pause


class MaxConnectionsTests(MsgdTestCase):
    config = {"server": {"max_connections": 5}}

    def _rejected(self, c):
        """The server closes c at once (maybe after some bytes, maybe with a RST)."""
        data = c.expect_eof(allow_data=True, allow_reset=True)
        if data:
            # whatever it sends before closing must still be well-formed frames
            r = mp.FrameReader()
            r.feed(data)
            list(r.frames())
        return data

    def test_sixth_connection_closed(self):
        d = self.daemon
        first = []
        for i in range(5):
            c = self.connect()
            self.assert_frame(c.call(mp.PING, b"c%d" % i), mp.REPLY | mp.PING, b"c%d" % i)
            first.append(c)

        sixth = self.connect()
        self._rejected(sixth)

        s = self.stats(first[0])
        self.assertIn("closed_by_limit.max_connections", s, sorted(s))
        self.assertGreaterEqual(s["closed_by_limit.max_connections"], 1)
        self.assertEqual(s["connections_current"], 5)

        # the five are still served
        for i, c in enumerate(first):
            self.assert_frame(c.call(mp.PING, b"again"), mp.REPLY | mp.PING, b"again")

        # closing one lets a new one in (the daemon notices the close asynchronously)
        first.pop().close()
        deadline = time.monotonic() + timeout(2)
        attempt = 0
        newcomer = None
        while newcomer is None:
            if time.monotonic() > deadline:
                self.fail("no new connection was admitted after one of the five closed")
            c = self.connect()
            try:
                self.assert_frame(c.call(mp.PING, b"new"), mp.REPLY | mp.PING, b"new")
                newcomer = c
            except (mp.ConnectionClosed, ConnectionError):
                c.close()
                poll_pause(attempt)
                attempt += 1
        first.append(newcomer)

        # and the limit still holds
        extra = self.connect()
        self._rejected(extra)
        s2 = self.stats(first[0])
        self.assertGreater(s2["closed_by_limit.max_connections"],
                           s["closed_by_limit.max_connections"])


if __name__ == "__main__":
    unittest.main()
