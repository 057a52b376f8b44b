"""The PROXY protocol (HAProxy's v1 and v2) on listeners with
proxy_protocol = on: the header's client address is the peer everywhere
(admin conns, the module accessors), whatever way the header arrives
(whole, with frames behind it, byte by byte); LOCAL keeps the socket's
own address; a malformed, too long or missing header closes the connection
and is counted, and nothing of it reaches the protocol; a connection from
outside proxy_from is closed at once and counted; and a real HAProxy in TCP
mode with send-proxy and send-proxy-v2 in front of msgd."""
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import unittest

import msgproto as mp
from harness import MsgdTestCase, poll_pause, read_to_end, timeout, wait_until
from test_admin import AdminClient

V2_SIG = bytes([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A])


def v2_tcp4(src, sport, dst="127.0.0.1", dport=7700, tlv=b""):
    addr = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack(">HH", sport, dport) + tlv
    return V2_SIG + bytes([0x21, 0x11]) + struct.pack(">H", len(addr)) + addr


def closed_silently(s):
    """What the server sent before closing s (a reset, when our bytes were
    still unread, counts as a close with nothing sent)."""
    return read_to_end(s, timeout(1), resets_ok=True)


def v2_local():
    return V2_SIG + bytes([0x20, 0x00, 0, 0])


class ProxyTests(MsgdTestCase):
    config = {"server": {"reactors": 2},
              "msg": {"proxy_protocol": "on", "proxy_from": "127.0.0.1, ::1"},
              "echo": {"proxy_protocol": "on"},
              "admin": {"listen": "127.0.0.1:0"}}

    def admin(self):
        return AdminClient(self.connect("admin").sock)

    def peers(self):
        return "\n".join(self.admin().call("conns"))

    def raw(self, proto="msg"):
        s = socket.create_connection(("127.0.0.1", self.daemon.port(proto)), timeout())
        self.addCleanup(s.close)
        return s

    def msg_after(self, s):
        """A msg client on a socket that already sent its header."""
        return mp.Client.over(s, timeout())

    def stat(self, name):
        c = self.raw()
        c.sendall(b"PROXY UNKNOWN\r\n" + mp.encode(mp.STATS))
        cl = self.msg_after(c)
        cmd, payload = cl.recv_frame(timeout(1))
        return mp.parse_stats(payload).get(name, 0)

    def test_v1_address_is_the_peer(self):
        s = self.raw()
        s.sendall(b"PROXY TCP4 192.0.2.10 127.0.0.1 51234 7700\r\n" + mp.encode(mp.PING, b"hi"))
        c = self.msg_after(s)
        self.assertEqual(c.recv_frame(timeout(1)), (mp.reply_cmd(mp.PING), b"hi"))
        self.assertIn("peer=192.0.2.10:51234", self.peers())

    def test_v2_with_tlvs_split_byte_by_byte(self):
        s = self.raw()
        data = v2_tcp4("198.51.100.3", 40000, tlv=b"\x04\x00\x03abc") + mp.encode(mp.PING, b"v2")
        for b in data:
            s.sendall(bytes([b]))
        c = self.msg_after(s)
        self.assertEqual(c.recv_frame(timeout(1)), (mp.reply_cmd(mp.PING), b"v2"))
        self.assertIn("peer=198.51.100.3:40000", self.peers())

    def test_v2_ipv6_and_local(self):
        s = self.raw()
        addr = socket.inet_pton(socket.AF_INET6, "2001:db8::7") + \
            socket.inet_pton(socket.AF_INET6, "::1") + struct.pack(">HH", 5, 7700)
        s.sendall(V2_SIG + bytes([0x21, 0x21]) + struct.pack(">H", len(addr)) + addr +
                  mp.encode(mp.PING, b"6"))
        c = self.msg_after(s)
        self.assertEqual(c.recv_frame(timeout(1)), (mp.reply_cmd(mp.PING), b"6"))
        self.assertIn("peer=[2001:db8::7]:5", self.peers())
        # LOCAL (a balancer's own health check): the socket's address stays.
        s2 = self.raw()
        s2.sendall(v2_local() + mp.encode(mp.PING, b"l"))
        c2 = self.msg_after(s2)
        self.assertEqual(c2.recv_frame(timeout(1)), (mp.reply_cmd(mp.PING), b"l"))
        self.assertIn("peer=127.0.0.1:%d" % s2.getsockname()[1], self.peers())

    def test_bad_headers_close_and_count(self):
        before = self.stat("closed_by_limit.proxy_header")
        cases = [
            mp.encode(mp.PING, b"no header"),                       # a client without a balancer
            b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 1\r\n",             # a bad port
            b"PROXY UNKNOWN " + b"x" * 120,                          # no line end within 107 bytes
            V2_SIG + bytes([0x21, 0x11, 0xFF, 0xFF]),               # a v2 length past the cap
            V2_SIG + bytes([0x31, 0x11, 0, 12]) + bytes(12),        # version 3
        ]
        for data in cases:
            s = self.raw()
            s.sendall(data)
            self.assertEqual(closed_silently(s), b"",
                             "nothing of the protocol may answer %r" % data[:20])
        # A header cut short by the client's close is counted too.
        s = self.raw()
        s.sendall(b"PROXY TCP4 1.2.3.4")
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(closed_silently(s), b"")
        wait_until(lambda: self.stat("closed_by_limit.proxy_header") == before + 6, timeout(1),
                   "six bad headers counted")

    def test_echo_listener_too(self):
        s = self.raw("echo")
        s.sendall(b"PROXY TCP4 203.0.113.5 127.0.0.1 999 7\r\nhello")
        got = b""
        while got != b"hello":
            got += s.recv(100)
        self.assertIn("peer=203.0.113.5:999", self.peers())


class ProxyFromTests(MsgdTestCase):
    config = {"msg": {"proxy_protocol": "on", "proxy_from": "10.0.0.0/8"},
              "admin": {"listen": "127.0.0.1:0"}}

    def test_outside_proxy_from_is_closed_at_once(self):
        s = socket.create_connection(("127.0.0.1", self.daemon.port()), timeout())
        self.addCleanup(s.close)
        s.sendall(b"PROXY TCP4 192.0.2.1 127.0.0.1 1 2\r\n" + mp.encode(mp.PING))
        self.assertEqual(closed_silently(s), b"")
        a = AdminClient(self.connect("admin").sock)
        wait_until(lambda: "closed_by_limit.proxy_from 1" in a.call("stats"), timeout(1),
                   "the refusal counted")


class HaproxyTests(MsgdTestCase):
    """A real HAProxy (Debian's) in TCP mode in front of msgd: send-proxy-v2
    on one frontend, send-proxy (v1) on another; msgd sees each client's own
    address, not HAProxy's."""
    config = {"server": {"reactors": 2}, "msg": {"proxy_protocol": "on"},
              "admin": {"listen": "127.0.0.1:0"}}

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="msgd-haproxy-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.ports = [self.free_port(), self.free_port()]
        cfg = os.path.join(self.tmp, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(haproxy_config(self.ports, self.daemon.port()))
        check = subprocess.run(["haproxy", "-c", "-f", cfg], capture_output=True, text=True,
                               timeout=timeout(2))
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", cfg], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.addCleanup(self.stop_haproxy)
        i = 0
        end = time.monotonic() + timeout(2)
        while True:  # until both frontends accept
            try:
                for p in self.ports:
                    socket.create_connection(("127.0.0.1", p), timeout(1)).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > end:
                    raise AssertionError("haproxy did not start: %s" % self.proc.stderr.read())
                poll_pause(i)
                i += 1

    def stop_haproxy(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout(2))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stderr.close()

    @staticmethod
    def free_port():
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        return port

    def test_clients_behind_haproxy_keep_their_address(self):
        for port in self.ports:
            c = mp.Client("127.0.0.1", port, timeout=timeout())
            self.addCleanup(c.close)
            self.assertEqual(c.call(mp.PING, b"via haproxy"),
                             (mp.reply_cmd(mp.PING), b"via haproxy"))
            mine = c.sock.getsockname()[1]
            conns = "\n".join(AdminClient(self.connect("admin").sock).call("conns"))
            self.assertIn("peer=127.0.0.1:%d" % mine, conns)
            # HAProxy's own outgoing port is nowhere a peer.
            listed = re.findall(r"peer=127\.0\.0\.1:(\d+) proto=msg", conns)
            self.assertIn(str(mine), listed)


def haproxy_config(ports, backend_port):
    """The HAProxy configuration docs/CLUSTER.md shows, on test ports."""
    return """\
global
    maxconn 1000

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h

frontend msg_v2
    bind 127.0.0.1:%d
    default_backend msgd_v2

frontend msg_v1
    bind 127.0.0.1:%d
    default_backend msgd_v1

backend msgd_v2
    server a 127.0.0.1:%d send-proxy-v2 check

backend msgd_v1
    server a 127.0.0.1:%d send-proxy check
""" % (ports[0], ports[1], backend_port, backend_port)


if __name__ == "__main__":
    unittest.main()
