"""Each built-in command on a shared daemon (max_frame 64K, no auth, DELAY off)."""

import os
import unittest

import msgproto as mp
from harness import MsgdTestCase, MAX_FRAME

REQUIRED_STATS = ("uptime_seconds", "connections_current", "connections_total",
                  "frames_in", "frames_out", "bytes_in", "bytes_out")

UNKNOWN_COMMANDS = (0, 7, 19, 20, 22, 999, 0x1FFFFFFF, 0x3FFFFFFF, 0x20000001, 0x40000001)


class CommandTests(MsgdTestCase):

    # --- PING ---------------------------------------------------------------
    def test_ping_echoes_payload(self):
        c = self.connect()
        for payload in (b"", b"x", b"hello world", bytes(range(256)) * 4):
            with self.subTest(size=len(payload)):
                self.assert_frame(c.call(mp.PING, payload), mp.REPLY | mp.PING, payload)

    def test_ping_over_1k_is_bad_payload(self):
        c = self.connect()
        got = c.call(mp.PING, b"p" * 1025)
        self.assert_error(got, mp.PING, mp.BAD_PAYLOAD)
        self.assertEqual(got[0], 0xC0000001)
        # the connection stays open
        self.assert_frame(c.call(mp.PING, b"again"), mp.REPLY | mp.PING, b"again")

    # --- ECHO ---------------------------------------------------------------
    def test_echo_sizes(self):
        c = self.connect()
        for n in (0, 1, 1000, MAX_FRAME):
            with self.subTest(size=n):
                payload = os.urandom(n)
                self.assert_frame(c.call(mp.ECHO, payload), mp.REPLY | mp.ECHO, payload)

    # --- STATS --------------------------------------------------------------
    def test_stats_has_required_lines(self):
        c = self.connect()
        s = self.stats(c)
        for name in REQUIRED_STATS:
            self.assertIn(name, s, "STATS lacks %r; got %s" % (name, sorted(s)))
            self.assertIsInstance(s[name], (int, float), "%s is not a number: %r" % (name, s[name]))
        for r in (0, 1):  # the shared daemon has 2 reactors
            for name in ("connections_current", "connections_total"):
                key = "reactor.%d.%s" % (r, name)
                self.assertIn(key, s, "STATS lacks %r; got %s" % (key, sorted(s)))
        self.assertNotIn("reactor.2.connections_current", s, "only 2 reactors configured")
        self.assertGreaterEqual(s["connections_current"], 1)
        self.assertGreaterEqual(s["connections_total"], s["connections_current"])
        self.assertIn("replies_dropped", s)

    def test_stats_counters_increase(self):
        c = self.connect()
        s1 = self.stats(c)
        self.assert_frame(c.call(mp.PING, b"between"), mp.REPLY | mp.PING, b"between")
        s2 = self.stats(c)
        self.assertGreater(s2["frames_in"], s1["frames_in"])
        self.assertGreaterEqual(s2["frames_in"] - s1["frames_in"], 2, "PING + STATS were read")
        self.assertGreater(s2["frames_out"], s1["frames_out"])
        self.assertGreater(s2["bytes_in"], s1["bytes_in"])
        self.assertGreater(s2["bytes_out"], s1["bytes_out"])
        self.assertGreaterEqual(s2["uptime_seconds"], s1["uptime_seconds"])

    # --- AUTH, DELAY ----------------------------------------------------------
    def test_auth_without_tokens_succeeds(self):
        c = self.connect()
        self.assert_frame(c.call(mp.AUTH, b"any-token"), 0x80000003, b"")
        # The payload is the identity then (PROTOCOL.md "Identities"): 1..255 bytes.
        self.assert_error(c.call(mp.AUTH, b""), mp.AUTH, mp.BAD_PAYLOAD)

    def test_delay_disabled(self):
        c = self.connect()
        got = c.call(mp.DELAY, mp.u32(10) + b"x")
        self.assert_error(got, mp.DELAY, mp.DISABLED)
        self.assertEqual(got[0], 0xC0000005)
        self.assert_frame(c.call(mp.PING, b"ok"), mp.REPLY | mp.PING, b"ok")

    # --- unknown commands --------------------------------------------------------
    def test_unknown_commands(self):
        c = self.connect()
        for cmd in UNKNOWN_COMMANDS:
            with self.subTest(cmd="0x%08X" % cmd):
                got = c.call(cmd, b"abc")
                self.assert_error(got, cmd, mp.UNKNOWN_COMMAND)
                # bits 0..28 repeat the number; never the COMPRESSED bit (29)
                self.assertEqual(got[0], 0xC0000000 | (cmd & 0x1FFFFFFF))
                # the connection stays open
                self.assert_frame(c.call(mp.PING, b"still"), mp.REPLY | mp.PING, b"still")

    def test_unknown_commands_pipelined(self):
        c = self.connect()
        c.send_raw(b"".join(mp.encode(cmd, b"q") for cmd in UNKNOWN_COMMANDS)
                   + mp.encode(mp.PING, b"end"))
        for cmd in UNKNOWN_COMMANDS:
            self.assert_error(c.recv_frame(), cmd, mp.UNKNOWN_COMMAND, "cmd 0x%08X" % cmd)
        self.assert_frame(c.recv_frame(), mp.REPLY | mp.PING, b"end")

    # --- reply frames from the client ------------------------------------------------
    def test_client_replies_get_no_reply(self):
        c = self.connect()
        before = self.stats(c)["replies_dropped"]
        c.send_raw(mp.encode(0x80000001, b"hb") + mp.encode(0x80000002, b"stray")
                   + mp.encode(mp.PING, b"after"))
        self.assert_frame(c.recv_frame(), mp.REPLY | mp.PING, b"after",
                          "the first frame back must be the PING reply")
        after = self.stats(c)["replies_dropped"]
        self.assertEqual(after - before, 1, "replies_dropped %d -> %d" % (before, after))


if __name__ == "__main__":
    unittest.main()
