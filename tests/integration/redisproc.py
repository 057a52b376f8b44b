"""redisproc: a real redis-server (Debian's) for the cluster tests, on a
unix socket in its own temp dir (no TCP port to collide on), persistence
off, stopped by PID; and a tiny RESP client to ask it things (PUBSUB
NUMSUB, PUBLISH). Nothing here sleeps to synchronise: start() polls PING
with a timeout."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from harness import poll_pause, timeout


def resp_encode(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class RespConn:
    """A blocking RESP connection to a unix socket."""

    def __init__(self, path, wait):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(wait)
        self.sock.connect(path)
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("redis closed the connection")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("redis closed the connection")
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n + 2:]
        return out

    def read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            return [self.read() for _ in range(int(rest))]
        raise RuntimeError("bad RESP %r" % line)

    def call(self, *args):
        self.sock.sendall(resp_encode(*args))
        return self.read()

    def close(self):
        self.sock.close()


class RedisServer:
    def __init__(self, password=None):
        self.tmp = tempfile.mkdtemp(prefix="msgd-redis-")
        self.sock = os.path.join(self.tmp, "redis.sock")
        self.password = password
        self.proc = None

    @property
    def addr(self):
        return "unix:" + self.sock

    def start(self):
        args = ["redis-server", "--port", "0", "--unixsocket", self.sock, "--unixsocketperm", "700",
                "--save", "", "--appendonly", "no", "--dir", self.tmp,
                "--logfile", os.path.join(self.tmp, "redis.log")]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout(2)
        i = 0
        while True:
            try:
                c = self.conn()
                pong = c.call("PING")
                c.close()
                if pong == "PONG":
                    return self
            except (OSError, ConnectionError, RuntimeError):
                pass
            if self.proc.poll() is not None:
                raise AssertionError("redis-server exited with %r" % self.proc.returncode)
            if time.monotonic() > deadline:
                raise AssertionError("redis-server did not answer PING in time")
            poll_pause(i)
            i += 1

    def conn(self):
        c = RespConn(self.sock, timeout())
        if self.password:
            c.call("AUTH", self.password)
        return c

    def call(self, *args):
        c = self.conn()
        try:
            return c.call(*args)
        finally:
            c.close()

    def numsub(self, channel):
        return self.call("PUBSUB", "NUMSUB", channel)[1]

    def kill(self):
        """SIGKILL: the server goes at once, whatever it was doing."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout(2))
        self.proc = None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout(2))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout(2))
        self.proc = None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
