#!/bin/sh
# msgd under valgrind memcheck, for `make valgrind` (mk/reliability.mk): the
# integration harness runs this as MSGD_BIN, so every daemon a test starts
# runs under memcheck with its own log, $MSGD_VALGRIND_LOGDIR/msgd.PID.log.
# valgrind runs the program in its own process (no fork), so the PID the
# harness sees, signals and /proc/PID are msgd's.
#
#   MSGD_VALGRIND_BIN     the real daemon (default <repo>/build/msgd)
#   MSGD_VALGRIND_LOGDIR  where the logs go (default <repo>/build/valgrind/logs)
#
# `make valgrind` runs it through a symlink in build/valgrind/bin/, beside
# links to msgcli and msgbench, because the tests look for the client tools
# (test_client) and run `make BUILD=<that directory>` (test_systemd) in the
# directory of MSGD_BIN.
#
# A definite leak or any memcheck error makes the process exit 99 instead of
# its own status, which the harness reports as a wrong exit code; the make
# target also reads every log afterwards.
here=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
repo=$(dirname "$(dirname "$here")")
bin=${MSGD_VALGRIND_BIN:-$repo/build/msgd}
logdir=${MSGD_VALGRIND_LOGDIR:-$repo/build/valgrind/logs}
mkdir -p "$logdir"
exec valgrind --tool=memcheck --error-exitcode=99 --leak-check=full \
    --errors-for-leak-kinds=definite --show-leak-kinds=definite \
    --num-callers=30 --log-file="$logdir/msgd.%p.log" "$bin" "$@"
