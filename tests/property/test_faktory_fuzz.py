"""Hostile and random input to the Faktory codec: it answers, it never crashes,
it never keeps more than a line's limit, and every unit it takes fits Leash.

On failure hypothesis prints the falsifying example and a reproduction blob
(``print_blob=True``); run again with ``--hypothesis-seed=N`` to repeat a run.
"""

from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leash.protocol import faktory as F
from leash.protocol import faktory_units as U
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode, ProtocolError
from tests.tier import scaled

FUZZ = settings(
    max_examples=scaled(300),
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
LIMIT = 200
ARGS_MAX = 150
VERBS = [b"HELLO", b"PUSH", b"PUSHB", b"FETCH", b"ACK", b"FAIL", b"BEAT", b"INFO", b"END"]
VERBS += [b"FLUSH", b"MUTATE", b"BATCH", b"NOPE", b""]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
unit_fields = st.fixed_dictionaries(
    {  # mostly valid, so that most units get past their first field
        "jid": st.one_of(st.sampled_from(["job-00001", "_Zz-9abcd"]), st.text(max_size=20)),
        "jobtype": st.one_of(st.just("t"), st.text(max_size=10), json_values),
        "args": st.one_of(st.lists(json_values, max_size=4), json_values),
    },
    optional={
        "queue": st.one_of(st.sampled_from(["", "q", "a.b"]), st.text(max_size=6)),
        "priority": st.one_of(st.integers(-2, 11), json_values),
        "reserve_for": st.one_of(st.integers(-5, 90_000), json_values),
        "retry": st.one_of(st.integers(-3, 1001), st.none()),
        "at": st.one_of(st.sampled_from(["", "2024-01-01T00:00:00Z", "2024-01-01"]), json_values),
        "backtrace": json_values,
        "custom": json_values,
        "created_at": json_values,
        "surprise": json_values,
    },
)
lines = st.one_of(
    st.binary(max_size=60),
    st.tuples(st.sampled_from(VERBS), st.binary(max_size=40)).map(lambda p: p[0] + b" " + p[1]),
    st.tuples(st.sampled_from(VERBS), json_values).map(
        lambda p: p[0] + b" " + msgspec.json.encode(p[1])
    ),
    unit_fields.map(lambda unit: b"PUSH " + msgspec.json.encode(unit)),
)


@FUZZ
@given(
    st.lists(st.one_of(lines.map(lambda line: line + b"\r\n"), st.binary(max_size=300))),
    st.data(),
)
def test_random_bytes_give_commands_or_one_fatal_error(parts: list[bytes], data: Any) -> None:
    stream = b"".join(parts)
    decoder = F.CommandDecoder(LIMIT, ARGS_MAX)
    at = 0
    while at < len(stream):
        size = data.draw(st.integers(1, 64), label="read")
        chunk = stream[at : at + size]
        at += size
        decoder.feed(chunk)
        try:
            while (command := decoder.next_frame()) is not None:
                assert isinstance(command, F.Command.__args__)  # type: ignore[attr-defined]
        except ProtocolError as error:
            assert error.code is ErrorCode.TOO_LARGE  # the one error that ends a connection
            return
        assert decoder.buffered_bytes <= LIMIT + 2


@FUZZ
@given(unit_fields)
def test_a_unit_is_taken_within_leash_bounds_or_refused_with_a_reason(
    fields: dict[str, Any],
) -> None:
    try:
        unit = U.parse_unit(msgspec.json.encode(fields), ARGS_MAX)
    except U.UnitError as error:
        assert str(error)
        return
    assert unit.jid == fields["jid"] and U.JID_RE.match(unit.jid)
    # Every other bound Leash checks on its own protocol holds (a jid may
    # start with _ here, which a Leash client's may not).
    plain = msgspec.structs.replace(unit.spec, id="x" + unit.jid)
    msgspec.msgpack.decode(msgspec.msgpack.encode(plain), type=M.JobSpec)
    assert len(unit.spec.args) + len(unit.extra or b"") <= ARGS_MAX
    assert unit.discard_dead == (fields.get("retry") == 0)
