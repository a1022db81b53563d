"""Job args keep their types: any value made of the supported types, nested
in lists and maps, comes back from its msgpack as itself (the same types,
the same digits of a Decimal, the same instant of a datetime, in UTC when
it had a zone); a value with one unsupported leaf anywhere is refused,
naming that leaf's field (docs/protocol.md §3.5)."""

import datetime
import json
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from leash.protocol.argtypes import UnsupportedArgType, pack, unpack
from leash.protocol.nesting import nested_deeper
from tests.tier import scaled

offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(
    lambda minutes: datetime.timezone(datetime.timedelta(minutes=minutes))
)
keys = (
    st.text(max_size=8)
    | st.integers(-(2**63), 2**64 - 1)
    | st.booleans()
    | st.none()
    | st.binary(max_size=4)
    | st.dates()
    | st.uuids()
)
scalars = (
    keys
    | st.floats(allow_nan=False)
    | st.datetimes()
    | st.datetimes(
        min_value=datetime.datetime(2, 1, 1),
        max_value=datetime.datetime(9998, 12, 31),
        timezones=offsets,
    )
    | st.decimals(allow_nan=False)
    | st.decimals(allow_nan=False, allow_infinity=False, places=3)
)
args = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=12) | st.dictionaries(keys, inner, max_size=12),
    max_leaves=30,
)


def same(sent: Any, back: Any) -> bool:
    """Equal, and of the same type all the way down (a Decimal with the same
    digits; a datetime with a zone back in UTC)."""
    if isinstance(sent, list):
        return type(back) is list and len(back) == len(sent) and all(map(same, sent, back))
    if isinstance(sent, dict):
        return (
            type(back) is dict
            and list(map(_key, sent)) == list(map(_key, back))
            and all(same(sent[k], back[k]) for k in sent)
        )
    if isinstance(sent, Decimal):
        return type(back) is Decimal and str(back) == str(sent)
    if isinstance(sent, datetime.datetime) and sent.tzinfo is not None:
        return back == sent and back.utcoffset() == datetime.timedelta(0)
    return type(back) is type(sent) and back == sent


def _key(key: Any) -> Any:
    return (type(key), str(key) if isinstance(key, Decimal) else key)


@settings(max_examples=scaled(200), deadline=None)
@given(value=args)
def test_every_supported_value_comes_back_as_itself(value: Any) -> None:
    packed = pack(value)
    assert same(value, unpack(packed)), (value, unpack(packed))
    nested_deeper(packed)  # the broker's walk reads every ext form


class Odd:
    pass


unsupported = st.sampled_from([{1}, frozenset(), datetime.time(1), datetime.timedelta(1), Odd()])


key_texts = st.text(alphabet='ab"\\ é', max_size=4)


@st.composite
def with_one_bad_leaf(draw: st.DrawFn) -> tuple[Any, str]:
    """A value with one unsupported leaf somewhere down, among supported
    siblings, and the leaf's field."""
    leaf: Any = draw(unsupported)
    path = ""
    for _ in range(draw(st.integers(0, 5))):
        if draw(st.booleans()):
            siblings = draw(st.lists(scalars, max_size=12))
            index = draw(st.integers(0, len(siblings)))
            leaf = [*siblings[:index], leaf, *siblings[index:]]
            path = f"[{index}]{path}"
        else:
            key = draw(key_texts)
            others = draw(st.dictionaries(key_texts, scalars, max_size=12))
            others.pop(key, None)
            leaf = {**others, key: leaf}
            path = f"[{json.dumps(key, ensure_ascii=False)}]{path}"
    return leaf, "args" + path


@settings(max_examples=scaled(200), deadline=None)
@given(case=with_one_bad_leaf())
def test_an_unsupported_leaf_is_refused_naming_its_field(case: tuple[Any, str]) -> None:
    value, path = case
    try:
        pack(value)
    except UnsupportedArgType as refused:
        assert refused.path == path
        assert "is not a supported type" in refused.reason
    else:
        raise AssertionError(f"{value!r} was packed")
