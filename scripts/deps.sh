#!/usr/bin/env bash
# Installs what msgd needs on Debian 12, with apt-get. Idempotent: only the
# missing packages are installed. Uses sudo when not root.
#
#   scripts/deps.sh            build, run and `make test` (includes clang and
#                              libclang-rt-14-dev for the libFuzzer smoke runs,
#                              and prometheus: promtool and a real Prometheus
#                              for tests/integration/test_http.py; pip,
#                              setuptools and wheel for the offline `pip
#                              install` test of clients/python; hiredis and
#                              redis-server for the cluster backplane)
#   scripts/deps.sh bench      also what `make bench` measures against
#   scripts/deps.sh valgrind   also valgrind (`make valgrind`)
#   scripts/deps.sh all        everything
set -euo pipefail

base=(gcc make pkg-config libev-dev libinih-dev libsystemd-dev python3 systemd
      util-linux procps clang libclang-rt-14-dev libzstd-dev zlib1g-dev python3-zstandard
      prometheus python3-pip python3-setuptools python3-wheel libhiredis-dev redis-server
      libssl-dev openssl)
bench=(redis-server redis-tools iperf3 strace haproxy)
valgrind=(valgrind)

pkgs=("${base[@]}")
for group in "$@"; do
    case "$group" in
    bench) pkgs+=("${bench[@]}") ;;
    valgrind) pkgs+=("${valgrind[@]}") ;;
    all) pkgs+=("${bench[@]}" "${valgrind[@]}") ;;
    *) echo "deps.sh: unknown group '$group' (bench, valgrind, all)" >&2; exit 2 ;;
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
