"""Every exception the Leash client raises, and the one place wire errors become them.

The tree::

    LeashError                      anything the client raises on purpose
    ├── ConnectionLost              the connection closed or reset (also a ConnectionError)
    │   └── ConnectFailed           ... or could not be opened at all
    ├── RequestTimeout              no reply within timeout_s (also a TimeoutError)
    ├── JobFailed                   result: the job died, was deleted or expired
    ├── ResultNotReady              result: the job has not finished (also a TimeoutError)
    ├── ProtocolViolation           the broker sent bytes we cannot decode
    ├── BrokerNotVerified           the broker could not prove it holds our key (not ours?)
    ├── CliError                    the leash command: a mistake of its user, one line (exit 1)
    │   └── UsageError              an operator command's options that do not go together (exit 2)
    └── ServerError                 the broker answered with an error reply: code, message, path
        ├── BadRequest              bad_request: a field has the wrong type or is out of bounds
        ├── UnknownOp               unknown_op: the broker does not know the request
        ├── NotFound                not_found: the job no longer exists (finished, deleted)
        ├── StaleLease              stale_lease: the token is not the job's current lease
        ├── TooLarge                too_large: a frame or field over its limit
        ├── QueuePaused             queue_paused: refused on a paused queue
        ├── UnsupportedVersion      unsupported_version: the broker lacks our protocol version
        ├── HandshakeRequired       handshake_required: a request arrived before hello
        ├── Internal                internal: a broker bug; the request was not applied
        ├── InvalidState            invalid_state: the job or batch is not in a state for this
        ├── AuthRequired            auth_required: the broker takes authenticated clients only
        ├── AuthFailed              auth_failed: unknown or expired key id, or wrong secret
        ├── TooManyConnections      too_many_connections: the broker is at its limit (retry)
        ├── HandshakeTimeout        handshake_timeout: the handshake took too long (retry)
        ├── FrameTimeout            frame_timeout: a frame took too long to arrive
        ├── IdleTimeout             idle_timeout: the connection sat idle too long
        ├── SlowReader              slow_reader: replies were not read fast enough
        ├── JournalFailed           journal_failed: not acknowledged (it may or may not
        │                           have been applied); the broker is stopping: retry later
        ├── DiskFull                disk_full: the broker's disk is low; not applied: retry later
        ├── AdminOnly               admin_only: an admin request sent to the TCP port
        └── PermissionDenied        permission_denied: this user may not use the admin socket

A ``ServerError`` whose code this client does not know (a newer broker) is
raised as ``ServerError`` itself, with the code as a plain string.
``UnsupportedArgType`` (``leash.protocol.argtypes``) is not in the tree: it
is a ``TypeError``, a mistake in the caller's args (a type that would not
come back as itself), raised before anything is sent.
Mistakes in a call's own arguments (a concurrency of 0, a bad URL, a
handler registered twice) are ``ValueError`` or ``TypeError``, raised at
once, as the standard library does: the caller's bug, not a condition to
handle. ``Retry``, ``Discard`` and ``Snooze`` (``leash.client._control``)
are not in the tree either: a handler raises them to steer its job and the
worker catches them; the client never raises them, and a handler's ``except
LeashError`` around its own client calls must not swallow them.
``TooLarge`` is also raised locally, before sending, for a request over the
broker's frame limit: sending it would make the broker close the connection.
"""

from leash.protocol.errors import ErrorCode
from leash.protocol.messages import Error, ErrorInfo


class LeashError(Exception):
    """Base of every exception the client raises on purpose."""


class CliError(LeashError):
    """A user error of the ``leash`` command, reported as one line."""


class UsageError(CliError):
    """Options of an operator command that do not go together."""


class ConnectionLost(LeashError, ConnectionError):
    """The connection closed or reset; requests in flight have an unknown outcome."""


class ConnectFailed(ConnectionLost):
    """The connection could not be opened."""


class JobFailed(LeashError):
    """``result``: the job ended without success: it died (``error`` is its
    last error), or it was deleted or expired (``state`` says which)."""

    def __init__(self, job_id: str, state: str, error: ErrorInfo | None) -> None:
        detail = f": {error.type}: {error.message}" if error is not None else ""
        super().__init__(f"job {job_id} is {state}{detail}")
        self.job_id, self.state, self.error = job_id, state, error


class ResultNotReady(LeashError, TimeoutError):
    """``result``: the job has not finished (the wait ended first)."""

    def __init__(self, job_id: str, state: str) -> None:
        super().__init__(f"job {job_id} has not finished: it is {state}")
        self.job_id, self.state = job_id, state


class RequestTimeout(LeashError, TimeoutError):
    """No reply arrived within the client's ``timeout_s``; the outcome is unknown."""


class ProtocolViolation(LeashError):
    """The broker sent something this client cannot decode."""


class BrokerNotVerified(LeashError):
    """The broker did not prove that it holds this client's key: it may not be
    the broker meant (or its key file differs). Nothing was sent after the hello."""


class ServerError(LeashError):
    """The broker refused a request. ``code`` is the wire error code."""

    def __init__(self, code: ErrorCode | str, message: str, path: str = "") -> None:
        text = f"{code}: {message}" + (f" (at {path})" if path else "")
        super().__init__(text)
        self.code = code
        self.message = message
        self.path = path

    def __reduce__(self) -> tuple[type["ServerError"], tuple[ErrorCode | str, str, str]]:
        return (type(self), (self.code, self.message, self.path))


class BadRequest(ServerError):
    pass


class UnknownOp(ServerError):
    pass


class NotFound(ServerError):
    pass


class StaleLease(ServerError):
    pass


class TooLarge(ServerError):
    pass


class QueuePaused(ServerError):
    pass


class UnsupportedVersion(ServerError):
    pass


class HandshakeRequired(ServerError):
    pass


class Internal(ServerError):
    pass


class InvalidState(ServerError):
    pass


class AuthRequired(ServerError):
    pass


class AuthFailed(ServerError):
    pass


class TooManyConnections(ServerError):
    pass


class HandshakeTimeout(ServerError):
    pass


class FrameTimeout(ServerError):
    pass


class IdleTimeout(ServerError):
    pass


class SlowReader(ServerError):
    pass


class JournalFailed(ServerError):
    pass


class DiskFull(ServerError):
    pass


class AdminOnly(ServerError):
    pass


class PermissionDenied(ServerError):
    pass


ERROR_CLASSES: dict[ErrorCode, type[ServerError]] = {
    ErrorCode.BAD_REQUEST: BadRequest,
    ErrorCode.UNKNOWN_OP: UnknownOp,
    ErrorCode.NOT_FOUND: NotFound,
    ErrorCode.STALE_LEASE: StaleLease,
    ErrorCode.TOO_LARGE: TooLarge,
    ErrorCode.QUEUE_PAUSED: QueuePaused,
    ErrorCode.UNSUPPORTED_VERSION: UnsupportedVersion,
    ErrorCode.HANDSHAKE_REQUIRED: HandshakeRequired,
    ErrorCode.INTERNAL: Internal,
    ErrorCode.INVALID_STATE: InvalidState,
    ErrorCode.AUTH_REQUIRED: AuthRequired,
    ErrorCode.AUTH_FAILED: AuthFailed,
    ErrorCode.TOO_MANY_CONNECTIONS: TooManyConnections,
    ErrorCode.HANDSHAKE_TIMEOUT: HandshakeTimeout,
    ErrorCode.FRAME_TIMEOUT: FrameTimeout,
    ErrorCode.IDLE_TIMEOUT: IdleTimeout,
    ErrorCode.SLOW_READER: SlowReader,
    ErrorCode.JOURNAL_FAILED: JournalFailed,
    ErrorCode.DISK_FULL: DiskFull,
    ErrorCode.ADMIN_ONLY: AdminOnly,
    ErrorCode.PERMISSION_DENIED: PermissionDenied,
}


def error_for(code: ErrorCode | str, message: str, path: str = "") -> ServerError:
    """The exception for a wire error code; an unknown code gives a plain ``ServerError``."""
    try:
        known = ErrorCode(code)
    except ValueError:
        return ServerError(code, message, path)
    return ERROR_CLASSES[known](known, message, path)


def error_from_reply(reply: Error) -> ServerError:
    """The exception an ``error`` reply stands for."""
    return error_for(reply.code, reply.message, reply.path)
