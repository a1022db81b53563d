"""Group commit: one writer thread, one write and at most one fsync a batch.

Theory of operation. The event loop hands encoded records to ``submit``
and replies to ``after``; a reply waits for every byte submitted before it.
At the end of the loop turn the whole buffer goes to the writer thread as
one batch (one ``write``; under ``always`` also one ``fsync``) while the
loop goes on filling the next buffer. When the batch is done its replies
are released, in order. Under ``interval:MS`` the thread fsyncs every MS
milliseconds; under ``never`` the OS decides. Under every policy a reply
is sent only after its records were written to the file, so a process
crash never loses an acknowledged change; under ``always`` neither does a
power loss.

When the open segment passes its size the writer thread seals it and
starts the next (``Journal.rotate``) right after a batch, and the loop is
told (``on_sealed``): that is where snapshots are triggered. ``seal`` does
the same on request (compaction).

A failed write or fsync is sticky: the committer stops, every waiting and
later reply is told the journal failed — the batch in flight and the buffer
being filled alike, so no reply acknowledges a record of a failed batch —
and ``on_failure`` is called once; fsync is never retried (the Journal
refuses to touch the disk again).
"""

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, NamedTuple

from broker.journal.log import Journal, JournalFailure, Sealed

log = logging.getLogger("leash.journal")
FSYNC_SAMPLES_MAX = 1024  # the recent fsync times the quantiles are taken over
Done = Callable[[bool], None]  # called with True when durable, False if the journal failed


class FsyncPolicy(NamedTuple):
    mode: Literal["always", "interval", "never"]
    interval_ms: int = 0

    @classmethod
    def parse(cls, text: str) -> "FsyncPolicy":
        if text in ("always", "never"):
            return cls(text)  # type: ignore[arg-type]
        name, _, value = text.partition(":")
        if name == "interval" and value.isdigit() and 1 <= int(value) <= 60_000:
            return cls("interval", int(value))
        raise ValueError(f"--fsync must be always, never or interval:MS (1..60000), not {text!r}")


class CommitStats:
    """Figures of the group commit since start, for stats and metrics. The
    writer thread adds to them; readers on the loop see whole numbers."""

    __slots__ = ("batches", "fsync_recent_s", "fsync_s_total", "fsyncs", "records", "records_bytes")

    def __init__(self) -> None:
        self.batches = 0
        self.records = 0  # records written, over all batches
        self.fsyncs = 0
        self.fsync_s_total = 0.0
        self.fsync_recent_s: deque[float] = deque(maxlen=FSYNC_SAMPLES_MAX)
        self.records_bytes = 0

    def fsync_ms_quantile(self, q: float) -> float:
        """The q-quantile of the recent fsync times, in ms (0 before any)."""
        recent = sorted(self.fsync_recent_s)
        if not recent:
            return 0.0
        return recent[min(len(recent) - 1, int(q * len(recent)))] * 1000


class GroupCommitter:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        journal: Journal,
        policy: FsyncPolicy,
        on_failure: Callable[[BaseException], None],
        on_sealed: Callable[[Sealed], None] | None = None,
    ) -> None:
        self._loop = loop
        self._journal = journal
        self._policy = policy
        self._on_failure = on_failure
        self.on_sealed = on_sealed
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leash-journal")
        self._buffer: list[bytes] = []
        self._waiting: list[Done] = []  # replies for the buffer being filled
        self._in_flight = False
        self._flush_scheduled = False
        self._dirty = False  # written since the last fsync (interval policy)
        self.failed: BaseException | None = None
        self.stats = CommitStats()
        self.fsync_observers: list[Callable[[float], None]] = []  # called on the writer thread
        self._idle = asyncio.Event()
        self._idle.set()
        self._interval_task: asyncio.Task[None] | None = None
        if policy.mode == "interval":
            self._interval_task = loop.create_task(self._interval_sync())

    @property
    def busy(self) -> bool:
        return self._in_flight or bool(self._buffer)

    def submit(self, data: bytes, records: int = 1) -> None:
        """Queue encoded records (``records`` of them) for the next batch."""
        if self.failed is not None:
            return
        self.stats.records += records
        self._buffer.append(data)
        self._idle.clear()
        self._schedule_flush()

    def after(self, done: Done) -> None:
        """Call ``done`` once everything submitted so far is durable."""
        if self.failed is not None:
            done(False)
        elif not self.busy:
            done(True)
        else:
            self._waiting.append(done)
            self._schedule_flush()

    async def drain(self) -> None:
        """Wait until nothing is buffered or in flight."""
        while self.busy and self.failed is None:
            self._idle.clear()
            self._schedule_flush()
            await self._idle.wait()

    async def close(self) -> None:
        await self.drain()
        if self._interval_task is not None:
            self._interval_task.cancel()
        if self.failed is None and self._policy.mode != "always" and self._dirty:
            try:
                await self._loop.run_in_executor(self._executor, self._sync_now)
            except JournalFailure as error:
                self._fail(error, [])
        # After a failure the writer thread may hang in the kernel: do not wait for it.
        self._executor.shutdown(wait=self.failed is None)

    async def seal(self) -> Sealed | None:
        """Seal the open segment once everything submitted so far is
        written; None if it holds no record yet."""
        await self.drain()
        if self.failed is not None:
            raise self.failed
        try:
            return await self._loop.run_in_executor(self._executor, self._rotate)
        except JournalFailure as error:
            self._fail(error, [])
            raise

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and not self._in_flight:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._in_flight or self.failed is not None:
            return
        if not self._buffer:
            self._release(self._waiting, True)
            self._waiting = []
            self._idle.set()
            return
        data = b"".join(self._buffer)
        through_seq = self._journal.next_seq - 1  # every encoded record is in the buffer
        waiting = self._waiting
        self._buffer, self._waiting = [], []
        self._in_flight = True
        future = self._loop.run_in_executor(self._executor, self._write, data, through_seq)
        future.add_done_callback(lambda f: self._written(f, waiting))

    def _write(self, data: bytes, through_seq: int) -> Sealed | None:
        # Runs on the one writer thread, as do _sync_now and _rotate: no lock needed.
        self._journal.append(data, through_seq)
        self.stats.records_bytes += len(data)
        if self._policy.mode == "always":
            self._timed_sync()
        else:
            self._dirty = True
        return self._rotate() if self._journal.full else None

    def _rotate(self) -> Sealed | None:
        sealed = self._journal.rotate()  # syncs what it seals
        if sealed is not None:
            self._dirty = False
        return sealed

    def _timed_sync(self) -> None:
        started = time.perf_counter()
        self._journal.sync()
        elapsed_s = time.perf_counter() - started
        self.stats.fsyncs += 1
        self.stats.fsync_s_total += elapsed_s
        self.stats.fsync_recent_s.append(elapsed_s)
        for observe in self.fsync_observers:
            observe(elapsed_s)

    def _sync_now(self) -> None:
        if self._dirty:
            self._dirty = False
            self._timed_sync()

    def _written(self, future: "asyncio.Future[Sealed | None]", waiting: list[Done]) -> None:
        self._in_flight = False
        self.stats.batches += 1
        error = future.exception() or self.failed  # failed meanwhile (an interval fsync)
        if error is not None:
            self._fail(error, waiting)
            return
        self._release(waiting, True)
        sealed = future.result()
        if sealed is not None and self.on_sealed is not None:
            self.on_sealed(sealed)
        if self._buffer or self._waiting:
            self._schedule_flush()
        else:
            self._idle.set()

    def _fail(self, error: BaseException, waiting: list[Done]) -> None:
        first = self.failed is None
        if first:
            self.failed = error
            log.critical("journal failed, refusing every request: %s", error)
        self._release(waiting + self._waiting, False)
        self._buffer, self._waiting = [], []
        self._idle.set()
        if first:
            self._on_failure(error)

    @staticmethod
    def _release(waiting: list[Done], ok: bool) -> None:
        for done in waiting:
            done(ok)

    async def _interval_sync(self) -> None:
        period_s = self._policy.interval_ms / 1000
        while self.failed is None:
            await asyncio.sleep(period_s)
            if not self._dirty:
                continue
            try:
                await self._loop.run_in_executor(self._executor, self._sync_now)
            except JournalFailure as error:
                self._fail(error, [])
