"""Identities and direct messages (PROTOCOL.md DIRECT 21, DELIVER 22,
"Identities and direct messages"): every connection of the target identity
on every reactor gets the DELIVER with the sender's identity; the reply
counts them (and 0 other nodes without a cluster); an offline target is 0;
order from one sender to one receiver holds; a slow receiver is skipped and
counted; a connection without an identity gets NOT_AUTHENTICATED."""
import socket
import struct
import unittest

import msgproto as mp
from harness import MsgdTestCase, timeout, wait_until


def direct_payload(to, message):
    return bytes([len(to)]) + to + message


def deliver_payload(sender, message):
    return bytes([len(sender)]) + sender + message


def counts_of(test, reply):
    cmd, payload = reply
    test.assertEqual(cmd, mp.REPLY | mp.DIRECT, mp.describe(cmd, payload))
    test.assertEqual(len(payload), 8, payload)
    return struct.unpack(">II", payload)


def call_to_self(test, c, payload, want_deliver):
    """A DIRECT to one's own identity: its DELIVER is a push and may come
    before or after the reply (rule 1). Returns the reply's counts."""
    c.send_frame(mp.DIRECT, payload)
    frames = [c.recv_frame(timeout(1)), c.recv_frame(timeout(1))]
    pushes = [f for f in frames if f[0] == mp.DELIVER]
    replies = [f for f in frames if f[0] != mp.DELIVER]
    test.assertEqual(pushes, [(mp.DELIVER, want_deliver)], frames)
    test.assertEqual(len(replies), 1, frames)
    return counts_of(test, replies[0])


class DirectTests(MsgdTestCase):
    config = {"server": {"reactors": 3}, "msg": {"max_frame": "64K"},
              "limits": {"output_high_water": "256K", "output_low_water": "64K",
                         "output_hard_limit": "4M"}}

    def as_identity(self, name):
        c = self.connect()
        self.assert_frame(c.call(mp.AUTH, name), mp.REPLY | mp.AUTH, b"")
        return c

    def test_vector_bytes(self):
        """PROTOCOL.md's test vector: DIRECT to `bob`, message `yo`."""
        self.assertEqual(mp.encode(mp.DIRECT, direct_payload(b"bob", b"yo")).hex(),
                         "4d534750000000010000001500000006" + "03626f62796f")

    def test_every_device_on_every_reactor_gets_it(self):
        devices = [self.as_identity(b"dana") for _ in range(4)]   # round robin: 3 reactors
        other = self.as_identity(b"erin")
        sender = self.as_identity(b"frank")
        s = self.stats(sender)
        self.assertTrue(all(s["reactor.%d.connections_current" % r] > 0 for r in range(3)), s)
        self.assertEqual(counts_of(self, sender.call(mp.DIRECT, direct_payload(b"dana", b"hi"))),
                         (4, 0))
        for d in devices:
            self.assert_frame(d.recv_frame(timeout(1)), mp.DELIVER, deliver_payload(b"frank", b"hi"))
        other.quiet(0.05)
        sender.quiet(0.05)
        # A device that leaves is no longer counted.
        devices[0].close()
        wait_until(lambda: counts_of(self, sender.call(
            mp.DIRECT, direct_payload(b"dana", b"again")))[0] == 3, timeout(1),
            "the closed device no longer counted")
        # The sender may send to itself: it gets its own DELIVER.
        self.assertEqual(call_to_self(self, sender, direct_payload(b"frank", b"me"),
                                      deliver_payload(b"frank", b"me")), (1, 0))
        s = self.stats(sender)
        self.assertGreaterEqual(s["directs"], 3)
        self.assertGreaterEqual(s["delivers"], 4 + 1)

    def test_offline_target_is_zero_not_an_error(self):
        sender = self.as_identity(b"gina")
        self.assertEqual(counts_of(self, sender.call(mp.DIRECT, direct_payload(b"nobody", b"x"))),
                         (0, 0))

    def test_no_identity_and_bad_payloads(self):
        anon = self.connect()
        self.assert_error(anon.call(mp.DIRECT, direct_payload(b"gina", b"x")), mp.DIRECT,
                          mp.NOT_AUTHENTICATED)
        c = self.as_identity(b"hank")
        for bad in (b"", b"\x00x", b"\x05abc", b"\x03ab"):
            self.assert_error(c.call(mp.DIRECT, bad), mp.DIRECT, mp.BAD_PAYLOAD, repr(bad))
        # An empty message is fine.
        self.assertEqual(call_to_self(self, c, b"\x04hank", deliver_payload(b"hank", b"")), (1, 0))
        # DELIVER is a push, never a request.
        self.assert_error(c.call(mp.DELIVER, b"\x00x"), mp.DELIVER, mp.UNKNOWN_COMMAND)

    def test_order_from_one_sender_to_each_receiver(self):
        receivers = [self.as_identity(b"ivy") for _ in range(3)]
        sender = self.as_identity(b"jack")
        n = 500
        sender.send_raw(b"".join(mp.encode(mp.DIRECT, direct_payload(b"ivy", b"%06d" % i))
                                 for i in range(n)))
        for i in range(n):
            self.assertEqual(counts_of(self, sender.recv_frame(timeout(2))), (3, 0))
        for r in receivers:
            for i in range(n):
                self.assert_frame(r.recv_frame(timeout(2)), mp.DELIVER,
                                  deliver_payload(b"jack", b"%06d" % i))

    def test_slow_receiver_is_skipped_and_counted(self):
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", self.daemon.port()))
        self.addCleanup(slow.close)
        slow.sendall(mp.encode(mp.AUTH, b"kate"))
        fast = self.as_identity(b"kate")
        sender = self.as_identity(b"liam")
        wait_until(lambda: counts_of(self, sender.call(
            mp.DIRECT, direct_payload(b"kate", b"warm")))[0] == 2, timeout(1), "both kates")
        self.assert_frame(fast.recv_frame(timeout(1)), mp.DELIVER, deliver_payload(b"liam", b"warm"))
        before = self.stats(sender)["delivers_dropped_slow_consumer"]
        body = b"z" * 16000
        counts = []
        for i in range(300):
            counts.append(counts_of(self, sender.call(mp.DIRECT, direct_payload(b"kate", body)))[0])
            self.assert_frame(fast.recv_frame(timeout(1)), mp.DELIVER,
                              deliver_payload(b"liam", body))
        self.assertIn(1, counts, "the slow receiver was never skipped: %r" % counts[-10:])
        s = self.stats(sender)
        self.assertEqual(s["delivers_dropped_slow_consumer"] - before, counts.count(1))
        self.assertEqual(s["closed_by_limit.output_hard_limit"], 0)


class DirectWithTokensTests(MsgdTestCase):
    """With [auth] tokens, the identity comes from the token's entry."""
    config = {"auth": {"tokens": "mia:tok-m, noah:tok-n, anonymous-token"}}

    def test_identity_from_token(self):
        mia, noah, anon = self.connect(), self.connect(), self.connect()
        self.assert_error(mia.call(mp.DIRECT, direct_payload(b"noah", b"x")), mp.DIRECT,
                          mp.NOT_AUTHENTICATED)
        for c, tok in ((mia, b"tok-m"), (noah, b"tok-n"), (anon, b"anonymous-token")):
            self.assert_frame(c.call(mp.AUTH, tok), mp.REPLY | mp.AUTH, b"")
        self.assertEqual(counts_of(self, mia.call(mp.DIRECT, direct_payload(b"noah", b"hey"))),
                         (1, 0))
        self.assert_frame(noah.recv_frame(timeout(1)), mp.DELIVER, deliver_payload(b"mia", b"hey"))
        # Authenticated, but a bare token gives no identity to send from.
        self.assert_error(anon.call(mp.DIRECT, direct_payload(b"noah", b"x")), mp.DIRECT,
                          mp.NOT_AUTHENTICATED)


if __name__ == "__main__":
    unittest.main()
