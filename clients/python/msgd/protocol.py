"""The msg protocol, version 1 (docs/PROTOCOL.md): frames, payload layouts,
HELLO text, and the compression codecs. No I/O here: both clients use it.

Every function takes and returns bytes; a topic or identity may be given as
str (encoded as UTF-8) or bytes.
"""

import struct
import zlib

MAGIC = 0x4D534750          # the ASCII bytes "MSGP"
VERSION = 1
HEADER = struct.Struct(">IIII")
HEADER_SIZE = HEADER.size   # 16

REPLY = 0x80000000
ERROR = 0x40000000
COMPRESSED = 0x20000000
CMD_MASK = 0x1FFFFFFF
CONN_ERROR = REPLY | ERROR  # 0xC0000000: connection-level error, then close

# Command numbers.
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
FIRST_MODULE_COMMAND = 1024

COMMAND_NAMES = {
    0: "CONNECTION", PING: "PING", ECHO: "ECHO", AUTH: "AUTH", STATS: "STATS",
    DELAY: "DELAY", HELLO: "HELLO", SUBSCRIBE: "SUBSCRIBE", UNSUBSCRIBE: "UNSUBSCRIBE",
    PUBLISH: "PUBLISH", MESSAGE: "MESSAGE", GOAWAY: "GOAWAY", DIRECT: "DIRECT",
    DELIVER: "DELIVER",
}

# The largest payload a client accepts unless told otherwise (the server's own
# max_frame is at most 256 MiB).
DEFAULT_MAX_FRAME = 256 * 1024 * 1024
PING_MAX = 1024             # a PING payload is at most 1 KiB
NAME_MAX = 255              # topics and identities: 1..255 bytes

_U32 = struct.Struct(">I")
_U32X2 = struct.Struct(">II")


class ProtocolError(Exception):
    """The peer broke the wire format (bad magic, bad version, a frame over
    the limit, a payload that does not fit its command)."""


def command_name(cmd):
    """'PING', 'REPLY|ERROR|ECHO', 'CONNECTION_ERROR', or the number."""
    if cmd == CONN_ERROR:
        return "CONNECTION_ERROR"
    num = cmd & CMD_MASK
    parts = [name for bit, name in ((REPLY, "REPLY"), (ERROR, "ERROR"),
                                    (COMPRESSED, "COMPRESSED")) if cmd & bit]
    parts.append(COMMAND_NAMES.get(num, str(num)))
    return "|".join(parts)


def to_bytes(value, what="value"):
    """str (UTF-8) or a bytes-like object -> bytes."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError("%s must be str or bytes, not %s" % (what, type(value).__name__))


def _name(value, what):
    b = to_bytes(value, what)
    if not 1 <= len(b) <= NAME_MAX:
        raise ValueError("%s must be 1..%d bytes, not %d" % (what, NAME_MAX, len(b)))
    return b


def topic_keys(topics):
    """Topics (str or bytes) -> a list of bytes, each checked to be 1..255
    bytes; ValueError for none at all."""
    if not topics:
        raise ValueError("subscribe needs at least one topic")
    return [_name(t, "topic") for t in topics]


def u32(n):
    return _U32.pack(n)


# ---- frames ---------------------------------------------------------------------

def encode_frame(cmd, payload=b""):
    """One frame: the 16-byte header, then payload."""
    return HEADER.pack(MAGIC, VERSION, cmd, len(payload)) + payload


def reply_command(cmd):
    return REPLY | (cmd & CMD_MASK)


def error_command(cmd):
    return REPLY | ERROR | (cmd & CMD_MASK)


class FrameDecoder:
    """Turns a byte stream into frames, whatever the read boundaries (half
    and sticky packets). feed() returns the whole frames it completed, as
    (command word, payload bytes). A bad magic, a bad version or a length
    over max_frame raises ProtocolError; nothing is allocated for such a
    payload."""

    __slots__ = ("max_frame", "_buf")

    def __init__(self, max_frame=DEFAULT_MAX_FRAME):
        self.max_frame = max_frame
        self._buf = bytearray()

    def buffered(self):
        return len(self._buf)

    def feed(self, data):
        buf = self._buf
        buf += data
        out = []
        pos = 0
        end = len(buf)
        unpack = HEADER.unpack_from
        while end - pos >= HEADER_SIZE:
            magic, version, cmd, length = unpack(buf, pos)
            if magic != MAGIC:
                raise ProtocolError("bad magic 0x%08X (want 0x%08X)" % (magic, MAGIC))
            if version != VERSION:
                raise ProtocolError("bad version %d (want %d)" % (version, VERSION))
            if length > self.max_frame:
                raise ProtocolError("frame of %d bytes is over the limit of %d"
                                    % (length, self.max_frame))
            stop = pos + HEADER_SIZE + length
            if stop > end:
                break
            out.append((cmd, bytes(buf[pos + HEADER_SIZE:stop])))
            pos = stop
        if pos:
            del buf[:pos]
        return out


# ---- payloads -----------------------------------------------------------------------

def encode_error(code, text=""):
    return _U32.pack(code) + text.encode("utf-8")


def decode_error(payload):
    """(code, text) of an error payload (u32 code, UTF-8 text)."""
    if len(payload) < 4:
        raise ProtocolError("error payload of %d bytes (want at least 4)" % len(payload))
    (code,) = _U32.unpack_from(payload)
    return code, payload[4:].decode("utf-8", "replace")


def encode_publish(topic, data=b""):
    """PUBLISH: u8 topic length, topic, message bytes."""
    t = _name(topic, "topic")
    return bytes((len(t),)) + t + to_bytes(data, "data")


def encode_direct(identity, data=b""):
    """DIRECT: u8 identity length, identity, message bytes."""
    i = _name(identity, "identity")
    return bytes((len(i),)) + i + to_bytes(data, "data")


def encode_delay(ms, data=b""):
    """DELAY: u32 milliseconds, then the bytes to send back."""
    return _U32.pack(ms) + to_bytes(data, "data")


def _split_keyed(payload, what, allow_empty):
    if not payload:
        raise ProtocolError("%s with an empty payload" % what)
    n = payload[0]
    if n + 1 > len(payload) or (n == 0 and not allow_empty):
        raise ProtocolError("%s key length %d does not fit its %d-byte payload"
                            % (what, n, len(payload)))
    return payload[1:1 + n], payload[1 + n:]


def decode_message(payload):
    """MESSAGE push -> (topic bytes, data bytes)."""
    return _split_keyed(payload, "MESSAGE", False)


def decode_deliver(payload):
    """DELIVER push -> (sender bytes, empty when the sender has no identity;
    data bytes)."""
    return _split_keyed(payload, "DELIVER", True)


def decode_goaway(payload):
    """GOAWAY push -> (milliseconds until the server closes, reason text)."""
    if len(payload) < 4:
        return 0, ""
    return _U32.unpack_from(payload)[0], payload[4:].decode("utf-8", "replace")


def decode_u32(payload, what="reply"):
    if len(payload) != 4:
        raise ProtocolError("%s of %d bytes (want a u32)" % (what, len(payload)))
    return _U32.unpack(payload)[0]


def decode_direct_reply(payload):
    """DIRECT's reply -> (connections on this node, other nodes)."""
    if len(payload) != 8:
        raise ProtocolError("DIRECT reply of %d bytes (want 8)" % len(payload))
    return _U32X2.unpack(payload)


def parse_stats(payload):
    """STATS text -> {name: int, float or str}."""
    out = {}
    for line in payload.decode("utf-8", "replace").split("\n"):
        if not line:
            continue
        name, _, value = line.partition(" ")
        for conv in (int, float):
            try:
                out[name] = conv(value)
                break
            except ValueError:
                continue
        else:
            out[name] = value
    return out


def encode_hello(fields):
    """HELLO request: one key=value per line. fields: dict (str -> str, int
    or a list, joined with commas)."""
    lines = []
    for k, v in fields.items():
        if isinstance(v, (list, tuple)):
            v = ",".join(str(x) for x in v)
        k, v = str(k), str(v)
        if "=" in k or "\n" in k or "\n" in v or not k:
            raise ValueError("bad HELLO field %r=%r" % (k, v))
        lines.append("%s=%s" % (k, v))
    return "\n".join(lines).encode("utf-8")


def parse_hello(payload):
    """HELLO reply -> {key: str}; lines without '=' are ignored."""
    out = {}
    for line in payload.decode("utf-8", "replace").split("\n"):
        k, eq, v = line.partition("=")
        if eq and k:
            out[k] = v
    return out


# ---- compression ------------------------------------------------------------------

class DecompressionError(ProtocolError):
    """A compressed payload that does not decompress, or that would pass the
    size limit."""


class Deflate:
    """'deflate': one complete zlib stream (RFC 1950), from the stdlib."""

    name = "deflate"

    def __init__(self, level=6):
        self.level = level

    def compress(self, data):
        return zlib.compress(data, self.level)

    def decompress(self, data, limit):
        """The decompressed bytes, never producing more than limit of them
        (DecompressionError when there would be more, or the stream is not
        one complete zlib stream)."""
        d = zlib.decompressobj()
        try:
            out = d.decompress(data, limit + 1)
        except zlib.error as e:
            raise DecompressionError("deflate: %s" % e)
        if len(out) > limit or d.unconsumed_tail:
            raise DecompressionError("deflate: decompresses past the limit of %d bytes" % limit)
        if not d.eof:
            raise DecompressionError("deflate: not a complete zlib stream")
        if d.unused_data:
            raise DecompressionError("deflate: %d bytes after the end of the stream"
                                     % len(d.unused_data))
        return out


class Zstd:
    """'zstd': one complete zstd frame (RFC 8878), through the optional
    zstandard package."""

    name = "zstd"

    def __init__(self, level=3):
        import zstandard  # ImportError when it is not installed
        self._zstd = zstandard
        self._c = zstandard.ZstdCompressor(level=level)
        self._d = zstandard.ZstdDecompressor()

    def compress(self, data):
        return self._c.compress(data)

    def decompress(self, data, limit):
        z = self._zstd
        try:
            params = z.get_frame_parameters(data)
        except z.ZstdError as e:
            raise DecompressionError("zstd: %s" % e)
        size = params.content_size
        if size not in (0, getattr(z, "CONTENTSIZE_UNKNOWN", -1)) and size > limit:
            raise DecompressionError("zstd: the frame says %d bytes, over the limit of %d"
                                     % (size, limit))
        try:
            # First pass: bounded reads, so that a bomb never produces more
            # than limit + one chunk.
            reader = self._d.stream_reader(data)
            total = 0
            while True:
                chunk = reader.read(min(65536, limit + 1 - total) or 1)
                if not chunk:
                    break
                total += len(chunk)
                if total > limit:
                    raise DecompressionError("zstd: decompresses past the limit of %d bytes"
                                             % limit)
            # Second pass, now known to stay within limit: one complete frame,
            # nothing after it.
            dobj = self._d.decompressobj()
            out = dobj.decompress(data)
        except z.ZstdError as e:
            raise DecompressionError("zstd: %s" % e)
        if not getattr(dobj, "eof", True):
            raise DecompressionError("zstd: not a complete zstd frame")
        if getattr(dobj, "unused_data", b""):
            raise DecompressionError("zstd: bytes after the end of the frame")
        return out


def zstd_available():
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True


def available_codecs():
    """The codecs this installation can use, best first."""
    return (["zstd"] if zstd_available() else []) + ["deflate"]


def make_codec(name):
    """A codec object by name ('zstd' or 'deflate'). ValueError for an unknown
    name; ImportError (with the package to install) for zstd without
    zstandard."""
    if name == "deflate":
        return Deflate()
    if name == "zstd":
        try:
            return Zstd()
        except ImportError:
            raise ImportError("zstd compression needs the zstandard package "
                              "(pip install zstandard, or Debian's python3-zstandard)")
    raise ValueError("unknown codec %r (known: zstd, deflate)" % (name,))


def full_jitter(attempt, initial, maximum, rand):
    """The wait before reconnect attempt `attempt` (0 = the first): uniform in
    [0, min(maximum, initial * 2**attempt)] ("full jitter"). rand() is a
    random float in [0, 1)."""
    cap = min(maximum, initial * (2 ** min(attempt, 62)))
    return cap * rand()
