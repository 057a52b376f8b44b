#!/usr/bin/env python3
"""idle_rss.py: the daemon's RSS per idle connection.

    idle_rss.py PID MSG_PORT ADMIN_PORT [COUNT]

Reads the daemon's VmRSS (/proc/PID/status), opens COUNT (default 10000)
connections to 127.0.0.1:MSG_PORT and holds them, waits until the admin
listener's `stats` shows them all adopted (connections_current), lets the
daemon settle, and reads VmRSS again: (after - before) / COUNT is the cost of
an idle connection that never sent a byte. Then it sends one 64-byte ECHO on
every connection, reads every reply, and reads VmRSS a third time: the cost of
a connection that talked once and went idle. Prints one JSON object.
Every wait is bounded; exit 1 when something does not work.
"""
import json
import os
import resource
import socket
import struct
import sys
import time

MAGIC = 0x4D534750  # "MSGP"
VERSION = 1
CMD_ECHO = 2
FLAG_REPLY = 0x80000000


def die(msg):
    sys.stderr.write("idle_rss.py: %s\n" % msg)
    sys.exit(1)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    die("no VmRSS for pid %d" % pid)


def admin_stat(port, key, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(b"stats\n")
        data = b""
        deadline = time.monotonic() + timeout
        while not data.endswith(b"END\n") and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    for line in data.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            return int(parts[1])
    die("admin stats has no %s: %r" % (key, data[:200]))


def settle_rss(pid, rounds=10):
    """RSS once it stops moving (at most rounds x 0.2 s)."""
    last = rss_kib(pid)
    for _ in range(rounds):
        time.sleep(0.2)
        now = rss_kib(pid)
        if now == last:
            break
        last = now
    return last


def main(argv):
    if len(argv) < 3:
        sys.stderr.write(__doc__)
        return 2
    pid, port, admin = int(argv[0]), int(argv[1]), int(argv[2])
    count = int(argv[3]) if len(argv) > 3 else 10000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, count + 100)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < count + 100:
        die("RLIMIT_NOFILE hard limit %d is too low for %d connections" % (hard, count))

    # connections_current counts what the reactors adopted, the admin
    # connection asking included (one in each reading).
    base_conns = admin_stat(admin, "connections_current")
    before = settle_rss(pid)
    socks = []
    t0 = time.monotonic()
    try:
        for i in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(("127.0.0.1", port))
            socks.append(s)
            if time.monotonic() - t0 > 120:
                die("connecting took over 120 s (%d of %d)" % (i, count))
        connect_s = time.monotonic() - t0
        deadline = time.monotonic() + 30
        cur = 0
        while time.monotonic() < deadline:
            cur = admin_stat(admin, "connections_current") - base_conns
            if cur >= count:
                break
            time.sleep(0.1)
        if cur < count:
            die("the daemon adopted %d of %d connections within 30 s" % (cur, count))
        after = settle_rss(pid)

        payload = b"x" * 64
        frame = struct.pack(">IIII", MAGIC, VERSION, CMD_ECHO, len(payload)) + payload
        want_reply = struct.pack(">IIII", MAGIC, VERSION, FLAG_REPLY | CMD_ECHO, len(payload)) + payload
        for s in socks:
            s.sendall(frame)
        bad = 0
        for s in socks:
            got = b""
            while len(got) < len(want_reply):
                chunk = s.recv(len(want_reply) - len(got))
                if not chunk:
                    break
                got += chunk
            bad += got != want_reply
        if bad:
            die("%d of %d ECHO replies were wrong" % (bad, count))
        talked = settle_rss(pid)
    finally:
        for s in socks:
            s.close()
    res = {
        "connections": count,
        "connect_seconds": round(connect_s, 3),
        "rss_before_kib": before,
        "rss_idle_kib": after,
        "rss_after_echo_kib": talked,
        "bytes_per_idle_conn": round((after - before) * 1024.0 / count, 1),
        "bytes_per_conn_after_echo": round((talked - before) * 1024.0 / count, 1),
    }
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
