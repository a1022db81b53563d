"""Nested and large job args, around the limits, through every reader.

Each example is a few args values — chains of arrays and maps around
``ARGS_DEPTH_MAX`` levels deep, with scalars, ext values, odd map keys and
blobs around ``max_args_bytes`` at their ends — pushed as a producer sends
them: the request's bytes go through the live decoder, the args-size check
and the core. What is refused must be refused for its depth (with the
request's rid and the field's path) or its size; what is acknowledged is
journalled, and then read back byte for byte by every reader: start-up's
replay, ``leash journal verify`` and ``dump``, the snapshotter, and a
restart from its snapshot.
"""

import base64
import io
import json
import os
import tempfile
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from leash.broker.core import CoreConfig
from leash.broker.journal import tools
from leash.broker.journal.disk import OsDisk
from leash.broker.journal.recovery import recover
from leash.broker.journal.snapshotter import take
from leash.broker.server.limits import oversized_args
from leash.protocol import argtypes
from leash.protocol import limits as L
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from tests.journal_kit import append, seal
from tests.tier import scaled
from tests.unit.test_core_harness import Core
from tests.unit.test_nesting import depth

MAX_ARGS_BYTES = L.ARGS_MAX_BYTES_DEFAULT
BLOB_SIZES = [0, 1, 255, 65_535, 65_536, MAX_ARGS_BYTES - 16, MAX_ARGS_BYTES - 5, MAX_ARGS_BYTES]

leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.builds(msgspec.msgpack.Ext, st.integers(0, 127), st.binary(max_size=8))
    | st.sampled_from(BLOB_SIZES).map(lambda size: b"x" * size)
    | st.just({(1, 2): "an array for a key"})
)


@st.composite
def nested(draw: st.DrawFn) -> Any:
    """A chain of arrays and maps ``levels`` deep around a leaf, with
    siblings on the way down."""
    levels = draw(st.one_of(st.integers(0, 5), st.integers(L.ARGS_DEPTH_MAX - 3, 70)))
    value = draw(leaves)
    for _ in range(levels):
        sibling = draw(st.none() | st.integers(0, 9) | st.text(max_size=3))
        match draw(st.sampled_from(["array", "map", "array-first"])):
            case "array":
                value = [sibling, value]
            case "array-first":
                value = [value, sibling]
            case _:
                value = {"k": value, "s": sibling}
    return value


def dumped_args(directory: str) -> dict[str, Any]:
    """The args of every pushed job, as ``leash journal dump`` prints them."""
    out = io.StringIO()
    assert tools.dump(directory, out) == 0
    found = {}
    for line in out.getvalue().split("\n")[:-1]:  # not splitlines: U+0085 may be in a line
        entry = json.loads(line)
        record = entry.get("record") or {}
        for job in record.get("jobs", []) if record.get("r") == "pushed" else []:
            found[job["id"]] = job["args"]
    return found


def as_dump_shows(args: bytes) -> Any:
    """What dump prints for these args: the value, or their bytes."""
    try:
        value = argtypes.readable(argtypes.unpack(args))
        return json.loads(msgspec.json.encode(value))
    except (msgspec.DecodeError, TypeError, ValueError):
        return {"msgpack": base64.b64encode(args).decode()}


@settings(max_examples=scaled(25), deadline=None)
@given(values=st.lists(nested(), min_size=1, max_size=4))
def test_whatever_is_acknowledged_is_read_back_by_every_reader(values: list[Any]) -> None:
    core = Core()
    acknowledged: dict[str, bytes] = {}
    for number, value in enumerate(values):
        args = msgspec.msgpack.encode(value)
        rid = 1000 + number
        job = M.JobSpec(type="t", id=f"job-{number}", args=msgspec.Raw(args))
        body = M.encoder.encode(M.Push(rid=rid, job=job))
        try:
            request = M.decode_request(body)
        except M.BadRequest as refused:
            assert depth(value) > L.ARGS_DEPTH_MAX, (refused.message, depth(value))
            assert (refused.code, refused.rid) == (ErrorCode.BAD_REQUEST, rid)
            assert refused.path == "$.job.args"
            continue
        assert depth(value) <= L.ARGS_DEPTH_MAX
        too_large = oversized_args(request, MAX_ARGS_BYTES)
        if too_large is not None:
            assert len(args) > MAX_ARGS_BYTES and too_large.rid == rid
            continue
        core.expect(request, M.Pushed)
        acknowledged[job.id] = args  # type: ignore[index]
    with tempfile.TemporaryDirectory() as directory:
        append(directory, core.records, per_write=3)
        replayed = recover(directory, OsDisk(), CoreConfig(), read_only=True).state
        assert {i: bytes(replayed.jobs[i].args) for i in acknowledged} == acknowledged
        assert tools.verify(directory, io.StringIO()) == 0
        shown = dumped_args(directory)
        assert {i: shown[i] for i in acknowledged} == {
            i: as_dump_shows(a) for i, a in acknowledged.items()
        }
        through_seq = seal(directory)
        assert take(directory, OsDisk(), through_seq) is not None  # the snapshotter
        restarted = recover(directory, OsDisk(), CoreConfig())
        assert restarted.snapshot is not None and restarted.records == 0
        assert {i: bytes(restarted.state.jobs[i].args) for i in acknowledged} == acknowledged
        assert os.listdir(directory)
