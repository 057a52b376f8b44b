#!/usr/bin/env python3
"""launch.py: start a server for `make bench`, report when it is ready, reap it.

    launch.py notify TIMEOUT MAXLIFE -- CMD...   ready = READY=1 on NOTIFY_SOCKET
    launch.py listen TIMEOUT MAXLIFE PORT -- CMD...
                                                  ready = 127.0.0.1:PORT listening
                                                  (read from /proc/net/tcp, so no
                                                  probe connection disturbs the server)
    launch.py freeport                            print a free loopback TCP port

The first line on stdout is "READY PID STATUS" once the server is ready
("STATUS" is the STATUS= text of the READY=1 datagram, or "-"), or
"FAILED reason" when it exited or timed out first. Then the helper stays the
server's parent: it waits for it (bench.sh stops it by PID), kills it when
MAXLIFE seconds have passed (a safety net), and exits with its status.
The server's stdout/stderr are inherited (bench.sh sends them to a log).
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def freeport():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    out(str(port))
    return 0


def listening(port):
    want = "0100007F:%04X" % port
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[1] == want and fields[3] == "0A":
                    return True
    except OSError:
        pass
    return False


def supervise(proc, maxlife):
    """Waits for the server; kills it (TERM, then KILL) after maxlife seconds."""
    try:
        return proc.wait(timeout=maxlife)
    except subprocess.TimeoutExpired:
        sys.stderr.write("launch.py: pid %d outlived %ss, stopping it\n" % (proc.pid, maxlife))
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


def main(argv):
    if len(argv) >= 1 and argv[0] == "freeport":
        return freeport()
    if "--" not in argv:
        sys.stderr.write(__doc__)
        return 2
    sep = argv.index("--")
    head, cmd = argv[:sep], argv[sep + 1:]
    mode, timeout, maxlife = head[0], float(head[1]), float(head[2])
    env = dict(os.environ)
    for k in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC",
              "WATCHDOG_PID"):
        env.pop(k, None)
    sock = None
    tmpdir = None
    if mode == "notify":
        tmpdir = tempfile.mkdtemp(prefix="msgd-bench-notify.")
        path = os.path.join(tmpdir, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        env["NOTIFY_SOCKET"] = path
    elif mode == "listen":
        port = int(head[3])
    else:
        sys.stderr.write("launch.py: unknown mode %r\n" % mode)
        return 2

    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=sys.stderr)
    deadline = time.monotonic() + timeout
    status = None
    try:
        while status is None:
            left = deadline - time.monotonic()
            if proc.poll() is not None:
                out("FAILED exited with %d before it was ready" % proc.returncode)
                return 1
            if left <= 0:
                out("FAILED not ready within %.0fs" % timeout)
                proc.kill()
                proc.wait()
                return 1
            if sock is not None:
                sock.settimeout(min(left, 0.2))
                try:
                    data = sock.recv(4096).decode("utf-8", "replace")
                except socket.timeout:
                    continue
                lines = data.split("\n")
                if "READY=1" in lines:
                    st = [l[len("STATUS="):] for l in lines if l.startswith("STATUS=")]
                    status = st[0] if st else "-"
            else:
                if listening(port):
                    status = "-"
                else:
                    time.sleep(0.01)  # bounded by the deadline above
    finally:
        if sock is not None:
            sock.close()
            os.unlink(path)
            os.rmdir(tmpdir)
    out("READY %d %s" % (proc.pid, status))
    sys.stdout.close()
    os.close(1)
    rc = supervise(proc, maxlife)
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
