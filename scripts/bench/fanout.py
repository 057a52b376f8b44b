#!/usr/bin/env python3
"""fanout.py: pub/sub fan-out, msgd against redis-server 7 pub/sub, the same
client (msgfanout) in the same run (`make bench-fanout`, and a step of `make
bench`; docs/BENCHMARKS.md "Fan-out against redis").

    scripts/bench/fanout.py [--build DIR] [--runs N] [--seconds S] [--warmup S]
                            [--scenarios "A B C D E"] [--reactors "1 2"]
                            [--rate R] [--out DIR] [--doc FILE]

Scenarios (msgfanout options in brackets):

  A  1 publisher -> 100 subscribers on one topic, 64 B, closed loop with 64
     PUBLISH requests outstanding  [--publishers 1 --subscribers 100 --size 64
     --outstanding 64]
  B  1 publisher -> 1,000 subscribers, 64 B, 64 outstanding
  C  10 publishers, 10 topics, 10 subscribers per topic, 1 KiB; publisher p
     publishes to its own topic p (subscriber i holds topic i % 10); 64
     outstanding per publisher
  D  open loop: 10,000 publishes/s (--rate) on a fixed schedule -> 100
     subscribers, 64 B; latency from each message's intended send time
  E  1 publisher -> 200 subscribers, 64 KiB, 8 outstanding: big payloads,
     which msgd queues to each subscriber as a reference to one copy
     (src/outq.h); no goal in issue 16, shown for memory and CPU

Method: for every round (--runs, default 3) and scenario, fresh servers, back
to back: redis-server (Debian's, TCP on a free 127.0.0.1 port, `--save ''
--appendonly no`, ready when it says READY=1 under `--supervised systemd`),
then msgd for each --reactors value (heartbeats and idle timeouts off, every
other setting its default; ready on READY=1 through NOTIFY_SOCKET), each
under `taskset -c 0`; msgfanout runs under `taskset -c 1` with
--server-pid, so the server's CPU time and page faults over the measured
window and its VmRSS/VmHWM at the end come from /proc. A value in the table
is the median over the rounds; a ratio is the median of the per-round ratios
(each pair ran seconds apart). On fewer than 2 CPUs nothing is pinned.

Goals (issue 16), judged on each msgd row against redis: A, B, C at least
1.5x redis's deliveries/s and at most 0.67x its server CPU per delivery; D
p99 no worse than redis's.

Output under --out (default BUILD/bench): fanout.jsonl (every run, with
msgfanout's JSON), fanout.log (every command line), fanout.md (the table),
the servers' logs. With --doc FILE the part of FILE between
`<!-- fanout-bench:start -->` and `<!-- fanout-bench:end -->` is replaced.

Bounds: every server wait has a deadline (launch.py, 20 s to READY, killed
after 30 minutes), every msgfanout run has --seconds + --warmup + at most 10 s
of draining and runs under a timeout; every server started here is stopped by
its PID (SIGTERM, then SIGKILL after 10 s), on exit too.

Environment: BENCH_FANOUT_RUNS, BENCH_FANOUT_SECONDS, BENCH_FANOUT_WARMUP,
BENCH_FANOUT_SCENARIOS, BENCH_FANOUT_REACTORS, BENCH_FANOUT_RATE, BENCH_OUT,
BENCH_DOC set the defaults of the options above.

Exit status: 0 when every run worked (whatever the goals say), 1 when a
server or msgfanout failed (a sequence, size or completeness error, a server
that did not start), 2 for a bad setting or a missing program.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import cluster  # noqa: E402  (the server launcher, pinning and machine line are shared)

SERVER_CPU, CLIENT_CPU = "0", "1"
SCENARIOS = {
    "A": {"what": "1 pub -> 100 subs, 64 B, 64 outstanding",
          "args": ["--publishers", 1, "--topics", 1, "--subscribers", 100, "--size", 64,
                   "--outstanding", 64]},
    "B": {"what": "1 pub -> 1,000 subs, 64 B, 64 outstanding",
          "args": ["--publishers", 1, "--topics", 1, "--subscribers", 1000, "--size", 64,
                   "--outstanding", 64]},
    "C": {"what": "10 pubs x 10 topics x 10 subs, 1 KiB, 64 outstanding each",
          "args": ["--publishers", 10, "--topics", 10, "--subscribers", 100, "--size", 1024,
                   "--outstanding", 64]},
    "D": {"what": "open loop 10,000 publishes/s -> 100 subs, 64 B",
          "args": ["--publishers", 1, "--topics", 1, "--subscribers", 100, "--size", 64],
          "open": True},
    "E": {"what": "1 pub -> 200 subs, 64 KiB, 8 outstanding (no goal: shared payloads)",
          "args": ["--publishers", 1, "--topics", 1, "--subscribers", 200, "--size", 65536,
                   "--outstanding", 8],
          "no_goal": True},
}
DRAIN = 10
TPUT_GOAL, CPU_GOAL = 1.5, 0.67


def say(line):
    cluster.say(line)


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def msgd_config(path, reactors):
    with open(path, "w") as f:
        f.write("[server]\nreactors = %d\nmax_connections = 3000\nbacklog = 4096\n"
                "[msg]\nlisten = 127.0.0.1:0\n"
                "[admin]\nlisten = 127.0.0.1:0\n"   # not the default 7701, which may be taken
                "[timeouts]\nheartbeat_interval = 0\nidle_timeout = 0\ndrain_timeout = 1s\n"
                "[log]\nlevel = warn\n" % reactors)


def start(kind, args, tmp, pin):
    """A fresh server: (Server, address for msgfanout, proto)."""
    if kind == "redis":
        port = free_port()
        cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--supervised", "systemd", "--dir", tmp, "--logfile", ""]
        s = cluster.start_server("fanout-redis", cluster.pinned(SERVER_CPU, cmd, pin), args.out)
        return s, "127.0.0.1:%d" % port, "resp"
    reactors = int(kind[len("msgd-r"):])
    ini = os.path.join(tmp, "%s.ini" % kind)
    msgd_config(ini, reactors)
    s = cluster.start_server("fanout-" + kind, cluster.pinned(SERVER_CPU, [args.msgd, "-c", ini], pin),
                             args.out)
    return s, "127.0.0.1:%d" % s.port("msg"), "msg"


def one_run(rnd, name, kind, args, tmp, pin):
    sc = SCENARIOS[name]
    server, addr, proto = start(kind, args, tmp, pin)
    try:
        cmd = [args.fanout, "--proto", proto, "--addr", addr, "--server-pid", server.pid,
               "--seconds", args.seconds, "--warmup", args.warmup, "--drain", DRAIN,
               "--json"] + sc["args"]
        if sc.get("open"):
            cmd += ["--rate", args.rate]
        cmd = cluster.pinned(CLIENT_CPU, [str(c) for c in cmd], pin)
        cluster.log("round %d %s %s: %s" % (rnd, name, kind, " ".join(cmd)))
        try:
            p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=args.seconds + args.warmup + DRAIN + 60)
            out, err, rc = p.stdout, p.stderr, p.returncode
        except subprocess.TimeoutExpired as e:
            out, err, rc = e.stdout or "", "timed out", -1
            out = out.decode() if isinstance(out, bytes) else out
    finally:
        cluster.stop_server(server)
    res = {"round": rnd, "scenario": name, "server": kind, "rc": rc}
    try:
        res["fanout"] = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        res["fanout"] = None
    if err.strip():
        res["stderr"] = err.strip()[-2000:]
        cluster.log("  stderr: " + err.strip()[-2000:])
    f = res["fanout"] or {}
    say("  %s %-8s %-8s rc %d: %s deliveries/s, completeness %s, dropped %s, p99 %s us, "
        "server %s us/delivery" % (
            name, kind, "round %d" % rnd, rc, fmt_num(f.get("deliveries_per_s")),
            f.get("completeness"), f.get("dropped_by_server"),
            f.get("latency_us", {}).get("p99"),
            f.get("server", {}).get("cpu_us_per_delivery")))
    return res


# ---- the table ----------------------------------------------------------------------

def fmt_num(v, digits=2):
    if v is None:
        return "-"
    if abs(v) >= 1e6:
        return "%.*f M" % (digits, v / 1e6)
    if abs(v) >= 1e3:
        return "%.*f k" % (digits, v / 1e3)
    return "%.*g" % (digits + 1, v)


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def field(run, *path):
    v = run.get("fanout")
    for k in path:
        if not isinstance(v, dict):
            return None
        v = v.get(k)
    return v


def ratio_median(results, name, kind, *path):
    """The median over rounds of msgd's value / redis's value in the same round."""
    rs = []
    for r in results:
        if r["scenario"] != name or r["server"] != kind:
            continue
        ref = [x for x in results if x["scenario"] == name and x["server"] == "redis"
               and x["round"] == r["round"]]
        a, b = field(r, *path), field(ref[0], *path) if ref else None
        if a is not None and b:
            rs.append(a / b)
    return med(rs)


def verdict(v, goal, higher_better):
    if v is None:
        return "-"
    ok = v >= goal if higher_better else v <= goal
    return "met" if ok else "missed"


def f2(v, fmt="%.2f"):
    return "-" if v is None else fmt % v


def report(results, args, pin, machine):
    kinds = ["redis"] + ["msgd-r%d" % n for n in args.reactors]
    label = {"redis": "redis 7"}
    label.update({"msgd-r%d" % n: "msgd, reactors = %d" % n for n in args.reactors})
    lines = []
    runs = max([r["round"] for r in results] or [0])
    lines.append("Machine: %s. Servers on CPU %s, msgfanout on CPU %s%s; %d round(s), %g s "
                 "measured after %g s warm-up each, medians; load average %s (start / end)."
                 % (machine, SERVER_CPU, CLIENT_CPU, "" if pin else " (NOT pinned: < 2 CPUs)",
                    runs, args.seconds, args.warmup, args.loadavg))
    lines.append("")
    lines.append("| scenario | server | deliveries/s | × redis | goal ≥ %.1f× | server CPU µs "
                 "per delivery | × redis | goal ≤ %.2f× | faults per 1000 deliveries | "
                 "RSS at end / peak | p50 / p99 latency | completeness, dropped |"
                 % (TPUT_GOAL, CPU_GOAL))
    lines.append("|---|---|---:|---:|---|---:|---:|---|---:|---:|---:|---|")
    summary = {}
    for name in args.scenarios:
        for kind in kinds:
            rs = [r for r in results if r["scenario"] == name and r["server"] == kind]
            if not rs:
                continue
            rate = med([field(r, "deliveries_per_s") for r in rs])
            cpu = med([field(r, "server", "cpu_us_per_delivery") for r in rs])
            faults = med([field(r, "server", "faults_per_1000") for r in rs])
            rss = med([field(r, "server", "rss_kb") for r in rs])
            hwm = med([field(r, "server", "hwm_kb") for r in rs])
            p50 = med([field(r, "latency_us", "p50") for r in rs])
            p99 = med([field(r, "latency_us", "p99") for r in rs])
            comp = min([field(r, "completeness") or 0 for r in rs])
            dropped = sum([field(r, "dropped_by_server") or 0 for r in rs])
            failed = sum(1 for r in rs if r["rc"] != 0)
            rt = rc_ = None
            vt = vc = ""
            if kind != "redis":
                rt = ratio_median(results, name, kind, "deliveries_per_s")
                rc_ = ratio_median(results, name, kind, "server", "cpu_us_per_delivery")
                if not SCENARIOS[name].get("open") and not SCENARIOS[name].get("no_goal"):
                    vt = verdict(rt, TPUT_GOAL, True)
                    vc = verdict(rc_, CPU_GOAL, False)
            summary["%s/%s" % (name, kind)] = {
                "deliveries_per_s": rate, "ratio": rt, "cpu_us": cpu, "cpu_ratio": rc_,
                "p99_us": p99, "failed_runs": failed}
            lines.append("| %s | %s | %s/s | %s | %s | %s | %s | %s | %s | %s / %s MB | %s / %s µs "
                         "| %s%%, %d%s |" % (
                             name, label[kind], fmt_num(rate), f2(rt, "%.2f×"), vt,
                             f2(cpu, "%.3f"), f2(rc_, "%.2f×"), vc, f2(faults, "%.2f"),
                             f2(rss and rss / 1024, "%.1f"), f2(hwm and hwm / 1024, "%.1f"),
                             f2(p50, "%.0f"), f2(p99, "%.0f"), f2(comp * 100, "%.2f"), dropped,
                             ", **%d run(s) failed**" % failed if failed else ""))
    if "D" in args.scenarios:
        lines.append("")
        lines.append("Scenario D (open loop, %d publishes/s -> 100 subscribers, 64 B): latency "
                     "from each message's intended send time, medians over rounds." % args.rate)
        lines.append("")
        lines.append("| server | p50 | p99 | p99.9 | max | p99 × redis | goal: p99 no worse "
                     "than redis | sends over 1 ms late |")
        lines.append("|---|---:|---:|---:|---:|---:|---|---:|")
        for kind in kinds:
            rs = [r for r in results if r["scenario"] == "D" and r["server"] == kind]
            if not rs:
                continue
            q = {k: med([field(r, "latency_us", k) for r in rs]) for k in ("p50", "p99", "p99_9",
                                                                           "max")}
            late = med([field(r, "late_sends") for r in rs])
            rp = None if kind == "redis" else ratio_median(results, "D", kind, "latency_us", "p99")
            lines.append("| %s | %s µs | %s µs | %s µs | %s µs | %s | %s | %s |" % (
                label[kind], f2(q["p50"], "%.0f"), f2(q["p99"], "%.0f"), f2(q["p99_9"], "%.0f"),
                f2(q["max"], "%.0f"), f2(rp, "%.2f×"),
                "" if kind == "redis" else verdict(rp, 1.0, False), f2(late, "%.0f")))
    lines.append("")
    lines.append("deliveries/s: MESSAGE (msgd) or `message` pushes (redis) received by all "
                 "subscribers together in the measured window. Server CPU: utime + stime of the "
                 "server process over the window (/proc/PID/stat, 10 ms ticks) per delivery in "
                 "it; faults: its minor page faults over the window. RSS: VmRSS after the "
                 "run drained / VmHWM. Completeness: deliveries received / (messages "
                 "published x subscribers of the topic), the lowest over rounds; dropped: what "
                 "the servers' PUBLISH replies said they skipped, summed over rounds.")
    return "\n".join(lines) + "\n", summary


def rewrite_doc(path, table):
    start, end = "<!-- fanout-bench:start -->", "<!-- fanout-bench:end -->"
    with open(path) as f:
        text = f.read()
    head, sep1, rest = text.partition(start)
    _, sep2, tail = rest.partition(end)
    if not sep1 or not sep2:
        say("%s lacks the %s ... %s markers: not rewritten" % (path, start, end))
        return False
    with open(path, "w") as f:
        f.write("%s%s\n%s%s%s" % (head, start, table, end, tail))
    return True


def main():
    env = os.environ.get
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build-bench", help="where msgd and msgfanout are")
    # option, type, default; the default can be set by BENCH_FANOUT_<OPTION>
    for opt, kind, dflt in (("runs", int, "3"), ("seconds", float, "5"), ("warmup", float, "0.5"),
                            ("scenarios", str, "A B C D E"), ("reactors", str, "1 2"),
                            ("rate", int, "10000")):
        ap.add_argument("--" + opt, type=kind, default=kind(env("BENCH_FANOUT_" + opt.upper(), dflt)))
    ap.add_argument("--out", default=env("BENCH_OUT"))
    ap.add_argument("--doc", default=env("BENCH_DOC"))
    args = ap.parse_args()
    args.scenarios = args.scenarios.replace(",", " ").upper().split()
    try:
        args.reactors = [int(x) for x in args.reactors.replace(",", " ").split()]
    except ValueError:
        args.reactors = []
    if not (1 <= args.runs <= 9 and 0.2 <= args.seconds <= 60 and 0 <= args.warmup <= 10
            and 1 <= args.rate <= 1_000_000 and args.scenarios and args.reactors
            and all(s in SCENARIOS for s in args.scenarios)
            and all(1 <= n <= 16 for n in args.reactors)):
        say("fanout.py: a setting is out of range (runs 1..9, seconds 0.2..60, warmup 0..10, "
            "rate 1..1000000, scenarios among A B C D E, reactors 1..16)")
        return 2
    args.msgd = os.path.join(args.build, "msgd")
    args.fanout = os.path.join(args.build, "msgfanout")
    args.out = args.out or os.path.join(args.build, "bench")
    for prog in ("redis-server", "taskset"):
        if not shutil.which(prog):
            say("fanout.py: %s not found (bash scripts/deps.sh bench)" % prog)
            return 2
    for b in (args.msgd, args.fanout):
        if not os.access(b, os.X_OK):
            say("fanout.py: %s missing (run make bench-build)" % b)
            return 2
    os.makedirs(args.out, exist_ok=True)
    cluster.LOG = open(os.path.join(args.out, "fanout.log"), "w")
    pin = (os.cpu_count() or 1) >= 2
    args.loadavg = "%.2f" % os.getloadavg()[0]
    tmp = tempfile.mkdtemp(prefix="msgd-bench-fanout.")
    results = []
    rc = 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    kinds = ["redis"] + ["msgd-r%d" % n for n in args.reactors]
    try:
        for rnd in range(1, args.runs + 1):
            say("fanout round %d of %d" % (rnd, args.runs))
            for name in args.scenarios:
                for kind in kinds:
                    res = one_run(rnd, name, kind, args, tmp, pin)
                    results.append(res)
                    if res["rc"] != 0:
                        rc = 1
    except cluster.BenchError as e:
        say("fanout.py: %s" % e)
        rc = 1
    except KeyboardInterrupt:
        rc = 1
    finally:
        for s in list(cluster.SERVERS):
            cluster.stop_server(s)
        shutil.rmtree(tmp, ignore_errors=True)
    with open(os.path.join(args.out, "fanout.jsonl"), "w") as f:
        for r in results:
            f.write(json.dumps(r) + "\n")
    if results:
        args.loadavg += " / %.2f" % os.getloadavg()[0]
        table, summary = report(results, args, pin, cluster.machine_line())
        with open(os.path.join(args.out, "fanout.md"), "w") as f:
            f.write(table)
        sys.stdout.write(table)
        if args.doc and rc == 0 and not rewrite_doc(args.doc, table):
            rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
