"""Clients that vanish mid-frame with a RST, and clients that half-close."""

import unittest

import msgproto as mp
from harness import MsgdTestCase, MAX_FRAME


def partial_frame(i):
    """Half a frame, in a few shapes."""
    kind = i % 5
    if kind == 0:
        return mp.encode(mp.ECHO, b"0123456789")[:10]           # 10 header bytes
    if kind == 1:
        return mp.encode(mp.ECHO, b"x" * 100)[:16 + 50]         # header + half the payload
    if kind == 2:
        return mp.encode_header(mp.ECHO, MAX_FRAME) + b"y" * 1000  # big frame, barely started
    if kind == 3:
        return mp.encode(mp.PING, b"whole") + mp.encode(mp.ECHO, b"abc")[:5]  # a whole frame first
    return mp.encode_header(mp.ECHO, 10)                        # header only


class ResetTests(MsgdTestCase):

    def test_200_resets_mid_frame(self):
        for i in range(200):
            c = self.daemon.client()
            try:
                c.send_raw(partial_frame(i))
            finally:
                c.close_rst()
        c = self.connect()
        self.assert_frame(c.call(mp.PING, b"still here"), mp.REPLY | mp.PING, b"still here")
        # every reset connection is gone: only this client is left
        self.wait_connections(c, 1, "after 200 resets")

    def test_resets_on_echo_listener(self):
        for i in range(50):
            c = self.daemon.client("echo")
            try:
                c.send_raw(b"z" * (1 + i * 101))
            finally:
                c.close_rst()
        c = self.connect()
        self.assert_frame(c.call(mp.PING, b"ok"), mp.REPLY | mp.PING, b"ok")
        self.wait_connections(c, 1, "after 50 resets on the echo listener")


class HalfCloseTests(MsgdTestCase):

    def test_100_pipelined_then_shut_wr(self):
        c = self.connect()
        c.send_raw(b"".join(mp.encode(mp.ECHO, b"half-%03d" % i) for i in range(100)))
        c.shutdown_write()
        for i in range(100):
            self.assert_frame(c.recv_frame(), mp.REPLY | mp.ECHO, b"half-%03d" % i,
                              "reply %d after SHUT_WR" % i)
        c.expect_eof()

    def test_shut_wr_mid_frame(self):
        # a half frame then SHUT_WR: the whole frames before it are answered,
        # then the server closes (it may or may not send a connection error)
        c = self.connect()
        c.send_raw(mp.encode(mp.ECHO, b"whole") + mp.encode(mp.ECHO, b"partial")[:20])
        c.shutdown_write()
        self.assert_frame(c.recv_frame(), mp.REPLY | mp.ECHO, b"whole")
        rest = c.expect_eof(allow_data=True)
        if rest:
            r = mp.FrameReader()
            r.feed(rest)
            frames = list(r.frames())
            self.assertEqual(r.pending(), 0, "trailing garbage %r" % rest)
            for f in frames:
                self.assertEqual(f.cmd, mp.CONN_ERROR, "only a connection-level error may follow: %s"
                                 % mp.describe(f.cmd, f.payload))


if __name__ == "__main__":
    unittest.main()
