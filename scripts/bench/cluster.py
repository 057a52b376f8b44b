#!/usr/bin/env python3
"""cluster.py: cross-node delivery through the Redis backplane, against
single-node delivery and against redis-benchmark's own PUBLISH rate on the
same Redis, in the same run (`make bench-cluster`, and a step of `make bench`;
docs/BENCHMARKS.md "Cluster").

    scripts/bench/cluster.py [--build DIR] [--runs N] [--seconds S] [--subs N]
                             [--pubs N] [--rate MSGS] [--window MSGS] [--size B]
                             [--out DIR] [--doc FILE] [--perf]

Method
------
One redis-server (Debian's, unix socket only, `--port 0`, no RDB, no AOF)
serves the whole run. Each round starts three fresh msgd nodes (`reactors =
1`, heartbeats and idle timeouts off): node a and node b with `[cluster]
redis = unix:SOCK`, and node c without `[cluster]`. Every server runs under
`taskset -c 0`; this script, which is the only load generator, pins itself to
CPU 1, and so does redis-benchmark (`taskset -c 1`). On fewer than 2 CPUs
nothing is pinned (and the report says so).

A round measures, back to back:

  cross      N subscribers on node a, P publishers on node b: every message
             goes b -> Redis -> a -> N subscribers.
  local      N subscribers and P publishers on node a (a cluster node: each
             PUBLISH is delivered locally and also sent to Redis once, and
             Redis sends it back to a, which skips its own message).
  plain      the same on node c, which has no [cluster]: plain msgd.
  redis      `redis-benchmark -s SOCK -n ... -q PUBLISH bench-redis X` (50
             clients, no pipelining; X as long as the message a node sends to
             Redis, a channel nobody subscribes to), then the same with `-P
             16` (msgd's link to Redis is one pipelined connection), against
             the same redis-server. (`-t publish` is not a test of Redis 7.0's
             redis-benchmark: it runs nothing and exits 0.)

Each of cross, local and plain runs twice:

  open loop  the publishers send RATE messages/s in all, on a fixed schedule
             (message i is due at t0 + i/RATE; every millisecond what is due
             goes out, split over the publishers), whatever the deliveries
             do; the report shows the rate reached and counts messages sent
             over 2 ms late, so a latency measured while the machine could not
             keep up is recognisable as queueing. (Sending each message on
             its own, 100 us apart, costs Python about one system call per
             delivery: the load generator itself was the limit at 10,000
             messages/s to 10 subscribers.)
  closed     at most WINDOW messages in flight end to end (published but
             not yet received by every subscriber): the maximum delivery
             throughput the path sustains without loss.

Every message is the same size: a PUBLISH with a per-run topic and SIZE
bytes of message, which start with the publisher's send time
(time.monotonic_ns, the same clock the subscribers read), the publisher's
number and its sequence number. All MESSAGE frames are then the same length,
so a subscriber counts frames by bytes (exact, cheap), and each subscriber
decodes every N-th frame (staggered, so about one latency sample per message
across the N subscribers), checking its header and topic.

  deliveries/s  MESSAGE frames received by all subscribers together, from the
                end of a 0.5 s warm-up to the end of the run, per second.
  latency       receive time minus send time of the sampled messages sent
                after the warm-up: p50, p99 (and p99.9, max in the JSON).
  lost          messages sent x N minus frames received once everything has
                drained (at most 5 s after the last send); must be 0.

Per run the CPU time (utime + stime from /proc, per thread for msgd) of
redis-server, the nodes and this script is recorded as a share of one CPU
over the measured window: that says which process limits the run. `--perf`
also records `perf record -g -C 0` over one closed-loop cross-node run per
round.

A value in the table is the median of its rounds; a ratio is the median of
the per-round ratios (each pair ran within seconds of each other).

Output under --out (default BUILD/bench): cluster.jsonl (every run),
cluster.log (every command line, as run), cluster.md (the table), and the
servers' logs. With --doc FILE the section between
`<!-- cluster-bench:start -->` and `<!-- cluster-bench:end -->` of FILE is
rewritten.

Bounds: every wait has a deadline, every run a fixed length plus at most 5 s
of draining, redis-benchmark runs under timeout(1), launch.py kills any
server that outlives 30 minutes; every server this script started is
stopped by its PID (SIGTERM, then SIGKILL after 10 s), on exit too.

Exit status: 0 when every run worked, 1 when a server or tool failed or a
run lost messages, 2 for a bad setting or a missing program.
"""
import argparse
import array
import json
import os
import platform
import re
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

MAGIC, VERSION = 0x4D534750, 1
CMD_SUBSCRIBE, CMD_PUBLISH, CMD_MESSAGE = 16, 18, 19
REPLY = 0x80000000
HEADER = struct.Struct(">IIII")
PUBLISH_REPLY_SIZE = 16 + 4          # header + u32 count
BODY = struct.Struct(">qIQ")          # send time (ns), publisher, sequence
TICK_NS = 1_000_000                   # open loop: what is due goes out once per ms
WARMUP = 0.5                          # seconds sent but not measured
DRAIN = 5.0                           # seconds to wait for the last deliveries
SERVER_CPU, CLIENT_CPU = "0", "1"

LOG = None


def log(line):
    if LOG:
        LOG.write(line + "\n")
        LOG.flush()


def say(line):
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    log(line)


class BenchError(Exception):
    """A server or tool failed: the run is reported and the exit status is 1."""


# ---- servers: through launch.py (READY=1 on NOTIFY_SOCKET), stopped by PID -------

class Server:
    def __init__(self, name, cmd, out):
        self.name = name
        self.errlog = open(os.path.join(out, "cluster-%s.log" % name), "ab")
        log("start %s: %s" % (name, " ".join(cmd)))
        self.launcher = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "launch.py"), "notify", "20", "1800", "--"] + cmd,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.errlog)
        self.pid = None
        ready, _, _ = select.select([self.launcher.stdout], [], [], 30)
        line = self.launcher.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("READY "):
            self.launcher.kill()
            self.launcher.wait()
            raise BenchError("%s did not start: %s" % (name, line or "no answer in 30 s"))
        _, pid, self.status = line.split(" ", 2)
        self.pid = int(pid)
        log("%s: pid %d, %s" % (name, self.pid, self.status))

    def port(self, listener):
        m = re.search(r"\b%s=127\.0\.0\.1:(\d+)" % listener, self.status)
        if not m:
            raise BenchError("no %s port in %s's STATUS %r" % (listener, self.name, self.status))
        return int(m.group(1))

    def stop(self):
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.launcher.wait(10)
            except subprocess.TimeoutExpired:
                log("%s (pid %d) ignored SIGTERM for 10 s: SIGKILL" % (self.name, self.pid))
                os.kill(self.pid, signal.SIGKILL)
                self.launcher.wait(10)
        except ProcessLookupError:
            pass
        self.launcher.stdout.close()
        self.errlog.close()
        self.pid = None


SERVERS = []


def start_server(name, cmd, out):
    s = Server(name, cmd, out)
    SERVERS.append(s)
    return s


def stop_server(s):
    s.stop()
    if s in SERVERS:
        SERVERS.remove(s)


def pinned(cpu, cmd, pin):
    return ["taskset", "-c", cpu] + cmd if pin else cmd


def msgd_ini(path, name, redis_sock):
    cluster = ("[cluster]\nredis = unix:%s\nnode = %s\nreconnect_max = 1s\n" % (redis_sock, name)
               if redis_sock else "")
    with open(path, "w") as f:
        f.write("""[server]
reactors = 1
max_connections = 2000
backlog = 1024
[msg]
listen = 127.0.0.1:0
[admin]
listen = 127.0.0.1:0
[timeouts]
heartbeat_interval = 0
idle_timeout = 0
drain_timeout = 1s
[log]
level = warn
""" + cluster)


# ---- asking the servers -----------------------------------------------------------

def admin_stats(port, wait=5.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=wait)
    try:
        s.sendall(b"stats\n")
        data = b""
        deadline = time.monotonic() + wait
        while not data.endswith(b"END\n") and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    out = {}
    for line in data.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def redis_call(sock_path, *args, wait=5.0):
    """One RESP command on a fresh unix-socket connection; the reply's raw text."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(wait)
    try:
        s.connect(sock_path)
        req = b"*%d\r\n" % len(args) + b"".join(
            b"$%d\r\n%s\r\n" % (len(a), a) for a in (x.encode() if isinstance(x, str) else x
                                                     for x in args))
        s.sendall(req)
        data = b""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if re.search(rb"(^|\r\n)[:+-][^\r\n]*\r\n$", data):
                break  # an integer, status or error reply ends the answer
        return data
    finally:
        s.close()


def numsub(sock_path, channel):
    m = re.search(rb":(\d+)\r\n$", redis_call(sock_path, "PUBSUB", "NUMSUB", channel))
    return int(m.group(1)) if m else -1


def wait_for(what, cond, wait=10.0):
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise BenchError("timed out waiting for " + what)


def cpu_times(pid):
    """{thread name: [ns on a CPU, ns runnable but waiting for one]} for every
    thread of pid, from /proc/PID/task/TID/schedstat (nanoseconds, unlike the
    tick-sampled utime/stime); {} once pid is gone."""
    out = {}
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                name = f.read().strip()
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                run, wait = (int(x) for x in f.read().split()[:2])
        except (OSError, ValueError):
            continue
        t = out.setdefault(name, [0, 0])
        t[0] += run
        t[1] += wait
    return out


# ---- the load: subscribers and publishers in one epoll loop ------------------------

def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise BenchError("msgd closed a connection during setup")
        data += chunk
    return data


class Sub:
    __slots__ = ("sock", "fd", "buf", "mv", "tail", "frames", "phase")

    def __init__(self, port, topic, phase):
        self.sock = connect(port)
        # SUBSCRIBE's payload is the bare topic (PUBLISH's has a length byte)
        self.sock.sendall(HEADER.pack(MAGIC, VERSION, CMD_SUBSCRIBE, len(topic)) + topic)
        magic, _, cmd, length = HEADER.unpack(read_exact(self.sock, 16))
        if magic != MAGIC or cmd != REPLY | CMD_SUBSCRIBE or length != 0:
            raise BenchError("SUBSCRIBE failed: cmd 0x%08x length %d" % (cmd, length))
        self.sock.setblocking(False)
        self.fd = self.sock.fileno()
        self.buf = bytearray(1 << 18)
        self.mv = memoryview(self.buf)
        self.tail = 0       # bytes of an incomplete frame at the start of buf
        self.frames = 0     # complete MESSAGE frames received
        self.phase = phase  # this subscriber decodes frames k with k % N == phase


class Pub:
    __slots__ = ("sock", "fd", "num", "seq", "out", "reply_bytes")

    def __init__(self, port, num):
        self.sock = connect(port)
        self.sock.setblocking(False)
        self.fd = self.sock.fileno()
        self.num = num
        self.seq = 0
        self.out = b""
        self.reply_bytes = 0


def percentile(sorted_vals, p):
    if not sorted_vals:
        return None
    i = min(len(sorted_vals) - 1, int(round(p / 100.0 * (len(sorted_vals) - 1))))
    return sorted_vals[i]


def run_load(sub_port, pub_port, topic, args, mode, ready, mark):
    """One measured run: returns a dict of results. mode: "open" or "closed".
    ready() is called once the subscribers hold the topic, before anything is
    published; mark() at the start and at the end of the measured window."""
    n, size = args.subs, args.size
    tl = len(topic)
    payload_len = 1 + tl + size
    frame_len = 16 + payload_len
    pad = b"x" * (size - BODY.size)
    pack = struct.Struct(">IIIIB%dsqIQ%ds" % (tl, len(pad))).pack
    sample = struct.Struct(">IIIIB%dsqIQ" % tl).unpack_from

    subs = [Sub(sub_port, topic, i) for i in range(n)]
    ready()
    pubs = [Pub(pub_port, i) for i in range(args.pubs)]
    ep = select.epoll()
    by_fd = {}
    for s in subs:
        ep.register(s.fd, select.EPOLLIN)
        by_fd[s.fd] = s
    for p in pubs:
        ep.register(p.fd, select.EPOLLIN)
        by_fd[p.fd] = p
    lat = array.array("q")
    sent = 0
    late = 0              # open loop: messages generated over 1 ms after they were due
    rate = args.rate
    window = args.window
    batch_max = 512       # messages per publisher per loop turn
    mono = time.monotonic_ns

    t0 = mono()
    t_warm = t0 + int(WARMUP * 1e9)
    t_end = t_warm + int(args.seconds * 1e9)
    t_stop = t_end + int(DRAIN * 1e9)
    warm_frames = None
    end_frames = None
    sent_at_warm = sent_at_end = 0
    measuring = False

    def recv_sub(s, now):
        buf, mv = s.buf, s.mv
        for _ in range(8):
            try:
                got = s.sock.recv_into(mv[s.tail:])
            except BlockingIOError:
                return
            if got == 0:
                raise BenchError("msgd closed a subscriber")
            total = s.tail + got
            nf = total // frame_len
            k0 = s.frames
            first = k0 + ((s.phase - k0) % n)
            for k in range(first, k0 + nf, n):
                magic, _, cmd, length, _, t, ts, _, _ = sample(buf, (k - k0) * frame_len)
                if magic != MAGIC or cmd != CMD_MESSAGE or length != payload_len or t != topic:
                    raise BenchError("unexpected frame on a subscriber: cmd 0x%08x length %d"
                                     % (cmd, length))
                if ts >= t_warm and ts < t_end:
                    lat.append(now - ts)
            s.frames = k0 + nf
            rem = total - nf * frame_len
            if rem:
                buf[:rem] = buf[nf * frame_len:total]
            s.tail = rem
            if got < len(mv) - rem - 4096:
                return

    def recv_pub(p):
        for _ in range(8):
            try:
                data = p.sock.recv(1 << 18)
            except BlockingIOError:
                return
            if not data:
                raise BenchError("msgd closed a publisher")
            p.reply_bytes += len(data)

    def flush(p):
        if p.out:
            try:
                k = p.sock.send(p.out)
            except BlockingIOError:
                k = 0
            p.out = p.out[k:]
            if p.out:
                ep.modify(p.fd, select.EPOLLIN | select.EPOLLOUT)
            else:
                ep.modify(p.fd, select.EPOLLIN)

    def publish(p, count, now):
        nonlocal sent
        seq = p.seq
        p.out = b"".join([pack(MAGIC, VERSION, CMD_PUBLISH, payload_len, tl, topic, now, p.num,
                               seq + i, pad) for i in range(count)])
        p.seq = seq + count
        sent += count
        flush(p)

    next_tick = t0
    turns = 0
    while True:
        turns += 1
        now = mono()
        if not measuring and warm_frames is None and now >= t_warm:
            warm_frames = sum(s.frames for s in subs)
            sent_at_warm = sent
            t_warm_real = now
            mark()
            measuring = True
        if measuring and now >= t_end:
            end_frames = sum(s.frames for s in subs)
            sent_at_end = sent
            mark()
            t_end_real = mono()
            measuring = False
        sending = now < t_end
        if sending:
            if mode == "open":
                if now >= next_tick:
                    next_tick += TICK_NS
                    if next_tick <= now:  # fell behind: no catch-up burst of ticks
                        next_tick = now + TICK_NS
                    due = (now - t0) * rate // 1_000_000_000 - sent
                    if due > 0:
                        # the oldest message due now was due at t0 + sent/rate
                        if now - (t0 + sent * 1_000_000_000 // rate) > 2 * TICK_NS:
                            late += due
                        share = due // len(pubs) + 1
                        for p in pubs:
                            if not p.out and due > 0:
                                c = min(share, due, batch_max)
                                publish(p, c, now)
                                due -= c
                timeout = max(0.0, (next_tick - mono()) / 1e9)
            else:
                inflight = sent - min(s.frames for s in subs)
                room = window - inflight
                if room > 0:
                    share = room // len(pubs) + 1
                    for p in pubs:
                        if not p.out and room > 0:
                            c = min(share, room, batch_max)
                            publish(p, c, now)
                            room -= c
                timeout = 0.001
        else:
            if all(s.frames == sent for s in subs) and \
               all(p.reply_bytes == sent * PUBLISH_REPLY_SIZE for p in pubs):
                break
            if now >= t_stop:
                break
            timeout = 0.01
        for fd, ev in ep.poll(timeout):
            o = by_fd[fd]
            if o.__class__ is Sub:
                recv_sub(o, mono())
            else:
                if ev & select.EPOLLOUT:
                    flush(o)
                if ev & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
                    recv_pub(o)
    received = sum(s.frames for s in subs)
    replies = sum(p.reply_bytes for p in pubs)
    for o in subs + pubs:
        o.sock.close()
    ep.close()
    secs = (t_end_real - t_warm_real) / 1e9
    lat_sorted = sorted(lat)
    us = lambda v: None if v is None else round(v / 1000.0, 1)
    return {
        "mode": mode,
        "subs": n, "pubs": len(pubs), "size": size,
        "target_rate": rate if mode == "open" else None,
        "window": window if mode == "closed" else None,
        "seconds": round(secs, 3),
        "sent": sent,
        "messages_per_s": round((sent_at_end - sent_at_warm) / secs, 1),
        "deliveries_per_s": round((end_frames - warm_frames) / secs, 1),
        "lost": sent * n - received,
        "replies_ok": replies == sent * PUBLISH_REPLY_SIZE,
        "late_messages": late,
        "samples": len(lat_sorted),
        "p50_us": us(percentile(lat_sorted, 50)),
        "p99_us": us(percentile(lat_sorted, 99)),
        "p999_us": us(percentile(lat_sorted, 99.9)),
        "max_us": us(lat_sorted[-1] if lat_sorted else None),
        "loop_turns": turns,
    }


# ---- one round --------------------------------------------------------------------

def cpu_share(before, after, secs):
    """{process/thread: % of one CPU on it} and {process/thread: % of the
    window spent runnable but waiting for a CPU}, between two snapshots."""
    run, wait = {}, {}
    for proc in after:
        for thread, (r, w) in after[proc].items():
            r0, w0 = before.get(proc, {}).get(thread, (0, 0))
            key = proc if thread == "*" else "%s/%s" % (proc, thread)
            run[key] = round(100.0 * (r - r0) / 1e9 / secs, 1)
            wait[key] = round(100.0 * (w - w0) / 1e9 / secs, 1)
    return run, wait


def snapshot(procs):
    """CPU times: msgd's cluster thread apart from its other threads (the
    reactor, main, workers), the other processes whole."""
    snap = {}
    for name, pid in procs.items():
        t = cpu_times(pid)
        total = lambda d: [sum(v[0] for v in d.values()), sum(v[1] for v in d.values())]
        if name.startswith("msgd"):
            cl = t.pop("msgd-cluster", None)
            snap[name] = {"reactor+main": total(t)}
            if cl is not None:
                snap[name]["cluster-thread"] = cl
        else:
            snap[name] = {"*": total(t)}
    return snap


def redis_benchmark(sock, args, pin, extra, n_guess):
    """PUBLISH requests/s from redis-benchmark; -n sized to last about --seconds."""
    n = n_guess
    # Redis 7.0's redis-benchmark has no "publish" test (-t publish runs
    # nothing and exits 0), so the command is given: PUBLISH to a channel
    # nobody subscribes to, with a message as long as the one a node sends
    # (version, node name, instance id, then the PUBLISH payload).
    body = "x" * (2 + 1 + 8 + 1 + len("bench.1.cross.closed") + args.size)
    cmd = pinned(CLIENT_CPU, ["redis-benchmark", "-s", sock, "-n", str(n), "-q"] + extra
                 + ["PUBLISH", "bench-redis", body], pin)
    log("run: timeout 120 " + " ".join(cmd).replace(body, "x...(%d bytes)" % len(body)))
    try:
        p = subprocess.run(["timeout", "-k", "5", "120"] + cmd, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=130)
    except subprocess.TimeoutExpired:
        raise BenchError("redis-benchmark did not finish")
    text = (p.stdout + p.stderr).decode("utf-8", "replace")
    last = text.replace("\r", "\n").strip().splitlines()
    log(last[-1].replace(body, "x...") if last else "(no output)")
    m = re.findall(r"PUBLISH bench-redis x+: ([0-9.]+) requests per second"
                   r"(?:, p50=([0-9.]+) msec)?", text)
    if p.returncode != 0 or not m:
        raise BenchError("redis-benchmark failed (%d): %s" % (p.returncode, text[-300:]))
    rps = float(m[-1][0])
    return {"requests_per_s": rps, "p50_us": float(m[-1][1]) * 1000 if m[-1][1] else None,
            "n": n, "args": " ".join(cmd).replace(body, "X"), "message_bytes": len(body)}


def one_round(rnd, args, redis, pin, tmp, results, n_guess):
    """Starts nodes a, b, c; runs every scenario; stops the nodes."""
    nodes = {}
    try:
        for name, clustered in (("a", True), ("b", True), ("c", False)):
            ini = os.path.join(tmp, "%s.ini" % name)
            msgd_ini(ini, name, redis["sock"] if clustered else None)
            nodes[name] = start_server("msgd-" + name,
                                       pinned(SERVER_CPU, [args.msgd, "-c", ini], pin), args.out)
        for name in ("a", "b"):
            port = nodes[name].port("admin")
            wait_for("cluster.up on node " + name,
                     lambda: admin_stats(port).get("cluster.up") == 1)
        procs = {"redis-server": redis["pid"], "self": os.getpid()}
        procs.update({"msgd-" + k: v.pid for k, v in nodes.items()})
        scenarios = [("cross", "a", "b"), ("local", "a", "a"), ("plain", "c", "c")]
        for mode in ("open", "closed"):
            for scen, sub_node, pub_node in scenarios:
                topic = ("bench.%d.%s.%s" % (rnd, scen, mode)).encode()
                sub_port = nodes[sub_node].port("msg")
                pub_port = nodes[pub_node].port("msg")
                before = {k: admin_stats(v.port("admin")) for k, v in nodes.items()}
                marks = []

                def mark():
                    marks.append((time.monotonic(), snapshot(procs)))

                def ready():
                    # cross and local: Redis must route the topic to node a first
                    channel = "msgd:t:" + topic.decode()
                    if scen != "plain":
                        wait_for("Redis to route %s to node a" % channel,
                                 lambda: numsub(redis["sock"], channel) == 1)

                perf = None
                if args.perf and scen == "cross" and mode == "closed":
                    perf_out = os.path.join(args.out, "cluster-perf-round%d.data" % rnd)
                    pcmd = ["perf", "record", "-g", "-C", SERVER_CPU, "-o", perf_out, "--",
                            "sleep", str(args.seconds + WARMUP)]
                    log("run: " + " ".join(pcmd))
                    perf = subprocess.Popen(pcmd, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                # Subscribers first: wait until Redis routes the topic to node a.
                r = None
                try:
                    r = run_load(sub_port, pub_port, topic, args, mode, ready, mark)
                finally:
                    if perf is not None:
                        try:
                            perf.wait(args.seconds + 30)
                        except subprocess.TimeoutExpired:
                            perf.kill()
                            perf.wait()
                after = {k: admin_stats(v.port("admin")) for k, v in nodes.items()}
                (t1, s1), (t2, s2) = marks[0], marks[1]
                r["cpu_percent"], r["runqueue_wait_percent"] = cpu_share(s1, s2, t2 - t1)
                delta = lambda node, key: after[node].get(key, 0) - before[node].get(key, 0)
                r["counters"] = {
                    "sub_node.messages_dropped_slow_consumer":
                        delta(sub_node, "messages_dropped_slow_consumer"),
                    "pub_node.cluster.published": delta(pub_node, "cluster.published"),
                    "pub_node.cluster.dropped": delta(pub_node, "cluster.dropped"),
                    "sub_node.cluster.received": delta(sub_node, "cluster.received"),
                }
                r.update({"round": rnd, "scenario": scen})
                results.append(r)
                cpu = r["cpu_percent"]
                say("round %d %-5s %-6s %9.0f deliveries/s (%7.0f msg/s)  p50 %8s us  p99 %8s us"
                    "  lost %d  cpu%%: %s" % (
                        rnd, scen, mode, r["deliveries_per_s"], r["messages_per_s"], r["p50_us"],
                        r["p99_us"], r["lost"],
                        " ".join("%s=%.0f" % (k.replace("/reactor+main", "").replace(
                            "/cluster-thread", "/cl"), v) for k, v in cpu.items() if v >= 0.5)))
                if r["lost"] != 0 or not r["replies_ok"]:
                    raise BenchError("round %d %s %s: %d messages lost, replies ok: %s"
                                     % (rnd, scen, mode, r["lost"], r["replies_ok"]))
        for extra, key in (([], "redis"), (["-P", "16"], "redis_p16")):
            guess = n_guess.get(key, 200000 if not extra else 1000000)
            before = snapshot({"redis-server": redis["pid"]})
            t1 = time.monotonic()
            rb = redis_benchmark(redis["sock"], args, pin, extra, guess)
            rb["cpu_percent"], rb["runqueue_wait_percent"] = cpu_share(
                before, snapshot({"redis-server": redis["pid"]}), time.monotonic() - t1)
            n_guess[key] = max(10000, int(rb["requests_per_s"] * args.seconds))
            rb.update({"round": rnd, "scenario": key})
            results.append(rb)
            say("round %d %-9s %9.0f PUBLISH/s  (%s)" % (rnd, key, rb["requests_per_s"],
                                                        rb["args"]))
    finally:
        for s in nodes.values():
            stop_server(s)


# ---- the report ---------------------------------------------------------------------

def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, float) and v < 100:
        return "%.2f%s" % (v, unit)
    return "{:,.0f}{}".format(v, unit)


def report(results, args, pin, machine):
    runs = sorted({r["round"] for r in results})
    get = lambda scen, mode: [r for r in results if r["scenario"] == scen and r.get("mode") == mode]
    by_round = lambda rows: {r["round"]: r for r in rows}
    lines = []
    lines.append("%d rounds%s on %s (`--seconds %s --subs %d --pubs %d --size %d --rate %d "
                 "--window %d`); %s.%s"
                 % (len(runs), "" if args.loadavg is None else " of a run of " + time.strftime(
                     "%Y-%m-%d %H:%M UTC", time.gmtime()), machine, "%g" % args.seconds,
                    args.subs, args.pubs, args.size, args.rate, args.window,
                    "servers (redis-server, msgd a, b, c with reactors = 1) on CPU 0, the load "
                    "generator and redis-benchmark on CPU 1" if pin else "nothing pinned",
                    "" if args.loadavg is None else " Load average before / after: %s."
                    % args.loadavg))
    lines.append("")
    lines.append("| scenario | loop | messages/s | deliveries/s | p50 | p99 | vs single node "
                 "(cluster) | vs plain msgd |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|")
    names = {"cross": "cross-node: publishers on b, %d subscribers on a" % args.subs,
             "local": "single node a (cluster on): publishers and subscribers on a",
             "plain": "single node c (no cluster)"}
    summary = {}
    for mode in ("closed", "open"):
        loop = ("closed, window %d" % args.window if mode == "closed"
                else "open, %s msg/s" % "{:,}".format(args.rate))
        for scen in ("cross", "local", "plain"):
            rows = get(scen, mode)
            rr = by_round(rows)
            ratio = lambda other: med([rr[k]["deliveries_per_s"] / by_round(get(other, mode))[k]
                                       ["deliveries_per_s"] for k in rr
                                       if k in by_round(get(other, mode))])
            vs_local = ratio("local") if scen == "cross" else None
            vs_plain = ratio("plain") if scen != "plain" else None
            m = {"messages_per_s": med([r["messages_per_s"] for r in rows]),
                 "deliveries_per_s": med([r["deliveries_per_s"] for r in rows]),
                 "p50_us": med([r["p50_us"] for r in rows]),
                 "p99_us": med([r["p99_us"] for r in rows])}
            summary["%s_%s" % (scen, mode)] = dict(m, vs_local=vs_local, vs_plain=vs_plain)
            lines.append("| %s | %s | %s | %s | %s µs | %s µs | %s | %s |" % (
                names[scen], loop, fmt(m["messages_per_s"]), fmt(m["deliveries_per_s"]),
                fmt(m["p50_us"]), fmt(m["p99_us"]),
                "%.2fx" % vs_local if vs_local else "-", "%.2fx" % vs_plain if vs_plain else "-"))
    lines.append("")
    lines.append("| Redis PUBLISH, same redis-server, same round | requests/s "
                 "| cross-node messages/s (closed) as a share |")
    lines.append("|---|---:|---:|")
    for key, label in (("redis", "`redis-benchmark -s SOCK -q PUBLISH bench-redis X` (50 clients)"),
                       ("redis_p16", "the same with `-P 16`")):
        rows = [r for r in results if r["scenario"] == key]
        cross = by_round(get("cross", "closed"))
        share = med([cross[r["round"]]["messages_per_s"] / r["requests_per_s"] for r in rows
                     if r["round"] in cross])
        summary[key] = {"requests_per_s": med([r["requests_per_s"] for r in rows]),
                        "cross_share": share}
        lines.append("| %s | %s | %s |" % (label, fmt(summary[key]["requests_per_s"]),
                                          "%.2fx" % share if share else "-"))
    lines.append("")
    lines.append("Where the time went in the closed-loop runs: % of one CPU on it over the "
                 "measured window (from /proc/PID/task/TID/schedstat), median of the rounds. "
                 "\"CPU 0 busy\" adds up the servers; \"waiting\" is the time the servers' "
                 "threads were runnable but not running (all of them share CPU 0).")
    lines.append("")
    lines.append("| scenario | redis-server | msgd a reactor | msgd a cluster thread "
                 "| msgd b reactor | msgd b cluster thread | msgd c | CPU 0 busy | servers waiting "
                 "| load generator (CPU 1) |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    cols = ["redis-server", "msgd-a/reactor+main", "msgd-a/cluster-thread", "msgd-b/reactor+main",
            "msgd-b/cluster-thread", "msgd-c/reactor+main"]
    for scen in ("cross", "local", "plain"):
        rows = get(scen, "closed")
        cells = [fmt(med([r["cpu_percent"].get(c) for r in rows]), "%") for c in cols]
        cells.append(fmt(med([sum(r["cpu_percent"].get(c, 0) for c in cols) for r in rows]), "%"))
        cells.append(fmt(med([sum(r["runqueue_wait_percent"].get(c, 0) for c in cols)
                              for r in rows]), "%"))
        cells.append(fmt(med([r["cpu_percent"].get("self") for r in rows]), "%"))
        summary["cpu_" + scen] = dict(zip(cols + ["cpu0", "wait", "self"], cells))
        lines.append("| %s | %s |" % (scen, " | ".join(cells)))
    lines.append("")
    lines.append("The same as CPU time per message published (each delivered to %d subscribers), "
                 "in microseconds: what a message costs wherever it runs, whatever else shared "
                 "the CPUs (median of the rounds):" % args.subs)
    lines.append("")
    lines.append("| scenario | redis-server | msgd a reactor | msgd a cluster thread "
                 "| msgd b reactor | msgd b cluster thread | msgd c | servers in all "
                 "| load generator |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    per_msg = lambda r, pct: pct / 100.0 / r["messages_per_s"] * 1e6
    for scen in ("cross", "local", "plain"):
        rows = get(scen, "closed")
        cells = [med([per_msg(r, r["cpu_percent"].get(c, 0)) for r in rows]) for c in cols]
        cells.append(med([per_msg(r, sum(r["cpu_percent"].get(c, 0) for c in cols))
                          for r in rows]))
        cells.append(med([per_msg(r, r["cpu_percent"].get("self", 0)) for r in rows]))
        summary["us_per_msg_" + scen] = dict(zip(cols + ["servers", "self"], cells))
        lines.append("| %s | %s |" % (scen, " | ".join("%.2f" % c for c in cells)))
    lines.append("")
    lines.append("Medians of %d rounds; ratios are medians of the per-round ratios. Lost messages "
                 "in every run: %d." % (len(runs), sum(r.get("lost", 0) for r in results)))
    return "\n".join(lines) + "\n", summary


def rewrite_doc(path, table):
    a, b = "<!-- cluster-bench:start -->\n", "<!-- cluster-bench:end -->"
    with open(path) as f:
        text = f.read()
    i, j = text.find(a), text.find(b)
    if i < 0 or j < i:
        say("%s has no %s ... %s section: not rewritten" % (path, a.strip(), b))
        return False
    with open(path, "w") as f:
        f.write(text[:i + len(a)] + table + text[j:])
    return True


def machine_line():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return "%s, %d CPUs, kernel %s" % (model, os.cpu_count() or 0, platform.release())


# ---- main -------------------------------------------------------------------------

def main():
    env = os.environ.get
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build-bench", help="where msgd is (default build-bench)")
    ap.add_argument("--runs", type=int, default=int(env("BENCH_RUNS", "3")))
    ap.add_argument("--seconds", type=float, default=float(env("BENCH_SECONDS", "4")))
    ap.add_argument("--subs", type=int, default=int(env("BENCH_CLUSTER_SUBS", "10")))
    ap.add_argument("--pubs", type=int, default=int(env("BENCH_CLUSTER_PUBS", "2")))
    ap.add_argument("--rate", type=int, default=int(env("BENCH_CLUSTER_RATE", "20000")),
                    help="open loop: messages/s (all publishers together)")
    ap.add_argument("--window", type=int, default=int(env("BENCH_CLUSTER_WINDOW", "1000")),
                    help="closed loop: messages in flight end to end")
    ap.add_argument("--size", type=int, default=int(env("BENCH_CLUSTER_SIZE", "64")),
                    help="message bytes (after the topic), at least 20")
    ap.add_argument("--out", default=env("BENCH_OUT"))
    ap.add_argument("--doc", default=env("BENCH_DOC"))
    ap.add_argument("--perf", action="store_true", help="perf record CPU 0 in cross/closed runs")
    ap.add_argument("--report", metavar="JSONL", nargs="+",
                    help="only print the table (and rewrite --doc) from earlier cluster.jsonl "
                         "files, their rounds pooled (run with the same settings)")
    args = ap.parse_args()
    if args.report:
        results = []
        for i, path in enumerate(args.report):
            with open(path) as f:
                for line in f:
                    if line.strip():
                        r = json.loads(line)
                        r["round"] += 100 * i  # rounds of different files stay apart
                        results.append(r)
        args.loadavg = None
        table, _ = report(results, args, True, machine_line())
        sys.stdout.write(table)
        return 0 if not args.doc or rewrite_doc(args.doc, table) else 1
    if not (1 <= args.runs <= 9 and 0.5 <= args.seconds <= 60 and 1 <= args.subs <= 1000
            and 1 <= args.pubs <= 64 and 1 <= args.rate <= 10_000_000
            and 1 <= args.window <= 1_000_000 and BODY.size <= args.size <= 65536):
        say("cluster.py: a setting is out of range (runs 1..9, seconds 0.5..60, subs 1..1000, "
            "pubs 1..64, rate, window >= 1, size 20..65536)")
        return 2
    args.msgd = os.path.join(args.build, "msgd")
    args.out = args.out or os.path.join(args.build, "bench")
    for prog in ("redis-server", "redis-benchmark", "taskset", "timeout") + \
            (("perf",) if args.perf else ()):
        if not shutil.which(prog):
            say("cluster.py: %s not found (bash scripts/deps.sh bench)" % prog)
            return 2
    if not os.access(args.msgd, os.X_OK):
        say("cluster.py: %s missing (run make bench-build)" % args.msgd)
        return 2
    os.makedirs(args.out, exist_ok=True)
    global LOG
    LOG = open(os.path.join(args.out, "cluster.log"), "w")
    pin = (os.cpu_count() or 1) >= 2
    if pin:
        os.sched_setaffinity(0, {int(CLIENT_CPU)})
        log("this script (the load generator) pinned to CPU %s" % CLIENT_CPU)
    args.loadavg = "%.2f" % os.getloadavg()[0]
    tmp = tempfile.mkdtemp(prefix="msgd-bench-cluster.")
    results = []
    rc = 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        rsock = os.path.join(tmp, "redis.sock")
        rcmd = pinned(SERVER_CPU, ["redis-server", "--port", "0", "--unixsocket", rsock,
                                   "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
                                   "--supervised", "systemd", "--dir", tmp, "--logfile", ""], pin)
        rs = start_server("redis", rcmd, args.out)
        redis = {"sock": rsock, "pid": rs.pid}
        n_guess = {}
        for rnd in range(1, args.runs + 1):
            one_round(rnd, args, redis, pin, tmp, results, n_guess)
    except BenchError as e:
        say("cluster.py: %s" % e)
        rc = 1
    except KeyboardInterrupt:
        rc = 1
    finally:
        for s in list(SERVERS):
            stop_server(s)
        shutil.rmtree(tmp, ignore_errors=True)
    with open(os.path.join(args.out, "cluster.jsonl"), "w") as f:
        for r in results:
            f.write(json.dumps(r) + "\n")
    if rc == 0 and results:
        args.loadavg += " / %.2f" % os.getloadavg()[0]
        table, summary = report(results, args, pin, machine_line())
        with open(os.path.join(args.out, "cluster.md"), "w") as f:
            f.write(table)
        with open(os.path.join(args.out, "cluster-summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
        sys.stdout.write(table)
        if args.doc and not rewrite_doc(args.doc, table):
            rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
