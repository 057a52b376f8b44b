"""`msgd -t` and start-up with a bad configuration (CONFIG.md)."""

import os
import shutil
import subprocess
import tempfile
import unittest

import harness
from harness import DEFAULT_CONFIG, render_config, check_config, timeout


class ConfigCheckTests(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="msgd-it-config-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def check(self, path):
        rc, err = check_config(path)
        found = harness.find_markers(err)
        self.assertEqual(found, [], "sanitizer report from msgd -t:\n%s" % err)
        return rc, err

    def assert_bad(self, path, where, rc_err=None):
        rc, err = rc_err or self.check(path)
        self.assertEqual(rc, 1, "msgd -t -c %s: rc %d, stderr:\n%s" % (path, rc, err))
        self.assertIn(where, err, "stderr must name the problem as %r:\n%s" % (where, err))
        self.assertNotIn("%s: ok" % path, err)
        return err

    def test_good_file(self):
        path = self.write("good.ini", render_config(DEFAULT_CONFIG))
        rc, err = self.check(path)
        self.assertEqual(rc, 0, "stderr:\n%s" % err)
        self.assertIn("%s: ok" % path, err)

    def test_admin_off_loopback_is_a_warning(self):
        """An admin listener that is not on loopback or a unix socket is
        allowed, with a warning in msgd -t (admin has no authentication);
        a loopback one gets none. The daemon logs it at start too."""
        path = self.write("wide.ini", "[admin]\nlisten = 0.0.0.0:0\n[msg]\nlisten = 127.0.0.1:0\n")
        rc, err = self.check(path)
        self.assertEqual(rc, 0, err)
        self.assertIn("%s: warning: [admin] listen 0.0.0.0:0 is not loopback" % path, err)
        self.assertIn("%s: ok" % path, err)
        path = self.write("narrow.ini", "[admin]\nlisten = 127.0.0.1:0\n")
        rc, err = self.check(path)
        self.assertEqual(rc, 0, err)
        self.assertNotIn("warning", err)
        d = harness.Daemon({"admin": {"listen": "0.0.0.0:0"}}, name="admin-wide")
        try:
            d.start()
            harness.wait_until(lambda: "is not loopback" in d.read_log(), timeout(1),
                               "the admin warning in the log")
            self.assertIn("[warn]", d.read_log().split("is not loopback")[0].splitlines()[-1])
        finally:
            self.assertEqual(d.finish(), [])

    def test_out_of_range_value_names_line(self):
        path = self.write("bad.ini", "[server]\nworkers = 1\nreactors = 999\n")
        self.assert_bad(path, "%s:3:" % path)

    def test_unknown_key_names_line(self):
        path = self.write("unknown.ini",
                          "[server]\nreactors = 2\n\n[msg]\nlisten = 127.0.0.1:0\nno_such_key = 1\n")
        self.assert_bad(path, "%s:6:" % path)

    def test_unknown_section_names_line(self):
        path = self.write("section.ini", "[no_such_section]\nkey = 1\n")
        rc, err = self.check(path)
        self.assertEqual(rc, 1, err)
        self.assertTrue("%s:1:" % path in err or "%s:2:" % path in err,
                        "the unknown section must be reported with a line:\n%s" % err)

    def test_duplicate_key_names_line(self):
        path = self.write("dup.ini", "[server]\nreactors = 2\nreactors = 3\n")
        self.assert_bad(path, "%s:3:" % path)

    def test_unparsable_value_names_line(self):
        path = self.write("parse.ini", "[timeouts]\nheartbeat_interval = soon\n")
        self.assert_bad(path, "%s:2:" % path)

    def test_long_line_names_line(self):
        path = self.write("long.ini", "[server]\nreactors = 2\n; " + "x" * 200 + "\nworkers = 1\n")
        self.assert_bad(path, "%s:3:" % path)

    def test_address_not_in_grammar_names_line(self):
        # One address grammar: what `msgd -t` passes is what start-up binds, so a
        # host name (no DNS in the daemon) fails here, not at start.
        for addr in ("example.com:1", "host.local:7700", "1.2.3:80", "[zz::1]:1",
                     "unix:/" + "p" * 108):
            with self.subTest(addr=addr):
                path = self.write("addr.ini", "[server]\nworkers = 1\n\n[msg]\nlisten = %s\n"
                                  % addr)
                err = self.assert_bad(path, "%s:5:" % path)
                self.assertIn(addr, err)

    def test_addresses_in_grammar_pass(self):
        path = self.write("addrs.ini", "[msg]\nlisten = localhost:0, [::1]:0, unix:%s\n"
                          "[admin]\nlisten = 127.0.0.1:0\n" % os.path.join(self.tmp, "m.sock"))
        rc, err = self.check(path)
        self.assertEqual(rc, 0, "stderr:\n%s" % err)
        self.assertIn("%s: ok" % path, err)

    def test_keys_that_disagree_have_no_line(self):
        # output_hard_limit < output_high_water + max_frame + 16
        path = self.write("disagree.ini",
                          "[msg]\nmax_frame = 64K\n[limits]\noutput_high_water = 1M\n"
                          "output_hard_limit = 1M\n")
        err = self.assert_bad(path, "%s: " % path)
        self.assertNotIn("%s: ok" % path, err)

    def test_missing_file(self):
        path = os.path.join(self.tmp, "does-not-exist.ini")
        rc, err = self.check(path)
        self.assertEqual(rc, 1, err)
        self.assertIn("%s: " % path, err)
        self.assertNotIn("%s: ok" % path, err)

    def test_listener_timeouts(self):
        """[msg] heartbeat_interval/idle_timeout and [echo]/[admin]/[http]
        idle_timeout override [timeouts]; empty inherits; [msg]'s pair must
        agree like [timeouts]'s, counting an inherited value."""
        good = self.write("lt.ini", "[msg]\nheartbeat_interval = 10s\nidle_timeout = 0\n"
                          "[echo]\nidle_timeout = 5m\n[admin]\nidle_timeout =\n"
                          "[http]\nidle_timeout = 2s\n")
        rc, err = self.check(good)
        self.assertEqual(rc, 0, err)
        bad = self.write("lt-bad.ini", "[msg]\nidle_timeout = 20s\n")
        err = self.assert_bad(bad, "%s: idle_timeout of [msg] (20s) must be greater than its "
                              "heartbeat_interval (30s, from [timeouts])" % bad)
        self.assertNotIn(":1:", err)
        bad = self.write("lt-bad2.ini", "[echo]\nidle_timeout = 50ms\n[msg]\nheartbeat_interval = x\n")
        err = self.assert_bad(bad, "%s:2: bad value '50ms' for 'idle_timeout' in [echo]: out of "
                              "range 0 or 100ms..24h" % bad)
        self.assertIn("%s:4: bad value 'x' for 'heartbeat_interval' in [msg]" % bad, err)

    def run_as_journal(self, args):
        """Runs msgd with args, its stderr a file that JOURNAL_STREAM names
        (device:inode), as systemd's StandardError=journal does ->
        (rc, stderr lines)."""
        err_path = os.path.join(self.tmp, "journal-stream.log")
        with open(err_path, "wb") as f:
            st = os.fstat(f.fileno())
            env = harness._clean_env()
            env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
            r = subprocess.run([harness.MSGD_BIN] + list(args), stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=f, env=env, timeout=timeout(2))
        with open(err_path, errors="replace") as f:
            lines = f.read().splitlines()
        self.assertEqual(harness.find_markers("\n".join(lines)), [], lines)
        return r.returncode, lines

    def test_journal_priorities_before_the_logger_and_in_check(self):
        """Bug 3 of issue 14: under systemd (JOURNAL_STREAM is stderr) the
        errors printed before the logger starts, and `msgd -t`'s lines from
        ExecStartPre, carry <3> (error), <4> (warning) or <6> ("ok"), so
        `journalctl -p warning` shows why msgd did not start."""
        bad = self.write("bad.ini", "[server]\nworkers = 1\nreactors = 999\nbacklog = x\n")
        for args in (["-t", "-c", bad], ["-c", bad]):
            rc, lines = self.run_as_journal(args)
            self.assertEqual(rc, 1, lines)
            self.assertGreaterEqual(len(lines), 2, lines)
            for line in lines:
                self.assertTrue(line.startswith("<3>%s:" % bad), (args, lines))
        rc, lines = self.run_as_journal(["-t", "-c", os.path.join(self.tmp, "missing.ini")])
        self.assertEqual(rc, 1, lines)
        self.assertTrue(lines and all(l.startswith("<3>") for l in lines), lines)
        wide = self.write("wide.ini", "[admin]\nlisten = 0.0.0.0:0\n[msg]\nlisten = 127.0.0.1:0\n")
        rc, lines = self.run_as_journal(["-t", "-c", wide])
        self.assertEqual(rc, 0, lines)
        self.assertEqual(len(lines), 2, lines)
        self.assertTrue(lines[0].startswith("<4>%s: warning: [admin] listen" % wide), lines)
        self.assertEqual(lines[1], "<6>%s: ok" % wide)
        # Not the journal (JOURNAL_STREAM names another file): no prefix.
        other = self.write("other", "")
        st = os.stat(other)
        env = harness._clean_env()
        env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
        r = harness.run_msgd(["-t", "-c", bad], env=env)
        self.assertEqual(r.returncode, 1)
        self.assertTrue(r.stderr.startswith("%s:" % bad), r.stderr)

    def test_start_with_bad_file_exits_1(self):
        d = harness.Daemon(name="badstart")
        d.write_config = lambda: None  # keep the bad file below
        with open(d.config_path, "w") as f:
            f.write("[server]\nworkers = 1\nreactors = 999\n")
        d.expected_exit = True
        try:
            d.spawn()
            rc = d.wait_exit(timeout(2))
            if rc is None:
                d.kill()
                self.fail("msgd with a bad config did not exit within %.1fs\n%s"
                          % (timeout(2), d.log_tail()))
            self.assertEqual(rc, 1, d.log_tail())
            log = d.read_log()
            self.assertIn("%s:3:" % d.config_path, log)
            while d.recv_notify(0) is not None:
                pass
            self.assertFalse(any("READY=1" in dg.split("\n") for dg in d.datagrams),
                             "msgd sent READY=1 with a bad config: %r" % d.datagrams)
        finally:
            problems = d.finish(expect_rc=1)
        self.assertEqual(problems, [])


if __name__ == "__main__":
    unittest.main()


class ReactorsPerCpuTests(harness.MsgdTestCase):
    """`reactors = 0` is one reactor per CPU msgd may run on: its affinity
    mask (taskset, systemd's CPUAffinity=), not every CPU online."""
    config = {"server": {"reactors": 1}}

    def reactors_of(self, d):
        stats = self.stats(self.connect(daemon=d))
        return len({k.split(".")[1] for k in stats if k.startswith("reactor.")})

    def test_zero_follows_the_affinity_mask(self):
        mine = os.sched_getaffinity(0)
        d = self.start_daemon({"server": {"reactors": 0}}, name="all_cpus")
        self.assertEqual(self.reactors_of(d), len(mine))
        os.sched_setaffinity(0, {min(mine)})    # the daemon inherits it
        try:
            pinned = self.start_daemon({"server": {"reactors": 0}}, name="one_cpu")
        finally:
            os.sched_setaffinity(0, mine)
        self.assertEqual(self.reactors_of(pinned), 1)
        # Logged after READY=1, and written by the log thread.
        harness.wait_until(lambda: "ready: 1 reactors" in pinned.read_log(), timeout(1),
                           "'ready: 1 reactors' in the log")
