#!/usr/bin/env python3
"""How long one connection's big compressed reply holds its reactor (issue 13;
docs/BENCHMARKS.md "Compression"). Starts MSGD_BIN with reactors = 1 and
workers = 2, then:

  alone:  connection A sends SIZE-byte ECHOs of compressible text back to back
          for 2 s; the reactor thread's and the workers' CPU time
          (/proc/PID/task/TID/schedstat) per request. The reactor's share is
          the most a request can hold it.
  shared: A sends one such ECHO every 50 ms while connection B, on the same
          reactor, sends a PING about every millisecond: B's PING latency.

CODEC is zstd, deflate, none (no HELLO: plain replies) or publish (A
PUBLISHes SIZE bytes to a topic with one zstd and one deflate subscriber:
a fan-out's frames, compressed once per codec on the publisher's reactor),
or zstd-in / deflate-in (A sends STATS with SIZE bytes of text compressed
at level 1 as its payload, which STATS ignores: a big request's
decompression, and a small reply), or zstd-push / deflate-push (A sends
the test module apitest's PUSH_BACK, which pushes the payload back with
msgd_send: a module's big push; loads MSGD_BIN's modules/apitest.so).

usage: compress_stall.py MSGD_BIN CODEC [SIZE] [SECONDS] [LEVEL]
"""
import multiprocessing
import os
import random
import select
import socket
import subprocess
import sys
import tempfile
import time
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "tests", "integration"))
import msgproto as mp  # noqa: E402

WORDS = [b"the", b"quick", b"brown", b"fox", b"jumps", b"over", b"lazy", b"dog", b"reactor",
         b"worker", b"pipeline", b"compress", b"message", b"payload", b"frame", b"order"]


def text(n):
    """n bytes of words and numbers (about 3x smaller with zstd level 1)."""
    r = random.Random(1)
    out = bytearray()
    while len(out) < n:
        out += r.choice(WORDS) + b" "
        if r.random() < 0.1:
            out += b"%d " % r.randrange(100000)
    return bytes(out[:n])


def hello(c, codec):
    _, p = c.call(mp.HELLO, b"compress=%s\n" % codec.encode(), 5)
    assert b"compress=" + codec.encode() in p, p


def subscribers(port, ready, until):
    cs = []
    for codec in ("zstd", "deflate"):
        c = mp.Client("127.0.0.1", port, timeout=10)
        hello(c, codec)
        c.call(mp.SUBSCRIBE, b"big", 5)
        cs.append(c)
    ready.set()
    while time.monotonic() < until:
        r, _, _ = select.select([c.sock for c in cs], [], [], 0.2)
        for s in r:
            if not s.recv(1 << 20):
                return


PUSH_BACK, MODULE_PUSH = 1110, 1199  # tests/modules/apitest.c


def squeeze(codec, data):
    """data compressed at level 1, as msgbench would."""
    if codec == "deflate":
        return zlib.compress(data, 1)
    try:
        import zstandard
    except ImportError:  # Debian's python3-zstandard, for a python3 not Debian's own
        sys.path.append("/usr/lib/python3/dist-packages")
        import zstandard
    return zstandard.ZstdCompressor(level=1).compress(data)


def sender(port, codec, size, until, gap, q):
    c = mp.Client("127.0.0.1", port, timeout=10)
    if codec not in ("none", "publish"):
        hello(c, codec.split("-")[0])
    if codec == "publish":
        cmd, payload = mp.PUBLISH, b"\x03big" + text(size)
    elif codec.endswith("-in"):
        cmd, payload = mp.STATS | mp.COMPRESSED, squeeze(codec.split("-")[0], text(size))
    elif codec.endswith("-push"):
        cmd, payload = PUSH_BACK, text(size)
    else:
        cmd, payload = mp.ECHO, text(size)
    n = 0
    while time.monotonic() < until:
        c.send_frame(cmd, payload)
        if cmd == PUSH_BACK:
            got, _ = c.recv_frame(10)
            assert got & mp.CMD_MASK == MODULE_PUSH, hex(got)
        got, _ = c.recv_frame(10)
        assert got & mp.CMD_MASK == cmd & mp.CMD_MASK and not got & mp.ERROR, hex(got)
        n += 1
        if gap:
            time.sleep(gap)  # pacing of the load, not synchronisation
    q.put(n)


def cpu_ns(pid):
    out = {"reactor": 0, "workers": 0}
    for t in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/comm" % (pid, t)) as f:
            name = f.read().strip()
        with open("/proc/%d/task/%s/schedstat" % (pid, t)) as f:
            ns = int(f.read().split()[0])
        if name == "msgd-r0":
            out["reactor"] += ns
        elif name.startswith("msgd-r0-w"):
            out["workers"] += ns
    return out


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    binary, codec = sys.argv[1], sys.argv[2]
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 1 << 20
    secs = float(sys.argv[4]) if len(sys.argv) > 4 else 4.0
    level = sys.argv[5] if len(sys.argv) > 5 else "1"
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    d = tempfile.mkdtemp(prefix="compress-stall.")
    ini = os.path.join(d, "msgd.ini")
    with open(ini, "w") as f:
        f.write("[server]\nreactors = 1\nworkers = 2\n[msg]\nlisten = 127.0.0.1:%d\n"
                "max_frame = 4M\ncompress = zstd, deflate\ncompress_level = %s\n[admin]\n"
                "listen =\n[timeouts]\nheartbeat_interval = 0\nidle_timeout = 0\n[limits]\n"
                "output_high_water = 8M\noutput_low_water = 1M\noutput_hard_limit = 64M\n"
                "[log]\nlevel = warn\n" % (port, level))
        if codec.endswith("-push"):
            f.write("[modules]\nload = %s\n" % os.path.join(
                os.path.dirname(os.path.abspath(binary)), "modules", "apitest.so"))
    p = subprocess.Popen([binary, "-c", ini], stderr=open(os.path.join(d, "log"), "w"))
    procs = []
    try:
        for _ in range(250):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.02)
        q = multiprocessing.Queue()
        if codec == "publish":
            ready = multiprocessing.Event()
            procs.append(multiprocessing.Process(
                target=subscribers, args=(port, ready, time.monotonic() + secs + 8)))
            procs[-1].start()
            ready.wait(10)
        c0 = cpu_ns(p.pid)
        a = multiprocessing.Process(target=sender,
                                    args=(port, codec, size, time.monotonic() + 2, 0, q))
        a.start()
        n = q.get(timeout=60)
        a.join(10)
        c1 = cpu_ns(p.pid)
        b = mp.Client("127.0.0.1", port, timeout=10)
        for _ in range(100):
            b.call(mp.PING, b"x", 5)
        a = multiprocessing.Process(target=sender, args=(port, codec, size,
                                                         time.monotonic() + secs + 0.3, 0.05, q))
        a.start()
        lat = []
        end = time.monotonic() + secs
        while time.monotonic() < end:
            t0 = time.perf_counter()
            b.send_frame(mp.PING, b"x")
            b.recv_frame(10)
            lat.append((time.perf_counter() - t0) * 1e3)
            time.sleep(0.001)  # pacing: about 1k PINGs/s, leaving CPU to the rest
        q.get(timeout=60)
        a.join(10)
        lat.sort()
        pct = lambda x: lat[min(len(lat) - 1, int(len(lat) * x))]  # noqa: E731
        print("%s %d B level %s: alone %.0f req/s, CPU per request: reactor %.3f ms, "
              "workers %.3f ms; B's PING (%d): p50 %.3f p99 %.3f p99.9 %.3f max %.3f ms, "
              "over 5 ms: %d" % (codec, size, level, n / 2, (c1["reactor"] - c0["reactor"]) / 1e6 / n,
                                 (c1["workers"] - c0["workers"]) / 1e6 / n, len(lat), pct(.5),
                                 pct(.99), pct(.999), lat[-1], sum(x > 5 for x in lat)))
    finally:
        p.terminate()
        p.wait(10)
        for pr in procs:
            pr.terminate()


if __name__ == "__main__":
    main()
