"""Token auth (PROTOCOL.md rule 5, error codes 3 and 11; CONFIG.md [auth])."""
import signal
import time
import unittest

import msgproto as mp
from harness import MsgdTestCase, merge_config, timeout

TOKENS = "s3cret-one, second-token"


class AuthTests(MsgdTestCase):
    config = {"auth": {"tokens": TOKENS}, "msg": {"max_frame": "64K"}}

    def test_sequence(self):
        c = self.connect()
        self.assert_error(c.call(mp.ECHO, b"hi"), mp.ECHO, mp.NOT_AUTHENTICATED)
        self.assert_error(c.call(mp.STATS), mp.STATS, mp.NOT_AUTHENTICATED)
        self.assert_frame(c.call(mp.PING, b"ok"), mp.REPLY | mp.PING, b"ok")
        self.assert_error(c.call(mp.AUTH, b"wrong"), mp.AUTH, mp.AUTH_FAILED)
        self.assert_frame(c.call(mp.AUTH, b"second-token"), mp.REPLY | mp.AUTH, b"")
        self.assert_frame(c.call(mp.ECHO, b"hi"), mp.REPLY | mp.ECHO, b"hi")
        self.assertIn("uptime_seconds", self.stats(c))

    def test_each_token_works_and_prefixes_do_not(self):
        for good in (b"s3cret-one", b"second-token"):
            c = self.connect()
            self.assert_frame(c.call(mp.AUTH, good), mp.REPLY | mp.AUTH, b"")
        c = self.connect()
        for bad in (b"s3cret-on", b"s3cret-one ", b"", b"second-token\x00"):
            self.assert_error(c.call(mp.AUTH, bad), mp.AUTH, mp.AUTH_FAILED)
            c = self.connect()  # a fresh connection per try, so none reaches three

    def test_pre_auth_frame_cap(self):
        c = self.connect()
        self.assert_frame(c.call(mp.PING, b"x" * 1000), mp.REPLY | mp.PING, b"x" * 1000)
        c.send_raw(mp.encode_header(mp.ECHO, 16 * 1024 + 1))
        self.assert_error(c.recv_frame(timeout(1)), mp.CONNECTION, mp.TOO_LARGE)
        c.expect_eof(timeout(1))
        # After AUTH the configured max_frame applies.
        c = self.connect()
        self.assert_frame(c.call(mp.AUTH, b"s3cret-one"), mp.REPLY | mp.AUTH, b"")
        big = b"y" * (32 * 1024)
        self.assert_frame(c.call(mp.ECHO, big), mp.REPLY | mp.ECHO, big)

    def test_three_failures_close(self):
        c = self.connect()
        self.assert_error(c.call(mp.AUTH, b"a"), mp.AUTH, mp.AUTH_FAILED)
        self.assert_error(c.call(mp.AUTH, b"b"), mp.AUTH, mp.AUTH_FAILED)
        self.assert_error(c.call(mp.AUTH, b"c"), mp.CONNECTION, mp.AUTH_FAILED)
        c.expect_eof(timeout(1))


class AuthReloadTests(MsgdTestCase):
    shared_daemon = False

    def test_reload_changes_tokens_and_keeps_authenticated(self):
        d = self.start_daemon({"auth": {"tokens": "old-token"}})
        authed = self.connect(daemon=d)
        self.assert_frame(authed.call(mp.AUTH, b"old-token"), mp.REPLY | mp.AUTH, b"")
        d.config = merge_config(d.config, {"auth": {"tokens": "new-token"}})
        d.write_config()
        d.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout(1)
        while True:
            lines = d.recv_notify(max(0.0, deadline - time.monotonic()))
            self.assertIsNotNone(lines, "no READY=1 after the reload")
            if "READY=1" in lines:
                break
        # Still authenticated on the old connection.
        self.assert_frame(authed.call(mp.ECHO, b"kept"), mp.REPLY | mp.ECHO, b"kept")
        c = self.connect(daemon=d)
        self.assert_error(c.call(mp.AUTH, b"old-token"), mp.AUTH, mp.AUTH_FAILED)
        self.assert_frame(c.call(mp.AUTH, b"new-token"), mp.REPLY | mp.AUTH, b"")


if __name__ == "__main__":
    unittest.main()
