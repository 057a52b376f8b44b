"""The module API's thread rules (src/module.h), through the real daemon
with tests/modules/apitest.so loaded: a push from a worker thread, a stale
connection id, a timer cancelled while it fires, deferred replies answered
(and dropped) from another thread in request order, a handler that answers
nothing, reactor-only calls from a worker, events and per-connection data,
accessors and the module's own config keys; and the loader's errors in
`msgd -t` (an unknown key, a bad value, another API version, a command
number taken twice, a missing file, a section nobody owns)."""
import errno
import os
import struct
import tempfile
import unittest

import msgproto as mp
from harness import (MsgdTestCase, check_config, module_path, render_config, timeout,
                     wait_until)

SEND_FROM_WORKER, SEND_TO, MY_ID, TIMER, DEFER, NO_ANSWER, WRONG_THREAD, EVENTS, DESCRIBE, \
    CLOSE_ME = range(1100, 1110)
PUSH = 1199


def i32s(payload):
    return list(struct.unpack(">%di" % (len(payload) // 4), payload))


class ModuleApiTests(MsgdTestCase):
    config = {"server": {"reactors": 2},
              "modules": {"load": module_path("apitest")},
              "apitest": {"greeting": "hi there"}}

    def call_ok(self, c, cmd, payload=b""):
        got = c.call(cmd, payload, timeout(1))
        self.assertEqual(got[0], mp.reply_cmd(cmd), mp.describe(*got))
        return got[1]

    def my_id(self, c):
        return struct.unpack(">Q", self.call_ok(c, MY_ID))[0]

    def test_send_from_a_worker_thread(self):
        c = self.connect()
        c.send_frame(SEND_FROM_WORKER, b"from the pool")
        frames = [c.recv_frame(timeout(1)), c.recv_frame(timeout(1))]
        pushes = [f for f in frames if f[0] == PUSH]
        replies = [f for f in frames if f[0] != PUSH]
        self.assertEqual(pushes, [(PUSH, b"from the pool")], frames)
        self.assertEqual(replies[0][0], mp.reply_cmd(SEND_FROM_WORKER))
        rc, reactor_index = i32s(replies[0][1])
        self.assertEqual(rc, 0)
        self.assertEqual(reactor_index, -1, "the handler ran off the reactors")

    def test_stale_id_never_reaches_the_next_connection(self):
        victim = self.connect()
        vid = self.my_id(victim)
        victim.close()
        asker = self.connect()
        # Wait until the victim's connection is gone on the daemon's side.
        wait_until(lambda: i32s(self.call_ok(asker, EVENTS))[2] >= 1 and
                   self.stats(asker)["connections_current"] == 1, timeout(2), "the close")
        # New connections: one of them likely takes the victim's slot or fd.
        others = [self.connect() for _ in range(4)]
        ids = [self.my_id(o) for o in others]
        self.assertNotIn(vid, ids, "a new connection reused a whole id")
        asker_id = self.my_id(asker)
        rc = i32s(self.call_ok(asker, SEND_TO, struct.pack(">Q", vid)))[0]
        if (vid >> 56) == (asker_id >> 56):
            self.assertEqual(rc, -errno.ENOENT, "same reactor: refused at once")
        else:
            self.assertEqual(rc, 0, "another reactor: posted, then dropped there")
            wait_until(lambda: self.stats(asker)["module_pushes_dropped"] >= 1, timeout(2),
                       "module_pushes_dropped")
        for o in others:  # nobody got the push
            self.assertEqual(self.call_ok(o, mp.PING, b"p"), b"p")
        # A live id on the other reactor is reached (the same call works).
        target = others[0] if (ids[0] >> 56) != (asker_id >> 56) else others[1]
        tid = self.my_id(target)
        self.assertEqual(i32s(self.call_ok(asker, SEND_TO, struct.pack(">Q", tid)))[0], 0)
        self.assertEqual(target.recv_frame(timeout(1)), (PUSH, b"x"))

    def test_timer_cancelled_while_firing(self):
        c = self.connect()
        rc = i32s(self.call_ok(c, TIMER))
        self.assertEqual(rc, [0, 0, -errno.EINVAL])
        cmd, payload = c.recv_frame(timeout(2))
        self.assertEqual(cmd, PUSH)
        fires, stop_inside, stop_again, stop_stale, _ = i32s(payload)
        self.assertEqual(fires, 1, "the repeating timer fired again after its stop")
        self.assertEqual(stop_inside, 0)
        self.assertEqual(stop_again, -errno.ENOENT)
        self.assertEqual(stop_stale, -errno.ENOENT)

    def test_deferred_replies_from_another_thread_keep_the_order(self):
        c = self.connect()
        c.send_frame(DEFER, b"\x01")
        c.send_frame(mp.PING, b"after")
        c.send_frame(DEFER, b"\x02")
        c.send_frame(DEFER, b"\x00")
        c.send_frame(mp.PING, b"last")
        self.assert_frame(c.recv_frame(timeout(1)), mp.reply_cmd(DEFER), b"later")
        self.assert_frame(c.recv_frame(timeout(1)), mp.reply_cmd(mp.PING), b"after")
        got = c.recv_frame(timeout(1))
        self.assertEqual(got[0], mp.error_cmd(DEFER), mp.describe(*got))
        self.assertEqual(mp.decode_error(got[1]), (1234, "a module's own error"))
        text = self.assert_error(c.recv_frame(timeout(1)), DEFER, mp.OVERLOADED)
        self.assertIn("dropped", text)
        self.assert_frame(c.recv_frame(timeout(1)), mp.reply_cmd(mp.PING), b"last")

    def test_deferred_reply_for_a_closed_connection_is_counted(self):
        mon = self.connect()
        before = self.stats(mon).get("results_dropped", 0)
        c = self.connect()
        for _ in range(20):
            c.send_frame(DEFER, b"\x01")
        c.close_rst()
        # Each answer is dropped if the close got there first, or sent into
        # a dead socket; the daemon stays up and answers the monitor.
        self.assertEqual(self.call_ok(mon, mp.PING, b"ok"), b"ok")
        self.assertGreaterEqual(self.stats(mon).get("results_dropped", 0), before)

    def test_a_handler_that_answers_nothing(self):
        c = self.connect()
        text = self.assert_error(c.call(NO_ANSWER, b"", timeout(1)), NO_ANSWER, mp.OVERLOADED)
        self.assertIn("no answer", text)
        self.assertEqual(self.call_ok(c, mp.PING, b"still open"), b"still open")

    def test_reactor_calls_refused_on_a_worker(self):
        c = self.connect()
        timer_rc, defer_null, stop_rc, conn_null = i32s(self.call_ok(c, WRONG_THREAD))
        self.assertEqual(timer_rc, -errno.EPERM)
        self.assertEqual(defer_null, 1)
        self.assertEqual(stop_rc, -errno.EPERM)
        self.assertEqual(conn_null, 1)

    def test_events_and_connection_data(self):
        mon = self.connect()
        opens, auths, closes, frees = i32s(self.call_ok(mon, EVENTS))
        c = self.connect()
        self.call_ok(c, mp.AUTH, b"ada")
        self.call_ok(c, mp.AUTH, b"bob")  # on_auth each time
        c.close()
        # Other tests' connections may still be closing: wait until every
        # connection but mon has been heard closing, and its data freed.
        last = {}

        def settled():
            o, a, cl, fr = last["e"] = i32s(self.call_ok(mon, EVENTS))
            live = self.stats(mon)["connections_current"]
            return o >= opens + 1 and a == auths + 2 and o - cl == live == 1 and fr == cl
        wait_until(settled, timeout(2), "the events to settle")
        self.assertGreaterEqual(last["e"][2], closes + 1)

    def test_accessors_and_config(self):
        c = self.connect()
        self.call_ok(c, mp.AUTH, b"carol")
        text = self.call_ok(c, DESCRIBE).decode()
        greeting, peer, local, ident, conn_reactor, here, n, small = text.split("|")
        self.assertEqual(greeting, "hi there")
        self.assertEqual(peer, "127.0.0.1:%d" % c.sock.getsockname()[1])
        self.assertEqual(local, "127.0.0.1:%d" % self.daemon.port())
        self.assertEqual(ident, "carol")
        self.assertEqual(conn_reactor, here)
        self.assertEqual(int(n), 2)
        self.assertEqual(int(small), -errno.ENOSPC)

    def test_close_from_another_thread(self):
        c = self.connect()
        self.call_ok(c, CLOSE_ME)
        got = c.recv_frame(timeout(1))
        self.assertEqual(got[0], mp.error_cmd(0), mp.describe(*got))
        self.assertEqual(mp.decode_error(got[1]), (7777, "closed by apitest"))
        c.expect_eof(timeout(1))


class ModuleLoaderTests(unittest.TestCase):
    """`msgd -t` loads the modules and reports what is wrong, with file:line."""

    def check(self, sections):
        tmp = tempfile.mkdtemp(prefix="msgd-modload-")
        path = os.path.join(tmp, "msgd.ini")
        cfg = {"msg": {"listen": "127.0.0.1:0"}}
        cfg.update(sections)
        with open(path, "w") as f:
            f.write(render_config(cfg))
        rc, err = check_config(path)
        return rc, err, path, open(path).read().splitlines()

    def line_of(self, lines, text):
        return [i + 1 for i, line in enumerate(lines) if line.startswith(text)][0]

    def test_good(self):
        rc, err, _, _ = self.check({"modules": {"load": module_path("apitest")},
                                    "apitest": {"greeting": "yo"}})
        self.assertEqual(rc, 0, err)

    def test_unknown_key_and_bad_value(self):
        rc, err, path, lines = self.check({"modules": {"load": module_path("apitest")},
                                           "apitest": {"bogus": "1", "greeting": "x" * 100}})
        self.assertEqual(rc, 1)
        self.assertIn("%s:%d: unknown key 'bogus' in [apitest]"
                      % (path, self.line_of(lines, "bogus")), err)
        self.assertIn("%s:%d: bad value" % (path, self.line_of(lines, "greeting")), err)
        self.assertIn("at most 63 bytes", err)

    def test_another_api_version(self):
        rc, err, _, _ = self.check({"modules": {"load": module_path("apitest_v999")}})
        self.assertEqual(rc, 1)
        self.assertIn("module API version 999", err)
        self.assertIn("rebuild it", err)

    def test_a_command_number_taken_twice(self):
        rc, err, _, _ = self.check({"modules": {
            "load": "%s, %s" % (module_path("apitest"), module_path("clash"))}})
        self.assertEqual(rc, 1)
        self.assertIn("command 1100", err)
        self.assertIn("taken by SEND_FROM_WORKER", err)

    def test_a_missing_file_and_a_relative_path(self):
        rc, err, _, _ = self.check({"modules": {"load": "/nonexistent/nothing.so"}})
        self.assertEqual(rc, 1)
        self.assertIn("cannot load /nonexistent/nothing.so", err)
        rc, err, path, _ = self.check({"modules": {"load": "rel/nothing.so"}})
        self.assertIn("cannot load %s/rel/nothing.so" % os.path.dirname(path), err)

    def test_a_section_nobody_owns(self):
        rc, err, path, lines = self.check({"modules": {"load": module_path("apitest")},
                                           "nosuch": {"a": "1"}})
        self.assertEqual(rc, 1)
        self.assertIn("%s:%d: unknown section [nosuch]" % (path, self.line_of(lines, "[nosuch]")),
                      err)
        rc, err, path, lines = self.check({"nosuch": {"a": "1"}})
        self.assertEqual(rc, 1)
        self.assertIn("%s:%d: unknown section [nosuch]" % (path, self.line_of(lines, "[nosuch]")),
                      err)

    def test_not_a_module(self):
        with open("/proc/self/maps") as maps:  # this process's libc: a real .so
            libc = [line.split()[-1] for line in maps if "/libc.so" in line][0]
        rc, err, _, _ = self.check({"modules": {"load": libc}})
        self.assertEqual(rc, 1)
        self.assertIn("is not a msgd module", err)


if __name__ == "__main__":
    unittest.main()
