"""The shell around the core: decode, decide, apply, journal, reply.

For each frame: decode it (typed), call ``core.decide`` with the current
time, apply the records it returns, hand them to the group committer, and
send the reply once they are durable. No await sits between decide and
apply. Handlers here hold no job semantics; the core does. The shell also
runs the timer that calls ``core.tick`` and serves held long-poll fetches
when their queues get ready jobs.

The end of a loop turn (``_end_turn``, scheduled once by the first thing
of the turn that needs it) serves the held fetches with the jobs the turn
made ready (so a fetch held at the broker gets every job a pipelined burst
of pushes brought, not one), writes the turn's journal batch, re-arms the
timer if a record may have moved a deadline, and writes the replies of the
turn, one write per connection. A fetch decided earlier in a turn serves
the held ones first: they came before it.
"""

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import msgspec

from leash import __version__
from leash.broker import core
from leash.broker.core.records import Record
from leash.broker.core.schedules import config_records
from leash.broker.journal.group_commit import Done, GroupCommitter
from leash.broker.journal.log import Journal
from leash.broker.journal.scheduler import LoopScheduler
from leash.broker.journal.space import SpaceWatch
from leash.broker.server.admin import AdminConnection
from leash.broker.server.auth import FailureTable, Handshake, Keyring
from leash.broker.server.config import ServerConfig
from leash.broker.server.connection import Connection
from leash.broker.server.guard import Guard
from leash.broker.server.limits import RefusalLog, oversized_args
from leash.broker.server.metrics import QueueFigures, ScheduleFigures, Snapshot
from leash.broker.server.totals import Totals
from leash.broker.server.waiters import ResultWaiter, Waiter, Waiters
from leash.protocol import PROTOCOL_VERSION
from leash.protocol import admin as A
from leash.protocol import messages as M
from leash.protocol.admin import (
    ADMIN_OPS,
    AdminRequest,
    Compact,
    Compacted,
    GetStats,
    JournalStats,
    Stats,
)
from leash.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from leash.broker.journal.compaction import Compactor

log = logging.getLogger("leash.server")
SERVER_NAME = f"leash/{__version__}"  # in the welcome and in stats
TICK_MAX_DELAY_S = 1.0  # re-read the wall clock at least this often
TICK_ROUNDS_MAX = 100  # ticks in one timer run (each touches at most tick_max_items jobs)
EXIT_APPLY_FAILED = 70
JOURNAL_FAILED = "the journal cannot be written; not acknowledged; the broker is stopping"
DISK_FULL = "the journal's disk is nearly full; retry later"


class Sender(Protocol):
    """A connection a reply can be sent on (TCP or admin)."""

    def send(self, reply: Any) -> None: ...


# A core decision function: the Leash protocol's (core.decide) or the Faktory
# protocol's (core.decide_faktory); its outcome has reply, records, may_wait.
Decide = Callable[[core.State, Any, str, int], "core.Outcome | core.FaktoryOutcome"]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Replayed(NamedTuple):
    """What start-up replayed: seconds (snapshot and tail), records."""

    seconds: float = 0.0
    records: int = 0


NOTHING_REPLAYED = Replayed()


class Broker:
    def __init__(
        self,
        config: ServerConfig,
        state: core.State,
        journal: Journal,
        *,
        on_journal_failed: Callable[[BaseException], None],
        compactor: "Compactor | None" = None,
        space: SpaceWatch | None = None,
        replayed: Replayed = NOTHING_REPLAYED,
        clock_ms: Callable[[], int] = wall_clock_ms,
        keyring: Keyring | None = None,
        on_fsync: Callable[[float], None] | None = None,
    ) -> None:
        """The broker's shell over ``state`` and its open ``journal``: it
        makes its group committer (``on_journal_failed``: told once when
        the journal fails), whose sealed segments go to ``compactor`` (the
        operator's compact too); ``space`` is the free-space watch;
        ``replayed`` what start-up replayed (for the stats); ``on_fsync``
        is told the seconds of each journal fsync (the metrics)."""
        self.config = config
        self.state = state
        self.journal = journal
        self.clock_ms = clock_ms
        self.loop = asyncio.get_running_loop()
        self.committer = GroupCommitter(
            LoopScheduler(self.loop),
            journal,
            config.fsync,
            on_failure=on_journal_failed,
            on_sealed=compactor.on_sealed if compactor is not None else None,
            on_turn=self._schedule_turn,
            on_fsync=on_fsync,
            deliver=self._deliver,
        )
        self.connections: set[Connection] = set()
        self.attached: dict[str, int] = {}  # open greeted connections by worker id
        # The jobs each process ran, by type, as its last beat told: liveness
        # data for the processes views, not state (never journalled).
        self.ran: dict[str, dict[str, M.JobsRun]] = {}
        self.waiters = Waiters()
        # get_result requests held until their job finishes (a few; each
        # looked at again after every turn that applied records)
        self.result_waiters: dict[ResultWaiter, None] = {}
        self.outbound: list[Connection] = []  # connections with replies to write this turn
        self._turn_scheduled = False
        self._timer_stale = False  # a record was applied since the timer was armed
        self._timer: asyncio.TimerHandle | None = None
        self.stopping = False
        self._timer_due_ms: int | None = None
        self.started_ms = clock_ms()
        self.replay_s, self.replay_records = replayed.seconds, replayed.records
        self.admin_connections = 0
        self._background: set[asyncio.Task[None]] = set()  # compactions asked for
        self.totals = Totals(self.started_ms)
        limits = config.limits
        self.refusals = RefusalLog(log)
        self.guard = Guard(limits, self.connections, self.refusals)
        failures = FailureTable(limits.auth_fail_delay_ms)
        self.handshake = Handshake(keyring, failures, self.refusals, self._open_session, clock_ms)
        # Args cannot be over the limit when the frame limit is lower: skip the check.
        self._max_args_bytes = limits.max_args_bytes
        self._check_args = limits.max_args_bytes < config.max_frame_bytes
        self.guard.start()
        # The free-space watch's: whether a request that grows the state, of
        # this many bytes, must be refused (journal.space.SpaceWatch).
        self.refuses_growth: Callable[[int], bool] = lambda _request_bytes: False
        # The watch's figures for the stats: about what is free now, and
        # whether growth is refused (the dashboard shows both).
        self.disk_left_bytes: Callable[[], int | None] = lambda: None
        self.disk_low: Callable[[], bool] = lambda: False
        if space is not None:
            self.refuses_growth, self.disk_left_bytes = space.refuses_growth, space.left_bytes
            self.disk_low = lambda: space.low
        self.compactor = compactor  # compact(): seal and snapshot now

    # --- requests ---------------------------------------------------------

    def handle(self, connection: Connection, body: bytes) -> None:
        try:
            request = M.decode_request(body)
        except M.BadRequest as bad:
            if bad.op in ADMIN_OPS:
                message = f"{bad.op} is served on the admin socket only"
                bad = M.BadRequest(bad.rid, ErrorCode.ADMIN_ONLY, message, "$.op", bad.op)
            if connection.greeted:
                self._reply(connection, bad.reply())
            elif bad.code == ErrorCode.UNKNOWN_OP:
                message = "the first frame must be hello"
                self.handshake.refuse(connection, bad.rid, ErrorCode.HANDSHAKE_REQUIRED, message)
            else:
                self.handshake.refuse(connection, bad.rid, bad.code, bad.message)
            return
        if not connection.greeted:
            self.handshake.step(connection, request)
            return
        if self._check_args:
            oversized = oversized_args(request, self._max_args_bytes)
            if oversized is not None:
                self._reply(connection, oversized)
                return
        self.serve(connection, request, core.decide, len(body))

    def serve(
        self, connection: Connection, request: Any, decide: Decide, request_bytes: int
    ) -> None:
        """Decide a request of a greeted connection with ``decide`` (the
        core's for its protocol), apply and journal the records, and reply
        once they are durable (or hold a fetch that found nothing).
        ``request_bytes`` is about what its records append, for the disk
        watermark."""
        if self.committer.failed is not None:
            self._reply(connection, M.Error(request.rid, ErrorCode.JOURNAL_FAILED, JOURNAL_FAILED))
            return
        if isinstance(request, M.Fetch) and self.state.readied:
            self._wake_waiters()  # the fetches held before this one come first
        now_ms = self.clock_ms()
        if connection.info is not None:  # a process (a Faktory producer is none)
            alive = core.touch(self.state, connection.worker_id, connection.info, now_ms)
            if alive:
                self._commit(alive)
        if core.grows_state(request) and self.refuses_growth(request_bytes):
            self._reply(connection, M.Error(request.rid, ErrorCode.DISK_FULL, DISK_FULL))
            return
        self._roll_if_due(now_ms)
        try:
            outcome = decide(self.state, request, connection.worker_id, now_ms)
        except Exception:
            log.exception("decide failed on %s from %s", type(request).__name__, connection.peer)
            self._reply(connection, M.Error(request.rid, ErrorCode.INTERNAL, "internal error"))
            return
        if isinstance(request, M.Beat) and request.ran is not None:
            self._told_ran(connection.worker_id, request.ran)
        written = outcome.written_enough
        self.totals.count(core.duplicates(request, outcome.reply), now_ms)
        if outcome.records:
            self._commit(outcome.records, sync=not written)
        if outcome.may_wait:
            if isinstance(request, M.GetResult):
                self._hold_result(connection, request)
            else:
                self._hold(connection, request, decide)
        else:
            self._reply(connection, outcome.reply, written=written)

    def _told_ran(self, worker_id: str, ran: dict[str, M.JobsRun]) -> None:
        """A beat's report of the jobs its process ran (a beat that decided
        is of a live process); the reports of dead processes are dropped
        here, so there are never more than the live processes and this one."""
        self.ran[worker_id] = ran
        if len(self.ran) > len(self.state.processes):
            for gone in [known for known in self.ran if known not in self.state.processes]:
                del self.ran[gone]

    def attach(self, connection: Connection, worker_id: str, info: core.ProcessInfo) -> None:
        """A connection of this process: register it (or show it is alive)."""
        connection.worker_id, connection.info = worker_id, info
        self.attached[worker_id] = self.attached.get(worker_id, 0) + 1
        self._commit(core.touch(self.state, worker_id, info, self.clock_ms(), hello=True))

    def welcomed(self, connection: Connection) -> None:
        """The handshake is done: frames up to the full limit from now on."""
        connection.decoder.max_frame_bytes = self.config.max_frame_bytes
        self.guard.welcomed(connection)

    def _open_session(self, connection: Connection, hello: M.Hello, rid: int) -> None:
        """The handshake succeeded: register the process and send the welcome."""
        self.welcomed(connection)
        self.attach(connection, hello.worker_id, core.info_of(hello))
        core_config, limits = self.config.core, self.config.limits
        welcome = M.Welcome(
            rid=rid,
            version=PROTOCOL_VERSION,
            server=SERVER_NAME,
            epoch=self.state.epoch,
            max_frame_bytes=self.config.max_frame_bytes,
            heartbeat_ms=core_config.heartbeat_ms,
            process_ttl_ms=core_config.process_ttl_ms,
            idle_timeout_ms=limits.idle_timeout_ms,
            max_in_flight=limits.max_in_flight,
            max_args_bytes=limits.max_args_bytes,
            max_result_bytes=core_config.result_max_bytes,
        )
        self._reply(connection, welcome)

    def _commit(self, records: list[Record], *, sync: bool = True) -> None:
        """Apply records and queue them for the journal (``sync=False``: they
        start no fsync of their own; see ``GroupCommitter.submit_records``).
        A failure inside apply, or a record that does not encode, is a
        broken invariant: the state may be changed where the journal is not,
        so stop at once, before the records reach the journal (the encode is
        all or nothing). After a journal failure nothing more is applied:
        every reply is journal_failed anyway."""
        if self.committer.failed is not None:
            return
        now_ms = self.clock_ms()
        try:
            for record in records:
                self.totals.apply(self.state, record, now_ms)
            self.committer.submit_records(records, sync=sync)
        except BaseException:
            log.critical("apply failed; stopping without journalling it", exc_info=True)
            os._exit(EXIT_APPLY_FAILED)
        self._timer_stale = True  # any record may bring a deadline closer

    def _roll_if_due(self, now_ms: int) -> None:
        """Move to a new epoch before the counter could overflow into the
        epoch bits. Its record is synced before any later reply leaves,
        under every policy (as the boot record), so a token of the new
        epoch is never sent unless the epoch is durable."""
        rolled = core.roll_due(self.state, now_ms)
        if rolled:
            self._commit(rolled)
            self.journal.epoch = self.state.epoch  # the header of the next segment
            self.committer.hold_until_synced()
            log.info("epoch %d: the last epoch used up its numbers", self.state.epoch)

    def reply(self, connection: "Sender", reply: Any) -> None:
        """Send ``reply`` once everything journalled before it is durable."""
        self._reply(connection, reply)

    def commit(self, records: list[Record]) -> None:
        """Apply and journal records an operation decided (see ``_commit``),
        and serve the fetches they may have made jobs ready for."""
        self._commit(records)
        self._wake_waiters()

    def _reply(self, connection: "Sender", reply: Any, *, written: bool = False) -> None:
        """Send ``reply`` once everything journalled before it is durable
        (``written``: once it is written, before an fsync: a fetch's)."""
        committer = self.committer
        if committer.failed is None and not (committer.busy_written if written else committer.busy):
            connection.send(reply)
            return

        def done(durable: bool) -> None:
            if durable:
                connection.send(reply)
            else:
                connection.send(M.Error(reply.rid, ErrorCode.JOURNAL_FAILED, JOURNAL_FAILED))

        if written:
            committer.after_written(done)
        else:
            committer.after(done)

    def reply_later(self, connection: Connection) -> None:
        """``connection`` has replies queued: write them at the end of the turn."""
        self.outbound.append(connection)
        self._schedule_turn()

    def _deliver(self, replies: list[Done], ok: bool) -> None:
        """The committer released ``replies``: send them, and write the
        sockets now (a fetch's reply leaves before the fsync that follows)."""
        for done in replies:
            done(ok)
        self.flush_replies()

    def flush_replies(self) -> None:
        outbound = self.outbound
        if outbound:
            self.outbound = []
            for connection in outbound:
                connection.flush()

    def _schedule_turn(self) -> None:
        if not self._turn_scheduled:
            self._turn_scheduled = True
            self.loop.call_soon(self._end_turn)

    def _end_turn(self) -> None:
        # The flag stays up until the end: the replies the flush releases are
        # written below, by this turn, not by another one scheduled for them.
        try:
            # Held fetches are served once a turn, with every job its requests
            # made ready (a fetch decided earlier in the turn served them first).
            self._wake_waiters()
            if self.result_waiters and self._timer_stale:  # records were applied this turn
                self._wake_result_waiters()
            self.committer.flush()
            if self._timer_stale:
                self._arm_timer()
            self.flush_replies()
        finally:
            self._turn_scheduled = False

    # --- the admin socket -------------------------------------------------

    def handle_admin(self, connection: AdminConnection, request: AdminRequest) -> None:
        now_ms = self.clock_ms()
        if isinstance(request, GetStats):
            connection.send(self.stats(request.rid, now_ms))
            return
        if isinstance(request, A.GetHistory):
            series = self.totals.history.series(now_ms, request.seconds)
            connection.send(A.History(request.rid, now_ms, **series))
            return
        if isinstance(request, Compact):
            task = self.loop.create_task(self._compact(connection, request.rid))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return
        outcome = core.decide_admin(self.state, request, now_ms)
        reply = outcome.reply
        if isinstance(reply, A.Processes):
            for view in reply.processes:
                view.connections = self.attached.get(view.worker_id, 0)
                view.ran = self.ran.get(view.worker_id)
        elif isinstance(reply, A.Queues):
            for queue in reply.queues:
                queue.in_per_s, queue.out_per_s = self.totals.history.rates_per_s(
                    now_ms, queue.name
                )
        if outcome.records:
            self._commit(outcome.records)
            self._wake_waiters()
        self._reply(connection, reply)

    def apply_config_schedules(self, requests: tuple[A.AddSchedule, ...]) -> None:
        """At start: the config file's schedules, as the core says
        (``core.schedules.config_records``). Too many is logged, not fatal:
        the broker serves what it already holds."""
        try:
            records = config_records(self.state, requests, self.clock_ms())
        except core.Rejected as rejected:
            log.error("the config file's schedules are not applied: %s", rejected.message)
            return
        if records:
            self._commit(records)

    async def _compact(self, connection: AdminConnection, rid: int) -> None:
        try:
            through_seq = await self.compact()
        except Exception as error:  # a broken snapshot process, a stopping broker
            log.exception("compact failed")
            connection.send(M.Error(rid, ErrorCode.INTERNAL, f"compact failed: {error}"))
            return
        connection.send(Compacted(rid, through_seq, self.journal.disk_usage()[0]))

    def stats(self, rid: int, now_ms: int) -> Stats:
        state, commits = self.state, self.committer.stats
        disk_bytes, segments, snapshots = self.journal.disk_usage()
        return Stats(
            rid=rid,
            version=SERVER_NAME,
            started_ms=self.started_ms,
            uptime_ms=now_ms - self.started_ms,
            epoch=state.epoch,
            jobs=dict(state.counts),
            totals=dict(self.totals.all),
            connections=len(self.connections),
            processes=len(state.processes),
            queues=len(state.queues),
            journal=JournalStats(
                bytes=disk_bytes,
                segments=segments,
                snapshots=snapshots,
                last_seq=self.journal.next_seq - 1,
                fsyncs=commits.fsyncs,
                fsync_p50_ms=commits.fsync_ms_quantile(0.5),
                fsync_p99_ms=commits.fsync_ms_quantile(0.99),
                commits=commits.batches,
                commit_mean_records=commits.records / commits.batches if commits.batches else 0.0,
                replay_s=self.replay_s,
                replay_records=self.replay_records,
                disk_free_bytes=max(0, self.disk_left_bytes() or 0),
                disk_low=self.disk_low(),
            ),
            limits=self.config.limits_in_force(),
            fsync=self.config.fsync.text(),
            busy_processes=len(state.leases_by_owner),
            expired_jobs=list(self.totals.expired),
            schedules=len(state.schedules),
            finished_jobs=len(state.history),
            results_kept=len(state.results),
            result_bytes=state.result_bytes,
        )

    def metrics_snapshot(self) -> Snapshot:
        now_ms = self.clock_ms()
        views = {view.name: view for view in core.queue_views(self.state, now_ms)}
        queues = {}
        by_queue = self.totals.by_queue
        for name in views.keys() | by_queue.keys():
            view = views.get(name)
            queues[name] = QueueFigures(
                totals=dict(by_queue.get(name, {})),
                ready=view.ready if view else 0,
                leased=view.in_flight if view else 0,
                scheduled=view.scheduled if view else 0,
                dead=view.dead if view else 0,
                latency_ms=view.latency_ms if view else 0,
                paused=view.paused if view else False,
                concurrency_limit=view.concurrency_limit if view else 0,
                rate_used=view.rate_used if view else 0,
                keys_saturated=view.keys_saturated if view else 0,
            )
        return Snapshot(
            queues=queues,
            jobs=dict(self.state.counts),
            processes=len(self.state.processes),
            connections=len(self.connections),
            commits=self.committer.stats.batches,
            records=self.committer.stats.records,
            journal_bytes=self.journal.disk_usage()[0],
            uptime_ms=now_ms - self.started_ms,
            schedules={
                name: ScheduleFigures(
                    s.fires, s.skips, 0 if s.paused else s.next_ms, s.last_tick_ms
                )
                for name, s in self.state.schedules.items()
            },
            finished_jobs=len(self.state.history),
            results_kept=len(self.state.results),
            result_bytes=self.state.result_bytes,
        )

    # --- long-poll fetches ------------------------------------------------

    def _hold(self, connection: Connection, request: Any, decide: Decide) -> None:
        """Hold a fetch until a job is ready or its wait ends (core.hold_ms)."""
        waiter = Waiter(connection, request, decide)
        wait_ms = core.hold_ms(self.state, request.wait_ms)
        waiter.timer = self.loop.call_later(wait_ms / 1000, self._expire, waiter)
        self.waiters.add(waiter)
        connection.waiters.add(waiter)
        if self.state.starts:  # it may wait for a rate limit's next start
            self._timer_stale = True

    def _hold_result(self, connection: Connection, request: M.GetResult) -> None:
        """Hold a get_result until its job finishes or its wait ends."""
        waiter = ResultWaiter(connection, request)
        waiter.timer = self.loop.call_later(request.wait_ms / 1000, self._answer_result, waiter)
        self.result_waiters[waiter] = None
        connection.waiters.add(waiter)

    def _answer_result(self, waiter: ResultWaiter) -> None:
        """A held get_result's wait ended: its job's state as it is now."""
        waiter.timer = None
        self._drop(waiter)
        request = msgspec.structs.replace(waiter.request, wait_ms=0)
        outcome = core.decide(self.state, request, waiter.connection.worker_id, self.clock_ms())
        self._reply(waiter.connection, outcome.reply)

    def _wake_result_waiters(self) -> None:
        """Answer the held get_results whose job finished."""
        now_ms = self.clock_ms()
        for waiter in list(self.result_waiters):
            outcome = core.decide(self.state, waiter.request, waiter.connection.worker_id, now_ms)
            if not outcome.may_wait:
                self._drop(waiter)
                self._reply(waiter.connection, outcome.reply)

    def _expire(self, waiter: Waiter) -> None:
        waiter.timer = None
        self._drop(waiter)
        self._reply(waiter.connection, waiter.connection.nothing(waiter.request), written=True)

    def _drop(self, waiter: Waiter | ResultWaiter) -> None:
        if isinstance(waiter, ResultWaiter):
            if waiter.timer is not None:
                waiter.timer.cancel()
                waiter.timer = None
            del self.result_waiters[waiter]
        else:
            self.waiters.remove(waiter)
        waiter.connection.waiters.discard(waiter)

    def _wake_waiters(self) -> None:
        if not self.state.readied:  # the usual case: nothing new is ready
            return
        readied = self.state.take_readied()
        if not self.waiters.count:
            return
        for queue in readied:
            for waiter in self.waiters.in_order(queue):
                now_ms = self.clock_ms()
                if not core.has_ready(self.state, queue, now_ms):
                    break
                if waiter.timer is None:  # served through another of its queues
                    continue
                self._roll_if_due(now_ms)
                worker_id = waiter.connection.worker_id
                outcome = waiter.decide(self.state, waiter.request, worker_id, now_ms)
                if outcome.may_wait:  # its process may not fetch now (quiet, terminate)
                    continue
                self._drop(waiter)
                written = outcome.written_enough
                if outcome.records:
                    self._commit(outcome.records, sync=not written)
                self._reply(waiter.connection, outcome.reply, written=written)

    # --- timers -----------------------------------------------------------

    def _arm_timer(self) -> None:
        self._timer_stale = False
        if self.stopping:
            return
        due_ms = core.next_due_ms(self.state)
        if self.waiters.count and self.state.starts:  # held fetches wait for a rate limit
            start_ms = core.next_start_ms(self.state, self.clock_ms())
            if start_ms is not None:
                due_ms = start_ms if due_ms is None else min(due_ms, start_ms)
        if due_ms is None or (self._timer_due_ms is not None and self._timer_due_ms <= due_ms):
            return
        if self._timer is not None:
            self._timer.cancel()
        delay_s = min(max(due_ms - self.clock_ms(), 0) / 1000, TICK_MAX_DELAY_S)
        self._timer = self.loop.call_later(delay_s, self._on_timer)
        self._timer_due_ms = due_ms

    def _on_timer(self) -> None:
        self._timer, self._timer_due_ms = None, None
        self.run_tick()

    def run_tick(self) -> None:
        now_ms = self.clock_ms()
        for _ in range(TICK_ROUNDS_MAX):
            records = core.tick(self.state, now_ms)
            if not records:
                break
            self._commit(records)
        if self.state.starts and self.waiters.count:  # a rate window may have moved on
            self.state.readied.update(self.state.starts)
        self._wake_waiters()
        if self.result_waiters:
            self._wake_result_waiters()
        self._arm_timer()

    # --- lifecycle --------------------------------------------------------

    def connection_made(self, connection: Connection) -> None:
        if self.stopping:
            connection.abort()
        else:
            self.guard.admit(connection)

    def connection_lost(self, connection: Connection) -> None:
        self.guard.lost(connection)
        for waiter in list(connection.waiters):
            self._drop(waiter)
        worker_id = connection.worker_id
        if not worker_id or self.stopping:
            return
        self.attached[worker_id] -= 1
        if self.attached[worker_id] == 0:
            del self.attached[worker_id]
            records = core.detach(self.state, worker_id, self.clock_ms())
            if records:
                self._commit(records)

    async def compact(self) -> int:
        """Seal the open segment and snapshot through it now (an operator's
        compact); the seq the snapshot covers."""
        assert self.compactor is not None, "the broker runs without a compactor"
        return await self.compactor.compact(self.committer.seal)

    def stop(self) -> None:
        """Answer held fetches, stop the timer, close every connection once
        its replies are out. Processes stay as they are: after the restart
        each gets the restart grace to come back (core.boot)."""
        self.stopping = True
        self.guard.stop()
        if self._timer is not None:
            self._timer.cancel()
        for waiter in self.waiters.all():
            self._drop(waiter)
            self._reply(waiter.connection, waiter.connection.nothing(waiter.request), written=True)
        for held in list(self.result_waiters):
            self._answer_result(held)
        for connection in list(self.connections):
            self.committer.after(lambda _ok, c=connection: c.close())  # type: ignore[misc]
