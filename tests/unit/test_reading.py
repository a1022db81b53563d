"""Every reader of the journal reads alike, whatever its caller's stack
(broker/journal/reading.py); a record nested too deeply for any reader
stops start-up with its file, offset and sequence number, and ``leash
journal verify`` reports exactly that."""

import io
import os
from collections.abc import Callable
from typing import TypeVar

import msgspec
import pytest

from leash.broker.core import CoreConfig
from leash.broker.core import records as R
from leash.broker.journal import reading, tools
from leash.broker.journal.disk import OsDisk
from leash.broker.journal.recovery import REPAIR_FLAG, JournalCorrupt, recover
from leash.broker.journal.snapshotter import take
from leash.protocol.limits import ARGS_DEPTH_MAX
from tests.journal_kit import append, names, seal

T = TypeVar("T")


def nested_args(levels: int) -> msgspec.Raw:
    return msgspec.Raw(b"\x91" * levels + b"\xc0")


def pushed(job_id: str, levels: int) -> R.JobsPushed:
    job = R.NewJob(job_id, "q", "t", nested_args(levels), 5, 25, 60_000, None, 1, None)
    return R.JobsPushed([job], 0)


def from_deep_in_the_stack(levels: int, call: Callable[[], T]) -> T:
    """``call()`` from ``levels`` frames further down the stack."""
    return call() if levels == 0 else from_deep_in_the_stack(levels - 1, call)


def test_a_reader_called_from_deep_in_a_stack_reads_what_the_limit_allows(
    tmp_path: os.PathLike[str],
) -> None:
    directory = str(tmp_path)
    append(directory, [R.Booted(1, 1), pushed("at-limit", ARGS_DEPTH_MAX), pushed("old", 900)])
    state = from_deep_in_the_stack(
        900, lambda: recover(directory, OsDisk(), CoreConfig(), read_only=True).state
    )
    assert bytes(state.jobs["at-limit"].args) == bytes(nested_args(ARGS_DEPTH_MAX))
    assert bytes(state.jobs["old"].args) == bytes(nested_args(900))  # an old broker's push


def test_a_record_too_deep_for_any_reader_stops_start_up_where_it_is(
    tmp_path: os.PathLike[str],
) -> None:
    directory = str(tmp_path)
    append(directory, [R.Booted(1, 1), pushed("fine", 3), pushed("deep", 5_000), pushed("x", 1)])
    with pytest.raises(JournalCorrupt) as caught:
        recover(directory, OsDisk(), CoreConfig())
    problem = str(caught.value)
    assert "journal-00000000000000000001.log: offset " in problem
    assert ", seq 3: frame does not decode: nested too deeply to read back" in problem
    assert REPAIR_FLAG in problem
    out = io.StringIO()
    assert tools.verify(directory, out) == tools.EXIT_PROBLEM
    assert f"problem: {problem}\n" in out.getvalue()  # exactly what start-up says
    repaired = recover(directory, OsDisk(), CoreConfig(), repair=True)
    assert set(repaired.state.jobs) == {"fine"} and repaired.next_seq == 3
    assert any(name.endswith(".broken") for name in names(directory))


def test_the_snapshotter_and_a_restart_from_its_snapshot_read_alike_from_any_stack(
    tmp_path: os.PathLike[str],
) -> None:
    directory = str(tmp_path)
    append(directory, [R.Booted(1, 1), pushed("at-limit", ARGS_DEPTH_MAX), pushed("old", 900)])
    through_seq = seal(directory)
    assert from_deep_in_the_stack(900, lambda: take(directory, OsDisk(), through_seq))
    loaded = from_deep_in_the_stack(
        900, lambda: recover(directory, OsDisk(), CoreConfig(), read_only=True)
    )
    assert loaded.snapshot is not None and loaded.records == 0
    assert bytes(loaded.state.jobs["old"].args) == bytes(nested_args(900))


def test_running_out_of_stack_while_decoding_is_a_decode_error() -> None:
    with pytest.raises(msgspec.DecodeError, match="nested too deeply"):
        reading.decode(msgspec.msgpack.Decoder(list[object]), nested_args(100_000))
