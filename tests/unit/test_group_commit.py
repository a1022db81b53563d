"""The group committer (broker/journal/group_commit.py) on a real journal in a
temporary directory, the real event loop and the real writer thread, through
a disk that records the order of what happens: what virtual time cannot show
(the loop serving while the thread fsyncs, its own flush at the end of a
turn), and how a batch is framed. The rules of each phase and policy are
tested in virtual time (test_group_commit_phases.py) and by the seeded
simulation (tests/property/test_group_commit_sim.py)."""

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from leash.broker.core import CoreConfig
from leash.broker.core import records as R
from leash.broker.core.records import frame_decoder, record_encoder
from leash.broker.journal import format as F
from leash.broker.journal import group_commit
from leash.broker.journal.disk import OsDisk
from leash.broker.journal.group_commit import FsyncPolicy, GroupCommitter
from leash.broker.journal.log import Journal, WriteBuffer
from leash.broker.journal.recovery import recover
from leash.broker.journal.scheduler import LoopScheduler
from tests.journal_kit import paused

WAIT_S = 10.0
GATE_S = 2.0


class EventDisk(OsDisk):
    """The real disk, with a log of writes, syncs and releases in order; a
    sync can be made slow (``sync_s``), wait for the loop to open a ``gate``
    (it never opens if the sync runs on the loop itself)."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.sync_s = 0.0
        self.gate: threading.Event | None = None

    def write(self, fd: int, data: bytes) -> None:
        super().write(fd, data)
        self.events.append("write")

    def sync(self, fd: int) -> None:
        if self.sync_s:
            time.sleep(self.sync_s)  # a slow disk, on whichever thread syncs
        if self.gate is not None:
            self.gate.wait(GATE_S)
        super().sync(fd)
        self.events.append("sync")


@asynccontextmanager
async def committer_on(
    directory: str,
    disk: EventDisk,
    mode: str,
    on_fsync: Callable[[float], None] | None = None,
) -> AsyncIterator[GroupCommitter]:
    recovered = recover(directory, OsDisk(), CoreConfig())
    journal = Journal(directory, disk)
    journal.open(recovered.next_seq, None, 1)
    failures: list[BaseException] = []
    committer = GroupCommitter(
        LoopScheduler(asyncio.get_running_loop()),
        journal,
        FsyncPolicy.parse(mode),
        on_failure=failures.append,
        on_fsync=on_fsync,
    )
    disk.events.clear()  # the segment's creation
    try:
        yield committer
    finally:
        await committer.close()
        journal.close()


def released(disk: EventDisk, results: list[bool], name: str) -> "group_commit.Done":
    def done(ok: bool) -> None:
        disk.events.append(f"{name} {'ok' if ok else 'failed'}")
        results.append(ok)

    return done


async def _until(condition: object) -> None:
    async with asyncio.timeout(WAIT_S):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.001)


async def test_under_always_a_reply_is_released_after_the_fsync_of_its_write(
    tmp_path: os.PathLike[str],
) -> None:
    disk, results = EventDisk(), []
    async with committer_on(str(tmp_path), disk, "always") as committer:
        committer.submit_records(paused(2))
        committer.after(released(disk, results, "first"))
        committer.submit_records(paused(1, start=2))
        committer.after(released(disk, results, "second"))
        await _until(lambda: len(results) == 2)
        assert disk.events == ["write", "sync", "first ok", "second ok"]  # one batch


async def test_each_timed_fsync_is_told_to_on_fsync_with_its_seconds(
    tmp_path: os.PathLike[str],
) -> None:
    disk, results, told = EventDisk(), [], []
    async with committer_on(str(tmp_path), disk, "always", told.append) as committer:
        for number in range(2):
            committer.submit_records(paused(1, start=number))
            committer.after(released(disk, results, f"r{number}"))
            await _until(lambda number=number: len(results) == number + 1)
        assert disk.events.count("sync") == 2
        assert told == list(committer.stats.fsync_recent_s) and len(told) == 2


async def _one_slow_fsync(committer: GroupCommitter, disk: EventDisk, results: list[bool]) -> None:
    """A batch synced on the loop that the committer finds slow."""
    disk.sync_s = 2 * group_commit.INLINE_FSYNC_MAX_S
    committer.submit_records(paused(1))
    committer.after(released(disk, results, "first"))
    await _until(lambda: results)


async def test_a_slow_fsync_moves_to_the_writer_thread_and_the_loop_serves_meanwhile(
    tmp_path: os.PathLike[str],
) -> None:
    disk, results = EventDisk(), []
    async with committer_on(str(tmp_path), disk, "always") as committer:
        await _one_slow_fsync(committer, disk, results)
        disk.gate = gate = threading.Event()
        committer.submit_records(paused(1, start=1))  # synced on the writer thread
        committer.after(released(disk, results, "second"))

        def serve() -> None:  # what the loop does while the fsync is in flight
            disk.events.append("loop served")
            gate.set()

        loop = asyncio.get_running_loop()
        loop.call_soon(lambda: loop.call_soon(serve))
        await _until(lambda: len(results) == 2)
        assert disk.events == [
            "write",
            "sync",
            "first ok",
            "write",
            "loop served",
            "sync",
            "second ok",
        ]
        disk.sync_s, disk.gate = 0.0, None
        committer.submit_records(paused(1, start=2))  # fast again: back on the loop
        committer.after(released(disk, results, "third"))
        await _until(lambda: len(results) == 3)
        assert disk.events[-3:] == ["write", "sync", "third ok"]


def _encoded(records: list[R.Record]) -> list[bytes]:
    return [record_encoder.encode(record) for record in records]


def test_the_records_of_a_batch_share_a_frame_framed_as_the_format_frames_them() -> None:
    journal = Journal("/nonexistent", OsDisk())  # encoding touches no file
    journal.next_seq = 41
    first = [*paused(2), R.JobsAcked([R.LeaseRef("job-1", 7)], at_ms=5)]
    second = paused(1, start=5)
    batch = WriteBuffer()
    journal.encode_into(first, batch)
    journal.encode_into(second, batch)  # a second submit of the turn: the same frame
    batch.extend(b"framed")  # closes the open frame
    journal.encode_into(paused(1, start=9), batch)  # a new frame after it
    expected = (
        F.encode_frame(41, _encoded([*first, *second]))
        + b"framed"
        + F.encode_frame(45, _encoded(paused(1, start=9)))
    )
    assert bytes(batch.close()) == expected
    assert bytes(batch.close()) == expected, "closing twice changes nothing"
    assert journal.next_seq == 46
    assert journal.encode(paused(1)) == F.encode_frame(46, _encoded(paused(1)))


def test_a_frame_is_never_continued_past_numbers_taken_by_another_batch() -> None:
    journal = Journal("/nonexistent", OsDisk())
    batch = WriteBuffer()
    journal.encode_into(paused(1), batch)  # seq 1, its frame open
    elsewhere = journal.encode(paused(1, start=1))  # seq 2, in a frame of its own
    journal.encode_into(paused(1, start=2), batch)  # seq 3: a new frame, not seq 1's
    assert bytes(batch.close()) == (
        F.encode_frame(1, _encoded(paused(1))) + F.encode_frame(3, _encoded(paused(1, start=2)))
    )
    assert elsewhere == F.encode_frame(2, _encoded(paused(1, start=1)))


def test_a_frame_takes_no_more_records_once_its_payload_passes_the_target() -> None:
    journal = Journal("/nonexistent", OsDisk())
    records = paused(100, name_chars=2000)
    batch = WriteBuffer()
    for record in records:  # one submit each, as requests come in a turn
        journal.encode_into([record], batch)
    data = memoryview(batch.close())
    offset, frames, seq = 0, [], 1
    while offset < len(data):
        scanned = F.scan_record(data, offset)
        assert isinstance(scanned, F.Scanned) and scanned.seq == seq
        decoded = frame_decoder.decode(scanned.payload)
        frames.append(decoded)
        seq += len(decoded)
        offset = scanned.end
        assert len(scanned.payload) - 2010 <= F.FRAME_TARGET_BYTES + F.FRAME_PREFIX_BYTES
    assert [record for frame in frames for record in frame] == records
    assert len(frames) == -(-100 * 2010 // F.FRAME_TARGET_BYTES), [len(f) for f in frames]


def test_a_record_that_does_not_encode_leaves_the_batch_and_the_numbering_as_they_were() -> None:
    journal = Journal("/nonexistent", OsDisk())
    journal.next_seq = 7
    batch = WriteBuffer()
    journal.encode_into(paused(1), batch)  # the open frame holds one record
    unencodable = R.JobsPushed([], counter_after=2**70)  # beyond msgpack's integers
    with pytest.raises(OverflowError):
        journal.encode_into([*paused(2, start=1), unencodable], batch)
    assert journal.next_seq == 8
    journal.encode_into(paused(1, start=3), batch)
    expected = F.encode_frame(7, _encoded([*paused(1), *paused(1, start=3)]))
    assert bytes(batch.close()) == expected
    with pytest.raises(OverflowError):
        journal.encode_into([unencodable], WriteBuffer())  # a frame of nothing is never left
    assert journal.next_seq == 9


# --- what a reply waits for: the write, or the fsync too -------------------


async def test_under_always_a_hold_makes_a_fetch_reply_wait_for_the_fsync(
    tmp_path: os.PathLike[str],
) -> None:
    disk, results = EventDisk(), []
    async with committer_on(str(tmp_path), disk, "always") as committer:
        committer.submit_records(paused(1))  # the epoch roll
        committer.hold_until_synced()
        committer.submit_records(paused(1, start=1), sync=False)  # a lease of the new epoch
        committer.after_written(released(disk, results, "held fetch"))
        await _until(lambda: results)
        committer.submit_records(paused(1, start=2), sync=False)  # the hold is over
        committer.after_written(released(disk, results, "fetch"))
        await _until(lambda: len(results) == 2)
        assert disk.events == ["write", "sync", "held fetch ok", "write", "fetch ok"]
