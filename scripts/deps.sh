#!/usr/bin/env bash
# Installs what msgd needs on Debian 12, with apt-get. Idempotent: only the
# missing packages are installed. Uses sudo when not root. Groups add up;
# every group includes `run`.
#
#   scripts/deps.sh run        build and run msgd (`make run`), and the tools
#                              the README's examples use (python3, nc, xxd);
#                              no clang, no test tools
#   scripts/deps.sh            run + test: what `make test` needs (the same as
#   scripts/deps.sh test       `make deps`), including clang and
#                              libclang-rt-14-dev for the libFuzzer runs, and
#                              prometheus (promtool and a real Prometheus for
#                              tests/integration/test_http.py), pip,
#                              setuptools and wheel (the offline `pip install`
#                              test of clients/python) and redis-server (the
#                              cluster backplane)
#   scripts/deps.sh bench      run + test + what `make bench` measures against
#   scripts/deps.sh valgrind   run + test + valgrind (`make valgrind`)
#   scripts/deps.sh all        everything
set -euo pipefail

run=(gcc make pkg-config libev-dev libinih-dev libsystemd-dev libzstd-dev zlib1g-dev
     libhiredis-dev libssl-dev python3 netcat-openbsd xxd)
test=(python3 systemd util-linux procps clang libclang-rt-14-dev python3-zstandard prometheus
      python3-pip python3-setuptools python3-wheel redis-server openssl haproxy)
bench=(redis-server redis-tools iperf3 strace haproxy)
valgrind=(valgrind)

[ $# -eq 0 ] && set -- test
pkgs=("${run[@]}")
for group in "$@"; do
    case "$group" in
    run) ;;
    test) pkgs+=("${test[@]}") ;;
    bench) pkgs+=("${test[@]}" "${bench[@]}") ;;
    valgrind) pkgs+=("${test[@]}" "${valgrind[@]}") ;;
    all) pkgs+=("${test[@]}" "${bench[@]}" "${valgrind[@]}") ;;
    *) echo "deps.sh: unknown group '$group' (run, test, bench, valgrind, all)" >&2; exit 2 ;;
    esac
done

missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "deps.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
fi
echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends "${missing[@]}"
