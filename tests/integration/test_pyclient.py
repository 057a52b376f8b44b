"""The Python client package (clients/python, `import msgd`) against the real
daemon: calls, typed errors, pipelining in order (blocking and asyncio),
pub/sub across reactors, DIRECT, GOAWAY and reconnect to a restarted daemon
on the same port (with re-AUTH and re-SUBSCRIBE), a request in flight when
the connection drops (raised, never sent again), and a dead server (a
listener that accepts and never answers) declared dead within dead_after.

HELLO and compression are tested live (PyClientCompressionTests): deflate
from the stdlib and zstd through zstandard, both ways, with the server's
STATS showing that it decompressed the client's requests and compressed its
replies. TLS is tested live in test_pyclient_tls.py; the codec parts are
also tested offline in test_pyclient_codec.py.

The package is imported from the source tree (clients/python); it must not
use the test suite's own encoder (msgproto), and nothing here feeds it one.
"""

import asyncio
import os
import signal
import socket
import struct
import sys
import threading
import time
import unittest

import harness
from harness import MsgdTestCase, timeout, wait_until

PKG_DIR = os.path.join(harness.REPO, "clients", "python")
if PKG_DIR not in sys.path:
    sys.path.insert(0, PKG_DIR)

import msgd  # noqa: E402  (from the source tree)
from msgd import protocol as wire  # noqa: E402

try:
    import zstandard  # noqa: F401
except ImportError:  # Debian's python3-zstandard, for a python3 not Debian's own
    sys.path.append("/usr/lib/python3/dist-packages")


def run_async(coro, wait=None):
    """Runs coro on a fresh event loop, bounded in time."""
    async def bounded():
        return await asyncio.wait_for(coro, timeout(4) if wait is None else wait)
    return asyncio.run(bounded())


class SilentServer:
    """A loopback listener that accepts connections and never answers; it
    reads and keeps every frame's command word (to see the client's
    heartbeat PING). Every socket has a timeout; stop() ends it."""

    def __init__(self, connections=8):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((harness.HOST, 0))
        self.lsock.listen(16)
        self.lsock.settimeout(timeout())
        self.port = self.lsock.getsockname()[1]
        self.commands = []          # (connection index, command word)
        self.accepted = 0
        self.socks = []
        self._stop = threading.Event()
        self._threads = []
        self.thread = threading.Thread(target=self._run, args=(connections,), daemon=True)
        self.thread.start()

    def _run(self, connections):
        for i in range(connections):
            try:
                sock, _ = self.lsock.accept()
            except OSError:
                return
            self.accepted += 1
            self.socks.append(sock)
            t = threading.Thread(target=self._read, args=(i, sock), daemon=True)
            t.start()
            self._threads.append(t)

    def _read(self, i, sock):
        sock.settimeout(0.1)
        buf = b""
        deadline = time.monotonic() + timeout(6)
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                data = sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            buf += data
            while len(buf) >= 16:
                _, _, cmd, length = struct.unpack(">IIII", buf[:16])
                if len(buf) < 16 + length:
                    break
                self.commands.append((i, cmd))
                buf = buf[16 + length:]

    def stop(self):
        self._stop.set()
        self.lsock.close()
        for s in self.socks:
            s.close()
        for t in self._threads + [self.thread]:
            t.join(timeout())


class DropAfterOneRequest:
    """A listener whose every connection reads one frame, then closes
    without answering; it records (connection index, command, payload)."""

    def __init__(self, connections=3):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((harness.HOST, 0))
        self.lsock.listen(16)
        self.lsock.settimeout(timeout())
        self.port = self.lsock.getsockname()[1]
        self.frames = []
        self.thread = threading.Thread(target=self._run, args=(connections,), daemon=True)
        self.thread.start()

    def _run(self, connections):
        for i in range(connections):
            try:
                sock, _ = self.lsock.accept()
            except OSError:
                return
            with sock:
                sock.settimeout(timeout())
                try:
                    head = b""
                    while len(head) < 16:
                        chunk = sock.recv(16 - len(head))
                        if not chunk:
                            break
                        head += chunk
                    if len(head) < 16:
                        continue
                    _, _, cmd, length = struct.unpack(">IIII", head)
                    body = b""
                    while len(body) < length:
                        chunk = sock.recv(length - len(body))
                        if not chunk:
                            break
                        body += chunk
                    self.frames.append((i, cmd, body))
                except OSError:
                    pass

    def stop(self):
        self.lsock.close()
        self.thread.join(timeout())


class PyClientTests(MsgdTestCase):
    config = {"server": {"reactors": 3},
              "limits": {"max_subscriptions": 8},
              "diagnostics": {"delay_command": "on"}}

    def client(self, **kw):
        kw.setdefault("timeout", timeout())
        c = msgd.Client(harness.HOST, self.daemon.port(), **kw)
        self.addCleanup(c.close)
        return c.connect()

    def test_package_comes_from_the_source_tree_without_msgproto(self):
        self.assertTrue(os.path.abspath(msgd.__file__).startswith(PKG_DIR), msgd.__file__)
        for name in ("client", "aio", "protocol", "_core", "errors", "_options"):
            with open(os.path.join(PKG_DIR, "msgd", name + ".py")) as f:
                self.assertNotIn("msgproto", f.read(), name)

    def test_ping_echo_stats_call(self):
        c = self.client()
        self.assertEqual(c.ping(), b"")
        self.assertEqual(c.ping(b"hi"), b"hi")
        self.assertEqual(c.echo("text"), b"text")
        self.assertEqual(c.echo(b"\x00\xff" * 1000), b"\x00\xff" * 1000)
        self.assertEqual(c.call(wire.ECHO, b"raw"), b"raw")
        self.assertEqual(c.delay(10, b"later"), b"later")
        s = c.stats()
        self.assertIsInstance(s, dict)
        self.assertGreaterEqual(s["connections_current"], 1)
        self.assertIsNone(c.hello_info)         # no HELLO unless asked for

    def test_typed_errors(self):
        c = self.client()
        with self.assertRaises(msgd.UnknownCommand) as cm:
            c.call(999, b"")
        e = cm.exception
        self.assertEqual((e.code, e.command, e.connection_level), (1, 999, False))
        self.assertIn("UNKNOWN_COMMAND", str(e))
        with self.assertRaises(msgd.BadPayload) as cm:
            c.call(wire.SUBSCRIBE, b"")             # an empty topic
        self.assertEqual(cm.exception.code, 2)
        with self.assertRaises(msgd.NotAuthenticated) as cm:
            c.send("nobody", b"x")                  # DIRECT needs an identity
        self.assertEqual(cm.exception.code, 3)
        with self.assertRaises(msgd.BadPayload):
            c.delay(60001, b"")                     # over 60000 ms
        topics = ["t%d" % i for i in range(8)]
        c.subscribe(*topics)
        with self.assertRaises(msgd.LimitExceeded) as cm:
            c.subscribe("one-too-many")
        self.assertEqual(cm.exception.code, 12)
        c.unsubscribe(*topics)
        self.assertEqual(c.ping(b"still open"), b"still open")
        for code, cls in msgd.ERRORS_BY_CODE.items():
            self.assertTrue(issubclass(cls, msgd.MsgdError))
            self.assertEqual(cls.code, code)
        self.assertEqual(msgd.Overloaded("x").code, 7)
        self.assertEqual(msgd.ShuttingDown("x").code, 8)
        self.assertEqual(msgd.Disabled("x").code, 9)
        self.assertEqual(msgd.AuthFailed("x").code, 11)

    def test_too_large_is_connection_level_and_the_next_call_reconnects(self):
        c = self.client()
        with self.assertRaises(msgd.TooLarge) as cm:
            c.echo(b"x" * (harness.MAX_FRAME + 1))
        self.assertTrue(cm.exception.connection_level)
        self.assertEqual(cm.exception.code, 4)
        self.assertEqual(c.ping(b"again"), b"again")    # a new connection
        self.assertEqual(c.reconnects, 1)

    def test_pipelining_in_order(self):
        c = self.client()
        pipe = c.pipeline()
        n = 3000
        for i in range(n):
            if i % 500 == 250:
                pipe.call(999)                      # an error in the middle
            elif i % 500 == 100:
                pipe.call(wire.DELAY, wire.encode_delay(20, b"slow%d" % i))   # a worker job
            else:
                pipe.echo(b"%d" % i)
        res = pipe.execute(raise_on_error=False)
        self.assertEqual(len(res), n)
        for i, r in enumerate(res):
            if i % 500 == 250:
                self.assertIsInstance(r, msgd.UnknownCommand, i)
            elif i % 500 == 100:
                self.assertEqual(r, b"slow%d" % i)
            else:
                self.assertEqual(r, b"%d" % i)
        pipe = c.pipeline().ping(b"a").call(999).ping(b"b")
        with self.assertRaises(msgd.UnknownCommand):
            pipe.execute()
        self.assertEqual(c.ping(b"in step"), b"in step")

    def test_async_concurrent_calls_are_matched_in_order(self):
        port = self.daemon.port()

        async def main():
            async with msgd.AsyncClient(harness.HOST, port, timeout=timeout()) as c:
                async def one(i):
                    if i % 100 == 7:
                        with self.assertRaises(msgd.UnknownCommand):
                            await c.call(999)
                        return None
                    if i % 100 == 3:
                        return await c.delay(15, b"d%d" % i)
                    return await c.echo(b"%d" % i)
                res = await asyncio.gather(*[one(i) for i in range(2000)])
                for i, r in enumerate(res):
                    if i % 100 == 7:
                        self.assertIsNone(r)
                    elif i % 100 == 3:
                        self.assertEqual(r, b"d%d" % i)
                    else:
                        self.assertEqual(r, b"%d" % i)
                pipe = c.pipeline()
                for i in range(500):
                    pipe.ping(b"%d" % i)
                self.assertEqual(await pipe.execute(), [b"%d" % i for i in range(500)])
        run_async(main())

    def test_pubsub_across_reactors(self):
        subs = []
        for i in range(4):                          # round robin: every reactor
            c = self.client()
            subs.append((c, c.subscribe("weather", "news")))
        pub = self.client()
        s = pub.stats()
        self.assertTrue(all(s["reactor.%d.connections_current" % r] > 0 for r in range(3)), s)
        self.assertEqual(pub.publish("weather", b"sunny"), 4)
        self.assertEqual(pub.publish(b"news", "headline"), 4)
        self.assertEqual(pub.publish("nobody-listens", b"x"), 0)
        for c, sub in subs:
            self.assertEqual(sub.get(timeout()), msgd.Message("weather", b"sunny"))
            self.assertEqual(sub.get(timeout()), msgd.Message("news", b"headline"))
        # One subscriber leaves one topic.
        c0, sub0 = subs[0]
        c0.unsubscribe("news")
        self.assertEqual(pub.publish("news", b"2"), 3)
        self.assertEqual(pub.publish("weather", b"rain"), 4)
        self.assertEqual(sub0.get(timeout()), msgd.Message("weather", b"rain"))
        # The publisher subscribed to its own topic counts and gets it too.
        mine = pub.subscribe("weather")
        self.assertEqual(pub.publish("weather", b"self"), 5)
        self.assertEqual(mine.get(timeout()), msgd.Message("weather", b"self"))
        # Iteration: many messages, in publish order.
        for i in range(200):
            pub.publish("news", b"n%d" % i)
        c1, sub1 = subs[1]
        got = []
        for m in sub1:
            if m.data.startswith(b"n"):
                got.append(int(m.data[1:]))
            if len(got) == 200:
                break
        self.assertEqual(got, list(range(200)))

    def test_async_subscribe_is_an_async_iterator(self):
        port = self.daemon.port()

        async def main():
            async with msgd.AsyncClient(harness.HOST, port, timeout=timeout()) as sub_c, \
                    msgd.AsyncClient(harness.HOST, port, timeout=timeout()) as pub_c:
                sub = await sub_c.subscribe("ticks")
                counts = await asyncio.gather(*[pub_c.publish("ticks", b"%d" % i)
                                                for i in range(100)])
                self.assertEqual(counts, [1] * 100)
                got = []
                async for m in sub:
                    got.append(m)
                    if len(got) == 100:
                        break
                self.assertEqual(got, [msgd.Message("ticks", b"%d" % i) for i in range(100)])
                await sub.unsubscribe()
                self.assertEqual(await pub_c.publish("ticks", b"gone"), 0)
                # subscribing through iteration
                it = sub_c.subscribe("lazy")
                task = asyncio.ensure_future(it.__anext__())
                await wait_until_async(lambda: pub_c.publish("lazy", b"x"), 1)
                self.assertEqual(await task, msgd.Message("lazy", b"x"))
        run_async(main())

    def test_direct_and_deliveries(self):
        devices = []
        for _ in range(3):
            c = self.client()
            c.auth("dana")
            devices.append(c)
        sender = self.client()
        sender.auth(b"frank")
        self.assertEqual(sender.send("dana", b"hi"), (3, 0))
        for d in devices:
            self.assertEqual(d.next_delivery(timeout()), msgd.Delivery("frank", b"hi"))
        self.assertEqual(sender.send("offline", b"x"), (0, 0))
        self.assertEqual(sender.send("frank", b"me"), (1, 0))
        self.assertEqual(sender.next_delivery(timeout()), msgd.Delivery("frank", b"me"))
        for i in range(50):
            sender.send("dana", b"%d" % i)
        it = devices[0].deliveries()
        self.assertEqual([next(it).data for _ in range(50)], [b"%d" % i for i in range(50)])
        port = self.daemon.port()

        async def main():
            async with msgd.AsyncClient(harness.HOST, port, token="erin",
                                        timeout=timeout()) as erin:
                self.assertEqual(await erin.send("erin", b"self"), (1, 0))
                self.assertEqual(await erin.next_delivery(timeout()),
                                 msgd.Delivery("erin", b"self"))
                self.assertIsNone(await erin.next_delivery(0.01))
        run_async(main())

    def test_answers_server_pings(self):
        d = self.start_daemon({"timeouts": {"heartbeat_interval": "100ms",
                                            "idle_timeout": "1s"}})
        c = msgd.Client(harness.HOST, d.port(), timeout=timeout(), heartbeat=0)
        self.addCleanup(c.close)
        c.connect()
        # waiting for a push keeps reading: the server's PINGs get answered,
        # so the connection outlives idle_timeout
        wait_until(lambda: c.next_message(0.05) is None and c.pings_answered >= 12,
                   timeout(3), "12 server PINGs answered (past idle_timeout)")
        self.assertEqual(c.reconnects, 0)
        self.assertEqual(c.ping(b"alive"), b"alive")


async def wait_until_async(coro_fn, want, wait=None):
    deadline = time.monotonic() + (timeout() if wait is None else wait)
    i = 0
    while True:
        got = await coro_fn()
        if got == want:
            return got
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %r (last %r)" % (want, got))
        await asyncio.sleep(min(0.002 * 2 ** min(i, 5), 0.05))
        i += 1


class PyClientRestartTests(MsgdTestCase):
    """GOAWAY and reconnect to a daemon restarted on the same port."""
    shared_daemon = False

    def restart(self, d, overrides=None):
        """SIGTERM (GOAWAY, drain, exit 0), then a new daemon on the same port."""
        port = d.port()
        d.send_signal(signal.SIGTERM)
        self.assertEqual(d.wait_exit(timeout()), 0, d.log_tail())
        o = dict(overrides or {})
        o["msg"] = {"listen": "127.0.0.1:%d" % port}
        d2 = self.start_daemon(o)
        self.assertEqual(d2.port(), port)
        return d2

    def test_goaway_reconnect_resubscribes_sync(self):
        d1 = self.start_daemon({"server": {"reactors": 3}})
        port = d1.port()
        c = msgd.Client(harness.HOST, port, timeout=timeout(), backoff_initial=0.05,
                        backoff_max=0.5, reconnect_attempts=None)
        self.addCleanup(c.close)
        sub = c.subscribe("restart")
        with msgd.Client(harness.HOST, port, timeout=timeout()) as p:
            self.assertEqual(p.publish("restart", b"before"), 1)
        self.assertEqual(sub.get(timeout()), msgd.Message("restart", b"before"))
        d2 = self.restart(d1)
        # The subscriber notices GOAWAY and the close while it waits, then
        # reconnects (full-jitter back-off) and subscribes again.
        pub = msgd.Client(harness.HOST, port, timeout=timeout())
        self.addCleanup(pub.close)
        self.assertIsNone(sub.get(0.01))
        wait_until(lambda: sub.get(0.02) is None and pub.publish("restart", b"probe") == 1,
                   timeout(3), "the subscriber back on the new daemon")
        self.assertGreaterEqual(c.reconnects, 1)
        pub.publish("restart", b"after")
        got = None
        deadline = time.monotonic() + timeout()
        while time.monotonic() < deadline:
            m = sub.get(timeout())
            if m is not None and m.data == b"after":
                got = m
                break
        self.assertEqual(got, msgd.Message("restart", b"after"))
        self.assertEqual(c.ping(b"x"), b"x")
        self.assertEqual(d2.alive(), True)

    def test_goaway_reconnect_resubscribes_async(self):
        d1 = self.start_daemon()
        port = d1.port()

        async def main():
            c = msgd.AsyncClient(harness.HOST, port, timeout=timeout(), backoff_initial=0.05,
                                 backoff_max=0.5, reconnect_attempts=None)
            await c.connect()
            try:
                sub = await c.subscribe("restart")
                async with msgd.AsyncClient(harness.HOST, port) as p:
                    self.assertEqual(await p.publish("restart", b"before"), 1)
                self.assertEqual(await sub.get(timeout()), msgd.Message("restart", b"before"))
                await asyncio.get_running_loop().run_in_executor(None, self.restart, d1)
                async with msgd.AsyncClient(harness.HOST, port, timeout=timeout()) as p:
                    await wait_until_async(lambda: p.publish("restart", b"after"), 1,
                                           timeout(3))
                got = None
                while got is None or got.data != b"after":
                    got = await sub.get(timeout())
                self.assertEqual(got, msgd.Message("restart", b"after"))
                self.assertGreaterEqual(c.reconnects, 1)
                self.assertIsNotNone(c.goaway)
                self.assertEqual(await c.ping(b"x"), b"x")
            finally:
                await c.close()
        run_async(main(), timeout(8))

    def test_auth_and_reauth_after_reconnect(self):
        tokens = {"auth": {"tokens": "alice:a-tok, bob:b-tok"}}
        d1 = self.start_daemon(tokens)
        port = d1.port()
        with self.assertRaises(msgd.AuthFailed) as cm:
            msgd.Client(harness.HOST, port, token="wrong", timeout=timeout()).connect()
        self.assertEqual(cm.exception.code, 11)
        plain = msgd.Client(harness.HOST, port, timeout=timeout())
        self.addCleanup(plain.close)
        with self.assertRaises(msgd.NotAuthenticated):
            plain.echo(b"x")
        self.assertEqual(plain.ping(b"p"), b"p")    # PING needs no AUTH
        a = msgd.Client(harness.HOST, port, token="a-tok", timeout=timeout(),
                        backoff_initial=0.05, backoff_max=0.5)
        self.addCleanup(a.close)
        self.assertEqual(a.echo(b"in"), b"in")
        b = msgd.Client(harness.HOST, port, timeout=timeout(), backoff_initial=0.05,
                        backoff_max=0.5)
        self.addCleanup(b.close)
        b.auth("b-tok")                             # auth() later: kept for reconnects
        self.assertEqual(a.send("bob", b"1"), (1, 0))
        self.assertEqual(b.next_delivery(timeout()), msgd.Delivery("alice", b"1"))
        self.restart(d1, tokens)
        # The next calls reconnect and authenticate again on their own.
        self.assertEqual(a.echo(b"again"), b"again")
        self.assertEqual(b.send("bob", b"to me"), (1, 0))
        self.assertEqual(b.next_delivery(timeout()), msgd.Delivery("bob", b"to me"))
        self.assertEqual(a.send("bob", b"2"), (1, 0))
        self.assertEqual(b.next_delivery(timeout()), msgd.Delivery("alice", b"2"))
        self.assertEqual((a.reconnects, b.reconnects), (1, 1))

    def test_async_auth_is_sent_again_after_reconnect(self):
        tokens = {"auth": {"tokens": "carol:c-tok"}}
        d1 = self.start_daemon(tokens)
        port = d1.port()

        async def main():
            async with msgd.AsyncClient(harness.HOST, port, timeout=timeout(),
                                        backoff_initial=0.05, backoff_max=0.5) as c:
                await c.auth("c-tok")
                self.assertEqual(await c.send("carol", b"1"), (1, 0))
                self.assertEqual(await c.next_delivery(timeout()), msgd.Delivery("carol", b"1"))
                await asyncio.get_running_loop().run_in_executor(None, self.restart, d1, tokens)
                self.assertEqual(await c.echo(b"back"), b"back")
                self.assertEqual(await c.send("carol", b"2"), (1, 0))
                self.assertEqual(await c.next_delivery(timeout()), msgd.Delivery("carol", b"2"))
                self.assertEqual(c.reconnects, 1)
        run_async(main(), timeout(8))

    def test_no_reconnect_means_connection_lost(self):
        d1 = self.start_daemon()
        port = d1.port()
        c = msgd.Client(harness.HOST, port, timeout=timeout(), reconnect=False)
        self.addCleanup(c.close)
        sub = c.subscribe("x")
        d1.send_signal(signal.SIGTERM)
        with self.assertRaises(msgd.ConnectionLost) as cm:
            sub.get(timeout(2))
        self.assertIn("GOAWAY", str(cm.exception))
        self.assertEqual(d1.wait_exit(timeout()), 0)
        with self.assertRaises(msgd.ConnectionLost):
            c.ping()


class PyClientFailureTests(unittest.TestCase):
    """Servers that misbehave: silent, or dropping the connection."""

    def test_dead_server_is_declared_dead_within_dead_after(self):
        srv = SilentServer()
        self.addCleanup(srv.stop)
        dead_after = 0.6
        c = msgd.Client(harness.HOST, srv.port, heartbeat=0.15, dead_after=dead_after,
                        timeout=None, reconnect=False)
        self.addCleanup(c.close)
        c.connect()
        t0 = time.monotonic()
        with self.assertRaises(msgd.ServerDead) as cm:
            c.ping(b"anyone?")                      # no timeout of its own
        took = time.monotonic() - t0
        self.assertIn("sent nothing", str(cm.exception))
        self.assertIsInstance(cm.exception, msgd.ConnectionLost)
        self.assertLess(took, dead_after + timeout(0.2))
        self.assertGreaterEqual(took, dead_after * 0.9)
        # the client's own heartbeat PING went out before it gave up
        wait_until(lambda: (0, wire.PING) in srv.commands, timeout(),
                   "the heartbeat PING at the silent server")
        self.assertFalse(c.connected)

    def test_dead_server_ends_a_waiting_subscriber(self):
        srv = SilentServer()
        self.addCleanup(srv.stop)
        c = msgd.Client(harness.HOST, srv.port, heartbeat=0.1, dead_after=0.4,
                        timeout=timeout(), reconnect=True, reconnect_attempts=2,
                        backoff_initial=0.01, backoff_max=0.02)
        self.addCleanup(c.close)
        c.connect()
        t0 = time.monotonic()
        # next_message without a timeout would wait for ever on a live
        # server; here the server is dead, the reconnects hit a dead server
        # too, and the attempts run out
        with self.assertRaises(msgd.ConnectFailed) as cm:
            c.next_message(None)
        self.assertLess(time.monotonic() - t0, timeout(1))
        self.assertIn("gave up reconnecting", str(cm.exception))
        self.assertGreaterEqual(srv.accepted, 2)

    def test_async_dead_server(self):
        srv = SilentServer()
        self.addCleanup(srv.stop)

        async def main():
            c = msgd.AsyncClient(harness.HOST, srv.port, heartbeat=0.1, dead_after=0.5,
                                 timeout=None, reconnect=False)
            await c.connect()
            try:
                t0 = time.monotonic()
                with self.assertRaises(msgd.ServerDead):
                    await c.ping(b"anyone?")
                self.assertLess(time.monotonic() - t0, 0.5 + timeout(0.2))
                with self.assertRaises(msgd.ConnectionLost):
                    await c.next_message(None)
            finally:
                await c.close()
        run_async(main())
        wait_until(lambda: (0, wire.PING) in srv.commands, timeout(), "the heartbeat PING")

    def test_request_in_flight_raises_and_is_never_sent_again(self):
        srv = DropAfterOneRequest(connections=2)
        self.addCleanup(srv.stop)
        c = msgd.Client(harness.HOST, srv.port, timeout=timeout(), backoff_initial=0.01,
                        backoff_max=0.02, heartbeat=0)
        self.addCleanup(c.close)
        with self.assertRaises(msgd.ConnectionLost) as cm:
            c.echo(b"first")
        self.assertIn("closed", str(cm.exception))
        with self.assertRaises(msgd.ConnectionLost):
            c.echo(b"second")                       # a new connection, dropped again
        wait_until(lambda: len(srv.frames) == 2, timeout(), "two requests at the server")
        self.assertEqual(srv.frames, [(0, wire.ECHO, b"first"), (1, wire.ECHO, b"second")])

    def test_async_request_in_flight_raises_and_is_never_sent_again(self):
        srv = DropAfterOneRequest(connections=2)
        self.addCleanup(srv.stop)

        async def main():
            c = msgd.AsyncClient(harness.HOST, srv.port, timeout=timeout(),
                                 backoff_initial=0.01, backoff_max=0.02, heartbeat=0)
            try:
                with self.assertRaises(msgd.ConnectionLost):
                    await c.echo(b"first")
                with self.assertRaises(msgd.ConnectionLost):
                    await c.echo(b"second")
            finally:
                await c.close()
        run_async(main())
        wait_until(lambda: len(srv.frames) == 2, timeout(), "two requests at the server")
        self.assertEqual(srv.frames, [(0, wire.ECHO, b"first"), (1, wire.ECHO, b"second")])

    def test_connect_refused(self):
        s = socket.socket()
        s.bind((harness.HOST, 0))
        port = s.getsockname()[1]
        s.close()
        with self.assertRaises(msgd.ConnectFailed) as cm:
            msgd.Client(harness.HOST, port).connect()
        self.assertIn("refused", str(cm.exception).lower())
        with self.assertRaises(msgd.ConnectFailed):
            run_async(msgd.AsyncClient(harness.HOST, port).connect())


def compressible(n, salt=0):
    """n bytes of text that compresses well (words, a number now and then)."""
    words = [b"alpha", b"beta", b"gamma", b"msgd", b"reactor", b"frame", b"payload", b"the"]
    out, i = [], salt
    size = 0
    while size < n:
        i = (i * 1103515245 + 12345) & 0x7FFFFFFF
        w = b"%d " % (i % 1000) if i % 16 == 0 else words[(i >> 8) % len(words)] + b" "
        out.append(w)
        size += len(w)
    return b"".join(out)[:n]


class PyClientCompressionTests(MsgdTestCase):
    """HELLO and compression against the daemon: the client really
    negotiates and compresses (the server's STATS count what it decompressed
    and compressed), with deflate from the stdlib and zstd from zstandard
    (which scripts/deps.sh installs, so its test runs, never skips)."""
    config = {"server": {"reactors": 2},
              "msg": {"compress_min": "512", "max_frame": "1M"}}

    def client(self, **kw):
        kw.setdefault("timeout", timeout())
        c = msgd.Client(harness.HOST, self.daemon.port(), **kw)
        self.addCleanup(c.close)
        return c.connect()

    def server_stats(self):
        with msgd.Client(harness.HOST, self.daemon.port(), timeout=timeout()) as s:
            st = s.stats()
        return st["decompressions"], st["compressions"]

    def both_ways(self, codec):
        c = self.client(compress=codec, compress_min=512)
        self.assertEqual(c.compression, codec)
        self.assertEqual(c.hello_info["compress"], codec)
        self.assertEqual(c.hello_info["compress_min"], "512")
        self.assertTrue(c.hello_info["server"].startswith("msgd/"), c.hello_info)
        big = compressible(64 * 1024, 1)
        dec0, comp0 = self.server_stats()
        self.assertEqual(c.echo(big), big)
        dec1, comp1 = self.server_stats()
        self.assertEqual(dec1, dec0 + 1, "the server decompressed the request")
        self.assertGreaterEqual(comp1, comp0 + 1, "the server compressed the reply")
        # below compress_min: plain
        self.assertEqual(c.echo(big[:400]), big[:400])
        self.assertEqual(self.server_stats()[0], dec1)
        # pipelined, each in order
        pipe = c.pipeline()
        payloads = [compressible(20000 + i, i) for i in range(10)]
        for p_ in payloads:
            pipe.echo(p_)
        self.assertEqual(pipe.execute(), payloads)
        self.assertEqual(self.server_stats()[0], dec1 + 10)

    def test_deflate_both_ways(self):
        self.both_ways("deflate")

    def test_zstd_both_ways(self):
        self.assertTrue(wire.zstd_available(),
                        "zstandard does not import, even from /usr/lib/python3/dist-packages: "
                        "scripts/deps.sh installs python3-zstandard")
        self.both_ways("zstd")

    def test_async_compressed_pushes_and_echo(self):
        """A subscriber that agreed zstd gets a big PUBLISH decompressed; an
        AsyncClient with deflate pipelines compressed ECHOs."""
        self.assertTrue(wire.zstd_available())
        sub = self.client(compress=["zstd", "deflate"])
        self.assertEqual(sub.compression, "zstd")
        news = sub.subscribe("big")
        data = compressible(100 * 1024, 7)
        _, comp0 = self.server_stats()
        with msgd.Client(harness.HOST, self.daemon.port(), timeout=timeout()) as pub:
            self.assertEqual(pub.publish("big", data), 1)
        self.assertEqual(news.get(timeout()), msgd.Message("big", data))
        self.assertGreater(self.server_stats()[1], comp0)

        async def run():
            async with msgd.AsyncClient(harness.HOST, self.daemon.port(), compress="deflate",
                                        timeout=timeout()) as c:
                self.assertEqual(c.compression, "deflate")
                payloads = [compressible(30000, i) for i in range(20)]
                got = await asyncio.gather(*(c.echo(p_) for p_ in payloads))
                self.assertEqual(got, payloads)
        dec0, _ = self.server_stats()
        run_async(run())
        self.assertEqual(self.server_stats()[0], dec0 + 20)

    def test_server_without_codecs(self):
        """A server with compression switched off answers compress=none and
        the client goes on plainly."""
        d = self.start_daemon({"msg": {"compress": ""}})
        c = msgd.Client(harness.HOST, d.port(), timeout=timeout(), compress="deflate")
        self.addCleanup(c.close)
        c.connect()
        self.assertIsNone(c.compression)
        self.assertEqual(c.hello_info["compress"], "none")
        big = compressible(50000)
        self.assertEqual(c.echo(big), big)
        self.assertEqual(c.stats()["decompressions"], 0)


if __name__ == "__main__":
    unittest.main()
