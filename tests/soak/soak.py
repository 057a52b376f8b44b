#!/usr/bin/env python3
"""soak: many msg connections echoing random-sized, self-checking payloads
against a msgd it starts itself, while the daemon's memory and fds are sampled.

Each connection keeps a few ECHO requests in flight. A payload is a 20-byte
header (connection id u32, sequence number u64, body length u32, CRC32 of the
body u32; big-endian) and a body cut from a random pool; its total size is
uniform in [20, --max-payload] (default 64 KiB, so msgd runs with max_frame =
128K). Every reply is checked against what was sent: the header's connection
id and sequence number, the body's length, its CRC32 (zlib.crc32) and its
bytes. Pass means:
  - zero lost, duplicated, corrupted, reordered or unexpected replies, and no
    connection closed by the server;
  - the daemon's VmRSS at rest (the load paused with every reply in, and
    msgd's buffer pools, a bounded cache of emptied buffers freed once unused
    for a second, reported empty by STATS buffer_pool_bytes) at the end is at
    most 10% above what it was at rest after the warm-up (the first 20% of
    the run); checked only without sanitizers or valgrind, i.e.
    MSGD_TEST_TIMEOUT_SCALE = 1: ASan's quarantine keeps freed memory
    resident; the pools never hold more than their bound (8 MiB per
    reactor); and the fd count is flat after the warm-up;
  - msgd exits 0 on SIGTERM with no sanitizer report in its log.

usage: soak.py [--seconds N] [--conns N] [--depth N] [--max-payload BYTES] [--seed N]
Environment: SOAK_SECONDS (default 600), MSGD_BIN, MSGD_TEST_TIMEOUT_SCALE,
MSGD_KEEP_TMP (see tests/integration/harness.py).
Prints a summary; exits 0 on a pass, 1 on any violation.

The engine (EchoLoad) is also used by tests/integration/test_soak_short.py
(the 20 s version in `make test`) and by test_faults.py (F5).
"""

import argparse
import collections
import os
import random
import selectors
import socket
import struct
import sys
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

import harness  # noqa: E402  (after sys.path)
import msgproto as mp  # noqa: E402

PAYLOAD_HEADER = struct.Struct(">IQII")   # conn id, seq, body length, crc32(body)
HDR = PAYLOAD_HEADER.size                  # 20
POOL_SIZE = 1 << 20
MAX_VIOLATIONS_KEPT = 50
POOL_BOUND_PER_REACTOR = 8 << 20           # src/conn.c CONN_POOL_BYTES
PROBE_POOL_BYTES = 64 << 10                # what the probe's STATS keep in use at rest

SOAK_CONFIG = {
    "server": {"reactors": 2, "workers": 1},
    "msg": {"listen": "127.0.0.1:0", "max_frame": "128K"},
    "echo": {"listen": ""},
    "log": {"level": "info"},
}


def floor_of(values):
    """The 25th percentile of values."""
    v = sorted(values)
    return v[len(v) // 4]


def proc_rss(pid):
    """VmRSS of pid in bytes (0 if unknown)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def pool_bytes(probe):
    """The daemon's own count of emptied buffer memory it keeps for reuse
    (STATS buffer_pool_bytes, summed over the reactors)."""
    cmd, payload = probe.call(mp.STATS)
    if cmd != mp.reply_cmd(mp.STATS):
        raise AssertionError("STATS reply: %s" % mp.describe(cmd, payload))
    return mp.parse_stats(payload).get("buffer_pool_bytes", 0)


def proc_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


class Conn:
    __slots__ = ("idx", "sock", "reader", "out", "outpos", "inflight", "seq",
                 "sent", "verified", "closed")

    def __init__(self, idx, sock):
        self.idx = idx
        self.sock = sock
        self.reader = mp.FrameReader()
        self.out = bytearray()
        self.outpos = 0
        self.inflight = collections.deque()   # (seq, pool offset, body length)
        self.seq = 0
        self.sent = 0
        self.verified = 0
        self.closed = False


class EchoLoad:
    """N connections on one selector loop, each with up to `depth` ECHO
    requests in flight, every reply verified. Not thread-safe: one thread runs
    it (run() may be called from a background thread; stop by setting the
    threading.Event passed to run())."""

    def __init__(self, host, port, conns=50, depth=4, max_payload=64 * 1024,
                 min_payload=HDR, seed=None, connect_timeout=5.0):
        if max_payload < HDR or min_payload < HDR or min_payload > max_payload:
            raise ValueError("payload sizes must be in [%d, max]" % HDR)
        self.rng = random.Random(seed)
        # bodies are slices of a random pool (the tail repeats the head, so a
        # slice starting anywhere in the first POOL_SIZE bytes never wraps)
        pool = self.rng.getrandbits(8 * POOL_SIZE).to_bytes(POOL_SIZE, "little")
        self.pool = pool + pool[:max_payload]
        self.depth = depth
        self.max_payload = max_payload
        self.min_payload = min_payload
        self.sel = selectors.DefaultSelector()
        self.conns = []
        self.requests = 0
        self.replies = 0
        self.bytes_sent = 0
        self.bytes_recv = 0
        self.violations = []
        self.violation_count = collections.Counter()
        self.sending = True
        for i in range(conns):
            s = socket.create_connection((host, port), timeout=connect_timeout)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)
            c = Conn(i, s)
            self.conns.append(c)
            self.sel.register(s, selectors.EVENT_READ, c)
        for c in self.conns:
            self._fill(c)

    # --- bookkeeping -----------------------------------------------------------
    def violation(self, kind, text):
        self.violation_count[kind] += 1
        if len(self.violations) < MAX_VIOLATIONS_KEPT:
            self.violations.append("%s: %s" % (kind, text))

    def in_flight(self):
        return sum(len(c.inflight) for c in self.conns if not c.closed)

    def open_conns(self):
        return sum(1 for c in self.conns if not c.closed)

    # --- sending -----------------------------------------------------------------
    def _fill(self, c):
        while self.sending and not c.closed and len(c.inflight) < self.depth:
            size = self.rng.randint(self.min_payload, self.max_payload)
            blen = size - HDR
            off = self.rng.randrange(0, POOL_SIZE)
            body = self.pool[off:off + blen]
            seq = c.seq
            c.seq += 1
            head = PAYLOAD_HEADER.pack(c.idx, seq, blen, zlib.crc32(body))
            c.out += mp.encode_header(mp.ECHO, size)
            c.out += head
            c.out += body
            c.inflight.append((seq, off, blen))
            c.sent += 1
            self.requests += 1
        self._flush(c)

    def _flush(self, c):
        if c.closed:
            return
        while c.outpos < len(c.out):
            try:
                n = c.sock.send(memoryview(c.out)[c.outpos:c.outpos + 262144])
            except BlockingIOError:
                break
            except OSError as e:
                self._lost_conn(c, "send failed: %s" % e)
                return
            c.outpos += n
            self.bytes_sent += n
        if c.outpos == len(c.out):
            c.out = bytearray()
            c.outpos = 0
            events = selectors.EVENT_READ
        else:
            if c.outpos > 1 << 20:
                del c.out[:c.outpos]
                c.outpos = 0
            events = selectors.EVENT_READ | selectors.EVENT_WRITE
        if self.sel.get_key(c.sock).events != events:
            self.sel.modify(c.sock, events, c)

    # --- receiving -----------------------------------------------------------------
    def _lost_conn(self, c, why):
        if c.closed:
            return
        c.closed = True
        self.violation("closed", "conn %d: %s after %d verified replies, %d in flight"
                       % (c.idx, why, c.verified, len(c.inflight)))
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    def _read(self, c):
        try:
            data = c.sock.recv(262144)
        except BlockingIOError:
            return
        except OSError as e:
            self._lost_conn(c, "recv failed: %s" % e)
            return
        if not data:
            self._lost_conn(c, "EOF")
            return
        self.bytes_recv += len(data)
        c.reader.feed(data)
        try:
            for f in c.reader.frames():
                self._check(c, f)
        except mp.ProtocolError as e:
            self.violation("corrupted", "conn %d: unparsable stream: %s" % (c.idx, e))
            self._lost_conn(c, "protocol error")
            return
        self._fill(c)

    def _check(self, c, f):
        if f.cmd != mp.REPLY | mp.ECHO:
            self.violation("unexpected", "conn %d: %s" % (c.idx, mp.describe(f.cmd, f.payload)))
            return
        p = f.payload
        if len(p) < HDR:
            self.violation("corrupted", "conn %d: reply of %d bytes has no header" % (c.idx, len(p)))
            return
        cid, seq, blen, crc = PAYLOAD_HEADER.unpack_from(p, 0)
        if cid != c.idx:
            self.violation("corrupted", "conn %d: got a reply carrying conn id %d seq %d"
                           % (c.idx, cid, seq))
            return
        if not c.inflight:
            self.violation("duplicated", "conn %d: reply seq %d with nothing in flight"
                           % (c.idx, seq))
            return
        want_seq, off, want_len = c.inflight[0]
        if seq < want_seq:
            self.violation("duplicated", "conn %d: seq %d again (expected %d)"
                           % (c.idx, seq, want_seq))
            return
        if seq > want_seq:
            if any(s == seq for s, _, _ in c.inflight):
                # the ones before it were skipped: lost, or they come later (reordered)
                self.violation("reordered", "conn %d: seq %d before %d" % (c.idx, seq, want_seq))
                while c.inflight and c.inflight[0][0] < seq:
                    c.inflight.popleft()
                want_seq, off, want_len = c.inflight[0]
            else:
                self.violation("corrupted", "conn %d: seq %d was never sent (expected %d)"
                               % (c.idx, seq, want_seq))
                return
        c.inflight.popleft()
        body = p[HDR:]
        if blen != want_len or len(body) != want_len:
            self.violation("corrupted", "conn %d seq %d: body length %d (header %d), sent %d"
                           % (c.idx, seq, len(body), blen, want_len))
            return
        if zlib.crc32(body) != crc or body != self.pool[off:off + want_len]:
            self.violation("corrupted", "conn %d seq %d: body bytes differ (crc %08x, header %08x)"
                           % (c.idx, seq, zlib.crc32(body), crc))
            return
        c.verified += 1
        self.replies += 1

    # --- the loop --------------------------------------------------------------------
    def step(self, wait):
        """One select round of at most `wait` seconds."""
        for key, events in self.sel.select(wait):
            c = key.data
            if events & selectors.EVENT_READ:
                self._read(c)
            if events & selectors.EVENT_WRITE and not c.closed:
                self._flush(c)

    def run(self, until, stop=None, on_tick=None, tick=1.0):
        """Runs until time.monotonic() >= until or stop (a threading.Event) is
        set; on_tick(now) is called about every `tick` seconds."""
        next_tick = time.monotonic() + tick
        while True:
            now = time.monotonic()
            if now >= until or (stop is not None and stop.is_set()):
                return
            if on_tick is not None and now >= next_tick:
                on_tick(now)
                next_tick = now + tick
            self.step(min(0.1, max(0.0, min(until, next_tick) - now)))

    def pause(self, wait):
        """Stops sending and waits (at most `wait` s) for every reply owed;
        returns how many are still owed (0 when the pause is complete)."""
        self.sending = False
        deadline = time.monotonic() + wait
        while self.in_flight() > 0 or any(c.outpos < len(c.out) for c in self.conns
                                          if not c.closed):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.step(min(0.1, left))
        return self.in_flight()

    def resume(self):
        """Sends again after a pause."""
        self.sending = True
        for c in self.conns:
            self._fill(c)

    def drain(self, wait):
        """Stops sending and waits (at most `wait` s) for every reply owed;
        whatever is still missing then counts as lost. Returns the lost count."""
        self.pause(wait)
        lost = 0
        for c in self.conns:
            if c.inflight:
                lost += len(c.inflight)
                self.violation("lost", "conn %d: %d replies never came (first seq %d)"
                               % (c.idx, len(c.inflight), c.inflight[0][0]))
        return lost

    def close(self):
        for c in self.conns:
            if not c.closed:
                c.closed = True
                try:
                    self.sel.unregister(c.sock)
                except (KeyError, ValueError):
                    pass
                c.sock.close()
        self.sel.close()


def run_soak(seconds, conns=50, depth=4, max_payload=64 * 1024, seed=None,
             warmup_frac=0.2, rss_growth_limit=0.10, sample_every=None,
             enforce_rss=None, log=None, daemon_config=None):
    """Starts msgd, runs the soak for `seconds`, stops msgd. Returns a dict of
    figures with "violations" (a list of strings, empty on a pass)."""
    if log is None:
        def log(msg):
            sys.stderr.write(msg + "\n")
            sys.stderr.flush()
    if enforce_rss is None:
        enforce_rss = harness.SCALE == 1
    if sample_every is None:
        sample_every = max(0.25, min(5.0, seconds / 80.0))
    cfg = harness.merge_config(SOAK_CONFIG, daemon_config)
    d = harness.Daemon(cfg, name="soak")
    d.start()
    res = {"seconds": seconds, "conns": conns, "depth": depth, "max_payload": max_payload,
           "violations": [], "samples": []}
    load = None
    probe = None
    try:
        probe = d.client()   # STATS for the samples, and the final count check
        load = EchoLoad(harness.HOST, d.port(), conns=conns, depth=depth,
                        max_payload=max_payload, seed=seed,
                        connect_timeout=harness.timeout())
        t0 = time.monotonic()
        warm_end = t0 + seconds * warmup_frac
        samples = res["samples"]   # (t, rss, fds, requests, replies, pool bytes)
        log_stride = max(1, int(round(max(1.0, seconds / 20.0) / sample_every)))

        def sample(now):
            # Read the daemon's sd_notify datagrams as systemd would: msgd
            # sends STATUS= every 5 s with a blocking sendmsg(), so a notify
            # socket nobody drains fills up (net.unix.max_dgram_qlen, 10 by
            # default) after a minute and then blocks msgd's main thread,
            # and with it every new accept (see docs/RELIABILITY.md).
            while d.recv_notify(0) is not None:
                pass
            samples.append((now - t0, proc_rss(d.pid), proc_fds(d.pid), load.requests,
                            load.replies, pool_bytes(probe)))
            t, rss, fds, rq, rp, pool = samples[-1]
            if (len(samples) - 1) % log_stride == 0:
                log("soak: t=%6.1fs rss=%7.1f MiB pool=%5.1f MiB fds=%d requests=%d verified=%d "
                    "violations=%d" % (t, rss / 1048576.0, pool / 1048576.0, fds, rq, rp,
                                       sum(load.violation_count.values())))

        def quiet_rss(what):
            # Every reply in, then the pools' one-second decay empties them
            # (but for the buffer the probe's own STATS replies cycle through):
            # what is left is what msgd holds for its connections at rest.
            owed = load.pause(harness.timeout(2))
            if owed:
                res["violations"].append("%d replies still owed %s" % (owed, what))
            deadline = time.monotonic() + harness.timeout(5)
            while pool_bytes(probe) > PROBE_POOL_BYTES:
                if time.monotonic() > deadline:
                    res["violations"].append("the buffer pools did not empty %s" % what)
                    break
                sample(time.monotonic())
                load.step(0.05)
            rss = proc_rss(d.pid)
            log("soak: at rest %s: rss=%.2f MiB" % (what, rss / 1048576.0))
            load.resume()
            return rss

        sample(t0)
        load.run(warm_end, on_tick=sample, tick=sample_every)
        res["rss_rest_ref"] = quiet_rss("after the warm-up")
        load.run(warm_end + seconds * (1 - warmup_frac), on_tick=sample, tick=sample_every)
        res["rss_rest_end"] = quiet_rss("at the end")
        sample(time.monotonic())
        lost = load.drain(harness.timeout(2))
        res["elapsed"] = time.monotonic() - t0
        res["requests"] = load.requests
        res["replies"] = load.replies
        res["bytes_sent"] = load.bytes_sent
        res["bytes_recv"] = load.bytes_recv
        res["lost"] = lost
        res["violation_count"] = dict(load.violation_count)
        res["violations"].extend(load.violations)
        if load.requests != load.replies and not load.violations:
            res["violations"].append("requests %d != verified replies %d"
                                     % (load.requests, load.replies))
        if load.replies == 0:
            res["violations"].append("no reply verified at all")

        post = [s for s in samples if s[0] >= warm_end - t0]
        if len(post) < 8:
            res["violations"].append("too few samples after the warm-up (%d)" % len(post))
        else:
            # A leak shows at rest: with every reply in and the buffer pools
            # (a bounded cache of emptied buffers, freed once unused for a
            # second) empty, msgd must hold no more than after the warm-up.
            # The samples in between only report the working set, and the
            # pools are checked against their bound.
            ref, end = res["rss_rest_ref"], res["rss_rest_end"]
            res["rss_ref"] = ref
            res["rss_end"] = end
            res["rss_max"] = max(s[1] for s in samples)
            res["rss_post_max"] = max(s[1] for s in post)
            res["pool_max"] = max(s[5] for s in samples)
            res["rss_growth_pct"] = 100.0 * (res["rss_post_max"] - ref) / ref if ref else 0.0
            res["rss_drift_pct"] = 100.0 * (end - ref) / ref if ref else 0.0
            res["rss_enforced"] = enforce_rss
            if enforce_rss and end > ref * (1 + rss_growth_limit):
                res["violations"].append(
                    "RSS at rest grew %+.1f%% from after the warm-up to the end (%d -> %d "
                    "bytes; limit %.0f%%)"
                    % (res["rss_drift_pct"], ref, end, rss_growth_limit * 100))
            pool_bound = POOL_BOUND_PER_REACTOR * cfg["server"]["reactors"]
            if res["pool_max"] > pool_bound:
                res["violations"].append("buffer pools held %d bytes, over their bound of %d"
                                         % (res["pool_max"], pool_bound))
            fds = sorted(set(s[2] for s in post))
            res["fds_post"] = fds
            res["fds_all"] = sorted(set(s[2] for s in samples))
            if len(fds) != 1:
                res["violations"].append("fd count not flat after the warm-up: %s"
                                         % [s[2] for s in post])
        # the daemon still counts exactly our connections
        cmd, payload = probe.call(mp.STATS)
        stats = mp.parse_stats(payload)
        res["connections_current"] = stats.get("connections_current")
        if stats.get("connections_current") != load.open_conns() + 1:
            res["violations"].append("daemon has %r connections, expected %d"
                                     % (stats.get("connections_current"), load.open_conns() + 1))
    finally:
        if load is not None:
            load.close()
        if probe is not None:
            probe.close()
        problems = d.finish()
        if problems:
            res["violations"].append("msgd: %s (log %s)" % ("; ".join(problems), d.log_path))
    return res


def summary(res):
    lines = []
    lines.append("soak: %.0f s (%.1f s measured), %d connections, depth %d, payloads %d..%d bytes"
                 % (res["seconds"], res.get("elapsed", 0), res["conns"], res["depth"], HDR,
                    res["max_payload"]))
    if "requests" in res:
        el = max(res.get("elapsed", 1), 1e-9)
        lines.append("soak: requests %d, verified replies %d (%.0f/s), lost %d, sent %.1f MiB, "
                     "received %.1f MiB (%.1f MiB/s each way)"
                     % (res["requests"], res["replies"], res["replies"] / el, res["lost"],
                        res["bytes_sent"] / 1048576.0, res["bytes_recv"] / 1048576.0,
                        res["bytes_recv"] / 1048576.0 / el))
        lines.append("soak: violations by kind: %s" % (res.get("violation_count") or "none"))
    if "rss_ref" in res:
        lines.append("soak: RSS max %.1f MiB, buffer pools max %.1f MiB; RSS at rest (every reply "
                     "in, pools empty) after the warm-up %.2f MiB, at the end %.2f MiB (%+.1f%%); "
                     "max under load %+.1f%% of that%s"
                     % (res["rss_max"] / 1048576.0, res["pool_max"] / 1048576.0,
                        res["rss_ref"] / 1048576.0, res["rss_end"] / 1048576.0,
                        res["rss_drift_pct"], res["rss_growth_pct"],
                        "" if res["rss_enforced"] else " (not enforced: sanitizer/valgrind)"))
        lines.append("soak: fd counts seen %s; after warm-up %s" % (res["fds_all"], res["fds_post"]))
    for v in res["violations"]:
        lines.append("soak: VIOLATION %s" % v)
    lines.append("soak: %s" % ("PASS" if not res["violations"] else "FAIL"))
    return "\n".join(lines)


def main(argv):
    ap = argparse.ArgumentParser(description="msgd soak test")
    ap.add_argument("--seconds", type=float,
                    default=float(os.environ.get("SOAK_SECONDS") or 600))
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--max-payload", type=int, default=64 * 1024)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args(argv)
    if args.seconds <= 0 or args.conns <= 0 or args.depth <= 0:
        ap.error("seconds, conns and depth must be positive")
    sys.stderr.write("soak: msgd %s, %.0f s, timeout scale %g\n"
                     % (harness.MSGD_BIN, args.seconds, harness.SCALE))
    res = run_soak(args.seconds, conns=args.conns, depth=args.depth,
                   max_payload=args.max_payload, seed=args.seed)
    print(summary(res))
    return 0 if not res["violations"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
