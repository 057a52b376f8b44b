"""Many concurrent clients, each with its own tagged payloads, spread over reactors."""

import os
import selectors
import socket
import time
import unittest

import msgproto as mp
from harness import MsgdTestCase, HOST, timeout


def run_clients(test, port, nclients, nrequests, wait):
    """nclients connections on one selector loop; each sends one ECHO at a time
    (nrequests in all) with a payload tagged by client and sequence, and checks
    every reply. Returns nothing; fails the test on any wrong reply."""
    sel = selectors.DefaultSelector()
    socks = []
    state = {}
    try:
        for i in range(nclients):
            s = socket.create_connection((HOST, port), timeout=wait)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)
            socks.append(s)
        for i, s in enumerate(socks):
            st = {"id": i, "seq": 0, "reader": mp.FrameReader(), "out": b"", "want": None}
            state[s.fileno()] = st
            _next_request(st)
            sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, st)
        done = 0
        deadline = time.monotonic() + wait
        while done < nclients:
            left = deadline - time.monotonic()
            if left <= 0:
                behind = sorted((st["seq"], st["id"]) for st in state.values())[:5]
                test.fail("timed out: %d of %d clients done; slowest (seq, client): %s"
                          % (done, nclients, behind))
            for key, events in sel.select(min(left, 1.0)):
                s, st = key.fileobj, key.data
                if events & selectors.EVENT_WRITE and st["out"]:
                    try:
                        n = s.send(st["out"])
                    except BlockingIOError:
                        n = 0
                    st["out"] = st["out"][n:]
                if events & selectors.EVENT_READ:
                    try:
                        data = s.recv(65536)
                    except BlockingIOError:
                        data = None
                    except ConnectionResetError:
                        test.fail("client %d: reset at seq %d" % (st["id"], st["seq"]))
                    if data == b"":
                        test.fail("client %d: EOF at seq %d" % (st["id"], st["seq"]))
                    if data:
                        st["reader"].feed(data)
                    for f in st["reader"].frames():
                        if st["want"] is None:
                            test.fail("client %d: unexpected frame %s"
                                      % (st["id"], mp.describe(f.cmd, f.payload)))
                        if f.cmd != mp.REPLY | mp.ECHO or f.payload != st["want"]:
                            test.fail("client %d seq %d: expected ECHO reply %r, got %s"
                                      % (st["id"], st["seq"], st["want"],
                                         mp.describe(f.cmd, f.payload)))
                        st["seq"] += 1
                        st["want"] = None
                        if st["seq"] == nrequests:
                            done += 1
                        else:
                            _next_request(st)
                mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if st["out"] else 0)
                if mask != key.events:
                    sel.modify(s, mask, st)
    finally:
        sel.close()
        for s in socks:
            s.close()


def _next_request(st):
    payload = b"client-%04d-seq-%03d-" % (st["id"], st["seq"]) + os.urandom(st["seq"] * 7 % 61)
    st["want"] = payload
    st["out"] += mp.encode(mp.ECHO, payload)


class ConcurrencyTests(MsgdTestCase):
    config = {"server": {"reactors": 2}}

    def test_300_clients_20_echoes(self):
        c = self.connect()
        before = self.stats(c)
        run_clients(self, self.daemon.port("msg"), 300, 20, timeout(6))
        after = self.stats(c)
        for r in (0, 1):
            key = "reactor.%d.connections_total" % r
            self.assertIn(key, after)
            self.assertGreater(after[key], 0, key)
            self.assertGreater(after[key] - before.get(key, 0), 0,
                               "no new connection went to reactor %d (%s: %r -> %r)"
                               % (r, key, before.get(key), after[key]))
        self.assertGreaterEqual(after["connections_total"] - before["connections_total"], 300)
        self.assertGreaterEqual(after["frames_in"] - before["frames_in"], 300 * 20)
        self.wait_connections(c, 1, "after the 300 clients closed")


class FourReactorTests(MsgdTestCase):
    config = {"server": {"reactors": 4}}

    def test_100_clients_reach_all_four_reactors(self):
        c = self.connect()
        run_clients(self, self.daemon.port("msg"), 100, 10, timeout(4))
        s = self.stats(c)
        for r in range(4):
            key = "reactor.%d.connections_total" % r
            self.assertIn(key, s)
            self.assertGreater(s[key], 0, "reactor %d got no connection: %s" % (
                r, {k: v for k, v in s.items() if k.startswith("reactor.")}))
        self.assertNotIn("reactor.4.connections_total", s)


if __name__ == "__main__":
    unittest.main()
