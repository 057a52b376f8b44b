"""The admin listener (PROTOCOL.md "Other protocols": help, stats, conns,
reload, metrics, quit; lines up to 1 KiB; answers end with END)."""
import os
import re
import socket
import stat
import tempfile
import time
import unittest

import msgproto as mp
from harness import Daemon, MsgdTestCase, merge_config, timeout


class AdminClient:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def send(self, line):
        self.sock.sendall(line if isinstance(line, bytes) else line.encode() + b"\n")

    def answer(self, wait=None):
        """Lines up to and including END."""
        deadline = time.monotonic() + (wait or timeout(1))
        while b"END\n" not in self.buf.split(b"\n", 0)[0] and not self._has_end():
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError("EOF before END; got %r" % self.buf[-200:])
            self.buf += data
        text, _, self.buf = self.buf.partition(b"END\n")
        return text.decode().splitlines()

    def _has_end(self):
        return self.buf.startswith(b"END\n") or b"\nEND\n" in self.buf

    def call(self, line):
        self.send(line)
        return self.answer()


METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(lines):
    """A strict reader of the Prometheus text format 0.0.4: every sample has a
    TYPE declared before it, names and labels are well-formed, values parse,
    histogram buckets are cumulative and end with +Inf equal to _count.
    Returns {name: [(labels, value)]}."""
    types, samples = {}, {}
    for line in lines:
        if not line:
            continue
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name not in types, "TYPE twice for " + name
            types[name] = kind
            continue
        assert not line.startswith("#"), "stray comment " + line
        m = METRIC_LINE.match(line)
        assert m, "bad sample line %r" % line
        name, labels_text, value = m.group(1), m.group(3) or "", m.group(4)
        labels = dict(LABEL.findall(labels_text))
        rebuilt = ",".join('%s="%s"' % kv for kv in LABEL.findall(labels_text))
        assert rebuilt == labels_text, "bad labels in %r" % line
        v = float(value)  # +Inf, NaN and numbers
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or base in types, "sample before its TYPE: %r" % line
        if types.get(name) == "counter" or types.get(base) == "counter":
            assert v >= 0
        samples.setdefault(name, []).append((labels, v))
    for name, kind in types.items():
        if kind != "histogram":
            continue
        series = {}
        for labels, v in samples.get(name + "_bucket", []):
            key = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
            series.setdefault(key, []).append((float(labels["le"]), v))
        counts = {tuple(sorted(l.items())): v for l, v in samples.get(name + "_count", [])}
        for key, buckets in series.items():
            les = [le for le, _ in buckets]
            assert les == sorted(les) and les[-1] == float("inf"), (name, key, les)
            vals = [v for _, v in buckets]
            assert vals == sorted(vals), "buckets not cumulative for %s %s" % (name, key)
            assert counts[key] == vals[-1], "+Inf bucket != _count for %s %s" % (name, key)
    return samples


class AdminTests(MsgdTestCase):
    config = {"admin": {"listen": "127.0.0.1:0"}, "diagnostics": {"delay_command": "on"}}

    def admin(self):
        a = self.connect("admin")
        return AdminClient(a.sock)

    def test_help_lists_every_command(self):
        text = "\n".join(self.admin().call("help"))
        for cmd in ("help", "stats", "conns", "reload", "metrics", "quit"):
            self.assertIn(cmd, text)

    def test_stats_matches_the_msg_command(self):
        lines = self.admin().call("stats")
        admin_names = {l.split(" ")[0] for l in lines if not l.startswith("latency.")}
        msg_names = {n for n in self.stats(self.connect()) if not n.startswith("latency.")}
        self.assertEqual(admin_names, msg_names)

    def test_conns_lists_every_connection(self):
        clients = [self.connect() for _ in range(3)]
        for c in clients:
            self.assert_frame(c.call(mp.ECHO, b"abc"), mp.REPLY | mp.ECHO, b"abc")
        a = self.admin()
        lines = a.call("conns")
        msg_lines = [l for l in lines if "proto=msg" in l]
        self.assertGreaterEqual(len(msg_lines), 3, lines)
        self.assertTrue(any("proto=admin" in l for l in lines), lines)
        for l in lines:
            for field in ("peer=", "proto=", "reactor=", "age=", "idle=", "in=", "out=", "pending="):
                self.assertIn(field, l)
        ports = {c.sock.getsockname()[1] for c in clients}
        listed = {int(m) for m in re.findall(r"peer=127\.0\.0\.1:(\d+)", "\n".join(lines))}
        self.assertTrue(ports <= listed, (ports, listed))
        self.assertTrue(any("in=19 out=19" in l for l in msg_lines), msg_lines)  # one ECHO "abc"

    def test_conns_answer_keeps_its_order(self):
        a = self.admin()
        a.send(b"conns\nhelp\n")
        first = a.answer()
        second = a.answer()
        self.assertTrue(any("proto=admin" in l for l in first), first)
        self.assertTrue(any(l.startswith("help") for l in second), second)

    def test_metrics_is_valid_prometheus_text(self):
        c = self.connect()
        for i in range(20):
            self.assert_frame(c.call(mp.ECHO, b"m%d" % i), mp.REPLY | mp.ECHO, b"m%d" % i)
        self.assertEqual(c.call(mp.DELAY, b"\x00\x00\x00\x05d")[0], mp.REPLY | mp.DELAY)
        samples = parse_prometheus(self.admin().call("metrics"))
        self.assertIn("msgd_connections_current", samples)
        self.assertIn("msgd_frames_in_total", samples)
        errors = {l["code"] for l, _ in samples["msgd_errors_total"]}
        self.assertIn("UNKNOWN_COMMAND", errors)
        counts = {l["command"]: v for l, v in samples["msgd_request_duration_seconds_count"]}
        self.assertGreaterEqual(counts["ECHO"], 20)
        self.assertGreaterEqual(counts["DELAY"], 1)
        sums = {l["command"]: v for l, v in samples["msgd_request_duration_seconds_sum"]}
        self.assertGreaterEqual(sums["DELAY"], 0.0049 * counts["DELAY"])  # each DELAY 5 ms
        fast = {l["command"]: v for l, v in samples["msgd_request_duration_seconds_bucket"]
                if float(l["le"]) < 0.004}
        self.assertEqual(fast["DELAY"], 0)  # no DELAY 5 ms in a bucket below 4 ms
        self.assertNotIn("msgd_request_duration_quantile_seconds", samples)  # histograms only

    def test_stats_has_latency_percentiles(self):
        c = self.connect()
        for i in range(10):
            c.call(mp.PING, b"p")
        s = self.stats(c)
        for k in ("latency.PING.count", "latency.PING.p50_us", "latency.PING.p99_us",
                  "latency.PING.p999_us"):
            self.assertIn(k, s)
        self.assertGreaterEqual(s["latency.PING.count"], 10)

    def test_unknown_line_and_quit(self):
        a = self.admin()
        self.assertEqual(a.call("bogus"), ["ERR unknown command (try help)"])
        a.send("quit")
        self.assertEqual(a.answer(), [])
        a.sock.settimeout(timeout(1))
        self.assertEqual(a.sock.recv(16), b"")

    def test_long_line_is_refused_and_closed(self):
        a = self.admin()
        a.send(b"x" * 1100)
        lines = a.answer()
        self.assertEqual(len(lines), 1)
        self.assertTrue(lines[0].startswith("ERR "), lines)
        a.sock.settimeout(timeout(1))
        self.assertEqual(a.sock.recv(16), b"")


class AdminReloadTests(MsgdTestCase):
    shared_daemon = False

    def test_reload_answers_whether_it_took(self):
        d = self.start_daemon({"admin": {"listen": "127.0.0.1:0"}})
        a = AdminClient(self.connect("admin", daemon=d).sock)
        c = self.connect(daemon=d)
        self.assert_error(c.call(mp.DELAY, b"\x00\x00\x00\x00"), mp.DELAY, mp.DISABLED)
        d.config = merge_config(d.config, {"diagnostics": {"delay_command": "on"}})
        d.write_config()
        self.assertEqual(a.call("reload"), ["OK reloaded"])
        self.assert_frame(c.call(mp.DELAY, b"\x00\x00\x00\x00on"), mp.REPLY | mp.DELAY, b"on")
        with open(d.config_path, "a") as f:
            f.write("[bogus]\n")
        lines = a.call("reload")
        self.assertEqual(len(lines), 1)
        self.assertTrue(lines[0].startswith("ERR reload failed: "), lines)
        self.assertIn("unknown section", lines[0])
        self.assert_frame(c.call(mp.DELAY, b"\x00\x00\x00\x00on"), mp.REPLY | mp.DELAY, b"on")


class AdminUnixSocketTests(MsgdTestCase):
    shared_daemon = False

    def test_unix_listener_mode_0660(self):
        tmp = tempfile.mkdtemp(prefix="msgd-it-adm-")
        path = os.path.join(tmp, "admin.sock")
        d = self.start_daemon({"admin": {"listen": "unix:" + path}})
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o660)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout(1))
        s.connect(path)
        self.addCleanup(s.close)
        a = AdminClient(s)
        self.assertTrue(any(l.startswith("uptime_seconds") for l in a.call("stats")))
        self.assertIn("unix:" + path, d.status_line)

    def test_a_live_unix_socket_is_not_taken_over(self):
        """A second msgd on the same unix path fails to start (as TCP does
        with EADDRINUSE) and the first stays reachable; a stale socket file
        (nothing listening) is replaced."""
        tmp = tempfile.mkdtemp(prefix="msgd-it-adm-")
        path = os.path.join(tmp, "admin.sock")
        first = self.start_daemon({"admin": {"listen": "unix:" + path}}, name="first")
        second = Daemon({"admin": {"listen": "unix:" + path}, "msg": {"listen": "127.0.0.1:0"}},
                        name="second")
        second.expected_exit = True
        second.spawn()
        rc = second.wait_exit(timeout(2))
        log = second.read_log()
        self.assertEqual(second.finish(expect_rc=1), [], log)
        self.assertEqual(rc, 1, log)
        self.assertIn("another process listens on it", log)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout(1))
        s.connect(path)
        self.addCleanup(s.close)
        self.assertTrue(any(l.startswith("uptime_seconds") for l in AdminClient(s).call("stats")))
        # A stale file: a socket bound and closed, nobody listening.
        stale = os.path.join(tmp, "stale.sock")
        t = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        t.bind(stale)
        t.close()
        third = self.start_daemon({"admin": {"listen": "unix:" + stale}}, name="third")
        self.assertIn("unix:" + stale, third.status_line)
        self.assertTrue(first.alive())


if __name__ == "__main__":
    unittest.main()
