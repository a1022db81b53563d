"""Faktory work units (JSON) and what Leash makes of them, both ways. Pure.

A work unit's fields map onto a Leash job (docs/faktory.md has the table):
``jid`` → id, ``jobtype`` → type, ``queue``, ``priority`` (1 to 9), ``args``
(a JSON array, stored as msgpack so a Leash worker gets it as a list),
``reserve_for`` (seconds) → ``lease_ttl_ms``, ``at`` (RFC 3339) → the time it
becomes ready, ``retry`` → ``max_attempts`` (retry + 1; -1: one attempt, then
dead; 0: one attempt, then forgotten). ``created_at``, ``at``,
``backtrace``, ``custom`` and every field Leash does not know are *kept*:
their JSON text, each value byte for byte, is stored on the job as one JSON
object (``extra``) and merged back into the unit a consumer fetches.
``enqueued_at`` and ``failure`` are the server's to set: a pushed unit's are
ignored, and a fetched unit gets them from the job.

Every bound is checked here, before the core sees a unit: a unit that does
not fit gets an error naming the field, and nothing is pushed.
"""

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Final

import msgspec
from msgspec import Meta, Raw, Struct

from leash.protocol import argtypes
from leash.protocol import limits as L
from leash.protocol import messages as M

JID_MIN_CHARS: Final = 8  # Faktory refuses shorter ids ("a reasonable jid")
RESERVE_FOR_DEFAULT_S: Final = 1800  # 0 or absent: Faktory's default reservation
RESERVE_FOR_MAX_S: Final = 24 * 3600  # Faktory's limit, and Leash's longest lease
RETRY_DEFAULT: Final = 25
RETRY_MAX: Final = L.MAX_ATTEMPTS_MAX - 1
PRIORITY_MIN: Final = 1  # the protocol's range; Leash's own starts at 0
KEPT_FIELDS: Final = (
    "created_at",
    "at",
    "backtrace",
    "custom",
)  # kept as sent, besides unknown ones
SERVER_FIELDS: Final = frozenset(("enqueued_at", "failure"))  # set by the server: ignored on push
KNOWN_FIELDS: Final = frozenset(("jid", "jobtype", "args", "queue", "priority", "reserve_for"))
KNOWN_FIELDS_WITH_RETRY: Final = KNOWN_FIELDS | {"retry"}

# A jid is a client id (protocol.limits), or starts with _ and holds no . or :
# (Faktory's Go client makes ids of base64url characters, so 1 in 64 starts
# with _; the broker's own ids all hold a . or a :).
JID_RE: Final = re.compile(r"(?:[A-Za-z0-9.:-][A-Za-z0-9_.:-]*|_[A-Za-z0-9_-]*)\Z")
NAME_RE: Final = re.compile(L.NAME_PATTERN)
Rfc3339 = Annotated[datetime, Meta(tz=True)]
_RAW_FIELDS = msgspec.json.Decoder(dict[str, Raw])
_STR = msgspec.json.Decoder(str)
_INT = msgspec.json.Decoder(int | None)
_LIST = msgspec.json.Decoder(list[Any])
_TIME = msgspec.json.Decoder(Rfc3339)
_OBJECT = msgspec.json.Decoder(dict[str, Any] | None)
_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()


class UnitError(ValueError):
    """A work unit Leash cannot take; the message names the field."""


class Unit(Struct, frozen=True):
    """A pushed work unit, checked and mapped onto a Leash job."""

    jid: str
    spec: M.JobSpec  # what the core pushes (built here, checked here)
    extra: bytes | None  # the kept fields as one JSON object; None: nothing to keep
    discard_dead: bool  # retry 0: forgotten when its one attempt fails


def parse_unit(data: bytes | Raw, max_args_bytes: int) -> Unit:
    """A work unit from its JSON; ``UnitError`` says what is wrong with it."""
    fields = _fields(data)
    jid = _jid(fields)
    jobtype = _text(fields, "jobtype", 1, L.TYPE_MAX_CHARS)
    args = _args(fields, max_args_bytes)
    queue = _queue(fields)
    priority = _int(fields, "priority", PRIORITY_MIN, L.PRIORITY_MAX, L.PRIORITY_DEFAULT)
    reserve_for_s = _int(fields, "reserve_for", 0, RESERVE_FOR_MAX_S, 0) or RESERVE_FOR_DEFAULT_S
    retry = _int(fields, "retry", -1, RETRY_MAX, RETRY_DEFAULT)
    run_at_ms = _at(fields)
    _int(fields, "backtrace", 0, 2**31, 0)  # kept as sent; checked to be a count
    if "created_at" in fields:
        _decoded(_STR, fields["created_at"], "created_at", "a string")
    custom: dict[str, Any] | None = None
    if "custom" in fields:
        custom = _decoded(_OBJECT, fields["custom"], "custom", "an object or null")
    extra = _extra(fields)
    if len(args) + len(extra or b"") > max_args_bytes:
        raise UnitError(f"args and kept fields of a unit are over the limit of {max_args_bytes} B")
    spec = M.JobSpec(
        type=jobtype,
        queue=queue,
        args=args,
        id=jid,
        priority=priority,
        run_at_ms=run_at_ms,
        max_attempts=max(retry, 0) + 1,
        lease_ttl_ms=reserve_for_s * 1000,
    )
    if custom:
        spec = _enterprise(spec, custom)
    return Unit(jid, spec, extra, retry == 0)


def _enterprise(spec: M.JobSpec, custom: dict[str, Any]) -> M.JobSpec:
    """Faktory Enterprise's options in ``custom``, onto Leash's (kept in
    ``custom`` too): ``unique_for`` (seconds, > 0): the job is unique by
    jobtype, args and queue (Leash's derived key; Leash holds it until the
    job ends, not for at most ``unique_for``: docs/faktory.md);
    ``unique_until``: ``success`` (the default) only; ``expires_at`` (RFC
    3339) or ``expires_in`` (seconds): not leased by then, never run."""
    changes: dict[str, Any] = {}
    unique_for = custom.get("unique_for")
    if unique_for is not None:
        if isinstance(unique_for, bool) or not isinstance(unique_for, int | float):
            raise UnitError("custom.unique_for must be a number of seconds")
        if not 0 < unique_for <= L.UNIQUE_FOR_MAX_MS / 1000:
            raise UnitError("custom.unique_for must be above 0 and at most 30 days")
        changes["unique"] = True
    if custom.get("unique_until", "success") != "success":
        raise UnitError(
            "custom.unique_until must be success: Leash holds a unique job's key until it ends"
        )
    expires_at, expires_in = custom.get("expires_at"), custom.get("expires_in")
    if expires_at is not None and expires_in is not None:
        raise UnitError("give custom.expires_at or custom.expires_in, not both")
    if expires_at is not None:
        try:
            when = _TIME.decode(_json.encode(expires_at))
        except (msgspec.ValidationError, msgspec.DecodeError):
            raise UnitError("custom.expires_at must be an RFC 3339 time with a zone") from None
        changes["expires_at_ms"] = min(max(int(when.timestamp() * 1000), 0), L.TIME_MAX_MS)
    if expires_in is not None:
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
            raise UnitError("custom.expires_in must be a number of seconds")
        if not 0 < expires_in * 1000 <= L.SCHEDULE_HORIZON_MS:
            raise UnitError("custom.expires_in must be above 0 and at most 5 years")
        changes["ttl_ms"] = max(1, int(expires_in * 1000))
    return msgspec.structs.replace(spec, **changes) if changes else spec


def _fields(data: bytes | Raw) -> dict[str, Raw]:
    try:
        return _RAW_FIELDS.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        raise UnitError(f"a work unit is a JSON object: {error}") from None
    except RecursionError:
        raise UnitError("a work unit is nested too deeply") from None


def _decoded(decoder: "msgspec.json.Decoder[Any]", raw: Raw, name: str, what: str) -> Any:
    try:
        return decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise UnitError(f"{name} must be {what}") from None
    except RecursionError:
        raise UnitError(f"{name} is nested too deeply") from None


def _text(fields: dict[str, Raw], name: str, low: int, high: int) -> str:
    raw = fields.get(name)
    if raw is None:
        raise UnitError(f"a work unit needs {name}")
    value: str = _decoded(_STR, raw, name, "a string")
    if not low <= len(value) <= high:
        raise UnitError(f"{name} must have {low} to {high} characters")
    return value


def _jid(fields: dict[str, Raw]) -> str:
    jid = _text(fields, "jid", JID_MIN_CHARS, L.JOB_ID_MAX_CHARS)
    if not JID_RE.match(jid):
        raise UnitError(
            "jid may hold letters, digits and _ . : - only, and one starting with _ "
            "may not hold . or : (the broker's own ids look like that)"
        )
    return jid


def _queue(fields: dict[str, Raw]) -> str:
    if "queue" not in fields:
        return "default"
    name: str = _decoded(_STR, fields["queue"], "queue", "a string")
    if not name:
        return "default"  # as Faktory does
    if len(name) > L.NAME_MAX_CHARS or not NAME_RE.match(name):
        raise UnitError(
            f"queue must have at most {L.NAME_MAX_CHARS} letters, digits and _ . : - characters"
        )
    return name


def _int(fields: dict[str, Raw], name: str, low: int, high: int, default: int) -> int:
    raw = fields.get(name)
    if raw is None:
        return default
    value: int | None = _decoded(_INT, raw, name, "an integer")
    if value is None:
        return default
    if not low <= value <= high:
        raise UnitError(f"{name} must be between {low} and {high}, not {value}")
    return value


def _args(fields: dict[str, Raw], max_args_bytes: int) -> Raw:
    raw = fields.get("args")
    if raw is None:
        raise UnitError("a work unit needs args (a JSON array)")
    if len(raw) > 2 * max_args_bytes + 64:  # JSON is never less than half its msgpack
        raise UnitError(f"args are over the limit of {max_args_bytes} B")
    values = _decoded(_LIST, raw, "args", "a JSON array")
    try:
        packed = _msgpack.encode(values)
    except OverflowError:
        raise UnitError("args hold an integer msgpack cannot carry (beyond 64 bits)") from None
    if len(packed) > max_args_bytes:
        raise UnitError(f"args of {len(packed)} B (msgpack) are over the limit of {max_args_bytes}")
    return Raw(packed)


def _at(fields: dict[str, Raw]) -> int | None:
    raw = fields.get("at")
    if raw is None:
        return None
    if _decoded(_STR, raw, "at", "an RFC 3339 time") == "":
        return None
    when: datetime = _decoded(_TIME, raw, "at", "an RFC 3339 time with a zone")
    at_ms = int(when.timestamp() * 1000)
    if at_ms > L.TIME_MAX_MS:
        raise UnitError("at is too far in the future")
    return max(at_ms, 0)  # a time before 1970 is a time in the past: ready at once


def _extra(fields: dict[str, Raw]) -> bytes | None:
    """The fields Leash keeps as they came: one JSON object of their raw values."""
    parts = [
        _json.encode(name) + b":" + bytes(raw)
        for name, raw in fields.items()
        if name not in KNOWN_FIELDS_WITH_RETRY and name not in SERVER_FIELDS
    ]
    return b"{" + b",".join(parts) + b"}" if parts else None


# --- a job, as a consumer fetches it --------------------------------------------


def iso_time(at_ms: int) -> str:
    """Unix ms as RFC 3339 in UTC with milliseconds, as the units carry times."""
    moment = datetime.fromtimestamp(at_ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at_ms % 1000:03d}Z"


def retry_of(max_attempts: int, discard_dead: bool) -> int:
    """The unit's ``retry`` for a job's attempts (the inverse of parse_unit's)."""
    return 0 if discard_dead else max_attempts - 1 if max_attempts > 1 else -1


def args_json(args: Raw) -> Raw:
    """A job's args as a JSON array: a msgpack array as it is, anything else
    (a Leash job's map or single value) as the one item of an array. Values
    JSON has no type for are shown as text (``argtypes.readable``): a
    datetime or a date in RFC 3339, a Decimal or a UUID as its text, bytes
    in base64, an ext of another code as ``{"ext": code, "data": base64}``."""
    try:
        values = argtypes.readable(argtypes.unpack(args))
    except (msgspec.DecodeError, ValueError, RecursionError):
        values = None  # the broker never stores undecodable args; be total anyway
    if not isinstance(values, list):
        values = [values]
    return Raw(_json.encode(values))


def kept_fields(extra: bytes | None) -> dict[str, Raw]:
    """The kept fields of a job, each value as it came."""
    return {} if extra is None else _RAW_FIELDS.decode(extra)


def encode_unit(unit: dict[str, Any]) -> bytes:
    return _json.encode(unit)
