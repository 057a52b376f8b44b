"""The example module examples/modules/presence (BUILD/modules/presence.so,
loaded with [modules] load): WATCH (1024) answers whether an identity is
online and subscribes the connection to PRESENCE (1026) pushes, u8 state,
u8 length, identity; UNWATCH (1025) ends that. An identity is online from
the first AUTH of a connection holding it (on any reactor) until the grace
period after its last connection closed; a reconnect within the grace is
never seen by the watchers. Also: [presence] config errors in `msgd -t`.

Absence of a push is never shown by waiting: the test makes a second change
whose push must come after the unwanted one (same reactor, so the same order
in the watcher's reactor's mailbox, or a grace timer started later on the
same reactor) and checks that it is the first push to arrive."""

import os
import re
import shutil
import socket
import tempfile
import time
import unittest

import harness
import msgproto as mp
from harness import DEFAULT_CONFIG, MsgdTestCase, check_config, merge_config, render_config, \
    timeout, wait_until

WATCH = 1024
UNWATCH = 1025
PRESENCE = 1026


MODULE = harness.module_path("presence")


def presence_config(**presence):
    """Three reactors (round robin: watcher and watched can sit apart), an
    admin listener (its `conns` tells each connection's reactor), the module."""
    return {"server": {"reactors": 3}, "admin": {"listen": "127.0.0.1:0"},
            "modules": {"load": MODULE}, "presence": presence}


class AdminClient:
    def __init__(self, port):
        self.sock = socket.create_connection((harness.HOST, port), timeout=timeout())
        self.buf = b""

    def call(self, line):
        """The answer's lines, END left out."""
        self.sock.sendall(line.encode() + b"\n")
        deadline = time.monotonic() + timeout(1)
        while not (self.buf.startswith(b"END\n") or b"\nEND\n" in self.buf):
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError("admin: EOF before END; got %r" % self.buf[-200:])
            self.buf += data
        if self.buf.startswith(b"END\n"):
            text, self.buf = b"", self.buf[4:]
        else:
            text, _, self.buf = self.buf.partition(b"\nEND\n")
        return text.decode().splitlines()

    def close(self):
        self.sock.close()


CONNS_LINE = re.compile(r"peer=127\.0\.0\.1:(\d+) proto=msg reactor=(\d+) ")


class PresenceBase(MsgdTestCase):
    """Helpers; the subclasses set `config`."""

    @classmethod
    def setUpClass(cls):
        if not os.path.isfile(MODULE):
            raise AssertionError("%s not found: build it with make (mk/modules.mk)" % MODULE)
        super().setUpClass()

    def admin(self):
        if getattr(self, "_admin", None) is None:
            self._admin = AdminClient(self.daemon.port("admin"))
            self.addCleanup(self._admin.close)
        return self._admin

    def conn_reactors(self):
        """{client port: reactor} of every msg connection msgd has now."""
        return {int(m.group(1)): int(m.group(2))
                for m in map(CONNS_LINE.search, self.admin().call("conns")) if m}

    def reactor_of(self, c):
        port = c.sock.getsockname()[1]
        reactors = self.conn_reactors()
        self.assertIn(port, reactors, "connection :%d not in admin conns" % port)
        return reactors[port]

    def client_on(self, reactor=None, avoid=()):
        """A msg connection on the given reactor, or on none of those in
        avoid (connections are dealt round robin, so a few tries do)."""
        for _ in range(12):
            c = self.daemon.client()
            # the PING's answer means msgd has accepted it: conns lists it
            self.assert_frame(c.call(mp.PING, b"on"), mp.REPLY | mp.PING, b"on")
            r = self.reactor_of(c)
            if (reactor is None or r == reactor) and r not in avoid:
                self.addCleanup(c.close)
                return c
            c.close()
        self.fail("no connection landed on reactor %r (avoiding %r)" % (reactor, avoid))

    def as_identity(self, name, reactor=None, avoid=()):
        c = self.client_on(reactor, avoid)
        self.assert_frame(c.call(mp.AUTH, name), mp.REPLY | mp.AUTH, b"")
        return c

    def watch(self, c, name):
        """WATCH name over c -> whether it is online."""
        cmd, payload = c.call(WATCH, name)
        self.assertEqual(cmd, mp.REPLY | WATCH, mp.describe(cmd, payload))
        self.assertIn(bytes(payload), (b"\x00", b"\x01"))
        return payload == b"\x01"

    def unwatch(self, c, name):
        self.assert_frame(c.call(UNWATCH, name), mp.REPLY | UNWATCH, b"")

    def next_push(self, w, wait=None):
        """The next frame on w, which must be a PRESENCE push -> (state, identity)."""
        cmd, payload = w.recv_frame(timeout(1) if wait is None else wait)
        self.assertEqual(cmd, PRESENCE, "a PRESENCE push expected: %s" % mp.describe(cmd, payload))
        self.assertGreaterEqual(len(payload), 2, payload)
        self.assertEqual(len(payload), 2 + payload[1], payload)
        return payload[0], bytes(payload[2:])

    def assert_no_more(self, w):
        """Nothing is queued for w before the reply to a PING sent now (pushes
        from w's own reactor, or already posted to it, would come first)."""
        self.assert_frame(w.call(mp.PING, b"end"), mp.REPLY | mp.PING, b"end")

    def close_and_wait(self, c):
        """Closes c and waits until msgd has closed its side (on_close ran)."""
        port = c.sock.getsockname()[1]
        c.close()
        wait_until(lambda: port not in self.conn_reactors(), timeout(1),
                   "connection :%d gone from admin conns" % port)


class PresenceTests(PresenceBase):
    GRACE = 0.3
    config = presence_config(grace="300ms", max_watches=4)

    def test_online_push_reaches_a_watcher_on_another_reactor(self):
        w = self.client_on()
        rw = self.reactor_of(w)
        self.assertFalse(self.watch(w, b"alice"))
        a = self.as_identity(b"alice", avoid={rw})
        self.assertEqual(self.next_push(w), (1, b"alice"))
        # Watching again is the same watch, and now says online.
        self.assertTrue(self.watch(w, b"alice"))
        # A watcher on the third reactor is told at once.
        w3 = self.client_on(avoid={rw, self.reactor_of(a)})
        self.assertTrue(self.watch(w3, b"alice"))
        # AUTH again as the same identity changes nothing.
        self.assert_frame(a.call(mp.AUTH, b"alice"), mp.REPLY | mp.AUTH, b"")
        self.assert_no_more(w)
        self.assert_no_more(w3)

    def test_bad_payloads_and_push_only_command(self):
        c = self.client_on()
        for cmd in (WATCH, UNWATCH):
            for bad in (b"", b"x" * 256):
                self.assert_error(c.call(cmd, bad), cmd, mp.BAD_PAYLOAD, "%d %d bytes" % (cmd, len(bad)))
        self.assertFalse(self.watch(c, b"y" * 255))
        self.unwatch(c, b"y" * 255)
        self.unwatch(c, b"never-watched")
        # PRESENCE is a push, never a request.
        self.assert_error(c.call(PRESENCE, b"\x01\x01x"), PRESENCE, mp.UNKNOWN_COMMAND)
        self.assert_no_more(c)

    def test_offline_after_the_grace(self):
        w = self.client_on()
        self.assertFalse(self.watch(w, b"bob"))
        b = self.as_identity(b"bob", avoid={self.reactor_of(w)})
        self.assertEqual(self.next_push(w), (1, b"bob"))
        t0 = time.monotonic()
        b.close()
        self.assertEqual(self.next_push(w, timeout(1) + self.GRACE), (0, b"bob"))
        self.assertGreaterEqual(time.monotonic() - t0, self.GRACE * 0.8,
                                "offline came before the grace period")
        self.assertFalse(self.watch(w, b"bob"))
        self.assert_no_more(w)

    def test_two_devices_offline_when_both_are_gone(self):
        w = self.client_on()
        rw = self.reactor_of(w)
        for name in (b"dana", b"dana-sentinel"):
            self.assertFalse(self.watch(w, name))
        d1 = self.as_identity(b"dana", avoid={rw})
        r1 = self.reactor_of(d1)
        self.assertEqual(self.next_push(w), (1, b"dana"))
        d2 = self.as_identity(b"dana", avoid={rw, r1})  # the second device: no push
        self.close_and_wait(d1)
        # A wrong "dana offline" would come from d1's reactor, by a timer
        # started before the sentinel's: the sentinel's pushes come first.
        s = self.as_identity(b"dana-sentinel", reactor=r1)
        self.assertEqual(self.next_push(w), (1, b"dana-sentinel"))
        s.close()
        self.assertEqual(self.next_push(w, timeout(1) + self.GRACE), (0, b"dana-sentinel"))
        self.assertTrue(self.watch(w, b"dana"))
        # d2 is the last one: its close is offline.
        d2.close()
        self.assertEqual(self.next_push(w, timeout(1) + self.GRACE), (0, b"dana"))
        self.assert_no_more(w)

    def test_last_of_two_devices_takes_it_offline(self):
        w = self.client_on()
        rw = self.reactor_of(w)
        self.assertFalse(self.watch(w, b"erin"))
        e1 = self.as_identity(b"erin", avoid={rw})
        self.assertEqual(self.next_push(w), (1, b"erin"))
        e2 = self.as_identity(b"erin", avoid={rw, self.reactor_of(e1)})
        e2.close()
        e1.close()
        self.assertEqual(self.next_push(w, timeout(1) + self.GRACE), (0, b"erin"))
        self.assert_no_more(w)

    def test_auth_as_someone_else_leaves_the_old_identity(self):
        w = self.client_on()
        rw = self.reactor_of(w)
        for name in (b"pat", b"quinn"):
            self.assertFalse(self.watch(w, name))
        c = self.as_identity(b"pat", avoid={rw})
        self.assertEqual(self.next_push(w), (1, b"pat"))
        self.assert_frame(c.call(mp.AUTH, b"quinn"), mp.REPLY | mp.AUTH, b"")
        # quinn at once; pat after its grace, from the same reactor.
        self.assertEqual(self.next_push(w), (1, b"quinn"))
        self.assertEqual(self.next_push(w, timeout(1) + self.GRACE), (0, b"pat"))
        self.assertTrue(self.watch(w, b"quinn"))
        self.assertFalse(self.watch(w, b"pat"))
        self.assert_no_more(w)

    def test_unwatch_stops_pushes(self):
        w = self.client_on()
        rw = self.reactor_of(w)
        for name in (b"uma", b"uma-sentinel"):
            self.assertFalse(self.watch(w, name))
        self.unwatch(w, b"uma")
        self.unwatch(w, b"uma")                          # not watched: fine
        u = self.as_identity(b"uma", avoid={rw})
        # A wrong push for uma would be posted from u's reactor before this one.
        self.as_identity(b"uma-sentinel", reactor=self.reactor_of(u))
        self.assertEqual(self.next_push(w), (1, b"uma-sentinel"))
        self.assert_no_more(w)

    def test_a_watcher_that_disconnects_is_removed(self):
        gone = [self.client_on(reactor=r) for r in range(3)]
        for g in gone:
            for i in range(4):
                self.assertFalse(self.watch(g, b"vic%d" % i))
        w = self.client_on()
        self.assertFalse(self.watch(w, b"vic0"))
        for g in gone:
            self.close_and_wait(g)
        before = self.stats(w)["module_pushes_dropped"]
        v = self.as_identity(b"vic0", avoid={self.reactor_of(w)})
        self.assertEqual(self.next_push(w), (1, b"vic0"))
        # A push posted to a closed watcher would be dropped and counted. The
        # admin `conns` visits every reactor through its mailbox, after any
        # such push: then the count is final.
        self.conn_reactors()
        self.assertEqual(self.stats(w)["module_pushes_dropped"], before,
                         "pushes were sent to watchers that had gone")
        self.close_and_wait(v)
        self.assertEqual(self.next_push(w, timeout(1) + self.GRACE), (0, b"vic0"))
        self.assert_no_more(w)

    def test_max_watches_per_connection(self):
        c = self.client_on()
        for i in range(4):
            self.assertFalse(self.watch(c, b"max%d" % i))
        self.assertFalse(self.watch(c, b"max0"))        # again: not one more
        self.assert_error(c.call(WATCH, b"max4"), WATCH, mp.LIMIT_EXCEEDED)
        self.unwatch(c, b"max3")
        self.assertFalse(self.watch(c, b"max4"))
        # Another connection has its own allowance.
        self.assertFalse(self.watch(self.client_on(), b"max5"))


class PresenceReconnectTests(PresenceBase):
    """A reconnect within the grace period: the watchers see nothing, whether
    the new connection sits on the reactor of the grace timer (which is then
    stopped) or on another (the timer fires there and does nothing)."""
    GRACE = 1.5 * harness.SCALE
    config = presence_config(grace="%dms" % int(GRACE * 1000))

    def reconnect(self, tag, same_reactor):
        x, y, z = b"x-" + tag, b"y-" + tag, b"z-" + tag
        w = self.client_on()
        rw = self.reactor_of(w)
        for name in (x, y, z):
            self.assertFalse(self.watch(w, name))
        x1 = self.as_identity(x, avoid={rw})
        r1 = self.reactor_of(x1)
        self.assertEqual(self.next_push(w), (1, x))
        self.close_and_wait(x1)                          # x's grace timer runs on r1
        if same_reactor:
            x2 = self.as_identity(x, reactor=r1)
        else:
            x2 = self.as_identity(x, avoid={rw, r1})
        r2 = self.reactor_of(x2)
        # A wrong "x online" would be posted from r2 before y's push.
        self.as_identity(y, reactor=r2)
        self.assertEqual(self.next_push(w), (1, y))
        # A wrong "x offline" would come from x1's timer on r1, which fires
        # before z's timer, started later on r1.
        zc = self.as_identity(z, reactor=r1)
        self.assertEqual(self.next_push(w), (1, z))
        self.close_and_wait(zc)
        self.assertEqual(self.next_push(w, timeout(1) + self.GRACE), (0, z))
        self.assertTrue(self.watch(w, x))
        self.assert_no_more(w)
        # The reconnected x2 is a normal connection: its close is offline.
        x2.close()
        self.assertEqual(self.next_push(w, timeout(1) + self.GRACE), (0, x))

    def test_back_and_gone_again_is_one_offline(self):
        """The grace restarts from the last close: the first close's timer,
        when it fires on its reactor, is no longer the pending one."""
        x, z1, z2 = b"x-again", b"z1-again", b"z2-again"
        w = self.client_on()
        rw = self.reactor_of(w)
        for name in (x, z1, z2):
            self.assertFalse(self.watch(w, name))
        x1 = self.as_identity(x, avoid={rw})
        r1 = self.reactor_of(x1)
        self.assertEqual(self.next_push(w), (1, x))
        self.close_and_wait(x1)                          # timer 1 on r1
        x2 = self.as_identity(x, avoid={rw, r1})
        r2 = self.reactor_of(x2)
        self.close_and_wait(x2)                          # timer 2 on r2, before timer 1 fired
        # Sentinels whose timers start after timer 1 (on r1) and timer 2 (on
        # r2): whatever those two push comes before the sentinels' offline.
        s1 = self.as_identity(z1, reactor=r1)
        s2 = self.as_identity(z2, reactor=r2)
        self.close_and_wait(s1)
        self.close_and_wait(s2)
        got = []
        while (0, z1) not in got or (0, z2) not in got:
            got.append(self.next_push(w, timeout(1) + self.GRACE))
        self.assertEqual(sorted(got), sorted([(1, z1), (1, z2), (0, x), (0, z1), (0, z2)]), got)
        self.assertFalse(self.watch(w, x))
        self.assert_no_more(w)

    def test_reconnect_on_the_timer_reactor(self):
        self.reconnect(b"same", True)

    def test_reconnect_on_another_reactor(self):
        self.reconnect(b"other", False)


class PresenceTokensTests(PresenceBase):
    """With [auth] tokens, WATCH needs AUTH; AUTH with a bare token (no
    identity) leaves the identity the connection had. grace = 0: offline at
    once."""
    config = merge_config(presence_config(grace="0"),
                          {"auth": {"tokens": "tia:tok-t, bare-token"}})

    def test_watch_needs_auth(self):
        c = self.client_on()
        self.assert_error(c.call(WATCH, b"tia"), WATCH, mp.NOT_AUTHENTICATED)
        self.assert_error(c.call(UNWATCH, b"tia"), UNWATCH, mp.NOT_AUTHENTICATED)

    def test_bare_token_leaves_the_identity_at_once(self):
        w = self.client_on()
        rw = self.reactor_of(w)
        self.assert_frame(w.call(mp.AUTH, b"bare-token"), mp.REPLY | mp.AUTH, b"")
        self.assertFalse(self.watch(w, b"tia"))
        t = self.as_identity(b"tok-t", avoid={rw})
        self.assertEqual(self.next_push(w), (1, b"tia"))
        self.assert_frame(t.call(mp.AUTH, b"bare-token"), mp.REPLY | mp.AUTH, b"")
        self.assertEqual(self.next_push(w), (0, b"tia"))
        self.assert_frame(t.call(mp.AUTH, b"tok-t"), mp.REPLY | mp.AUTH, b"")
        self.assertEqual(self.next_push(w), (1, b"tia"))
        t.close()
        self.assertEqual(self.next_push(w), (0, b"tia"))
        self.assertFalse(self.watch(w, b"tia"))
        self.assert_no_more(w)


class PresenceConfigTests(unittest.TestCase):
    """[presence] keys and [modules] load, checked by `msgd -t` (FILE:LINE)."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="msgd-it-presence-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def write(self, overrides):
        """Writes the config; returns (path, its lines)."""
        text = render_config(merge_config(DEFAULT_CONFIG, overrides))
        path = os.path.join(self.tmp, "msgd.ini")
        with open(path, "w") as f:
            f.write(text)
        return path, text.split("\n")

    def check(self, overrides, rc_want):
        path, lines = self.write(overrides)
        rc, err = check_config(path)
        self.assertEqual(harness.find_markers(err), [], "sanitizer report:\n%s" % err)
        self.assertEqual(rc, rc_want, "msgd -t -c %s: rc %d, stderr:\n%s" % (path, rc, err))
        return path, lines, err

    def line_of(self, lines, text):
        return [i for i, l in enumerate(lines, 1) if l.strip() == text][0]

    def test_good(self):
        path, _, err = self.check(presence_config(grace="0", max_watches="100000"), 0)
        self.assertIn("%s: ok" % path, err)
        path, _, err = self.check(presence_config(grace="1h", max_watches="1"), 0)
        self.assertIn("%s: ok" % path, err)

    def test_bad_key_or_value_names_file_line_and_key(self):
        for key, value in (("bogus", "1"), ("grace", "banana"), ("grace", "61m"),
                           ("grace", "-1s"), ("max_watches", "0"), ("max_watches", "100001"),
                           ("max_watches", "12x"), ("max_watches", "")):
            with self.subTest(key=key, value=value):
                cfg = presence_config(grace="1s")
                cfg["presence"][key] = value
                path, lines, err = self.check(cfg, 1)
                line = self.line_of(lines, ("%s = %s" % (key, value)).rstrip())
                self.assertIn("%s:%d:" % (path, line), err)
                self.assertIn(key, err)
                self.assertNotIn("%s: ok" % path, err)

    def test_missing_module_is_named(self):
        missing = os.path.join(self.tmp, "no-such-module.so")
        path, lines, err = self.check({"modules": {"load": missing}}, 1)
        self.assertIn(missing, err)

    def test_section_of_no_module(self):
        path, lines, err = self.check({"nosuch": {"key": "1"}}, 1)
        self.assertIn("nosuch", err)
        self.assertIn(path, err)
        # Without the module loaded, [presence] is no section either.
        path, lines, err = self.check({"presence": {"grace": "1s"}}, 1)
        self.assertIn("presence", err)


if __name__ == "__main__":
    unittest.main()
