"""msgd.AsyncClient: the asyncio client.

Many tasks may share one AsyncClient: each `await c.call(...)` writes its
request at once and waits for its own reply, so concurrent calls are
pipelined on the one connection and matched in order. The connection is read
all the time by the event loop: server PINGs are answered, pushes are queued
for the iterators, the heartbeat runs on a timer, and a lost connection is
reconnected in the background (with back-off and full jitter) when reconnect
is on.
"""

import asyncio
import collections
import socket
import ssl as _ssl
import time

from . import protocol as p
from ._core import Core, Delivery, Message, identity
from ._options import Options, apply_hello
from .client import _DEFAULT, _none, _publish_reply, Pipeline
from .errors import (AuthFailed, ClientClosed, ConnectFailed, ConnectionLost, MsgdError,
                     ProtocolError, ServerDead, Timeout, TlsError, UnknownCommand, tls_error)


class _PushQueue:
    """A bounded queue of pushes with one kind of waiting: get() returns the
    next one, or raises the error set by fail() once the queue is empty."""

    def __init__(self, limit):
        self.items = collections.deque()
        self.limit = limit
        self.error = None
        self.dropped = 0
        self._waiter = None

    def put(self, obj):
        if len(self.items) >= self.limit:
            self.dropped += 1
            return False
        self.items.append(obj)
        self._wake()
        return True

    def fail(self, error):
        self.error = error
        self._wake()

    def _wake(self):
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def get(self, timeout=None):
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self.items:
                return self.items.popleft()
            if self.error is not None:
                raise self.error
            self._waiter = w = loop.create_future()
            h = None
            if deadline is not None:
                left = deadline - loop.time()
                if left <= 0:
                    return None
                h = loop.call_later(left, _wake_future, w)
            try:
                await w
            finally:
                self._waiter = None
                if h is not None:
                    h.cancel()


def _wake_future(fut):
    if not fut.done():
        fut.set_result(None)


def _expire(fut, cmd, timeout):
    if not fut.done():
        fut.set_exception(Timeout("no reply to %s within %.3gs" % (p.command_name(cmd), timeout)))


class _Protocol(asyncio.Protocol):
    def __init__(self, client, core):
        self.client = client
        self.core = core
        self.transport = None
        self.lost = False
        self.paused = False
        self.timer = None
        self._drain = None
        self.loop = asyncio.get_running_loop()
        self.closed = self.loop.create_future()
        self.wbuf = []              # request frames written at the loop's next turn

    def write(self, frame):
        """Queues a request frame; every frame queued in one turn of the
        event loop goes out in one write (many tasks' calls, one syscall).
        The order on the wire is the order of the reply queue."""
        if not self.wbuf:
            self.loop.call_soon(self.flush)
        self.wbuf.append(frame)

    def flush(self):
        buf, self.wbuf = self.wbuf, []
        if buf and not self.lost:
            self.transport.write(b"".join(buf))

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        try:
            out = self.core.receive(data)
        except ProtocolError as e:
            self.client._lost(self, ConnectionLost(str(e)))
            return
        if out and not self.lost:
            self.transport.write(out)

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        what = "the server closed the connection" if exc is None else "read: %s" % exc
        self.client._lost(self, self.core.loss_error(what))

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    async def drain(self):
        if self.paused and not self.lost:
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain


class AsyncSubscription:
    """The MESSAGEs of some topics. `sub = await c.subscribe(...)` subscribes
    now; `async for m in c.subscribe(...)` subscribes on the first step.
    get(timeout) returns one message (None after the timeout)."""

    def __init__(self, client, topics):
        self._client = client
        self.topics = tuple(topics)
        self._queue = _PushQueue(client._o.max_queued_pushes)
        self.subscribed = False
        self.active = True

    @property
    def dropped(self):
        return self._queue.dropped

    def __await__(self):
        return self._start().__await__()

    async def _start(self):
        if not self.subscribed:
            await self._client._subscribe_sub(self)
        return self

    def __aiter__(self):
        return self

    async def __anext__(self):
        await self._start()
        if not self.active and not self._queue.items:
            raise StopAsyncIteration
        return await self._queue.get(None)

    async def get(self, timeout=None):
        await self._start()
        return await self._queue.get(timeout)

    async def unsubscribe(self):
        if self.active:
            await self._client._drop_subscription(self)

    async def __aenter__(self):
        return await self._start()

    async def __aexit__(self, *exc):
        await self.unsubscribe()


class AsyncPipeline(Pipeline):
    """Pipeline for AsyncClient: `await pipe.execute()`."""

    async def execute(self, raise_on_error=True, timeout=_DEFAULT):
        """Sends every queued request at once, then waits for the replies
        (timeout applies to the whole batch). Returns the results in order;
        with raise_on_error the first error is raised once every reply is
        in, else errors stand in the list in their request's place."""
        items, self._items = self._items, []
        if not items:
            return []
        reqs = await self._client._submit_many(items, timeout)
        first = None
        results = []
        for r in reqs:
            if r.error is not None:
                first = first or r.error
                results.append(r.error)
            else:
                results.append(r.value)
        if first is not None and (raise_on_error or isinstance(first, ConnectionLost)):
            raise first
        return results


class AsyncClient:
    """An asyncio msgd client; the same arguments as msgd.Client."""

    def __init__(self, host="127.0.0.1", port=7700, **kw):
        self._o = Options(host, port, **kw)
        self._proto = None
        self._connecting = None
        self._closed = False
        self._ever_connected = False
        self._unproven = 0
        self._token = self._o.token
        self._topics = {}               # topic bytes -> [AsyncSubscription...]
        limit = self._o.max_queued_pushes
        self._messages = _PushQueue(limit)
        self._deliveries = _PushQueue(limit)
        self._pushes = _PushQueue(limit)
        self._hb = 0.0
        self._dead = 0.0
        self.hello_info = None
        self.last_error = None
        self.reconnects = 0
        self.goaway = None              # (ms, reason) of the last GOAWAY received

    def __repr__(self):
        return "<msgd.AsyncClient %s %s>" % (self._o.target(),
                                             "connected" if self.connected else "not connected")

    # ---- connection ------------------------------------------------------------------
    async def __aenter__(self):
        await self.connect()
        return self

    async def __aexit__(self, *exc):
        await self.close()

    @property
    def connected(self):
        return self._proto is not None and not self._proto.lost

    @property
    def compression(self):
        pr = self._proto
        return pr.core.codec.name if pr is not None and pr.core.codec else None

    @property
    def pings_answered(self):
        return self._proto.core.pings_answered if self._proto else 0

    @property
    def dropped_pushes(self):
        return sum(q.dropped for q in self._queues())

    def _queues(self):
        qs = [self._messages, self._deliveries, self._pushes]
        for subs in self._topics.values():
            qs.extend(s._queue for s in subs)
        return qs

    async def connect(self):
        """Connects now (one attempt). Raises ConnectFailed."""
        if self._closed:
            raise ClientClosed("the client is closed")
        if not self.connected:
            await self._ready()
        return self

    async def close(self):
        """Closes the connection; owed requests and waiting iterators raise."""
        if self._closed:
            return
        self._closed = True
        task, self._connecting = self._connecting, None
        if task is not None:
            task.cancel()
            try:
                await task
            except BaseException:
                pass
        err = ClientClosed("the client was closed")
        if self._proto is not None:
            self._lost(self._proto, err)
        for q in self._queues():
            q.fail(err)

    async def _open(self):
        o = self._o
        loop = asyncio.get_running_loop()
        core = Core(o.max_frame, o.compress_min, on_done=self._resolve,
                    on_push=self._on_push, on_goaway=None)
        proto = _Protocol(self, core)
        core.on_goaway = lambda ms, reason: self._on_goaway(proto, ms, reason)
        try:
            if o.unix_path:
                conn = loop.create_unix_connection(lambda: proto, o.unix_path, ssl=o.ssl,
                                                   server_hostname=o.server_hostname)
            else:
                conn = loop.create_connection(lambda: proto, o.host, o.port, ssl=o.ssl,
                                              server_hostname=o.server_hostname)
            await asyncio.wait_for(conn, o.connect_timeout)
        except _ssl.SSLError as e:
            raise tls_error(o.target(), e) from e
        except (OSError, asyncio.TimeoutError, ValueError) as e:
            raise ConnectFailed("connect %s: %s" % (o.target(), e or "timed out")) from e
        sock = proto.transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await self._handshake(proto)
        except BaseException:
            self._lost(proto, ConnectionLost("handshake failed"))
            raise
        self._proto = proto
        self._ever_connected = True
        for q in self._queues():
            q.error = None
        self._arm_heartbeat(proto)

    async def _handshake(self, proto):
        o, core = self._o, proto.core
        wait = (o.connect_timeout or 0) + (o.timeout or 0) or None
        hello = None
        if o.hello:
            hello = self._send(proto, p.HELLO, p.encode_hello(o.hello_fields()),
                               lambda pl: apply_hello(core, o, pl))
        reqs = []
        if self._token is not None:
            reqs.append((p.AUTH, self._send(proto, p.AUTH, self._token, _none)))
        for topic in self._topics:
            reqs.append((p.SUBSCRIBE, self._send(proto, p.SUBSCRIBE, topic, _none)))
        info = None
        if hello is not None:
            try:
                info = await self._await(hello, p.HELLO, wait)
            except UnknownCommand:
                info = None
        for cmd, fut in reqs:
            await self._await(fut, cmd, wait)
        self.hello_info = info
        self._hb, self._dead = o.intervals(info)

    def _lost(self, proto, error):
        """proto's connection ended with error: fail what it owed, and
        reconnect in the background when that is on."""
        if proto.lost:
            return
        proto.lost = True
        if proto.timer is not None:
            proto.timer.cancel()
        if proto.transport is not None:
            proto.transport.abort()
        if proto.core.bytes_in:
            self._unproven = 0
        proto.core.fail_all(error)
        if not proto.closed.done():
            proto.closed.set_result(None)
        if proto._drain is not None and not proto._drain.done():
            proto._drain.set_result(None)
        if proto is not self._proto:
            return
        self.last_error = error
        if self._closed:
            return
        if not self._o.reconnect:
            for q in self._queues():
                q.fail(error)
            return
        self._start_connecting()

    def _start_connecting(self):
        if self._connecting is None:
            task = asyncio.get_running_loop().create_task(self._reconnect())
            # its failure reaches the callers waiting in _ready and the
            # iterators; nobody may be waiting, so retrieve it here too
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._connecting = task
        return self._connecting

    async def _reconnect(self):
        o = self._o
        # As in Client._reconnect: a connection that heard nothing from the
        # server counts as a failed attempt.
        attempt = self._unproven
        last = self.last_error
        try:
            if not self._ever_connected:
                await self._open()
                return
            while o.reconnect_attempts is None or attempt < o.reconnect_attempts:
                await asyncio.sleep(o.backoff(attempt))
                try:
                    await self._open()
                    self.reconnects += 1
                    self._unproven = 0 if self._proto.core.bytes_in else attempt + 1
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
        except BaseException as e:
            if isinstance(e, MsgdError):
                for q in self._queues():
                    q.fail(e)
            raise
        finally:
            self._connecting = None

    async def _ready(self):
        """The protocol of a usable connection, connecting or waiting for the
        reconnect first."""
        while True:
            if self._closed:
                raise ClientClosed("the client is closed")
            proto = self._proto
            if proto is not None and not proto.lost:
                if proto.core.conn_error is not None:
                    # closing after a connection-level error: as Client does
                    self._lost(proto, proto.core.loss_error("left the connection"))
                    continue
                if proto.core.goaway is None:
                    return proto
                if proto.core.pending:
                    await proto.closed      # the server closes once it owes nothing
                else:
                    self._lost(proto, ConnectionLost("left the connection after GOAWAY"))
                continue
            if proto is not None and not self._o.reconnect:
                raise ConnectionLost("not connected (reconnect is off); the connection "
                                     "ended: %s" % (self.last_error,))
            await asyncio.shield(self._start_connecting())

    def _arm_heartbeat(self, proto):
        if self._hb and not proto.lost:
            proto.timer = asyncio.get_running_loop().call_later(self._hb, self._beat, proto)

    def _beat(self, proto):
        if proto.lost:
            return
        core = proto.core
        now = time.monotonic()
        silent = now - core.last_rx
        if silent >= self._dead:
            self._lost(proto, ServerDead("%s sent nothing for %.3gs (dead_after %.3gs): "
                                         "connection dropped"
                                         % (self._o.target(), silent, self._dead)))
            return
        if silent >= self._hb and not core.heartbeat_owed:
            proto.write(core.heartbeat_ping())
        due = core.last_rx + (self._dead if core.heartbeat_owed else self._hb) - now
        proto.timer = asyncio.get_running_loop().call_later(max(due, 0.001), self._beat, proto)

    # ---- requests ----------------------------------------------------------------------
    @staticmethod
    def _resolve(r):
        fut = r.waiter
        if fut is not None and not fut.done():
            if r.error is not None:
                fut.set_exception(r.error)
            else:
                fut.set_result(r.value)

    def _send(self, proto, cmd, payload, decode):
        r, frame = proto.core.request(cmd, payload, decode)
        r.waiter = fut = proto.loop.create_future()
        proto.write(frame)
        return fut

    async def _await(self, fut, cmd, timeout):
        if timeout is _DEFAULT:
            timeout = self._o.timeout
        if timeout is None:
            return await fut
        h = asyncio.get_running_loop().call_later(timeout, _expire, fut, cmd, timeout)
        try:
            return await fut
        finally:
            h.cancel()

    async def _call(self, cmd, payload, decode, timeout=_DEFAULT):
        proto = self._proto
        if (proto is None or proto.lost or proto.core.goaway is not None
                or proto.core.conn_error is not None):
            proto = await self._ready()
        fut = self._send(proto, cmd, payload, decode)
        if proto.paused:
            await proto.drain()
        if timeout is _DEFAULT:
            timeout = self._o.timeout
        if timeout is None:
            return await fut
        h = proto.loop.call_later(timeout, _expire, fut, cmd, timeout)
        try:
            return await fut
        finally:
            h.cancel()

    async def _submit_many(self, items, timeout):
        """Sends items as one write and waits until the last is answered
        (replies come in order, and a lost connection fails them all), so
        one future serves the whole batch. Returns the Requests, all done."""
        proto = await self._ready()
        core = proto.core
        reqs = []
        frames = []
        for cmd, payload, decode in items:
            r, frame = core.request(cmd, payload, decode)
            reqs.append(r)
            frames.append(frame)
        last = reqs[-1]
        last.waiter = fut = proto.loop.create_future()
        proto.write(b"".join(frames))
        if proto.paused:
            await proto.drain()
        try:
            await self._await(fut, last.cmd, timeout)
        except MsgdError:
            if not last.done:
                raise               # the timeout: the replies are still owed
        return reqs

    def pipeline(self):
        """An AsyncPipeline (concurrent calls from many tasks pipeline too)."""
        return AsyncPipeline(self)

    async def call(self, cmd, payload=b"", timeout=_DEFAULT):
        if cmd & (p.REPLY | p.ERROR) or not 0 <= cmd <= 0xFFFFFFFF:
            raise ValueError("0x%08X is not a request command" % cmd)
        return await self._call(cmd, p.to_bytes(payload, "payload"), identity, timeout)

    async def ping(self, payload=b"", timeout=_DEFAULT):
        return await self._call(p.PING, p.to_bytes(payload, "payload"), identity, timeout)

    async def echo(self, payload, timeout=_DEFAULT):
        return await self._call(p.ECHO, p.to_bytes(payload, "payload"), identity, timeout)

    async def stats(self, timeout=_DEFAULT):
        return await self._call(p.STATS, b"", p.parse_stats, timeout)

    async def delay(self, ms, payload=b"", timeout=_DEFAULT):
        return await self._call(p.DELAY, p.encode_delay(ms, payload), identity, timeout)

    async def auth(self, token, timeout=_DEFAULT):
        token = p.to_bytes(token, "token")
        await self._call(p.AUTH, token, _none, timeout)
        self._token = token

    async def hello(self, compress=None, timeout=_DEFAULT, **fields):
        o = self._o
        if compress is not None:
            o.compress = Options(compress=compress).compress
        o.hello = True
        f = o.hello_fields()
        f.update(fields)
        proto = await self._ready()
        core = proto.core
        info = await self._call(p.HELLO, p.encode_hello(f),
                                lambda pl: apply_hello(core, o, pl), timeout)
        self.hello_info = info
        self._hb, self._dead = o.intervals(info)
        return info

    async def publish(self, topic, data, timeout=_DEFAULT):
        return await self._call(p.PUBLISH, p.encode_publish(topic, data), _publish_reply,
                                timeout)

    async def send(self, identity_, data, timeout=_DEFAULT):
        return await self._call(p.DIRECT, p.encode_direct(identity_, data),
                                p.decode_direct_reply, timeout)

    # ---- subscriptions and pushes ---------------------------------------------------
    def subscribe(self, *topics):
        """An AsyncSubscription of the topics: await it, or iterate it."""
        keys = p.topic_keys(topics)
        return AsyncSubscription(self, keys)

    async def _subscribe_sub(self, sub):
        new = [k for k in dict.fromkeys(sub.topics) if k not in self._topics]
        # Routed to sub before SUBSCRIBE goes out: a MESSAGE can arrive in
        # the same read as SUBSCRIBE's reply, before this task resumes.
        for k in dict.fromkeys(sub.topics):
            self._topics.setdefault(k, []).append(sub)
        if new:
            try:
                proto = await self._ready()
                futs = [self._send(proto, p.SUBSCRIBE, k, _none) for k in new]
                results = await asyncio.gather(*[self._await(f, p.SUBSCRIBE, _DEFAULT)
                                                 for f in futs], return_exceptions=True)
            except BaseException:
                self._forget(sub, new)
                raise
            failed = [k for k, res in zip(new, results) if isinstance(res, BaseException)]
            if failed:
                self._forget(sub, failed)
                raise next(r for r in results if isinstance(r, BaseException))
        sub.subscribed = True

    def _forget(self, sub, keys):
        """Takes sub off topics whose SUBSCRIBE did not happen."""
        for k in keys:
            subs = self._topics.get(k)
            if subs is not None and sub in subs:
                subs.remove(sub)
                if not subs:
                    del self._topics[k]

    async def unsubscribe(self, *topics, timeout=_DEFAULT):
        keys = list(dict.fromkeys(p.to_bytes(t, "topic") for t in topics))
        for k in keys:
            for s in self._topics.pop(k, []):
                s.active = False
                s._queue.fail(StopAsyncIteration())
        if keys:
            proto = await self._ready()
            futs = [self._send(proto, p.UNSUBSCRIBE, k, _none) for k in keys]
            for f in futs:
                await self._await(f, p.UNSUBSCRIBE, timeout)

    async def _drop_subscription(self, sub):
        sub.active = False
        sub._queue.fail(StopAsyncIteration())
        gone = []
        for k in dict.fromkeys(sub.topics):
            subs = self._topics.get(k)
            if subs is not None and sub in subs:
                subs.remove(sub)
                if not subs:
                    del self._topics[k]
                    gone.append(k)
        if gone and self.connected:
            futs = [self._send(self._proto, p.UNSUBSCRIBE, k, _none) for k in gone]
            for f in futs:
                await self._await(f, p.UNSUBSCRIBE, _DEFAULT)

    def _on_push(self, obj):
        if type(obj) is Message:
            subs = self._topics.get(obj.topic_bytes)
            if subs:
                for s in subs:
                    s._queue.put(obj)
                return
            self._messages.put(obj)
        elif type(obj) is Delivery:
            self._deliveries.put(obj)
        else:
            self._pushes.put(obj)

    def _on_goaway(self, proto, ms, reason):
        self.goaway = (ms, reason)
        if not proto.core.pending:
            # nothing owed: leave now (after the back-off's jitter)
            self._lost(proto, ConnectionLost("left the connection after GOAWAY (%s)"
                                             % (reason or "no reason")))

    async def next_message(self, timeout=None):
        return await self._messages.get(timeout)

    async def next_delivery(self, timeout=None):
        return await self._deliveries.get(timeout)

    async def next_push(self, timeout=None):
        return await self._pushes.get(timeout)

    async def deliveries(self):
        """Iterates DELIVERs (reconnecting as needed) until the client closes
        or reconnecting gives up (then it raises)."""
        while True:
            try:
                yield await self._deliveries.get(None)
            except ClientClosed:
                return
