"""The broker side of snapshots (broker/journal/compaction.py) with the real
writer thread and the real snapshotter process: when a snapshot is started,
what it removes, what a failed snapshotter leaves, and ``compact``."""

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from leash.broker.core import CoreConfig, canonical
from leash.broker.core import records as R
from leash.broker.journal import layout
from leash.broker.journal.compaction import RETRY_S, Compactor
from leash.broker.journal.disk import OsDisk
from leash.broker.journal.group_commit import FsyncPolicy, GroupCommitter
from leash.broker.journal.log import Journal
from leash.broker.journal.recovery import recover
from leash.broker.journal.scheduler import LoopScheduler
from tests.journal_kit import paused, replayed
from tests.virtual_time import VirtualClock

SEGMENT_BYTES = 1024
WAIT_S = 30.0
BEFORE_S = 1 / 1024  # a little before a timer is due (exact in binary: no rounding)


class Running:
    def __init__(self, journal: Journal, committer: GroupCommitter, compactor: Compactor) -> None:
        self.journal, self.committer, self.compactor = journal, committer, compactor
        self.records: list[R.Record] = []

    async def write(self, records: list[R.Record]) -> None:
        for record in records:
            self.committer.submit(self.journal.encode([record]))
            self.records.append(record)
        await self.committer.drain()


@asynccontextmanager
async def running(
    directory: str, min_bytes: int, spawn: object = None, scheduler: object = None
) -> AsyncIterator[Running]:
    disk = OsDisk()
    recovered = recover(directory, disk, CoreConfig())
    journal = Journal(directory, disk, SEGMENT_BYTES)
    last = recovered.segments[-1] if recovered.segments else None
    journal.open(recovered.next_seq, last, 1)
    options = {} if spawn is None else {"spawn": spawn}
    if scheduler is not None:
        options["scheduler"] = scheduler
    compactor = Compactor(directory, disk, journal, recovered, min_bytes, **options)
    committer = GroupCommitter(
        LoopScheduler(asyncio.get_running_loop()),
        journal,
        FsyncPolicy("always"),
        on_failure=lambda error: None,
        on_sealed=compactor.on_sealed,
    )
    parts = Running(journal, committer, compactor)
    try:
        yield parts
    finally:
        await compactor.stop()
        await parts.committer.close()
        journal.close()


def _files(directory: str) -> tuple[list[int], list[int]]:
    found = layout.scan(OsDisk(), directory)
    return [s.seq for s in found.segments], [s.seq for s in found.snapshots]


async def _until(condition: object) -> None:
    async with asyncio.timeout(WAIT_S):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.01)


async def test_a_long_enough_sealed_tail_starts_a_snapshot_that_removes_what_it_covers(
    tmp_path: os.PathLike[str],
) -> None:
    directory = str(tmp_path)
    async with running(directory, min_bytes=3 * SEGMENT_BYTES) as broker:
        await broker.write(paused(60, name_chars=60))
        await _until(lambda: broker.compactor.snapshots_taken >= 1 and not broker.compactor.running)
        through = broker.compactor.snapshot_seq
        segments, snapshots = _files(directory)
        assert snapshots == [through]
        assert min(segments) == through + 1, "every segment the snapshot covers is removed"
        assert broker.compactor.tail_bytes < broker.compactor.threshold_bytes + 2 * SEGMENT_BYTES
    recovered = recover(directory, OsDisk(), CoreConfig())
    assert canonical(recovered.state) == canonical(replayed(broker.records))


async def test_the_threshold_grows_with_the_last_snapshot(tmp_path: os.PathLike[str]) -> None:
    async with running(str(tmp_path), min_bytes=1) as broker:
        await broker.write(paused(40, name_chars=200))
        await _until(lambda: broker.compactor.snapshots_taken >= 1 and not broker.compactor.running)
        assert broker.compactor.threshold_bytes == broker.compactor.snapshot_bytes > 1


async def test_compact_seals_the_open_segment_and_snapshots_everything(
    tmp_path: os.PathLike[str],
) -> None:
    directory = str(tmp_path)
    async with running(directory, min_bytes=1 << 40) as broker:
        await broker.write(paused(30, name_chars=60))
        through = await broker.compactor.compact(broker.committer.seal)
        assert through == broker.journal.next_seq - 1 == 30
        assert _files(directory) == ([31], [30])
        await broker.write(paused(3, start=100))
    recovered = recover(directory, OsDisk(), CoreConfig())
    assert recovered.records == 3
    assert canonical(recovered.state) == canonical(replayed(broker.records))


async def test_a_failed_snapshotter_leaves_every_segment_and_is_tried_again_later(
    tmp_path: os.PathLike[str],
) -> None:
    calls: list[int] = []

    async def failing(directory: str, through_seq: int) -> int:
        calls.append(through_seq)
        return 1

    directory = str(tmp_path)
    clock = VirtualClock()  # the retry's time never comes here
    async with running(directory, SEGMENT_BYTES, failing, clock) as broker:
        await broker.write(paused(40, name_chars=60))
        await _until(lambda: calls and not broker.compactor.running)
        await broker.write(paused(40, start=40, name_chars=60))
        assert len(calls) == 1, "the next try waits"
        segments, snapshots = _files(directory)
        assert snapshots == [] and segments[0] == 1
    assert canonical(recover(directory, OsDisk(), CoreConfig()).state) == canonical(
        replayed(broker.records)
    )


async def test_a_failed_snapshot_is_retried_after_the_retry_time_and_not_before(
    tmp_path: os.PathLike[str],
) -> None:
    """The retry timer runs on a virtual clock: each try comes exactly when
    its wait (doubling) is over."""
    calls: list[int] = []

    async def failing(directory: str, through_seq: int) -> int:
        calls.append(through_seq)
        return 1

    clock = VirtualClock()
    async with running(str(tmp_path), SEGMENT_BYTES, failing, clock) as broker:
        await broker.write(paused(40, name_chars=60))
        await _until(lambda: calls and not broker.compactor.running)
        for tries, wait_s in enumerate([RETRY_S, 2 * RETRY_S, 4 * RETRY_S], start=2):
            clock.advance(wait_s - BEFORE_S)
            assert not broker.compactor.running and len(calls) == tries - 1
            clock.advance(BEFORE_S)
            assert broker.compactor.running
            await _until(lambda: not broker.compactor.running)
            assert len(calls) == tries


async def test_stopping_kills_a_snapshotter_that_is_still_running(
    tmp_path: os.PathLike[str],
) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow(directory: str, through_seq: int) -> int:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 0

    async with running(str(tmp_path), min_bytes=SEGMENT_BYTES, spawn=slow) as broker:
        await broker.write(paused(40, name_chars=60))
        await asyncio.wait_for(started.wait(), WAIT_S)
        await broker.compactor.stop()
        assert cancelled.is_set() and not broker.compactor.running


async def test_the_brokers_compact_snapshots_through_everything_journalled(
    tmp_path: os.PathLike[str],
) -> None:
    from leash.broker.server.broker import Broker
    from leash.broker.server.config import ServerConfig

    directory = str(tmp_path)
    async with running(directory, min_bytes=1 << 40) as parts:
        await parts.write(paused(12, name_chars=60))
        state = replayed(parts.records)
        await parts.committer.close()  # the broker's own committer takes the journal over
        config, failures = ServerConfig(data_dir=directory), []
        broker = Broker(
            config,
            state,
            parts.journal,
            on_journal_failed=failures.append,
            compactor=parts.compactor,
        )
        parts.committer = broker.committer
        broker.guard.stop()
        assert await broker.compact() == 12
        assert failures == []
        assert _files(directory) == ([13], [12])
