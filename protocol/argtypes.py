"""Job args that keep their types: what a job's args may hold, how the
values msgpack has no type for travel (extension types), and how args are
shown to people (pure: values in, bytes or values out).

The types, and how each travels (docs/protocol.md section 3.5):

    None, bool, int, float, str     msgpack's own (int within -2^63 .. 2^64 - 1)
    bytes                           bin (a bytearray or memoryview too: back as bytes)
    list                            array (a tuple too: back as a list)
    dict                            map; keys of the scalar types here
    datetime with a zone            ext -1, msgpack's timestamp: back in UTC (same instant)
    datetime without a zone         ext 1, the timestamp's layout, the wall clock read as UTC
    date                            ext 2, 4 bytes: signed days since 1970-01-01
    Decimal                         ext 3, its text in ASCII (``str(value)``)
    UUID                            ext 4, its 16 bytes

Anything else (a set, an enum, a dataclass, a ``time``, a subclass of a
supported type ...) is refused by ``pack`` with ``UnsupportedArgType``,
whose message names the field (``args[1]["when"]: set is not a supported
type``), instead of being turned into something that does not come back as
itself. A value nested so deeply that it cannot be walked is refused too.

``unpack`` is the inverse: the ext types above become their values, an
unknown ext stays a ``msgspec.msgpack.Ext``, and a known ext whose payload
is malformed raises ``msgspec.DecodeError``. ``readable`` turns decoded
args into what JSON can show (times and dates in RFC 3339, Decimal and UUID
as text, bytes in base64, an unknown ext as ``{"ext": code, "data": ...}``).

The broker never calls any of this: it keeps args as the producer's bytes.
"""

import datetime
import re
import uuid
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, Final

import msgspec
from msgspec.msgpack import Ext

NAIVE_DATETIME_EXT: Final = 1
DATE_EXT: Final = 2
DECIMAL_EXT: Final = 3
UUID_EXT: Final = 4
TIMESTAMP_EXT: Final = -1  # msgpack's own; msgspec encodes and decodes it

_EPOCH = datetime.datetime(1970, 1, 1)
_EPOCH_ORDINAL = _EPOCH.toordinal()
_NANOS_MAX = 999_999_999
_INT_MIN, _INT_END = -(2**63), 2**64  # what a msgpack integer can carry
# str(Decimal) writes these, and Decimal() reads them back exactly.
_DECIMAL_TEXT = re.compile(
    rb"[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|Infinity|Inf|s?NaN\d*)\Z", re.IGNORECASE
)
SUPPORTED = (
    "None, bool, int, float, str, bytes, list, tuple, dict, "
    "datetime, date, Decimal, UUID (nested in lists and dicts)"
)


class UnsupportedArgType(TypeError):
    """A job's args hold a value that would not come back as itself.
    ``path`` names the field (``args[1]["when"]``), ``reason`` what is wrong."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class _Refused(Exception):
    """Raised in the walk; each level on the way out adds its step to the path."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.steps: list[str] = []


# --- producing: the walk that converts and refuses ------------------------------


def pack(args: Any) -> bytes:
    """The msgpack bytes of ``args``; ``UnsupportedArgType`` for a value of
    any other type than the ones above."""
    try:
        value = _value(args)
    except _Refused as refused:
        raise UnsupportedArgType(
            "args" + "".join(reversed(refused.steps)), refused.reason
        ) from None
    except RecursionError:
        reason = "nested too deeply to encode (a broker takes 64 levels)"
        raise UnsupportedArgType("args", reason) from None
    return msgspec.msgpack.encode(value)


def _value(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is float or kind is bool or value is None:
        return value
    if kind is int:
        if _INT_MIN <= value < _INT_END:
            return value
        raise _Refused("int out of msgpack's range (-2**63 to 2**64 - 1)")
    if kind is list or kind is tuple:
        return _array(value)
    if kind is dict:
        return _map(value)
    convert = _CONVERT.get(kind)
    if convert is None:
        raise _Refused(f"{kind.__qualname__} is not a supported type (supported: {SUPPORTED})")
    return convert(value)


def _array(items: list[Any] | tuple[Any, ...]) -> list[Any] | tuple[Any, ...]:
    if len(items) > _WALK_MAX_ITEMS and _plain(items):
        return items  # msgspec writes a tuple as an array too
    out: list[Any] = []
    try:
        for item in items:
            out.append(_value(item))
    except _Refused as refused:
        refused.steps.append(f"[{len(out)}]")
        raise
    return out


def _plain(values: Iterable[Any]) -> bool:
    """Whether every value is a scalar that msgspec writes as it is (a fast
    path: the kinds are gathered in C, and ints checked by their extremes)."""
    kinds = set(map(type, values))
    if kinds <= _PLAIN_KINDS:
        return True
    if kinds - _PLAIN_KINDS != _INTS:
        return False
    ints = list(values) if len(kinds) == 1 else [value for value in values if type(value) is int]
    return min(ints) >= _INT_MIN and max(ints) < _INT_END


def _map(entries: dict[Any, Any]) -> dict[Any, Any] | msgspec.Raw:
    if len(entries) > _WALK_MAX_ITEMS and _plain(entries) and _plain(entries.values()):
        return entries
    out: dict[Any, Any] = {}
    pairs: list[tuple[Any, Any]] | None = None  # once a key is an Ext, which cannot be hashed
    key: Any = None
    try:
        for key, item in entries.items():
            if type(key) not in _KEY_TYPES:
                raise _Refused(f"a map key of type {type(key).__qualname__} is not supported")
            packed_key, packed = _value(key), _value(item)
            if pairs is None and type(packed_key) is Ext:
                pairs = list(out.items())
            if pairs is None:
                out[packed_key] = packed
            else:
                pairs.append((packed_key, packed))
    except _Refused as refused:
        refused.steps.append(f"[{_key_text(key)}]")
        raise
    return out if pairs is None else _packed_map(pairs)


def _packed_map(pairs: list[tuple[Any, Any]]) -> msgspec.Raw:
    """A map whose keys msgspec cannot take in a dict, encoded here (its
    keys and values are msgspec's to encode)."""
    count = len(pairs)
    if count < 16:
        header = bytes([0x80 | count])
    elif count < 1 << 16:
        header = b"\xde" + count.to_bytes(2, "big")
    else:
        header = b"\xdf" + count.to_bytes(4, "big")
    encode = msgspec.msgpack.encode
    return msgspec.Raw(header + b"".join(encode(key) + encode(value) for key, value in pairs))


def _key_text(key: Any) -> str:
    if type(key) is str:
        return msgspec.json.encode(key).decode()
    try:
        return repr(key)[:60]
    except Exception:  # a key whose repr fails still gets a path
        return f"<{type(key).__qualname__}>"


def _datetime(value: datetime.datetime) -> Any:
    if value.utcoffset() is not None:  # msgpack's timestamp (msgspec writes it)
        try:
            return value.astimezone(datetime.UTC)
        except OverflowError:
            raise _Refused("datetime out of the years 1 to 9999 in UTC") from None
    since = value.replace(tzinfo=None) - _EPOCH
    seconds = since.days * 86_400 + since.seconds
    return Ext(NAIVE_DATETIME_EXT, timestamp_payload(seconds, since.microseconds * 1000))


def timestamp_payload(seconds: int, nanos: int) -> bytes:
    """msgpack's timestamp layout: 4 bytes (seconds, when it fits in 32
    bits and there are no nanoseconds), 8 (30 bits of nanoseconds, 34 of
    seconds) or 12 (4 of nanoseconds, 8 of signed seconds)."""
    if seconds >> 34 == 0:
        packed = nanos << 34 | seconds
        if packed >> 32 == 0:
            return packed.to_bytes(4, "big")
        return packed.to_bytes(8, "big")
    return nanos.to_bytes(4, "big") + seconds.to_bytes(8, "big", signed=True)


def _date(value: datetime.date) -> Ext:
    return Ext(DATE_EXT, (value.toordinal() - _EPOCH_ORDINAL).to_bytes(4, "big", signed=True))


def _decimal(value: Decimal) -> Ext:
    return Ext(DECIMAL_EXT, str(value).encode("ascii"))


def _uuid(value: uuid.UUID) -> Ext:
    return Ext(UUID_EXT, value.bytes)


_CONVERT: Final[dict[type, Any]] = {
    bytes: lambda value: value,
    bytearray: bytes,
    memoryview: bytes,
    datetime.datetime: _datetime,
    datetime.date: _date,
    Decimal: _decimal,
    uuid.UUID: _uuid,
}
_WALK_MAX_ITEMS: Final = 8  # containers this small are walked: faster than _plain
_PLAIN_KINDS: Final = frozenset({str, float, bool, type(None), bytes})
_INTS: Final = frozenset({int})
_KEY_TYPES: Final = frozenset(
    {str, int, float, bool, type(None), bytes, datetime.datetime, datetime.date, Decimal, uuid.UUID}
)


# --- consuming ----------------------------------------------------------------


def unpack(data: bytes | memoryview | msgspec.Raw) -> Any:
    """The values of msgpack args, the ext types above decoded;
    ``msgspec.DecodeError`` for bytes that are not such args."""
    try:
        return msgspec.msgpack.decode(data, ext_hook=ext_value)
    except msgspec.DecodeError:
        raise
    except ValueError as error:  # from ext_value
        raise msgspec.DecodeError(f"malformed ext value: {error}") from None
    except TypeError as error:  # an ext of an unknown code as a map key: not hashable
        raise msgspec.DecodeError(f"a map key that cannot be a key: {error}") from None


def ext_value(code: int, data: memoryview) -> Any:
    """The value of one ext (msgspec's ``ext_hook``); ``ValueError`` for a
    known code with a malformed payload (msgspec raises it as DecodeError)."""
    if code == NAIVE_DATETIME_EXT:
        return _naive_from(bytes(data))
    if code == DATE_EXT:
        if len(data) != 4:
            raise ValueError(f"a date (ext {DATE_EXT}) is 4 bytes, not {len(data)}")
        return datetime.date.fromordinal(int.from_bytes(data, "big", signed=True) + _EPOCH_ORDINAL)
    if code == DECIMAL_EXT:
        text = bytes(data)
        if not _DECIMAL_TEXT.match(text):
            raise ValueError(f"a Decimal (ext {DECIMAL_EXT}) is its text, not {text[:40]!r}")
        return Decimal(text.decode("ascii"))
    if code == UUID_EXT:
        if len(data) != 16:
            raise ValueError(f"a UUID (ext {UUID_EXT}) is 16 bytes, not {len(data)}")
        return uuid.UUID(bytes=bytes(data))
    return Ext(code, bytes(data))


def _naive_from(data: bytes) -> datetime.datetime:
    if len(data) == 4:
        seconds, nanos = int.from_bytes(data, "big"), 0
    elif len(data) == 8:
        packed = int.from_bytes(data, "big")
        seconds, nanos = packed & (1 << 34) - 1, packed >> 34
    elif len(data) == 12:
        nanos, seconds = (
            int.from_bytes(data[:4], "big"),
            int.from_bytes(data[4:], "big", signed=True),
        )
    else:
        raise ValueError(
            f"a datetime (ext {NAIVE_DATETIME_EXT}) is 4, 8 or 12 bytes, not {len(data)}"
        )
    if nanos > _NANOS_MAX:
        raise ValueError(f"a datetime's nanoseconds are at most {_NANOS_MAX}, not {nanos}")
    try:  # Python keeps microseconds: finer nanoseconds are cut
        return _EPOCH + datetime.timedelta(seconds=seconds, microseconds=nanos // 1000)
    except OverflowError:
        raise ValueError("a datetime beyond the years 1 to 9999") from None


# --- showing ------------------------------------------------------------------


def readable(value: Any) -> Any:
    """Decoded args as JSON can show them (see the module docstring)."""
    return msgspec.to_builtins(value, str_keys=True, enc_hook=_ext_as_map)


def _ext_as_map(value: Any) -> Any:
    if isinstance(value, Ext):
        return {"ext": value.code, "data": bytes(value.data)}
    raise NotImplementedError(f"{type(value).__qualname__} cannot be shown")
