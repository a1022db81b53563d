"""Group commit: one write a loop turn, at most one fsync in flight.

Theory of operation. The event loop hands records to ``submit_records``
(numbered and framed into the turn's write buffer, where consecutive submits share
a journal frame: format.py) and replies to ``after``; a reply waits for
every byte submitted before it. At the end of the loop turn (``flush``,
which the owner runs once a turn when ``on_turn`` asks it to, or a
``call_soon`` of its own) the whole buffer is written to the open segment,
on the loop: a few KB into the page cache, a few microseconds.

- ``never`` and ``interval:MS``: the replies of the write are released
  right after that write. Under ``interval`` the writer thread fsyncs every
  MS milliseconds when something was written since the last fsync.
- ``always``: the replies wait for an fsync. While fsyncs are fast (under
  ``INLINE_FSYNC_MAX_S``) it runs on the loop right after the write, as
  Redis does: the requests that arrive meanwhile wait in their sockets and
  make the next write, and no thread hand-off or wake-up is paid (on a
  machine with few cores that costs more than it overlaps). Once an fsync
  is slow, the next ones run on the writer thread while the loop goes on
  serving; what the loop writes meanwhile waits for the next fsync, which
  starts as soon as this one ends (one fsync in flight, so every fsync
  covers every write before it); a fast one brings it back.

Two kinds of wait, under every policy: ``after`` (the reply waits for the
policy: the write, and under ``always`` the fsync) and ``after_written``
(the reply waits for the write only: a fetch's lease, which a power loss
can only make run again, as an expired lease does). Under ``always`` the
written-only replies of a write are handed out right after it,
before its fsync; and records submitted with ``sync=False`` (leases) start
no fsync of their own: the next fsync that anyone waits for covers them,
since an fsync covers every byte written before it. An epoch roll
(``hold_until_synced``) makes every reply wait for an fsync again until one
has covered it.

Under every policy a reply is released only after its records were written
to the file, so a crash of the process never loses an acknowledged change;
under ``always`` neither does a power loss. Released replies go to one
callable, ``deliver`` (the owner sends them and writes its sockets).

The phases. What the journal file and the writer are doing is one
``Phase``, changed only through ``_to``, which checks the move against
``TRANSITIONS`` (an illegal move is a bug: it asserts):

    IDLE ──write──▶ WRITTEN ──fsync on the loop──▶ SYNCING_LOOP ──▶ IDLE
      ▲               │  └──fsync on the thread──▶ SYNCING ──write──▶ SYNCING_WRITTEN
      │               │                              │ done ▶ IDLE     │ done ▶ WRITTEN
      │               └──segment full / seal──▶ ROTATING ◀── ROTATE_WANTED ◀──┘ (full / seal
      └──────────────────────────── sealed ──────┘        while an fsync runs)
    any phase ──a write, fsync or seal failed──▶ FAILED (sticky)

WRITTEN means "written since the last fsync began": under ``never`` and
``interval`` it is the usual phase between fsyncs; under ``always`` it
lasts until someone waits for an fsync. Beside the phase: the policy
(immutable), the hold (``hold_until_synced``, loop-owned), whether the
written records owe an fsync nobody waits for (``_sync_owed``), and
whether the last fsync was fast (``_sync_inline``).

The writer thread (scheduler.WriterThread) is long-lived and does only
what may block for long on the disk: the fsyncs of ``interval`` and slow
ones of ``always``, and sealing a segment. It owns no field of the
committer: each job's result comes back on the loop, where the phase
moves. While an fsync job runs the loop keeps writing (writing and
fsyncing one file from two threads is safe; the fsync covers what was
written before it started) — except during a rotation: when the open
segment passes its size, the replies of the write that filled it and the
writes after it wait until the writer has sealed it (an fsync, under every
policy) and started the next (``Journal.rotate``), and the owner is told
(``on_sealed``): that is where snapshots are triggered. ``seal`` does the
same on request (compaction).

A failed write or fsync is sticky: the committer stops, every waiting and
later reply is told the journal failed — the write being synced and the
buffer being filled alike, so no reply acknowledges a record of a failed
write — and ``on_failure`` is called once; fsync is never retried (the
Journal refuses to touch the disk again).

Time comes from the ``Scheduler`` (the interval timer, how long an fsync
took), so tests run the committer on a virtual clock with a writer whose
jobs finish when the test says.
"""

import asyncio
import enum
import functools
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

from leash.broker.core.records import Record
from leash.broker.journal.log import Journal, JournalFailure, Sealed, WriteBuffer
from leash.broker.journal.scheduler import Scheduler, Timer, Writer, WriterThread

log = logging.getLogger("leash.journal")
FSYNC_SAMPLES_MAX = 1024  # the recent fsync times the quantiles are taken over
# An fsync of ``always`` runs on the loop while the last one took less than
# this; a slower one goes to the writer thread, so the loop stalls at most
# about this long on a slow disk, and keeps serving while the disk catches up.
INLINE_FSYNC_MAX_S = 0.01
Done = Callable[[bool], None]  # called with True when durable, False if the journal failed
Deliver = Callable[[list[Done], bool], None]  # hands released replies out


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
    """Figures of the group commit since start, for stats and metrics (the loop's)."""

    __slots__ = ("fsync_recent_s", "fsync_s_total", "fsyncs", "records", "records_bytes", "writes")

    def __init__(self) -> None:
        self.writes = 0  # writes of the buffer (a loop turn's records each)
        self.records = 0  # records submitted, over all writes
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


class Phase(enum.Enum):
    IDLE = "idle"  # the writer is free; nothing written since the last fsync began
    WRITTEN = "written"  # the writer is free; written since the last fsync began
    SYNCING_LOOP = "syncing on the loop"  # always, a fast disk: during that call only
    SYNCING = "syncing on the thread"  # nothing written since it began
    SYNCING_WRITTEN = "syncing on the thread, written since"  # the next fsync covers that
    ROTATE_WANTED = "rotation wanted"  # writes wait; the fsync in flight ends first
    ROTATING = "rotating"  # the writer seals the segment and opens the next; writes wait
    FAILED = "failed"  # a write, fsync or seal failed: sticky


P = Phase
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    P.IDLE: frozenset({P.WRITTEN, P.ROTATING, P.FAILED}),
    P.WRITTEN: frozenset({P.WRITTEN, P.SYNCING_LOOP, P.SYNCING, P.ROTATING, P.FAILED}),
    P.SYNCING_LOOP: frozenset({P.IDLE, P.FAILED}),
    P.SYNCING: frozenset({P.SYNCING_WRITTEN, P.IDLE, P.ROTATE_WANTED, P.FAILED}),
    P.SYNCING_WRITTEN: frozenset({P.SYNCING_WRITTEN, P.WRITTEN, P.ROTATE_WANTED, P.FAILED}),
    P.ROTATE_WANTED: frozenset({P.ROTATING, P.FAILED}),
    P.ROTATING: frozenset({P.IDLE, P.FAILED}),
    P.FAILED: frozenset(),
}
WRITER_BUSY = frozenset({P.SYNCING, P.SYNCING_WRITTEN, P.ROTATE_WANTED, P.ROTATING})
WRITES_HELD = frozenset({P.ROTATE_WANTED, P.ROTATING})
UNSYNCED = frozenset({P.WRITTEN, P.SYNCING_WRITTEN})  # written bytes no fsync covers yet
# Where a write and the end of an fsync on the writer lead, from each phase they can happen in.
_AFTER_WRITE = {
    P.IDLE: P.WRITTEN,
    P.WRITTEN: P.WRITTEN,
    P.SYNCING: P.SYNCING_WRITTEN,
    P.SYNCING_WRITTEN: P.SYNCING_WRITTEN,
}
_AFTER_SYNC = {P.SYNCING: P.IDLE, P.SYNCING_WRITTEN: P.WRITTEN}


def _call_each(replies: list[Done], ok: bool) -> None:
    for done in replies:
        done(ok)


class GroupCommitter:
    def __init__(
        self,
        scheduler: Scheduler,
        journal: Journal,
        policy: FsyncPolicy,
        *,
        on_failure: Callable[[BaseException], None],
        on_sealed: Callable[[Sealed], None] | None = None,
        on_turn: Callable[[], None] | None = None,
        on_fsync: Callable[[float], None] | None = None,
        deliver: Deliver = _call_each,
        writer: Writer | None = None,
    ) -> None:
        """``on_turn``: how a flush is asked for (the owner runs ``flush``
        at the end of its loop turn; by default the committer schedules one
        with ``call_soon``). ``on_fsync``: told the seconds of each timed
        fsync, on the loop. ``deliver``: the one place released replies go.
        ``writer``: what runs the jobs off the loop (a thread by default)."""
        self._scheduler = scheduler
        self._journal = journal
        self._policy = policy
        self._always_policy = policy.mode == "always"
        self._on_failure = on_failure
        self._on_sealed = on_sealed
        self._request_flush = on_turn or self._schedule_own_flush
        self._on_fsync = on_fsync
        self._deliver = deliver
        self._phase = Phase.IDLE
        self._buffer = WriteBuffer()  # the records of this turn, framed
        self._buffer_records = 0
        self._buffer_sync = False  # the buffer holds records that want an fsync (always)
        self._waiting: list[Done] = []  # replies for the write being filled
        self._written_waiting: list[Done] = []  # replies that wait for its write only
        self._unsynced: list[Done] = []  # written, for the next fsync (or the seal)
        self._in_flight: list[Done] = []  # the writer's job's replies
        self._sync_owed = False  # always: written records want an fsync, waited for or not
        self._sync_inline = True  # always: the last fsync was fast
        self._holding = False  # hold_until_synced: every reply waits for an fsync until one
        self._sealing: list[asyncio.Future[Sealed | None]] = []  # seal() callers
        self._flush_scheduled = False
        self.failed: BaseException | None = None
        self.stats = CommitStats()
        self._idle = asyncio.Event()  # set when drained, while someone drains
        self._draining = 0
        self._writer = writer if writer is not None else WriterThread(scheduler)
        self._interval: Timer | None = None
        if policy.mode == "interval":
            self._interval = scheduler.call_later(policy.interval_ms / 1000, self._interval_sync)

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def holding(self) -> bool:
        """Whether a hold (``hold_until_synced``) is in force."""
        return self._holding

    @property
    def _durable(self) -> bool:
        """Whether replies wait for an fsync now: ``always``, or a hold."""
        return self._always_policy or self._holding

    @property
    def busy(self) -> bool:
        """Whether a reply sent now would have to wait for the journal."""
        if self._buffer or self._phase in WRITES_HELD:
            return True
        return self._durable and (self._phase in UNSYNCED or self._phase in WRITER_BUSY)

    @property
    def busy_written(self) -> bool:
        """Whether a reply that needs only the write (``after_written``) would wait."""
        return self.busy if self._holding else bool(self._buffer)

    def submit(self, data: bytes, records: int = 1) -> None:
        """Queue encoded records (``records`` of them) for the next write."""
        if self.failed is not None:
            return
        if not self._buffer:
            self._request_flush()
        self._buffer.extend(data)
        self._buffer_records += records
        self._buffer_sync = True

    def submit_records(self, records: list[Record], *, sync: bool = True) -> None:
        """Encode records (numbering them) straight into the next write.
        ``sync=False``: under ``always`` they start no fsync of their own
        (a lease's records); a later fsync covers them."""
        if self.failed is not None:
            return
        if not self._buffer:
            self._request_flush()
        self._journal.encode_into(records, self._buffer)
        self._buffer_records += len(records)
        if sync:
            self._buffer_sync = True

    def after(self, done: Done) -> None:
        """Call ``done`` once everything submitted so far is durable."""
        if self.failed is not None:
            done(False)
        elif not self.busy:
            done(True)
        else:
            self._waiting.append(done)
            self._request_flush()

    def after_written(self, done: Done) -> None:
        """Call ``done`` once everything submitted so far is written to the
        file, without waiting for an fsync (unless a hold is in force)."""
        if self.failed is not None:
            done(False)
        elif self._holding:
            self.after(done)
        elif not self._buffer:
            done(True)
        else:
            self._written_waiting.append(done)
            self._request_flush()

    def hold_until_synced(self) -> None:
        """Under every policy, the replies from now on wait for an fsync that
        covers what was submitted so far (an epoch roll: its record must be
        durable before a number of the new epoch is sent). Then every policy
        goes back to its own pace (``always``: fetches wait for the write only)."""
        self._sync_owed = True
        if not self._holding:
            self._holding = True
            self._request_flush()

    def _end_hold(self) -> None:
        """After an fsync: it covered everything written under the hold once
        nothing was written since it began and nothing waits to be."""
        if self._holding and self._phase is P.IDLE and not (self._buffer or self._unsynced):
            self._holding = False

    async def drain(self) -> None:
        """Wait until nothing is buffered, waiting or in flight."""
        self._draining += 1
        try:
            while self.failed is None and not self._drained():
                self._idle.clear()
                self._request_flush()
                await self._idle.wait()
        finally:
            self._draining -= 1

    async def close(self) -> None:
        await self.drain()
        if self._interval is not None:
            self._interval.cancel()
        if self.failed is None and not self._durable and self._phase is P.WRITTEN:
            synced: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def then(_waiting: list[Done], elapsed_s: object, error: BaseException | None) -> None:
                self._in_flight = []
                if error is None and self.failed is None:
                    self._fsync_took(elapsed_s)
                    self._to(_AFTER_SYNC[self._phase])
                _resolve(synced, None, error)

            self._start(P.SYNCING, self._timed_sync, [], then)
            try:
                await synced
            except JournalFailure as error:
                self._fail(error, [])
        self._writer.stop(wait=self.failed is None)  # after a failure it may hang in the kernel

    async def seal(self) -> Sealed | None:
        """Seal the open segment once everything submitted so far is
        written; None if it holds no record yet."""
        await self.drain()
        if self.failed is not None:
            raise self.failed
        sealed: asyncio.Future[Sealed | None] = asyncio.get_running_loop().create_future()
        self._sealing.append(sealed)
        self._want_rotation()
        return await sealed

    # --- the loop side ----------------------------------------------------

    def _to(self, phase: Phase) -> None:
        assert phase in TRANSITIONS[self._phase], (
            f"group commit: {self._phase.value} -> {phase.value}"
        )
        self._phase = phase

    def _schedule_own_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._scheduler.call_soon(self._own_flush)

    def _own_flush(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def flush(self) -> None:
        """Write this turn's records and release what it allows (end of a loop turn)."""
        if self.failed is not None or self._phase in WRITES_HELD:
            return  # a rotation ends with a flush
        waiting, written = self._waiting, self._written_waiting
        if self._holding and written:  # the hold: they wait for the fsync too
            waiting, written = waiting + written, []
        self._waiting, self._written_waiting = [], []
        if self._buffer:
            if not self._write(waiting, written):
                return
            if self._journal.full:  # its replies wait for the seal: a failure there fails them
                self._unsynced += waiting + written
                written = []
                self._want_rotation()
            elif self._durable:
                self._unsynced += waiting
            else:
                self._deliver(waiting, True)
        elif waiting:  # nothing new: these wait for what was written before them
            if self._durable and self._phase in UNSYNCED:
                self._unsynced += waiting
            elif self._durable and self._phase is P.SYNCING:
                self._in_flight += waiting  # the fsync in flight covers every write
            else:
                self._deliver(waiting, True)
        if written:  # written: out to the sockets now, before any fsync
            self._deliver(written, True)
        self._kick()

    def _write(self, waiting: list[Done], written: list[Done]) -> bool:
        """Write the buffer to the open segment; False if that failed."""
        data, self._buffer = self._buffer.close(), WriteBuffer()
        sync_wanted, self._buffer_sync = self._buffer_sync, False
        try:
            self._journal.append(data, self._journal.next_seq - 1)
        except JournalFailure as error:
            self._fail(error, waiting + written)
            return False
        self._to(_AFTER_WRITE[self._phase])
        stats = self.stats
        stats.writes += 1
        stats.records += self._buffer_records
        stats.records_bytes += len(data)
        self._buffer_records = 0
        if self._durable:
            self._sync_owed = self._sync_owed or sync_wanted
        return True

    def _want_rotation(self) -> None:
        """Seal the open segment now, or once the fsync in flight ended."""
        phase = self._phase
        if phase is P.IDLE or phase is P.WRITTEN:
            self._start_rotation()
        elif phase is P.SYNCING or phase is P.SYNCING_WRITTEN:
            self._to(P.ROTATE_WANTED)
        # already wanted or rotating: that rotation answers every seal() caller

    def _start_rotation(self) -> None:
        waiting, self._unsynced = self._unsynced, []  # the seal syncs what it seals
        self._sync_owed = False
        self._start(P.ROTATING, self._journal.rotate, waiting, self._rotated)

    def _kick(self) -> None:
        """Start an fsync if the writer is free and one is due."""
        if self._phase is not P.WRITTEN or not self._durable:
            self._check_idle()
            return
        if self._unsynced or self._sync_owed or self._draining:
            waiting, self._unsynced = self._unsynced, []
            self._sync_owed = False
            if self._sync_inline:
                self._sync_here(waiting)
            else:
                self._start(P.SYNCING, self._timed_sync, waiting, self._synced)
        else:
            self._check_idle()

    def _sync_here(self, waiting: list[Done]) -> None:
        """Under ``always``, with a fast disk: the fsync on the loop. No thread
        hand-off and no wake-up; the requests read meanwhile wait in their
        sockets and make the next write, so it is group commit all the same."""
        self._to(P.SYNCING_LOOP)
        try:
            elapsed_s = self._timed_sync()
        except JournalFailure as error:
            self._fail(error, waiting)
            return
        self._to(P.IDLE)
        self._fsync_took(elapsed_s)
        self._deliver(waiting, True)
        self._end_hold()
        self._check_idle()

    def _start(
        self,
        phase: Phase,
        work: Callable[[], Any],
        waiting: list[Done],
        then: Callable[[list[Done], Any, BaseException | None], None],
    ) -> None:
        self._to(phase)
        self._in_flight = waiting
        self._writer.run(work, functools.partial(then, waiting))

    def _synced(self, waiting: list[Done], elapsed_s: object, error: BaseException | None) -> None:
        self._in_flight = []
        if error is not None or self.failed is not None:
            self._fail(error or self.failed, waiting)  # type: ignore[arg-type]
            return
        self._fsync_took(elapsed_s)
        if self._phase is P.ROTATE_WANTED:
            self._deliver(waiting, True)
            self._start_rotation()
            return
        self._to(_AFTER_SYNC[self._phase])
        self._deliver(waiting, True)
        self._end_hold()
        self._kick()

    def _rotated(
        self, waiting: list[Done], sealed: Sealed | None, error: BaseException | None
    ) -> None:
        self._in_flight = []
        if error is not None or self.failed is not None:
            self._fail(error or self.failed, waiting)  # type: ignore[arg-type]
            return
        sealing, self._sealing = self._sealing, []
        self._to(P.IDLE)
        self._deliver(waiting, True)
        self._end_hold()
        if sealing:  # asked for by seal(): its caller takes the sealed segment
            for future in sealing:
                _resolve(future, sealed, None)
        elif sealed is not None and self._on_sealed is not None:
            self._on_sealed(sealed)
        self.flush()  # what was held meanwhile

    def _interval_sync(self) -> None:
        if self.failed is not None:
            return
        if self._phase is P.WRITTEN and not self._holding:
            self._start(P.SYNCING, self._timed_sync, [], self._synced)
        self._interval = self._scheduler.call_later(
            self._policy.interval_ms / 1000, self._interval_sync
        )

    def _drained(self) -> bool:
        waiting = self._waiting or self._written_waiting
        return not (self.busy or waiting or self._phase in WRITER_BUSY)

    def _check_idle(self) -> None:
        if self._draining and self._drained():
            self._idle.set()

    def _fail(self, error: BaseException, waiting: list[Done]) -> None:
        first = self.failed is None
        if first:
            self.failed = error
            self._to(P.FAILED)
            log.critical("journal failed, refusing every request: %s", error)
        in_flight = self._in_flight
        failed = waiting + in_flight + self._unsynced + self._waiting + self._written_waiting
        in_flight.clear()  # answered now; the job's own answer finds none left
        self._buffer, self._waiting, self._unsynced = WriteBuffer(), [], []
        self._written_waiting = []
        self._buffer_records = 0
        sealing, self._sealing = self._sealing, []
        for future in sealing:  # a seal() waiting for a rotation that will not come
            _resolve(future, None, error)
        self._deliver(failed, False)
        self._idle.set()
        if first:
            self._on_failure(error)

    def _fsync_took(self, elapsed_s: object) -> None:
        """An fsync ended well (on the loop, whichever thread ran it)."""
        if not isinstance(elapsed_s, float):
            return  # a seal's: not timed
        self._sync_inline = elapsed_s < INLINE_FSYNC_MAX_S
        stats = self.stats
        stats.fsyncs += 1
        stats.fsync_s_total += elapsed_s
        stats.fsync_recent_s.append(elapsed_s)
        if self._on_fsync is not None:
            self._on_fsync(elapsed_s)

    # --- on the writer (or the loop, for a fast disk) ----------------------

    def _timed_sync(self) -> float:
        now = self._scheduler.now
        started = now()
        self._journal.sync()
        return now() - started


def _resolve(future: "asyncio.Future[Any]", result: object, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
