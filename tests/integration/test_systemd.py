"""msgd as a systemd service: sd_notify lifecycle, watchdog, reload, drain,
socket activation, the unit files and make install (CONFIG.md, PROTOCOL.md
rule 6)."""
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import unittest

import msgproto as mp
from harness import (MSGD_BIN, Daemon, MsgdTestCase, render_config, merge_config,
                     DEFAULT_CONFIG, timeout, wait_until, _clean_env)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def notify_until(d, pred, wait, what):
    """Reads d's notify datagrams until pred(lines) holds; returns those lines."""
    deadline = time.monotonic() + wait
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no notify datagram with %s within %.1fs; got %r"
                                 % (what, wait, d.datagrams[-10:]))
        lines = d.recv_notify(min(left, 0.2))
        if lines is not None and pred(lines):
            return lines


def delay_payload(ms, tag):
    return struct.pack(">I", ms) + tag


class NotifyLifecycleTests(MsgdTestCase):
    shared_daemon = False

    def test_reload_sends_reloading_then_ready(self):
        d = self.start_daemon()
        d.send_signal(signal.SIGHUP)
        lines = notify_until(d, lambda l: "RELOADING=1" in l, timeout(1), "RELOADING=1")
        usec = [l for l in lines if l.startswith("MONOTONIC_USEC=")]
        self.assertTrue(usec, "RELOADING=1 without MONOTONIC_USEC=: %r" % lines)
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.assertLess(abs(int(usec[0].split("=", 1)[1]) - now_usec), 10 * 1000 * 1000)
        notify_until(d, lambda l: "READY=1" in l, timeout(1), "READY=1 after the reload")

    def test_stop_sends_stopping(self):
        d = self.start_daemon()
        d.send_signal(signal.SIGTERM)
        notify_until(d, lambda l: "STOPPING=1" in l, timeout(1), "STOPPING=1")
        self.assertEqual(d.wait_exit(timeout(1)), 0, d.log_tail())

    def test_failed_start_sends_errno(self):
        # Two listeners on one fixed port: the second bind fails.
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.listen(1)
        self.addCleanup(s.close)
        d = Daemon({"msg": {"listen": "127.0.0.1:%d" % port}}, name="failstart")
        d.spawn()
        self.addCleanup(lambda: d.finish(expect_rc=None))
        lines = notify_until(d, lambda l: any(x.startswith("ERRNO=") for x in l),
                             timeout(1), "ERRNO=")
        self.assertTrue(any(x.startswith("STATUS=") for x in lines))
        self.assertEqual(d.wait_exit(timeout(1)), 1)
        d.expected_exit = True


class UnreadNotifySocketTests(MsgdTestCase):
    shared_daemon = False

    def test_a_supervisor_that_never_reads_blocks_nothing(self):
        """The notify socket's queue holds about ten datagrams. After READY the
        test stops reading it; 20 reloads (two datagrams each) overflow it.
        msgd must go on accepting, reloading and stopping: the main loop never
        blocks on the notify socket."""
        d = self.start_daemon()
        for i in range(1, 21):  # one at a time: signals sent together merge
            d.send_signal(signal.SIGHUP)
            wait_until(lambda: d.read_log().count("reloaded ") >= i, timeout(1),
                       "reload %d to be done" % i)
        c = d.client()  # accepting happens on the main thread
        self.addCleanup(c.close)
        self.assert_frame(c.call(mp.PING, b"alive"), mp.REPLY | mp.PING, b"alive")
        d.send_signal(signal.SIGTERM)
        self.assertEqual(d.wait_exit(timeout(2)), 0, d.log_tail())


class WatchdogTests(MsgdTestCase):
    shared_daemon = False

    def test_pings_when_healthy_and_none_while_a_reactor_stalls(self):
        d = Daemon({"server": {"reactors": 1}, "admin": {"listen": "127.0.0.1:0"},
                    "diagnostics": {"stall_command": "on"}}, name="watchdog")
        d.extra_env = {"WATCHDOG_USEC": "400000"}
        self._daemons.append(d)
        self.addCleanup(self._finish_daemon, d, 0)
        d.start()
        # Healthy: WATCHDOG=1 about every 200 ms.
        t0 = time.monotonic()
        pings = 0
        while pings < 4:
            notify_until(d, lambda l: "WATCHDOG=1" in l, timeout(0.4), "WATCHDOG=1 (healthy)")
            pings += 1
        self.assertLess(time.monotonic() - t0, timeout(1))
        # Stall the only reactor for 1.5 s through the admin listener.
        a = self.connect("admin", daemon=d)
        a.send_raw(b"stall 1500\n")
        stall_start = time.monotonic()
        # Drain pings that were already on their way, then expect silence.
        seen_during = []
        while time.monotonic() - stall_start < 1.3:
            lines = d.recv_notify(0.05)
            if lines and "WATCHDOG=1" in lines:
                seen_during.append(time.monotonic() - stall_start)
        late = [t for t in seen_during if t > 0.5]
        self.assertEqual(late, [], "watchdog pinged while the reactor was stalled: %r" % seen_during)
        self.assertEqual(a.recv_exact(len(b"stalled\nEND\n"), timeout(1)), b"stalled\nEND\n")
        notify_until(d, lambda l: "WATCHDOG=1" in l, timeout(0.5), "WATCHDOG=1 after the stall")
        wait_until(lambda: "withholding the watchdog ping" in d.read_log(), timeout(1),
                   "the stall to be logged")

    def test_stall_is_off_by_default(self):
        d = self.start_daemon({"admin": {"listen": "127.0.0.1:0"}})
        a = self.connect("admin", daemon=d)
        a.send_raw(b"stall 10\n")
        line = a.recv_exact(len(b"ERR"), timeout(1))
        self.assertEqual(line, b"ERR")


class ReloadTests(MsgdTestCase):
    shared_daemon = False

    def rewrite(self, d, overrides):
        d.config = merge_config(d.config, overrides)
        d.write_config()

    def wait_log(self, d, text):
        # Log lines go through msgd's log thread: they may land just after
        # the notify datagram.
        wait_until(lambda: text in d.read_log(), timeout(1), "%r in the log" % text)

    def reload(self, d):
        d.send_signal(signal.SIGHUP)
        notify_until(d, lambda l: "READY=1" in l, timeout(1), "READY=1 after the reload")

    def test_live_keys_apply_to_existing_connections(self):
        d = self.start_daemon()
        c = self.connect(daemon=d)
        self.assert_frame(c.call(mp.ECHO, b"x" * 2000), mp.REPLY | mp.ECHO, b"x" * 2000)
        self.rewrite(d, {"msg": {"max_frame": "1K"}, "diagnostics": {"delay_command": "on"}})
        self.reload(d)
        # The same connection: DELAY now enabled, and a 2000-byte frame too large.
        self.assert_frame(c.call(mp.DELAY, delay_payload(0, b"on")), mp.REPLY | mp.DELAY, b"on")
        c.send_frame(mp.ECHO, b"y" * 2000)
        cmd, payload = c.recv_frame(timeout(1))
        self.assertEqual(cmd, mp.ERROR | mp.REPLY)
        self.assertEqual(mp.decode_error(payload)[0], mp.TOO_LARGE)
        c.expect_eof(timeout(1))

    def test_bad_file_keeps_the_running_config(self):
        d = self.start_daemon({"diagnostics": {"delay_command": "on"}})
        c = self.connect(daemon=d)
        with open(d.config_path, "a") as f:
            f.write("[server]\nreactors = 9999\n")
        self.reload(d)
        self.wait_log(d, "reload failed")
        self.assert_frame(c.call(mp.DELAY, delay_payload(0, b"still")), mp.REPLY | mp.DELAY,
                          b"still")
        self.assert_frame(c.call(mp.ECHO, b"z" * 3000), mp.REPLY | mp.ECHO, b"z" * 3000)

    def test_failed_post_answers_every_waiter_and_applies_nothing(self):
        """A reload whose message to one reactor cannot be allocated (injected:
        MSGD_FAULT_RELOAD_ALLOC=1, the second of two reactors) applies
        nothing anywhere, still follows RELOADING with READY=1, and answers
        every admin `reload` waiting; the next reload works."""
        d = Daemon({"server": {"reactors": 2}, "admin": {"listen": "127.0.0.1:0"},
                    "limits": {"max_subscriptions": 2}}, name="reload-fault")
        d.extra_env = {"MSGD_FAULT_RELOAD_ALLOC": "1"}
        self._daemons.append(d)
        self.addCleanup(self._finish_daemon, d, 0)
        d.start()
        # One client on each reactor (round robin), each at the limit.
        clients = [self.connect(daemon=d) for _ in range(2)]
        wait_until(lambda: all(self.stats(clients[0])["reactor.%d.connections_current" % r] > 0
                               for r in range(2)), timeout(1), "a client on each reactor")
        for c in clients:
            for t in (b"a", b"b"):
                self.assert_frame(c.call(mp.SUBSCRIBE, t), mp.REPLY | mp.SUBSCRIBE, b"")
        self.rewrite(d, {"limits": {"max_subscriptions": 3}})
        admins = [self.connect("admin", daemon=d) for _ in range(3)]
        for a in admins:
            a.send_raw(b"reload\n")
        for a in admins:
            text = b""
            deadline = time.monotonic() + timeout(2)
            while not text.endswith(b"END\n") and time.monotonic() < deadline:
                text += a.sock.recv(4096)
            self.assertIn(b"ERR reload failed: out of memory", text)
        notify_until(d, lambda l: "READY=1" in l, timeout(1), "READY=1 after the failed reload")
        self.assertNotIn("RELOADING=1", "\n".join(d.datagrams[-1:]))
        # Nothing was applied: neither reactor takes a third topic.
        for c in clients:
            self.assert_error(c.call(mp.SUBSCRIBE, b"c"), mp.SUBSCRIBE, mp.LIMIT_EXCEEDED)
        self.wait_log(d, "reload: out of memory: running configuration kept")
        # SIGHUP meets the same fault: READY=1 follows all the same.
        self.reload(d)
        for c in clients:
            self.assert_error(c.call(mp.SUBSCRIBE, b"c"), mp.SUBSCRIBE, mp.LIMIT_EXCEEDED)

    def test_restart_only_keys_are_logged_and_kept(self):
        d = self.start_daemon()
        port = d.port()
        self.rewrite(d, {"msg": {"listen": "127.0.0.1:1"}, "server": {"workers": 3}})
        self.reload(d)
        self.wait_log(d, "[msg] listen changed; it needs a restart")
        self.wait_log(d, "[server] workers changed; it needs a restart")
        c = d.client()
        self.addCleanup(c.close)
        self.assertEqual(d.port(), port)
        self.assert_frame(c.call(mp.PING, b"p"), mp.REPLY | mp.PING, b"p")

    def test_no_connection_dropped_by_reloads(self):
        d = self.start_daemon()
        clients = [self.connect(daemon=d) for _ in range(20)]
        for i in range(20):
            d.send_signal(signal.SIGHUP)
            for j, c in enumerate(clients):
                tag = b"%d-%d" % (i, j)
                self.assert_frame(c.call(mp.ECHO, tag), mp.REPLY | mp.ECHO, tag)
            notify_until(d, lambda l: "READY=1" in l, timeout(1), "READY=1 after reload %d" % i)


class DrainTests(MsgdTestCase):
    shared_daemon = False
    config = {"diagnostics": {"delay_command": "on"}, "timeouts": {"drain_timeout": "3s"}}

    def test_in_flight_work_is_answered_then_closed(self):
        d = self.start_daemon(self.config)
        c = self.connect(daemon=d)
        c.send_frame(mp.DELAY, delay_payload(400, b"slow"))
        c.send_frame(mp.ECHO, b"after-slow")
        # Make sure the daemon has read both before the signal.
        wait_until(lambda: self._jobs(d) >= 1,
                   what="the DELAY job to be queued")
        d.send_signal(signal.SIGTERM)
        frames = []
        while True:
            try:
                frames.append(c.recv_frame(timeout(1)))
            except mp.ConnectionClosed:
                break
        cmds = [f[0] for f in frames]
        self.assertIn(mp.GOAWAY, cmds, frames)
        replies = [f for f in frames if f[0] != mp.GOAWAY]
        self.assertEqual(replies, [(mp.REPLY | mp.DELAY, b"slow"),
                                   (mp.REPLY | mp.ECHO, b"after-slow")])
        self.assertEqual(d.wait_exit(timeout(1)), 0, d.log_tail())

    def _jobs(self, d):
        with d.client() as probe:
            return self.stats(probe).get("worker_jobs", 0)

    def test_after_goaway_requests_get_shutting_down_but_ping_works(self):
        d = self.start_daemon(self.config)
        c = self.connect(daemon=d)
        c.send_frame(mp.DELAY, delay_payload(1500, b"hold"))  # keeps the connection owed
        self.assertGreaterEqual(wait_until(lambda: self._jobs(d), what="job queued"), 1)
        d.send_signal(signal.SIGTERM)
        cmd, payload = c.recv_frame(timeout(1))
        self.assertEqual(cmd, mp.GOAWAY)
        (ms,) = struct.unpack(">I", payload[:4])
        self.assertLessEqual(ms, 3000)
        self.assertGreater(ms, 2000)
        self.assertEqual(payload[4:], b"server shutting down")
        # The listener is closed for the drain: a new client is refused at
        # once (and backs off), not left in a backlog nobody accepts.
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", d.port()), timeout=timeout(1)).close()
        c.send_frame(mp.ECHO, b"late")
        c.send_frame(mp.PING, b"still-there")
        got = [c.recv_frame(timeout(1)) for _ in range(3)]
        self.assertEqual(got[0], (mp.REPLY | mp.DELAY, b"hold"))
        self.assertEqual(got[1][0], mp.REPLY | mp.ERROR | mp.ECHO)
        self.assertEqual(mp.decode_error(got[1][1])[0], mp.SHUTTING_DOWN)
        self.assertEqual(got[2], (mp.REPLY | mp.PING, b"still-there"))
        c.expect_eof(timeout(1))
        self.assertEqual(d.wait_exit(timeout(1)), 0, d.log_tail())

    def test_deadline_closes_what_is_left(self):
        d = self.start_daemon({"diagnostics": {"delay_command": "on"},
                               "timeouts": {"drain_timeout": "300ms"}})
        c = self.connect(daemon=d)
        c.send_frame(mp.DELAY, delay_payload(10000, b"too-slow"))
        wait_until(lambda: self._jobs(d), what="job queued")
        t0 = time.monotonic()
        d.send_signal(signal.SIGTERM)
        self.assertEqual(c.recv_frame(timeout(1))[0], mp.GOAWAY)
        c.expect_eof(timeout(1), allow_reset=True)
        self.assertEqual(d.wait_exit(timeout(1)), 0, d.log_tail())
        self.assertLess(time.monotonic() - t0, 0.3 + 1.5 * timeout(0.2) + 1.0)

    def test_second_sigterm_ends_at_once(self):
        d = self.start_daemon({"diagnostics": {"delay_command": "on"},
                               "timeouts": {"drain_timeout": "60s"}})
        c = self.connect(daemon=d)
        c.send_frame(mp.DELAY, delay_payload(30000, b"never"))
        wait_until(lambda: self._jobs(d), what="job queued")
        d.send_signal(signal.SIGTERM)
        self.assertEqual(c.recv_frame(timeout(1))[0], mp.GOAWAY)
        t0 = time.monotonic()
        d.send_signal(signal.SIGTERM)
        self.assertEqual(d.wait_exit(timeout(1)), 0, d.log_tail())
        self.assertLess(time.monotonic() - t0, timeout(0.5))


class SocketActivationTests(MsgdTestCase):
    shared_daemon = False

    def spawn_activated(self, sock, names, cfg, args=()):
        """Starts msgd (with args) with sock passed as fd 3 the way systemd
        does it."""
        tmp = tempfile.mkdtemp(prefix="msgd-it-sa-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "msgd.ini")
        with open(path, "w") as f:
            f.write(render_config(merge_config(DEFAULT_CONFIG, cfg)))
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(os.path.join(tmp, "notify.sock"))
        self.addCleanup(notify.close)
        env = _clean_env()
        env.update({"LISTEN_FDS": "1", "LISTEN_FDNAMES": names,
                    "NOTIFY_SOCKET": os.path.join(tmp, "notify.sock")})
        fd = sock.fileno()

        def to_fd3():
            os.dup2(fd, 3)
            os.set_inheritable(3, True)
        # LISTEN_PID must be msgd's own pid: sh sets it, then execs msgd in place.
        proc = subprocess.Popen(["sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"', MSGD_BIN, "-c", path]
                                + list(args),
                                env=env, preexec_fn=to_fd3, pass_fds=(fd,),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(tmp, "stderr.log"), "wb"))
        self.addCleanup(lambda: proc.poll() is None and (proc.kill(), proc.wait()))
        return proc, notify, os.path.join(tmp, "stderr.log")

    def wait_notify(self, notify, proc, what):
        deadline = time.monotonic() + timeout(1)
        import select
        while time.monotonic() < deadline:
            r, _, _ = select.select([notify], [], [], 0.1)
            if r:
                data = notify.recv(65536).decode()
                if what in data:
                    return data
            if proc.poll() is not None:
                return None
        return None

    def test_adopts_passed_socket_by_name(self):
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(16)
        self.addCleanup(lsock.close)
        port = lsock.getsockname()[1]
        proc, notify, log = self.spawn_activated(lsock, "msg", {"msg": {"listen": "127.0.0.1:0"},
                                                                 "echo": {"listen": ""}})
        status = self.wait_notify(notify, proc, "READY=1")
        self.assertIsNotNone(status, open(log).read())
        self.assertIn("msg=127.0.0.1:%d" % port, status)
        with mp.Client("127.0.0.1", port, timeout=timeout(1)) as c:
            self.assertEqual(c.call(mp.PING, b"sa"), (mp.REPLY | mp.PING, b"sa"))
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(timeout(1)), 0)
        # A configured port 0 (any port) on the passed host is no override.
        self.assertNotIn("socket activation", open(log).read())

    def test_passed_socket_that_overrides_listen_is_warned(self):
        """Bug 4 of issue 14: the operator set [msg] listen to another
        address than the socket unit's; msgd serves the passed socket, and
        says so at start and in `msgd -t` (which sees passed sockets only
        when LISTEN_FDS is set)."""
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(16)
        self.addCleanup(lsock.close)
        port = lsock.getsockname()[1]
        other = socket.socket()  # a port that is surely not the passed one
        other.bind(("127.0.0.1", 0))
        self.addCleanup(other.close)
        configured = "127.0.0.1:%d" % other.getsockname()[1]
        cfg = {"msg": {"listen": configured}, "echo": {"listen": ""}}
        warning = ("warning: socket activation: systemd passed 127.0.0.1:%d for [msg], which msgd "
                   "uses instead of [msg] listen = %s" % (port, configured))
        proc, notify, log = self.spawn_activated(lsock, "msg", cfg, ["-t"])
        self.assertEqual(proc.wait(timeout(1)), 0, open(log).read())
        text = open(log).read()
        self.assertIn(warning, text)
        self.assertIn(": ok", text)
        proc, notify, log = self.spawn_activated(lsock, "msg", cfg)
        status = self.wait_notify(notify, proc, "READY=1")
        self.assertIsNotNone(status, open(log).read())
        self.assertIn("msg=127.0.0.1:%d" % port, status)
        text = open(log).read()
        self.assertIn(warning, text)
        self.assertIn("[warn]", text.split("socket activation")[0].splitlines()[-1])
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(timeout(1)), 0)
        # Without LISTEN_FDS, -t has nothing to compare: no warning.
        path = os.path.join(os.path.dirname(log), "msgd.ini")
        r = subprocess.run([MSGD_BIN, "-t", "-c", path], env=_clean_env(), capture_output=True,
                           text=True, timeout=timeout(1))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("socket activation", r.stderr)

    def test_adopts_unnamed_socket_by_address(self):
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(16)
        self.addCleanup(lsock.close)
        port = lsock.getsockname()[1]
        proc, notify, log = self.spawn_activated(
            lsock, "", {"echo": {"listen": "127.0.0.1:%d" % port}})
        status = self.wait_notify(notify, proc, "READY=1")
        self.assertIsNotNone(status, open(log).read())
        self.assertIn("echo=127.0.0.1:%d" % port, status)
        with socket.create_connection(("127.0.0.1", port), timeout=timeout(1)) as e:
            e.sendall(b"echoed")
            self.assertEqual(e.recv(16), b"echoed")
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(timeout(1)), 0)

    def test_unmatched_socket_is_an_error(self):
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(16)
        self.addCleanup(lsock.close)
        proc, notify, log = self.spawn_activated(lsock, "", {"msg": {"listen": "127.0.0.1:0"}})
        self.assertEqual(proc.wait(timeout(1)), 1)
        self.assertIn("matches no listener", open(log).read())


class SystemdSocketActivateTests(MsgdTestCase):
    """The real tool: systemd-socket-activate listens on a unix socket, and on
    the first connection execs msgd with it as LISTEN_FDS (name "msg")."""
    shared_daemon = False

    def test_systemd_socket_activate(self):
        tmp = tempfile.mkdtemp(prefix="msgd-it-ssa-")
        self.addCleanup(shutil.rmtree, tmp, True)
        sock_path = os.path.join(tmp, "msg.sock")
        cfg_path = os.path.join(tmp, "msgd.ini")
        with open(cfg_path, "w") as f:
            f.write(render_config(merge_config(DEFAULT_CONFIG, {
                "msg": {"listen": "unix:" + sock_path}, "echo": {"listen": ""}})))
        notify_path = os.path.join(tmp, "notify.sock")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        self.addCleanup(notify.close)
        log = open(os.path.join(tmp, "stderr.log"), "wb")
        self.addCleanup(log.close)
        proc = subprocess.Popen(
            ["systemd-socket-activate", "-l", sock_path, "--fdname=msg",
             "-E", "NOTIFY_SOCKET=" + notify_path, MSGD_BIN, "-c", cfg_path],
            env=_clean_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        self.addCleanup(lambda: proc.poll() is None and (proc.kill(), proc.wait()))
        wait_until(lambda: os.path.exists(sock_path), what="the activation socket")
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(timeout(1))
        self.addCleanup(c.close)
        c.connect(sock_path)  # this connection starts msgd, then waits in the backlog
        c.sendall(mp.encode(mp.PING, b"activated"))
        reader = mp.FrameReader()
        deadline = time.monotonic() + timeout(1)
        frame = None
        while frame is None and time.monotonic() < deadline:
            data = c.recv(4096)
            self.assertTrue(data, "EOF before the reply\n" + open(log.name).read())
            reader.feed(data)
            frame = reader.next_frame()
        self.assertEqual((frame.cmd, bytes(frame.payload)), (mp.REPLY | mp.PING, b"activated"))
        with open(log.name) as f:
            text = f.read()
        self.assertIn("listening on unix:" + sock_path, text)
        proc.send_signal(signal.SIGTERM)  # msgd replaced the tool: same pid
        self.assertEqual(proc.wait(timeout(1)), 0, open(log.name).read())


class PrivilegeTests(MsgdTestCase):
    """[server] user: as root, msgd drops to it after binding (and warns when
    it is unset); not as root, it stays who it is and says nothing of root."""
    shared_daemon = False

    def test_user_setting(self):
        import pwd
        nobody = pwd.getpwnam("nobody")
        d = Daemon({"server": {"user": "nobody"}}, name="dropuser")
        d.open_notify = True  # as systemd's own notify socket is
        self._daemons.append(d)
        self.addCleanup(self._finish_daemon, d, 0)
        d.start()
        with open("/proc/%d/status" % d.pid) as f:
            uids = {int(u) for u in [l for l in f if l.startswith("Uid:")][0].split()[1:]}
        if os.geteuid() == 0:
            self.assertEqual(uids, {nobody.pw_uid})
            self.assertIn("dropped privileges to user nobody", d.read_log())
        else:
            self.assertEqual(uids, {os.geteuid()})
            self.assertNotIn("dropped privileges", d.read_log())
        c = self.connect(daemon=d)
        self.assert_frame(c.call(mp.PING, b"u"), mp.REPLY | mp.PING, b"u")

    def test_unix_sockets_belong_to_the_user_and_are_removed_at_stop(self):
        """Bug 2 of issue 14: after dropping to [server] user, the unix
        sockets msgd bound are that user's (mode 0660, the user's group), so
        it can remove them at stop, here from a sticky directory like /tmp;
        a socket in a directory the user cannot write is warned about at
        start as one that will be left behind."""
        if os.geteuid() != 0:
            self.skipTest("needs root to drop privileges")
        import pwd
        nobody = pwd.getpwnam("nobody")
        d = Daemon(name="dropunix")
        d.open_notify = True  # also opens d.tmp (0711) to nobody
        sticky = os.path.join(d.tmp, "sticky")
        closed = os.path.join(d.tmp, "closed")
        os.mkdir(sticky)
        os.chmod(sticky, 0o1777)
        os.mkdir(closed)
        os.chmod(closed, 0o755)
        admin_path = os.path.join(sticky, "admin.sock")
        echo_path = os.path.join(closed, "echo.sock")
        d.config = merge_config(d.config, {"server": {"user": "nobody"},
                                           "admin": {"listen": "unix:" + admin_path},
                                           "echo": {"listen": "unix:" + echo_path}})
        self._daemons.append(d)
        d.start()
        st = os.stat(admin_path)
        self.assertEqual((st.st_uid, st.st_gid), (nobody.pw_uid, nobody.pw_gid))
        self.assertEqual(st.st_mode & 0o777, 0o660)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as a:
            a.settimeout(timeout(1))
            a.connect(admin_path)
            a.sendall(b"stats\n")
            got = b""
            while b"END" not in got:
                chunk = a.recv(65536)
                self.assertTrue(chunk, got)
                got += chunk
        log = d.read_log()
        self.assertIn("unix:%s: user nobody cannot write %s, so the socket will be left behind"
                      % (echo_path, closed), log)
        self.assertNotIn("cannot write %s," % sticky, log)
        d.stop()
        self.assertFalse(os.path.exists(admin_path), "the admin socket was left behind")
        self.assertIn("unix:%s: cannot remove the socket file" % echo_path, d.read_log())
        self.assertEqual(d.finish(), [])

    def test_root_without_user_warns(self):
        d = self.start_daemon()
        warned = "running as root: set [server] user" in d.read_log()
        self.assertEqual(warned, os.geteuid() == 0, d.log_tail())


class ThreadNameTests(MsgdTestCase):
    """Issue 14: every thread is named, so `top -H`, `ps -L` and perf tell
    them apart: msgd-main, msgd-rN (reactor N), msgd-rN-wM (its worker M),
    msgd-log."""
    shared_daemon = False

    def test_thread_names(self):
        d = self.start_daemon({"server": {"reactors": "2", "workers": "2"}})
        with open("/proc/%d/maps" % d.pid) as f:
            tsan = "libtsan" in f.read()

        def names():
            out = []
            for tid in os.listdir("/proc/%d/task" % d.pid):
                try:
                    with open("/proc/%d/task/%s/comm" % (d.pid, tid)) as f:
                        out.append(f.read().strip())
                except FileNotFoundError:
                    pass
            # ThreadSanitizer starts a thread of its own (when it first
            # needs it), named after the thread that started it.
            if tsan and out.count("msgd-main") > 1:
                out.remove("msgd-main")
            return sorted(out)
        want = sorted(["msgd-main", "msgd-log", "msgd-r0", "msgd-r1", "msgd-r0-w0",
                       "msgd-r0-w1", "msgd-r1-w0", "msgd-r1-w1"])
        wait_until(lambda: names() == want, what="the thread names %r (have %r)" % (want, names()))
        with open("/proc/%d/comm" % d.pid) as f:
            self.assertEqual(f.read().strip(), "msgd-main")


class ReadmeFirstScreenTests(MsgdTestCase):
    """Issue 14: the README's examples work as pasted (with the ports of a
    test daemon in place of 7700 and 7701), and `deps.sh run`, what `make
    run` installs, has what they use and nothing of the test tools."""
    shared_daemon = False

    def blocks(self, lang):
        import re
        with open(os.path.join(REPO, "README.md")) as f:
            text = f.read()
        talk = text.split("## Talking to it", 1)[1].split("\n## ", 1)[0]
        return re.findall(r"```%s\n(.*?)```" % lang, talk, re.S)

    def test_examples_run_as_pasted(self):
        d = self.start_daemon({"admin": {"listen": "127.0.0.1:0"}})
        ports = {"7700": str(d.port("msg")), "7701": str(d.port("admin"))}
        def local(code):
            for a, b in ports.items():
                code = code.replace(a, b)
            return code
        py = self.blocks("python")
        sh = self.blocks("sh")
        self.assertEqual((len(py), len(sh)), (1, 1))
        r = subprocess.run(["python3", "-c", local(py[0])], capture_output=True, text=True,
                           timeout=timeout(4))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "4d534750000000018000000100000002" + "6869")
        lines = [l for l in sh[0].splitlines() if l.strip()]
        self.assertIn("xxd", lines[0])
        r = subprocess.run(["sh", "-c", local(lines[0])], capture_output=True, text=True,
                           timeout=timeout(4))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("4d53 4750 0000 0001 8000 0001 0000 0002", r.stdout)
        self.assertIn("MSGP", r.stdout)
        r = subprocess.run(["sh", "-c", local(lines[1])], capture_output=True, text=True,
                           timeout=timeout(4))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.splitlines()[-1], "END", r.stdout)

    def test_run_group_has_what_the_readme_uses(self):
        r = subprocess.run(["bash", "-c", 'source <(sed -n "/^run=(/,/)/p" "$0"); echo "${run[@]}"',
                            os.path.join(REPO, "scripts", "deps.sh")],
                           capture_output=True, text=True, timeout=timeout(2))
        run = r.stdout.split()
        for pkg in ("netcat-openbsd", "xxd", "python3", "libev-dev", "gcc"):
            self.assertIn(pkg, run)
        for pkg in ("clang", "libclang-rt-14-dev", "prometheus", "valgrind"):
            self.assertNotIn(pkg, run)
        with open(os.path.join(REPO, "Makefile")) as f:
            self.assertIn("@bash scripts/deps.sh run\n", f.read())


class UnitFileTests(unittest.TestCase):
    def rendered(self):
        tmp = tempfile.mkdtemp(prefix="msgd-it-units-")
        self.addCleanup(shutil.rmtree, tmp, True)
        bindir = os.path.dirname(os.path.abspath(MSGD_BIN))
        with open(os.path.join(REPO, "systemd", "msgd.service.in")) as f:
            text = f.read().replace("@SBINDIR@", bindir).replace("@SYSCONFDIR@", "/etc")
        with open(os.path.join(tmp, "msgd.service"), "w") as f:
            f.write(text)
        shutil.copy(os.path.join(REPO, "systemd", "msgd.socket"), tmp)
        return tmp

    def test_verify_prints_nothing(self):
        tmp = self.rendered()
        r = subprocess.run(["systemd-analyze", "verify", "msgd.socket", "msgd.service"],
                           cwd=tmp, capture_output=True, text=True, timeout=timeout(6))
        self.assertEqual(r.stderr, "", r.stderr)
        self.assertEqual(r.returncode, 0)

    def test_security_exposure_at_most_2(self):
        tmp = self.rendered()
        r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "msgd.service"],
                           cwd=tmp, capture_output=True, text=True, timeout=timeout(6))
        line = [l for l in r.stdout.splitlines() if "Overall exposure level" in l]
        self.assertTrue(line, r.stdout + r.stderr)
        score = float(line[0].split(":", 1)[1].split()[0])
        self.assertLessEqual(score, 2.0, line[0])


class InstallTests(unittest.TestCase):
    def make(self, *args):
        build = os.path.dirname(os.path.abspath(MSGD_BIN))
        r = subprocess.run(["make", "-s", "-C", REPO, "BUILD=" + os.path.relpath(build, REPO)]
                           + list(args), capture_output=True, text=True, timeout=timeout(12))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return r.stdout

    def test_install_and_uninstall_honour_destdir_and_prefix(self):
        """CONFIG.md "Files installed": msgd in sbin, the tools in bin, the
        four man pages, the units in systemd's own unit directory (pkg-config
        systemd), the configuration in SYSCONFDIR."""
        dest = tempfile.mkdtemp(prefix="msgd-it-install-")
        self.addCleanup(shutil.rmtree, dest, True)
        self.make("install", "DESTDIR=" + dest, "PREFIX=/opt/msgd")
        binary = os.path.join(dest, "opt/msgd/sbin/msgd")
        ini = os.path.join(dest, "etc/msgd/msgd.ini")
        unitdir = subprocess.run(["pkg-config", "--variable=systemdsystemunitdir", "systemd"],
                                 capture_output=True, text=True, timeout=timeout(2)).stdout.strip()
        self.assertTrue(unitdir.startswith("/"), "pkg-config systemd gave %r" % unitdir)
        unit = os.path.join(dest, unitdir.lstrip("/"), "msgd.service")
        mans = [os.path.join(dest, "opt/msgd/share/man", m) for m in
                ("man8/msgd.8", "man5/msgd.ini.5", "man1/msgcli.1", "man1/msgbench.1")]
        tools = [os.path.join(dest, "opt/msgd/bin", t) for t in ("msgcli", "msgbench")]
        for p in [binary, ini, unit, os.path.join(os.path.dirname(unit), "msgd.socket")] + mans + tools:
            self.assertTrue(os.path.exists(p), p)
        self.assertFalse(os.path.exists(os.path.join(dest, "opt/msgd/bin/msgd")))
        with open(unit) as f:
            text = f.read()
        self.assertIn("ExecStart=/opt/msgd/sbin/msgd -c /etc/msgd/msgd.ini", text)
        self.assertIn("ExecStartPre=/opt/msgd/sbin/msgd -t -c /etc/msgd/msgd.ini", text)
        for m in mans:
            r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", m], capture_output=True,
                               text=True, timeout=timeout(4), env=dict(os.environ, LC_ALL="C.UTF-8"))
            self.assertEqual((r.returncode, r.stderr), (0, ""), m)
            with open(m) as f:
                self.assertNotIn("@", f.read(), m)
        # The module header and its pkg-config file: a module builds with them.
        header = os.path.join(dest, "opt/msgd/include/msgd/module.h")
        pc = os.path.join(dest, "opt/msgd/lib/pkgconfig/msgd.pc")
        self.assertTrue(os.path.exists(header), header)
        env = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(pc), PKG_CONFIG_SYSROOT_DIR=dest)
        cflags = subprocess.run(["pkg-config", "--cflags", "msgd"], env=env, capture_output=True,
                                text=True, timeout=timeout(2))
        self.assertEqual(cflags.returncode, 0, cflags.stderr)
        self.assertEqual(cflags.stdout.split(), ["-I" + os.path.dirname(header)])
        src = os.path.join(dest, "m.c")
        with open(src, "w") as f:
            f.write('#include "module.h"\n'
                    'const struct msgd_module msgd_module = {\n'
                    '    .api_version = MSGD_MODULE_API_VERSION, .name = "m"};\n')
        cc = subprocess.run(["cc", "-std=c11", "-Wall", "-Werror", "-fPIC", "-shared"]
                            + cflags.stdout.split() + ["-o", os.path.join(dest, "m.so"), src],
                            capture_output=True, text=True, timeout=timeout(6))
        self.assertEqual(cc.returncode, 0, cc.stderr)
        # An existing configuration is never overwritten.
        with open(ini, "a") as f:
            f.write("; edited by the operator\n")
        self.make("install", "DESTDIR=" + dest, "PREFIX=/opt/msgd")
        with open(ini) as f:
            self.assertIn("; edited by the operator", f.read())
        self.make("uninstall", "DESTDIR=" + dest, "PREFIX=/opt/msgd")
        self.assertFalse(os.path.exists(binary))
        self.assertFalse(os.path.exists(unit))
        for p in mans + tools:
            self.assertFalse(os.path.exists(p), p)
        self.assertFalse(os.path.exists(header))
        self.assertFalse(os.path.exists(pc))


    def test_unitdir_and_sysconfdir(self):
        """UNITDIR= overrides pkg-config's directory; SYSCONFDIR= moves the
        configuration, and the unit's -c and msgd's default -c follow it."""
        dest = tempfile.mkdtemp(prefix="msgd-it-install2-")
        self.addCleanup(shutil.rmtree, dest, True)
        # A build of its own: the default -c is compiled in, and the build
        # under test (perhaps a sanitizer one) must not be rebuilt.
        build = os.path.join(dest, "build")
        r = subprocess.run(["make", "-s", "-j2", "-C", REPO, "BUILD=" + build, "install",
                            "DESTDIR=" + dest, "PREFIX=/usr", "SYSCONFDIR=/opt/etc",
                            "UNITDIR=/opt/units"],
                           capture_output=True, text=True, timeout=timeout(180))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with open(os.path.join(dest, "opt/units/msgd.service")) as f:
            text = f.read()
        self.assertIn("ExecStart=/usr/sbin/msgd -c /opt/etc/msgd/msgd.ini", text)
        self.assertNotIn("/etc/msgd/msgd.ini", text.replace("/opt/etc/msgd/msgd.ini", ""))
        self.assertTrue(os.path.exists(os.path.join(dest, "opt/etc/msgd/msgd.ini")))
        with open(os.path.join(dest, "usr/share/man/man8/msgd.8")) as f:
            self.assertIn("/opt/etc/msgd/msgd.ini", f.read())
        r = subprocess.run([os.path.join(dest, "usr/sbin/msgd"), "-h"], capture_output=True,
                           text=True, timeout=timeout(2))
        self.assertIn("(default /opt/etc/msgd/msgd.ini)", r.stdout)
        # Without -c and without the file: the default path is what it reads.
        r = subprocess.run([os.path.join(dest, "usr/sbin/msgd"), "-t"], capture_output=True,
                           text=True, timeout=timeout(2))
        self.assertEqual(r.returncode, 1)
        self.assertTrue(r.stderr.startswith("/opt/etc/msgd/msgd.ini: "), r.stderr)

if __name__ == "__main__":
    unittest.main()
