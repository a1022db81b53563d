"""Hostile and random input to the codec: it answers, it never crashes.

On failure hypothesis prints the falsifying example and a reproduction blob
(``print_blob=True``); run again with ``--hypothesis-seed=N`` to repeat a run.
"""

import itertools
from typing import Any, get_args

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leash.protocol.errors import ErrorCode, ProtocolError
from leash.protocol.frames import FrameDecoder, encode_frame
from leash.protocol.limits import FRAME_HEADER_BYTES
from leash.protocol.messages import REQUEST_OPS, BadRequest, Request, decode_request, encoder
from tests.tier import scaled

FUZZ = settings(
    max_examples=scaled(300),
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
SMALL_LIMIT = 64  # a small frame limit, so random lengths are sometimes valid
REQUEST_TYPES = get_args(Request)

# --- strategies ------------------------------------------------------------------

msgpack_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
msgpack_scalars = st.one_of(
    st.none(),
    st.booleans(),
    msgpack_ints,
    st.sampled_from([0, 1, 2**31, 2**53, 2**63 - 1, 2**63, -1]),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.text(max_size=10), inner, max_size=5),
        st.dictionaries(msgpack_ints, inner, max_size=3),
    ),
    max_leaves=20,
)

FIELD_NAMES = sorted(
    {"op", "rid", "job", "jobs", "type", "queue", "args", "id", "token", "leases", "error"}
    | {name for t in REQUEST_TYPES for name in t.__struct_fields__}
)
VALID_BODIES: list[dict[str, Any]] = [
    {"op": "hello", "rid": 1, "version": 1, "worker_id": "w", "labels": ["a"]},
    {"op": "push", "rid": 2, "job": {"type": "t", "queue": "q", "id": "j", "args": [1, "x"]}},
    {"op": "push_many", "rid": 3, "jobs": [{"type": "t"}, {"type": "u", "priority": 9}]},
    {"op": "fetch", "rid": 4, "queues": ["a", "b"], "count": 3, "wait_ms": 10},
    {"op": "ack", "rid": 5, "id": "j", "token": 7},
    {"op": "ack_many", "rid": 6, "leases": [["j", 7], ["k", 8]]},
    {"op": "fail", "rid": 7, "id": "j", "token": 7, "error": {"type": "E", "message": "m"}},
    {"op": "extend", "rid": 8, "id": "j", "token": 7, "lease_ttl_ms": 5_000},
    {"op": "release", "rid": 9, "id": "j", "token": 7},
    {"op": "pause", "rid": 10, "queue": "q"},
    {"op": "resume", "rid": 11, "queue": "q"},
    {"op": "get_job", "rid": 12, "id": "j"},
    {
        "op": "create_batch",
        "rid": 13,
        "id": "b",
        "jobs": [{"type": "t", "batch": "b"}],
        "callbacks": {"success": {"type": "s"}},
        "commit": True,
        "lease": ["j", 7],
    },
    {"op": "push", "rid": 14, "job": {"type": "t", "batch": "b"}, "lease": ["j", 7]},
    {"op": "batch_status", "rid": 15, "id": "b", "limit": 5},
    {"op": "commit_batch", "rid": 16, "id": "b"},
    {"op": "requeue_job", "rid": 17, "id": "j"},
    {"op": "fsck", "rid": 18},
]
valid_bodies = st.sampled_from(VALID_BODIES).map(lambda body: msgspec.msgpack.encode(body))


@st.composite
def request_like(draw: st.DrawFn) -> dict[str, Any]:
    """A valid request with a few of its fields replaced, removed or added."""
    body = dict(draw(st.sampled_from(VALID_BODIES)))
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(FIELD_NAMES) | st.text(max_size=8))
        if draw(st.booleans()):
            body[key] = draw(msgpack_values | st.sampled_from(sorted(REQUEST_OPS)))
        else:
            body.pop(key, None)
    return body


@st.composite
def stream_segments(draw: st.DrawFn) -> bytes:
    """Valid frames mixed with headers of chosen lengths and raw junk."""
    segment = st.one_of(
        st.binary(min_size=1, max_size=SMALL_LIMIT).map(encode_frame),
        st.integers(0, 2**32 - 1).map(lambda n: n.to_bytes(FRAME_HEADER_BYTES, "big")),
        st.integers(0, SMALL_LIMIT + 2).map(lambda n: n.to_bytes(FRAME_HEADER_BYTES, "big")),
        st.binary(max_size=16),
    )
    return b"".join(draw(st.lists(segment, max_size=8)))


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    edges = [0, *points, len(data)]
    return [data[start:end] for start, end in itertools.pairwise(edges)]


def reference_split(stream: bytes, limit: int) -> tuple[list[bytes], ErrorCode | None]:
    """What a whole-stream reader finds: the frames, then the error that stops it, if any."""
    frames, offset = [], 0
    while len(stream) - offset >= FRAME_HEADER_BYTES:
        length = int.from_bytes(stream[offset : offset + FRAME_HEADER_BYTES], "big")
        if length == 0:
            return frames, ErrorCode.BAD_REQUEST
        if length > limit:
            return frames, ErrorCode.TOO_LARGE
        end = offset + FRAME_HEADER_BYTES + length
        if end > len(stream):
            break
        frames.append(stream[offset + FRAME_HEADER_BYTES : end])
        offset = end
    return frames, None


def decode_chunks(chunks: list[bytes], limit: int) -> tuple[list[bytes], ErrorCode | None]:
    decoder = FrameDecoder(max_frame_bytes=limit)
    frames: list[bytes] = []
    for chunk in chunks:
        decoder.feed(chunk)
        try:
            while (body := decoder.next_frame()) is not None:
                frames.append(body)
        except ProtocolError as error:
            return frames, error.code
    return frames, None


def assert_answered(body: bytes) -> Request | BadRequest:
    """decode_request gives a request or a BadRequest that can be answered: nothing else."""
    try:
        request = decode_request(body)
    except BadRequest as error:
        assert error.code in (ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_OP)
        assert 0 <= error.rid < 2**63
        # The path's syntax is not checked here: a non-string key gives a malformed one
        # today (test_messages.py::test_a_non_string_key_is_reported_at_its_map).
        assert isinstance(error.path, str)
        encoder.encode(error.reply())
        return error
    assert isinstance(request, REQUEST_TYPES)
    return request


# --- frames ----------------------------------------------------------------------


@FUZZ
@given(
    stream=st.binary(max_size=200) | stream_segments(),
    cuts=st.lists(st.integers(min_value=0), max_size=10),
)
def test_random_bytes_in_random_chunks_give_frames_or_a_protocol_error(
    stream: bytes, cuts: list[int]
) -> None:
    frames, code = decode_chunks(chunked(stream, cuts), SMALL_LIMIT)
    assert all(1 <= len(frame) <= SMALL_LIMIT for frame in frames)
    assert (frames, code) == reference_split(stream, SMALL_LIMIT)


@FUZZ
@given(
    bodies=st.lists(st.binary(min_size=1, max_size=300) | valid_bodies, max_size=12),
    cuts=st.lists(st.integers(min_value=0), max_size=20),
)
def test_a_valid_frame_sequence_in_any_chunks_gives_the_same_bodies(
    bodies: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(encode_frame(body) for body in bodies)
    frames, code = decode_chunks(chunked(stream, cuts), limit=300)
    assert code is None
    assert frames == bodies


@FUZZ
@given(messages=st.lists(request_like(), max_size=6), cuts=st.lists(st.integers(0), max_size=8))
def test_chunked_request_frames_decode_like_the_unframed_bodies(
    messages: list[dict[str, Any]], cuts: list[int]
) -> None:
    bodies = [msgspec.msgpack.encode(message) for message in messages]
    stream = b"".join(encode_frame(body) for body in bodies)
    frames, code = decode_chunks(chunked(stream, cuts), limit=1 << 20)
    assert (frames, code) == (bodies, None)
    for frame, body in zip(frames, bodies, strict=True):
        decoded, expected = assert_answered(frame), assert_answered(body)
        if isinstance(expected, BadRequest):
            assert isinstance(decoded, BadRequest)
            assert (decoded.code, decoded.rid, decoded.path) == (
                expected.code,
                expected.rid,
                expected.path,
            )
        else:
            assert decoded == expected


# --- request bodies ----------------------------------------------------------------


@FUZZ
@given(body=st.binary(max_size=200))
def test_random_bytes_decode_to_a_request_or_bad_request(body: bytes) -> None:
    assert_answered(body)


@FUZZ
@given(body=valid_bodies, cut=st.integers(min_value=0))
def test_a_truncated_or_extended_body_is_bad_request(body: bytes, cut: int) -> None:
    truncated = body[: cut % len(body)]
    assert isinstance(assert_answered(truncated), BadRequest)
    assert isinstance(assert_answered(body + truncated[:1] + b"\xc0"), BadRequest)


@FUZZ
@given(value=msgpack_values)
def test_random_msgpack_values_decode_to_a_request_or_bad_request(value: Any) -> None:
    assert_answered(msgspec.msgpack.encode(value))


@FUZZ
@given(body=request_like())
def test_mutated_requests_decode_or_are_answered_with_their_rid(body: dict[str, Any]) -> None:
    result = assert_answered(msgspec.msgpack.encode(body))
    if not isinstance(result, BadRequest):
        return
    op, rid = body.get("op", ""), body.get("rid")
    rid_readable = type(rid) is int and 0 <= rid < 2**63
    # An op of another type loses the rid today: see test_messages.py's known defects.
    if isinstance(op, str) and rid_readable:
        assert result.rid == rid
    if isinstance(op, str) and op and op not in REQUEST_OPS:
        assert result.code is ErrorCode.UNKNOWN_OP
        assert result.path == "$.op"
