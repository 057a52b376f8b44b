#!/usr/bin/env python3
"""frames_in.py: how many frames msgd read during a window, from its admin
`stats` (used by scripts/bench/profile.sh).

    frames_in.py ADMIN_PORT SECONDS [--strace PID OUT]

Reads frames_in twice on one admin connection, SECONDS apart, and prints the
growth less the first `stats` request itself. With --strace, `strace -c -f -p
PID -o OUT` runs around the window: the window opens once strace has
attached and strace is stopped (SIGINT) right after it closes.
"""
import signal
import socket
import subprocess
import sys
import time


def frames_in(s):
    s.sendall(b"stats\n")
    data = b""
    while not data.endswith(b"END\n"):
        c = s.recv(65536)
        if not c:
            break
        data += c
    for line in data.decode().splitlines():
        p = line.split()
        if len(p) == 2 and p[0] == "frames_in":
            return int(p[1])
    return 0


def main():
    admin, secs = int(sys.argv[1]), float(sys.argv[2])
    s = socket.create_connection(("127.0.0.1", admin), timeout=5)
    st = None
    if len(sys.argv) == 6 and sys.argv[3] == "--strace":
        st = subprocess.Popen(["strace", "-c", "-f", "-p", sys.argv[4], "-o", sys.argv[5]],
                              stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "attached" not in st.stderr.readline():
            pass
    a = frames_in(s)
    time.sleep(secs)  # the measurement window itself
    b = frames_in(s)
    if st:
        st.send_signal(signal.SIGINT)
        st.wait(timeout=10)
    print(b - a - 1)  # less the first `stats` itself


if __name__ == "__main__":
    main()
