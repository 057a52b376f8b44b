"""Sticky and half packets: many frames per write, frames split across writes."""

import struct
import threading
import time
import unittest

import msgproto as mp
from harness import MsgdTestCase, timeout


class PipeliningTests(MsgdTestCase):

    def expect_replies(self, c, want, wait):
        """Reads len(want) frames, each equal to want[i] = (cmd, payload),
        within wait seconds in all; then no extra frame."""
        deadline = time.monotonic() + wait
        for i, (cmd, payload) in enumerate(want):
            got = c.recv_frame(max(0.0, deadline - time.monotonic()))
            if got != (cmd, payload):
                self.fail("reply %d: expected %s, got %s" % (
                    i, mp.describe(cmd, payload[:8]), mp.describe(got[0], got[1][:8])))
        self.assertTrue(c.quiet(0), "no extra frames")

    def send_and_expect(self, c, blob, want, wait):
        """Sends blob from a thread (it may block until replies are read)
        while expect_replies reads."""
        errors = []

        def send():
            try:
                c.send_raw(blob)
            except OSError as e:
                errors.append(e)

        t = threading.Thread(target=send, daemon=True)
        t.start()
        try:
            self.expect_replies(c, want, wait)
        finally:
            t.join(timeout())
        self.assertFalse(t.is_alive(), "sender still blocked")
        self.assertEqual(errors, [])

    def test_10000_echoes_in_one_write(self):
        n = 10000
        c = self.connect()
        blob = b"".join(mp.encode(mp.ECHO, struct.pack(">I", i)) for i in range(n))
        want = [(mp.REPLY | mp.ECHO, struct.pack(">I", i)) for i in range(n)]
        self.send_and_expect(c, blob, want, timeout(3))

    def test_large_echoes_to_a_slow_reader(self):
        # Replies of 2 KiB and more are sent straight from the input
        # (write-through); when the socket refuses part of one, the rest must
        # be kept ahead of the replies queued behind it. A reader with a small
        # receive buffer makes the socket refuse again and again while large
        # ECHOs, with small PINGs between them, keep arriving.
        c = self.connect(rcvbuf=8192)
        sizes = [2048, 2049, 4096, 30000, 65536 - 16, 5000, 17000] * 30
        frames, want = [], []
        for i, n in enumerate(sizes):
            payload = struct.pack(">I", i) + bytes([i & 0xFF]) * (n - 4)
            frames.append(mp.encode(mp.ECHO, payload))
            want.append((mp.REPLY | mp.ECHO, payload))
            if i % 3 == 0:
                frames.append(mp.encode(mp.PING))
                want.append((mp.REPLY | mp.PING, b""))
        self.send_and_expect(c, b"".join(frames), want, timeout(4))

    def test_large_echoes_to_a_reader_that_waits(self):
        # The ECHOs arrive while the client reads nothing, so replies go out
        # straight from the input while the socket has room; the one the
        # socket takes only in part is kept (copied) and every later reply
        # queues behind it. 10 MiB is more than the socket holds (loopback's
        # send buffer grows to 4 MiB) and less than this daemon's high water.
        d = self.start_daemon({"limits": {"output_high_water": "16M",
                                          "output_low_water": "1M",
                                          "output_hard_limit": "32M"}})
        c = self.connect(daemon=d, rcvbuf=8192)
        want = []
        for i in range(340):
            payload = struct.pack(">I", i) + bytes([(i * 37) & 0xFF]) * 30000
            c.send_raw(mp.encode(mp.ECHO, payload))
            want.append((mp.REPLY | mp.ECHO, payload))
        self.expect_replies(c, want, timeout(3))

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
