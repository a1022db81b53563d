"""Frame codec (sans-IO): 4-byte big-endian body length, then the body.

Theory of operation: the caller feeds whatever bytes arrived with
``feed(data)`` and then calls ``next_frame()`` until it returns None. The
length prefix is checked against the limit *before* any of the body is
buffered, so a hostile length cannot make us allocate (nor copy a large
chunk that arrived with it). A bad length cannot be
resynchronised: it raises ``ProtocolError`` and the caller must close.

Without copies: the bytes of one ``feed`` are kept as they came (a ``bytes``
object is not copied; anything else is copied once, so the caller may reuse
its buffer) and each body is cut straight out of them. Only a frame that
spans two reads is assembled in a buffer; once it is complete, what follows
it is cut out of the reads again.
"""

from leash.protocol.errors import ErrorCode, ProtocolError
from leash.protocol.limits import FRAME_HEADER_BYTES, FRAME_MAX_BYTES

_HEADER_BYTES = FRAME_HEADER_BYTES


def encode_frame(body: bytes) -> bytes:
    """Prefix ``body`` with its length."""
    return len(body).to_bytes(_HEADER_BYTES, "big") + body


class FrameDecoder:
    """Splits a byte stream into frame bodies."""

    __slots__ = ("_buffer", "_chunk", "_offset", "max_frame_bytes")

    def __init__(self, max_frame_bytes: int = FRAME_MAX_BYTES) -> None:
        self._chunk = b""  # the bytes fed, from _offset on unread
        self._offset = 0
        self._buffer = bytearray()  # the start of a frame that spans reads (then _chunk is b"")
        self.max_frame_bytes = max_frame_bytes

    @property
    def buffered_bytes(self) -> int:
        return len(self._chunk) - self._offset + len(self._buffer)

    @property
    def in_frame(self) -> bool:
        """True while a frame has started but not completed."""
        return self.buffered_bytes > 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if len(data) > self.max_frame_bytes:
            data = self._refusable(data)
        if self._buffer:
            self._buffer += data
        elif self._offset < len(self._chunk):  # frames not taken yet: keep them in order
            self._buffer += memoryview(self._chunk)[self._offset :]
            self._buffer += data
            self._chunk, self._offset = b"", 0
        else:
            self._chunk = data if type(data) is bytes else bytes(data)
            self._offset = 0

    def _refusable(self, data: bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
        """A frame that cannot be accepted: keep its header for next_frame to
        refuse, and none of the rest (the stream is unusable after it)."""
        started = self.buffered_bytes
        if started >= _HEADER_BYTES:
            return data  # the header is in: next_frame judges it
        unread = self._buffer or memoryview(self._chunk)[self._offset :]
        need = _HEADER_BYTES - started
        length = int.from_bytes(bytes(unread) + bytes(data[:need]), "big")
        return data if 0 < length <= self.max_frame_bytes else data[:need]

    def next_frame(self) -> bytes | None:
        """Return the next complete body, or None if more bytes are needed."""
        if self._buffer:
            return self._from_buffer()
        chunk, offset = self._chunk, self._offset
        available = len(chunk) - offset
        if available < _HEADER_BYTES:
            if available:
                self._keep_rest()
            elif chunk:
                self._chunk, self._offset = b"", 0
            return None
        length = self._checked(int.from_bytes(chunk[offset : offset + _HEADER_BYTES], "big"))
        end = offset + _HEADER_BYTES + length
        if len(chunk) < end:
            self._keep_rest()
            return None
        self._offset = end
        return chunk[offset + _HEADER_BYTES : end]

    def _checked(self, length: int) -> int:
        if length == 0:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "empty frame")
        if length > self.max_frame_bytes:
            raise ProtocolError(
                ErrorCode.TOO_LARGE,
                f"frame of {length} bytes is over the limit of {self.max_frame_bytes}",
            )
        return length

    def _keep_rest(self) -> None:
        """The start of a frame is all that is left: copy it, so the chunk can go."""
        chunk, offset = self._chunk, self._offset
        if offset < len(chunk):
            self._buffer += memoryview(chunk)[offset:]
        self._chunk, self._offset = b"", 0

    def _from_buffer(self) -> bytes | None:
        buffer = self._buffer
        if len(buffer) < _HEADER_BYTES:
            return None
        length = self._checked(int.from_bytes(buffer[:_HEADER_BYTES], "big"))
        end = _HEADER_BYTES + length
        if len(buffer) < end:
            return None
        body = bytes(buffer[_HEADER_BYTES:end])
        self._chunk, self._offset = bytes(buffer[end:]), 0  # frames after it, cut as usual
        buffer.clear()
        return body
