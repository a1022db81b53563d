"""When to snapshot, taking it without stalling the event loop, and
removing what a snapshot covers.

Trigger: each time the writer seals a segment, if the sealed tail since
the last snapshot holds at least max(``min_bytes``, last snapshot size)
bytes, a snapshotter process (snapshotter.py) is started for the sealed
boundary; the broker keeps serving. When it exits 0 the snapshot is
durable, and the segments and the older snapshot it covers are removed
(off the event loop). If it fails, the error is logged and the next try
waits (``RETRY_S``, doubling: a timer of the ``Scheduler``). ``compact``
seals the open segment and snapshots at once (what an operator's compact
asks for). At a clean shutdown ``snapshot_now`` writes the snapshot from
the live state itself: there is nothing else to serve then.

Disk use: the snapshot, the tail (at most about the threshold plus one
segment), and, while a snapshot is being written, the new one: about three
times the live state plus a segment, however old the jobs are.
"""

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable

from leash.broker import core
from leash.broker.core import image
from leash.broker.journal import layout, snapshot
from leash.broker.journal.disk import Disk
from leash.broker.journal.log import Journal, Sealed
from leash.broker.journal.recovery import Recovered
from leash.broker.journal.scheduler import LoopScheduler, Scheduler, Timer

log = logging.getLogger("leash.journal")
DEFAULT_SNAPSHOT_MIN_BYTES = 64 * 1024 * 1024
RETRY_S, RETRY_MAX_S = 5.0, 300.0
Spawn = Callable[[str, int], Awaitable[int]]  # (directory, through seq) -> exit status
Seal = Callable[[], Awaitable[Sealed | None]]  # the group committer's seal


async def run_snapshotter(directory: str, through_seq: int, keep_free_bytes: int = 0) -> int:
    """Run ``python -m leash.broker.journal.snapshotter`` and wait for it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "leash.broker.journal.snapshotter",
        directory,
        str(through_seq),
        str(os.getpid()),
        str(keep_free_bytes),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        return await process.wait()
    except asyncio.CancelledError:
        if process.returncode is None:
            process.kill()  # our own child, by its pid
            await process.wait()
        raise


class Compactor:
    def __init__(
        self,
        directory: str,
        disk: Disk,
        journal: Journal,
        recovered: Recovered,
        min_bytes: int = DEFAULT_SNAPSHOT_MIN_BYTES,
        spawn: Spawn = run_snapshotter,
        reserve: Callable[[int], None] = lambda _bytes: None,
        scheduler: Scheduler | None = None,
    ) -> None:
        """``reserve`` is told what a snapshot being written may take on
        disk (0 once it ended): the free-space watch keeps it from what
        pushes may use. The committer tells ``on_sealed`` of each segment
        it seals. ``scheduler`` arms the retry timer (the running loop's
        when None: the offline tools' compactor has no loop and no timer)."""
        self.directory = directory
        self.disk = disk
        self.journal = journal
        self.min_bytes = min_bytes
        self.spawn = spawn
        self.snapshot_seq = recovered.snapshot.seq if recovered.snapshot else 0
        self.snapshot_bytes = recovered.snapshot_bytes
        # Every replayed segment but the one appended to was sealed by a
        # rotation (or synced as the journal opened: one of an older format).
        self.sealed = [
            Sealed(segment.first_seq, segment.last_seq, segment.path, segment.size_bytes)
            for segment in recovered.segments
            if segment.path != journal.path
        ]
        self.snapshots_taken = 0
        self.reserve = reserve
        self._task: asyncio.Task[bool] | None = None
        self._retry_s = RETRY_S
        self._scheduler = scheduler
        self._retry: Timer | None = None
        self._stopped = False

    @property
    def threshold_bytes(self) -> int:
        return max(self.min_bytes, self.snapshot_bytes)

    @property
    def tail_bytes(self) -> int:
        return sum(segment.size_bytes for segment in self.sealed)

    @property
    def running(self) -> bool:
        return self._task is not None

    def on_sealed(self, sealed: Sealed) -> None:
        self.sealed.append(sealed)
        self.maybe_start()

    def maybe_start(self) -> None:
        idle = self._task is None and self._retry is None and not self._stopped
        if idle and self.sealed and self.tail_bytes >= self.threshold_bytes:
            self._start(self.sealed[-1].last_seq)

    def _start(self, through_seq: int) -> "asyncio.Task[bool]":
        task = asyncio.get_running_loop().create_task(self._snapshot(through_seq))
        self._task = task
        return task

    async def compact(self, seal: Seal) -> int:
        """Seal the open segment (``seal``: the running journal's) and
        snapshot through it; the seq covered."""
        while self._task is not None:
            await asyncio.shield(self._task)
        sealed = await seal()
        if sealed is not None:
            self.sealed.append(sealed)
        if self.sealed and not self._stopped:
            await self._start(self.sealed[-1].last_seq)
        return self.snapshot_seq

    async def _snapshot(self, through_seq: int) -> bool:
        self.reserve(self.snapshot_bytes + self.tail_bytes)  # about what the new one takes
        try:
            status = await self.spawn(self.directory, through_seq)
            if status == 0:
                obsolete = self._obsolete(through_seq)
                size_bytes = await asyncio.to_thread(self._remove, through_seq, obsolete)
                self._covered(through_seq, size_bytes, len(obsolete))
                self._retry_s = RETRY_S
                return True
            log.error("snapshot through seq %d failed (status %d)", through_seq, status)
        except OSError as error:
            log.error("snapshot through seq %d failed: %s", through_seq, error)
        finally:
            self._task = None
            self.reserve(0)
        scheduler = self._scheduler or LoopScheduler(asyncio.get_running_loop())
        self._retry = scheduler.call_later(self._retry_s, self._retry_now)
        self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)
        return False

    def _retry_now(self) -> None:
        self._retry = None
        self.maybe_start()

    def _obsolete(self, through_seq: int) -> list[str]:
        """What the snapshot through ``through_seq`` covers."""
        obsolete = [segment.path for segment in self.sealed if segment.first_seq <= through_seq]
        snapshots = layout.scan(self.disk, self.directory).snapshots  # a stopped one's too
        return obsolete + [older.path for older in snapshots if older.seq < through_seq]

    def _remove(self, through_seq: int, obsolete: list[str]) -> int:
        """The new snapshot is durable: remove what it covers (a crash
        half-way leaves files that recovery ignores). Its size."""
        for stale in obsolete:
            with contextlib.suppress(FileNotFoundError):
                self.disk.remove(stale)
        return self.disk.size(os.path.join(self.directory, layout.snapshot_name(through_seq)))

    def _covered(self, through_seq: int, size_bytes: int, removed: int) -> None:
        self.sealed = [segment for segment in self.sealed if segment.first_seq > through_seq]
        self.snapshot_seq, self.snapshot_bytes = through_seq, size_bytes
        self.snapshots_taken += 1
        log.info(
            "snapshot through seq %d: %d bytes; %d covered files removed",
            through_seq,
            size_bytes,
            removed,
        )

    async def stop(self) -> None:
        """Stop a snapshotter that is running (its temp file is never read)."""
        self._stopped = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def snapshot_now(self, state: core.State) -> None:
        """A snapshot from ``state`` itself, the state after the journal's
        last written record, once no writer thread runs: seal the open
        segment, write, remove what it covers. The clean shutdown's (it
        blocks the loop; there is nothing else to serve then) and the
        offline ``leash journal compact``'s."""
        sealed = self.journal.rotate()
        if sealed is not None:
            self.sealed.append(sealed)
        through_seq = self.journal.written_seq
        if through_seq == self.snapshot_seq:
            return
        snapshot.write(self.disk, self.directory, image.dump(state), state.epoch, through_seq)
        obsolete = self._obsolete(through_seq)
        self._covered(through_seq, self._remove(through_seq, obsolete), len(obsolete))
