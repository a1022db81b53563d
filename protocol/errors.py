"""The one error-code enum of the wire, and the exception that carries it.

Every failure that reaches a peer carries an ``ErrorCode``; its string value is
what travels in an ``error`` reply. Codes are stable: new ones are added,
existing ones never change meaning.
"""

import enum


class ErrorCode(enum.StrEnum):
    BAD_REQUEST = "bad_request"  # a field has the wrong type or is out of bounds
    UNKNOWN_OP = "unknown_op"  # the request's op is not one this server knows
    NOT_FOUND = "not_found"  # the job (or other object) does not exist
    STALE_LEASE = "stale_lease"  # the token is not the job's current lease
    TOO_LARGE = "too_large"  # a frame or a field is over its limit
    QUEUE_PAUSED = "queue_paused"  # reserved: operations refused on a paused queue
    UNSUPPORTED_VERSION = "unsupported_version"  # the handshake asked for a version we lack
    HANDSHAKE_REQUIRED = "handshake_required"  # a request arrived before hello
    INTERNAL = "internal"  # a bug in the broker; the request was not applied
    INVALID_STATE = "invalid_state"  # the job or batch is not in a state that allows this
    AUTH_REQUIRED = "auth_required"  # the broker takes only authenticated connections
    AUTH_FAILED = "auth_failed"  # unknown or expired key, or a wrong proof
    TOO_MANY_CONNECTIONS = "too_many_connections"  # over the broker's connection limits
    HANDSHAKE_TIMEOUT = "handshake_timeout"  # the handshake did not finish in time
    FRAME_TIMEOUT = "frame_timeout"  # a frame did not complete in time once begun
    IDLE_TIMEOUT = "idle_timeout"  # no frame for the idle timeout
    SLOW_READER = "slow_reader"  # replies piled up unread
    JOURNAL_FAILED = "journal_failed"  # the journal cannot be written: not acknowledged; stopping
    DISK_FULL = "disk_full"  # the journal's disk is low: nothing applied; retry later
    ADMIN_ONLY = "admin_only"  # an admin request on the TCP port: use the admin socket
    PERMISSION_DENIED = "permission_denied"  # the admin socket's peer is not allowed


class ProtocolError(Exception):
    """The peer's byte stream broke the framing (a bad length prefix, a line
    over the limit), so it cannot be resynchronised: the connection must be
    closed after the error is reported. (A whole frame that is wrong is not
    this error: the decoders answer it and read on.)
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
