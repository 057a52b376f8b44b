"""Sticky and half packets: many frames per write, frames split across writes."""

import struct
import threading
import time
import unittest

import msgproto as mp
from harness import MsgdTestCase, timeout


class PipeliningTests(MsgdTestCase):

    def test_10000_echoes_in_one_write(self):
        n = 10000
        c = self.connect()
        blob = b"".join(mp.encode(mp.ECHO, struct.pack(">I", i)) for i in range(n))
        errors = []

        def send():
            try:
                c.send_raw(blob)
            except OSError as e:
                errors.append(e)

        t = threading.Thread(target=send, daemon=True)
        t.start()
        deadline = time.monotonic() + timeout(3)
        try:
            for i in range(n):
                cmd, payload = c.recv_frame(max(0.0, deadline - time.monotonic()))
                if cmd != mp.REPLY | mp.ECHO or payload != struct.pack(">I", i):
                    self.fail("reply %d: expected ECHO reply with seq %d, got %s"
                              % (i, i, mp.describe(cmd, payload)))
        finally:
            t.join(timeout())
        self.assertFalse(t.is_alive(), "sender still blocked")
        self.assertEqual(errors, [])
        self.assertTrue(c.quiet(0), "no extra frames")

    def test_two_and_a_half_frames(self):
        c = self.connect()
        frames = [mp.encode(mp.ECHO, bytes([65 + k]) * 100) for k in range(3)]
        half = len(frames[2]) // 2
        c.send_raw(frames[0] + frames[1] + frames[2][:half])
        # the two whole frames are answered without waiting for the third
        self.assert_frame(c.recv_frame(), mp.REPLY | mp.ECHO, b"A" * 100)
        self.assert_frame(c.recv_frame(), mp.REPLY | mp.ECHO, b"B" * 100)
        self.assertTrue(c.quiet(0.05),
                        "a reply came for an incomplete frame")
        c.send_raw(frames[2][half:])
        self.assert_frame(c.recv_frame(), mp.REPLY | mp.ECHO, b"C" * 100)

    def test_split_at_every_offset(self):
        c = self.connect()  # TCP_NODELAY is set by the client
        frame = mp.encode(mp.ECHO, b"split")
        self.assertEqual(len(frame), 21)
        for off in range(1, len(frame)):
            with self.subTest(offset=off):
                c.send_raw(frame[:off])
                # no reply may come for a partial frame (short check, not a sync)
                self.assertTrue(c.quiet(0.01), "reply before the frame was complete")
                c.send_raw(frame[off:])
                self.assert_frame(c.recv_frame(), mp.REPLY | mp.ECHO, b"split")

    def test_split_with_next_frame_attached(self):
        # the second half of one frame and the first bytes of the next in one write
        c = self.connect()
        a = mp.encode(mp.ECHO, b"first")
        b = mp.encode(mp.PING, b"second")
        stream = a + b
        for off in range(1, len(a)):
            for off2 in (len(a) + 1, len(a) + 15, len(a) + 16, len(stream) - 1):
                with self.subTest(offset=off, offset2=off2):
                    c.send_raw(stream[:off])
                    c.send_raw(stream[off:off2])
                    self.assert_frame(c.recv_frame(), mp.REPLY | mp.ECHO, b"first")
                    c.send_raw(stream[off2:])
                    self.assert_frame(c.recv_frame(), mp.REPLY | mp.PING, b"second")

    def test_byte_by_byte(self):
        c = self.connect()
        stream = mp.encode(mp.ECHO, b"12345") + mp.encode(mp.PING, b"") + mp.encode(mp.ECHO, b"z")
        for i in range(len(stream)):
            c.send_raw(stream[i:i + 1])
        self.assert_frame(c.recv_frame(), mp.REPLY | mp.ECHO, b"12345")
        self.assert_frame(c.recv_frame(), mp.REPLY | mp.PING, b"")
        self.assert_frame(c.recv_frame(), mp.REPLY | mp.ECHO, b"z")


if __name__ == "__main__":
    unittest.main()
