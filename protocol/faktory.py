"""Faktory's work protocol (FWP, version 2), sans-IO: bytes in, commands out,
replies to bytes. docs/faktory.md says what Leash makes of each command.

Theory of operation. A client sends lines: a verb, then a space and its
argument (a JSON document, or queue names), then CRLF (a bare LF is taken
too). ``CommandDecoder.feed(data)`` takes whatever bytes arrived;
``next_frame()`` returns the next command, or None when it needs more bytes.
The length of a line is checked as its bytes arrive, before they are kept:
a line longer than ``max_frame_bytes`` cannot be resynchronised, so it
raises ``ProtocolError`` and the caller closes the connection. A
line that is whole but wrong (an unknown verb, bad JSON, a field out of
bounds) is not fatal: it comes out as ``Refused``, which carries the error
to answer, and the next line is read as usual.

Replies are RESP (the Redis protocol): ``+OK``, a bulk string (``$``
length, the bytes) or ``$-1`` for nothing, and errors ``-CODE message``,
where CODE is ``ERR`` for malformed input and a wrong password, as Faktory
has it, and the Leash error code in capitals otherwise (``-STALE_LEASE ...``).

Passwords: a server that wants one sends a salt ``s`` and a count ``i`` in
its ``HI``; the client answers with the hex of SHA-256 applied ``i`` times,
first to the password followed by the salt, then to the digest.
"""

import hashlib
from typing import ClassVar, Final

from msgspec import Struct

from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode, ProtocolError
from leash.protocol.faktory_commands import (
    BACKTRACE_MAX_LINES,
    FETCH_WAIT_MS,
    MUTATE_JIDS_MAX,
    NOT_SERVED,
    PATTERN_MAX_CHARS,
    PUSHB_MAX_UNITS,
    VERSION,
    Ack,
    Beat,
    Command,
    End,
    Fail,
    Fetch,
    Flush,
    Hello,
    Info,
    Mutate,
    MutateCommand,
    MutateTarget,
    Push,
    PushBulk,
    Refused,
    parse_line,
)

__all__ = [  # the commands are faktory_commands.py's; the rest of Leash takes them from here
    "BACKTRACE_MAX_LINES",
    "CLIENT_NAME",
    "FETCH_WAIT_MS",
    "MUTATE_JIDS_MAX",
    "NOT_SERVED",
    "PATTERN_MAX_CHARS",
    "PUSHB_MAX_UNITS",
    "VERSION",
    "Ack",
    "Beat",
    "Bulk",
    "Command",
    "CommandDecoder",
    "End",
    "Fail",
    "Fetch",
    "Flush",
    "Hello",
    "Info",
    "Mutate",
    "MutateCommand",
    "MutateTarget",
    "Push",
    "PushBulk",
    "Refused",
    "Reply",
    "encode_reply",
    "error_line",
    "greeting",
    "parse_line",
    "password_hash",
]

CLIENT_NAME: Final = "faktory"  # a process that said HELLO on this protocol (ProcessInfo.client)
CRLF: Final = b"\r\n"
# --- the decoder ----------------------------------------------------------------


class CommandDecoder:
    """Splits a byte stream into lines and lines into commands."""

    __slots__ = ("_buffer", "_overflow", "_pos", "_scanned", "max_args_bytes", "max_frame_bytes")

    def __init__(self, max_frame_bytes: int, max_args_bytes: int) -> None:
        self._buffer = bytearray()
        self._pos = 0  # where the next line starts
        self._scanned = 0  # from _pos to here the buffer holds no line end
        self._overflow = False
        self.max_frame_bytes = max_frame_bytes  # the longest line, without its CRLF
        self.max_args_bytes = max_args_bytes

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer) - self._pos

    @property
    def in_frame(self) -> bool:
        """True while a line has started and not ended (or lines wait to be read)."""
        return len(self._buffer) > self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if not data or self._overflow:
            return
        buffer = self._buffer
        buffer += data
        limit = self.max_frame_bytes + 1  # an unfinished line may end in its CR
        if len(buffer) - self._scanned > limit:
            end = buffer.rfind(b"\n", self._scanned)
            start = self._pos if end < 0 else end + 1  # where the unfinished line starts
            if len(buffer) - start > limit:
                del buffer[start + limit + 1 :]  # keep no more of it than proves it too long
                self._overflow = True

    def next_frame(self) -> Command | None:
        """The next command; None until a whole line is in. A line over the
        limit raises ``ProtocolError``."""
        buffer, start = self._buffer, self._pos
        end = buffer.find(b"\n", max(start, self._scanned))
        if end < 0:
            self._scanned = len(buffer)
            if self._overflow or len(buffer) - start > self.max_frame_bytes + 1:
                raise ProtocolError(ErrorCode.TOO_LARGE, self._too_long())
            if start:
                del buffer[:start]
                self._pos, self._scanned = 0, len(buffer)
            return None
        stop = end - 1 if end > start and buffer[end - 1] == 13 else end  # CRLF or LF
        if stop - start > self.max_frame_bytes:
            raise ProtocolError(ErrorCode.TOO_LARGE, self._too_long())
        line = bytes(buffer[start:stop])
        self._pos = self._scanned = end + 1
        if self._pos == len(buffer):
            buffer.clear()
            self._pos = self._scanned = 0
        return parse_line(line, self.max_args_bytes)

    def _too_long(self) -> str:
        return f"a line over {self.max_frame_bytes} bytes"


# --- replies --------------------------------------------------------------------


class Bulk(Struct, frozen=True):
    """A bulk string reply: a JSON document, or nothing (``$-1``)."""

    data: bytes | None
    rid: ClassVar[int] = 0


OK: Final = b"+OK" + CRLF
NOTHING: Final = b"$-1" + CRLF
Reply = M.Ok | M.Error | Bulk


def encode_reply(reply: Reply) -> bytes:
    match reply:
        case M.Ok():
            return OK
        case Bulk(data=None):
            return NOTHING
        case Bulk(data=bytes() as data):
            return b"$%d\r\n%s\r\n" % (len(data), data)
        case M.Error(code=code, message=message):
            return error_line(code, message)
    raise AssertionError(f"not a reply of this protocol: {reply!r}")


# Faktory's ERR: malformed input, and a wrong password ("ERR Invalid password"
# is what its clients look for).
_ERR_CODES: Final = frozenset((ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_OP, ErrorCode.AUTH_FAILED))


def error_line(code: str, message: str) -> bytes:
    """``-CODE message``: ERR for malformed input, else the Leash code in capitals."""
    word = "ERR" if code in _ERR_CODES else code.upper()
    text = " ".join(message.split())  # one line, whatever the message held
    return f"-{word} {text}".encode() + CRLF


def greeting(salt: str | None, iterations: int) -> bytes:
    """The server's ``HI``: the version, and the salt and rounds when it wants a password."""
    if salt is None:
        return b'+HI {"v":2}' + CRLF
    return b'+HI {"v":2,"i":%d,"s":"%s"}' % (iterations, salt.encode()) + CRLF


def password_hash(password: str, salt: str, iterations: int) -> str:
    """What a client sends for ``password`` given the ``HI``'s salt and rounds."""
    digest = hashlib.sha256((password + salt).encode()).digest()
    for _ in range(iterations - 1):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()
