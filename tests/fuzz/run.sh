#!/usr/bin/env bash
# Runs libFuzzer targets for a while each and reports, per target, the
# executions and the coverage (libFuzzer's final stats and last status line).
#
#   tests/fuzz/run.sh SECONDS FUZZ_BUILD TARGET...
#
# Each target runs on a scratch corpus FUZZ_BUILD/corpus/TARGET, seeded from
# the committed tests/fuzz/corpus/TARGET (which is never written to), with
# the dictionary tests/fuzz/TARGET.dict when there is one. Crash, leak and
# timeout inputs go to FUZZ_BUILD/artifacts/, logs to FUZZ_BUILD/logs/.
# Exits non-zero when any target failed (crash, leak, invariant, timeout).
set -u
secs=$1; build=$2; shift 2
here=$(cd "$(dirname "$0")" && pwd)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
mkdir -p "$build/artifacts" "$build/logs"
status=0
summary=()
for t in "$@"; do
    bin=$build/fuzz_$t
    corpus=$build/corpus/$t
    log=$build/logs/$t.log
    mkdir -p "$corpus"
    if [ -d "$here/corpus/$t" ]; then
        cp -p "$here/corpus/$t"/* "$corpus"/ 2>/dev/null || true
    fi
    args=(-max_total_time="$secs" -print_final_stats=1 -timeout=25 -rss_limit_mb=2048
          -artifact_prefix="$build/artifacts/$t-")
    [ -f "$here/$t.dict" ] && args+=(-dict="$here/$t.dict")
    echo "fuzz: $t for ${secs}s ($bin $corpus)"
    "$bin" "${args[@]}" "$corpus" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -n 1)
    cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.*ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.*corp: \([0-9]*\)\/.*/\1/p' <<<"$last")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    line="fuzz_$t: executions ${execs:-?} (${rate:-?}/s) cov ${cov:-?} ft ${ft:-?} corpus ${corp:-?}"
    if [ "$rc" -ne 0 ]; then
        status=1
        line="$line FAILED (exit $rc)"
        echo "---- fuzz_$t failed (exit $rc); log $log; the end of it:"
        grep -v -E '^#[0-9]+' "$log" | tail -n 40
        arts=$(ls -t "$build/artifacts/$t-"* 2>/dev/null | head -n 1)
        [ -n "$arts" ] && echo "---- reproduce: $bin $arts"
    fi
    echo "$line"
    summary+=("$line")
done
echo "==== fuzz summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
exit $status
