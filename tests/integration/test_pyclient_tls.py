"""The Python client package (clients/python, `import msgd`) over TLS,
against the daemon's tls_listen (issue 15: "TLS once the server has it"):
the blocking Client and the asyncio AsyncClient with ping, pub/sub and
pipelining (payloads larger than one TLS record among them), compression
inside TLS, a client certificate when the server requires one (and none,
refused with a clear error), and a server certificate checked against the
wrong CA, which fails at once with a clear error and is not retried.

The CA and the certificates are made at run time (tlspki.py, shared with
test_tls.py)."""

import asyncio
import signal
import socket
import ssl
import unittest

import harness
import test_pyclient  # noqa: F401  (puts clients/python first on sys.path)
import tlspki
from harness import MsgdTestCase, timeout, wait_until
from test_pyclient import compressible, run_async

import msgd  # noqa: E402  (from the source tree, as test_pyclient arranges)
from msgd import protocol as wire  # noqa: E402

PKI = tlspki.Pki("msgd-it-pytls-pki-")
path = PKI.path


def setUpModule():
    PKI.create()


def tearDownModule():
    PKI.remove()


class PyTlsBase(MsgdTestCase):
    def tls_kw(self, **kw):
        kw.setdefault("timeout", timeout())
        kw.setdefault("cafile", path("ca.pem"))
        kw.setdefault("reconnect_attempts", 3)
        kw.setdefault("backoff_initial", 0.01)
        kw.setdefault("backoff_max", 0.05)
        return kw

    def client(self, daemon=None, host=harness.HOST, **kw):
        c = msgd.Client(host, (daemon or self.daemon).port("tls"), **self.tls_kw(**kw))
        self.addCleanup(c.close)
        return c.connect()

    def aclient(self, daemon=None, host=harness.HOST, **kw):
        return msgd.AsyncClient(host, (daemon or self.daemon).port("tls"), **self.tls_kw(**kw))

    def server_stats(self, daemon=None):
        with msgd.Client(harness.HOST, (daemon or self.daemon).port(), timeout=timeout()) as s:
            return s.stats()


class PyClientTlsTests(PyTlsBase):
    config = dict(PKI.tls_config(), server={"reactors": 2},
                  msg=dict(PKI.tls_config()["msg"], compress_min="512", max_frame="1M"))

    def test_blocking_ping_pubsub_pipelining(self):
        hs0 = self.server_stats()["tls_handshakes"]
        c = self.client()
        self.assertIsInstance(c._sock, ssl.SSLSocket)
        self.assertEqual(c._sock.selected_alpn_protocol(), "msgp/1")
        self.assertEqual(c.ping(), b"")
        self.assertEqual(c.ping(b"over tls"), b"over tls")
        big = bytes(range(256)) * 400                   # 100 KiB: several TLS records
        self.assertEqual(c.echo(big), big)
        # by name: the certificate names localhost too
        named = self.client(host="localhost")
        self.assertEqual(named.echo("by name"), b"by name")
        # pub/sub between two TLS connections
        sub = c.subscribe("tls-news")
        self.assertEqual(named.publish("tls-news", big), 1)
        self.assertEqual(named.publish("tls-news", b"small"), 1)
        self.assertEqual(sub.get(timeout()), msgd.Message("tls-news", big))
        self.assertEqual(sub.get(timeout()), msgd.Message("tls-news", b"small"))
        # pipelining: many in flight, big and small, an error in the middle
        pipe = named.pipeline()
        n = 2000
        for i in range(n):
            if i == 1000:
                pipe.call(999)
            elif i % 100 == 0:
                pipe.echo(big[:20000 + i])
            else:
                pipe.ping(b"%d" % i)
        res = pipe.execute(raise_on_error=False)
        self.assertEqual(len(res), n)
        for i, r in enumerate(res):
            if i == 1000:
                self.assertIsInstance(r, msgd.UnknownCommand)
            elif i % 100 == 0:
                self.assertEqual(r, big[:20000 + i], i)
            else:
                self.assertEqual(r, b"%d" % i)
        self.assertEqual(named.ping(b"in step"), b"in step")
        self.assertGreaterEqual(self.server_stats()["tls_handshakes"], hs0 + 2)

    def test_async_ping_pubsub_pipelining(self):
        big = bytes(range(256)) * 300

        async def main():
            async with self.aclient() as sub_c, self.aclient(host="localhost") as pub_c:
                self.assertEqual(await sub_c.ping(b"a"), b"a")
                self.assertEqual(await sub_c.echo(big), big)
                sub = await sub_c.subscribe("tls-ticks")
                counts = await asyncio.gather(*[pub_c.publish("tls-ticks", b"%d" % i)
                                                for i in range(200)])
                self.assertEqual(counts, [1] * 200)
                got = []
                async for m in sub:
                    got.append(m)
                    if len(got) == 200:
                        break
                self.assertEqual(got, [msgd.Message("tls-ticks", b"%d" % i) for i in range(200)])
                # concurrent calls, replies matched in order
                res = await asyncio.gather(*[pub_c.echo(big[:i * 97]) for i in range(300)])
                self.assertEqual(res, [big[:i * 97] for i in range(300)])
                pipe = pub_c.pipeline()
                for i in range(500):
                    pipe.ping(b"%d" % i)
                self.assertEqual(await pipe.execute(), [b"%d" % i for i in range(500)])
        run_async(main())

    def test_compression_inside_tls(self):
        self.assertTrue(wire.zstd_available())
        data = compressible(64 * 1024, 3)
        for codec in ("zstd", "deflate"):
            c = self.client(compress=codec)
            self.assertEqual(c.compression, codec)
            self.assertIn("tls", c.hello_info["features"].split(","), c.hello_info)
            st0 = self.server_stats()
            self.assertEqual(c.echo(data), data)
            pipe = c.pipeline()
            for i in range(10):
                pipe.echo(data[:30000 + i])
            self.assertEqual(pipe.execute(), [data[:30000 + i] for i in range(10)])
            st1 = self.server_stats()
            self.assertEqual(st1["decompressions"], st0["decompressions"] + 11, codec)
            self.assertGreaterEqual(st1["compressions"], st0["compressions"] + 11, codec)

        async def run():
            async with self.aclient(compress="deflate") as c:
                self.assertEqual(c.compression, "deflate")
                got = await asyncio.gather(*(c.echo(data[:40000 + i]) for i in range(10)))
                self.assertEqual(got, [data[:40000 + i] for i in range(10)])
        dec0 = self.server_stats()["decompressions"]
        run_async(run())
        self.assertEqual(self.server_stats()["decompressions"], dec0 + 10)

    def test_wrong_ca_fails_clearly_and_is_not_retried(self):
        c = msgd.Client(harness.HOST, self.daemon.port("tls"),
                        **self.tls_kw(cafile=path("otherca.pem"), reconnect_attempts=50,
                                      backoff_initial=1.0, backoff_max=5.0))
        self.addCleanup(c.close)
        with self.assertRaises(msgd.TlsError) as cm:
            c.connect()
        self.assertIsInstance(cm.exception, msgd.ConnectFailed)
        self.assertIn("certificate verify failed", str(cm.exception))
        # A call does not retry it 50 times with back-off: it fails at once.
        with self.assertRaises(msgd.TlsError):
            c.ping()
        # A certificate that does not name the host: the same.
        with self.assertRaises(msgd.TlsError) as cm:
            self.client(server_hostname="elsewhere.example")
        self.assertIn("elsewhere.example", str(cm.exception))

        async def run():
            a = self.aclient(cafile=path("otherca.pem"), reconnect_attempts=50,
                             backoff_initial=1.0, backoff_max=5.0)
            try:
                with self.assertRaises(msgd.TlsError) as acm:
                    await a.connect()
                self.assertIn("certificate verify failed", str(acm.exception))
                with self.assertRaises(msgd.TlsError):
                    await a.ping()
            finally:
                await a.close()
        run_async(run(), timeout(2))
        # TLS to the plain port: a clear failure, not a hang
        with self.assertRaises(msgd.ConnectFailed):
            msgd.Client(harness.HOST, self.daemon.port(), **self.tls_kw(
                connect_timeout=timeout())).connect()


class PyClientReconnectTlsTests(PyTlsBase):
    shared_daemon = False

    def tls_failures(self, d):
        st = self.server_stats(d)
        return sum(v for k, v in st.items() if k.startswith("tls_failed."))

    def settled_tls_failures(self, d, conns):
        """tls_failures once only conns connections are open (the one asking
        included). A client that refuses the certificate gives up before the
        server has read its alert; the server counts the failure, then
        closes the connection."""
        last = {}
        with msgd.Client(harness.HOST, d.port(), timeout=timeout()) as s:
            def settled():
                last["s"] = s.stats()
                return last["s"]["connections_current"] == conns
            wait_until(settled, timeout(2), "connections_current == %d" % conns)
        return sum(v for k, v in last["s"].items() if k.startswith("tls_failed."))

    def test_a_certificate_that_stops_verifying_is_not_retried(self):
        """Connected clients whose server then presents a certificate of
        another CA (reloaded on SIGHUP): the reconnect after a lost
        connection fails with TlsError at once, not after every attempt."""
        PKI.make_cert("otherserver", "otherca", 0x5005, tlspki.SERVER_EXT)
        d = self.start_daemon(PKI.tls_config())
        kw = dict(reconnect_attempts=50, backoff_initial=0.01, backoff_max=0.02)
        c = self.client(d, **kw)
        self.assertEqual(c.ping(b"1"), b"1")
        d.config["tls"] = {"cert": path("otherserver.pem"), "key": path("otherserver.key")}
        d.write_config()
        d.send_signal(signal.SIGHUP)
        other = ssl.create_default_context(cafile=path("otherca.pem"))

        def other_cert_served():
            try:
                with socket.create_connection((harness.HOST, d.port("tls")), timeout()) as s, \
                        other.wrap_socket(s, server_hostname=harness.HOST):
                    return True
            except ssl.SSLError:
                return False
        wait_until(other_cert_served, timeout(2), "the other CA's certificate after SIGHUP")
        # The polls refused the old certificate: their failures are counted
        # once their connections are gone (c's and the asking one are left).
        failed0 = self.settled_tls_failures(d, 2)
        with self.assertRaises(msgd.TooLarge):         # the server drops the connection
            c.echo(b"x" * (harness.MAX_FRAME + 1))
        with self.assertRaises(msgd.TlsError) as cm:
            c.ping(b"2")
        self.assertTrue(cm.exception.verify_failed)
        self.assertIn("certificate verify failed", str(cm.exception))
        wait_until(lambda: self.tls_failures(d) >= failed0 + 1, timeout(), "the failed handshake")
        self.assertEqual(self.tls_failures(d), failed0 + 1, "the handshake was tried again")

        async def run():
            async with self.aclient(d, cafile=path("otherca.pem"), **kw) as a:
                self.assertEqual(await a.ping(b"a"), b"a")
                d.config["tls"] = PKI.tls_config()["tls"]
                d.write_config()
                d.send_signal(signal.SIGHUP)
                await wait_until_async(lambda: not other_cert_served(), timeout(2))
                with self.assertRaises(msgd.TooLarge):
                    await a.echo(b"x" * (harness.MAX_FRAME + 1))
                with self.assertRaises(msgd.TlsError) as acm:
                    await a.ping(b"b")
                self.assertTrue(acm.exception.verify_failed)
        run_async(run(), timeout(2))


async def wait_until_async(cond, wait):
    deadline = asyncio.get_running_loop().time() + wait
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met within %.1fs" % wait)
        await asyncio.sleep(0.01)


class PyClientCertificateTests(PyTlsBase):
    config = PKI.tls_config(ca=path("ca.pem"))

    def test_client_certificate_when_the_server_requires_one(self):
        c = self.client(certfile=path("client.pem"), keyfile=path("client.key"))
        self.assertEqual(c.ping(b"with a certificate"), b"with a certificate")
        # an ssl.SSLContext of the caller's own works too
        ctx = ssl.create_default_context(cafile=path("ca.pem"))
        ctx.load_cert_chain(path("client.pem"), path("client.key"))
        self.assertEqual(self.client(ssl=ctx, cafile=None).echo(b"own context"),
                         b"own context")

        async def run():
            async with self.aclient(certfile=path("client.pem"),
                                    keyfile=path("client.key")) as a:
                self.assertEqual(await a.ping(b"async"), b"async")
                sub = await a.subscribe("certified")
                self.assertEqual(c.publish("certified", b"x"), 1)
                self.assertEqual(await sub.get(timeout()), msgd.Message("certified", b"x"))
        run_async(run())
        # without one, and with one from another CA: refused, with a reason
        for kw in ({}, {"certfile": path("stranger.pem"), "keyfile": path("stranger.key")}):
            bad = msgd.Client(harness.HOST, self.daemon.port("tls"),
                              **self.tls_kw(reconnect=False, **kw))
            self.addCleanup(bad.close)
            with self.assertRaises(msgd.ConnectionLost) as cm:
                bad.connect()
                bad.ping()
            self.assertRegex(str(cm.exception), r"(?i)certificate|alert|closed", kw)
        wait_until(lambda: self.server_stats()["tls_failed.certificate"] >= 2, timeout(),
                   "tls_failed.certificate >= 2")
        self.assertEqual(c.ping(b"still here"), b"still here")

    def test_certfile_needs_keyfile_and_our_context(self):
        with self.assertRaises(ValueError):
            msgd.Client(certfile=path("client.pem"), cafile=path("ca.pem"))
        with self.assertRaises(ValueError):
            msgd.Client(ssl=ssl.create_default_context(), certfile=path("client.pem"),
                        keyfile=path("client.key"))


if __name__ == "__main__":
    unittest.main()
