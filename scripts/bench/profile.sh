#!/usr/bin/env bash
# scripts/bench/profile.sh: where the time goes in one `make bench` scenario
# (`make bench-profile BENCH_SCENARIO=...`; docs/BENCHMARKS.md quotes its output).
#
#   scripts/bench/profile.sh [BUILD_DIR] SCENARIO
#   SCENARIO: echo_c50 | echo_c1000 | echo_c50_p16 | pingpong_16k | rawecho_c50
#
# Starts msgd (reactors=1, on CPU 0) and keeps msgbench (on CPU 1) running the
# scenario while it measures, one after the other, 3 s each:
#   1. CPU use of the daemon and of the client (/proc/PID/stat), requests/s;
#   2. strace -c -f on the daemon, with the requests served meanwhile (the
#      admin `stats` frames_in), so syscalls per request;
#   3. perf record -g on the daemon (when perf works) and on the client,
#      reported as the top symbols.
# Output under BUILD_DIR/bench/profile.SCENARIO/. Every wait is bounded;
# processes are stopped by PID.
set -uo pipefail

BUILD=build-bench
if [ $# -ge 2 ]; then BUILD=$1; shift; fi
SCEN=${1:-}
HERE=$(cd "$(dirname "$0")" && pwd)
MSGD=$BUILD/msgd
MSGBENCH=$BUILD/msgbench
case $SCEN in
echo_c50) ARGS=(-c 50 -s 64) ;;
echo_c1000) ARGS=(-c 1000 -s 64) ;;
echo_c50_p16) ARGS=(-c 50 -P 16 -s 64) ;;
pingpong_16k) ARGS=(-c 100 -s 16384) ;;
rawecho_c50) ARGS=(--protocol echo -c 50 -s 64) ;;
*) echo "usage: $0 [BUILD_DIR] echo_c50|echo_c1000|echo_c50_p16|pingpong_16k|rawecho_c50" >&2; exit 2 ;;
esac
[ -x "$MSGD" ] && [ -x "$MSGBENCH" ] || { echo "profile: build $MSGD first (make bench-build)" >&2; exit 2; }
OUT=$BUILD/bench/profile.$SCEN
mkdir -p "$OUT"
TMP=$(mktemp -d /tmp/msgd-profile.XXXXXX)
MSGD_PID=""; LAUNCHER=""; BENCH_PID=""

cleanup() {
    [ -n "$BENCH_PID" ] && kill -TERM "$BENCH_PID" 2>/dev/null
    if [ -n "$MSGD_PID" ]; then
        kill -TERM "$MSGD_PID" 2>/dev/null
        for ((i = 0; i < 100; i++)); do kill -0 "$MSGD_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$MSGD_PID" 2>/dev/null
    fi
    [ -n "$LAUNCHER" ] && wait "$LAUNCHER" 2>/dev/null
    [ -n "$BENCH_PID" ] && wait "$BENCH_PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=msgd_ini.sh
. "$HERE/msgd_ini.sh"
bench_msgd_ini 1 > "$TMP/msgd.ini"
mkfifo "$TMP/ready"
python3 "$HERE/launch.py" notify 20 600 -- taskset -c 0 "$MSGD" -c "$TMP/msgd.ini" \
    > "$TMP/ready" 2> "$OUT/msgd.log" &
LAUNCHER=$!
line=""
read -r -t 30 line < "$TMP/ready" || true
case $line in READY\ *) ;; *) echo "profile: msgd did not start: $line" >&2; exit 1 ;; esac
MSGD_PID=$(echo "$line" | cut -d' ' -f2)
port_of() { echo "$line" | sed -n "s/.*$1=127\.0\.0\.1:\([0-9]*\).*/\1/p"; }
PORT=$(port_of msg); ADMIN=$(port_of admin)
[ "$SCEN" = rawecho_c50 ] && PORT=$(port_of echo)

# frames_in SECONDS [--strace PID OUT]: the growth of the daemon's frames_in
# over SECONDS (frames_in.py).
frames_in() { python3 "$HERE/frames_in.py" "$ADMIN" "$@"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

timeout -k 5 60 taskset -c 1 "$MSGBENCH" -p "$PORT" "${ARGS[@]}" -d 30 --json \
    > "$OUT/msgbench.json" 2> "$OUT/msgbench.log" &
BENCH_PID=$!
sleep 1  # let the connections open and the run settle (a measurement window, not readiness)
CLIENT=$(pgrep -P "$BENCH_PID" -n msgbench || echo "$BENCH_PID")
hz=$(getconf CLK_TCK)

{
    echo "scenario $SCEN: msgbench ${ARGS[*]} (client on CPU 1), msgd reactors=1 on CPU 0"
    d0=$(cpu_ticks "$MSGD_PID"); c0=$(cpu_ticks "$CLIENT"); t0=$(date +%s.%N)
    f=$(frames_in 3)
    d1=$(cpu_ticks "$MSGD_PID"); c1=$(cpu_ticks "$CLIENT"); t1=$(date +%s.%N)
    awk -v f="$f" -v d="$((d1 - d0))" -v c="$((c1 - c0))" -v hz="$hz" -v t0="$t0" -v t1="$t1" 'BEGIN {
        el = t1 - t0; printf "requests/s %.0f; CPU: msgd %.0f%%, msgbench %.0f%%; msgd CPU per request %.2f us\n",
        f / el, 100 * d / hz / el, 100 * c / hz / el, f ? 1e6 * d / hz / f : 0 }'

    # strace counts from when it has attached to every thread; the requests
    # are counted inside its window, by one process that starts and stops it.
    n=$(frames_in 3 --strace "$MSGD_PID" "$OUT/strace.txt")
    echo "strace -c -f -p msgd for 3 s ($n requests, slowed by strace):"
    awk -v n="$n" '/^ *[0-9.]+ +[0-9.]+ +[0-9]+ +[0-9]+/ {
        printf "  %-14s %9d calls  %.2f per request\n", $NF, $4, n ? $4 / n : 0 }' "$OUT/strace.txt"

    if perf record -q -g -p "$MSGD_PID" -o "$OUT/perf.msgd.data" -- sleep 3 >/dev/null 2>&1; then
        echo "perf, msgd: top symbols (self), and by DSO:"
        perf report -i "$OUT/perf.msgd.data" --no-children --sort dso --stdio -g none 2>/dev/null |
            grep -v '^#' | grep -v '^$' | head -n 4
        perf report -i "$OUT/perf.msgd.data" --no-children --sort sym --stdio -g none 2>/dev/null |
            grep -v '^#' | grep -v '^$' | head -n 15
        if perf record -q -g -p "$CLIENT" -o "$OUT/perf.client.data" -- sleep 3 > "$TMP/perf.err" 2>&1; then
            echo "perf, msgbench: top symbols (self):"
            perf report -i "$OUT/perf.client.data" --no-children --sort sym --stdio -g none 2>/dev/null |
                grep -v '^#' | grep -v '^$' | head -n 8
        else
            echo "perf record on msgbench (pid $CLIENT) failed: $(tail -n 1 "$TMP/perf.err")"
        fi
    else
        echo "perf record does not work here (apt-get install linux-perf, or perf_event_paranoid)"
    fi
} 2>&1 | tee "$OUT/summary.txt"
echo "profile: $OUT" >&2
