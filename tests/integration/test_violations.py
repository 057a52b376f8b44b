"""Protocol violations: connection-level error, earlier replies first, then close."""

import os
import unittest

import msgproto as mp
from harness import MsgdTestCase, MAX_FRAME

# (name, header bytes, expected code). Headers only: nothing follows them, so
# the daemon has read everything when it closes (a FIN, not a RST).
CASES = [
    ("bad magic", mp.encode_header(mp.PING, 0, magic=0x12345678), mp.BAD_MAGIC),
    ("byte-swapped magic", mp.encode_header(mp.PING, 0, magic=0x5047534D), mp.BAD_MAGIC),
    ("version 0", mp.encode_header(mp.PING, 0, version=0), mp.BAD_VERSION),
    ("version 2", mp.encode_header(mp.PING, 0, version=2), mp.BAD_VERSION),
    ("version 0xFFFFFFFF", mp.encode_header(mp.PING, 0, version=0xFFFFFFFF), mp.BAD_VERSION),
    ("length max_frame+1", mp.encode_header(mp.ECHO, MAX_FRAME + 1), mp.TOO_LARGE),
    ("length 0x7FFFFFFF", mp.encode_header(mp.ECHO, 0x7FFFFFFF), mp.TOO_LARGE),
    ("length 0x80000000", mp.encode_header(mp.ECHO, 0x80000000), mp.TOO_LARGE),
    ("length 0xFFFFFFFF", mp.encode_header(mp.ECHO, 0xFFFFFFFF), mp.TOO_LARGE),
]

HTTP_GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


class ViolationTests(MsgdTestCase):

    def _expect_violation(self, c, code, what):
        got = c.recv_frame()
        self.assert_error(got, 0, code, what)
        c.expect_eof()

    def test_violation_alone(self):
        for name, header, code in CASES:
            with self.subTest(name):
                c = self.connect()
                c.send_raw(header)
                self._expect_violation(c, code, name)

    def test_violation_after_two_valid_frames(self):
        for name, header, code in CASES:
            with self.subTest(name):
                c = self.connect()
                c.send_raw(mp.encode(mp.ECHO, b"one") + mp.encode(mp.ECHO, b"two") + header)
                self.assert_frame(c.recv_frame(), mp.REPLY | mp.ECHO, b"one", name)
                self.assert_frame(c.recv_frame(), mp.REPLY | mp.ECHO, b"two", name)
                self._expect_violation(c, code, name)

    def test_length_exactly_max_frame_accepted(self):
        c = self.connect()
        payload = os.urandom(MAX_FRAME)
        self.assert_frame(c.call(mp.ECHO, payload), mp.REPLY | mp.ECHO, payload)
        # a header with length max_frame whose payload comes later is fine too
        c.send_raw(mp.encode_header(mp.ECHO, MAX_FRAME))
        self.assertTrue(c.quiet(0.02), "reply or close before the payload arrived")
        c.send_raw(payload)
        self.assert_frame(c.recv_frame(), mp.REPLY | mp.ECHO, payload)
        self.assert_frame(c.call(mp.PING, b"ok"), mp.REPLY | mp.PING, b"ok")

    def test_http_request_gets_bad_magic(self):
        c = self.connect()
        c.send_raw(HTTP_GET)
        got = c.recv_frame()
        self.assert_error(got, 0, mp.BAD_MAGIC, "HTTP request")
        # closed at once (the tail of the request may be unread: allow a reset)
        c.expect_eof(allow_reset=True)

    def test_daemon_serves_after_violations(self):
        for name, header, code in CASES:
            c = self.connect()
            c.send_raw(header)
            c.recv_frame()
            c.expect_eof()
            c.close()
        c = self.connect()
        self.assert_frame(c.call(mp.PING, b"alive"), mp.REPLY | mp.PING, b"alive")
        s = self.stats(c)
        self.assertIn("connections_current", s)


if __name__ == "__main__":
    unittest.main()
