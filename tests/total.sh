#!/usr/bin/env bash
# Sums the "SUITE PASSED FAILED" lines of the results files given and prints
# the closing line "total: N passed, N failed". Exits 1 on any failure or when
# nothing ran.
set -u
passed=0; failed=0
for f in "$@"; do
    [ -f "$f" ] || { echo "missing results file $f"; failed=$((failed + 1)); continue; }
    while read -r _ p fl _; do
        passed=$((passed + p)); failed=$((failed + fl))
    done < "$f"
done
echo "total: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
