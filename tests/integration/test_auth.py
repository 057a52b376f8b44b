"""Token auth (PROTOCOL.md rule 5, error codes 3 and 11; CONFIG.md [auth])."""
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
        d.reload({"auth": {"tokens": "new-token"}})
        # Still authenticated on the old connection.
        self.assert_frame(authed.call(mp.ECHO, b"kept"), mp.REPLY | mp.ECHO, b"kept")
        c = self.connect(daemon=d)
        self.assert_error(c.call(mp.AUTH, b"old-token"), mp.AUTH, mp.AUTH_FAILED)
        self.assert_frame(c.call(mp.AUTH, b"new-token"), mp.REPLY | mp.AUTH, b"")


def conns_lines(daemon):
    """The admin `conns` lines (without END)."""
    import socket
    with socket.create_connection(("127.0.0.1", daemon.port("admin")), timeout=timeout(1)) as a:
        a.sendall(b"conns\n")
        text = b""
        while not text.endswith(b"END\n"):
            chunk = a.recv(65536)
            assert chunk, "admin closed early"
            text += chunk
    return text.decode().splitlines()[:-1]


def identity_of(daemon, client):
    port = client.sock.getsockname()[1]
    line = [l for l in conns_lines(daemon) if "peer=127.0.0.1:%d " % port in l]
    assert len(line) == 1, line
    return line[0].split(" identity=", 1)[1].split(" ", 1)[0]


class IdentityTests(MsgdTestCase):
    """[auth] tokens as IDENTITY:TOKEN (PROTOCOL.md "Identities"): AUTH sends
    the token alone and the connection takes the entry's identity; a bare
    token gives none; a token may hold ':' (split at the first)."""
    config = {"auth": {"tokens": "alice:tok-a, bob:tok:b, bare-token, alice:tok-a2"},
              "admin": {"listen": "127.0.0.1:0"}}

    def test_token_gives_its_identity(self):
        a, b, n, a2 = self.connect(), self.connect(), self.connect(), self.connect()
        self.assert_frame(a.call(mp.AUTH, b"tok-a"), mp.REPLY | mp.AUTH, b"")
        self.assert_frame(b.call(mp.AUTH, b"tok:b"), mp.REPLY | mp.AUTH, b"")
        self.assert_frame(n.call(mp.AUTH, b"bare-token"), mp.REPLY | mp.AUTH, b"")
        self.assert_frame(a2.call(mp.AUTH, b"tok-a2"), mp.REPLY | mp.AUTH, b"")
        self.assertEqual(identity_of(self.daemon, a), "alice")
        self.assertEqual(identity_of(self.daemon, b), "bob")
        self.assertEqual(identity_of(self.daemon, n), "-")
        self.assertEqual(identity_of(self.daemon, a2), "alice")   # several devices
        # ECHO works once authenticated, whatever the identity.
        self.assert_frame(b.call(mp.ECHO, b"x"), mp.REPLY | mp.ECHO, b"x")

    def test_the_whole_entry_is_not_a_token(self):
        c = self.connect()
        self.assert_error(c.call(mp.AUTH, b"alice:tok-a"), mp.AUTH, mp.AUTH_FAILED)
        self.assert_error(c.call(mp.AUTH, b"alice"), mp.AUTH, mp.AUTH_FAILED)
        self.assertEqual(identity_of(self.daemon, c), "-")

    def test_a_later_auth_replaces_the_identity(self):
        c = self.connect()
        self.assert_frame(c.call(mp.AUTH, b"tok-a"), mp.REPLY | mp.AUTH, b"")
        self.assertEqual(identity_of(self.daemon, c), "alice")
        self.assert_frame(c.call(mp.AUTH, b"bare-token"), mp.REPLY | mp.AUTH, b"")
        self.assertEqual(identity_of(self.daemon, c), "-")


class OpenIdentityTests(MsgdTestCase):
    """Without tokens, AUTH's payload (1..255 bytes) is the identity,
    unchecked; empty or longer is BAD_PAYLOAD. conns shows it escaped."""
    config = {"admin": {"listen": "127.0.0.1:0"}}

    def test_payload_is_the_identity(self):
        c = self.connect()
        self.assert_frame(c.call(mp.AUTH, b"carol"), mp.REPLY | mp.AUTH, b"")
        self.assertEqual(identity_of(self.daemon, c), "carol")
        odd = self.connect()
        self.assert_frame(odd.call(mp.AUTH, b"a b=c%\n\xff"), mp.REPLY | mp.AUTH, b"")
        self.assertEqual(identity_of(self.daemon, odd), "a%20b%3Dc%25%0A%FF")
        longest = self.connect()
        self.assert_frame(longest.call(mp.AUTH, b"z" * 255), mp.REPLY | mp.AUTH, b"")
        self.assertEqual(identity_of(self.daemon, longest), "z" * 255)

    def test_empty_or_too_long_is_bad_payload(self):
        c = self.connect()
        self.assert_error(c.call(mp.AUTH, b""), mp.AUTH, mp.BAD_PAYLOAD)
        self.assert_error(c.call(mp.AUTH, b"z" * 256), mp.AUTH, mp.BAD_PAYLOAD)
        self.assertEqual(identity_of(self.daemon, c), "-")
        self.assert_frame(c.call(mp.PING, b"still"), mp.REPLY | mp.PING, b"still")


class TokensFileTests(MsgdTestCase):
    """[auth] tokens_file: more IDENTITY:TOKEN entries, read at start and on
    every reload; a bad line keeps the running tokens."""
    shared_daemon = False

    def test_file_tokens_and_reload(self):
        import os
        from harness import Daemon, wait_until
        d = Daemon({"admin": {"listen": "127.0.0.1:0"}}, name="tokens-file")
        path = os.path.join(d.tmp, "tokens")
        with open(path, "w") as f:
            f.write("# the team\numa:tok-u\n\nvic:tok-v  # a comment\n")
        d.config = merge_config(d.config, {"auth": {"tokens": "wes:tok-w", "tokens_file": path}})
        self._daemons.append(d)
        self.addCleanup(self._finish_daemon, d, 0)
        d.start()
        for tok, who in ((b"tok-u", "uma"), (b"tok-v", "vic"), (b"tok-w", "wes")):
            c = self.connect(daemon=d)
            self.assert_frame(c.call(mp.AUTH, tok), mp.REPLY | mp.AUTH, b"")
            self.assertEqual(identity_of(d, c), who)
        # Reload reads the file again: vic goes, xan comes.
        with open(path, "w") as f:
            f.write("uma:tok-u\nxan:tok-x\n")
        a = self.connect("admin", daemon=d)
        a.send_raw(b"reload\n")
        text = b""
        while not text.endswith(b"END\n"):
            text += a.sock.recv(4096)
        self.assertIn(b"OK reloaded", text)
        c = self.connect(daemon=d)
        self.assert_error(c.call(mp.AUTH, b"tok-v"), mp.AUTH, mp.AUTH_FAILED)
        self.assert_frame(c.call(mp.AUTH, b"tok-x"), mp.REPLY | mp.AUTH, b"")
        self.assertEqual(identity_of(d, c), "xan")
        # A bad line: the reload fails and names the file and line; tokens kept.
        with open(path, "w") as f:
            f.write("uma:tok-u\n:broken\n")
        a.send_raw(b"reload\n")
        text = b""
        while not text.endswith(b"END\n"):
            text += a.sock.recv(4096)
        self.assertIn(("ERR reload failed: %s:2: bad entry" % path).encode(), text)
        c2 = self.connect(daemon=d)
        self.assert_frame(c2.call(mp.AUTH, b"tok-x"), mp.REPLY | mp.AUTH, b"")


if __name__ == "__main__":
    unittest.main()
