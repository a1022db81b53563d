"""Helpers shared by the journal tests: write a journal through the real
``Journal`` on any disk, read it back through the real recovery, find the
records in a file."""

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from leash.broker.core import CoreConfig, State, apply, canonical
from leash.broker.core import records as R
from leash.broker.core.records import frame_decoder
from leash.broker.journal import format as F
from leash.broker.journal import layout
from leash.broker.journal.disk import Disk, OsDisk
from leash.broker.journal.log import Journal
from leash.broker.journal.recovery import Recovered, recover

if TYPE_CHECKING:
    from tests.unit.test_core_harness import Core


def paused(count: int, start: int = 0, name_chars: int = 0) -> list[R.Record]:
    """Records that apply to any state: one paused queue each."""
    return [
        R.QueuePaused(queue=f"q{i}".ljust(name_chars, "x")) for i in range(start, start + count)
    ]


def append(
    directory: str,
    records: Sequence[R.Record],
    disk: Disk | None = None,
    *,
    segment_bytes: int = 1 << 30,
    epoch: int = 1,
    per_write: int = 1,
) -> Recovered:
    """Recover what is there, then append ``records``, ``per_write`` a
    write (one frame), each write synced, rotating as the broker does. What
    recovery found."""
    disk = disk or OsDisk()
    recovered = recover(directory, disk, CoreConfig())
    journal = Journal(directory, disk, segment_bytes)
    last = recovered.segments[-1] if recovered.segments else None
    journal.open(recovered.next_seq, last, epoch)
    for start in range(0, len(records), per_write):
        journal.append(journal.encode(records[start : start + per_write]), journal.next_seq - 1)
        journal.sync()
        if journal.full:
            journal.rotate()
    journal.close()
    return recovered


def write_golden(directory: str, every: list[R.Record], covered: int, per_write: int) -> None:
    """A golden data directory (tests/fixtures): ``every`` record, ``per_write``
    a frame, in two segments with a snapshot of the first ``covered`` between
    them, and records.jsonl listing them all."""
    from leash.broker.core import image
    from leash.broker.journal import snapshot
    from leash.broker.journal.tools import _json, _plain

    os.makedirs(directory)
    append(directory, every[:covered], epoch=1, per_write=per_write)
    through = seal(directory)
    state = replayed(every[:covered])
    snapshot.write(OsDisk(), directory, image.dump(state), state.epoch, through)
    append(directory, every[covered:], per_write=per_write)
    with open(os.path.join(directory, "records.jsonl"), "w") as out:
        for seq, record in enumerate(every, start=1):
            out.write(_json({"seq": seq, "record": _plain(record)}) + "\n")


def seal(directory: str, disk: Disk | None = None) -> int:
    """Seal the open segment as a broker does before a snapshot: the seq
    the sealed journal ends at."""
    disk = disk or OsDisk()
    recovered = recover(directory, disk, CoreConfig())
    journal = Journal(directory, disk)
    last = recovered.segments[-1] if recovered.segments else None
    journal.open(recovered.next_seq, last, 1)
    journal.rotate()
    journal.close()
    return journal.written_seq


def read_back(
    directory: str, disk: Disk | None = None, **options: bool
) -> tuple[list[R.Record], Recovered]:
    """The records recovery replays (after any snapshot), and what it found."""
    seen: list[R.Record] = []
    recovered = recover(
        directory,
        disk or OsDisk(),
        CoreConfig(),
        on_record=lambda _seq, record: seen.append(record),
        **options,  # type: ignore[arg-type]
    )
    assert recovered.records == len(seen)
    return seen, recovered


def replayed(records: Sequence[R.Record]) -> State:
    state = State(CoreConfig())
    for record in records:
        apply(state, record)
    return state


def same_state(a: State, b: State) -> bool:
    return canonical(a) == canonical(b)


def segments(directory: str, disk: Disk | None = None) -> list[str]:
    return [file.path for file in layout.scan(disk or OsDisk(), directory).segments]


def record_offsets(data: bytes) -> list[int]:
    """The offset of every record in a segment's bytes, then the end."""
    view = memoryview(data)
    offsets, offset = [], F.HEADER_BYTES
    while offset < len(view):
        offsets.append(offset)
        scanned = F.scan_record(view, offset)
        assert isinstance(scanned, F.Scanned), scanned
        offset = scanned.end
    return [*offsets, len(view)]


def last_seq_in(data: bytes | bytearray) -> int | None:
    """The seq of the last record in a write's frames (its own parse, not
    the journal's bookkeeping); None for a write of no record (a header)."""
    view, offset, last = memoryview(bytes(data)), 0, None
    while offset < len(view):
        scanned = F.scan_record(view, offset)
        if not isinstance(scanned, F.Scanned):
            break  # a segment header, not records
        last = scanned.seq + len(frame_decoder.decode(scanned.payload)) - 1
        offset = scanned.end
    return last


def read_file(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)


def names(directory: str) -> list[str]:
    return sorted(os.listdir(directory))


def busy_records(jobs: int = 60) -> list[R.Record]:
    """The records of a broker's life with every kind of job in it: ready
    in several queues and priorities, a paused queue, scheduled, leased,
    retrying and dead jobs, two worker processes."""
    return busy(jobs).records


def busy(jobs: int = 60) -> "Core":
    """The core harness after ``busy_records``, to go on from there."""
    from tests.unit.test_core_harness import Core

    core = Core()
    for n in range(jobs):
        core.push(
            id=f"job-{n}", queue=("a", "b", "c")[n % 3], priority=n % 10, max_attempts=1 + n % 2
        )
    core.push(id="later", delay_ms=60_000)
    core.pause("b")
    first = core.fetch("a", count=4)
    core.fail(first[0])  # max_attempts 1: dead
    core.fail(first[1])  # retrying
    core.fetch("c", count=3, worker="w2")
    core.ack(first[2])
    core.advance(1000)
    return core
