"""msgd.Client: the blocking client.

One Client is one connection at a time, used from one thread at a time (like
a socket): guard it with a lock, or give each thread its own. All I/O happens
inside the calls: while a call waits it also answers the server's PINGs,
queues pushes, sends its own heartbeat PING to a silent server and declares
it dead after dead_after seconds without a byte.
"""

import collections
import errno
import select
import socket
import ssl as _ssl
import time

from . import protocol as p
from ._core import Core, Delivery, Message, Push, identity
from ._options import Options, apply_hello
from .errors import (AuthFailed, ClientClosed, ClientError, ConnectFailed, ConnectionLost,
                     MsgdError, ProtocolError, ServerDead, Timeout, TlsError, UnknownCommand,
                     tls_error)

_DEFAULT = object()
_READ_SIZE = 256 * 1024
_POLLIN = select.POLLIN | select.POLLPRI
_POLLERR = select.POLLHUP | select.POLLERR | select.POLLNVAL


def _none(payload):
    return None


def _publish_reply(payload):
    return p.decode_u32(payload, "PUBLISH reply")


class Subscription:
    """The MESSAGEs of some topics. Iterate it (blocking, reconnecting and
    re-subscribing as needed), or get(timeout) one at a time. unsubscribe()
    (or leaving its with block) ends it."""

    def __init__(self, client, topics):
        self._client = client
        self.topics = tuple(topics)         # bytes
        self._queue = collections.deque()
        self.dropped = 0                    # messages dropped: the queue was full
        self.active = True

    def __iter__(self):
        return self

    def __next__(self):
        if not self.active:
            raise StopIteration
        return self._client._next_push(self._queue, None)

    def get(self, timeout=None):
        """The next message, or None when none came within timeout seconds
        (None: wait for ever)."""
        return self._client._next_push(self._queue, timeout)

    def unsubscribe(self):
        if self.active:
            self._client._drop_subscription(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._client._sock is not None:
            self.unsubscribe()
        else:
            self.active = False
            self._client._forget_subscription(self)


class Pipeline:
    """Requests sent together and answered in order. Queue them with the
    same methods as Client (each returns the pipeline), then execute()
    sends them all at once and returns their results in order."""

    def __init__(self, client):
        self._client = client
        self._items = []

    def __len__(self):
        return len(self._items)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._items = []

    def call(self, cmd, payload=b"", decode=identity):
        self._items.append((cmd, p.to_bytes(payload, "payload"), decode))
        return self

    def ping(self, payload=b""):
        return self.call(p.PING, payload)

    def echo(self, payload):
        return self.call(p.ECHO, payload)

    def stats(self):
        return self.call(p.STATS, b"", p.parse_stats)

    def publish(self, topic, data):
        return self.call(p.PUBLISH, p.encode_publish(topic, data), _publish_reply)

    def send(self, identity_, data):
        return self.call(p.DIRECT, p.encode_direct(identity_, data), p.decode_direct_reply)

    def execute(self, raise_on_error=True, timeout=_DEFAULT):
        """Sends every queued request, then waits for each reply (timeout
        applies to each wait). Returns the list of results; with
        raise_on_error, the first error is raised once every reply is in,
        else errors stand in the list in their request's place."""
        items, self._items = self._items, []
        reqs = self._client._submit_many(items)
        results = []
        first = None
        for r in reqs:
            try:
                results.append(self._client._wait(r, timeout))
            except MsgdError as e:
                if isinstance(e, ConnectionLost) and raise_on_error:
                    raise
                results.append(e)
                first = first or e
        if first is not None and raise_on_error:
            raise first
        return results


class Client:
    """A blocking msgd client. See the package README for the arguments."""

    def __init__(self, host="127.0.0.1", port=7700, **kw):
        self._o = Options(host, port, **kw)
        self._sock = None
        self._poll = None
        self._pollmask = 0
        self._core = None
        self._out = bytearray()
        self._closed = False
        self._ever_connected = False
        self._unproven = 0              # reconnects in a row that heard nothing
        self._token = self._o.token
        self._topics = {}               # topic bytes -> [Subscription...] ([] : raw)
        self._messages = collections.deque()
        self._deliveries = collections.deque()
        self._pushes = collections.deque()
        self._hb = 0.0
        self._dead = 0.0
        self.hello_info = None          # the server's HELLO fields, or None
        self.last_error = None          # why the last connection ended
        self.reconnects = 0
        self.dropped_pushes = 0         # pushes dropped because a queue was full
        self.goaway = None              # (ms, reason) of the last GOAWAY received

    # ---- connection -------------------------------------------------------------
    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "<msgd.Client %s %s>" % (self._o.target(),
                                        "connected" if self._sock else "not connected")

    @property
    def connected(self):
        return self._sock is not None

    @property
    def compression(self):
        """The codec agreed by HELLO ('zstd', 'deflate') or None."""
        return self._core.codec.name if self._core and self._core.codec else None

    @property
    def pings_answered(self):
        return self._core.pings_answered if self._core else 0

    def connect(self):
        """Connects now (one attempt; a later lost connection is reconnected
        with back-off when reconnect is on). Raises ConnectFailed."""
        if self._closed:
            raise ClientClosed("the client is closed")
        if self._sock is None:
            self._open()
        return self

    def close(self):
        """Closes the connection; requests still owed a reply raise
        ConnectionLost. The client cannot be used again."""
        self._closed = True
        if self._sock is not None:
            self._drop(ConnectionLost("the client was closed"))

    def _open(self):
        o = self._o
        sock = None
        try:
            if o.unix_path:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(o.connect_timeout)
                sock.connect(o.unix_path)
            else:
                sock = socket.create_connection((o.host, o.port), timeout=o.connect_timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if o.ssl is not None:
                sock = o.ssl.wrap_socket(sock, server_hostname=o.server_hostname)
            sock.setblocking(False)
        except _ssl.SSLError as e:
            if sock is not None:
                sock.close()
            raise tls_error(o.target(), e) from e
        except (OSError, ValueError) as e:
            if sock is not None:
                sock.close()
            raise ConnectFailed("connect %s: %s" % (o.target(), e)) from e
        self._sock = sock
        self._poll = select.poll()
        self._pollmask = _POLLIN
        self._poll.register(sock, _POLLIN)
        self._out = bytearray()
        self._core = Core(o.max_frame, o.compress_min, on_push=self._on_push,
                          on_goaway=self._on_goaway)
        self.hello_info = None
        try:
            self._handshake()
        except BaseException:
            if self._sock is not None:
                self._drop(ConnectionLost("handshake failed"))
            raise
        self._ever_connected = True

    def _handshake(self):
        """HELLO (when asked for), AUTH (with a token), SUBSCRIBE (each topic
        held), pipelined, on a fresh connection."""
        o, core = self._o, self._core
        reqs = []
        hello = None
        if o.hello:
            hello = self._queue(p.HELLO, p.encode_hello(o.hello_fields()),
                                lambda pl: apply_hello(core, o, pl))
        if self._token is not None:
            reqs.append(self._queue(p.AUTH, self._token, _none))
        for topic in self._topics:
            reqs.append(self._queue(p.SUBSCRIBE, topic, _none))
        wait = (o.connect_timeout or 0) + (o.timeout or 0) or None
        if hello is not None:
            try:
                self.hello_info = self._wait(hello, wait)
            except UnknownCommand:
                self.hello_info = None      # a server without HELLO: plain protocol
        for r in reqs:
            self._wait(r, wait)
        self._hb, self._dead = o.intervals(self.hello_info)

    def _drop(self, error):
        """Ends the connection: closes the socket; every request owed a reply
        gets error."""
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        self._poll = None
        self._out = bytearray()
        self.last_error = error
        if self._core is not None:
            if self._core.bytes_in:
                self._unproven = 0
            self._core.fail_all(error)

    def _reconnect(self):
        """Connects again: attempt i waits a random time in [0, min(backoff_max,
        backoff_initial * 2**i)] first (full jitter). AUTH and SUBSCRIBE are
        repeated. A wrong token is not retried."""
        o = self._o
        # A connection that never heard a byte from the server (it accepts
        # and stays silent) counts as a failed attempt, so a dead server
        # cannot keep the client reconnecting for ever.
        attempt = self._unproven
        last = self.last_error
        while o.reconnect_attempts is None or attempt < o.reconnect_attempts:
            if self._closed:
                raise ClientClosed("the client is closed")
            time.sleep(o.backoff(attempt))
            try:
                self._open()
                self.reconnects += 1
                self._unproven = 0 if self._core.bytes_in else attempt + 1
                return
            except AuthFailed:
                raise
            except TlsError as e:
                if e.verify_failed:
                    raise
                last = e
            except (ConnectionLost, Timeout, ProtocolError) as e:
                last = e
            attempt += 1
        self._unproven = 0
        raise ConnectFailed("gave up reconnecting to %s after %d attempts; last: %s"
                            % (o.target(), attempt, last))

    def _ensure_connected(self):
        if self._closed:
            raise ClientClosed("the client is closed")
        if self._sock is not None:
            self._poll_now()
        if self._sock is not None and self._core.conn_error is not None:
            # The server closes after a connection-level error and answers
            # nothing more: no new request goes out on it, even before its
            # close arrives (which TLS can delay).
            self._drop(self._core.loss_error("left the connection"))
        if self._sock is not None and self._core.goaway is not None:
            # Going away: collect what the old connection still owes, then move.
            try:
                self._pump(lambda: not self._core.pending, self._deadline(_DEFAULT))
            except (ConnectionLost, Timeout):
                pass
            if self._sock is not None:
                self._drop(ConnectionLost("left the connection after GOAWAY"))
        if self._sock is None:
            if not self._ever_connected:
                self._open()
            elif not self._o.reconnect:
                raise ConnectionLost("not connected (reconnect is off); the connection ended: %s"
                                     % (self.last_error,))
            else:
                self._reconnect()

    # ---- I/O ------------------------------------------------------------------------
    def _deadline(self, timeout):
        if timeout is _DEFAULT:
            timeout = self._o.timeout
        return None if timeout is None else time.monotonic() + timeout

    def _queue(self, cmd, payload, decode):
        r, frame = self._core.request(cmd, payload, decode)
        self._out += frame
        return r

    def _submit_many(self, items):
        self._ensure_connected()
        return [self._queue(cmd, payload, decode) for cmd, payload, decode in items]

    def _wait(self, r, timeout=_DEFAULT):
        if not r.done:
            deadline = self._deadline(timeout)
            try:
                self._pump(lambda: r.done, deadline)
            except Timeout:
                raise Timeout("no reply to %s within %.3gs"
                              % (p.command_name(r.cmd),
                                 self._o.timeout if timeout is _DEFAULT else timeout))
        if r.error is not None:
            raise r.error
        return r.value

    def _poll_now(self):
        """Handles whatever has arrived already, without waiting."""
        try:
            self._step(0)
        except ConnectionLost:
            pass

    def _pump(self, cond, deadline):
        """I/O until cond() holds. Raises Timeout at deadline (None: none),
        or ConnectionLost / ServerDead when the connection ends first."""
        while not cond():
            if self._sock is None:
                raise self.last_error or ConnectionLost("not connected")
            now = time.monotonic()
            wait = None
            if deadline is not None:
                wait = deadline - now
                if wait <= 0:
                    raise Timeout("timed out")
            if self._hb:
                core = self._core
                silent = now - core.last_rx
                if silent >= self._dead:
                    err = ServerDead("%s sent nothing for %.3gs (dead_after %.3gs): "
                                     "connection dropped" % (self._o.target(), silent,
                                                             self._dead))
                    self._drop(err)
                    if cond():
                        return
                    raise err
                if silent >= self._hb and not core.heartbeat_owed:
                    self._out += core.heartbeat_ping()
                due = core.last_rx + (self._dead if core.heartbeat_owed else self._hb) - now
                wait = due if wait is None else min(wait, due)
            try:
                self._step(wait)
            except ConnectionLost:
                if cond():
                    return
                raise

    def _step(self, wait):
        """Writes what the socket takes, waits up to wait seconds (None: no
        limit) for it, reads once."""
        sock = self._sock
        if self._out:
            self._write()
            if self._sock is None:
                raise self.last_error
        want = _POLLIN | (select.POLLOUT if self._out else 0)
        if want != self._pollmask:
            self._poll.modify(sock, want)
            self._pollmask = want
        if self._o.ssl is not None and sock.pending():
            self._read()
            return
        try:
            events = self._poll.poll(None if wait is None else max(0, int(wait * 1000 + 0.999)))
        except InterruptedError:
            return
        for _fd, ev in events:
            if ev & select.POLLOUT:
                self._write()
                if self._sock is None:
                    raise self.last_error
            if ev & (_POLLIN | _POLLERR):
                self._read()

    def _write(self):
        try:
            while self._out:
                n = self._sock.send(self._out)
                if n <= 0:
                    break
                del self._out[:n]
        except (BlockingIOError, InterruptedError, _ssl.SSLWantWriteError,
                _ssl.SSLWantReadError):
            return
        except OSError as e:
            # The read side tells why (and reads what the server sent first).
            self._out = bytearray()
            try:
                self._read()
            except ConnectionLost:
                raise
            self._drop(self._core.loss_error("write: %s" % e))
            raise self.last_error

    def _read(self):
        try:
            data = self._sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError, _ssl.SSLWantReadError,
                _ssl.SSLWantWriteError):
            return
        except OSError as e:
            self._drop(self._core.loss_error("read: %s" % (
                "connection reset" if e.errno == errno.ECONNRESET else e)))
            raise self.last_error
        if not data:
            self._drop(self._core.loss_error("the server closed the connection"))
            raise self.last_error
        try:
            answer = self._core.receive(data)
        except ProtocolError as e:
            self._drop(ConnectionLost(str(e)))
            raise self.last_error
        if answer:
            self._out += answer

    # ---- pushes ---------------------------------------------------------------------
    def _enqueue(self, q, obj):
        if len(q) >= self._o.max_queued_pushes:
            self.dropped_pushes += 1
            return False
        q.append(obj)
        return True

    def _on_push(self, obj):
        if type(obj) is Message:
            subs = self._topics.get(obj.topic_bytes)
            if subs:
                for s in subs:
                    if not self._enqueue(s._queue, obj):
                        s.dropped += 1
                return
            self._enqueue(self._messages, obj)
        elif type(obj) is Delivery:
            self._enqueue(self._deliveries, obj)
        else:
            self._enqueue(self._pushes, obj)

    def _leaving(self):
        """Gone, or going away with nothing owed: time to reconnect."""
        return self._sock is None or (self._core.goaway is not None and not self._core.pending)

    def _on_goaway(self, ms, reason):
        self.goaway = (ms, reason)

    def _next_push(self, q, timeout):
        """The next push from q, waiting up to timeout (None: for ever) while
        reconnecting as needed; None on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if q:
                return q.popleft()
            if self._closed:
                raise ClientClosed("the client is closed")
            if self._leaving():
                self._ensure_connected()
                continue
            try:
                self._pump(lambda: bool(q) or self._leaving(), deadline)
            except Timeout:
                return q.popleft() if q else None
            except ConnectionLost:
                if not self._o.reconnect:
                    raise

    def next_message(self, timeout=None):
        """The next MESSAGE of a topic subscribed without a Subscription
        (through call()), or None after timeout seconds."""
        return self._next_push(self._messages, timeout)

    def next_delivery(self, timeout=None):
        """The next DELIVER (a Delivery), or None after timeout seconds."""
        return self._next_push(self._deliveries, timeout)

    def next_push(self, timeout=None):
        """The next push of a command this client has no name for (a
        module's), as Push(command, data), or None after timeout seconds."""
        return self._next_push(self._pushes, timeout)

    def deliveries(self):
        """Iterates DELIVERs for ever (reconnecting as needed)."""
        while True:
            yield self._next_push(self._deliveries, None)

    # ---- requests ---------------------------------------------------------------------
    def pipeline(self):
        """A Pipeline: many requests in flight, answered in order."""
        return Pipeline(self)

    def call(self, cmd, payload=b"", timeout=_DEFAULT):
        """Any request: returns the reply's payload, raises the error reply's
        MsgdError subclass."""
        return self._call(cmd, p.to_bytes(payload, "payload"), identity, timeout)

    def _call(self, cmd, payload, decode, timeout=_DEFAULT):
        if cmd & (p.REPLY | p.ERROR) or not 0 <= cmd <= 0xFFFFFFFF:
            raise ValueError("0x%08X is not a request command" % cmd)
        self._ensure_connected()
        r = self._queue(cmd, payload, decode)
        return self._wait(r, timeout)

    def ping(self, payload=b"", timeout=_DEFAULT):
        """PING: returns the payload the server sent back."""
        return self._call(p.PING, p.to_bytes(payload, "payload"), identity, timeout)

    def echo(self, payload, timeout=_DEFAULT):
        return self._call(p.ECHO, p.to_bytes(payload, "payload"), identity, timeout)

    def stats(self, timeout=_DEFAULT):
        """STATS as a dict of name -> int, float or str."""
        return self._call(p.STATS, b"", p.parse_stats, timeout)

    def delay(self, ms, payload=b"", timeout=_DEFAULT):
        """DELAY (a diagnostic worker job, DISABLED unless switched on)."""
        return self._call(p.DELAY, p.encode_delay(ms, payload), identity, timeout)

    def auth(self, token, timeout=_DEFAULT):
        """AUTH; on success the token is kept and sent again after each
        reconnect."""
        token = p.to_bytes(token, "token")
        self._call(p.AUTH, token, _none, timeout)
        self._token = token

    def hello(self, compress=None, timeout=_DEFAULT, **fields):
        """HELLO on this connection (at most once per connection): offers the
        codecs in compress (names, best first; True: every codec available
        here) and returns the server's fields. The codec chosen compresses
        from then on; later reconnects send the same HELLO."""
        o = self._o
        if compress is not None:
            o.compress = Options(compress=compress).compress
        o.hello = True
        f = o.hello_fields()
        f.update(fields)
        self._ensure_connected()
        core = self._core
        info = self._call(p.HELLO, p.encode_hello(f), lambda pl: apply_hello(core, o, pl),
                          timeout)
        self.hello_info = info
        self._hb, self._dead = o.intervals(info)
        return info

    def publish(self, topic, data, timeout=_DEFAULT):
        """PUBLISH: returns how many subscribers it was queued to."""
        return self._call(p.PUBLISH, p.encode_publish(topic, data), _publish_reply, timeout)

    def send(self, identity_, data, timeout=_DEFAULT):
        """DIRECT to every connection of an identity: returns (connections on
        this node, other nodes)."""
        return self._call(p.DIRECT, p.encode_direct(identity_, data),
                          p.decode_direct_reply, timeout)

    def subscribe(self, *topics, timeout=_DEFAULT):
        """SUBSCRIBE to each topic; returns a Subscription that iterates their
        MESSAGEs. The topics are subscribed again after each reconnect."""
        keys = p.topic_keys(topics)
        new = [k for k in dict.fromkeys(keys) if k not in self._topics]
        # Routed to sub before SUBSCRIBE goes out: a MESSAGE read together
        # with SUBSCRIBE's reply must find it.
        sub = Subscription(self, keys)
        for k in dict.fromkeys(keys):
            self._topics.setdefault(k, []).append(sub)
        if new:
            errors, failed = [], []
            try:
                self._ensure_connected()
                reqs = [self._queue(p.SUBSCRIBE, k, _none) for k in new]
                for k, r in zip(new, reqs):
                    try:
                        self._wait(r, timeout)
                    except MsgdError as e:
                        errors.append(e)
                        failed.append(k)
            except BaseException:
                self._forget_subscription(sub)
                raise
            if errors:
                for k in failed:
                    subs = self._topics.get(k)
                    if subs is not None and sub in subs:
                        subs.remove(sub)
                        if not subs:
                            del self._topics[k]
                raise errors[0]
        return sub

    def unsubscribe(self, *topics, timeout=_DEFAULT):
        """UNSUBSCRIBE from each topic (every Subscription of it ends)."""
        keys = list(dict.fromkeys(p.to_bytes(t, "topic") for t in topics))
        for k in keys:
            for s in self._topics.pop(k, []):
                s.active = False
        if keys:
            self._ensure_connected()
            reqs = [self._queue(p.UNSUBSCRIBE, k, _none) for k in keys]
            for r in reqs:
                self._wait(r, timeout)

    def _forget_subscription(self, sub):
        gone = []
        for k in dict.fromkeys(sub.topics):
            subs = self._topics.get(k)
            if subs is not None and sub in subs:
                subs.remove(sub)
                if not subs:
                    del self._topics[k]
                    gone.append(k)
        return gone

    def _drop_subscription(self, sub):
        sub.active = False
        gone = self._forget_subscription(sub)
        if gone:
            self._ensure_connected()
            for r in [self._queue(p.UNSUBSCRIBE, k, _none) for k in gone]:
                self._wait(r)
