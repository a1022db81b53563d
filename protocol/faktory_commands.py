"""Faktory's commands (protocol/faktory.py decodes the lines), each a
Struct, and the parsing of one line into one: its verb, then its argument
checked field by field (a JSON document, or queue names). A line that is
not a command Leash takes is a ``Refused`` that carries the error to
answer. Pure.
"""

import re
from collections.abc import Callable
from typing import Annotated, ClassVar, Final, Literal, TypeVar

import msgspec
from msgspec import Meta, Raw, Struct

from leash.protocol import limits as L
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from leash.protocol.faktory_units import Unit, UnitError, parse_unit

VERSION: Final = 2
FETCH_WAIT_MS: Final = 2_000  # a FETCH that finds nothing waits this long for a job
BACKTRACE_MAX_LINES: Final = 50  # of a FAIL's backtrace, as Faktory keeps
PUSHB_MAX_UNITS: Final = 10_000
MUTATE_JIDS_MAX: Final = 10_000
PATTERN_MAX_CHARS: Final = 256
# Faktory's commands that Leash does not serve, and why.
NOT_SERVED: Final = {
    "BATCH": "batches of Faktory Enterprise are not served here; Leash batches are "
    "on the Leash protocol (docs/protocol.md)",
    "TRACK": "job tracking of Faktory Enterprise is not served here; see a job with leash job ID",
    "QUEUE": "pause and resume queues with leash pause / leash resume (the admin socket)",
}

_NAME = re.compile(L.NAME_PATTERN)
T = TypeVar("T")


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


MutateCommand = Literal["clear", "kill", "discard", "requeue"]
MutateTarget = Literal["retries", "scheduled", "dead"]


class Mutate(_Command, frozen=True):
    cmd: MutateCommand
    target: MutateTarget
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
    cmd: MutateCommand
    target: MutateTarget
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
