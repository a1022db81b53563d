"""Faktory's work protocol (FWP, version 2), sans-IO: bytes in, commands out,
replies to bytes. docs/faktory.md says what Leash makes of each command.

Theory of operation. A client sends lines: a verb, then a space and its
argument (a JSON document, or queue names), then CRLF (a bare LF is taken
too). ``CommandDecoder.feed(data)`` takes whatever bytes arrived;
``next_frame()`` returns the next command, or None when it needs more bytes.
The length of a line is checked as its bytes arrive, before they are kept:
a line longer than ``max_frame_bytes`` cannot be resynchronised, so it
raises a fatal ``ProtocolError`` and the caller closes the connection. A
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
import re
from collections.abc import Callable
from typing import Annotated, ClassVar, Final, Literal, TypeVar

import msgspec
from msgspec import Meta, Raw, Struct

from leash.protocol import limits as L
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode, ProtocolError
from leash.protocol.faktory_units import Unit, UnitError, parse_unit

VERSION: Final = 2
FETCH_WAIT_MS: Final = 2_000  # a FETCH that finds nothing waits this long for a job
BACKTRACE_MAX_LINES: Final = 50  # of a FAIL's backtrace, as Faktory keeps
PUSHB_MAX_UNITS: Final = 10_000
MUTATE_JIDS_MAX: Final = 10_000
PATTERN_MAX_CHARS: Final = 256
CLIENT_NAME: Final = "faktory"  # a process that said HELLO on this protocol (ProcessInfo.client)
CRLF: Final = b"\r\n"
# Faktory's commands that Leash does not serve, and why.
NOT_SERVED: Final = {
    "BATCH": "batches of Faktory Enterprise are not served here; Leash batches are "
    "on the Leash protocol (docs/protocol.md)",
    "TRACK": "job tracking of Faktory Enterprise is not served here; see a job with leash job ID",
    "QUEUE": "pause and resume queues with leash pause / leash resume (the admin socket)",
}

_NAME = re.compile(L.NAME_PATTERN)
T = TypeVar("T")
Label = Annotated[str, Meta(max_length=L.NAME_MAX_CHARS)]


# --- commands -------------------------------------------------------------------


class _Command(Struct, frozen=True):
    rid: ClassVar[int] = 0  # replies go in order; the shell's errors name rid 0


class Hello(_Command, frozen=True):
    version: int | None  # None: a client that sent no "v" (its password hash is one round)
    hostname: str
    wid: str  # "": a producer; else the consumer's process identity
    pid: int
    labels: list[str]
    pwdhash: str | None


class Push(_Command, frozen=True):
    unit: Unit


class PushBulk(_Command, frozen=True):
    units: list[Unit]
    refused: dict[str, str]  # the units that were not taken: jid (or "#index") -> why


class Fetch(_Command, frozen=True):
    queues: list[str]  # in the order they are tried
    wait_ms: ClassVar[int] = FETCH_WAIT_MS


class Ack(_Command, frozen=True):
    jid: str


class Fail(_Command, frozen=True):
    jid: str
    error: M.ErrorInfo


class Beat(_Command, frozen=True):
    wid: str
    current_state: str  # "", or the state the consumer says it is in: "quiet", "terminate"


class Info(_Command, frozen=True):
    pass


class End(_Command, frozen=True):
    pass


class Flush(_Command, frozen=True):
    pass


class Mutate(_Command, frozen=True):
    cmd: Literal["clear", "kill", "discard", "requeue"]
    target: Literal["retries", "scheduled", "dead"]
    jids: list[str] | None  # None: every job of the target (that matches the rest)
    pattern: str | None  # a glob matched against the unit's JSON, as Redis SCAN MATCH does
    jobtype: str | None


class Refused(_Command, frozen=True):
    """A whole line that is not a command Leash takes: what to answer."""

    code: ErrorCode
    message: str


Command = (
    Hello | Push | PushBulk | Fetch | Ack | Fail | Beat | Info | End | Flush | Mutate | Refused
)


# --- the JSON arguments ---------------------------------------------------------


class _HelloJson(Struct):
    v: int | None = None
    hostname: Annotated[str, Meta(max_length=L.HOSTNAME_MAX_CHARS)] | None = None
    wid: Annotated[str, Meta(max_length=L.NAME_MAX_CHARS)] | None = None
    pid: Annotated[int, Meta(ge=0, le=2**31)] | None = None
    labels: (
        Annotated[
            list[Annotated[str, Meta(max_length=L.NAME_MAX_CHARS)]], Meta(max_length=L.LABELS_MAX)
        ]
        | None
    ) = None
    pwdhash: Annotated[str, Meta(max_length=128)] | None = None


class _AckJson(Struct):
    jid: Annotated[str, Meta(min_length=1, max_length=L.JOB_ID_MAX_CHARS)]


class _FailJson(Struct):
    jid: Annotated[str, Meta(min_length=1, max_length=L.JOB_ID_MAX_CHARS)]
    errtype: str | None = None
    message: str | None = None
    backtrace: list[str] | None = None


class _BeatJson(Struct):
    wid: Annotated[str, Meta(min_length=1, max_length=L.NAME_MAX_CHARS)]
    current_state: Annotated[str, Meta(max_length=32)] | None = None
    rss_kb: int | None = None  # taken and not kept


class _FilterJson(Struct, forbid_unknown_fields=True):
    jids: (
        Annotated[
            list[Annotated[str, Meta(max_length=L.JOB_ID_MAX_CHARS)]],
            Meta(max_length=MUTATE_JIDS_MAX),
        ]
        | None
    ) = None
    regexp: Annotated[str, Meta(max_length=PATTERN_MAX_CHARS)] | None = None
    jobtype: Annotated[str, Meta(max_length=L.TYPE_MAX_CHARS)] | None = None


class _MutateJson(Struct, forbid_unknown_fields=True):
    cmd: Literal["clear", "kill", "discard", "requeue"]
    target: Literal["retries", "scheduled", "dead"]
    filter: _FilterJson | None = None


_hello = msgspec.json.Decoder(_HelloJson)
_ack = msgspec.json.Decoder(_AckJson)
_fail = msgspec.json.Decoder(_FailJson)
_beat = msgspec.json.Decoder(_BeatJson)
_mutate = msgspec.json.Decoder(_MutateJson)
_units = msgspec.json.Decoder(Annotated[list[Raw], Meta(max_length=PUSHB_MAX_UNITS)])
_jid_of = msgspec.json.Decoder(dict[str, Raw])


class _BadArgument(Exception):
    pass


_Parse = Callable[[bytes, int], "Command"]


def _json(decoder: "msgspec.json.Decoder[T]", data: bytes, what: str) -> T:
    try:
        return decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        raise _BadArgument(f"{what}: {error}") from None
    except RecursionError:
        raise _BadArgument(f"{what}: nested too deeply") from None


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
        limit raises a fatal ``ProtocolError``."""
        buffer, start = self._buffer, self._pos
        end = buffer.find(b"\n", max(start, self._scanned))
        if end < 0:
            self._scanned = len(buffer)
            if self._overflow or len(buffer) - start > self.max_frame_bytes + 1:
                raise ProtocolError(ErrorCode.TOO_LARGE, self._too_long(), fatal=True)
            if start:
                del buffer[:start]
                self._pos, self._scanned = 0, len(buffer)
            return None
        stop = end - 1 if end > start and buffer[end - 1] == 13 else end  # CRLF or LF
        if stop - start > self.max_frame_bytes:
            raise ProtocolError(ErrorCode.TOO_LARGE, self._too_long(), fatal=True)
        line = bytes(buffer[start:stop])
        self._pos = self._scanned = end + 1
        if self._pos == len(buffer):
            buffer.clear()
            self._pos = self._scanned = 0
        return parse_line(line, self.max_args_bytes)

    def _too_long(self) -> str:
        return f"a line over {self.max_frame_bytes} bytes"


def parse_line(line: bytes, max_args_bytes: int) -> Command:
    """One line (without its CRLF) as a command."""
    verb_bytes, _, argument = line.partition(b" ")
    try:
        verb = verb_bytes.decode("ascii")
    except UnicodeDecodeError:
        return Refused(ErrorCode.UNKNOWN_OP, "unknown command (not ASCII)")
    parse = _VERBS.get(verb)
    if parse is None:
        if verb in NOT_SERVED:
            return Refused(ErrorCode.UNKNOWN_OP, f"{verb} is not served: {NOT_SERVED[verb]}")
        shown = verb[:32] if verb.isprintable() else repr(verb[:32])
        return Refused(ErrorCode.UNKNOWN_OP, f"unknown command {shown}")
    try:
        return parse(argument, max_args_bytes)
    except _BadArgument as error:
        return Refused(ErrorCode.BAD_REQUEST, f"{verb}: {error}")
    except UnitError as error:
        return Refused(ErrorCode.BAD_REQUEST, f"{verb}: {error}")


def _none(verb: str) -> "_Parse":
    commands: dict[str, Command] = {"INFO": Info(), "END": End(), "FLUSH": Flush()}
    command = commands[verb]

    def parse(argument: bytes, _max_args_bytes: int) -> Command:
        if argument:
            raise _BadArgument("takes no argument")
        return command

    return parse


def _needed(argument: bytes, what: str) -> bytes:
    if not argument:
        raise _BadArgument(f"needs {what}")
    return argument


def _parse_hello(argument: bytes, _max_args_bytes: int) -> Command:
    hello = _json(_hello, _needed(argument, "a JSON object"), "HELLO")
    if hello.v is not None and hello.v > VERSION:
        raise _BadArgument(f"protocol version {hello.v} is not supported; this server speaks 2")
    return Hello(
        hello.v,
        hello.hostname or "",
        hello.wid or "",
        hello.pid or 0,
        list(hello.labels or ()),
        hello.pwdhash,
    )


def _parse_push(argument: bytes, max_args_bytes: int) -> Command:
    return Push(parse_unit(_needed(argument, "a work unit"), max_args_bytes))


def _parse_pushb(argument: bytes, max_args_bytes: int) -> Command:
    raws = _json(_units, _needed(argument, "a JSON array of work units"), "PUSHB")
    units: list[Unit] = []
    refused: dict[str, str] = {}
    for index, raw in enumerate(raws):
        try:
            units.append(parse_unit(raw, max_args_bytes))
        except UnitError as error:
            refused[_name_of(raw, index)] = str(error)
    return PushBulk(units, refused)


def _name_of(raw: Raw, index: int) -> str:
    """A refused unit's key in PUSHB's answer: its jid if it has one, else its place."""
    try:
        jid = msgspec.json.decode(_jid_of.decode(raw).get("jid", b'""'))
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        jid = None
    return jid if isinstance(jid, str) and jid else f"#{index}"


def _parse_fetch(argument: bytes, _max_args_bytes: int) -> Command:
    if not argument:
        return Fetch(["default"])
    try:
        names = argument.decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise _BadArgument("queue names are ASCII") from None
    if len(names) > L.FETCH_QUEUES_MAX:
        raise _BadArgument(f"at most {L.FETCH_QUEUES_MAX} queues")
    for name in names:
        if not name:
            raise _BadArgument("queue names are separated by one space")
        if len(name) > L.NAME_MAX_CHARS or not _NAME.match(name):
            raise _BadArgument(f"not a queue name: {name[: L.NAME_MAX_CHARS]!r}")
    return Fetch(names)


def _parse_ack(argument: bytes, _max_args_bytes: int) -> Command:
    ack = _json(_ack, _needed(argument, '{"jid": ...}'), "ACK")
    return Ack(ack.jid)


def _parse_fail(argument: bytes, _max_args_bytes: int) -> Command:
    fail = _json(_fail, _needed(argument, '{"jid": ...}'), "FAIL")
    lines = (fail.backtrace or [])[:BACKTRACE_MAX_LINES]
    error = M.ErrorInfo(
        type=(fail.errtype or "").strip()[: L.ERROR_TYPE_MAX_CHARS],
        message=(fail.message or "").strip()[: L.ERROR_MESSAGE_MAX_CHARS],
        backtrace="\n".join(lines)[: L.ERROR_BACKTRACE_MAX_CHARS],
    )
    return Fail(fail.jid, error)


def _parse_beat(argument: bytes, _max_args_bytes: int) -> Command:
    beat = _json(_beat, _needed(argument, '{"wid": ...}'), "BEAT")
    return Beat(beat.wid, beat.current_state or "")


def _parse_mutate(argument: bytes, _max_args_bytes: int) -> Command:
    mutate = _json(_mutate, _needed(argument, "a JSON operation"), "MUTATE")
    given = mutate.filter or _FilterJson()
    return Mutate(mutate.cmd, mutate.target, given.jids, given.regexp or None, given.jobtype)


_VERBS: Final = {
    "HELLO": _parse_hello,
    "PUSH": _parse_push,
    "PUSHB": _parse_pushb,
    "FETCH": _parse_fetch,
    "ACK": _parse_ack,
    "FAIL": _parse_fail,
    "BEAT": _parse_beat,
    "MUTATE": _parse_mutate,
    "INFO": _none("INFO"),
    "END": _none("END"),
    "FLUSH": _none("FLUSH"),
}


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
