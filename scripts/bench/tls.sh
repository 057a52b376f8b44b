#!/usr/bin/env bash
# scripts/bench/tls.sh: the TLS rows of `make bench` (docs/BENCHMARKS.md "TLS").
# The same client (BUILD/tls_bench) against msgd's own TLS and against HAProxy
# terminating TLS in front of plain msgd, in the same round: 16 KiB ECHO
# ping-pong, and new connections per second with a full handshake and with a
# resumed session. Servers (msgd reactors=1, haproxy nbthread 1) on CPU 0, the
# client on CPU 1; each row is the median of BENCH_RUNS rounds.
#
#   scripts/bench/tls.sh [BUILD_DIR]        (default build-bench)
#
# Environment: BENCH_RUNS=3, BENCH_SECONDS=4, BENCH_OUT=BUILD_DIR/bench,
# BENCH_TLS_CONNS=8 (ping-pong connections), BENCH_TLS_IDLE=1000 (idle TLS
# connections held per round for the memory row, each against a fresh msgd;
# 0 skips the row). Where the kernel offers kTLS (the
# "tls" ULP), msgd's ping-pong is measured with MSGD_TLS_KTLS=1 too.
# Certificates are made in a temp dir with the openssl command. Every server is
# started by launch.py and stopped by PID; every tool runs under timeout(1).
set -uo pipefail

BUILD=${1:-build-bench}
HERE=$(cd "$(dirname "$0")" && pwd)
RUNS=${BENCH_RUNS:-3}
SECS=${BENCH_SECONDS:-4}
CONNS=${BENCH_TLS_CONNS:-8}
IDLE=${BENCH_TLS_IDLE:-1000}
OUT=${BENCH_OUT:-$BUILD/bench}
MSGD=$BUILD/msgd
TB=$BUILD/tls_bench

die() { echo "bench-tls: $*" >&2; exit 2; }
case $RUNS in ''|*[!0-9]*) die "BENCH_RUNS must be a number";; esac
case $SECS in ''|*[!0-9]*) die "BENCH_SECONDS must be a number";; esac
case $IDLE in ''|*[!0-9]*) die "BENCH_TLS_IDLE must be a number";; esac
[ "$RUNS" -ge 1 ] && [ "$RUNS" -le 9 ] || die "BENCH_RUNS must be 1..9"
[ -x "$MSGD" ] && [ -x "$TB" ] || die "$MSGD or $TB missing (run make bench)"
for p in haproxy openssl python3 taskset timeout; do
    command -v $p >/dev/null || die "$p not found (bash scripts/deps.sh bench)"
done
mkdir -p "$OUT" || die "cannot create $OUT"
TMP=$(mktemp -d /tmp/msgd-bench-tls.XXXXXX) || die "mktemp failed"
LOG=$OUT/tls.log
RESULTS=$OUT/tls.jsonl
: > "$LOG"
: > "$RESULTS"
FAILED=0
declare -A LAUNCHER=()

say() { echo "$*" >&2; echo "$*" >> "$LOG"; }

# start NAME PORT CMD...: sets PID once 127.0.0.1:PORT listens.
start() {
    local name=$1 port=$2
    shift 2
    local fifo=$TMP/ready.$name
    mkfifo "$fifo" || return 1
    python3 "$HERE/launch.py" listen 20 1800 "$port" -- "$@" > "$fifo" 2>> "$OUT/tls-$name.log" &
    local launcher=$! line=""
    read -r -t 30 line < "$fifo" || true
    rm -f "$fifo"
    case $line in
    READY\ *) PID=$(echo "$line" | cut -d' ' -f2); LAUNCHER[$PID]=$launcher; return 0 ;;
    esac
    say "$name did not start: ${line:-no answer}"
    kill "$launcher" 2>/dev/null
    wait "$launcher" 2>/dev/null
    return 1
}

stop() {
    local pid=$1 i
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    [ -n "${LAUNCHER[$pid]:-}" ] && wait "${LAUNCHER[$pid]}" 2>/dev/null
    unset "LAUNCHER[$pid]"
}

cleanup() {
    for pid in "${!LAUNCHER[@]}"; do stop "$pid"; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# ---- certificates ----------------------------------------------------------------
ossl() { openssl "$@" >> "$LOG" 2>&1 || die "openssl $1 failed (see $LOG)"; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/ca.key" \
    -out "$TMP/ca.pem" -days 2 -subj "/CN=msgd bench ca"
ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/srv.key" \
    -out "$TMP/srv.csr" -subj "/CN=127.0.0.1"
echo "subjectAltName=IP:127.0.0.1" > "$TMP/ext.cnf"
ossl x509 -req -in "$TMP/srv.csr" -CA "$TMP/ca.pem" -CAkey "$TMP/ca.key" -set_serial 1 \
    -days 2 -out "$TMP/srv.pem" -extfile "$TMP/ext.cnf"
cat "$TMP/srv.pem" "$TMP/srv.key" > "$TMP/haproxy.pem"

# ---- servers: msgd (plain + TLS) and haproxy (TLS -> plain msgd) ------------------
freeport() { python3 "$HERE/launch.py" freeport; }
PLAIN=$(freeport); TLSP=$(freeport); HAP=$(freeport)
cat > "$TMP/msgd.ini" <<EOF
[server]
reactors = 1
workers = 1
max_connections = 100000
[msg]
listen = 127.0.0.1:$PLAIN
tls_listen = 127.0.0.1:$TLSP
[admin]
listen =
[timeouts]
heartbeat_interval = 0
idle_timeout = 0
[tls]
cert = $TMP/srv.pem
key = $TMP/srv.key
[log]
level = warn
EOF
cat > "$TMP/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
    tune.ssl.default-dh-param 2048
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend tls_in
    bind 127.0.0.1:$HAP ssl crt $TMP/haproxy.pem alpn msgp/1
    default_backend msgd_plain
backend msgd_plain
    server msgd 127.0.0.1:$PLAIN
EOF

KTLS=no
grep -qw tls /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null && KTLS=yes
say "bench-tls: kTLS (the kernel's tls ULP): $KTLS; OpenSSL $(openssl version | cut -d' ' -f2)"

start msgd "$TLSP" taskset -c 0 "$MSGD" -c "$TMP/msgd.ini" || exit 1
MSGD_PID=$PID
start haproxy "$HAP" taskset -c 0 haproxy -db -f "$TMP/haproxy.cfg" || exit 1
HAP_PID=$PID
KTLS_PORT=""
if [ $KTLS = yes ]; then
    sed -e "s/^listen = .*/listen = 127.0.0.1:$(freeport)/" \
        -e "s/^tls_listen = .*/tls_listen = 127.0.0.1:$(freeport)/" "$TMP/msgd.ini" > "$TMP/ktls.ini"
    KTLS_PORT=$(sed -n 's/^tls_listen = 127.0.0.1://p' "$TMP/ktls.ini")
    start msgd-ktls "$KTLS_PORT" env MSGD_TLS_KTLS=1 taskset -c 0 "$MSGD" -c "$TMP/ktls.ini" ||
        exit 1
fi

# ---- rounds -------------------------------------------------------------------------
measure() { # round scenario side port args...
    local round=$1 scen=$2 side=$3 port=$4
    shift 4
    local v
    v=$(timeout $((SECS + 30)) taskset -c 1 "$TB" "$@" 2>> "$LOG")
    local rc=$?
    case $port in "$TLSP"|"$HAP"|"$KTLS_PORT") ;; esac
    if [ $rc -ne 0 ] || [ -z "$v" ]; then
        FAILED=1
        say "FAILED: $scen $side round $round (exit $rc)"
        return
    fi
    echo "{\"round\":$round,\"scenario\":\"$scen\",\"side\":\"$side\",\"value\":$v}" >> "$RESULTS"
    say "round $round $scen $side: $v"
}
for ((r = 1; r <= RUNS; r++)); do
    for side in msgd haproxy; do
        port=$TLSP; [ $side = haproxy ] && port=$HAP
        measure $r pingpong_16k_tls $side $port pingpong "$port" "$TMP/ca.pem" "$SECS" "$CONNS" 16384
        measure $r tls_connect_full $side $port connect "$port" "$TMP/ca.pem" "$SECS" full
        measure $r tls_connect_resumed $side $port connect "$port" "$TMP/ca.pem" "$SECS" resumed
    done
    if [ -n "$KTLS_PORT" ]; then
        measure $r pingpong_16k_tls msgd_ktls "$KTLS_PORT" pingpong "$KTLS_PORT" "$TMP/ca.pem" \
            "$SECS" "$CONNS" 16384
    fi
done
stop "$MSGD_PID"
stop "$HAP_PID"

# ---- idle memory: RSS per idle TLS connection, each round a fresh msgd -------------------
if [ "$IDLE" -gt 0 ]; then
    for ((r = 1; r <= RUNS; r++)); do
        sed -e "s/^listen = .*/listen = 127.0.0.1:$(freeport)/" \
            -e "s/^tls_listen = .*/tls_listen = 127.0.0.1:$(freeport)/" "$TMP/msgd.ini" > "$TMP/idle.ini"
        IPORT=$(sed -n 's/^tls_listen = 127.0.0.1://p' "$TMP/idle.ini")
        start msgd-idle "$IPORT" taskset -c 0 "$MSGD" -c "$TMP/idle.ini" || exit 1
        # 3 s: past the quiet time after which msgd lets go of a connection's TLS buffers.
        measure $r tls_idle_rss msgd "$IPORT" idle "$IPORT" "$TMP/ca.pem" 3 "$IDLE" "$PID"
        stop "$PID"
    done
fi

# ---- the table ------------------------------------------------------------------------
python3 - "$RESULTS" "$OUT/tls.md" "$KTLS" "$RUNS" "$CONNS" "${BENCH_DOC:-}" "$IDLE" <<'EOF'
import json, statistics, sys
res, out, ktls, runs, conns, doc, idle = sys.argv[1:8]
vals = {}
for line in open(res):
    r = json.loads(line)
    vals.setdefault((r["scenario"], r["side"]), []).append(r["value"])
med = {k: statistics.median(v) for k, v in vals.items()}
rows = [("pingpong_16k_tls", "16 KiB ECHO ping-pong over TLS, %s connections" % conns, "requests/s", 1.3),
        ("tls_connect_full", "new TLS connections, full handshake (+ one PING)", "connections/s", None),
        ("tls_connect_resumed", "new TLS connections, resumed session (+ one PING)", "connections/s", None)]
lines = ["| scenario | msgd TLS | HAProxy TLS -> plain msgd | ratio | goal |",
         "|---|---|---|---|---|"]
for key, text, unit, goal in rows:
    m, h = med.get((key, "msgd")), med.get((key, "haproxy"))
    ratio = "%.2fx" % (m / h) if m and h else "-"
    g = ("%.1fx: %s" % (goal, "met" if m and h and m / h >= goal else "missed")) if goal else "-"
    lines.append("| %s | %s %s | %s %s | %s | %s |" % (
        text, "%.0f" % m if m else "-", unit, "%.0f" % h if h else "-", unit, ratio, g))
if ("pingpong_16k_tls", "msgd_ktls") in med:
    k = med[("pingpong_16k_tls", "msgd_ktls")]
    lines.append("| the ping-pong with kTLS (MSGD_TLS_KTLS=1) | %.0f requests/s | | %.2fx of msgd without | |"
                 % (k, k / med[("pingpong_16k_tls", "msgd")]))
if ("tls_idle_rss", "msgd") in med:
    lines.append("| msgd's RSS per idle TLS connection (%s, after a handshake and one 64 B ECHO) | %.0f bytes | | | |"
                 % (idle, med[("tls_idle_rss", "msgd")]))
lines.append("")
lines.append("Medians of %s rounds; kTLS on this machine: %s." % (runs, ktls))
table = "\n".join(lines) + "\n"
open(out, "w").write(table)
sys.stdout.write(table)
if doc:
    text = open(doc).read()
    a, b = "<!-- tls-bench:start -->\n", "<!-- tls-bench:end -->"
    i, j = text.find(a), text.find(b)
    if i >= 0 and j > i:
        open(doc, "w").write(text[:i + len(a)] + table + text[j:])
EOF
exit $FAILED
