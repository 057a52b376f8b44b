#!/usr/bin/env bash
# scripts/bench.sh: msgd's standard benchmark (`make bench`), with same-run
# references (redis-server + redis-benchmark, iperf3) and the idle-memory
# measurement. docs/BENCHMARKS.md explains the method and the numbers.
#
#   scripts/bench.sh [--idle-only] [BUILD_DIR]     (BUILD_DIR default build-bench)
#
# It expects BUILD_DIR/msgd and BUILD_DIR/msgbench built (`make bench` does
# that) and redis-server, redis-benchmark and iperf3 on PATH. Environment:
#   BENCH_RUNS=3        rounds; each scenario's value is the median of its rounds
#   BENCH_SECONDS=4     seconds per measured run
#   BENCH_MODES="pinned unpinned"
#                       pinned: msgd reactors=1 and every server on CPU 0, every
#                       client on CPU 1; unpinned: msgd reactors=2, msgbench -t 2,
#                       nothing pinned. Each table row reports the mode in which
#                       msgd did better, with the reference measured in that mode.
#   BENCH_RATE=50000    the open-loop scenario's requests/s
#   BENCH_IDLE_CONNS=10000
#   BENCH_ONLY=compress only the compression scenarios (64 KiB text ECHO plain,
#                       zstd, deflate) and the codec cost table: no references,
#                       no idle memory; with BENCH_DOC only the compression
#                       section of that file is rewritten
#   BENCH_OUT=BUILD_DIR/bench   raw results (results.jsonl), logs, table.md
#   BENCH_DOC=path      also rewrite the marked table section of that file
#                       (e.g. docs/BENCHMARKS.md)
#
# Every loop is bounded in count and time, every tool runs under timeout(1),
# every server is stopped by PID (and on exit by the trap). Exit status: 0 when
# every tool worked (targets missed or not), 1 when a tool or server failed,
# 2 for a bad command line or missing programs.
set -uo pipefail

IDLE_ONLY=0
if [ "${1:-}" = "--idle-only" ]; then
    IDLE_ONLY=1
    shift
fi
BUILD=${1:-build-bench}
HERE=$(cd "$(dirname "$0")" && pwd)
HELPERS=$HERE/bench
# shellcheck source=bench/msgd_ini.sh
. "$HELPERS/msgd_ini.sh"
RUNS=${BENCH_RUNS:-3}
SECS=${BENCH_SECONDS:-4}
MODES=${BENCH_MODES:-"pinned unpinned"}
RATE=${BENCH_RATE:-50000}
IDLE_CONNS=${BENCH_IDLE_CONNS:-10000}
OUT=${BENCH_OUT:-$BUILD/bench}
MSGD=$BUILD/msgd
MSGBENCH=$BUILD/msgbench
ECHO_REF=$BUILD/echo_ref
CODEC_COST=$BUILD/codec_cost
ONLY=${BENCH_ONLY:-}

die() { echo "bench: $*" >&2; exit 2; }
case $RUNS in ''|*[!0-9]*) die "BENCH_RUNS must be a number";; esac
case $SECS in ''|*[!0-9]*) die "BENCH_SECONDS must be a number";; esac
[ "$RUNS" -ge 1 ] && [ "$RUNS" -le 9 ] || die "BENCH_RUNS must be 1..9"
[ "$SECS" -ge 1 ] && [ "$SECS" -le 60 ] || die "BENCH_SECONDS must be 1..60"
for m in $MODES; do
    case $m in pinned|unpinned) ;; *) die "unknown mode '$m' in BENCH_MODES";; esac
done
case $ONLY in ''|compress) ;; *) die "BENCH_ONLY must be empty or compress";; esac
[ -x "$MSGD" ] && [ -x "$MSGBENCH" ] && [ -x "$ECHO_REF" ] ||
    die "$MSGD, $MSGBENCH or $ECHO_REF missing (run make bench)"
for p in python3 taskset timeout; do command -v $p >/dev/null || die "$p not found"; done
[ -x "$CODEC_COST" ] || die "$CODEC_COST missing (run make bench)"
if [ $IDLE_ONLY -eq 0 ] && [ -z "$ONLY" ]; then
    for p in redis-server redis-benchmark iperf3; do
        command -v $p >/dev/null || die "$p not found (bash scripts/deps.sh bench)"
    done
fi

mkdir -p "$OUT" || die "cannot create $OUT"
TMP=$(mktemp -d /tmp/msgd-bench.XXXXXX) || die "mktemp failed"
LOG=$OUT/bench.log
RESULTS=$OUT/results.jsonl
: > "$LOG"
if [ $IDLE_ONLY -eq 1 ] && [ -f "$RESULTS" ]; then
    # keep the last full run's scenarios, replace its idle-memory runs
    grep -v '"mode":"idle"' "$RESULTS" > "$RESULTS.tmp"; mv "$RESULTS.tmp" "$RESULTS"
else
    : > "$RESULTS"
fi
FAILED=0
NCPU=$(nproc)

log() { echo "$*" >> "$LOG"; }
say() { echo "$*" >&2; log "$*"; }

# ---- servers: started through launch.py, stopped by PID ----------------------

declare -A SERVER_LAUNCHER=()   # server pid -> its launch.py pid

# start_server NAME MODE(notify|listen) [PORT] -- CMD...: sets STARTED_PID and
# STARTED_STATUS; returns 1 when the server did not come up.
start_server() {
    local name=$1 mode=$2 port=""
    shift 2
    if [ "$mode" = listen ]; then port=$1; shift; fi
    [ "$1" = "--" ] && shift
    local fifo=$TMP/ready.$name
    rm -f "$fifo"
    mkfifo "$fifo" || return 1
    # shellcheck disable=SC2086
    python3 "$HELPERS/launch.py" "$mode" 20 1800 $port -- "$@" > "$fifo" 2>> "$OUT/$name.log" &
    local launcher=$!
    local line=""
    read -r -t 30 line < "$fifo" || true
    rm -f "$fifo"
    case $line in
    READY\ *)
        STARTED_PID=$(echo "$line" | cut -d' ' -f2)
        STARTED_STATUS=$(echo "$line" | cut -d' ' -f3-)
        SERVER_LAUNCHER[$STARTED_PID]=$launcher
        log "started $name: pid $STARTED_PID: $(printf '%q ' "$@")"
        return 0 ;;
    esac
    log "$name did not start: ${line:-no answer from launch.py}: $*"
    kill "$launcher" 2>/dev/null
    wait "$launcher" 2>/dev/null
    return 1
}

# stop_server PID: SIGTERM, at most 10 s, then SIGKILL; reaps its launcher.
stop_server() {
    local pid=$1 i
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid ignored SIGTERM for 10 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null
    fi
    local launcher=${SERVER_LAUNCHER[$pid]:-}
    if [ -n "$launcher" ]; then
        wait "$launcher" 2>/dev/null
        unset "SERVER_LAUNCHER[$pid]"
    fi
}

# run_tool LIMIT OUT ERR CMD...: runs CMD under timeout(1) with stdout to OUT
# and stderr to ERR, in the background so that a signal reaches the trap at
# once (bash runs traps only between foreground commands); returns its status.
TOOL_PID=""
run_tool() {
    local limit=$1 out=$2 err=$3
    shift 3
    timeout -k 5 "$limit" "$@" > "$out" 2> "$err" < /dev/null &
    TOOL_PID=$!
    wait "$TOOL_PID"
    local rc=$?
    TOOL_PID=""
    return $rc
}

cleanup() {
    local pid
    if [ -n "$TOOL_PID" ]; then  # timeout(1) passes the TERM on to the tool
        kill -TERM "$TOOL_PID" 2>/dev/null
        wait "$TOOL_PID" 2>/dev/null
    fi
    for pid in "${!SERVER_LAUNCHER[@]}"; do stop_server "$pid"; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

freeport() { python3 "$HELPERS/launch.py" freeport; }

# ---- msgd -----------------------------------------------------------------------

MSGD_PID=""; MSG_PORT=""; ECHO_PORT=""; ADMIN_PORT=""

# start_msgd REACTORS CPULIST(or "")
start_msgd() {
    local reactors=$1 cpus=$2 conf=$TMP/msgd.ini
    bench_msgd_ini "$reactors" $((IDLE_CONNS + 2000)) > "$conf"
    local pin=()
    [ -n "$cpus" ] && pin=(taskset -c "$cpus")
    if ! start_server msgd notify -- "${pin[@]}" "$MSGD" -c "$conf"; then
        say "msgd did not start (see $OUT/msgd.log)"
        return 1
    fi
    MSGD_PID=$STARTED_PID
    # STATUS=listening msg=127.0.0.1:PORT echo=127.0.0.1:PORT admin=127.0.0.1:PORT
    MSG_PORT=$(echo "$STARTED_STATUS" | sed -n 's/.*msg=127\.0\.0\.1:\([0-9]*\).*/\1/p')
    ECHO_PORT=$(echo "$STARTED_STATUS" | sed -n 's/.*echo=127\.0\.0\.1:\([0-9]*\).*/\1/p')
    ADMIN_PORT=$(echo "$STARTED_STATUS" | sed -n 's/.*admin=127\.0\.0\.1:\([0-9]*\).*/\1/p')
    if [ -z "$MSG_PORT" ] || [ -z "$ECHO_PORT" ] || [ -z "$ADMIN_PORT" ]; then
        say "cannot read the ports from msgd's STATUS: '$STARTED_STATUS'"
        stop_server "$MSGD_PID"
        MSGD_PID=""
        return 1
    fi
    log "msgd pid $MSGD_PID reactors=$reactors cpus=${cpus:-all}: $STARTED_STATUS"
}

stop_msgd() { stop_server "$MSGD_PID"; MSGD_PID=""; }

# ---- redis-server: a free loopback port, persistence off -----------------------

REDIS_PID=""; REDIS_PORT=""
start_redis() {
    for _ in 1 2 3 4 5; do  # another process may take the port meanwhile
        REDIS_PORT=$(freeport) || return 1
        if start_server redis notify -- redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
                --save '' --appendonly no --supervised systemd --dir "$TMP" --logfile '' \
                --protected-mode no; then
            REDIS_PID=$STARTED_PID
            log "redis-server pid $REDIS_PID port $REDIS_PORT"
            return 0
        fi
    done
    say "redis-server did not start in 5 tries (see $OUT/redis.log)"
    return 1
}

# pin_all PID CPULIST: every thread of PID onto CPULIST.
pin_all() { taskset -a -pc "$2" "$1" > /dev/null; }

# ---- measurements ---------------------------------------------------------------

# record MODE ROUND SCENARIO SIDE VALUE UNIT [RAWJSON]
record() {
    local raw=${7:-null}
    [ -n "$raw" ] || raw=null
    echo "{\"mode\":\"$1\",\"round\":$2,\"scenario\":\"$3\",\"side\":\"$4\",\"value\":$5,\"unit\":\"$6\",\"raw\":$raw}" >> "$RESULTS"
}

fail() { FAILED=1; say "FAILED: $*"; }

# run_msgbench MODE ROUND SCENARIO PORT ARGS...: runs msgbench, records the value
# (as msgd's, or with SIDE=ref as the reference's).
run_msgbench() {
    local mode=$1 round=$2 scen=$3 port=$4 side=${SIDE:-msgd}
    shift 4
    local pin=() threads=1
    if [ "$mode" = pinned ]; then pin=(taskset -c 1); else threads=2; fi
    local out=$TMP/msgbench.json err=$OUT/msgbench.$scen.$mode.$round.log
    log "[$mode $round] $scen: ${pin[*]} $MSGBENCH -p $port -t $threads $* -d $SECS --json"
    run_tool $((SECS + 40)) "$out" "$err" "${pin[@]}" "$MSGBENCH" -p "$port" -t "$threads" "$@" \
        -d "$SECS" --json
    local rc=$?
    local json
    json=$(tr -d '\n' < "$out")
    if [ $rc -ne 0 ] || [ -z "$json" ]; then
        fail "msgbench $scen ($mode, round $round) exited $rc: $(tail -n 3 "$err" | tr '\n' ' ')"
        return 1
    fi
    local value unit=req/s
    case $scen in
    pingpong_16k*) unit=MiB/s
        value=$(python3 -c 'import json,sys; print("%.3f" % (json.load(sys.stdin)["mib_per_sec"] / 2))' <<< "$json") ;;
    rate_p99) unit=ms
        value=$(python3 -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["latency_ms"]["p99"])' <<< "$json") ;;
    zip64k_*) # req/s; report.py takes the bytes on the wire from the raw JSON
        value=$(python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.1f" % d["requests_per_sec"]) if d["errors"] == 0 and d["ok"] > 0 else print("")' <<< "$json")
        if [ -z "$value" ]; then
            fail "msgbench $scen ($mode, round $round): errors or no reply: $json"
            return 1
        fi ;;
    *)  value=$(python3 -c 'import json,sys; print("%.1f" % json.load(sys.stdin)["requests_per_sec"])' <<< "$json") ;;
    esac
    record "$mode" "$round" "$scen" "$side" "$value" "$unit" "$json"
    if [ "$scen" = rate_p99 ]; then  # p99 means little when the rate was not reached
        local got
        got=$(python3 -c 'import json,sys; print("%.1f" % json.load(sys.stdin)["requests_per_sec"])' <<< "$json")
        record "$mode" "$round" rate_achieved msgd "$got" req/s
        say "  [$mode round $round] msgd  $scen: $value $unit (at $got req/s)"
    else
        say "  [$mode round $round] $side  $scen: $value $unit"
    fi
}

declare -A REDIS_N=()  # requests per redis-benchmark run, sized from the last one

# run_redis MODE ROUND SCENARIO ARGS...: redis-benchmark -t ping, records PING_MBULK.
run_redis() {
    local mode=$1 round=$2 scen=$3
    shift 3
    local key=$scen n
    n=${REDIS_N[$key]:-}
    if [ -z "$n" ]; then  # a first guess; later runs are sized from the last one
        case $scen in *_p16) n=$((500000 * SECS)) ;; *) n=$((50000 * SECS)) ;; esac
    fi
    local pin=()
    [ "$mode" = pinned ] && pin=(taskset -c 1)
    local out=$OUT/redis-benchmark.$scen.$mode.$round.log
    log "[$mode $round] $scen ref: ${pin[*]} redis-benchmark -h 127.0.0.1 -p $REDIS_PORT -t ping $* -n $n -q"
    run_tool $((SECS * 6 + 60)) "$out" "$out.err" "${pin[@]}" redis-benchmark -h 127.0.0.1 \
        -p "$REDIS_PORT" -t ping "$@" -n "$n" -q
    local rc=$?
    cat "$out.err" >> "$out"; rm -f "$out.err"
    local mbulk inline
    mbulk=$(tr '\r' '\n' < "$out" | sed -n 's/^ *PING_MBULK: \([0-9.]*\) requests per second.*/\1/p' | tail -n 1)
    inline=$(tr '\r' '\n' < "$out" | sed -n 's/^ *PING_INLINE: \([0-9.]*\) requests per second.*/\1/p' | tail -n 1)
    if [ $rc -ne 0 ] || [ -z "$mbulk" ]; then
        fail "redis-benchmark $scen ($mode, round $round) exited $rc: $(tr '\r' '\n' < "$out" | tail -n 2 | tr '\n' ' ')"
        return 1
    fi
    record "$mode" "$round" "$scen" ref "$mbulk" req/s "{\"ping_mbulk\":$mbulk,\"ping_inline\":${inline:-null},\"n\":$n}"
    say "  [$mode round $round] redis $scen: $mbulk req/s (PING_MBULK; PING_INLINE ${inline:-?})"
    # Size the next run to last about SECS seconds (at least 20000 requests,
    # at most 20 million).
    REDIS_N[$key]=$(awk -v r="$mbulk" -v s="$SECS" 'BEGIN { n = int(r * s); if (n < 20000) n = 20000; if (n > 20000000) n = 20000000; print n }')
}

# run_iperf3 MODE ROUND: single stream on loopback, MiB/s received (one way).
run_iperf3() {
    local mode=$1 round=$2 port spin=() cpin=()
    if [ "$mode" = pinned ]; then spin=(taskset -c 0); cpin=(taskset -c 1); fi
    local started=0
    for _ in 1 2 3; do
        port=$(freeport) || break
        if start_server iperf3 listen "$port" -- "${spin[@]}" iperf3 -s -1 -B 127.0.0.1 -p "$port"; then
            started=1
            break
        fi
    done
    if [ $started -eq 0 ]; then
        fail "iperf3 server did not start (see $OUT/iperf3.log)"
        return 1
    fi
    local spid=$STARTED_PID out=$OUT/iperf3.$mode.$round.json
    log "[$mode $round] iperf3: ${cpin[*]} iperf3 -c 127.0.0.1 -p $port -t $SECS -J"
    run_tool $((SECS + 30)) "$out" "$OUT/iperf3-client.log" "${cpin[@]}" iperf3 -c 127.0.0.1 \
        -p "$port" -t "$SECS" -J
    local rc=$?
    stop_server "$spid"  # -1 ends it after one test; this reaps it (or stops a stuck one)
    local value
    value=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.3f" % (d["end"]["sum_received"]["bits_per_second"] / 8 / 1048576))' "$out" 2>/dev/null)
    if [ $rc -ne 0 ] || [ -z "$value" ]; then
        fail "iperf3 client ($mode, round $round) exited $rc (see $out)"
        return 1
    fi
    record "$mode" "$round" pingpong_16k ref "$value" MiB/s
    say "  [$mode round $round] iperf3 single stream: $value MiB/s"
}

# run_echo_ref MODE ROUND: the 16 KiB ping-pong against the smallest echo server
# (scripts/bench/echo_ref.c: one read and one write per request, nothing else),
# pinned like msgd and with as many threads as msgd has reactors; msgbench
# --protocol echo measures it as it measures msgd. MiB/s one way.
run_echo_ref() {
    local mode=$1 round=$2 port spin=() threads=1 started=0
    if [ "$mode" = pinned ]; then spin=(taskset -c 0); else threads=2; fi
    for _ in 1 2 3; do
        port=$(freeport) || break
        if start_server echo_ref listen "$port" -- "${spin[@]}" "$ECHO_REF" "$port" "$threads"; then
            started=1
            break
        fi
    done
    if [ $started -eq 0 ]; then
        fail "echo_ref did not start (see $OUT/echo_ref.log)"
        return 1
    fi
    local spid=$STARTED_PID
    SIDE=ref run_msgbench "$mode" "$round" pingpong_16k_min "$port" --protocol echo -c 100 -s 16384
    stop_server "$spid"
}

# One round in one mode: each msgd scenario, then its reference, back to back.
round() {
    local mode=$1 r=$2 reactors=1 scpus=0 rcpus=0
    if [ "$mode" = unpinned ]; then reactors=2; scpus=""; rcpus=0-$((NCPU - 1)); fi
    start_msgd "$reactors" "$scpus" || { FAILED=1; return 1; }
    pin_all "$REDIS_PID" "$rcpus" || fail "taskset on redis-server"

    run_msgbench "$mode" "$r" echo_c50 "$MSG_PORT" -c 50 -s 64
    run_redis "$mode" "$r" echo_c50 -c 50
    run_msgbench "$mode" "$r" echo_c1000 "$MSG_PORT" -c 1000 -s 64
    run_redis "$mode" "$r" echo_c1000 -c 1000
    run_msgbench "$mode" "$r" echo_c50_p16 "$MSG_PORT" -c 50 -P 16 -s 64
    run_redis "$mode" "$r" echo_c50_p16 -c 50 -P 16
    run_msgbench "$mode" "$r" pingpong_16k "$MSG_PORT" -c 100 -s 16384
    run_iperf3 "$mode" "$r"
    run_echo_ref "$mode" "$r"
    run_msgbench "$mode" "$r" rate_p99 "$MSG_PORT" -c 50 -s 64 --rate "$RATE"
    run_msgbench "$mode" "$r" rawecho_c50 "$ECHO_PORT" --protocol echo -c 50 -s 64
    compress_scenarios "$mode" "$r"

    stop_msgd
}

# A compressible 64 KiB payload (msgbench --payload text: words, ~3.3x with
# zstd level 1) echoed by 10 connections without pipelining: plain, then with
# zstd, then with deflate (msgd's defaults: level 1, compress_min 1K), back to
# back on the same msgd. Requests/s, and bytes on the wire from msgbench's
# bytes_sent + bytes_received.
compress_scenarios() {
    local mode=$1 r=$2
    run_msgbench "$mode" "$r" zip64k_plain "$MSG_PORT" -c 10 -s 65536 --payload text
    run_msgbench "$mode" "$r" zip64k_zstd "$MSG_PORT" -c 10 -s 65536 --payload text \
        --compress zstd
    run_msgbench "$mode" "$r" zip64k_deflate "$MSG_PORT" -c 10 -s 65536 --payload text \
        --compress deflate
}

# BENCH_ONLY=compress: one round of just those.
round_compress() {
    local mode=$1 r=$2 reactors=1 scpus=0
    if [ "$mode" = unpinned ]; then reactors=2; scpus=""; fi
    start_msgd "$reactors" "$scpus" || { FAILED=1; return 1; }
    compress_scenarios "$mode" "$r"
    stop_msgd
}

# What each codec costs per payload in process (scripts/bench/codec_cost.c),
# pinned to CPU 0 like msgd's reactor: once per bench.
codec_cost() {
    log "codec cost: taskset -c 0 $CODEC_COST"
    if ! run_tool 300 "$OUT/codec_cost.txt" "$OUT/codec_cost.err" taskset -c 0 "$CODEC_COST"; then
        fail "codec_cost: $(tail -n 2 "$OUT/codec_cost.err" | tr '\n' ' ')"
        return 1
    fi
    say "codec cost per payload: $OUT/codec_cost.txt"
}

# ---- idle memory ----------------------------------------------------------------

idle_memory() {
    local r
    for ((r = 1; r <= RUNS; r++)); do
        start_msgd 1 0 || { FAILED=1; return 1; }
        local out=$TMP/idle.json
        log "[idle $r] idle_rss.py $MSGD_PID $MSG_PORT $ADMIN_PORT $IDLE_CONNS"
        if run_tool 300 "$out" "$TMP/idle.err" python3 "$HELPERS/idle_rss.py" "$MSGD_PID" \
                "$MSG_PORT" "$ADMIN_PORT" "$IDLE_CONNS"; then
            local json
            json=$(tr -d '\n' < "$out")
            local idle talked
            idle=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes_per_idle_conn"])' <<< "$json")
            talked=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes_per_conn_after_echo"])' <<< "$json")
            record idle "$r" idle_rss msgd "$idle" B/conn "$json"
            record idle "$r" idle_rss_after_echo msgd "$talked" B/conn "$json"
            say "  [idle round $r] $IDLE_CONNS connections: $idle B each idle, $talked B each after one ECHO"
        else
            fail "idle_rss.py (round $r): $(tail -n 2 "$TMP/idle.err" | tr '\n' ' ')"
        fi
        stop_msgd
    done
}

# ---- main -----------------------------------------------------------------------

LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
{
    echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $NCPU CPUs, kernel $(uname -r)"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "runs $RUNS x $SECS s, modes: $MODES, rate $RATE, idle connections $IDLE_CONNS"
} | tee -a "$LOG" >&2

if [ $IDLE_ONLY -eq 0 ]; then
    # The references: `--port 0` does not work for redis-server, so a free
    # port is picked (retried if taken meanwhile).
    if [ -z "$ONLY" ]; then start_redis || exit 1; fi
    for ((r = 1; r <= RUNS; r++)); do
        for mode in $MODES; do
            say "round $r/$RUNS, $mode${ONLY:+ (only $ONLY)}"
            if [ -z "$ONLY" ]; then round "$mode" "$r"; else round_compress "$mode" "$r"; fi
        done
    done
    if [ -n "$REDIS_PID" ]; then stop_server "$REDIS_PID"; REDIS_PID=""; fi
    codec_cost
fi
if [ -z "$ONLY" ]; then
    say "idle memory: $IDLE_CONNS connections, $RUNS runs"
    idle_memory
fi
LOAD_AFTER=$(cut -d' ' -f1 /proc/loadavg)
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$LOG" >&2

doc=()
[ -n "${BENCH_DOC:-}" ] && doc=(--doc "$BENCH_DOC")
[ -s "$OUT/codec_cost.txt" ] && doc+=(--codec-cost "$OUT/codec_cost.txt")
python3 "$HELPERS/report.py" "$RESULTS" --out "$OUT/table.md" "${doc[@]}" \
    --machine "$(head -n 1 "$LOG")" --secs "$SECS" --runs "$RUNS" --rate "$RATE" \
    --idle-conns "$IDLE_CONNS" --load "$LOAD_BEFORE / $LOAD_AFTER" || FAILED=1
echo "raw results: $RESULTS; logs: $OUT" >&2
exit $FAILED
