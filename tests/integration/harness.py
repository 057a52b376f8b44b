"""harness: starts the real msgd on ephemeral ports and waits for READY=1.

A Daemon writes its configuration to a temp dir, starts msgd with
NOTIFY_SOCKET pointing at an AF_UNIX datagram socket it bound itself, and waits
(with a timeout) for the datagram holding READY=1 and the STATUS line with the
real listening addresses. Nothing here sleeps to synchronise.

Environment:
  MSGD_BIN                 the daemon (default <repo>/build/msgd)
  MSGD_TEST_TIMEOUT_SCALE  multiplies every wait (default 1; sanitizers: more)
  MSGD_KEEP_TMP=1          keep each daemon's temp dir (config, logs)
"""

import atexit
import copy
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import threading
import unittest

import msgproto as mp

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
MSGD_BIN = os.path.abspath(os.environ.get("MSGD_BIN") or os.path.join(REPO, "build", "msgd"))

try:
    SCALE = float(os.environ.get("MSGD_TEST_TIMEOUT_SCALE") or 1)
except ValueError:
    SCALE = 1.0
if SCALE <= 0:
    SCALE = 1.0
BASE_WAIT = 5.0

SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "ThreadSanitizer")

HOST = "127.0.0.1"


def module_path(name):
    """The shared object of module name, built next to MSGD_BIN
    (BUILD/modules/NAME.so)."""
    return os.path.join(os.path.dirname(MSGD_BIN), "modules", name + ".so")


def timeout(mult=1.0):
    """The standard wait (5 s) times mult, scaled by MSGD_TEST_TIMEOUT_SCALE."""
    return BASE_WAIT * SCALE * mult


def poll_pause(i):
    """Pause between two polls of a condition (not a synchronisation delay:
    every poll loop checks its real condition and has its own deadline)."""
    threading.Event().wait(min(0.002 * (2 ** min(i, 5)), 0.05))


def recv_exact(s, n, what="the reply"):
    """Exactly n bytes from socket s (its own timeout applies); an end of
    stream before them fails with what was being waited for."""
    got = b""
    while len(got) < n:
        chunk = s.recv(n - len(got))
        if not chunk:
            raise AssertionError("end of stream after %d of %d bytes of %s" % (len(got), n, what))
        got += chunk
    return got


def read_to_end(s, wait=None, resets_ok=False):
    """Everything socket s receives until the peer closes (within wait, the
    standard wait by default). A reset raises, unless resets_ok: then it
    ends the stream like a close (the server closing with our bytes still
    unread resets)."""
    s.settimeout(timeout() if wait is None else wait)
    got = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return got
            got += chunk
    except ConnectionResetError:
        if not resets_ok:
            raise
        return got


def wait_until(pred, wait=None, what="condition"):
    """Polls pred() until it returns a true value (returned) or the timeout
    passes (AssertionError with the last value)."""
    deadline = time.monotonic() + (timeout() if wait is None else wait)
    i = 0
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (
                timeout() if wait is None else wait, what))
        poll_pause(i)
        i += 1


DEFAULT_CONFIG = {
    "server": {"reactors": 2, "workers": 1},
    "msg": {"listen": "127.0.0.1:0", "max_frame": "64K"},
    "echo": {"listen": "127.0.0.1:0"},
    "admin": {"listen": ""},
    "timeouts": {"heartbeat_interval": 0, "idle_timeout": 0, "drain_timeout": "2s"},
    "limits": {"output_high_water": "1M", "output_low_water": "256K",
               "output_hard_limit": "16M"},
    "log": {"level": "debug"},
}
SECTION_ORDER = ["server", "msg", "echo", "admin", "http", "timeouts", "limits", "auth",
                 "log", "diagnostics"]

MAX_FRAME = 64 * 1024


def merge_config(base, overrides):
    """base updated with overrides ({section: {key: value}}); a value of None
    removes the key, a section of None removes the section."""
    cfg = copy.deepcopy(base)
    for section, keys in (overrides or {}).items():
        if keys is None:
            cfg.pop(section, None)
            continue
        sect = cfg.setdefault(section, {})
        for k, v in keys.items():
            if v is None:
                sect.pop(k, None)
            else:
                sect[k] = v
    return cfg


def render_config(cfg):
    """INI text of a {section: {key: value}} dict."""
    lines = ["; written by tests/integration/harness.py"]
    names = [s for s in SECTION_ORDER if s in cfg] + sorted(s for s in cfg if s not in SECTION_ORDER)
    for section in names:
        lines.append("")
        lines.append("[%s]" % section)
        for k, v in cfg[section].items():
            lines.append(("%s = %s" % (k, v)).rstrip())
    return "\n".join(lines) + "\n"


def parse_addr(addr):
    """'HOST:PORT', '[V6]:PORT' -> (host, port); 'unix:/p' -> ('unix', '/p')."""
    if addr.startswith("unix:"):
        return ("unix", addr[5:])
    host, _, port = addr.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return (host, int(port))


def parse_status(value):
    """'listening msg=A,B echo=C admin=' -> {'msg': [A, B], 'echo': [C], 'admin': []};
    any listener name (http=...) is taken as it comes."""
    words = value.split()
    if not words or words[0] != "listening":
        raise AssertionError("STATUS does not start with 'listening': %r" % value)
    out = {}
    for w in words[1:]:
        if "=" not in w:
            raise AssertionError("STATUS word %r is not name=ADDR[,ADDR]: %r" % (w, value))
        name, _, addrs = w.partition("=")
        out[name] = [a for a in addrs.split(",") if a]
    return out


_live = {}  # pid -> Popen of daemons this process started, for the atexit kill


@atexit.register
def _kill_leftovers():
    for pid, proc in list(_live.items()):
        if proc.poll() is None:
            try:
                os.kill(pid, signal.SIGKILL)
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass


def run_msgd(args, wait=None, env=None):
    """Runs msgd with args to completion -> CompletedProcess (text)."""
    _require_binary()
    return subprocess.run([MSGD_BIN] + list(args), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, errors="replace",
                          timeout=timeout() if wait is None else wait,
                          env=env if env is not None else _clean_env())


def check_config(path, wait=None):
    """`msgd -t -c path` -> (rc, stderr)."""
    r = run_msgd(["-t", "-c", path], wait)
    return r.returncode, r.stderr


def _clean_env():
    env = dict(os.environ)
    for k in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
              "WATCHDOG_USEC", "WATCHDOG_PID"):
        env.pop(k, None)
    return env


def _require_binary():
    if not (os.path.isfile(MSGD_BIN) and os.access(MSGD_BIN, os.X_OK)):
        raise AssertionError("msgd binary not found or not executable: %s "
                             "(build it with make, or set MSGD_BIN)" % MSGD_BIN)


def find_markers(text):
    return [m for m in SANITIZER_MARKERS if m in text]


class Daemon:
    """One msgd process with its own temp dir, config and notify socket."""

    def __init__(self, overrides=None, name="msgd"):
        self.config = merge_config(DEFAULT_CONFIG, overrides)
        self.tmp = tempfile.mkdtemp(prefix="msgd-it-%s-" % name[:30])
        self.config_path = os.path.join(self.tmp, "msgd.ini")
        self.log_path = os.path.join(self.tmp, "stderr.log")
        self.stdout_path = os.path.join(self.tmp, "stdout.log")
        self.notify_path = os.path.join(self.tmp, "notify.sock")
        self.proc = None
        self.notify = None
        self.listeners = {}
        self.status_line = None
        self.datagrams = []
        self.returncode = None
        self.finished = False
        self.stopped = False        # a stop signal (SIGTERM/SIGINT) was sent
        self.stop_signal = None
        self.expected_exit = False  # a test expects msgd to exit by itself
        self.final_log = None
        self.extra_env = {}         # more environment for the daemon (WATCHDOG_USEC...)
        self.open_notify = False    # let a daemon that drops root still notify
        self._log_f = None
        self._out_f = None

    # --- lifecycle -----------------------------------------------------------
    @property
    def pid(self):
        return self.proc.pid

    def write_config(self):
        with open(self.config_path, "w") as f:
            f.write(render_config(self.config))

    def spawn(self, extra_args=()):
        """Starts msgd (without waiting for READY)."""
        _require_binary()
        self.write_config()
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        if self.open_notify:
            os.chmod(self.tmp, 0o711)
            os.chmod(self.notify_path, 0o777)
        env = _clean_env()
        env["NOTIFY_SOCKET"] = self.notify_path
        env.update(self.extra_env)
        self._log_f = open(self.log_path, "wb")
        self._out_f = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen([MSGD_BIN, "-c", self.config_path] + list(extra_args),
                                     stdin=subprocess.DEVNULL, stdout=self._out_f,
                                     stderr=self._log_f, env=env, close_fds=True)
        _live[self.proc.pid] = self.proc
        return self

    def start(self):
        """Starts msgd and waits for READY=1; fills self.listeners from STATUS."""
        self.spawn()
        try:
            self.wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def reload(self, overrides=None, wait=None):
        """Merges overrides into the config file, sends SIGHUP and waits for
        the READY=1 that ends the reload (every reactor has the new config
        by then); returns that datagram's lines."""
        if overrides:
            self.config = merge_config(self.config, overrides)
            self.write_config()
        self.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + (timeout(1) if wait is None else wait)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no READY=1 after the reload; datagrams: %r\n%s"
                                     % (self.datagrams[-10:], self.log_tail()))
            lines = self.recv_notify(min(left, 0.2))
            if lines is not None and "READY=1" in lines:
                return lines

    def recv_notify(self, wait):
        """Next notify datagram as a list of lines, or None on timeout."""
        r, _, _ = select.select([self.notify], [], [], max(0.0, wait))
        if not r:
            return None
        data = self.notify.recv(65536)
        text = data.decode("utf-8", "replace")
        self.datagrams.append(text)
        return text.split("\n")

    def wait_ready(self, wait=None):
        wait = timeout(2) if wait is None else wait
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("msgd did not send READY=1 within %.1fs; datagrams: %r\n%s"
                                     % (wait, self.datagrams, self.log_tail()))
            lines = self.recv_notify(min(left, 0.1))
            if lines is None:
                rc = self.proc.poll()
                if rc is not None:
                    self.returncode = rc
                    raise AssertionError("msgd exited with %d before READY=1\n%s"
                                         % (rc, self.log_tail()))
                continue
            if "READY=1" not in lines:
                continue
            status = [l[len("STATUS="):] for l in lines if l.startswith("STATUS=")]
            if not status:
                raise AssertionError("the READY=1 datagram has no STATUS= line: %r" % (lines,))
            self.status_line = status[-1]
            self.listeners = parse_status(self.status_line)
            for proto in ("msg", "echo", "admin", "http"):
                want = bool(self.config.get(proto, {}).get("listen"))
                have = bool(self.listeners.get(proto))
                if want != have:
                    raise AssertionError("STATUS %r: %s listener expected %s"
                                         % (self.status_line, proto, "present" if want else "absent"))
            return

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        """Sends sig; SIGTERM and SIGINT count as a stop we asked for."""
        if self.alive():
            if sig in (signal.SIGTERM, signal.SIGINT):
                self.stopped = True
                self.stop_signal = sig
            os.kill(self.proc.pid, sig)

    def wait_exit(self, wait=None):
        """Waits for the process to exit; returns its code or None on timeout."""
        try:
            self.returncode = self.proc.wait(timeout=timeout(2) if wait is None else wait)
        except subprocess.TimeoutExpired:
            return None
        _live.pop(self.proc.pid, None)
        return self.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            try:
                self.proc.wait(timeout=timeout())
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None:
            self.returncode = self.proc.poll()
            _live.pop(self.proc.pid, None)

    def stop(self, sig=signal.SIGTERM, wait=None):
        """Sends sig and waits for the exit; returns the exit code. On timeout
        the process is killed with SIGKILL and AssertionError is raised."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            if self.stopped:
                # a stop signal was sent already: wait for it rather than send
                # a second one (which msgd may treat as "stop now")
                sig = self.stop_signal
            else:
                self.stopped = True
                self.stop_signal = sig
                os.kill(self.proc.pid, sig)
            rc = self.wait_exit(wait)
            if rc is None:
                self.kill()
                raise AssertionError("msgd (pid %d) did not exit within %.1fs of %s; killed\n%s"
                                     % (self.proc.pid, timeout(2) if wait is None else wait,
                                        signal.Signals(sig).name, self.log_tail()))
        self.returncode = self.proc.returncode
        _live.pop(self.proc.pid, None)
        return self.returncode

    def finish(self, expect_rc=0):
        """Stops the daemon if it runs, closes files, checks the exit code and the
        log for sanitizer reports. Returns a list of problems (empty = fine)."""
        if self.finished:
            return []
        self.finished = True
        problems = []
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    self.stop()
                except AssertionError as e:
                    problems.append(str(e).split("\n")[0])
            elif not self.stopped and not self.expected_exit and expect_rc is not None:
                problems.append("msgd exited by itself (rc %r) before it was stopped"
                                % self.proc.returncode)
            rc = self.proc.poll()
            self.returncode = rc
            _live.pop(self.proc.pid, None)
            if expect_rc is not None and rc != expect_rc:
                problems.append("msgd exited with %r, expected %r" % (rc, expect_rc))
        for f in (self._log_f, self._out_f):
            if f is not None:
                f.close()
        if self.notify is not None:
            self.notify.close()
        self.final_log = self.read_log()
        found = find_markers(self.final_log)
        if found:
            problems.append("msgd stderr contains sanitizer reports: %s" % ", ".join(found))
        if problems:
            sys.stderr.write("\n--- msgd log tail (%s) ---\n%s\n--- end ---\n"
                             % (self.log_path, self.log_tail()))
        if not os.environ.get("MSGD_KEEP_TMP") and not problems:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return problems

    # --- inspection ------------------------------------------------------------
    def read_log(self):
        if self.final_log is not None:
            return self.final_log
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n=60):
        lines = self.read_log().splitlines()
        return "\n".join(lines[-n:])

    def addrs(self, proto="msg"):
        return [parse_addr(a) for a in self.listeners.get(proto, [])]

    def port(self, proto="msg"):
        addrs = self.addrs(proto)
        if not addrs:
            raise AssertionError("no %s listener in STATUS %r" % (proto, self.status_line))
        return addrs[0][1]

    def fd_count(self):
        return len(os.listdir("/proc/%d/fd" % self.proc.pid))

    def client(self, proto="msg", **kw):
        kw.setdefault("timeout", timeout())
        return mp.Client(HOST, self.port(proto), **kw)


def fail_problems(daemon, problems):
    if problems:
        raise AssertionError("msgd (%s): %s\nlog tail:\n%s"
                             % (daemon.tmp, "; ".join(problems), daemon.log_tail()))


class MsgdTestCase(unittest.TestCase):
    """Base class. With shared_daemon (the default), setUpClass starts one
    daemon with DEFAULT_CONFIG updated by the class attribute `config`, and
    tearDownClass stops it with SIGTERM and checks exit 0 and the log."""

    config = {}
    shared_daemon = True
    daemon = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.daemon = None
        if cls.shared_daemon:
            d = Daemon(cls.config, name=cls.__name__)
            try:
                d.start()
            except BaseException:
                d.finish(expect_rc=None)
                raise
            cls.daemon = d

    @classmethod
    def tearDownClass(cls):
        d = cls.daemon
        cls.daemon = None
        if d is not None:
            fail_problems(d, d.finish())
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self._daemons = []
        if self.daemon is not None:
            self.assert_alive(self.daemon)
            self.addCleanup(self._check_shared_alive)

    def _check_shared_alive(self):
        if self.daemon is not None:
            self.assert_alive(self.daemon)

    def run(self, result=None):
        before = None
        if result is not None:
            before = (len(result.failures), len(result.errors))
        out = super().run(result)
        res = result if result is not None else out
        if res is not None and before is not None and \
                (len(res.failures), len(res.errors)) != before:
            for d in ([self.daemon] if self.daemon else []) + getattr(self, "_daemons", []):
                sys.stderr.write("\n--- msgd log tail for %s (%s) ---\n%s\n--- end ---\n"
                                 % (self.id(), d.log_path, d.log_tail(40)))
        return out

    # --- helpers ------------------------------------------------------------------
    def assert_alive(self, d):
        if not d.alive():
            rc = d.proc.poll() if d.proc else None
            raise AssertionError("msgd is not running (exit code %r)\n%s" % (rc, d.log_tail()))

    def start_daemon(self, overrides=None, name=None, expect_rc=0):
        """A daemon of this test's own, stopped (SIGTERM, rc expect_rc) and
        checked at cleanup."""
        d = Daemon(overrides, name=name or self._testMethodName)
        self._daemons.append(d)
        self.addCleanup(self._finish_daemon, d, expect_rc)
        d.start()
        return d

    def _finish_daemon(self, d, expect_rc):
        fail_problems(d, d.finish(expect_rc=expect_rc))

    def connect(self, proto="msg", daemon=None, **kw):
        """A client of (by default) the shared daemon, closed at cleanup."""
        d = daemon or self.daemon
        c = d.client(proto, **kw)
        self.addCleanup(c.close)
        return c

    def stats(self, client):
        """STATS over client -> dict."""
        cmd, payload = client.call(mp.STATS)
        self.assertEqual(cmd, mp.reply_cmd(mp.STATS),
                         "STATS reply: %s" % mp.describe(cmd, payload))
        return mp.parse_stats(payload)

    def assert_frame(self, got, cmd, payload=None, msg=None):
        gcmd, gpayload = got
        if gcmd != cmd or (payload is not None and bytes(gpayload) != bytes(payload)):
            want = mp.describe(cmd, payload if payload is not None else b"")
            self.fail("%sexpected %s, got %s" % (msg + ": " if msg else "", want,
                                                mp.describe(gcmd, gpayload)))

    def assert_error(self, got, cmd, code, msg=None):
        """got is an error reply to cmd (0 = connection level) with code."""
        gcmd, gpayload = got
        want = mp.error_cmd(cmd)
        prefix = msg + ": " if msg else ""
        self.assertEqual(gcmd, want, "%sexpected error reply 0x%08X code %d, got %s"
                         % (prefix, want, code, mp.describe(gcmd, gpayload)))
        gcode, text = mp.decode_error(gpayload)
        self.assertEqual(gcode, code, "%serror code %d (%s) expected, got %d (%s) %r"
                         % (prefix, code, mp.ERROR_NAMES.get(code), gcode,
                            mp.ERROR_NAMES.get(gcode, "?"), text))
        return text

    def wait_connections(self, client, expected, what=""):
        """Polls STATS over client until connections_current == expected."""
        last = {}

        def check():
            last["s"] = self.stats(client)
            return last["s"].get("connections_current") == expected
        try:
            wait_until(check, timeout(2), "connections_current == %d %s" % (expected, what))
        except AssertionError as e:
            raise AssertionError("%s; last connections_current=%r" %
                                 (e, last.get("s", {}).get("connections_current")))
        return last["s"]
