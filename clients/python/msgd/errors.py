"""The exceptions of the msgd client. Every error reply raises a subclass of
MsgdError chosen by its code (.code); problems on the client's side
(a lost connection, a dead server, a timeout, a broken frame) raise the
subclasses of ClientError, whose .code is None."""

from .protocol import ProtocolError as _WireError, command_name


class MsgdError(Exception):
    """An error from msgd or from talking to it.

    code: the error code of an error reply (1..12, or a module's code), or
    None for a problem on the client's side. text: the server's text.
    command: the request's command number (0: the connection itself).
    connection_level: the server sent it as a connection-level error
    (0xC0000000) and closed the connection after it."""

    code = None
    name = "MSGD_ERROR"

    def __init__(self, text="", code=None, command=None, connection_level=False):
        self.text = text
        if code is not None:
            self.code = code
        self.command = command
        self.connection_level = connection_level
        super().__init__(self._message())

    def _message(self):
        if self.code is None:
            return self.text
        where = "connection-level error" if self.connection_level else "error reply"
        to = "" if self.command is None else " to %s" % command_name(self.command)
        return "%s%s: %s (%d)%s" % (where, to, self.name, self.code,
                                    ": " + self.text if self.text else "")


class UnknownCommand(MsgdError):
    """1: no handler for the command (the connection stays open)."""
    code, name = 1, "UNKNOWN_COMMAND"


class BadPayload(MsgdError):
    """2: the payload does not fit the command's format."""
    code, name = 2, "BAD_PAYLOAD"


class NotAuthenticated(MsgdError):
    """3: tokens are configured and this connection has not authenticated
    (or DIRECT from a connection without an identity)."""
    code, name = 3, "NOT_AUTHENTICATED"


class TooLarge(MsgdError):
    """4: a frame over the server's max_frame (connection-level)."""
    code, name = 4, "TOO_LARGE"


class BadMagic(MsgdError):
    """5: the server did not see the MSGP magic (connection-level)."""
    code, name = 5, "BAD_MAGIC"


class BadVersion(MsgdError):
    """6: the server does not speak this protocol version (connection-level)."""
    code, name = 6, "BAD_VERSION"


class Overloaded(MsgdError):
    """7: the command's queue is full; retrying later is fine."""
    code, name = 7, "OVERLOADED"


class ShuttingDown(MsgdError):
    """8: the server is draining (after GOAWAY)."""
    code, name = 8, "SHUTTING_DOWN"


class Disabled(MsgdError):
    """9: the command is switched off in the server's configuration."""
    code, name = 9, "DISABLED"


class IdleTimeout(MsgdError):
    """10: the server heard nothing for its idle_timeout (connection-level)."""
    code, name = 10, "IDLE_TIMEOUT"


class AuthFailed(MsgdError):
    """11: a wrong token (the third one on a connection is connection-level)."""
    code, name = 11, "AUTH_FAILED"


class LimitExceeded(MsgdError):
    """12: a per-connection limit, such as max_subscriptions."""
    code, name = 12, "LIMIT_EXCEEDED"


ERRORS_BY_CODE = {cls.code: cls for cls in (
    UnknownCommand, BadPayload, NotAuthenticated, TooLarge, BadMagic, BadVersion,
    Overloaded, ShuttingDown, Disabled, IdleTimeout, AuthFailed, LimitExceeded)}


def error_from_reply(code, text, command=None, connection_level=False):
    """The exception for an error reply: its class by code, or MsgdError
    itself (with .code) for a code this client does not know."""
    cls = ERRORS_BY_CODE.get(code)
    if cls is None:
        e = MsgdError(text, code=code, command=command, connection_level=connection_level)
        e.name = "ERROR_%d" % code
        e.args = (e._message(),)
        return e
    return cls(text, command=command, connection_level=connection_level)


class ClientError(MsgdError):
    """A problem on the client's side of the connection (code is None)."""


class ConnectionLost(ClientError, ConnectionError):
    """The connection is gone: refused, closed by the server, reset, or
    declared dead. A request in flight when it dropped raises this; it is
    never sent again behind the caller's back."""


class ServerDead(ConnectionLost):
    """The server sent nothing at all for dead_after seconds (not even an
    answer to the client's heartbeat PING): the connection was dropped."""


class Timeout(ClientError, TimeoutError):
    """No reply (or no push) within the timeout. The request is still owed a
    reply; a late one is discarded."""


class ProtocolError(ClientError, _WireError):
    """The server broke the wire format, or a reply does not fit its
    request."""


class ConnectFailed(ConnectionLost):
    """The connection could not be made (refused, unreachable, timed out, a
    TLS handshake failure, or the reconnect attempts ran out)."""


class TlsError(ConnectFailed):
    """The TLS handshake failed. .verify_failed is True when the server's
    certificate did not verify (an unknown CA, a name it does not carry, an
    expired one): that is not retried by a reconnect, since the next
    attempt would meet the same certificate."""

    def __init__(self, message, verify_failed=False):
        super().__init__(message)
        self.verify_failed = verify_failed


def tls_error(target, e):
    """The TlsError for ssl.SSLError e from a handshake with target."""
    import ssl
    if isinstance(e, ssl.SSLCertVerificationError):
        why = e.verify_message or e.reason or str(e)
        return TlsError("TLS handshake with %s: the server's certificate did not verify: "
                        "%s (certificate verify failed)" % (target, why), verify_failed=True)
    return TlsError("TLS handshake with %s: %s" % (target, e.reason or e))


class ClientClosed(ClientError):
    """The client was closed by its owner."""
