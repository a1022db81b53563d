"""The admin service: what the admin socket asks (admin.py reads its
frames), the stats, and the figures the metrics endpoint reads.

An admin request is decided by the core (``core.decide_admin``) and its
records go through the ledger as a request's do; the stats, the history of
the totals and compact are the shell's own. The processes views gain what
only the shell knows (connections open, the jobs each ran); the queues
views, their rates over the last minute.
"""

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict

from leash.broker import core
from leash.broker.core.schedules import config_records
from leash.broker.journal.group_commit import CommitStats
from leash.broker.journal.log import Journal
from leash.broker.journal.space import SpaceWatch
from leash.broker.server.admin import AdminConnection
from leash.broker.server.config import ServerConfig
from leash.broker.server.ledger import Ledger
from leash.broker.server.longpoll import LongPoll
from leash.broker.server.metrics import QueueFigures, ScheduleFigures, Snapshot
from leash.broker.server.pipeline import SERVER_NAME, Pipeline
from leash.protocol import admin as A
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from leash.broker.journal.compaction import Compactor
    from leash.broker.server.connection import Connection

log = logging.getLogger("leash.server")


class Replayed(NamedTuple):
    """What start-up replayed: seconds (snapshot and tail), records."""

    seconds: float = 0.0
    records: int = 0


NOTHING_REPLAYED = Replayed()


class Kept(TypedDict):
    """The finished-job history and the results kept, as stats and metrics show them."""

    finished_jobs: int
    results_kept: int
    result_bytes: int


def _kept(state: core.State) -> Kept:
    return Kept(
        finished_jobs=len(state.history),
        results_kept=len(state.results),
        result_bytes=state.result_bytes,
    )


class AdminService:
    def __init__(
        self,
        config: ServerConfig,
        state: core.State,
        journal: Journal,
        commits: CommitStats,
        ledger: Ledger,
        longpoll: LongPoll,
        pipeline: Pipeline,
        connections: "set[Connection]",
        clock_ms: Callable[[], int],
        *,
        started_ms: int,
        compactor: "Compactor | None",
        space: SpaceWatch | None,
        replayed: Replayed,
        compact_seal: Callable[[], Any],
    ) -> None:
        """``commits``: the group committer's figures; ``connections``: the
        open ones (the guard's); ``compact_seal``: how compact seals the
        open segment (the committer's ``seal``)."""
        self.config = config
        self.state = state
        self.journal = journal
        self.commits = commits
        self.ledger = ledger
        self.longpoll = longpoll
        self.pipeline = pipeline
        self.connections = connections
        self.clock_ms = clock_ms
        self.compactor = compactor
        self.space = space
        self.replayed = replayed
        self._seal = compact_seal
        self.started_ms = started_ms
        self._background: set[asyncio.Task[None]] = set()  # compactions asked for

    def handle(self, connection: AdminConnection, request: A.AdminRequest) -> None:
        now_ms = self.clock_ms()
        totals = self.ledger.totals
        if isinstance(request, A.GetStats):
            connection.send(self.stats(request.rid, now_ms))
            return
        if isinstance(request, A.GetHistory):
            series = totals.history.series(now_ms, request.seconds)
            connection.send(A.History(request.rid, now_ms, **series))
            return
        if isinstance(request, A.Compact):
            task = asyncio.get_running_loop().create_task(self._compact(connection, request.rid))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return
        outcome = core.decide_admin(self.state, request, now_ms)
        reply = outcome.reply
        if isinstance(reply, A.Processes):
            for view in reply.processes:
                view.connections = self.pipeline.attached.get(view.worker_id, 0)
                view.ran = self.pipeline.ran.get(view.worker_id)
        elif isinstance(reply, A.Queues):
            for queue in reply.queues:
                queue.in_per_s, queue.out_per_s = totals.history.rates_per_s(now_ms, queue.name)
                queue.held_fetches = self.longpoll.waiters.held(queue.name)
        if outcome.records:
            self.ledger.commit(outcome.records)
            self.longpoll.wake()
        self.ledger.reply(connection, reply)

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
            self.ledger.commit(records)

    async def compact(self) -> int:
        """Seal the open segment and snapshot through it now (an operator's
        compact); the seq the snapshot covers."""
        assert self.compactor is not None, "the broker runs without a compactor"
        return await self.compactor.compact(self._seal)

    async def _compact(self, connection: AdminConnection, rid: int) -> None:
        try:
            through_seq = await self.compact()
        except Exception as error:  # a broken snapshot process, a stopping broker
            log.exception("compact failed")
            connection.send(M.Error(rid, ErrorCode.INTERNAL, f"compact failed: {error}"))
            return
        connection.send(A.Compacted(rid, through_seq, self.journal.disk_usage()[0]))

    def stats(self, rid: int, now_ms: int) -> A.Stats:
        state, commits, totals, space = self.state, self.commits, self.ledger.totals, self.space
        disk_bytes, segments, snapshots = self.journal.disk_usage()
        return A.Stats(
            rid=rid,
            version=SERVER_NAME,
            started_ms=self.started_ms,
            uptime_ms=now_ms - self.started_ms,
            epoch=state.epoch,
            jobs=dict(state.counts),
            totals=dict(totals.all),
            connections=len(self.connections),
            processes=len(state.processes),
            queues=len(state.queues),
            journal=A.JournalStats(
                bytes=disk_bytes,
                segments=segments,
                snapshots=snapshots,
                last_seq=self.journal.next_seq - 1,
                fsyncs=commits.fsyncs,
                fsync_p50_ms=commits.fsync_ms_quantile(0.5),
                fsync_p99_ms=commits.fsync_ms_quantile(0.99),
                commits=commits.writes,
                commit_mean_records=commits.records / commits.writes if commits.writes else 0.0,
                replay_s=self.replayed.seconds,
                replay_records=self.replayed.records,
                disk_free_bytes=max(0, (space.left_bytes() if space else None) or 0),
                disk_low=space.low if space else False,
            ),
            limits=self.config.limits_in_force(),
            fsync=self.config.fsync.text(),
            busy_processes=len(state.leases_by_owner),
            expired_jobs=list(totals.expired),
            schedules=len(state.schedules),
            held_fetches=self.longpoll.waiters.count,
            **_kept(state),
        )

    def metrics_snapshot(self) -> Snapshot:
        now_ms = self.clock_ms()
        state = self.state
        views = {view.name: view for view in core.queue_views(state, now_ms)}
        queues = {}
        by_queue = self.ledger.totals.by_queue
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
                held_fetches=self.longpoll.waiters.held(name),
            )
        return Snapshot(
            queues=queues,
            jobs=dict(state.counts),
            processes=len(state.processes),
            connections=len(self.connections),
            held_fetches=self.longpoll.waiters.count,
            commits=self.commits.writes,
            records=self.commits.records,
            journal_bytes=self.journal.disk_usage()[0],
            uptime_ms=now_ms - self.started_ms,
            schedules={
                name: ScheduleFigures(
                    s.fires, s.skips, 0 if s.paused else s.next_ms, s.last_tick_ms
                )
                for name, s in state.schedules.items()
            },
            **_kept(state),
        )
