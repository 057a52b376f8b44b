#!/usr/bin/env bash
# Installs what msgd needs to build, run and test on Debian 12.
# Idempotent: installs only the packages that are missing. Uses sudo when not root.
set -euo pipefail

pkgs=(gcc make pkg-config libev-dev libinih-dev libsystemd-dev python3 systemd procps)
# Optional extras for fuzzing and deeper checks; installed when asked.
if [ "${MSGD_DEPS_EXTRA:-0}" = 1 ]; then
    pkgs+=(clang libclang-rt-14-dev valgrind strace)
fi

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
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
