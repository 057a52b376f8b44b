"""msgproto: the msg protocol (shared/PROTOCOL.md) spoken by the integration tests.

Written from the wire contract with struct only, never from the C code, so the
tests check the daemon's codec rather than share its mistakes.
"""

import errno
import select
import socket
import struct
import time
from collections import namedtuple

MAGIC = 0x4D534750          # b"MSGP"
VERSION = 1
HEADER = struct.Struct(">IIII")
HEADER_SIZE = HEADER.size   # 16

REPLY = 0x80000000
ERROR = 0x40000000
COMPRESSED = 0x20000000
CMD_MASK = 0x1FFFFFFF   # bits 0..28: the command number
CONN_ERROR = REPLY | ERROR  # 0xC0000000: connection-level error, then close

# Commands
CONNECTION = 0
PING = 1
ECHO = 2
AUTH = 3
STATS = 4
DELAY = 5
HELLO = 6
SUBSCRIBE = 16
UNSUBSCRIBE = 17
PUBLISH = 18
MESSAGE = 19
GOAWAY = 20
DIRECT = 21
DELIVER = 22

COMMAND_NAMES = {
    CONNECTION: "CONNECTION", PING: "PING", ECHO: "ECHO", AUTH: "AUTH",
    STATS: "STATS", DELAY: "DELAY", HELLO: "HELLO", SUBSCRIBE: "SUBSCRIBE",
    UNSUBSCRIBE: "UNSUBSCRIBE", PUBLISH: "PUBLISH", MESSAGE: "MESSAGE",
    GOAWAY: "GOAWAY", DIRECT: "DIRECT", DELIVER: "DELIVER",
}

# Error codes
UNKNOWN_COMMAND = 1
BAD_PAYLOAD = 2
NOT_AUTHENTICATED = 3
TOO_LARGE = 4
BAD_MAGIC = 5
BAD_VERSION = 6
OVERLOADED = 7
SHUTTING_DOWN = 8
DISABLED = 9
IDLE_TIMEOUT = 10
AUTH_FAILED = 11
LIMIT_EXCEEDED = 12

ERROR_NAMES = {
    UNKNOWN_COMMAND: "UNKNOWN_COMMAND", BAD_PAYLOAD: "BAD_PAYLOAD",
    NOT_AUTHENTICATED: "NOT_AUTHENTICATED", TOO_LARGE: "TOO_LARGE",
    BAD_MAGIC: "BAD_MAGIC", BAD_VERSION: "BAD_VERSION",
    OVERLOADED: "OVERLOADED", SHUTTING_DOWN: "SHUTTING_DOWN",
    DISABLED: "DISABLED", IDLE_TIMEOUT: "IDLE_TIMEOUT",
    AUTH_FAILED: "AUTH_FAILED", LIMIT_EXCEEDED: "LIMIT_EXCEEDED",
}

# Largest payload this client accepts from a server (the server's own max_frame
# limit is 256M); anything larger means the stream is garbage.
CLIENT_MAX_LENGTH = 256 * 1024 * 1024


def u32(n):
    """One big-endian u32."""
    return struct.pack(">I", n & 0xFFFFFFFF)


def encode(cmd, payload=b"", magic=MAGIC, version=VERSION, length=None):
    """One frame. Override magic, version or length to forge a bad frame
    (length=None means len(payload))."""
    payload = bytes(payload)
    if length is None:
        length = len(payload)
    return HEADER.pack(magic & 0xFFFFFFFF, version & 0xFFFFFFFF,
                       cmd & 0xFFFFFFFF, length & 0xFFFFFFFF) + payload


def encode_header(cmd, length, magic=MAGIC, version=VERSION):
    """Just a 16-byte header (e.g. to announce a payload that is never sent)."""
    return HEADER.pack(magic & 0xFFFFFFFF, version & 0xFFFFFFFF,
                       cmd & 0xFFFFFFFF, length & 0xFFFFFFFF)


def reply_cmd(cmd):
    return REPLY | (cmd & CMD_MASK)


def error_cmd(cmd):
    return REPLY | ERROR | (cmd & CMD_MASK)


def encode_error(cmd, code, text):
    """An error reply to command cmd (0 for the connection-level error)."""
    return encode(error_cmd(cmd), u32(code) + text.encode("utf-8"))


def decode_error(payload):
    """(code, text) of an error payload. Raises ProtocolError if malformed."""
    if len(payload) < 4:
        raise ProtocolError("error payload shorter than 4 bytes: %r" % (bytes(payload),))
    (code,) = struct.unpack(">I", payload[:4])
    try:
        text = bytes(payload[4:]).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError("error text is not UTF-8: %r (%s)" % (bytes(payload[4:]), e))
    return code, text


def describe(cmd, payload=b""):
    """Human-readable one-liner of a frame, for assertion messages."""
    flags = []
    if cmd & REPLY:
        flags.append("REPLY")
    if cmd & ERROR:
        flags.append("ERROR")
    num = cmd & CMD_MASK
    name = COMMAND_NAMES.get(num, str(num))
    s = "cmd=0x%08X(%s) len=%d" % (cmd, "|".join(flags + [name]), len(payload))
    if (cmd & (REPLY | ERROR)) == (REPLY | ERROR) and len(payload) >= 4:
        code = struct.unpack(">I", payload[:4])[0]
        s += " code=%d(%s) text=%r" % (code, ERROR_NAMES.get(code, "?"), bytes(payload[4:80]))
    elif payload:
        s += " payload=%r%s" % (bytes(payload[:40]), "..." if len(payload) > 40 else "")
    return s


def parse_stats(payload):
    """STATS text -> {name: value}; values are int, float or str.
    Raises ProtocolError on a line that is not `name value`."""
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError("STATS reply is not UTF-8: %s" % e)
    out = {}
    for lineno, line in enumerate(text.split("\n"), 1):
        if line == "":
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise ProtocolError("STATS line %d is not 'name value': %r" % (lineno, line))
        name, value = parts
        if name in out:
            raise ProtocolError("STATS line %d repeats name %r" % (lineno, name))
        for conv in (int, float):
            try:
                value = conv(value)
                break
            except ValueError:
                pass
        out[name] = value
    return out


class ProtocolError(AssertionError):
    """The server sent something that breaks the protocol."""


class ConnectionClosed(AssertionError):
    """EOF or reset where a frame was expected."""


class Timeout(AssertionError):
    """Nothing (or not enough) arrived within the timeout."""


Frame = namedtuple("Frame", "cmd payload raw")


class FrameReader:
    """Accumulates bytes and yields whole frames. Checks every header the server
    sends (magic, version, sane length)."""

    def __init__(self, max_length=CLIENT_MAX_LENGTH):
        self.buf = bytearray()
        self.pos = 0
        self.max_length = max_length

    def feed(self, data):
        if self.pos and self.pos > len(self.buf) // 2:
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += data

    def pending(self):
        """Bytes buffered but not yet returned as a frame."""
        return len(self.buf) - self.pos

    def next_frame(self):
        """The next whole frame, or None if more bytes are needed."""
        avail = len(self.buf) - self.pos
        if avail < HEADER_SIZE:
            return None
        magic, version, cmd, length = HEADER.unpack_from(self.buf, self.pos)
        if magic != MAGIC:
            raise ProtocolError("server frame has bad magic 0x%08X (header %s)"
                                % (magic, bytes(self.buf[self.pos:self.pos + 16]).hex()))
        if version != VERSION:
            raise ProtocolError("server frame has bad version %d (header %s)"
                                % (version, bytes(self.buf[self.pos:self.pos + 16]).hex()))
        if length > self.max_length:
            raise ProtocolError("server frame length %d is absurd" % length)
        if avail < HEADER_SIZE + length:
            return None
        start = self.pos
        end = start + HEADER_SIZE + length
        raw = bytes(self.buf[start:end])
        self.pos = end
        return Frame(cmd, raw[HEADER_SIZE:], raw)

    def frames(self):
        """Yields every whole frame buffered so far."""
        while True:
            f = self.next_frame()
            if f is None:
                return
            yield f


def _remaining(deadline):
    return max(0.0, deadline - time.monotonic())


class Client:
    """A blocking msg (or raw echo) client with a timeout on every wait."""

    def __init__(self, host, port, timeout=5.0, nodelay=True, answer_pings=False, rcvbuf=None):
        """rcvbuf: SO_RCVBUF set before connecting (a slow reader's small window)."""
        self.timeout = timeout
        self.answer_pings = answer_pings
        if rcvbuf is None:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(timeout)
            self.sock.connect((host, port))
        if nodelay:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = FrameReader()
        self.eof = False
        self.closed = False
        self.server_pings = 0

    @classmethod
    def over(cls, sock, timeout=5.0):
        """A client on a socket already connected (that may have sent
        something first, such as a PROXY protocol header)."""
        c = cls.__new__(cls)
        c.timeout = timeout
        c.answer_pings = False
        c.sock = sock
        c.reader = FrameReader()
        c.eof = False
        c.closed = False
        c.server_pings = 0
        return c

    # --- context manager -------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def fileno(self):
        return self.sock.fileno()

    # --- sending -----------------------------------------------------------
    def send_raw(self, data):
        self.sock.sendall(data)

    def send_frame(self, cmd, payload=b"", **kw):
        self.send_raw(encode(cmd, payload, **kw))

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    # --- receiving ---------------------------------------------------------
    def _recv_some(self, deadline, what):
        """Reads once, waiting until deadline. Returns the bytes (b'' on EOF)."""
        while True:
            left = _remaining(deadline)
            r, _, _ = select.select([self.sock], [], [], left)
            if r:
                break
            if left <= 0:
                raise Timeout("timed out waiting for %s (%d bytes buffered)"
                              % (what, self.reader.pending()))
        try:
            data = self.sock.recv(262144)
        except ConnectionResetError:
            raise ConnectionClosed("connection reset while waiting for %s (%d bytes buffered)"
                                   % (what, self.reader.pending()))
        except socket.timeout:
            raise Timeout("timed out (recv) waiting for %s" % what)
        if not data:
            self.eof = True
        return data

    def recv_frame_raw(self, timeout=None):
        """The next whole frame as a Frame(cmd, payload, raw)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            f = self.reader.next_frame()
            if f is not None:
                if self.answer_pings and f.cmd == PING:
                    self.server_pings += 1
                    self.send_frame(REPLY | PING, f.payload)
                    continue
                return f
            if self.eof:
                raise ConnectionClosed("EOF while waiting for a frame (%d bytes of a partial "
                                       "frame buffered)" % self.reader.pending())
            data = self._recv_some(deadline, "a frame")
            if data:
                self.reader.feed(data)

    def recv_frame(self, timeout=None):
        """The next frame as (cmd, payload); raises ConnectionClosed on EOF/reset,
        Timeout on timeout."""
        f = self.recv_frame_raw(timeout)
        return f.cmd, f.payload

    def call(self, cmd, payload=b"", timeout=None):
        """Sends one request and returns the next frame (cmd, payload)."""
        self.send_frame(cmd, payload)
        return self.recv_frame(timeout)

    def recv_exact(self, n, timeout=None):
        """Exactly n raw bytes (for the echo protocol)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        out = bytearray(self.reader.buf[self.reader.pos:])
        self.reader = FrameReader()
        while len(out) < n:
            if self.eof:
                raise ConnectionClosed("EOF after %d of %d bytes" % (len(out), n))
            data = self._recv_some(deadline, "%d bytes (have %d)" % (n, len(out)))
            out += data
        if len(out) > n:
            self.reader.feed(out[n:])
        return bytes(out[:n])

    def expect_eof(self, timeout=None, allow_data=False, allow_reset=False):
        """Waits for the server to close. Returns the bytes received before the
        close (only allowed when allow_data). A reset counts as a close only
        when allow_reset."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        got = bytearray(self.reader.buf[self.reader.pos:])
        self.reader = FrameReader()
        while not self.eof:
            try:
                data = self._recv_some(deadline, "EOF")
            except ConnectionClosed:
                if allow_reset:
                    break
                raise
            got += data
            if got and not allow_data:
                raise ProtocolError("expected EOF, got %d bytes: %r" % (len(got), bytes(got[:64])))
        return bytes(got)

    def quiet(self, seconds):
        """True if nothing (not even EOF) arrives within seconds. Used to assert
        the absence of a premature reply, never to synchronise."""
        if self.reader.pending():
            return False
        r, _, _ = select.select([self.sock], [], [], seconds)
        return not r

    # --- closing -----------------------------------------------------------
    def close(self):
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    def close_rst(self):
        """Closes with SO_LINGER {1, 0}: the kernel sends RST, not FIN."""
        if not self.closed:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close()


def is_conn_error(e):
    return isinstance(e, (ConnectionError, ConnectionClosed)) or \
        (isinstance(e, OSError) and e.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNREFUSED))
