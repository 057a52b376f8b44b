"""The test vectors of PROTOCOL.md, byte-exact, against the real daemon."""

import struct
import unittest

import msgproto as mp
from harness import MsgdTestCase

PING_HI = bytes.fromhex("4d534750" "00000001" "00000001" "00000002" "6869")
PING_HI_REPLY = bytes.fromhex("4d534750" "00000001" "80000001" "00000002" "6869")
ECHO_EMPTY = bytes.fromhex("4d534750" "00000001" "00000002" "00000000")
ECHO_EMPTY_REPLY = bytes.fromhex("4d534750" "00000001" "80000002" "00000000")
BAD_MAGIC_ERROR = bytes.fromhex("4d534750" "00000001" "c0000000" "0000000d"
                                "00000005" "626164206d61676963")


class EncoderVectorTests(unittest.TestCase):
    """The test client's own encoder against the vectors (no daemon): if these
    fail, the other tests cannot be trusted."""

    def test_encode_ping_hi(self):
        self.assertEqual(mp.encode(mp.PING, b"hi"), PING_HI)

    def test_encode_ping_reply(self):
        self.assertEqual(mp.encode(mp.REPLY | mp.PING, b"hi"), PING_HI_REPLY)

    def test_encode_echo_empty(self):
        self.assertEqual(mp.encode(mp.ECHO, b""), ECHO_EMPTY)

    def test_encode_bad_magic_error(self):
        self.assertEqual(mp.encode_error(0, mp.BAD_MAGIC, "bad magic"), BAD_MAGIC_ERROR)

    def test_reader_decodes_vectors(self):
        r = mp.FrameReader()
        r.feed(PING_HI_REPLY + BAD_MAGIC_ERROR[:7])
        frames = list(r.frames())
        self.assertEqual([(f.cmd, f.payload) for f in frames], [(0x80000001, b"hi")])
        r.feed(BAD_MAGIC_ERROR[7:])
        (f,) = list(r.frames())
        self.assertEqual(f.cmd, 0xC0000000)
        self.assertEqual(mp.decode_error(f.payload), (5, "bad magic"))


class VectorTests(MsgdTestCase):

    def test_ping_hi_reply_bytes(self):
        c = self.connect()
        c.send_raw(PING_HI)
        f = c.recv_frame_raw()
        self.assertEqual(f.raw.hex(), PING_HI_REPLY.hex())

    def test_echo_empty_reply_bytes(self):
        c = self.connect()
        c.send_raw(ECHO_EMPTY)
        f = c.recv_frame_raw()
        self.assertEqual(f.raw.hex(), ECHO_EMPTY_REPLY.hex())
        # and the connection goes on
        c.send_raw(PING_HI)
        self.assertEqual(c.recv_frame_raw().raw.hex(), PING_HI_REPLY.hex())

    def test_bad_magic_error_layout(self):
        c = self.connect()
        c.send_raw(mp.encode(mp.PING, b"", magic=0x58585858))  # "XXXX"
        f = c.recv_frame_raw()
        # header: MSGP, version 1, 0xC0000000, length == payload length
        self.assertEqual(f.raw[:12].hex(), "4d534750" "00000001" "c0000000",
                         "connection-level error header: %s" % f.raw.hex())
        (length,) = struct.unpack(">I", f.raw[12:16])
        self.assertEqual(length, len(f.raw) - 16)
        self.assertGreaterEqual(length, 4)
        self.assertEqual(f.raw[16:20].hex(), "00000005", "error code BAD_MAGIC: %s" % f.raw.hex())
        text = f.raw[20:].decode("utf-8")  # must be UTF-8
        self.assertLess(len(text), 256, "a short text")
        if text == "bad magic":
            self.assertEqual(f.raw, BAD_MAGIC_ERROR)
        c.expect_eof()


if __name__ == "__main__":
    unittest.main()
