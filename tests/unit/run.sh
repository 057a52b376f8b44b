#!/usr/bin/env bash
# Runs each unit-test binary (each forks one child per test) and appends
# "unit PASSED FAILED" to the results file named first.
set -u
results=$1; shift
passed=0; failed=0; status=0
for bin in "$@"; do
    out=$("$bin" 2>&1); rc=$?
    printf '%s\n' "$out"
    line=$(printf '%s\n' "$out" | tail -n 1)
    p=$(sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p' <<<"$line")
    f=$(sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p' <<<"$line")
    if [ -z "$p" ]; then p=0; f=1; echo "FAIL $bin: no summary line (crashed?)"; fi
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    passed=$((passed + p)); failed=$((failed + f))
    [ "$rc" -ne 0 ] && status=1
done
echo "unit: $passed passed, $failed failed"
echo "unit $passed $failed" >> "$results"
exit $status
