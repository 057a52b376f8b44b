#!/usr/bin/env python3
"""report.py: the table of `make bench` from its raw results.

    report.py RESULTS.jsonl [--out FILE.md] [--doc DOC.md] [--machine TEXT]
              [--secs N] [--runs N] [--rate N] [--idle-conns N]

Each RESULTS line is one measured run: mode, round, scenario, side (msgd or
ref), value, unit. A scenario's value is the median of its rounds in a mode.
Each row shows the mode in which msgd did better, with the reference
measured in that same mode (back to back with it in every round). Prints the
markdown on stdout, writes it to --out, and with --doc replaces the text
between the markers <!-- bench-table:begin --> and <!-- bench-table:end -->
(only when those scenarios were measured) and the compression section
between <!-- bench-compress:begin --> and <!-- bench-compress:end --> (when
the zip64k_* scenarios were; --codec-cost adds codec_cost's table to it).
Exit 1 only when the results cannot be read.
"""
import argparse
import json
import statistics
import sys

SCENARIOS = [
    # key, what msgd does, the reference, unit, higher is better
    ("echo_c50", "64 B ECHO, 50 conns, no pipelining", "redis PING -c 50", "req/s", True),
    ("echo_c1000", "64 B ECHO, 1,000 conns", "redis PING -c 1000", "req/s", True),
    ("echo_c50_p16", "64 B ECHO, 50 conns, pipeline 16", "redis PING -c 50 -P 16", "req/s", True),
    ("pingpong_16k", "16 KiB ECHO ping-pong, 100 conns (one way)", "iperf3, 1 stream (one way)",
     "MiB/s", True),
    ("pingpong_16k_min", "16 KiB ECHO ping-pong, 100 conns (one way)",
     "smallest echo server (echo_ref), same client", "MiB/s", True),
    ("rate_p99", "64 B ECHO open loop at {rate}/s, 50 conns: p99", None, "ms", False),
    ("rawecho_c50", "64 B raw echo (echo listener), 50 conns", "redis PING -c 50", "req/s", True),
]
EXTRA = [("rate_achieved", "req/s")]  # shown in the both-modes table only
REF_OF = {"rawecho_c50": "echo_c50"}  # its reference is that scenario's
MSGD_OF = {"pingpong_16k_min": "pingpong_16k"}  # its msgd side is that scenario's

BEGIN = "<!-- bench-table:begin -->"
END = "<!-- bench-table:end -->"
ZBEGIN = "<!-- bench-compress:begin -->"
ZEND = "<!-- bench-compress:end -->"
ZIP = [("zip64k_plain", "none"), ("zip64k_zstd", "zstd"), ("zip64k_deflate", "deflate")]


def replace_section(doc, begin, end, text):
    i, j = doc.index(begin), doc.index(end)
    return doc[:i + len(begin)] + "\n" + text + doc[j:]


def compress_section(wire, byround, runs, codec_cost, machine="", load=""):
    """The compression table: requests/s and bytes on the wire per request
    (msgbench's bytes_sent + bytes_received over its requests) per codec and
    mode, with each codec's ratio to plain over rounds run back to back."""
    modes = sorted({m for (m, sc, _) in byround if sc.startswith("zip64k_")},
                   key=lambda m: (m != "pinned", m))
    if not modes:
        return ""
    lines = ["A compressible 64 KiB payload: ECHO of `msgbench --payload text -s 65536 -c 10` "
             "(words and numbers, about 3.3x smaller with zstd level 1), no pipelining, "
             "plain and then with `--compress zstd` and `--compress deflate`, back to back "
             "on the same msgd (its defaults: `compress_level = 1`, `compress_min = 1K`). "
             "Medians of %s runs; \"vs plain\" is the median over the rounds of each "
             "pair. Bytes on the wire: what msgbench sent plus what it received, per "
             "request. Modes as in the table above (pinned: msgd reactors=1 on CPU 0, "
             "msgbench on CPU 1). %s%s" % (
                 runs, (machine[0].upper() + machine[1:] + ".") if machine else "",
                 (" Load average before / after: %s." % load) if load else ""), "",
             "| mode | codec | requests/s | vs plain | bytes on the wire per request | vs plain |",
             "|---|---|---:|---:|---:|---:|"]
    for m in modes:
        base = byround.get((m, "zip64k_plain", "msgd"), {})
        bwire = wire.get((m, "zip64k_plain"), {})
        for scen, codec in ZIP:
            rps = byround.get((m, scen, "msgd"), {})
            w = wire.get((m, scen), {})
            if not rps:
                continue
            r1 = [rps[r] / base[r] for r in rps if r in base and base[r] > 0]
            r2 = [w[r] / bwire[r] for r in w if r in bwire and bwire[r] > 0]
            lines.append("| %s | %s | %s | %s | %s | %s |" % (
                m, codec, fmt(statistics.median(rps.values()), "req/s"),
                "%.2f×" % statistics.median(r1) if r1 and scen != "zip64k_plain" else "—",
                "{:,.0f}".format(statistics.median(w.values())) if w else "—",
                "%.2f×" % statistics.median(r2) if r2 and scen != "zip64k_plain" else "—"))
    if codec_cost:
        lines += ["", "What src/codec.c costs in process on this machine (scripts/bench/"
                  "codec_cost.c, pinned to CPU 0; the median of 5 rounds of the mean per "
                  "call; letters: random a-z; text: as msgbench --payload text; level 1):", "",
                  "| codec | payload | bytes | ratio | compress (ms) | decompress (ms) |",
                  "|---|---|---:|---:|---:|---:|"]
        for row in codec_cost.splitlines()[1:]:
            f = row.split()
            if len(f) == 6:
                lines.append("| %s | %s | %s | %s | %s | %s |" % (
                    f[0], f[1], "{:,}".format(int(f[2])), f[3], f[4], f[5]))
    return "\n".join(lines) + "\n"


def fmt(v, unit):
    if v is None:
        return "—"
    if unit == "req/s":
        return "{:,.0f}".format(v)
    if unit == "MiB/s":
        return "{:,.0f}".format(v)
    if unit == "ms":
        return "{:.2f}".format(v)
    return "{:.1f}".format(v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--out")
    ap.add_argument("--doc")
    ap.add_argument("--machine", default="")
    ap.add_argument("--secs", default="?")
    ap.add_argument("--runs", default="?")
    ap.add_argument("--rate", default="50000")
    ap.add_argument("--idle-conns", default="10000")
    ap.add_argument("--load", default="")
    ap.add_argument("--codec-cost")
    a = ap.parse_args()

    vals = {}  # (mode, scenario, side) -> [values]
    byround = {}  # (mode, scenario, side) -> {round: value}
    wire = {}  # (mode, zip64k_* scenario) -> {round: bytes on the wire per request}
    try:
        with open(a.results) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                r = json.loads(line)
                k = (r["mode"], r["scenario"], r["side"])
                vals.setdefault(k, []).append(float(r["value"]))
                byround.setdefault(k, {})[r["round"]] = float(r["value"])
                raw = r.get("raw")
                if r["scenario"].startswith("zip64k_") and raw and raw.get("requests"):
                    wire.setdefault((r["mode"], r["scenario"]), {})[r["round"]] = (
                        (raw["bytes_sent"] + raw["bytes_received"]) / raw["requests"])
    except (OSError, ValueError, KeyError) as e:
        sys.stderr.write("report.py: cannot read %s: %s\n" % (a.results, e))
        return 1
    modes = sorted({k[0] for k in vals if k[0] != "idle"}, key=lambda m: (m != "pinned", m))

    def side_key(scen, side):
        return MSGD_OF.get(scen, scen) if side == "msgd" else scen

    def med(mode, scen, side):
        v = vals.get((mode, side_key(scen, side), side))
        return statistics.median(v) if v else None

    def ratio(mode, scen, refscen):
        """The median over rounds of msgd / reference, each pair run back to back."""
        a = byround.get((mode, side_key(scen, "msgd"), "msgd"), {})
        b = byround.get((mode, refscen, "ref"), {})
        rs = [a[r] / b[r] for r in a if r in b and b[r] > 0]
        return statistics.median(rs) if rs else None

    def runs(mode, scen, side):
        v = vals.get((mode, side_key(scen, side), side))
        return v or []

    rate = "{:,}".format(int(a.rate))
    lines = []
    lines.append("Medians of %s runs of %s s each; %s." % (a.runs, a.secs, a.machine or "this machine"))
    lines.append("Each row is from the mode in which msgd did better (pinned: msgd reactors=1 "
                 "and every server on CPU 0, every client on CPU 1; unpinned: msgd reactors=2, "
                 "msgbench -t 2, nothing pinned), with the reference run back to back with it "
                 "in the same mode and round. Redis figures are PING_MBULK. Ratio: the median "
                 "over the rounds of msgd / reference, each pair measured back to back (so "
                 "it can differ from the ratio of the two medians); for p99 lower is better "
                 "and there is no reference." + (" Load average before / after: %s." % a.load
                                                 if a.load else ""))
    lines.append("")
    lines.append("| scenario | msgd | reference | ratio | mode |")
    lines.append("|---|---:|---:|---:|---|")
    chosen = {}
    for key, what, refname, unit, higher in SCENARIOS:
        best = None
        for m in modes:
            v = med(m, key, "msgd")
            if v is None:
                continue
            if best is None or (v > best[1] if higher else v < best[1]):
                best = (m, v)
        what = what.format(rate=rate)
        if best is None:
            lines.append("| %s (%s) | — | — | — | not measured |" % (what, unit))
            continue
        m, v = best
        ref = med(m, REF_OF.get(key, key), "ref") if refname else None
        rt = ratio(m, key, REF_OF.get(key, key)) if refname else None
        chosen[key] = (m, v, ref, rt)
        if refname:
            refcell = "%s %s" % (refname, fmt(ref, unit))
        elif med(m, "rate_achieved", "msgd") is not None:
            refcell = "— (rate reached: %s req/s)" % fmt(med(m, "rate_achieved", "msgd"), "req/s")
        else:
            refcell = "—"
        lines.append("| %s (%s) | %s | %s | %s | %s |" % (
            what, unit, fmt(v, unit), refcell,
            ("%.2f×" % rt) if rt else "—", m))

    idle = vals.get(("idle", "idle_rss", "msgd"))
    talked = vals.get(("idle", "idle_rss_after_echo", "msgd"))
    lines.append("")
    lines.append("Idle memory (fresh msgd, reactors=1, %s connections; daemon VmRSS after minus "
                 "before, divided by the count; median of %d runs):" % (
                     "{:,}".format(int(a.idle_conns)), len(idle or [])))
    lines.append("")
    lines.append("| state | bytes of RSS per connection |")
    lines.append("|---|---:|")
    lines.append("| connected, never sent a byte | %s |" % (
        "%.0f" % statistics.median(idle) if idle else "—"))
    lines.append("| after one 64 B ECHO each, idle again | %s |" % (
        "%.0f" % statistics.median(talked) if talked else "—"))

    lines.append("")
    lines.append("Targets (issue 7):")
    lines.append("")
    lines.append("| target | measured | |")
    lines.append("|---|---|---|")

    def target(name, ok, measured):
        lines.append("| %s | %s | %s |" % (name, measured,
                                           "—" if ok is None else ("met" if ok else "**missed**")))

    c = chosen.get("echo_c50")
    target("64 B ECHO -c 50 ≥ 2× redis PING -c 50", c[3] >= 2.0 if c and c[3] else None,
           "%.2f× (%s vs %s req/s, %s)" % (c[3], fmt(c[1], "req/s"), fmt(c[2], "req/s"), c[0])
           if c and c[3] else "—")
    c = chosen.get("echo_c50_p16")
    target("64 B ECHO -P 16 ≥ redis PING -P 16", c[3] >= 1.0 if c and c[3] else None,
           "%.2f× (%s vs %s req/s, %s)" % (c[3], fmt(c[1], "req/s"), fmt(c[2], "req/s"), c[0])
           if c and c[3] else "—")
    c = chosen.get("pingpong_16k")
    target("16 KiB ping-pong ≥ 85% of iperf3 single stream", c[3] >= 0.85 if c and c[3] else None,
           "%.0f%% (%s vs %s MiB/s, %s)" % (100 * c[3], fmt(c[1], "MiB/s"), fmt(c[2], "MiB/s"), c[0])
           if c and c[3] else "—")
    c = chosen.get("pingpong_16k_min")
    if c and c[3]:
        lines.append("| (not a target) 16 KiB ping-pong vs the smallest echo server | "
                     "%.0f%% (%s vs %s MiB/s, %s) | |" % (
                         100 * c[3], fmt(c[1], "MiB/s"), fmt(c[2], "MiB/s"), c[0]))
    if idle:
        mi = statistics.median(idle)
        target("idle connection ≤ 0.5 KiB RSS (never sent)", mi <= 512, "%.0f B" % mi)
    if talked:
        mt = statistics.median(talked)
        target("idle connection ≤ 0.5 KiB RSS (after one request)", mt <= 512, "%.0f B" % mt)

    if len(modes) > 1:
        lines.append("")
        lines.append("Both modes (medians; the runs in brackets):")
        lines.append("")
        lines.append("| scenario | side | " + " | ".join(modes) + " |")
        lines.append("|---|---|" + "---|" * len(modes))
        rows = SCENARIOS + [(k, "", None, u, True) for k, u in EXTRA]
        for key, what, refname, unit, higher in rows:
            for side in ("msgd", "ref"):
                if side == "ref" and (not refname or key in REF_OF):
                    continue
                if side == "msgd" and key in MSGD_OF:
                    continue
                cells = []
                for m in modes:
                    v = med(m, key, side)
                    rs = runs(m, key, side)
                    cells.append("%s [%s]" % (fmt(v, unit), ", ".join(fmt(x, unit) for x in rs))
                                 if v is not None else "—")
                lines.append("| %s | %s | %s |" % (key, "msgd" if side == "msgd" else refname,
                                                    " | ".join(cells)))

    text = "\n".join(lines) + "\n"
    main_measured = any(k[1] in dict((s[0], 1) for s in SCENARIOS) for k in vals)
    cost = ""
    if a.codec_cost:
        try:
            with open(a.codec_cost) as f:
                cost = f.read()
        except OSError as e:
            sys.stderr.write("report.py: %s\n" % e)
    ztext = compress_section(wire, byround, a.runs, cost, a.machine, a.load)
    out = (text if main_measured else "") + ("\n" + ztext if ztext else "")
    sys.stdout.write(out)
    if a.out:
        with open(a.out, "w") as f:
            f.write(out)
    if a.doc:
        for begin, end, t, on in ((BEGIN, END, text, main_measured),
                                  (ZBEGIN, ZEND, ztext, bool(ztext))):
            if not on:
                continue
            try:
                with open(a.doc) as f:
                    doc = f.read()
                doc = replace_section(doc, begin, end, t)
                with open(a.doc, "w") as f:
                    f.write(doc)
            except (OSError, ValueError) as e:
                sys.stderr.write("report.py: %s not updated (%s; needs the markers %s / %s)\n"
                                 % (a.doc, e, begin, end))
    return 0


if __name__ == "__main__":
    sys.exit(main())
