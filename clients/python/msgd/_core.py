"""The state both clients share: one connection's frame decoder, its queue of
requests owed a reply (matched in order, PROTOCOL.md rule 1), compression,
server PINGs, pushes, GOAWAY and the heartbeat's bookkeeping. No I/O: the
clients feed it bytes and write what it returns."""

import collections
import time

from . import protocol as p
from .errors import (ConnectionLost, ProtocolError, error_from_reply)


class Message(collections.namedtuple("Message", "topic data")):
    """A MESSAGE push: topic (str; the bytes are in topic_bytes) and data
    (bytes)."""
    __slots__ = ()

    @property
    def topic_bytes(self):
        return self.topic.encode("utf-8", "surrogateescape")


class Delivery(collections.namedtuple("Delivery", "sender data")):
    """A DELIVER push: sender (str, or None when the sender has no identity)
    and data (bytes)."""
    __slots__ = ()


class Push(collections.namedtuple("Push", "command data")):
    """A push this client has no name for (a module's), as command word and
    payload."""
    __slots__ = ()


def _text(b):
    return b.decode("utf-8", "surrogateescape")


def identity(payload):
    return payload


class Request:
    """One request owed a reply. decode(payload) makes the value; internal
    requests (heartbeat PINGs) are answered silently."""

    __slots__ = ("cmd", "decode", "internal", "done", "value", "error", "waiter")

    def __init__(self, cmd, decode=identity, internal=False):
        self.cmd = cmd
        self.decode = decode
        self.internal = internal
        self.done = False
        self.value = None
        self.error = None
        self.waiter = None      # the async client's future


def _copy_error(e):
    try:
        return type(e)(e.text)
    except Exception:
        return e


class Core:
    """One connection's protocol state. The owner sets the callbacks:
    on_done(request), on_push(obj), on_goaway(ms, reason)."""

    def __init__(self, max_frame=p.DEFAULT_MAX_FRAME, compress_min=256,
                 on_done=None, on_push=None, on_goaway=None, clock=time.monotonic):
        self.decoder = p.FrameDecoder(max_frame)
        self.max_frame = max_frame
        self.pending = collections.deque()
        self.codec = None
        self.compress_min = compress_min
        self.on_done = on_done or (lambda r: None)
        self.on_push = on_push or (lambda o: None)
        self.on_goaway = on_goaway or (lambda ms, reason: None)
        self.clock = clock
        self.last_rx = clock()
        self.heartbeat_owed = False
        self.goaway = None              # (ms, reason) once GOAWAY arrived
        self.conn_error = None          # the connection-level error, once it arrived
        self.pings_answered = 0
        self.dropped = 0                # frames that fit nothing, malformed pushes
        self.bytes_in = 0

    # ---- out ---------------------------------------------------------------------
    def encode(self, cmd, payload):
        """The frame for a request (compressed when a codec was agreed, the
        payload is at least compress_min bytes and it gets smaller)."""
        if self.codec is not None and len(payload) >= self.compress_min:
            z = self.codec.compress(payload)
            if len(z) < len(payload):
                return p.encode_frame(cmd | p.COMPRESSED, z)
        return p.encode_frame(cmd, payload)

    def request(self, cmd, payload=b"", decode=identity, internal=False):
        """Queues a request as owed; returns (Request, frame bytes to send)."""
        r = Request(cmd, decode, internal)
        frame = self.encode(cmd, payload)
        self.pending.append(r)
        if internal:
            self.heartbeat_owed = True
        return r, frame

    def heartbeat_ping(self):
        """A heartbeat PING's frame (its reply is swallowed)."""
        return self.request(p.PING, b"hb", internal=True)[1]

    # ---- in ------------------------------------------------------------------------
    def receive(self, data):
        """Handles bytes from the server; returns bytes to send back (answers
        to server PINGs), possibly empty. Raises ProtocolError when the
        framing is broken (the connection must then be dropped)."""
        self.last_rx = self.clock()
        self.bytes_in += len(data)
        try:
            frames = self.decoder.feed(data)
        except p.ProtocolError as e:
            raise ProtocolError("the server broke the framing: %s" % e)
        out = b""
        for cmd, payload in frames:
            if cmd & p.COMPRESSED:
                try:
                    payload = self._decompress(cmd, payload)
                except ProtocolError as e:
                    if cmd & p.REPLY and not cmd & p.ERROR and self.pending:
                        self._finish(self.pending.popleft(), None, e)
                    else:
                        self.dropped += 1
                    continue
                cmd &= ~p.COMPRESSED
            if cmd & p.REPLY:
                self._reply(cmd, payload)
            elif cmd == p.PING:
                out += p.encode_frame(p.REPLY | p.PING, payload)
                self.pings_answered += 1
            elif cmd == p.MESSAGE:
                try:
                    topic, body = p.decode_message(payload)
                except p.ProtocolError:
                    self.dropped += 1
                    continue
                self.on_push(Message(_text(topic), body))
            elif cmd == p.DELIVER:
                try:
                    sender, body = p.decode_deliver(payload)
                except p.ProtocolError:
                    self.dropped += 1
                    continue
                self.on_push(Delivery(_text(sender) if sender else None, body))
            elif cmd == p.GOAWAY:
                self.goaway = p.decode_goaway(payload)
                self.on_goaway(*self.goaway)
            else:
                self.on_push(Push(cmd, payload))
        return out

    def _decompress(self, cmd, payload):
        if self.codec is None:
            raise ProtocolError("%s has COMPRESSED set but no codec was agreed"
                                % p.command_name(cmd))
        try:
            return self.codec.decompress(payload, self.max_frame)
        except p.ProtocolError as e:
            raise ProtocolError("%s: %s" % (p.command_name(cmd), e))

    def _reply(self, cmd, payload):
        if cmd == p.CONN_ERROR:
            try:
                code, text = p.decode_error(payload)
            except p.ProtocolError:
                code, text = 0, repr(payload)
            head = self.pending[0] if self.pending else None
            if code == 1 and head is not None and head.cmd & p.CMD_MASK == 0:
                # UNKNOWN_COMMAND to a request with command 0: an ordinary
                # error reply, never connection-level (rule 4).
                self._finish(self.pending.popleft(), None,
                             error_from_reply(code, text, 0))
                return
            err = error_from_reply(code, text, 0, connection_level=True)
            self.conn_error = err
            if head is not None:
                # the request that caused it (or the oldest unanswered one)
                r = self.pending.popleft()
                self._finish(r, None, error_from_reply(code, text, r.cmd & p.CMD_MASK,
                                                       connection_level=True))
            return
        if not self.pending:
            self.dropped += 1          # a reply nobody asked for
            return
        r = self.pending.popleft()
        num = cmd & p.CMD_MASK
        if num != r.cmd & p.CMD_MASK:
            self._finish(r, None, ProtocolError(
                "reply %s to a %s request: the replies are out of step"
                % (p.command_name(cmd), p.command_name(r.cmd))))
            return
        if cmd & p.ERROR:
            try:
                code, text = p.decode_error(payload)
            except p.ProtocolError as e:
                self._finish(r, None, ProtocolError(str(e)))
                return
            self._finish(r, None, error_from_reply(code, text, num))
            return
        try:
            value = r.decode(payload)
        except p.ProtocolError as e:
            self._finish(r, None, ProtocolError("%s: %s" % (p.command_name(r.cmd), e)))
            return
        self._finish(r, value, None)

    def _finish(self, r, value, error):
        r.done = True
        r.value = value
        r.error = error
        if r.internal:
            self.heartbeat_owed = False
            return
        self.on_done(r)

    def fail_all(self, error):
        """The connection is gone: every request still owed a reply gets
        error (a ConnectionLost)."""
        self.heartbeat_owed = False
        first = True
        while self.pending:
            # one exception object per request: each caller gets its own traceback
            e = error if first else _copy_error(error)
            first = False
            self._finish(self.pending.popleft(), None, e)

    def loss_error(self, what):
        """The ConnectionLost for a connection that ended (noting the
        connection-level error or GOAWAY that came before)."""
        if self.conn_error is not None:
            return ConnectionLost("%s after %s" % (what, self.conn_error))
        if self.goaway is not None:
            return ConnectionLost("%s after GOAWAY (%s)" % (what, self.goaway[1] or "no reason"))
        return ConnectionLost(what)
