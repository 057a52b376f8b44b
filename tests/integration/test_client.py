"""The client tools: msgcli and msgbench (CONFIG.md) against the real daemon,
and against tiny fake servers written here for what the daemon never does
(corrupt an echo, close mid-run, push a MESSAGE or a malformed DELIVER, stay
silent).

The binaries sit beside MSGD_BIN (BUILD/msgcli, BUILD/msgbench)."""

import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import unittest

import harness
import msgproto as mp
from harness import MsgdTestCase, timeout

BIN_DIR = os.path.dirname(harness.MSGD_BIN)
MSGCLI = os.path.join(BIN_DIR, "msgcli")
MSGBENCH = os.path.join(BIN_DIR, "msgbench")

LATENCY_KEYS = ("p50", "p90", "p99", "p99_9", "max")


def free_port():
    """A loopback port with nothing listening on it (bound, noted, closed)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((harness.HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Result:
    def __init__(self, rc, out, err):
        self.returncode, self.stdout, self.stderr = rc, out, err

    def __repr__(self):
        return "rc=%r\nstdout=%r\nstderr=%r" % (self.returncode, self.stdout[-2000:],
                                                 self.stderr[-2000:])


class ToolMixin:
    """Runs msgcli/msgbench to completion with a timeout and checks their
    stderr for sanitizer reports."""

    def run_tool(self, binary, args, wait=None):
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            self.fail("%s not found (build it with make)" % binary)
        try:
            r = subprocess.run([binary] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, errors="replace",
                               timeout=timeout(2) if wait is None else wait)
        except subprocess.TimeoutExpired as e:
            self.fail("%s %s did not finish within %.1fs (stderr %r)"
                      % (os.path.basename(binary), " ".join(map(str, args)), e.timeout,
                         (e.stderr or b"")[-2000:]))
        res = Result(r.returncode, r.stdout, r.stderr)
        self.assertEqual(harness.find_markers(r.stderr), [], repr(res))
        self.assertGreaterEqual(r.returncode, 0, "killed by a signal: %r" % res)
        return res

    def cli(self, *args, port=None, wait=None):
        pre = [] if port is None else ["-p", port]
        return self.run_tool(MSGCLI, pre + list(args), wait)

    def bench(self, *args, port=None, wait=None):
        pre = [] if port is None else ["-p", port]
        return self.run_tool(MSGBENCH, pre + list(args), wait)

    def bench_json(self, *args, port=None, wait=None, expect_rc=0):
        r = self.bench(*(list(args) + ["--json"]), port=port, wait=wait)
        if expect_rc is not None:
            self.assertEqual(r.returncode, expect_rc, repr(r))
        try:
            doc = json.loads(r.stdout)
        except ValueError as e:
            self.fail("--json output is not JSON (%s): %r" % (e, r))
        return r, doc


# --- fake servers ----------------------------------------------------------------


class FakeServer:
    """A loopback TCP server on its own thread. handler(sock, server) serves one
    connection; every socket has a timeout, and stop() closes everything."""

    def __init__(self, handler, connections=1):
        self.handler = handler
        self.connections = connections
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((harness.HOST, 0))
        self.lsock.listen(16)
        self.lsock.settimeout(timeout())
        self.port = self.lsock.getsockname()[1]
        self.errors = []
        self.notes = []
        self.socks = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _serve(self, sock):
        try:
            self.handler(sock, self)
        except (OSError, mp.ConnectionClosed) as e:
            self.notes.append("connection: %r" % (e,))
        except Exception as e:  # reported by stop()
            self.errors.append(e)
        finally:
            sock.close()

    def _run(self):
        threads = []
        for _ in range(self.connections):
            try:
                sock, _ = self.lsock.accept()
            except OSError:
                break
            sock.settimeout(timeout())
            self.socks.append(sock)
            t = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            t.join(timeout(2))

    def stop(self):
        self.lsock.close()
        self.thread.join(timeout(2))
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
        if self.errors:
            raise self.errors[0]


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        if not data:
            raise mp.ConnectionClosed("EOF after %d of %d bytes" % (len(buf), n))
        buf += data
    return bytes(buf)


def read_frame(sock):
    """(cmd, payload) of the next frame, or None on EOF at a frame boundary."""
    first = sock.recv(1)
    if not first:
        return None
    head = first + recv_exact(sock, mp.HEADER_SIZE - 1)
    magic, version, cmd, length = mp.HEADER.unpack(head)
    if magic != mp.MAGIC or version != mp.VERSION:
        raise AssertionError("fake server got a bad header %r" % head)
    return cmd, recv_exact(sock, length)


def corrupting_msg_echo(bad_index):
    """Answers ECHO (and PING) requests; flips one byte of reply bad_index."""
    def handler(sock, server):
        n = 0
        while True:
            f = read_frame(sock)
            if f is None:
                return
            cmd, payload = f
            if cmd in (mp.ECHO, mp.PING):
                if n == bad_index and payload:
                    b = bytearray(payload)
                    b[len(b) // 2] ^= 0x01
                    payload = bytes(b)
                n += 1
            sock.sendall(mp.encode(mp.reply_cmd(cmd), payload))
    return handler


def corrupting_raw_echo(bad_offset):
    """RFC 862 echo that flips the byte at stream offset bad_offset."""
    def handler(sock, server):
        off = 0
        while True:
            data = sock.recv(65536)
            if not data:
                return
            if off <= bad_offset < off + len(data):
                b = bytearray(data)
                b[bad_offset - off] ^= 0x80
                data = bytes(b)
            off += len(data)
            sock.sendall(data)
    return handler


def closing_after(count):
    """Answers count ECHO requests, then closes the connection."""
    def handler(sock, server):
        for _ in range(count):
            f = read_frame(sock)
            if f is None:
                return
            sock.sendall(mp.encode(mp.reply_cmd(f[0]), f[1]))
    return handler


def silent(sock, server):
    """Reads and never answers, until the client goes."""
    while sock.recv(65536):
        pass


def pubsub_fake(sock, server):
    """SUBSCRIBE succeeds; then a server PING (whose answer is checked) and a
    MESSAGE for the topic; then it waits for the client to leave."""
    cmd, topic = read_frame(sock)
    if cmd != mp.SUBSCRIBE:
        raise AssertionError("expected SUBSCRIBE, got %s" % mp.describe(cmd, topic))
    sock.sendall(mp.encode(mp.reply_cmd(mp.SUBSCRIBE)))
    sock.sendall(mp.encode(mp.PING, b"beat"))
    cmd, payload = read_frame(sock)
    if (cmd, payload) != (mp.reply_cmd(mp.PING), b"beat"):
        raise AssertionError("expected the PING reply, got %s" % mp.describe(cmd, payload))
    server.notes.append("pong")
    sock.sendall(mp.encode(mp.MESSAGE, bytes([len(topic)]) + topic + b"hello there"))
    while read_frame(sock) is not None:
        pass


def answer_first_then_silent(first_cmd):
    """The first connection gets its first_cmd (SUBSCRIBE or AUTH) answered,
    then silence: no reply, no FIN, no RST; every later connection is
    silent from the start. Notes "conn" per connection and "ping" for each
    PING the client sends (its heartbeat)."""
    def handler(sock, server):
        first = "conn" not in server.notes
        server.notes.append("conn")
        if first:
            cmd, payload = read_frame(sock)
            if cmd != first_cmd:
                raise AssertionError("expected %d, got %s" % (first_cmd, mp.describe(cmd, payload)))
            sock.sendall(mp.encode(mp.reply_cmd(first_cmd)))
        while True:
            f = read_frame(sock)
            if f is None:
                return
            if f[0] == mp.PING:
                server.notes.append("ping")
    return handler


def deliver_payload(sender, message):
    return bytes([len(sender)]) + sender + message


def deliver_fake(sock, server):
    """AUTH succeeds; then DELIVERs: from alice, from no identity (sender
    length 0), a malformed one (its length byte points past the end), a
    server PING (whose answer is checked), one from bob; then it waits."""
    cmd, token = read_frame(sock)
    if cmd != mp.AUTH:
        raise AssertionError("expected AUTH, got %s" % mp.describe(cmd, token))
    sock.sendall(mp.encode(mp.reply_cmd(mp.AUTH)))
    sock.sendall(mp.encode(mp.DELIVER, deliver_payload(b"alice", b"hi there")))
    sock.sendall(mp.encode(mp.DELIVER, deliver_payload(b"", b"anonymous")))
    sock.sendall(mp.encode(mp.DELIVER, b"\x09short"))
    sock.sendall(mp.encode(mp.PING, b"beat"))
    cmd, payload = read_frame(sock)
    if (cmd, payload) != (mp.reply_cmd(mp.PING), b"beat"):
        raise AssertionError("expected the PING reply, got %s" % mp.describe(cmd, payload))
    server.notes.append("pong")
    sock.sendall(mp.encode(mp.DELIVER, deliver_payload(b"bob", b"last")))
    while read_frame(sock) is not None:
        pass


def direct_fake(bad_reply_index=None, bad_deliver_after=None):
    """AUTH succeeds; each DIRECT gets 8 bytes of counts (1, 0), except reply
    bad_reply_index, which gets 4; after reply bad_deliver_after comes a
    DELIVER whose sender length points past its end."""
    def handler(sock, server):
        n = 0
        while True:
            f = read_frame(sock)
            if f is None:
                return
            cmd, payload = f
            if cmd == mp.AUTH:
                sock.sendall(mp.encode(mp.reply_cmd(mp.AUTH)))
                continue
            if cmd != mp.DIRECT:
                raise AssertionError("expected DIRECT, got %s" % mp.describe(cmd, payload))
            if not payload or payload[0] == 0 or 1 + payload[0] > len(payload):
                raise AssertionError("a malformed DIRECT payload %r" % payload)
            counts = struct.pack(">II", 1, 0)
            if n == bad_reply_index:
                counts = counts[:4]
            sock.sendall(mp.encode(mp.reply_cmd(mp.DIRECT), counts))
            if n == bad_deliver_after:
                sock.sendall(mp.encode(mp.DELIVER, b"\xff" + b"x" * 10))
            n += 1
    return handler


def read_bytes(pipe, n, wait):
    """Exactly n bytes from a pipe, within wait seconds."""
    deadline = time.monotonic() + wait
    buf = b""
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("timed out reading %d bytes; have %r" % (n, buf))
        r, _, _ = select.select([pipe], [], [], left)
        if not r:
            continue
        data = os.read(pipe.fileno(), n - len(buf))
        if not data:
            raise AssertionError("EOF after %r" % buf)
        buf += data
    return buf


def start_listen(test, port, token):
    """msgcli -a token listen, started and ready (its identity is known to
    the daemon once it says so); reaped at the test's cleanup."""
    proc = subprocess.Popen([MSGCLI, "-p", str(port), "-a", token, "listen"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    test.addCleanup(MsgcliTests._reap, proc)
    line = MsgcliTests._read_line(proc.stderr, timeout())
    test.assertIn("listening", line)
    return proc


def stop_listen(test, proc):
    """SIGINT: listen exits 0, with no sanitizer report. Returns what else
    it printed."""
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(timeout())
    err = proc.stderr.read().decode("utf-8", "replace")
    test.assertEqual(rc, 0, err)
    test.assertEqual(harness.find_markers(err), [], err)
    return proc.stdout.read().decode("utf-8", "replace")


# --- tests against the shared daemon -------------------------------------------------


class MsgcliTests(ToolMixin, MsgdTestCase):

    def test_help(self):
        r = self.cli("--help")
        self.assertEqual(r.returncode, 0, repr(r))
        for word in ("ping", "echo", "stats", "delay", "sub", "pub", "send IDENTITY TEXT",
                     "listen", "raw", "-u", "-a", "-t"):
            self.assertIn(word, r.stdout)

    def test_ping(self):
        r = self.cli("ping", port=self.daemon.port())
        self.assertEqual(r.returncode, 0, repr(r))
        self.assertEqual(r.stdout, "PONG\n")

    def test_echo(self):
        r = self.cli("echo", "hello, world", port=self.daemon.port())
        self.assertEqual(r.returncode, 0, repr(r))
        self.assertEqual(r.stdout, "hello, world\n")

    def test_stats(self):
        r = self.cli("stats", port=self.daemon.port())
        self.assertEqual(r.returncode, 0, repr(r))
        stats = mp.parse_stats(r.stdout.encode())
        self.assertEqual(stats.get("reactors"), 2, r.stdout)
        self.assertGreaterEqual(stats.get("connections_current", 0), 1, r.stdout)

    def test_raw_echo_hex(self):
        r = self.cli("raw", "2", "68690a00ff", port=self.daemon.port())
        self.assertEqual(r.returncode, 0, repr(r))
        self.assertEqual(r.stdout, "0x80000002 68690a00ff\n")
        r = self.cli("raw", "0x1", port=self.daemon.port())
        self.assertEqual(r.returncode, 0, repr(r))
        self.assertEqual(r.stdout, "0x80000001\n")

    def test_raw_unknown_command(self):
        r = self.cli("raw", "999", port=self.daemon.port())
        self.assertEqual(r.returncode, 1, repr(r))
        self.assertIn("UNKNOWN_COMMAND", r.stderr)
        self.assertEqual(r.stdout, "")

    def test_raw_bit30_alone_is_unknown(self):
        r = self.cli("raw", "0x40000002", port=self.daemon.port())
        self.assertEqual(r.returncode, 1, repr(r))
        self.assertIn("UNKNOWN_COMMAND", r.stderr)

    def test_delay_disabled(self):
        r = self.cli("delay", "10", "hi", port=self.daemon.port())
        self.assertEqual(r.returncode, 1, repr(r))
        self.assertIn("DISABLED", r.stderr)

    def test_pub_and_sub(self):
        """PUBLISH/SUBSCRIBE: reported as UNKNOWN_COMMAND where the daemon
        lacks them; where it has them, sub prints what pub sends."""
        port = self.daemon.port()
        sub = subprocess.Popen([MSGCLI, "-p", str(port), "sub", "news"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(self._reap, sub)
        line = self._read_line(sub.stderr, timeout())
        if "subscribed to news" not in line:
            rc = sub.wait(timeout())
            err = line + sub.stderr.read().decode("utf-8", "replace")
            self.assertEqual(rc, 1, err)
            self.assertIn("UNKNOWN_COMMAND", err)
            r = self.cli("pub", "news", "hi", port=port)
            self.assertEqual(r.returncode, 1, repr(r))
            self.assertIn("UNKNOWN_COMMAND", r.stderr)
            return
        r = self.cli("pub", "news", "hi there", port=port)
        self.assertEqual(r.returncode, 0, repr(r))
        self.assertEqual(r.stdout.strip(), "1")
        self.assertEqual(self._read_line(sub.stdout, timeout()), "news hi there\n")
        sub.send_signal(signal.SIGINT)
        self.assertEqual(sub.wait(timeout()), 0)

    def test_send_and_listen(self):
        """Without [auth] tokens AUTH's payload is the identity: send reaches
        every listening connection of it (two devices) and prints LOCAL REMOTE;
        listen prints SENDER TEXT lines and stops on SIGINT with 0."""
        port = self.daemon.port()
        me = "cli-bob-%d" % os.getpid()
        phone = start_listen(self, port, me)
        r = self.cli("-a", "cli-alice", "send", me, "hello there", port=port)
        self.assertEqual((r.returncode, r.stdout), (0, "1 0\n"), repr(r))
        self.assertEqual(self._read_line(phone.stdout, timeout()), "cli-alice hello there\n")
        laptop = start_listen(self, port, me)
        r = self.cli("-a", "cli-carol", "send", me, "to both", port=port)
        self.assertEqual((r.returncode, r.stdout), (0, "2 0\n"), repr(r))
        for dev in (phone, laptop):
            self.assertEqual(self._read_line(dev.stdout, timeout()), "cli-carol to both\n")
        self.assertEqual(stop_listen(self, laptop), "")
        # the laptop is gone: one connection left
        harness.wait_until(
            lambda: self.cli("-a", "cli-alice", "send", me, "again", port=port).stdout == "1 0\n",
            timeout(), "the laptop's connection to leave")
        self.assertEqual(self._read_line(phone.stdout, timeout()), "cli-alice again\n")
        stop_listen(self, phone)

    def test_send_to_oneself_and_to_nobody(self):
        port = self.daemon.port()
        r = self.cli("-a", "cli-solo", "send", "cli-nobody-%d" % os.getpid(), "x", port=port)
        self.assertEqual((r.returncode, r.stdout), (0, "0 0\n"), repr(r))
        # to its own identity: the DELIVER comes back to the sender, and send
        # still prints the counts (the push is not the reply)
        r = self.cli("-a", "cli-self-%d" % os.getpid(), "send", "cli-self-%d" % os.getpid(),
                     "me", port=port)
        self.assertEqual((r.returncode, r.stdout), (0, "1 0\n"), repr(r))

    def test_send_without_identity_is_an_error_reply(self):
        r = self.cli("send", "bob", "hi", port=self.daemon.port())
        self.assertEqual(r.returncode, 1, repr(r))
        self.assertIn("NOT_AUTHENTICATED", r.stderr)
        self.assertEqual(r.stdout, "")

    def test_send_and_listen_bad_usage(self):
        for args in (["send"], ["send", "bob"], ["send", "bob", "a", "b"], ["send", "", "x"],
                     ["send", "i" * 256, "x"], ["listen"], ["-a", "bob", "listen", "extra"]):
            r = self.cli(*args, port=self.daemon.port())
            self.assertEqual(r.returncode, 2, "%r: %r" % (args, r))
            self.assertIn("usage", r.stderr.lower(), "%r: %r" % (args, r))
            self.assertEqual(r.stdout, "", "%r: %r" % (args, r))
        r = self.cli("-a", "x", "send", "i" * 255, "x", port=self.daemon.port())
        self.assertEqual((r.returncode, r.stdout), (0, "0 0\n"), repr(r))

    @staticmethod
    def _read_line(pipe, wait):
        deadline = time.monotonic() + wait
        buf = b""
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("timed out reading a line; have %r" % buf)
            r, _, _ = select.select([pipe], [], [], left)
            if not r:
                continue
            ch = os.read(pipe.fileno(), 1)
            if not ch:
                break
            buf += ch
        return buf.decode("utf-8", "replace")

    @staticmethod
    def _reap(proc):
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout())
        for f in (proc.stdout, proc.stderr):
            if f:
                f.close()

    def test_host_localhost_and_addresses_outside_the_grammar(self):
        # msgcli and msgbench share one resolver (msgclient_resolve): localhost
        # is 127.0.0.1, where the daemon listens; what the address grammar
        # rejects ("127.1", "[zz::1]", a relative unix path) exits 2 unsent.
        r = self.cli("-h", "localhost", "echo", "via localhost", port=self.daemon.port())
        self.assertEqual(r.returncode, 0, repr(r))
        self.assertEqual(r.stdout, "via localhost\n")
        r = self.bench_json("-h", "localhost", "-c", "2", "-n", "50",
                            port=self.daemon.port())[1]
        self.assertEqual((r["requests"], r["ok"], r["errors"]), (50, 50, 0), r)
        for args in (["-h", "127.1"], ["-h", "[zz::1]"], ["-u", "unix:relative.sock"],
                     ["-u", "/" + "p" * 108]):
            for run in (self.cli, self.bench):
                r = run(*(args + (["ping"] if run == self.cli else ["-n", "1"])),
                        port=self.daemon.port())
                self.assertEqual(r.returncode, 2, "%r: %r" % (args, r))
                self.assertRegex(r.stderr, r"bad address|unix:/path", "%r: %r" % (args, r))

    def test_connection_refused(self):
        r = self.cli("ping", port=free_port())
        self.assertEqual(r.returncode, 2, repr(r))
        self.assertIn("refused", r.stderr.lower())

    def test_bad_usage(self):
        for args in ([], ["bogus"], ["echo"], ["raw", "zz"], ["raw", "2", "abc"],
                     ["delay", "x", "y"], ["-p", "0", "ping"], ["-t", "-1", "ping"],
                     ["ping", "extra"], ["--no-such-option"]):
            r = self.cli(*args)
            self.assertEqual(r.returncode, 2, "%r: %r" % (args, r))
            self.assertIn("usage", r.stderr.lower() + r.stdout.lower(), "%r: %r" % (args, r))


class MsgcliFakeServerTests(ToolMixin, unittest.TestCase):

    def test_reply_timeout_exits_2(self):
        srv = FakeServer(silent)
        self.addCleanup(srv.stop)
        r = self.cli("-t", "0.3", "ping", port=srv.port)
        self.assertEqual(r.returncode, 2, repr(r))
        self.assertIn("timed out", r.stderr)

    def test_sub_prints_messages_answers_pings_and_stops_on_sigint(self):
        srv = FakeServer(pubsub_fake)
        self.addCleanup(srv.stop)
        sub = subprocess.Popen([MSGCLI, "-p", str(srv.port), "sub", "weather"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
        self.addCleanup(MsgcliTests._reap, sub)
        line = MsgcliTests._read_line(sub.stdout, timeout())
        self.assertEqual(line, "weather hello there\n")
        self.assertIn("pong", srv.notes)
        sub.send_signal(signal.SIGINT)
        rc = sub.wait(timeout())
        err = sub.stderr.read().decode("utf-8", "replace")
        self.assertEqual(rc, 0, err)
        self.assertEqual(harness.find_markers(err), [], err)

    def test_listen_prints_delivers_dash_for_no_sender_and_drops_malformed(self):
        srv = FakeServer(deliver_fake)
        self.addCleanup(srv.stop)
        proc = subprocess.Popen([MSGCLI, "-p", str(srv.port), "-a", "me", "listen"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        self.addCleanup(MsgcliTests._reap, proc)
        for want in ("alice hi there\n", "- anonymous\n", "bob last\n"):
            self.assertEqual(MsgcliTests._read_line(proc.stdout, timeout()), want)
        self.assertIn("pong", srv.notes)
        self.assertEqual(stop_listen(self, proc), "")   # the malformed one printed nothing

    def test_sub_declares_a_silent_server_dead_and_exits_2(self):
        """A subscriber behind a failure that sends no FIN or RST does not
        hang: the server answers SUBSCRIBE, then falls silent; sub's
        heartbeat PING goes unanswered, it declares the server dead after
        --dead-after, reconnects (the listener accepts but never answers),
        the new SUBSCRIBE times out, and it exits 2."""
        srv = FakeServer(answer_first_then_silent(mp.SUBSCRIBE), connections=2)
        self.addCleanup(srv.stop)
        t0 = time.monotonic()
        r = self.cli("-t", "1", "--heartbeat", "0.1", "--dead-after", "0.5", "sub", "quiet",
                     port=srv.port, wait=timeout(3))
        self.assertEqual(r.returncode, 2, repr(r))
        self.assertLess(time.monotonic() - t0, timeout(3))
        self.assertIn("subscribed to quiet", r.stderr)
        self.assertRegex(r.stderr, r"sent nothing for \d+ ms \(dead after 500 ms\).*reconnecting")
        self.assertIn("SUBSCRIBE: timed out", r.stderr)
        self.assertIn("ping", srv.notes)              # the heartbeat went out
        self.assertEqual(srv.notes.count("conn"), 2)

    def test_listen_gives_up_after_its_attempts_on_a_silent_server(self):
        """listen: AUTH answered, then silence: declared dead, then each
        reconnect's AUTH meets a listener that never answers; after
        --attempts of them it exits 2 saying so."""
        srv = FakeServer(answer_first_then_silent(mp.AUTH), connections=3)
        self.addCleanup(srv.stop)
        r = self.cli("-t", "0.4", "--heartbeat", "0.1", "--dead-after", "0.4", "--attempts", "2",
                     "-a", "me", "listen", port=srv.port, wait=timeout(3))
        self.assertEqual(r.returncode, 2, repr(r))
        self.assertIn("listening", r.stderr)
        self.assertIn("reconnecting", r.stderr)
        self.assertIn("giving up after 2 connect attempts", r.stderr)
        self.assertIn("AUTH", r.stderr)
        self.assertEqual(srv.notes.count("conn"), 3)

    def test_heartbeat_options_bad_usage(self):
        for args in (["--heartbeat", "x", "ping"], ["--dead-after", "-1", "ping"],
                     ["--attempts", "0", "sub", "t"], ["--heartbeat"]):
            r = self.cli(*args)
            self.assertEqual(r.returncode, 2, "%r: %r" % (args, r))
            self.assertIn("usage", r.stderr.lower(), "%r: %r" % (args, r))

    def test_send_reply_of_the_wrong_size_exits_1(self):
        srv = FakeServer(direct_fake(bad_reply_index=0))
        self.addCleanup(srv.stop)
        r = self.cli("-a", "me", "send", "bob", "hi", port=srv.port)
        self.assertEqual(r.returncode, 1, repr(r))
        self.assertIn("unexpected reply", r.stderr)
        self.assertEqual(r.stdout, "")


class MsgcliOwnDaemonTests(ToolMixin, MsgdTestCase):
    shared_daemon = False

    def test_send_and_listen_with_identity_tokens(self):
        """With [auth] tokens = IDENTITY:TOKEN, -a TOKEN gives the identity:
        listen as bob, send as alice; a bare token has no identity."""
        d = self.start_daemon({"auth": {"tokens": "alice:a-tok, bob:b-tok, bare-tok"}})
        port = d.port()
        bob = start_listen(self, port, "b-tok")
        r = self.cli("-a", "a-tok", "send", "bob", "from alice", port=port)
        self.assertEqual((r.returncode, r.stdout), (0, "1 0\n"), repr(r))
        self.assertEqual(MsgcliTests._read_line(bob.stdout, timeout()), "alice from alice\n")
        r = self.cli("-a", "bare-tok", "send", "bob", "x", port=port)
        self.assertEqual(r.returncode, 1, repr(r))
        self.assertIn("NOT_AUTHENTICATED", r.stderr)
        r = self.cli("send", "bob", "x", port=port)
        self.assertEqual(r.returncode, 1, repr(r))
        self.assertIn("NOT_AUTHENTICATED", r.stderr)
        r = self.cli("-a", "wrong", "listen", port=port)
        self.assertEqual(r.returncode, 1, repr(r))
        self.assertIn("AUTH_FAILED", r.stderr)
        self.assertEqual(stop_listen(self, bob), "")

    def test_listen_reconnects_after_goaway_to_a_restarted_daemon(self):
        """listen reconnects like sub: the daemon drains and exits, a new one
        starts on the same port, and listen (AUTH again on connect) gets the
        DELIVERs sent to the new one."""
        d1 = self.start_daemon()
        port = d1.port()
        proc = start_listen(self, port, "roamer")
        r = self.cli("-a", "home", "send", "roamer", "before", port=port)
        self.assertEqual(r.stdout, "1 0\n", repr(r))
        self.assertEqual(MsgcliTests._read_line(proc.stdout, timeout()), "home before\n")
        d1.send_signal(signal.SIGTERM)
        self.assertEqual(d1.wait_exit(timeout()), 0, d1.log_tail())
        d2 = self.start_daemon({"msg": {"listen": "127.0.0.1:%d" % port}})
        self.assertEqual(d2.port(), port)
        harness.wait_until(
            lambda: self.cli("-a", "home", "send", "roamer", "after",
                             port=port).stdout == "1 0\n",
            timeout(2), "the reconnected listener on the new daemon")
        self.assertEqual(MsgcliTests._read_line(proc.stdout, timeout()), "home after\n")
        stop_listen(self, proc)

    def test_sub_reconnects_after_goaway_to_a_restarted_daemon(self):
        """The library's reconnect (msgcli sub uses it) against the real
        daemon: the daemon drains (GOAWAY), exits, and a new one starts on
        the same port; sub reconnects after its back-off with jitter,
        subscribes again and prints what is published to the new daemon."""
        d1 = self.start_daemon()
        port = d1.port()
        sub = subprocess.Popen([MSGCLI, "-p", str(port), "sub", "restart"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
        self.addCleanup(MsgcliTests._reap, sub)
        self.assertIn("subscribed to restart", MsgcliTests._read_line(sub.stderr, timeout()))
        r = self.cli("pub", "restart", "before", port=port)
        self.assertEqual(r.stdout.strip(), "1", repr(r))
        self.assertEqual(MsgcliTests._read_line(sub.stdout, timeout()), "restart before\n")
        d1.send_signal(signal.SIGTERM)
        self.assertEqual(d1.wait_exit(timeout()), 0, d1.log_tail())
        d2 = self.start_daemon({"msg": {"listen": "127.0.0.1:%d" % port}})
        self.assertEqual(d2.port(), port)
        # sub re-subscribes on its own; publish until the new daemon counts it.
        harness.wait_until(
            lambda: self.cli("pub", "restart", "after", port=port).stdout.strip() == "1",
            timeout(2), "the reconnected subscriber on the new daemon")
        self.assertEqual(MsgcliTests._read_line(sub.stdout, timeout()), "restart after\n")
        sub.send_signal(signal.SIGINT)
        self.assertEqual(sub.wait(timeout()), 0)

    def test_auth_token(self):
        d = self.start_daemon({"auth": {"tokens": "s3cret"}})
        port = d.port()
        r = self.cli("-a", "s3cret", "echo", "in", port=port)
        self.assertEqual(r.returncode, 0, repr(r))
        self.assertEqual(r.stdout, "in\n")
        r = self.cli("echo", "out", port=port)
        self.assertEqual(r.returncode, 1, repr(r))
        self.assertIn("NOT_AUTHENTICATED", r.stderr)
        r = self.cli("-a", "wrong", "ping", port=port)
        self.assertEqual(r.returncode, 1, repr(r))
        self.assertIn("AUTH_FAILED", r.stderr)

    def test_delay_enabled_and_unix_socket(self):
        tmp = tempfile.mkdtemp(prefix="msgcli-unix-")
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        path = os.path.join(tmp, "msg.sock")
        d = self.start_daemon({"msg": {"listen": "127.0.0.1:0,unix:" + path},
                               "diagnostics": {"delay_command": "on"}})
        tcp_port = [a for a in d.addrs("msg") if a[0] != "unix"][0][1]
        r = self.cli("delay", "30", "later", port=tcp_port)
        self.assertEqual(r.returncode, 0, repr(r))
        self.assertEqual(r.stdout, "later\n")
        r = self.cli("-u", "unix:" + path, "echo", "via unix")
        self.assertEqual(r.returncode, 0, repr(r))
        self.assertEqual(r.stdout, "via unix\n")
        r = self.bench_json("-u", "unix:" + path, "-c", "2", "-P", "2", "-n", "200",
                            "--cmd", "delay")[1]
        self.assertEqual((r["requests"], r["ok"], r["errors"]), (200, 200, 0), r)


# --- msgbench ------------------------------------------------------------------------


class MsgbenchTests(ToolMixin, MsgdTestCase):

    def test_help(self):
        r = self.bench("--help")
        self.assertEqual(r.returncode, 0, repr(r))
        for word in ("-c", "-P", "-s", "-d", "-n", "--rate", "--cmd", "--protocol", "--json",
                     "direct", "--to"):
            self.assertIn(word, r.stdout)

    def test_bad_usage(self):
        for args in (["-d", "1", "-n", "5"], ["-c", "0"], ["--cmd", "nope"], ["--protocol", "x"],
                     ["--cmd", "ping", "-s", "2000"], ["--rate", "0"], ["extra"],
                     ["--cmd", "direct", "-n", "5"], ["--to", "bob", "-n", "5"],
                     ["-a", "me", "--cmd", "direct", "--to", "", "-n", "5"],
                     ["-a", "me", "--cmd", "direct", "--to", "i" * 256, "-n", "5"]):
            r = self.bench(*args)
            self.assertEqual(r.returncode, 2, "%r: %r" % (args, r))
            self.assertIn("usage", r.stderr.lower(), "%r: %r" % (args, r))

    def test_echo_count_pipelined(self):
        r = self.bench("-c", "4", "-P", "4", "-n", "2000", "--cmd", "echo", "-s", "64",
                       port=self.daemon.port())
        self.assertEqual(r.returncode, 0, repr(r))
        self.assertRegex(r.stdout, r"\b2000 answered\b")
        self.assertRegex(r.stdout, r"\(2000 ok, 0 errors\)")
        self.assertRegex(r.stdout, r"errors:\s+none")
        for word in ("requests/s", "MiB/s", "p50", "p90", "p99", "p99.9", "max"):
            self.assertIn(word, r.stdout)

    def test_json_fields(self):
        r, doc = self.bench_json("-t", "2", "-c", "4", "-P", "8", "-n", "1000", "-s", "100",
                                 port=self.daemon.port())
        for key in ("requests", "ok", "errors", "errors_by_code", "requests_per_sec",
                    "mib_per_sec", "latency_ms", "duration_s", "connections", "threads"):
            self.assertIn(key, doc, doc)
        self.assertEqual(doc["requests"], 1000, doc)
        self.assertEqual(doc["ok"], 1000, doc)
        self.assertEqual(doc["errors"], 0, doc)
        self.assertEqual(doc["errors_by_code"], {}, doc)
        self.assertEqual((doc["threads"], doc["connections"]), (2, 4), doc)
        self.assertGreater(doc["requests_per_sec"], 0)
        self.assertGreater(doc["mib_per_sec"], 0)
        lat = doc["latency_ms"]
        for key in LATENCY_KEYS:
            self.assertIn(key, lat, lat)
        self.assertEqual(lat["samples"], 1000)
        vals = [lat[k] for k in LATENCY_KEYS]
        self.assertEqual(vals, sorted(vals), "percentiles must not decrease: %r" % lat)
        self.assertGreater(lat["max"], 0)

    def test_duration_mode_progress(self):
        r, doc = self.bench_json("-c", "2", "-P", "2", "-d", "1.2", port=self.daemon.port())
        self.assertGreater(doc["requests"], 0, doc)
        self.assertEqual(doc["errors"], 0, doc)
        self.assertGreaterEqual(doc["duration_s"], 1.2, doc)
        self.assertIn("requests/s", r.stderr, "a progress line each second on stderr")

    def test_ping_command(self):
        r, doc = self.bench_json("--cmd", "ping", "-s", "1024", "-n", "300", "-c", "3",
                                 port=self.daemon.port())
        self.assertEqual((doc["requests"], doc["ok"]), (300, 300), doc)

    def test_publish_command(self):
        r, doc = self.bench_json("--cmd", "publish", "-n", "20", "-c", "2",
                                 port=self.daemon.port(), expect_rc=None)
        if r.returncode == 0:
            self.assertEqual(doc["ok"], 20, doc)
        else:
            self.assertEqual(r.returncode, 1, repr(r))
            self.assertEqual(doc["errors_by_code"], {"UNKNOWN_COMMAND": 20}, doc)

    def test_direct_command(self):
        """--cmd direct: each reply must be 8 bytes; to the default target
        "msgbench", which nobody here holds, nothing is delivered."""
        r, doc = self.bench_json("-a", "bench-sender", "--cmd", "direct", "-n", "200", "-c", "2",
                                 "-P", "4", port=self.daemon.port())
        self.assertEqual((doc["cmd"], doc["requests"], doc["ok"], doc["errors"]),
                         ("direct", 200, 200, 0), doc)
        self.assertEqual(doc["delivers"], 0, doc)
        r = self.bench("-a", "bench-sender", "--cmd", "direct", "-n", "10", "-c", "1",
                       port=self.daemon.port())
        self.assertEqual(r.returncode, 0, repr(r))
        self.assertRegex(r.stdout, r"delivers:\s+0 DELIVER pushes received \(direct to msgbench\)")

    def test_direct_to_its_own_identity_and_to_a_listener(self):
        """--to the bench's own identity: its connections get the DELIVERs
        (each DIRECT reaches every one of them; the run may end before the
        last arrive); --to a msgcli listener: it prints them."""
        port = self.daemon.port()
        me = "bench-self-%d" % os.getpid()
        r, doc = self.bench_json("-a", me, "--cmd", "direct", "--to", me, "-n", "90", "-c", "3",
                                 "-s", "16", port=port)
        self.assertEqual((doc["requests"], doc["ok"], doc["errors"]), (90, 90, 0), doc)
        self.assertTrue(0 < doc["delivers"] <= 270, doc)
        target = "bench-target-%d" % os.getpid()
        listener = start_listen(self, port, target)
        r, doc = self.bench_json("-a", "bench-from", "--cmd", "direct", "--to", target,
                                 "-n", "5", "-c", "1", "-s", "8", port=port)
        self.assertEqual((doc["ok"], doc["errors"]), (5, 0), doc)
        # the messages are msgbench's binary pattern (a newline may be among
        # them): five records of "bench-from " + 8 bytes + "\n"
        rec = len(b"bench-from ") + 8 + 1
        data = read_bytes(listener.stdout, 5 * rec, timeout())
        for i in range(5):
            one = data[i * rec:(i + 1) * rec]
            self.assertTrue(one.startswith(b"bench-from ") and one.endswith(b"\n"), data)
        self.assertEqual(stop_listen(self, listener), "")

    def test_delay_disabled_counts_errors_by_code(self):
        r, doc = self.bench_json("--cmd", "delay", "-n", "30", "-c", "3",
                                 port=self.daemon.port(), expect_rc=1)
        self.assertEqual(doc["errors_by_code"], {"DISABLED": 30}, doc)
        self.assertEqual(doc["requests"], 30, doc)

    def test_echo_protocol_against_echo_listener(self):
        r, doc = self.bench_json("--protocol", "echo", "-c", "3", "-P", "8", "-n", "3000",
                                 "-s", "333", port=self.daemon.port("echo"))
        self.assertEqual((doc["requests"], doc["ok"], doc["errors"]), (3000, 3000, 0), doc)
        self.assertEqual(doc["protocol"], "echo")
        self.assertEqual(doc["bytes_sent"], 3000 * 333)
        self.assertEqual(doc["bytes_received"], 3000 * 333)

    def test_rate_open_loop(self):
        r, doc = self.bench_json("--rate", "500", "-d", "1", "-c", "4",
                                 port=self.daemon.port(), wait=timeout(3))
        self.assertEqual(doc["mode"], "open", doc)
        self.assertEqual(doc["errors"], 0, doc)
        self.assertTrue(450 <= doc["requests"] <= 550, "about 500 requests: %r" % doc)
        self.assertTrue(0.9 <= doc["duration_s"] <= 1.0 + timeout(1), doc)

    def test_connection_refused(self):
        r = self.bench("-n", "10", "-c", "2", port=free_port())
        self.assertNotEqual(r.returncode, 0, repr(r))
        self.assertIn("CONNECT", r.stdout)


class MsgbenchFakeServerTests(ToolMixin, unittest.TestCase):

    def test_corrupted_echo_byte_fails_the_run(self):
        srv = FakeServer(corrupting_msg_echo(bad_index=7))
        self.addCleanup(srv.stop)
        r, doc = self.bench_json("-c", "1", "-P", "4", "-n", "40", "-s", "32",
                                 port=srv.port, expect_rc=None)
        self.assertNotEqual(r.returncode, 0, repr(r))
        self.assertEqual(doc["errors_by_code"], {"BAD_REPLY": 1}, doc)
        self.assertEqual((doc["requests"], doc["ok"]), (40, 39), doc)

    def test_corrupted_raw_echo_byte_fails_the_run(self):
        srv = FakeServer(corrupting_raw_echo(bad_offset=1000))
        self.addCleanup(srv.stop)
        r, doc = self.bench_json("--protocol", "echo", "-c", "1", "-P", "3", "-n", "50",
                                 "-s", "64", port=srv.port, expect_rc=None)
        self.assertNotEqual(r.returncode, 0, repr(r))
        self.assertEqual(doc["errors_by_code"], {"BAD_REPLY": 1}, doc)

    def test_server_closing_mid_run_is_counted(self):
        srv = FakeServer(closing_after(5), connections=2)
        self.addCleanup(srv.stop)
        r, doc = self.bench_json("-c", "2", "-P", "2", "-n", "100", port=srv.port,
                                 expect_rc=None)
        self.assertEqual(r.returncode, 1, repr(r))
        self.assertEqual(doc["ok"], 10, doc)
        self.assertIn("CLOSED", doc["errors_by_code"], doc)
        self.assertEqual(doc["ok"] + doc["errors"], 100, doc)

    def test_direct_reply_of_the_wrong_size_and_a_malformed_deliver_fail_the_run(self):
        srv = FakeServer(direct_fake(bad_reply_index=3, bad_deliver_after=5))
        self.addCleanup(srv.stop)
        r, doc = self.bench_json("-a", "me", "--cmd", "direct", "-n", "10", "-c", "1",
                                 port=srv.port, expect_rc=1)
        self.assertEqual((doc["requests"], doc["ok"]), (10, 9), doc)
        self.assertEqual(doc["errors_by_code"], {"BAD_REPLY": 2}, doc)
        self.assertEqual(doc["delivers"], 0, doc)

    def test_silent_server_times_out(self):
        srv = FakeServer(silent)
        self.addCleanup(srv.stop)
        r, doc = self.bench_json("-c", "1", "-P", "3", "-n", "10", "--timeout", "0.3",
                                 port=srv.port, expect_rc=1)
        self.assertEqual(doc["errors_by_code"].get("TIMEOUT"), 3, doc)


class MsgbenchOwnDaemonTests(ToolMixin, MsgdTestCase):
    shared_daemon = False

    def test_heartbeat_pings_are_answered(self):
        d = self.start_daemon({"timeouts": {"heartbeat_interval": "100ms",
                                            "idle_timeout": "1s"}})
        r, doc = self.bench_json("--rate", "3", "-d", "1.5", "-c", "1", port=d.port(),
                                 wait=timeout(3))
        self.assertEqual(doc["errors"], 0, doc)
        self.assertGreater(doc["server_pings"], 0, doc)

    def test_auth(self):
        d = self.start_daemon({"auth": {"tokens": "tok"}})
        r, doc = self.bench_json("-a", "tok", "-c", "2", "-P", "4", "-n", "400", port=d.port())
        self.assertEqual((doc["ok"], doc["errors"]), (400, 0), doc)
        r, doc = self.bench_json("-a", "bad", "-c", "2", "-n", "10", port=d.port(),
                                 expect_rc=None)
        self.assertNotEqual(r.returncode, 0, repr(r))
        self.assertEqual(doc["errors_by_code"].get("AUTH_FAILED"), 2, doc)

    def test_daemon_stopping_mid_run(self):
        """SIGTERM drains: msgbench sees GOAWAY and the closes, counts them,
        exits 1 without crashing, well before its -d."""
        d = self.start_daemon({"timeouts": {"drain_timeout": "1s"}})
        proc = subprocess.Popen([MSGBENCH, "-p", str(d.port()), "-c", "4", "-P", "4",
                                 "-d", "30", "--json"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(MsgcliTests._reap, proc)
        line = MsgcliTests._read_line(proc.stderr, timeout(2))
        self.assertIn("requests/s", line)
        t0 = time.monotonic()
        self.assertEqual(d.stop(), 0)
        out, err = proc.communicate(timeout=timeout(3))
        self.assertLess(time.monotonic() - t0, timeout(3))
        err = line + err.decode("utf-8", "replace")
        self.assertEqual(proc.returncode, 1, err)
        self.assertEqual(harness.find_markers(err), [], err)
        doc = json.loads(out)
        self.assertGreater(doc["ok"], 0, doc)
        codes = doc["errors_by_code"]
        self.assertTrue(set(codes) <= {"GOAWAY", "CLOSED", "SHUTTING_DOWN"}, doc)
        self.assertIn("GOAWAY", codes, doc)


if __name__ == "__main__":
    unittest.main()
