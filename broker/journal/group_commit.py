"""Group commit: one write a loop turn, at most one fsync in flight.

Theory of operation. The event loop hands records to ``submit_records``
(numbered and framed into the turn's batch, where consecutive submits share
a journal frame: format.py) and replies to ``after``; a reply waits for
every byte submitted before it. At the end of the loop turn (``flush``,
which the broker calls once a turn, or a ``call_soon`` of its own) the whole
buffer is written to the open segment, on the loop: a few KB into the page
cache, a few microseconds.

- ``never`` and ``interval:MS``: the replies of the batch are released
  right after that write. Under ``interval`` the writer thread fsyncs every
  MS milliseconds when something was written since the last fsync.
- ``always``: the replies wait for an fsync. While fsyncs are fast (under
  ``INLINE_FSYNC_MAX_S``) it runs on the loop right after the write, as
  Redis does: the requests that arrive meanwhile wait in their sockets and
  make the next batch, and no thread hand-off or wake-up is paid (on a
  machine with few cores that costs more than it overlaps). Once an fsync
  is slow, the next ones run on the writer thread while the loop goes on
  serving; what the loop writes meanwhile waits for the next fsync, which
  starts as soon as this one ends (one fsync in flight, so every fsync
  covers every batch written before it); a fast one brings it back.

Two kinds of wait, under every policy: ``after`` (the reply waits for the
policy: the write, and under ``always`` the fsync) and ``after_written``
(the reply waits for the write only: a fetch's lease, which a power loss
can only make run again, as an expired lease does). Under ``always`` the
written-only replies of a batch go to the sockets (``on_released``) right
after its write, before its fsync; and records submitted with
``sync=False`` (leases) start no fsync of their own: the next fsync that
anyone waits for covers them, since an fsync covers every byte written
before it. An epoch roll (``hold_until_synced``) makes every reply wait
for an fsync again until one has covered it.

Under every policy a reply is sent only after its records were written to
the file, so a crash of the process never loses an acknowledged change;
under ``always`` neither does a power loss.

The writer thread is long-lived and does only what may block for long on
the disk: the fsyncs of ``interval`` and slow ones of ``always``, and
sealing a segment. The loop hands it a job through a
``SimpleQueue``; the thread answers with one ``call_soon_threadsafe`` per
job. While a job runs the loop keeps writing batches (writing and fsyncing
one file from two threads is safe; the fsync covers what was written
before it started) — except during a rotation: when the open segment
passes its size, the replies of the batch that filled it and the writes
after it wait until the writer has sealed it (an fsync, under every policy)
and started the next (``Journal.rotate``), and the loop is told (``on_sealed``):
that is where snapshots are triggered. ``seal`` does the same on request
(compaction).

A failed write or fsync is sticky: the committer stops, every waiting and
later reply is told the journal failed — the batch being synced and the
buffer being filled alike, so no reply acknowledges a record of a failed
batch — and ``on_failure`` is called once; fsync is never retried (the
Journal refuses to touch the disk again).
"""

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, Literal, NamedTuple

from leash.broker.core.records import Record
from leash.broker.journal.log import Batch, Journal, JournalFailure, Sealed

log = logging.getLogger("leash.journal")
FSYNC_SAMPLES_MAX = 1024  # the recent fsync times the quantiles are taken over
# An fsync of ``always`` runs on the loop while the last one took less than
# this; a slower one goes to the writer thread, so the loop stalls at most
# about this long on a slow disk, and keeps serving while the disk catches up.
INLINE_FSYNC_MAX_S = 0.01
Done = Callable[[bool], None]  # called with True when durable, False if the journal failed
Then = Callable[[list[Done], Any, BaseException | None], None]  # a job's answer, on the loop


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

    def text(self) -> str:
        """The policy as --fsync takes it."""
        return f"interval:{self.interval_ms}" if self.mode == "interval" else self.mode


class CommitStats:
    """Figures of the group commit since start, for stats and metrics. The
    writer thread adds to the fsync figures; readers on the loop see whole numbers."""

    __slots__ = ("batches", "fsync_recent_s", "fsync_s_total", "fsyncs", "records", "records_bytes")

    def __init__(self) -> None:
        self.batches = 0
        self.records = 0  # records submitted, over all batches
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
        self._always = policy.mode == "always"
        self._on_failure = on_failure
        self.on_sealed = on_sealed
        # How a flush is asked for: the broker runs flush() at the end of its
        # loop turn; on its own the committer schedules one with call_soon.
        self.schedule_flush: Callable[[], None] = self._schedule_own_flush
        self.on_released: Callable[[], None] | None = None  # after a job released replies
        self._batch = Batch()  # the records of this turn, framed
        self._batch_records = 0
        self._batch_sync = False  # the batch holds records that want an fsync (always)
        self._waiting: list[Done] = []  # replies for the batch being filled
        self._written_waiting: list[Done] = []  # replies that wait for its write only
        self._unsynced: list[Done] = []  # always: written, for the next fsync
        self._unsynced_data = False  # always: written since the last fsync began
        self._sync_wanted = False  # always: written records want an fsync, waited for or not
        self._dirty = False  # interval, never: written since the last fsync
        self._job_waiting: list[Done] | None = None  # the job in flight's replies
        self._rotating = False  # a rotation is wanted or in flight: writes wait
        self._sync_inline = True  # always: the last fsync was fast
        self._holding = False  # hold_until_synced: every reply waits for an fsync until one
        self._sealing: list[asyncio.Future[Sealed | None]] = []  # seal() callers
        self._flush_scheduled = False
        self.failed: BaseException | None = None
        self.stats = CommitStats()
        self.fsync_observers: list[Callable[[float], None]] = []  # called on the writer thread
        self._idle = asyncio.Event()  # set when settled, while someone drains
        self._draining = 0
        self._jobs: SimpleQueue[tuple[Callable[[], Any], list[Done], Then] | None] = SimpleQueue()
        self._thread = threading.Thread(target=self._run_jobs, name="leash-journal", daemon=True)
        self._thread.start()
        self._interval: asyncio.TimerHandle | None = None
        if policy.mode == "interval":
            self._interval = loop.call_later(policy.interval_ms / 1000, self._interval_sync)

    @property
    def busy(self) -> bool:
        """Whether a reply sent now would have to wait for the journal."""
        if self._batch or self._rotating:
            return True
        return self._always and (self._unsynced_data or self._job_waiting is not None)

    @property
    def busy_written(self) -> bool:
        """Whether a reply that needs only the write (``after_written``) would wait."""
        return self.busy if self._holding else bool(self._batch)

    def submit(self, data: bytes, records: int = 1) -> None:
        """Queue encoded records (``records`` of them) for the next batch."""
        if self.failed is not None:
            return
        if not self._batch:
            self.schedule_flush()
        self._batch.extend(data)
        self._batch_records += records
        self._batch_sync = True

    def submit_records(self, records: list[Record], *, sync: bool = True) -> None:
        """Encode records (numbering them) straight into the next batch.
        ``sync=False``: under ``always`` they start no fsync of their own
        (a lease's records); a later fsync covers them."""
        if self.failed is not None:
            return
        if not self._batch:
            self.schedule_flush()
        self._journal.encode_into(records, self._batch)
        self._batch_records += len(records)
        if sync:
            self._batch_sync = True

    def after(self, done: Done) -> None:
        """Call ``done`` once everything submitted so far is durable."""
        if self.failed is not None:
            done(False)
        elif not self.busy:
            done(True)
        else:
            self._waiting.append(done)
            self.schedule_flush()

    def after_written(self, done: Done) -> None:
        """Call ``done`` once everything submitted so far is written to the
        file, without waiting for an fsync (unless a hold is in force)."""
        if self.failed is not None:
            done(False)
        elif self._holding:
            self.after(done)
        elif not self._batch:
            done(True)
        else:
            self._written_waiting.append(done)
            self.schedule_flush()

    def hold_until_synced(self) -> None:
        """Under every policy, the replies from now on wait for an fsync that
        covers what was submitted so far (an epoch roll: its record must be
        durable before a number of the new epoch is sent). Then every policy
        goes back to its own pace (``always``: fetches wait for the write only)."""
        self._sync_wanted = True
        if self._holding:
            return
        self._holding = True
        if not self._always:
            self._always = True
            if self._dirty:  # written, not synced: the first fsync covers it
                self._dirty, self._unsynced_data = False, True
        self.schedule_flush()

    def _end_hold(self) -> None:
        """After an fsync: it covered everything written under the hold once
        nothing was written since it began and nothing waits to be."""
        if self._holding and not (self._unsynced_data or self._batch or self._unsynced):
            self._holding = False
            self._always = self._policy.mode == "always"

    async def drain(self) -> None:
        """Wait until nothing is buffered, waiting or in flight."""
        self._draining += 1
        try:
            while self.failed is None and not self._settled():
                self._idle.clear()
                self.schedule_flush()
                await self._idle.wait()
        finally:
            self._draining -= 1

    async def close(self) -> None:
        await self.drain()
        if self._interval is not None:
            self._interval.cancel()
        if self.failed is None and not self._always and self._dirty:
            synced: asyncio.Future[None] = self._loop.create_future()

            def then(_waiting: list[Done], _result: object, error: BaseException | None) -> None:
                self._job_waiting = None
                _settle(synced, None, error)

            self._dirty = False
            self._start(self._timed_sync, [], then)
            try:
                await synced
            except JournalFailure as error:
                self._fail(error, [])
        self._jobs.put(None)
        if self.failed is None:  # after a failure the thread may hang in the kernel
            self._thread.join()

    async def seal(self) -> Sealed | None:
        """Seal the open segment once everything submitted so far is
        written; None if it holds no record yet."""
        await self.drain()
        if self.failed is not None:
            raise self.failed
        sealed: asyncio.Future[Sealed | None] = self._loop.create_future()
        self._sealing.append(sealed)
        self._rotating = True
        self._kick()
        return await sealed

    # --- the loop side ----------------------------------------------------

    def _schedule_own_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._own_flush)

    def _own_flush(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def flush(self) -> None:
        """Write the batch of this turn and release what it allows (end of a loop turn)."""
        if self.failed is not None or self._rotating:
            return  # a rotation ends with a flush
        waiting, written = self._waiting, self._written_waiting
        if self._holding and written:  # the hold: they wait for the fsync too
            waiting, written = waiting + written, []
        self._waiting, self._written_waiting = [], []
        if self._batch:
            data, self._batch = self._batch.close(), Batch()
            sync_wanted, self._batch_sync = self._batch_sync, False
            try:
                self._journal.append(data, self._journal.next_seq - 1)
            except JournalFailure as error:
                self._fail(error, waiting + written)
                return
            stats = self.stats
            stats.batches += 1
            stats.records += self._batch_records
            stats.records_bytes += len(data)
            self._batch_records = 0
            if self._journal.full:  # its replies wait for the seal: a failure there fails them
                self._rotating = True
                self._unsynced += waiting + written
                written = []
            elif self._always:
                self._unsynced += waiting
            else:
                self._release(waiting, True)
            if self._always:
                self._unsynced_data = True
                self._sync_wanted = self._sync_wanted or sync_wanted
            else:
                self._dirty = True
        elif waiting:  # nothing new: these wait for what was written before them
            if self._always and self._unsynced_data:
                self._unsynced += waiting
            elif self._always and self._job_waiting is not None:
                self._job_waiting += waiting  # the fsync in flight covers every write
            else:
                self._release(waiting, True)
        if written:  # written: out to the sockets now, before any fsync
            self._release(written, True)
            if self.on_released is not None:
                self.on_released()
        self._kick()

    def _kick(self) -> None:
        """Start the next job if the writer thread is free and one is due."""
        if self._job_waiting is not None or self.failed is not None:
            return
        if self._rotating:  # the seal syncs what it seals
            waiting, self._unsynced, self._unsynced_data = self._unsynced, [], False
            self._sync_wanted = False
            self._start(self._rotate, waiting, self._rotated)
        elif self._unsynced_data and (self._unsynced or self._sync_wanted or self._draining):
            waiting, self._unsynced, self._unsynced_data = self._unsynced, [], False
            self._sync_wanted = False
            if self._sync_inline:
                self._sync_here(waiting)
            else:
                self._start(self._timed_sync, waiting, self._synced)
            return
        else:
            self._check_idle()

    def _sync_here(self, waiting: list[Done]) -> None:
        """Under ``always``, with a fast disk: the fsync on the loop. No thread
        hand-off and no wake-up; the requests read meanwhile wait in their
        sockets and make the next batch, so it is group commit all the same."""
        try:
            self._sync_inline = self._timed_sync() < INLINE_FSYNC_MAX_S
        except JournalFailure as error:
            self._fail(error, waiting)
            return
        self._release(waiting, True)
        self._end_hold()
        self._check_idle()

    def _start(self, work: Callable[[], Any], waiting: list[Done], then: Then) -> None:
        self._job_waiting = waiting
        self._jobs.put((work, waiting, then))

    def _synced(self, waiting: list[Done], elapsed_s: object, error: BaseException | None) -> None:
        self._job_waiting = None
        if isinstance(elapsed_s, float):
            self._sync_inline = elapsed_s < INLINE_FSYNC_MAX_S
        if error is not None or self.failed is not None:
            self._fail(error or self.failed, waiting)  # type: ignore[arg-type]
            return
        self._release(waiting, True)
        self._end_hold()
        self._kick()
        if self.on_released is not None:
            self.on_released()

    def _rotated(
        self, waiting: list[Done], sealed: Sealed | None, error: BaseException | None
    ) -> None:
        self._job_waiting = None
        self._rotating = False
        sealing, self._sealing = self._sealing, []
        if error is not None or self.failed is not None:
            failure = error or self.failed
            assert failure is not None
            for future in sealing:
                _settle(future, None, failure)
            self._fail(failure, waiting)
            return
        self._release(waiting, True)
        self._end_hold()
        if sealing:  # asked for by seal(): its caller takes the sealed segment
            for future in sealing:
                _settle(future, sealed, None)
        elif sealed is not None and self.on_sealed is not None:
            self.on_sealed(sealed)
        self.flush()  # what was held meanwhile
        if self.on_released is not None:
            self.on_released()

    def _interval_sync(self) -> None:
        if self.failed is not None:
            return
        if self._dirty and self._job_waiting is None and not self._rotating:
            self._dirty = False
            self._start(self._timed_sync, [], self._synced)
        self._interval = self._loop.call_later(self._policy.interval_ms / 1000, self._interval_sync)

    def _settled(self) -> bool:
        waiting = self._waiting or self._written_waiting
        return not (self.busy or waiting or self._job_waiting is not None)

    def _check_idle(self) -> None:
        if self._draining and self._settled():
            self._idle.set()

    def _fail(self, error: BaseException, waiting: list[Done]) -> None:
        first = self.failed is None
        if first:
            self.failed = error
            log.critical("journal failed, refusing every request: %s", error)
        in_flight = self._job_waiting or []
        failed = waiting + in_flight + self._unsynced + self._waiting + self._written_waiting
        in_flight.clear()  # answered now; the job's own answer finds none left
        self._batch, self._waiting, self._unsynced = Batch(), [], []
        self._written_waiting = []
        self._batch_records = 0
        self._release(failed, False)
        self._idle.set()
        if first:
            self._on_failure(error)

    @staticmethod
    def _release(waiting: list[Done], ok: bool) -> None:
        for done in waiting:
            done(ok)

    # --- the writer thread ------------------------------------------------

    def _run_jobs(self) -> None:
        while (job := self._jobs.get()) is not None:
            work, waiting, then = job
            result, error = None, None
            try:
                result = work()
            except Exception as failure:  # a JournalFailure; anything else is a bug, as fatal
                error = failure
            try:
                self._loop.call_soon_threadsafe(then, waiting, result, error)
            except RuntimeError:  # the loop is closed: nobody waits any more
                return

    def _rotate(self) -> Sealed | None:
        sealed = self._journal.rotate()  # syncs what it seals
        if sealed is not None:
            self._dirty = False
        return sealed

    def _timed_sync(self) -> float:
        started = time.perf_counter()
        self._journal.sync()
        elapsed_s = time.perf_counter() - started
        self.stats.fsyncs += 1
        self.stats.fsync_s_total += elapsed_s
        self.stats.fsync_recent_s.append(elapsed_s)
        for observe in self.fsync_observers:
            observe(elapsed_s)
        return elapsed_s


def _settle(future: "asyncio.Future[Any]", result: object, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
