"""The http listener (PROTOCOL.md "The other protocols on the same daemon"):
GET/HEAD /metrics, /healthz, /readyz over HTTP/1.1 keep-alive; 400, 404,
405, 413, 431, 505; /readyz 503 through a drain while the listener keeps
serving; the exposition checked by promtool, and scraped by a real
Prometheus where one is installed."""
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

import msgproto as mp
from harness import HOST, MsgdTestCase, poll_pause, timeout, wait_until
from test_admin import AdminClient, parse_prometheus

HTTP_CONFIG = {"http": {"listen": "127.0.0.1:0"}}


class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def header(self, name):
        return self.headers.get(name.lower())

    def __repr__(self):
        return "Response(%d, %r, %r)" % (self.status, self.headers, self.body[:80])


class HttpConn:
    """A raw HTTP/1.1 client over one socket: it sends bytes as given and
    reads responses strictly (status line, fields, Content-Length body)."""

    def __init__(self, port, wait=None):
        self.sock = socket.create_connection((HOST, port), timeout=wait or timeout())
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline, what):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("timed out waiting for %s; have %r" % (what, self.buf[:200]))
        self.sock.settimeout(left)
        data = self.sock.recv(65536)
        if not data:
            raise mp.ConnectionClosed("EOF while waiting for %s; have %r" % (what, self.buf[:200]))
        self.buf += data

    def response(self, head_only=False, wait=None):
        """The next response; head_only: it answers a HEAD (no body follows)."""
        deadline = time.monotonic() + (wait or timeout())
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline, "a response head")
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        version, status, _ = lines[0].split(" ", 2)
        assert version == "HTTP/1.1", lines[0]
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            assert sep and name == name.strip(), "bad field line %r" % line
            assert name.lower() not in headers, "field %s twice" % name
            headers[name.lower()] = value.strip()
        length = int(headers["content-length"])
        if head_only:
            length = 0
        while len(self.buf) < length:
            self._fill(deadline, "a body of %d bytes" % length)
        body, self.buf = self.buf[:length], self.buf[length:]
        return Response(int(status), headers, body)

    def request(self, method, path, fields=(), version="HTTP/1.1"):
        lines = ["%s %s %s" % (method, path, version)]
        if version == "HTTP/1.1":
            lines.append("Host: msgd")
        lines += list(fields)
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode())
        return self.response(head_only=method == "HEAD")

    def expect_eof(self, wait=None):
        deadline = time.monotonic() + (wait or timeout())
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("the connection stayed open")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return
            if not data:
                return
            self.buf += data
            raise AssertionError("bytes after the last response: %r" % self.buf[:200])


def get(port, path, method="GET"):
    """One request on a fresh connection."""
    c = HttpConn(port)
    try:
        return c.request(method, path, ["Connection: close"])
    finally:
        c.close()


def require_promtool():
    path = shutil.which("promtool")
    if not path:
        raise AssertionError("promtool is not installed (Debian package prometheus; "
                             "scripts/deps.sh installs it)")
    return path


class HttpTestCase(MsgdTestCase):
    config = HTTP_CONFIG

    def http(self, daemon=None):
        c = HttpConn((daemon or self.daemon).port("http"))
        self.addCleanup(c.close)
        return c


class HttpTests(HttpTestCase):
    config = dict(HTTP_CONFIG, admin={"listen": "127.0.0.1:0"})

    def test_status_names_the_http_listener(self):
        self.assertEqual(len(self.daemon.addrs("http")), 1, self.daemon.status_line)

    def test_keep_alive_several_requests(self):
        c = self.http()
        for path, want in (("/healthz", b"ok\n"), ("/readyz", b"ready\n"), ("/healthz", b"ok\n")):
            r = c.request("GET", path)
            self.assertEqual((r.status, r.body), (200, want), r)
            self.assertIsNone(r.header("connection"), r)
            self.assertTrue(r.header("content-type").startswith("text/plain"), r)
            self.assertIn("date", r.headers)
        r = c.request("GET", "/metrics")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("content-type"), "text/plain; version=0.0.4; charset=utf-8")
        self.assertIn(b"msgd_build_info{version=", r.body)

    def test_pipelined_requests_are_answered_in_order(self):
        c = self.http()
        paths = ["/healthz", "/nope", "/readyz", "/metrics", "/healthz?x=1", "/readyz"]
        methods = ["GET", "GET", "GET", "HEAD", "GET", "POST"]
        c.send(b"".join(("%s %s HTTP/1.1\r\nHost: m\r\n\r\n" % (m, p)).encode()
                        for m, p in zip(methods, paths)))
        got = [c.response(head_only=m == "HEAD").status for m in methods]
        self.assertEqual(got, [200, 404, 200, 200, 200, 405])
        self.assertEqual(c.request("GET", "/healthz").status, 200)

    def test_a_request_split_byte_by_byte(self):
        c = self.http()
        req = b"GET /healthz HTTP/1.1\r\nHost: m\r\nUser-Agent: bytewise\r\n\r\n"
        for i in range(len(req) - 1):
            c.send(req[i:i + 1])
        r, _, _ = select.select([c.sock], [], [], 0)
        self.assertEqual(r, [], "an answer before the head was whole")
        c.send(req[-1:])
        r = c.response()
        self.assertEqual((r.status, r.body), (200, b"ok\n"))
        self.assertEqual(c.request("GET", "/readyz").status, 200)

    def test_lf_only_lines_and_an_empty_line_before_a_request(self):
        c = self.http()
        c.send(b"\r\nGET /healthz HTTP/1.1\nHost: m\n\n")
        self.assertEqual(c.response().status, 200)

    def test_head(self):
        c = self.http()
        for path in ("/metrics", "/healthz", "/readyz"):
            r = c.request("HEAD", path)
            self.assertEqual(r.status, 200, path)
            self.assertGreater(int(r.header("content-length")), 0, path)
        r = c.request("GET", "/healthz")  # no body was left over from the HEADs
        self.assertEqual((r.status, r.body), (200, b"ok\n"))

    def test_404_and_405_keep_the_connection(self):
        c = self.http()
        r = c.request("GET", "/")
        self.assertEqual(r.status, 404)
        for method in ("POST", "PUT", "DELETE", "OPTIONS"):
            r = c.request(method, "/metrics", ["Content-Length: 0"])
            self.assertEqual(r.status, 405, method)
            self.assertEqual(r.header("allow"), "GET, HEAD")
        self.assertEqual(c.request("GET", "/healthz").status, 200)

    def assert_refused(self, raw, status):
        c = self.http()
        c.send(raw)
        r = c.response()
        self.assertEqual(r.status, status, raw[:100])
        self.assertEqual(r.header("connection"), "close", r)
        c.expect_eof()

    def test_malformed_requests_get_400_and_a_close(self):
        for raw in (b"GET /healthz\r\n\r\n",                           # no version
                    b"GET  /healthz HTTP/1.1\r\nHost: m\r\n\r\n",      # two spaces
                    b"GET healthz HTTP/1.1\r\nHost: m\r\n\r\n",        # not a path
                    b"GET /healthz HTTP/1.1\r\n\r\n",                  # HTTP/1.1 without Host
                    b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                    b"GET /healthz HTTP/1.1\r\nHost m\r\n\r\n",        # no colon
                    b"GET /healthz HTTP/1.1\r\nHost : m\r\n\r\n",      # space before colon
                    b"GET /healthz HTTP/1.1\r\nHost: m\r\n folded\r\n\r\n",
                    b"GET /healthz HTTP/1.1\r\nHost: m\x00\r\n\r\n",
                    b"GET /healthz HTTP/1.1\r\nHost: m\r\nContent-Length: x\r\n\r\n",
                    b"G\x01T /healthz HTTP/1.1\r\nHost: m\r\n\r\n",
                    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n"):  # a TLS hello
            with self.subTest(raw=raw):
                self.assert_refused(raw, 400)

    def test_a_version_other_than_1_gets_505(self):
        self.assert_refused(b"GET /healthz HTTP/2.0\r\nHost: m\r\n\r\n", 505)

    def test_a_body_gets_413_and_a_close(self):
        for fields in (b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n",
                       b"Content-Length: 00000000000000000000000000000001\r\n"):
            with self.subTest(fields=fields):
                self.assert_refused(b"POST /metrics HTTP/1.1\r\nHost: m\r\n" + fields +
                                    b"\r\nhello", 413)
        c = self.http()
        self.assertEqual(c.request("GET", "/healthz", ["Content-Length: 0"]).status, 200)

    def test_a_head_over_8k_gets_431_and_a_close(self):
        # a head that never ends, and a whole head that is too long
        self.assert_refused(b"GET /healthz HTTP/1.1\r\nHost: m\r\nX-Pad: " + b"a" * 9000, 431)
        self.assert_refused(b"GET /healthz HTTP/1.1\r\nHost: m\r\n" +
                            b"X-Pad: " + b"b" * 8200 + b"\r\n\r\n", 431)
        # just under the cap is fine
        c = self.http()
        pad = 8192 - len(b"GET /healthz HTTP/1.1\r\nHost: m\r\nX-Pad: \r\n\r\n")
        c.send(b"GET /healthz HTTP/1.1\r\nHost: m\r\nX-Pad: " + b"c" * pad + b"\r\n\r\n")
        self.assertEqual(c.response().status, 200)

    def test_connection_close_is_honoured(self):
        c = self.http()
        r = c.request("GET", "/healthz", ["Connection: close"])
        self.assertEqual((r.status, r.header("connection")), (200, "close"))
        c.expect_eof()

    def test_http_1_0_closes_unless_asked_to_keep_alive(self):
        c = self.http()
        r = c.request("GET", "/healthz", version="HTTP/1.0")
        self.assertEqual((r.status, r.header("connection")), (200, "close"))
        c.expect_eof()
        c = self.http()
        for _ in range(2):
            r = c.request("GET", "/readyz", ["Connection: keep-alive"], version="HTTP/1.0")
            self.assertEqual((r.status, r.header("connection")), (200, "keep-alive"))

    def test_metrics_pass_promtool_without_lint_warnings(self):
        promtool = require_promtool()
        c = self.connect()
        for i in range(5):
            c.call(mp.PING, b"p")
        body = self.http().request("GET", "/metrics").body
        p = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                           timeout=timeout(4))
        self.assertEqual((p.returncode, p.stdout + p.stderr), (0, b""),
                         "promtool check metrics:\n%s" % (p.stdout + p.stderr).decode())

    def test_metrics_content(self):
        c = self.connect()
        for i in range(5):
            c.call(mp.PING, b"p")
        self.assert_error(c.call(0x777, b""), 0x777, mp.UNKNOWN_COMMAND)
        samples = parse_prometheus(self.http().request("GET", "/metrics").body.decode().split("\n"))
        self.assertEqual(samples["msgd_build_info"][0][1], 1.0)
        self.assertTrue(samples["msgd_build_info"][0][0]["version"])
        for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                     "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                     "process_start_time_seconds"):
            self.assertIn(name, samples)
            least = 0 if name == "process_cpu_seconds_total" else 1  # CPU: 10 ms ticks
            self.assertGreaterEqual(samples[name][0][1], least, name)
        start = samples["process_start_time_seconds"][0][1]
        self.assertLess(abs(start - time.time()), 3600, "start time %r" % start)
        self.assertAlmostEqual(samples["process_open_fds"][0][1], self.daemon.fd_count(), delta=8)
        counts = {l["command"]: v for l, v in samples["msgd_request_duration_seconds_count"]}
        self.assertGreaterEqual(counts["PING"], 5)
        self.assertNotIn("msgd_request_duration_quantile_seconds", samples)
        errors = {l["code"]: v for l, v in samples["msgd_errors_total"]}
        self.assertGreaterEqual(errors["UNKNOWN_COMMAND"], 1)

    def test_admin_metrics_is_the_same_exposition(self):
        a = AdminClient(self.connect("admin").sock)
        admin = {n for n in parse_prometheus(a.call("metrics"))}
        http = set(parse_prometheus(self.http().request("GET", "/metrics").body.decode()
                                    .split("\n")))
        self.assertEqual(admin, http)

    def test_http_connections_are_not_counted(self):
        # The request's own connection is open while the page is made: were
        # it counted, live would never read 0. (Polled: msg connections of
        # earlier tests on this shared daemon may still be closing.)
        def live():
            page = self.http().request("GET", "/metrics").body.decode().split("\n")
            return parse_prometheus(page)["msgd_connections_live"][0][1]
        wait_until(lambda: live() == 0, timeout(1), "msgd_connections_live == 0 over HTTP")


class HttpLimitTests(HttpTestCase):
    shared_daemon = False

    def test_http_is_served_at_max_connections(self):
        d = self.start_daemon(dict(HTTP_CONFIG, server={"reactors": 2, "workers": 1,
                                                        "max_connections": 1}))
        self.connect(daemon=d).call(mp.PING, b"x")
        self.assertEqual(self.http(d).request("GET", "/healthz").status, 200)


class HttpDrainTests(HttpTestCase):
    shared_daemon = False
    DRAIN = {"timeouts": {"heartbeat_interval": 0, "idle_timeout": 0, "drain_timeout": "60s"},
             "diagnostics": {"delay_command": "on"}}

    def worker_jobs(self, h):
        s = parse_prometheus(h.request("GET", "/metrics").body.decode().split("\n"))
        return sum(v for _, v in s["msgd_worker_jobs_total"])

    def test_readyz_is_503_during_a_drain_and_healthz_200(self):
        d = self.start_daemon(dict(HTTP_CONFIG, **self.DRAIN))
        h = self.http(d)
        self.assertEqual(h.request("GET", "/readyz").status, 200)
        # A msg client with a slow request in flight holds the drain open.
        c = self.connect(daemon=d)
        c.send_frame(mp.DELAY, mp.u32(60000) + b"slow")
        wait_until(lambda: self.worker_jobs(h) >= 1, what="the DELAY job queued")
        d.send_signal(signal.SIGTERM)
        wait_until(lambda: h.request("GET", "/readyz").status == 503, what="/readyz 503")
        r = h.request("GET", "/readyz")
        self.assertEqual((r.status, r.body), (503, b"draining\n"))
        self.assertEqual(h.request("GET", "/healthz").status, 200)
        self.assertEqual(h.request("HEAD", "/readyz").status, 503)
        # the listener still accepts; every reactor drains
        for _ in range(4):
            fresh = self.http(d)
            self.assertEqual(fresh.request("GET", "/healthz").status, 200)
            wait_until(lambda: fresh.request("GET", "/readyz").status == 503,
                       what="/readyz 503 on a new connection")
        self.assertEqual(h.request("GET", "/metrics").status, 200)
        self.assertTrue(d.alive())
        os.kill(d.pid, signal.SIGTERM)  # the second stop signal ends the drain at once
        self.assertEqual(d.wait_exit(timeout(2)), 0, d.log_tail())

    def test_http_connections_do_not_hold_the_drain(self):
        d = self.start_daemon(dict(HTTP_CONFIG, **self.DRAIN))
        h = self.http(d)
        self.assertEqual(h.request("GET", "/healthz").status, 200)
        t0 = time.monotonic()
        d.send_signal(signal.SIGTERM)
        self.assertEqual(d.wait_exit(timeout(2)), 0, d.log_tail())
        self.assertLess(time.monotonic() - t0, 30, "the drain waited for the http connection")
        h.expect_eof()


def free_port():
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


class RealPrometheusTests(HttpTestCase):
    """A real Prometheus on loopback scrapes msgd every second; a counter
    bumped here shows up through Prometheus's own query API."""

    def setUp(self):
        super().setUp()
        self.prometheus = shutil.which("prometheus")
        if not self.prometheus:
            self.skipTest("prometheus is not installed (Debian package prometheus)")

    def start_prometheus(self, target):
        tmp = tempfile.mkdtemp(prefix="msgd-it-prom-")
        self.addCleanup(shutil.rmtree, tmp, True)
        conf = os.path.join(tmp, "prometheus.yml")
        with open(conf, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: msgd\n    static_configs:\n"
                    "      - targets: ['%s']\n" % target)
        for attempt in range(5):
            port = free_port()
            log = open(os.path.join(tmp, "prometheus-%d.log" % attempt), "wb")
            self.addCleanup(log.close)
            proc = subprocess.Popen(
                [self.prometheus, "--config.file=" + conf,
                 "--storage.tsdb.path=" + os.path.join(tmp, "data-%d" % attempt),
                 "--web.listen-address=%s:%d" % (HOST, port), "--log.level=warn"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=tmp)
            self.addCleanup(self.stop_prometheus, proc)
            base = "http://%s:%d" % (HOST, port)
            if self.wait_prometheus_ready(proc, base):
                return base
            with open(log.name, "rb") as f:
                text = f.read().decode("utf-8", "replace")
            if "address already in use" not in text:
                self.fail("prometheus did not start:\n%s" % text[-2000:])
        self.fail("prometheus found no free port in 5 attempts")

    def wait_prometheus_ready(self, proc, base):
        """True once /-/ready answers 200; False when it exited (a port taken)."""
        deadline = time.monotonic() + timeout(6)
        i = 0
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(base + "/-/ready", timeout=timeout(1)) as r:
                    if r.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            poll_pause(i)
            i += 1
        self.fail("prometheus was not ready within %.0fs" % timeout(6))

    @staticmethod
    def stop_prometheus(proc):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # by its PID
            try:
                proc.wait(timeout=timeout(4))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def query(self, base, q):
        url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": q})
        with urllib.request.urlopen(url, timeout=timeout(1)) as r:
            doc = json.load(r)
        self.assertEqual(doc["status"], "success", doc)
        return doc["data"]["result"]

    def test_prometheus_scrapes_a_bumped_counter(self):
        c = self.connect()
        for _ in range(3):
            self.assert_error(c.call(0x778, b""), 0x778, mp.UNKNOWN_COMMAND)
        base = self.start_prometheus("%s:%d" % (HOST, self.daemon.port("http")))
        q = 'sum(msgd_errors_total{job="msgd",code="UNKNOWN_COMMAND"})'
        last = {}

        def arrived():
            last["r"] = self.query(base, q)
            return last["r"] and float(last["r"][0]["value"][1]) >= 3
        try:
            wait_until(arrived, timeout(6), "Prometheus to have scraped the counter")
        except AssertionError as e:
            with urllib.request.urlopen(base + "/api/v1/targets", timeout=timeout(1)) as r:
                targets = r.read().decode()
            raise AssertionError("%s; last result %r; targets %s" % (e, last.get("r"), targets))
        up = self.query(base, 'up{job="msgd"}')
        self.assertEqual(up[0]["value"][1], "1", up)


if __name__ == "__main__":
    unittest.main()
