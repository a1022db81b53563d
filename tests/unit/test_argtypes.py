"""Job args that keep their types (docs/protocol.md §3.5): the bytes of each
ext type as the document gives them, what is refused and the field it
names, payloads that break the table, and how people are shown them."""

import dataclasses
import datetime
import enum
import uuid
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from leash.client._admin_format import decoded_args
from leash.protocol import argtypes
from leash.protocol.argtypes import UnsupportedArgType, pack, unpack
from leash.protocol.faktory_units import args_json
from leash.protocol.nesting import nested_deeper

UTC = datetime.UTC
PLUS_2 = datetime.timezone(datetime.timedelta(hours=2))
NEW_YEAR_UTC_S = 1_767_225_600  # 2026-01-01T00:00:00Z
AN_ID = uuid.UUID("6f1c2d7e-0b9a-4c35-8e21-5d4f3a2b1c0d")


def test_each_type_is_the_ext_the_protocol_document_gives() -> None:
    nine_thirty_s = NEW_YEAR_UTC_S + 9 * 3600 + 30 * 60
    assert pack(datetime.datetime(2026, 1, 1, 9, 30)) == (
        b"\xd6\x01" + nine_thirty_s.to_bytes(4, "big")
    )
    assert pack(datetime.datetime(2026, 1, 1, 9, 30, tzinfo=PLUS_2)) == (
        b"\xd6\xff" + (nine_thirty_s - 7200).to_bytes(4, "big")
    )
    quarter = datetime.datetime(2026, 1, 1, 9, 30, 0, 250_000)
    assert pack(quarter) == b"\xd7\x01" + (250_000_000 << 34 | nine_thirty_s).to_bytes(8, "big")
    assert pack(datetime.date(2026, 1, 1)) == b"\xd6\x02" + (20_454).to_bytes(4, "big")
    assert pack(Decimal("12.50")) == b"\xc7\x05\x03" + b"12.50"
    assert pack(AN_ID) == b"\xd8\x04" + AN_ID.bytes
    assert pack(b"\x00\xff") == b"\xc4\x02\x00\xff"


def test_each_type_comes_back_as_itself() -> None:
    values = [
        datetime.datetime(2026, 1, 1, 9, 30, 0, 123_456),
        datetime.datetime(1969, 12, 31, 23, 59, 59, 500_000),  # before the epoch: 12 bytes
        datetime.datetime(1, 1, 1),
        datetime.datetime(9999, 12, 31, 23, 59, 59, 999_999),
        datetime.date(1, 1, 1),
        datetime.date(9999, 12, 31),
        Decimal("12.50"),
        Decimal("-0"),
        Decimal("1E+999"),
        Decimal("-Infinity"),
        AN_ID,
        b"",
        {"when": datetime.date(2026, 1, 1), 7: [Decimal("0.1")], AN_ID: b"\x01"},
    ]
    back = unpack(pack(values))
    assert back == values
    assert [type(value) for value in back] == [type(value) for value in values]
    assert str(back[6]) == "12.50"  # the digits as given, not 12.5
    assert str(back[7]) == "-0"


def test_a_datetime_with_a_zone_comes_back_in_utc_the_same_instant() -> None:
    sent = datetime.datetime(2026, 1, 1, 9, 30, 0, 5, tzinfo=PLUS_2)
    back = unpack(pack(sent))
    assert back == sent
    assert back.utcoffset() == datetime.timedelta(0)
    assert back.hour == 7 and back.microsecond == 5


def test_a_tuple_comes_back_as_a_list_and_a_bytearray_as_bytes() -> None:
    assert unpack(pack((1, bytearray(b"ab"), memoryview(b"c")))) == [1, b"ab", b"c"]


def test_a_nan_decimal_comes_back_a_nan() -> None:
    back = unpack(pack([Decimal("NaN"), Decimal("sNaN")]))
    assert [str(value) for value in back] == ["NaN", "sNaN"]


class Colour(enum.Enum):
    RED = 1


@dataclasses.dataclass
class Point:
    x: int


class Name(str):
    pass


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({1, 2}, "args: set is not a supported type"),
        ([0, {"when": {1}}], 'args[1]["when"]: set is not a supported type'),
        ([[0, 1, frozenset()]], "args[0][2]: frozenset is not a supported type"),
        ({"colour": Colour.RED}, 'args["colour"]: Colour is not a supported type'),
        ([Point(1)], "args[0]: Point is not a supported type"),
        ([datetime.time(9, 30)], "args[0]: time is not a supported type"),
        ([datetime.timedelta(1)], "args[0]: timedelta is not a supported type"),
        ({"name": Name("x")}, 'args["name"]: Name is not a supported type'),
        ([2**64], "args[0]: int out of msgpack's range"),
        ([-(2**63) - 1], "args[0]: int out of msgpack's range"),
        ({(1, 2): "x"}, "args[(1, 2)]: a map key of type tuple is not supported"),
        ({"a": {3: {object()}}}, 'args["a"][3]: set is not a supported type'),
    ],
)
def test_any_other_type_is_refused_naming_the_field(args: Any, message: str) -> None:
    with pytest.raises(UnsupportedArgType) as refused:
        pack(args)
    assert str(refused.value).startswith(message), str(refused.value)
    assert refused.value.path == message.partition(": ")[0]
    assert isinstance(refused.value, TypeError)


@pytest.mark.parametrize(
    ("args", "path"),
    [
        ([*range(20), {1}], "args[20]"),
        ([0] * 20 + [2**64], "args[20]"),
        (("a", True, None, b"", 1.5) * 4 + (-(2**63) - 1,), "args[20]"),
        ({f"k{i}": i for i in range(9)} | {"k9": 2**64}, 'args["k9"]'),
        ({f"k{i}": "x" for i in range(9)} | {3: {1}}, "args[3]"),
    ],
)
def test_long_lists_and_maps_are_checked_item_by_item_too(args: Any, path: str) -> None:
    with pytest.raises(UnsupportedArgType) as refused:
        pack(args)
    assert refused.value.path == path


def test_long_lists_and_maps_of_plain_values_come_back_as_themselves() -> None:
    values = [tuple(range(20)), ["a", True, None, b"", 1.5, -(2**63), 2**64 - 1] * 3]
    values += [{f"k{i}": i for i in range(20)}, {i: "x" for i in range(20)}]
    assert unpack(pack(values)) == [list(values[0]), *values[1:]]


def test_the_refusal_lists_the_supported_types() -> None:
    with pytest.raises(UnsupportedArgType, match=r"supported: None, bool, .* UUID"):
        pack({1})


def test_a_value_that_holds_itself_is_refused_not_a_crash() -> None:
    looped: list[Any] = [1]
    looped.append(looped)
    with pytest.raises(UnsupportedArgType, match="nested too deeply"):
        pack(looped)


def test_an_unknown_ext_code_stays_opaque() -> None:
    data = msgspec.msgpack.encode([msgspec.msgpack.Ext(42, b"\x01\x02")])
    (value,) = unpack(data)
    assert isinstance(value, msgspec.msgpack.Ext)
    assert (value.code, bytes(value.data)) == (42, b"\x01\x02")


@pytest.mark.parametrize(
    "ext",
    [
        msgspec.msgpack.Ext(argtypes.NAIVE_DATETIME_EXT, b"\x00" * 5),  # not 4, 8 or 12 bytes
        msgspec.msgpack.Ext(argtypes.NAIVE_DATETIME_EXT, (10**9).to_bytes(4, "big") + bytes(8)),
        msgspec.msgpack.Ext(argtypes.NAIVE_DATETIME_EXT, bytes(4) + (2**62).to_bytes(8, "big")),
        msgspec.msgpack.Ext(argtypes.DATE_EXT, b"\x00\x00\x01"),
        msgspec.msgpack.Ext(argtypes.DATE_EXT, (10**8).to_bytes(4, "big")),  # past year 9999
        msgspec.msgpack.Ext(argtypes.DECIMAL_EXT, b"12,5"),
        msgspec.msgpack.Ext(argtypes.DECIMAL_EXT, b" 1"),
        msgspec.msgpack.Ext(argtypes.DECIMAL_EXT, b"1_000"),
        msgspec.msgpack.Ext(argtypes.DECIMAL_EXT, b""),
        msgspec.msgpack.Ext(argtypes.UUID_EXT, bytes(15)),
    ],
)
def test_a_known_ext_with_a_broken_payload_does_not_decode(ext: msgspec.msgpack.Ext) -> None:
    with pytest.raises(msgspec.DecodeError):
        unpack(msgspec.msgpack.encode([ext]))


def test_the_twelve_byte_layout_reads_back_and_finer_nanoseconds_are_cut() -> None:
    payload = (123_456_789).to_bytes(4, "big") + (-1).to_bytes(8, "big", signed=True)
    back = unpack(msgspec.msgpack.encode(msgspec.msgpack.Ext(1, payload)))
    assert back == datetime.datetime(1969, 12, 31, 23, 59, 59, 123_456)


def test_people_are_shown_the_values_as_text() -> None:
    typed = pack(
        {
            "at": datetime.datetime(2026, 1, 1, 9, 30, tzinfo=PLUS_2),
            "local": datetime.datetime(2026, 1, 1, 9, 30),
            "day": datetime.date(2026, 1, 1),
            "amount": Decimal("12.50"),
            "id": AN_ID,
            "blob": b"\x00\xff",
            7: "a key that is not text",
        }
    )
    other = msgspec.msgpack.encode({"other": msgspec.msgpack.Ext(42, b"\x01")})
    raw = msgspec.Raw(bytes([typed[0] + 1]) + typed[1:] + other[1:])  # one map of 8 entries
    assert decoded_args(raw) == {
        "at": "2026-01-01T07:30:00Z",
        "local": "2026-01-01T09:30:00",
        "day": "2026-01-01",
        "amount": "12.50",
        "id": str(AN_ID),
        "blob": "AP8=",
        "other": {"ext": 42, "data": "AQ=="},
        "7": "a key that is not text",
    }
    assert msgspec.json.decode(args_json(raw)) == [decoded_args(raw)]  # the Faktory port


def test_the_nesting_check_reads_over_every_ext_form() -> None:
    values = [datetime.datetime(1900, 1, 1), datetime.datetime(2026, 1, 1, 0, 0, 0, 1)]
    values += [datetime.date(2026, 1, 1), Decimal("1" * 300), AN_ID, b"x" * 300]
    deep: Any = values  # 1 level
    for _ in range(63):
        deep = [deep]
    assert not nested_deeper(pack(deep))  # 64 levels: the limit
    assert nested_deeper(pack([deep]))
