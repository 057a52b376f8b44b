"""TLS listeners (CONFIG.md `tls_listen`, `[tls]`; issue 13 "TLS"), checked
with Python's ssl module and the `openssl` command as real clients: a
handshake and PING, HELLO's `tls` feature, min_version 1.2 and 1.3, client
certificates (good, missing, from the wrong CA), ALPN msgp/1 and session
resumption seen by `openssl s_client`, tickets resumed across reloads (not
across a change of client CAs), a certificate reloaded on SIGHUP (and a
reload that fails, on a missing, bad or mismatched key or, as root with
[server] user, a key only root can read, keeping the running one and naming
the file), `msgd -t` naming a bad certificate or key file, large and
pipelined payloads with back-pressure, a connection that went quiet (its TLS
buffers freed) talking again, and the bad input: plaintext to a TLS port
(answered with a protocol_version alert), a handshake that stops halfway
(ended by idle_timeout, or by the 10 s bound with idle_timeout off, as a
PROXY header that stops halfway is), 1,000
handshakes opened and dropped, each closed and counted while the other
connections go on.

The CA, the certificates and their keys are made at run time with the
`openssl` command in a temp dir (no private key is committed)."""
import os
import select
import signal
import socket
import ssl
import subprocess
import time
import unittest

import msgproto as mp
import test_client
import tlspki
from harness import (HOST, MSGD_BIN, Daemon, MsgdTestCase, check_config, read_to_end, timeout,
                     wait_until)

PKI = tlspki.Pki("msgd-it-tls-pki-")
path = PKI.path
SERIAL_1 = tlspki.SERIAL_1
SERIAL_2 = tlspki.SERIAL_2


def setUpModule():
    PKI.create()


def tearDownModule():
    PKI.remove()


TLS_CONFIG = PKI.tls_config()


def client_context(cert=None, minimum=None, maximum=None, alpn=("msgp/1",)):
    ctx = ssl.create_default_context(cafile=path("ca.pem"))
    if cert:
        ctx.load_cert_chain(path(cert + ".pem"), path(cert + ".key"))
    if minimum:
        ctx.minimum_version = minimum
    if maximum:
        ctx.maximum_version = maximum
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


class TlsClient(mp.Client):
    """mp.Client over TLS (the handshake done in the constructor)."""

    def __init__(self, port, ctx=None, wait=None, rcvbuf=None, session=None):
        self.timeout = timeout() if wait is None else wait
        self.answer_pings = False
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(self.timeout)
        try:
            raw.connect((HOST, port))
        except BaseException:
            raw.close()
            raise
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = (ctx or client_context()).wrap_socket(raw, server_hostname="localhost",
                                                              session=session)
        except BaseException:
            raw.close()
            raise
        self.reader = mp.FrameReader()
        self.eof = False
        self.closed = False
        self.server_pings = 0

    def _recv_some(self, deadline, what):
        # Plaintext already decrypted by the ssl module is not seen by select.
        if self.sock.pending():
            return self.sock.recv(262144)
        try:
            return super()._recv_some(deadline, what)
        except ssl.SSLError as e:
            raise mp.ConnectionClosed("TLS error while waiting for %s: %s" % (what, e))


# A fatal protocol_version alert (TLS record type 21, version 1.2, 2 bytes).
ALERT_PROTOCOL_VERSION = b"\x15\x03\x03\x00\x02\x02\x46"


def client_hello():
    """The bytes of a real ClientHello (nothing sent anywhere)."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_context().wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


class TlsTestBase(MsgdTestCase):
    shared_daemon = False

    def tls(self, d, **kw):
        c = TlsClient(d.port("tls"), **kw)
        self.addCleanup(c.close)
        return c

    def assert_ping(self, c, payload=b"tls"):
        self.assert_frame(c.call(mp.PING, payload), mp.reply_cmd(mp.PING), payload)

    def counters(self, d):
        with d.client() as c:
            return self.stats(c)

    def wait_counter(self, d, name, at_least, keepalive=None):
        """Polls STATS until counter name reaches at_least; keepalive (a
        client) is PINGed at each poll, so idle_timeout spares it."""
        last = {}

        def check():
            if keepalive is not None:
                self.assert_ping(keepalive)
            last["v"] = self.counters(d).get(name, 0)
            return last["v"] >= at_least
        try:
            wait_until(check, timeout(2), "%s >= %d" % (name, at_least))
        except AssertionError as e:
            raise AssertionError("%s; last %s=%r" % (e, name, last.get("v")))

    def assert_refused(self, d, ctx, what):
        """The handshake fails, or the first read after it does (TLS 1.3
        clients learn of a refused certificate only then)."""
        try:
            c = self.tls(d, ctx=ctx)
            c.send_frame(mp.PING, b"x")
            got = c.recv_frame()
        except (ssl.SSLError, mp.ConnectionClosed, ConnectionError):
            return
        self.fail("%s: expected a refused handshake, got %s" % (what, mp.describe(*got)))


class TestTls(TlsTestBase):
    shared_daemon = True
    config = TLS_CONFIG

    def test_handshake_ping_alpn_hello(self):
        c = self.tls(self.daemon)
        self.assertEqual(c.sock.version(), "TLSv1.3")
        self.assertEqual(c.sock.selected_alpn_protocol(), "msgp/1")
        self.assert_ping(c)
        cmd, payload = c.call(mp.HELLO, b"client=test_tls\n")
        self.assertEqual(cmd, mp.reply_cmd(mp.HELLO), mp.describe(cmd, payload))
        features = dict(l.partition("=")[::2] for l in payload.decode().splitlines())["features"]
        self.assertIn("tls", features.split(","))
        plain = self.connect()
        cmd, payload = plain.call(mp.HELLO, b"client=test_tls\n")
        features = dict(l.partition("=")[::2] for l in payload.decode().splitlines())["features"]
        self.assertNotIn("tls", features.split(","), "a plain connection is not TLS")
        self.assertGreaterEqual(self.stats(plain)["tls_handshakes"], 1)

    def test_tls12_and_no_alpn(self):
        c = self.tls(self.daemon, ctx=client_context(maximum=ssl.TLSVersion.TLSv1_2, alpn=()))
        self.assertEqual(c.sock.version(), "TLSv1.2")
        self.assertIsNone(c.sock.selected_alpn_protocol())
        self.assert_ping(c)

    def test_large_pipelined_and_back_pressure(self):
        """Frames larger than a TLS record, many in one write, and a reader
        that reads nothing until the server has paused it."""
        c = self.tls(self.daemon)
        payloads = [bytes([i]) * (60000 - i) for i in range(40)]
        c.send_raw(b"".join(mp.encode(mp.ECHO, p) for p in payloads))
        for p in payloads:
            self.assert_frame(c.recv_frame(), mp.reply_cmd(mp.ECHO), p)

    def test_back_pressure(self):
        """9.6 MB of replies (more than the kernel's largest send buffer)
        against output_high_water 64K, to a reader with a small receive
        window that reads nothing until the server has paused it. One thread
        writes and reads without blocking (an SSL object must not be read
        and written from two threads at once)."""
        d = self.start_daemon(dict(TLS_CONFIG, limits={
            "output_high_water": "64K", "output_low_water": "16K", "output_hard_limit": "1M"}))
        payloads = [bytes([i]) * (60000 - i) for i in range(160)]
        slow = self.tls(d, rcvbuf=16384)
        before = self.counters(d)["read_pauses"]
        data = memoryview(b"".join(mp.encode(mp.ECHO, p) for p in payloads))
        sock = slow.sock
        sock.setblocking(False)
        reader = mp.FrameReader()
        got, sent, paused = [], 0, False
        deadline = time.monotonic() + timeout(30)
        while len(got) < len(payloads):
            self.assertLess(time.monotonic(), deadline, "%d of %d replies, %d of %d bytes sent"
                            % (len(got), len(payloads), sent, len(data)))
            wrote = False
            if sent < len(data):
                try:
                    sent += sock.send(data[sent:sent + 65536])
                    wrote = True
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                    pass
            if not paused:
                if not wrote:   # the server stopped taking input: has it paused us?
                    paused = self.counters(d)["read_pauses"] > before
                    if not paused:
                        select.select([], [sock], [], 0.01)
                continue
            try:
                chunk = sock.recv(262144)
                self.assertTrue(chunk, "the server closed")
                reader.feed(chunk)
                got.extend(reader.frames())
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                if not wrote and not sock.pending():
                    select.select([sock], [sock] if sent < len(data) else [], [], 0.05)
        self.assertEqual(sent, len(data))
        for f, p in zip(got, payloads):
            self.assertTrue((f.cmd, f.payload) == (mp.reply_cmd(mp.ECHO), p), "a reply differs")
        sock.setblocking(True)
        self.assert_ping(slow)

    def s_client(self, args, sess_out=None):
        """Runs openssl s_client; with sess_out, until it has written the
        session there (TLS 1.3 sends its ticket after the handshake), then
        ends its input so it quits. Returns its output."""
        proc = subprocess.Popen(["openssl", "s_client"] + args +
                                (["-sess_out", sess_out] if sess_out else []),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        try:
            if sess_out:
                wait_until(lambda: proc.poll() is not None or (
                    os.path.exists(sess_out) and b"END SSL SESSION" in open(sess_out, "rb").read()),
                    timeout(2), "s_client writing its session")
            out, _ = proc.communicate(b"", timeout(2))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return out.decode(errors="replace")

    def test_openssl_s_client_alpn_and_resumption(self):
        port = self.daemon.port("tls")
        base = self.counters(self.daemon)["tls_resumed"]
        for version in ("-tls1_3", "-tls1_2"):
            sess = path("sess%s.pem" % version)
            common = ["openssl", "s_client", version, "-connect", "%s:%d" % (HOST, port),
                      "-CAfile", path("ca.pem"), "-verify_return_error", "-alpn", "msgp/1"]
            if os.path.exists(sess):
                os.unlink(sess)
            out = self.s_client(common[2:], sess_out=sess)
            self.assertIn("ALPN protocol: msgp/1", out, out[-2000:])
            self.assertIn("Verify return code: 0 (ok)", out)
            out = self.s_client(common[2:] + ["-sess_in", sess])
            self.assertIn("Reused, TLSv1.%s" % version[-1], out, out[-2000:])
        # s_client sends no request: the server's side of the last handshake
        # (its client's Finished read, the resumption counted) may complete
        # after s_client has exited.
        wait_until(lambda: self.counters(self.daemon)["tls_resumed"] == base + 2, timeout(2),
                   "tls_resumed == %d (two resumptions)" % (base + 2))


class TestTlsVersions(TlsTestBase):
    def test_min_version_13(self):
        d = self.start_daemon(dict(TLS_CONFIG, tls=dict(TLS_CONFIG["tls"], min_version="1.3")))
        self.assert_ping(self.tls(d))
        with self.assertRaises(ssl.SSLError):
            TlsClient(d.port("tls"), ctx=client_context(maximum=ssl.TLSVersion.TLSv1_2)).close()
        self.wait_counter(d, "tls_failed.protocol", 1)
        self.assert_ping(self.tls(d))


class TestClientCertificates(TlsTestBase):
    def test_required_client_certificates(self):
        d = self.start_daemon(dict(TLS_CONFIG, tls=dict(TLS_CONFIG["tls"], ca=path("ca.pem"))))
        good = self.tls(d, ctx=client_context(cert="client"))
        self.assert_ping(good)
        self.assert_refused(d, client_context(), "no client certificate")
        self.wait_counter(d, "tls_failed.certificate", 1)
        self.assert_refused(d, client_context(cert="stranger"), "a certificate of another CA")
        self.wait_counter(d, "tls_failed.certificate", 2)
        self.assert_ping(good, b"still here")
        self.assert_ping(self.tls(d, ctx=client_context(cert="client")))


class TestReload(TlsTestBase):
    def serial(self, d):
        c = TlsClient(d.port("tls"))
        try:
            return int(c.sock.getpeercert()["serialNumber"], 16)
        finally:
            c.close()

    def test_sighup_reads_the_certificate_again(self):
        d = self.start_daemon(TLS_CONFIG)
        self.assertEqual(self.serial(d), SERIAL_1)
        old = self.tls(d)
        d.config["tls"] = {"cert": path("server2.pem"), "key": path("server2.key")}
        d.write_config()
        d.send_signal(signal.SIGHUP)
        wait_until(lambda: self.serial(d) == SERIAL_2, timeout(2), "the new certificate's serial")
        self.assert_ping(old, b"opened before the reload")
        # A reload whose key cannot be read, is not a key, or is another
        # certificate's keeps the running certificate, and the log names the file.
        for key, why in (("missing.key", "No such file or directory"),
                         ("garbage.pem", ""), ("server2.key", "key values mismatch")):
            d.config["tls"] = {"cert": path("server.pem"), "key": path(key)}
            d.write_config()
            n = d.read_log().count("reload failed: running configuration kept")
            d.send_signal(signal.SIGHUP)
            wait_until(lambda: d.read_log().count("reload failed: running configuration kept") > n,
                       timeout(2), "the failed reload's log")
            line = [l for l in d.read_log().splitlines() if "[error] reload: " in l][-1]
            self.assertIn("[tls] key %s" % path(key), line)
            self.assertIn(why, line)
            self.assertEqual(self.serial(d), SERIAL_2)
            self.assert_ping(old)

    def test_reload_as_the_user_a_root_only_key(self):
        """[server] user: the key is read as root at start, but a reload
        reads it as the user: a root-only key fails the reload, which says
        so and keeps serving; a key the user's group can read reloads."""
        if os.geteuid() != 0:
            self.skipTest("needs root to drop privileges")
        import pwd
        nobody = pwd.getpwnam("nobody")
        d = Daemon(dict(TLS_CONFIG, server={"reactors": 2, "workers": 1, "user": "nobody"}),
                   name="tlsuser")
        d.open_notify = True  # also opens d.tmp (0711) to nobody
        files = os.path.join(d.tmp, "tls")
        os.mkdir(files)
        os.chmod(files, 0o755)
        cert, key = os.path.join(files, "server.pem"), os.path.join(files, "server.key")
        for src, dst, mode in ((path("server.pem"), cert, 0o644), (path("server.key"), key, 0o600)):
            with open(src, "rb") as f, open(dst, "wb") as g:
                g.write(f.read())
            os.chmod(dst, mode)
        d.config["tls"] = {"cert": cert, "key": key}
        self._daemons.append(d)
        self.addCleanup(self._finish_daemon, d, 0)
        d.start()
        os.chmod(d.config_path, 0o644)
        self.assertIn("dropped privileges to user nobody", d.read_log())
        old = self.tls(d)
        self.assert_ping(old)
        d.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload failed: running configuration kept" in d.read_log(),
                   timeout(2), "the failed reload's log")
        self.assertIn("[tls] key %s: Permission denied (msgd runs as user nobody: let it or its "
                      "group read the file)" % key, d.read_log())
        self.assertEqual(self.serial(d), SERIAL_1)
        self.assert_ping(old, b"still served")
        os.chown(key, 0, nobody.pw_gid)
        os.chmod(key, 0o640)
        d.send_signal(signal.SIGHUP)
        wait_until(lambda: "reloaded " in d.read_log(), timeout(2), "the reload")
        self.assert_ping(self.tls(d), b"after the reload")



class TestResumptionAcrossReload(TlsTestBase):
    """Session tickets are encrypted under the process's keys, not the
    context's, so a reload (a new context) still resumes them; a reload that
    changes the client CAs does not (the session id context differs)."""

    def session(self, d, ctx):
        c = TlsClient(d.port("tls"), ctx=ctx)
        try:
            self.assert_ping(c)  # TLS 1.3: the ticket came before the reply
            self.assertIsNotNone(c.sock.session)
            return c.sock.session
        finally:
            c.close()

    def resumes(self, d, ctx, session, again=True):
        """Whether session resumes; a resumed TLS 1.3 one must also have
        brought a new ticket that resumes in turn (checked when again)."""
        c = TlsClient(d.port("tls"), ctx=ctx, session=session)
        try:
            self.assert_ping(c)
            if again and c.sock.session_reused and c.sock.version() == "TLSv1.3":
                # A resumed TLS 1.3 session gets a new ticket (clients use
                # each one once): OpenSSL names a ticket's session after it.
                self.assertNotEqual(c.sock.session.id, session.id, "no new ticket")
                self.assertTrue(self.resumes(d, ctx, c.sock.session, again=False))
            return c.sock.session_reused
        finally:
            c.close()

    def reload(self, d, tls):
        n = d.read_log().count("reloaded ")
        d.config["tls"] = tls
        d.write_config()
        d.send_signal(signal.SIGHUP)
        wait_until(lambda: d.read_log().count("reloaded ") > n, timeout(2), "the reload")

    def test_tickets_resume_after_reload(self):
        d = self.start_daemon(TLS_CONFIG)
        ctx13, ctx12 = client_context(), client_context(maximum=ssl.TLSVersion.TLSv1_2)
        sessions = [(ctx13, self.session(d, ctx13)), (ctx12, self.session(d, ctx12))]
        base = self.counters(d)["tls_resumed"]
        self.reload(d, dict(TLS_CONFIG["tls"]))
        for (ctx, sess), version in zip(sessions, ("TLS 1.3", "TLS 1.2")):
            self.assertTrue(self.resumes(d, ctx, sess), version + " after a reload")
        # Another certificate: tickets still resume (the client checked the
        # server once; the keys, not the certificate, protect the ticket).
        self.reload(d, {"cert": path("server2.pem"), "key": path("server2.key")})
        sess = self.session(d, ctx13)
        self.assertTrue(self.resumes(d, ctx13, sessions[0][1]))
        self.reload(d, dict(TLS_CONFIG["tls"]))
        self.assertTrue(self.resumes(d, ctx13, sess))
        self.assertEqual(self.counters(d)["tls_resumed"], base + 7)

    def test_new_client_cas_do_not_resume_old_sessions(self):
        with open(path("both-cas.pem"), "wb") as f:
            f.write(open(path("ca.pem"), "rb").read() + open(path("otherca.pem"), "rb").read())
        d = self.start_daemon(dict(TLS_CONFIG, tls=dict(TLS_CONFIG["tls"], ca=path("ca.pem"))))
        ctx = client_context(cert="client")
        sess = self.session(d, ctx)
        self.assertTrue(self.resumes(d, ctx, sess))
        self.reload(d, dict(TLS_CONFIG["tls"], ca=path("both-cas.pem")))
        self.assertFalse(self.resumes(d, ctx, sess), "a session made under other client CAs")
        sess = self.session(d, ctx)
        self.assertTrue(self.resumes(d, ctx, sess))


class TestMsgcli(TlsTestBase):
    """msgcli --tls, --cacert, --cert/--key (CONFIG.md "msgcli and msgbench")."""

    def msgcli(self, d, *args):
        exe = os.path.join(os.path.dirname(MSGD_BIN), "msgcli")
        return subprocess.run([exe, "-p", str(d.port("tls"))] + list(args),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout(2))

    def test_msgcli_over_tls(self):
        d = self.start_daemon(dict(TLS_CONFIG, tls=dict(TLS_CONFIG["tls"], ca=path("ca.pem"))))
        r = self.msgcli(d, "--tls", "--cacert", path("ca.pem"), "--cert", path("client.pem"),
                        "--key", path("client.key"), "echo", "over tls")
        self.assertEqual((r.returncode, r.stdout), (0, "over tls\n"), r.stderr)
        r = self.msgcli(d, "-h", "localhost", "--cacert", path("ca.pem"), "--cert",
                        path("client.pem"), "--key", path("client.key"), "raw", "6",
                        b"client=msgcli\n".hex())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b",tls".hex(), r.stdout.replace(" ", "").lower(), "HELLO's features")
        # HELLO and compression inside TLS (--compress)
        tls_opts = ["--cacert", path("ca.pem"), "--cert", path("client.pem"), "--key",
                    path("client.key")]
        r = self.msgcli(d, *tls_opts, "--compress", "zstd", "hello")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("compress=zstd\n", r.stdout)
        self.assertRegex(r.stdout, r"(?m)^features=.*\btls\b")
        text = "compressed inside tls " * 1000
        r = self.msgcli(d, *tls_opts, "--compress", "deflate", "echo", text)
        self.assertEqual((r.returncode, r.stdout), (0, text + "\n"), r.stderr)
        # No client certificate: refused (2, with a reason).
        r = self.msgcli(d, "--tls", "--cacert", path("ca.pem"), "ping")
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        # A server certificate msgcli cannot check: refused before any request.
        r = self.msgcli(d, "--tls", "--cacert", path("otherca.pem"), "--cert", path("client.pem"),
                        "--key", path("client.key"), "ping")
        self.assertEqual(r.returncode, 2)
        self.assertIn("certificate", r.stderr)


class TestMsgbench(test_client.ToolMixin, TlsTestBase):
    """msgbench --tls, --cacert, --cert/--key (CONFIG.md section 7): the
    handshake runs non-blocking on each thread's event loop, then every
    reply is checked as over plain TCP."""

    def tls_bench(self, d, *args, expect_rc=0):
        return self.bench_json(*args, port=d.port("tls"), expect_rc=expect_rc)

    def test_msgbench_over_tls(self):
        d = self.start_daemon(dict(TLS_CONFIG, tls=dict(TLS_CONFIG["tls"], ca=path("ca.pem"))))
        cert = ["--cert", path("client.pem"), "--key", path("client.key")]
        # pipelined, several threads, payloads over one TLS record (16 KiB)
        _, doc = self.tls_bench(d, "--tls", "--cacert", path("ca.pem"), *cert, "-t", "2",
                                "-c", "4", "-P", "8", "-n", "3000", "-s", "20000")
        self.assertEqual((doc["ok"], doc["errors"], doc["tls"]), (3000, 0, True), doc)
        self.assertEqual(doc["connections_made"], 4, doc)
        # by name (-h localhost), --cacert implying --tls, zstd inside TLS
        _, doc = self.tls_bench(d, "-h", "localhost", "--cacert", path("ca.pem"), *cert,
                                "--compress", "zstd", "--payload", "text", "-s", "30000",
                                "-c", "2", "-P", "4", "-n", "400")
        self.assertEqual((doc["ok"], doc["errors"], doc["tls"]), (400, 0, True), doc)
        self.assertEqual(doc["compressed_sent"], 400, doc)
        self.assertLess(doc["bytes_sent"], 400 * 30000, doc)
        # the other commands
        for cmd in ("ping", "publish"):
            _, doc = self.tls_bench(d, "--cacert", path("ca.pem"), *cert, "--cmd", cmd,
                                    "-c", "2", "-n", "500", "-s", "100")
            self.assertEqual((doc["ok"], doc["errors"]), (500, 0), "%s: %r" % (cmd, doc))
        counters = self.counters(d)
        self.assertEqual(counters.get("tls_failed.certificate", 0), 0, counters)

    def test_msgbench_tls_failures(self):
        d = self.start_daemon(TLS_CONFIG)
        # a server certificate from a CA msgbench was not given: every
        # handshake fails, the reason is said once, no request goes out
        r, doc = self.tls_bench(d, "--tls", "--cacert", path("otherca.pem"), "-c", "3",
                                "-n", "10", expect_rc=2)
        self.assertEqual(doc["errors_by_code"].get("TLS"), 3, doc)
        self.assertEqual((doc["ok"], doc["bytes_sent"]), (0, 0), doc)
        self.assertIn("certificate", r.stderr)
        self.assertEqual(r.stderr.count("TLS handshake"), 1, r.stderr)
        # a file that is not a certificate: a usage error naming it
        r = self.bench("--cacert", path("garbage.pem"), "-n", "1", port=d.port("tls"))
        self.assertEqual(r.returncode, 2, repr(r))
        self.assertIn("garbage.pem", r.stderr)
        r = self.bench("--tls", "--cert", path("client.pem"), "-n", "1", port=d.port("tls"))
        self.assertEqual(r.returncode, 2, repr(r))
        self.assertIn("--key", r.stderr)
        # a listener that accepts and never answers: the stalled handshake
        # is given up after --timeout and counted as TLS
        mute = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(mute.close)
        mute.bind((HOST, 0))
        mute.listen(8)
        r, doc = self.bench_json("--cacert", path("ca.pem"), "--timeout", "0.3", "-c", "2",
                                 "-n", "4", port=mute.getsockname()[1], expect_rc=2)
        self.assertEqual(doc["errors_by_code"].get("TLS"), 2, doc)
        # the daemon is unharmed
        _, doc = self.tls_bench(d, "--cacert", path("ca.pem"), "-c", "2", "-n", "100")
        self.assertEqual((doc["ok"], doc["errors"]), (100, 0), doc)


class TestProxyBeforeTls(TlsTestBase):
    """A PROXY header comes before the TLS handshake (HAProxy send-proxy-v2
    in front of a TLS listener): the handshake and the protocol then run as
    usual, and the header's address is the peer."""

    def test_header_then_handshake(self):
        import test_admin
        cfg = dict(TLS_CONFIG)
        cfg["msg"] = dict(cfg.get("msg", {}), proxy_protocol="on")
        cfg["admin"] = {"listen": "127.0.0.1:0"}
        d = self.start_daemon(cfg)
        raw = socket.create_connection((HOST, d.port("tls")), timeout())
        raw.sendall(b"PROXY TCP4 192.0.2.77 127.0.0.1 4242 7700\r\n")
        c = mp.Client.over(client_context().wrap_socket(raw, server_hostname="localhost"),
                           timeout())
        self.addCleanup(c.close)
        self.assertEqual(c.sock.selected_alpn_protocol(), "msgp/1")
        self.assert_ping(c)
        a = test_admin.AdminClient(self.connect("admin", daemon=d).sock)
        self.assertIn("peer=192.0.2.77:4242", "\n".join(a.call("conns")))


class TestCheckConfig(unittest.TestCase):
    def check(self, tls):
        cfg = path("check.ini")
        with open(cfg, "w") as f:
            f.write("[msg]\nlisten = 127.0.0.1:0\ntls_listen = 127.0.0.1:0\n[admin]\nlisten =\n"
                    "[tls]\n" + "".join("%s = %s\n" % kv for kv in tls.items()))
        return check_config(cfg)

    def test_good(self):
        rc, err = self.check({"cert": path("server.pem"), "key": path("server.key"),
                              "ca": path("ca.pem"), "min_version": "1.3"})
        self.assertEqual(rc, 0, err)

    def test_bad_files_are_named(self):
        cases = [
            ({"cert": path("garbage.pem"), "key": path("server.key")}, "cert", "garbage.pem"),
            ({"cert": path("nothere.pem"), "key": path("server.key")}, "cert", "nothere.pem"),
            ({"cert": path("server.pem"), "key": path("garbage.pem")}, "key", "garbage.pem"),
            ({"cert": path("server.pem"), "key": path("server2.key")}, "key", "server2.key"),
            ({"cert": path("server.pem"), "key": path("server.key"), "ca": path("garbage.pem")},
             "ca", "garbage.pem"),
        ]
        for tls, key, name in cases:
            rc, err = self.check(tls)
            self.assertEqual(rc, 1, "%s: %s" % (tls, err))
            self.assertIn("[tls] %s " % key, err)
            self.assertIn(name, err)

    def test_keys_checked(self):
        rc, err = self.check({"cert": path("server.pem"), "key": path("server.key"),
                              "min_version": "1.1"})
        self.assertEqual(rc, 1)
        self.assertIn("min_version", err)
        rc, err = self.check({"cert": path("server.pem")})
        self.assertEqual(rc, 1)
        self.assertIn("tls_listen needs [tls] cert and key", err)


class TestHandshakeBound(TlsTestBase):
    def test_handshake_and_proxy_header_bounded_with_idle_timeout_off(self):
        """idle_timeout = 0 (the default config's): a handshake that stalls
        still ends, at the fixed bound (tls.h TLS_HANDSHAKE_S, 10 s), counted
        as tls_failed.timeout; so does a PROXY header that stops halfway on a
        plain listener (proxy.h PROXY_HEADER_S, 10 s), counted as
        closed_by_limit.proxy_header. Both wait at once, so the test waits
        10 s, not 20. A connection whose handshake was done stays."""
        d = self.start_daemon(dict(TLS_CONFIG, echo={"proxy_protocol": "on"},
                                   timeouts={"heartbeat_interval": 0, "idle_timeout": 0}))
        done = self.tls(d)
        self.assert_ping(done)
        base = self.counters(d)
        hello = client_hello()
        half_hello = socket.create_connection((HOST, d.port("tls")), timeout=timeout())
        self.addCleanup(half_hello.close)
        half_header = socket.create_connection((HOST, d.port("echo")), timeout=timeout())
        self.addCleanup(half_header.close)
        t0 = time.monotonic()
        half_hello.sendall(hello[:len(hello) // 2])
        half_header.sendall(b"PROXY TCP4 192.0.2.1 ")
        for s, what in ((half_hello, "handshake"), (half_header, "PROXY header")):
            self.assertEqual(read_to_end(s, 10 + timeout(2), resets_ok=True), b"", what)
            self.assertGreater(time.monotonic() - t0, 9, "%s: closed before the bound" % what)
        now = self.counters(d)
        self.assertEqual(now["tls_failed.timeout"], base["tls_failed.timeout"] + 1)
        self.assertEqual(now["closed_by_limit.proxy_header"],
                         base["closed_by_limit.proxy_header"] + 1)
        self.assert_ping(done, b"past the bound")


class TestBadInput(TlsTestBase):
    def test_plaintext_half_handshakes_and_churn(self):
        d = self.start_daemon(dict(TLS_CONFIG, timeouts={"heartbeat_interval": 0,
                                                         "idle_timeout": "1s"}))
        port = d.port("tls")
        bystander = self.tls(d)
        self.assert_ping(bystander)  # the server's side of its handshake is done too
        base = self.counters(d)
        # Input that is not TLS at all: a plaintext msg frame, one followed by
        # more than the server reads, an HTTP request. Each gets a fatal
        # protocol_version alert record, then the end of the stream (not a
        # reset that could destroy the alert), and is counted.
        inputs = [mp.encode(mp.PING, b"plain"),
                  mp.encode(mp.PING, b"plain") + mp.encode(mp.ECHO, b"x" * 60000) * 4,
                  b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"]
        for data in inputs:
            with socket.create_connection((HOST, port), timeout=timeout()) as s:
                s.sendall(data)
                self.assertEqual(read_to_end(s), ALERT_PROTOCOL_VERSION, data[:20])
        self.wait_counter(d, "tls_failed.protocol", base["tls_failed.protocol"] + len(inputs),
                          bystander)
        # A TLS record that is not a ClientHello: OpenSSL's own alert
        # (unexpected_message), not a second one.
        with socket.create_connection((HOST, port), timeout=timeout()) as s:
            s.sendall(b"\x16\x03\x01\x00\x05hello")
            self.assertEqual(read_to_end(s), b"\x15\x03\x03\x00\x02\x02\x0a")
        # Handshakes that stop halfway: half a ClientHello, and a whole one
        # whose sender then never answers. Both end at idle_timeout.
        hello = client_hello()
        stalled = []
        for part in (hello[:len(hello) // 2], hello):
            s = socket.create_connection((HOST, port), timeout=timeout())
            self.addCleanup(s.close)
            s.sendall(part)
            stalled.append(s)
        self.wait_counter(d, "tls_failed.timeout", base["tls_failed.timeout"] + 2, bystander)
        for s in stalled:
            read_to_end(s, resets_ok=True)
        self.assert_ping(bystander, b"after the stalls")
        # 1,000 handshakes opened and dropped, some before a byte, some after
        # the ClientHello, some with a reset.
        n = 1000
        deadline = time.monotonic() + timeout(6)
        for i in range(n):
            self.assertLess(time.monotonic(), deadline, "opening %d connections" % n)
            s = socket.create_connection((HOST, port), timeout=timeout())
            if i % 3:
                s.sendall(hello)
            if i % 3 == 2:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
            if i % 100 == 0:
                self.assert_ping(bystander, b"%d" % i)
        self.wait_counter(d, "tls_failed.aborted", base["tls_failed.aborted"] + n, bystander)
        with d.client() as c:
            self.wait_connections(c, base["connections_current"], "after the churn")
        after = self.counters(d)
        self.assertEqual(after["tls_failed.aborted"], base["tls_failed.aborted"] + n)
        self.assertEqual(after["tls_handshakes"], base["tls_handshakes"])
        self.assert_ping(bystander, b"after the churn")
        self.assert_ping(self.tls(d), b"a new one")


if __name__ == "__main__":
    unittest.main()
