"""Frame codec (sans-IO): 4-byte big-endian body length, then the body.

Theory of operation: the caller feeds whatever bytes arrived with
``feed(data)`` and then calls ``next_frame()`` until it returns None. The
length prefix is checked against the limit *before* any of the body is
buffered, so a hostile length cannot make us allocate (nor copy a large
chunk that arrived with it). A bad length cannot be
resynchronised: it raises a fatal ``ProtocolError`` and the caller must close.
"""

from protocol.errors import ErrorCode, ProtocolError
from protocol.limits import FRAME_HEADER_BYTES, FRAME_MAX_BYTES

_HEADER_BYTES = FRAME_HEADER_BYTES


def encode_frame(body: bytes) -> bytes:
    """Prefix ``body`` with its length."""
    return len(body).to_bytes(_HEADER_BYTES, "big") + body


class FrameDecoder:
    """Splits a byte stream into frame bodies."""

    __slots__ = ("_buffer", "_offset", "max_frame_bytes")

    def __init__(self, max_frame_bytes: int = FRAME_MAX_BYTES) -> None:
        self._buffer = bytearray()
        self._offset = 0  # start of the unread part of _buffer
        self.max_frame_bytes = max_frame_bytes

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer) - self._offset

    @property
    def in_frame(self) -> bool:
        """True while a frame has started but not completed."""
        return self.buffered_bytes > 0

    def feed(self, data: bytes) -> None:
        if (
            len(data) > self.max_frame_bytes
            and self._offset == len(self._buffer)
            and not 0 < int.from_bytes(data[:_HEADER_BYTES], "big") <= self.max_frame_bytes
        ):
            # A frame that cannot be accepted: keep its header for next_frame to
            # refuse, and none of the rest (the stream is unusable after it).
            data = data[:_HEADER_BYTES]
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """Return the next complete body, or None if more bytes are needed."""
        buffer, offset = self._buffer, self._offset
        available = len(buffer) - offset
        if available < _HEADER_BYTES:
            self._compact()
            return None
        length = int.from_bytes(buffer[offset : offset + _HEADER_BYTES], "big")
        if length == 0:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "empty frame", fatal=True)
        if length > self.max_frame_bytes:
            raise ProtocolError(
                ErrorCode.TOO_LARGE,
                f"frame of {length} bytes is over the limit of {self.max_frame_bytes}",
                fatal=True,
            )
        end = offset + _HEADER_BYTES + length
        if len(buffer) < end:
            self._compact()
            return None
        body = bytes(buffer[offset + _HEADER_BYTES : end])
        self._offset = end
        return body

    def _compact(self) -> None:
        if self._offset:
            del self._buffer[: self._offset]
            self._offset = 0
