"""The arguments Client and AsyncClient share, checked once."""

import random
import ssl as _ssl

from . import protocol as p

VERSION = "0.1.0"
DEFAULT_HEARTBEAT = 30.0        # seconds, when the server's HELLO does not say
DEAD_AFTER_HEARTBEATS = 3       # dead_after defaults to this many heartbeats
ALPN = "msgp/1"                 # what tls_listen offers (docs/PROTOCOL.md)


class Options:
    def __init__(self, host="127.0.0.1", port=7700, *, unix_path=None, token=None,
                 timeout=10.0, connect_timeout=5.0, heartbeat=None, dead_after=None,
                 reconnect=True, reconnect_attempts=10, backoff_initial=0.1,
                 backoff_max=5.0, hello=False, compress=None, client_name=None,
                 ssl=None, server_hostname=None, cafile=None, certfile=None, keyfile=None,
                 max_frame=p.DEFAULT_MAX_FRAME, compress_min=256,
                 max_queued_pushes=65536, seed=None):
        self.host = host
        self.port = int(port)
        self.unix_path = unix_path
        self.token = None if token is None else p.to_bytes(token, "token")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        if heartbeat is not None and heartbeat < 0:
            raise ValueError("heartbeat must be >= 0 seconds (0: off), not %r" % (heartbeat,))
        if dead_after is not None and dead_after <= 0:
            raise ValueError("dead_after must be > 0 seconds, not %r" % (dead_after,))
        self.heartbeat = heartbeat
        self.dead_after = dead_after
        self.reconnect = bool(reconnect)
        if reconnect_attempts is not None and reconnect_attempts < 1:
            raise ValueError("reconnect_attempts must be >= 1 or None (no limit)")
        self.reconnect_attempts = reconnect_attempts
        if backoff_initial <= 0 or backoff_max < backoff_initial:
            raise ValueError("want 0 < backoff_initial <= backoff_max")
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        # compression: None/False none, True every codec available here, or names
        if compress is True:
            names = p.available_codecs()
        elif not compress:
            names = []
        else:
            names = [compress] if isinstance(compress, str) else list(compress)
            for n in names:
                if n not in ("zstd", "deflate"):
                    raise ValueError("unknown codec %r (known: zstd, deflate)" % (n,))
            usable = [n for n in names if n != "zstd" or p.zstd_available()]
            if not usable:
                p.make_codec(names[0])      # raises ImportError naming the package
            names = usable
        self.compress = names
        self.hello = bool(hello) or bool(names)
        self.client_name = client_name or "msgd-python/%s" % VERSION
        if (certfile is None) != (keyfile is None):
            raise ValueError("certfile and keyfile go together")
        if (cafile or certfile) and not ssl:
            ssl = True
        if ssl is True:
            # as msgcli --tls: the server's certificate checked against cafile
            # (or the system's CAs) and the host, TLS 1.2 at least, ALPN msgp/1
            ssl = _ssl.create_default_context(cafile=cafile)
            ssl.set_alpn_protocols([ALPN])
            if certfile:
                ssl.load_cert_chain(certfile, keyfile)
        elif ssl is not None and ssl is not False and not isinstance(ssl, _ssl.SSLContext):
            raise TypeError("ssl must be True, False/None or an ssl.SSLContext")
        elif ssl and (cafile or certfile):
            raise ValueError("cafile, certfile and keyfile are for ssl=True: load them into "
                             "your own SSLContext")
        self.ssl = ssl or None
        self.server_hostname = server_hostname or (host if self.ssl else None)
        self.max_frame = max_frame
        self.compress_min = compress_min
        self.max_queued_pushes = max_queued_pushes
        self.rng = random.Random(seed)

    def target(self):
        return "unix:%s" % self.unix_path if self.unix_path else "%s:%d" % (self.host, self.port)

    def hello_fields(self):
        f = {"client": self.client_name}
        if self.compress:
            f["compress"] = self.compress
        return f

    def intervals(self, hello_info):
        """(heartbeat, dead_after) in seconds for a connection; heartbeat 0
        means no heartbeat of our own."""
        hb = self.heartbeat
        if hb is None:
            hb = DEFAULT_HEARTBEAT
            try:
                ms = int((hello_info or {}).get("heartbeat_ms", 0))
            except ValueError:
                ms = 0
            if ms > 0:
                hb = ms / 1000.0
            if self.dead_after is not None:
                hb = min(hb, self.dead_after / 2.0)
        if not hb:
            return 0, 0
        dead = self.dead_after if self.dead_after is not None else hb * DEAD_AFTER_HEARTBEATS
        return hb, max(dead, hb)

    def backoff(self, attempt):
        return p.full_jitter(attempt, self.backoff_initial, self.backoff_max, self.rng.random)


def apply_hello(core, options, payload):
    """The HELLO reply: sets the connection's codec; returns the reply's
    fields."""
    info = p.parse_hello(payload)
    chosen = info.get("compress", "none")
    if chosen and chosen != "none":
        if chosen not in options.compress:
            raise p.ProtocolError("HELLO: the server chose codec %r, which was not offered"
                                  % chosen)
        core.codec = p.make_codec(chosen)
    return info
