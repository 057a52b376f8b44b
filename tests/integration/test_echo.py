"""The RFC 862 echo listener: raw bytes back unchanged."""

import os
import threading
import unittest

from harness import MsgdTestCase, timeout


class EchoListenerTests(MsgdTestCase):

    def test_1mib_round_trip_then_eof(self):
        c = self.connect("echo")
        data = os.urandom(1 << 20)
        errors = []

        def send():
            try:
                view = memoryview(data)
                for off in range(0, len(data), 65536):  # several writes
                    c.send_raw(view[off:off + 65536])
            except OSError as e:
                errors.append(e)

        t = threading.Thread(target=send, daemon=True)
        t.start()
        try:
            got = c.recv_exact(len(data), timeout(3))
        finally:
            t.join(timeout())
        self.assertFalse(t.is_alive(), "sender still blocked")
        self.assertEqual(errors, [])
        if got != data:
            first = next(i for i in range(len(data)) if got[i] != data[i])
            self.fail("echoed bytes differ from offset %d" % first)
        c.shutdown_write()
        c.expect_eof()

    def test_small_writes(self):
        c = self.connect("echo")
        for chunk in (b"a", b"hello\r\n", b"\x00" * 100, bytes(range(256))):
            c.send_raw(chunk)
            self.assertEqual(c.recv_exact(len(chunk)), chunk)
        c.shutdown_write()
        c.expect_eof()

    def test_msg_frames_are_just_bytes(self):
        # the echo listener does not parse frames: bad magic comes back as is
        c = self.connect("echo")
        junk = b"XXXX" + b"\xff" * 12 + b"GET / HTTP/1.1\r\n\r\n"
        c.send_raw(junk)
        self.assertEqual(c.recv_exact(len(junk)), junk)


if __name__ == "__main__":
    unittest.main()
