"""The msgpack walker (protocol/nesting.py): depth, value ends and the
envelope of a body that did not decode, checked against msgspec on
generated values; and the request decoder's use of them (docs/protocol.md
§3.2, §9.2)."""

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leash.protocol import limits as L
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from leash.protocol.nesting import Malformed, envelope, nested_deeper, value_end
from tests.tier import scaled

LIMIT = L.ARGS_DEPTH_MAX


def depth(value: Any) -> int:
    """How many levels of arrays and maps ``value`` nests (the reference)."""
    if isinstance(value, list | tuple):
        return 1 + max((depth(item) for item in value), default=0)
    if isinstance(value, dict):
        inner = [depth(item) for pair in value.items() for item in pair]
        return 1 + max(inner, default=0)
    return 0


def nest(levels: int, leaf: Any = None, *, maps: bool = False) -> Any:
    """``levels`` levels of arrays (or maps under key "k") around ``leaf``."""
    value = leaf
    for _ in range(levels):
        value = {"k": value} if maps else [value]
    return value


def raw_nest(levels: int) -> bytes:
    """Arrays nested ``levels`` deep around nil, as bytes (any depth, no recursion)."""
    return b"\x91" * levels + b"\xc0"


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=300)
    | st.builds(msgspec.msgpack.Ext, st.integers(0, 127), st.binary(max_size=20))
)
keys = st.text(max_size=8) | st.integers(-5, 5) | st.binary(max_size=4)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=40,
)


@settings(max_examples=scaled(400), deadline=None)
@given(value=values, limit=st.integers(0, 6))
def test_the_depth_agrees_with_the_values_own_nesting(value: Any, limit: int) -> None:
    data = msgspec.msgpack.encode(value)
    assert nested_deeper(data, limit) == (depth(value) > limit)
    assert value_end(data, 0) == len(data)
    assert value_end(b"\x00" + data + b"\xc0", 1) == 1 + len(data)


@pytest.mark.parametrize("maps", [False, True], ids=["arrays", "maps"])
def test_the_args_limit_is_64_levels_and_65_is_over(maps: bool) -> None:
    assert LIMIT == 64
    assert not nested_deeper(msgspec.msgpack.encode(nest(LIMIT, 1, maps=maps)))
    assert nested_deeper(msgspec.msgpack.encode(nest(LIMIT + 1, 1, maps=maps)))
    assert not nested_deeper(msgspec.msgpack.encode(nest(LIMIT - 1, [], maps=maps)))
    assert nested_deeper(msgspec.msgpack.encode(nest(LIMIT, {}, maps=maps)))  # empty counts


@pytest.mark.parametrize("inner", [LIMIT - 2, LIMIT - 1], ids=["at-limit", "over"])
def test_items_cut_apart_are_held_to_the_levels_left_under_them(inner: int) -> None:
    """Large items (a list of records, a map of large values) are cut apart
    by msgspec before they are counted or walked: the same answer."""
    pad = "x" * 40
    records = [{"id": n, "pad": pad, "deep": nest(inner if n == 17 else 2)} for n in range(30)]
    as_map = {"pad": pad, "more": pad, "deep": [pad, nest(inner)]}
    for value in (records, as_map, [records]):
        assert nested_deeper(msgspec.msgpack.encode(value)) == (depth(value) > LIMIT)


def test_an_item_nested_past_the_interpreters_stack_is_deeper_than_the_limit() -> None:
    data = b"\x92\xd9\x40" + b"x" * 64 + raw_nest(100_000)
    assert nested_deeper(data)


def test_a_value_a_million_levels_deep_is_walked_without_recursion() -> None:
    data = raw_nest(1_000_000)
    assert nested_deeper(data)
    assert value_end(data, 0) == len(data)


def test_many_shallow_containers_are_not_deep() -> None:
    data = msgspec.msgpack.encode([[i, {"a": [i]}] for i in range(5000)])
    assert not nested_deeper(data)
    assert nested_deeper(data, 2)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x92\x01", b"\xc1", b"\x91\xc1", b"\xda\x00\x05ab", b"\xdc\x00", b"\x81\x01"],
    ids=["empty", "short-array", "reserved", "reserved-inside", "short-str", "short-count", "map"],
)
def test_malformed_bytes_are_refused_not_guessed(data: bytes) -> None:
    with pytest.raises(Malformed):
        value_end(data, 0)


# --- the envelope of a body that did not decode ------------------------------------


@settings(max_examples=scaled(200), deadline=None)
@given(
    before=st.dictionaries(st.text(max_size=5).filter(lambda k: k not in ("op", "rid")), values),
    rid=st.integers(0, 2**63 - 1),
    op=st.text(max_size=20),
)
def test_the_envelope_finds_op_and_rid_wherever_they_are(
    before: dict[str, Any], rid: int, op: str
) -> None:
    body = msgspec.msgpack.encode({**before, "rid": rid, "op": op, "after": [1, {"x": None}]})
    assert envelope(body) == (op, rid)


def test_the_envelope_reads_a_rid_beside_anything_however_deep_or_broken() -> None:
    rid_first = b"\x83\xa3rid\x07\xa2op\xa4push\xa3job" + raw_nest(100_000)
    assert envelope(rid_first) == ("push", 7)
    rid_after_deep = b"\x83\xa2op\xa4push\xa3job" + raw_nest(100_000) + b"\xa3rid\xcd\x01\x00"
    assert envelope(rid_after_deep) == ("push", 256)
    rid_before_garbage = b"\x83\xa3rid\x09\xa2op\xc1\xc1"
    assert envelope(rid_before_garbage) == (None, 9)
    assert envelope(b"\x92\x01\x02") == (None, None)
    assert envelope(b"") == (None, None)
    assert envelope(msgspec.msgpack.encode({"rid": -3, "op": b"push"})) == (None, -3)


# --- the request decoder -------------------------------------------------------------


def push_body(args: bytes, rid: int = 7) -> bytes:
    body = M.encoder.encode(M.Push(rid=rid, job=M.JobSpec(type="t", args=msgspec.Raw(args))))
    return body


def refusal(body: bytes) -> M.BadRequest:
    with pytest.raises(M.BadRequest) as caught:
        M.decode_request(body)
    return caught.value


def test_args_at_the_limit_decode_and_one_level_more_is_refused_with_rid_and_path() -> None:
    at_limit = M.decode_request(push_body(raw_nest(LIMIT)))
    assert isinstance(at_limit, M.Push) and bytes(at_limit.job.args) == raw_nest(LIMIT)
    error = refusal(push_body(raw_nest(LIMIT + 1)))
    assert (error.code, error.rid, error.path) == (ErrorCode.BAD_REQUEST, 7, "$.job.args")
    assert "64" in error.message


def test_the_limit_holds_for_every_job_of_a_request_with_its_path() -> None:
    deep, flat = msgspec.Raw(raw_nest(LIMIT + 1)), msgspec.Raw(raw_nest(1))
    many = M.PushMany(rid=3, jobs=[M.JobSpec("t", args=flat), M.JobSpec("t", args=deep)])
    assert refusal(M.encoder.encode(many)).path == "$.jobs[1].args"
    callbacks = M.BatchCallbacks(complete=M.JobSpec("t", args=deep))
    batch = M.CreateBatch(rid=4, jobs=[M.JobSpec("t", args=flat)], callbacks=callbacks)
    error = refusal(M.encoder.encode(batch))
    assert (error.rid, error.path) == (4, "$.callbacks.complete.args")


@pytest.mark.parametrize("levels", [1_000, 10_000, 200_000])
def test_a_body_too_deep_for_any_decoder_is_refused_with_its_rid(levels: int) -> None:
    error = refusal(push_body(raw_nest(levels), rid=12345))
    assert (error.code, error.rid) == (ErrorCode.BAD_REQUEST, 12345)
    unknown_field = b"\x84\xa2op\xa4beat\xa5extra" + raw_nest(levels) + b"\xa3rid\x2a\xa1x\xc0"
    error = refusal(unknown_field)
    assert (error.code, error.rid) == (ErrorCode.BAD_REQUEST, 42)


def test_an_unknown_op_is_named_in_at_most_a_few_dozen_characters() -> None:
    error = refusal(msgspec.msgpack.encode({"op": "x" * 1_000_000, "rid": 5}))
    assert (error.code, error.rid, error.path) == (ErrorCode.UNKNOWN_OP, 5, "$.op")
    assert len(error.message) < 200 and "1000000 characters" in error.message


def test_no_error_echoes_a_long_input() -> None:
    body = msgspec.msgpack.encode({"op": "list_jobs", "rid": 6, "kind": "z" * 100_000})
    from leash.protocol import admin as A

    with pytest.raises(M.BadRequest) as caught:
        M.decode_with(A.admin_request_decoder, A.ADMIN_OPS, body)
    error = caught.value
    assert error.rid == 6 and len(error.message) <= L.ERROR_TEXT_MAX_CHARS
    assert error.path == "$.kind"
