"""Snapshots: what is written is what loads; any damage to one is detected,
and recovery then falls back to an older snapshot whose segments still
exist, or refuses to start — it never builds a state from a damaged one."""

import os

import msgspec
import pytest

from leash.broker.core import CoreConfig, canonical, check_invariants, image
from leash.broker.core import records as R
from leash.broker.journal import snapshot, snapshotter
from leash.broker.journal.disk import OsDisk
from leash.broker.journal.recovery import REPAIR_FLAG, JournalCorrupt
from tests.fault.disks import FaultyDisk
from tests.journal_kit import (
    append,
    busy_records,
    names,
    read_back,
    read_file,
    replayed,
    seal,
    segments,
    write_file,
)


class OneFileDisk:
    """The reading half of a disk holding one file, in memory: tens of
    thousands of damaged copies are read without writing one to a disk."""

    def __init__(self, path: str, data: bytes) -> None:
        self.path, self.data = path, data

    def open_read(self, path: str) -> int:
        assert path == self.path
        return 0

    def size(self, path: str) -> int:
        return len(self.data)

    def read_at(self, fd: int, offset: int, size: int) -> bytes:
        return self.data[offset : offset + size]

    def close(self, fd: int) -> None:
        pass


def _with_snapshot(directory: str, records_before: int | None = None) -> tuple[list, str]:
    """A journal of ``busy_records`` with a snapshot part-way (the segment it
    covers removed, as the broker does) and a tail."""
    records = busy_records()
    split = records_before if records_before is not None else len(records) * 2 // 3
    append(directory, records[:split])
    through = seal(directory)
    written = snapshotter.take(directory, OsDisk(), through)
    assert written is not None
    for segment in segments(directory):
        if int(os.path.basename(segment)[8:28]) <= through:
            os.remove(segment)
    append(directory, records[split:])
    return records, written.path


def test_a_snapshot_and_the_tail_after_it_give_the_state_of_the_whole_journal(
    tmp_path: os.PathLike[str],
) -> None:
    directory = str(tmp_path)
    records, path = _with_snapshot(directory)
    seen, recovered = read_back(directory)
    assert recovered.snapshot is not None and recovered.snapshot.path == path
    assert 0 < len(seen) < len(records)
    assert check_invariants(recovered.state) == []
    assert canonical(recovered.state) == canonical(replayed(records))
    assert recovered.obsolete == []


def test_a_state_of_many_jobs_streams_as_many_chunks(tmp_path: os.PathLike[str]) -> None:
    count = 3 * image.JOBS_PER_CHUNK + 5
    new = [
        R.NewJob(f"j{n}", "q", "t", msgspec.Raw(b"\x90"), n % 2, 3, 1000, None, 1, None)
        for n in range(count)
    ]
    state = replayed([R.Booted(1, 1), R.JobsPushed(new, 1), R.QueuePaused("q")])
    chunks = list(image.dump(state))
    # all ready: two buckets of 1.5 chunks' worth, a chunk holds one bucket's
    assert sum(isinstance(chunk, image.PackedJobsImage) for chunk in chunks) == 4
    written = snapshot.write(OsDisk(), str(tmp_path), chunks, state.epoch, 77)
    assert written.jobs == len(state.jobs)
    loaded = image.load(snapshot.read(OsDisk(), written.path), CoreConfig())
    assert canonical(loaded) == canonical(state)


def test_every_single_bit_flip_in_a_snapshot_is_detected(tmp_path: os.PathLike[str]) -> None:
    directory = str(tmp_path)
    _, path = _with_snapshot(directory)
    original = read_file(path)
    for byte in range(len(original)):
        for bit in range(8):
            damaged = bytearray(original)
            damaged[byte] ^= 1 << bit
            with pytest.raises(snapshot.SnapshotCorrupt, match=path):
                list(snapshot.read(OneFileDisk(path, bytes(damaged)), path))
    # No older snapshot to fall back on: start-up is refused.
    write_file(path, original[:100] + bytes([original[100] ^ 1]) + original[101:])
    with pytest.raises(JournalCorrupt, match=rf"damaged snapshot .*restore.*{REPAIR_FLAG}"):
        read_back(directory)


def test_repairing_a_damaged_snapshot_with_nothing_to_fall_back_on_starts_empty(
    tmp_path: os.PathLike[str],
) -> None:
    directory = str(tmp_path)
    _, path = _with_snapshot(directory)
    original = read_file(path)
    write_file(path, original[:-30] + bytes([original[-30] ^ 1]) + original[-29:])
    seen, recovered = read_back(directory, repair=True)
    assert seen == [] and recovered.state.jobs == {} and recovered.snapshot is None
    assert recovered.set_aside == [path]
    assert any("empty state" in note for note in recovered.notes)
    assert any("dropped" in note for note in recovered.notes)
    assert recovered.epoch_floor >= snapshot.read_header(OsDisk(), path).epoch >= 1
    assert [n for n in names(directory) if n.endswith((".log", ".snap"))] == [
        os.path.basename(path)
    ]


def test_a_snapshot_cut_short_anywhere_or_with_bytes_after_its_end_is_detected(
    tmp_path: os.PathLike[str],
) -> None:
    _, path = _with_snapshot(str(tmp_path))
    original = read_file(path)
    for length in range(len(original)):
        with pytest.raises(snapshot.SnapshotCorrupt):
            list(snapshot.read(OneFileDisk(path, original[:length]), path))
    write_file(path, original + b"\0")
    with pytest.raises(snapshot.SnapshotCorrupt, match="after the end chunk"):
        list(snapshot.read(OsDisk(), path))


def test_a_damaged_snapshot_falls_back_to_an_older_one_whose_segments_still_exist(
    tmp_path: os.PathLike[str],
) -> None:
    directory = str(tmp_path)
    records, older = _with_snapshot(directory, records_before=10)
    through = seal(directory)  # a second snapshot, the files it covers not yet removed
    newer = snapshotter.take(directory, OsDisk(), through)
    assert newer is not None
    data = bytearray(read_file(newer.path))
    data[len(data) // 2] ^= 4
    write_file(newer.path, bytes(data))
    _, recovered = read_back(directory)
    assert recovered.snapshot is not None and recovered.snapshot.path == older
    assert canonical(recovered.state) == canonical(replayed(records))
    assert recovered.set_aside == [newer.path]
    assert any("damaged snapshot" in note and older in note for note in recovered.notes)


def test_a_snapshot_without_the_segment_after_it_is_refused_unless_repairing(
    tmp_path: os.PathLike[str],
) -> None:
    directory = str(tmp_path)
    records, _path = _with_snapshot(directory, records_before=len(busy_records()))
    for name in names(directory):
        if name.endswith(".log"):
            os.remove(os.path.join(directory, name))
    with pytest.raises(JournalCorrupt, match=rf"no segment starts at seq .*{REPAIR_FLAG}"):
        read_back(directory)
    _, recovered = read_back(directory, repair=True)
    assert canonical(recovered.state) == canonical(replayed(records))


def test_a_snapshot_that_would_leave_too_little_free_space_gives_up_and_gives_it_back(
    tmp_path: os.PathLike[str],
) -> None:
    """The snapshotter keeps room for the broker's journal: it stops before
    a write that would leave less than it was told to keep free, and the
    temp file it wrote goes, as after any failed write."""
    directory = str(tmp_path)
    append(directory, busy_records())
    through = seal(directory)
    disk = FaultyDisk()
    disk.free = 10_000_000
    with pytest.raises(snapshot.NoRoom, match="kept for the journal"):
        snapshotter.take(directory, disk, through, keep_free_bytes=10_000_000)
    assert not [name for name in names(directory) if name.endswith((".tmp", ".snap"))]
    failing = FaultyDisk(fail_write_at=1)  # the first write: the temp file's
    with pytest.raises(OSError):
        snapshotter.take(directory, failing, through)
    assert not [name for name in names(directory) if name.endswith((".tmp", ".snap"))]
    assert snapshotter.take(directory, disk, through, keep_free_bytes=1_000_000) is not None
