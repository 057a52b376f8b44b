"""msgd: a client for the msgd message daemon (docs/PROTOCOL.md).

    import msgd
    with msgd.Client("127.0.0.1", 7700) as c:
        c.ping(b"hi")            # -> b"hi"

msgd.Client is blocking; msgd.AsyncClient is the asyncio one, with the same
arguments. Every error reply raises a subclass of msgd.MsgdError with .code.
"""

from ._core import Delivery, Message, Push
from ._options import VERSION as __version__
from .aio import AsyncClient, AsyncPipeline, AsyncSubscription
from .client import Client, Pipeline, Subscription
from .errors import (AuthFailed, BadMagic, BadPayload, BadVersion, ClientClosed, ClientError,
                     ConnectFailed, ConnectionLost, Disabled, IdleTimeout, LimitExceeded,
                     MsgdError, NotAuthenticated, Overloaded, ProtocolError, ServerDead,
                     ShuttingDown, Timeout, TlsError, TooLarge, UnknownCommand, ERRORS_BY_CODE,
                     error_from_reply)
from . import protocol

__all__ = [
    "Client", "AsyncClient", "Pipeline", "AsyncPipeline", "Subscription",
    "AsyncSubscription", "Message", "Delivery", "Push", "protocol",
    "MsgdError", "ClientError", "ConnectionLost", "ConnectFailed", "TlsError", "ServerDead",
    "Timeout",
    "ProtocolError", "ClientClosed", "UnknownCommand", "BadPayload", "NotAuthenticated",
    "TooLarge", "BadMagic", "BadVersion", "Overloaded", "ShuttingDown", "Disabled",
    "IdleTimeout", "AuthFailed", "LimitExceeded", "ERRORS_BY_CODE", "error_from_reply",
    "__version__",
]
