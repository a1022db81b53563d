"""The shell around the core: its parts, wired once, and the loop turn.

``Broker`` builds the shell's parts, each given what it uses through its
constructor, and drives the end of every loop turn:

- the group committer (journal/group_commit.py): one write a turn, fsyncs;
- the ledger (ledger.py): apply, journal, reply;
- the long poll (longpoll.py): held fetches and get_results;
- the tick timer (ticker.py): ``core.tick`` at the next deadline;
- the request pipeline (pipeline.py): decode, handshake, decide;
- the admin service (admin_service.py): admin requests, stats, metrics;
- the guard (guard.py): admission and the connections' deadlines.

Every part that reads a clock or arms a timer takes the ``Scheduler``
(journal/scheduler.py; the asyncio loop's by default) and, for wall time,
``clock_ms``, so the whole shell runs on a virtual clock in tests.

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
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from leash.broker import core
from leash.broker.core.records import Record
from leash.broker.journal.group_commit import Done, GroupCommitter
from leash.broker.journal.log import Journal
from leash.broker.journal.scheduler import LoopScheduler, Scheduler, Writer
from leash.broker.journal.space import SpaceWatch
from leash.broker.server.admin_service import NOTHING_REPLAYED, AdminService, Replayed
from leash.broker.server.auth import Keyring
from leash.broker.server.config import ServerConfig
from leash.broker.server.connection import Connection
from leash.broker.server.guard import Guard
from leash.broker.server.ledger import Ledger
from leash.broker.server.limits import RefusalLog
from leash.broker.server.longpoll import LongPoll
from leash.broker.server.pipeline import SERVER_NAME, Decide, Pipeline
from leash.broker.server.ticker import TickTimer
from leash.broker.server.totals import Totals

if TYPE_CHECKING:
    from leash.broker.journal.compaction import Compactor

__all__ = ["NOTHING_REPLAYED", "SERVER_NAME", "Broker", "Decide", "Replayed", "wall_clock_ms"]

log = logging.getLogger("leash.server")


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _never_refuses(_request_bytes: int) -> bool:
    return False


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
        scheduler: Scheduler | None = None,
        writer: Writer | None = None,
    ) -> None:
        """The broker's shell over ``state`` and its open ``journal``: it
        makes its group committer (``on_journal_failed``: told once when
        the journal fails), whose sealed segments go to ``compactor`` (the
        operator's compact too); ``space`` is the free-space watch;
        ``replayed`` what start-up replayed (for the stats); ``on_fsync``
        is told the seconds of each journal fsync (the metrics).
        ``scheduler`` (the running loop's by default) runs every timer and
        callback, ``clock_ms`` tells the wall time, ``writer`` runs the
        journal's fsyncs and seals (a thread by default)."""
        if scheduler is None:
            scheduler = LoopScheduler(asyncio.get_running_loop())
        self.config = config
        self.state = state
        self.journal = journal
        self.clock_ms = clock_ms
        self.scheduler = scheduler
        self.committer = GroupCommitter(
            scheduler,
            journal,
            config.fsync,
            on_failure=on_journal_failed,
            on_sealed=compactor.on_sealed if compactor is not None else None,
            on_turn=self._schedule_turn,
            on_fsync=on_fsync,
            deliver=self._deliver,
            writer=writer,
        )
        self.connections: set[Connection] = set()
        self.outbound: list[Connection] = []  # connections with replies to write this turn
        self._turn_scheduled = False
        self.stopping = False
        self.admin_connections = 0
        self.started_ms = clock_ms()
        self.totals = Totals(self.started_ms)
        self.refusals = RefusalLog(log, clock_s=scheduler.now)
        self.guard = Guard(config.limits, self.connections, self.refusals, scheduler)
        self.ledger = Ledger(state, self.committer, journal, self.totals, clock_ms)
        self.longpoll = LongPoll(state, self.ledger, scheduler, clock_ms)
        self.ticker = TickTimer(state, self.ledger, self.longpoll, scheduler, clock_ms)
        self.pipeline = Pipeline(
            config,
            state,
            self.ledger,
            self.longpoll,
            self.guard,
            self.refusals,
            keyring,
            clock_ms,
            space.refuses_growth if space is not None else _never_refuses,
        )
        self.admin = AdminService(
            config,
            state,
            journal,
            self.committer.stats,
            self.ledger,
            self.longpoll,
            self.pipeline,
            self.connections,
            clock_ms,
            started_ms=self.started_ms,
            compactor=compactor,
            space=space,
            replayed=replayed,
            compact_seal=self.committer.seal,
        )
        self.handshake = self.pipeline.handshake
        # What the connections and fronts call, straight to the part that serves it.
        self.handle = self.pipeline.handle  # a Leash connection's frames
        self.serve = self.pipeline.serve  # a decoded request of either protocol
        self.attach = self.pipeline.attach
        self.welcomed = self.pipeline.welcomed
        self.reply = self.ledger.reply  # a reply once what was journalled before it is durable
        self.handle_admin = self.admin.handle
        self.stats = self.admin.stats
        self.metrics_snapshot = self.admin.metrics_snapshot
        self.apply_config_schedules = self.admin.apply_config_schedules
        self.compact = self.admin.compact
        self.run_tick = self.ticker.run
        self.guard.start()

    def commit(self, records: list[Record]) -> None:
        """Apply and journal records an operation decided (ledger.py), and
        serve the fetches they may have made jobs ready for."""
        self.ledger.commit(records)
        self.longpoll.wake()

    # --- the loop turn ------------------------------------------------------

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
            self.scheduler.call_soon(self._end_turn)

    def _end_turn(self) -> None:
        # The flag stays up until the end: the replies the flush releases are
        # written below, by this turn, not by another one scheduled for them.
        try:
            # Held fetches are served once a turn, with every job its requests
            # made ready (a fetch decided earlier in the turn served them first).
            longpoll, ledger = self.longpoll, self.ledger
            longpoll.wake()
            if longpoll.results and ledger.stale:  # records were applied this turn
                longpoll.wake_results()
            self.committer.flush()
            if ledger.stale:
                self.ticker.arm()
            self.flush_replies()
        finally:
            self._turn_scheduled = False

    # --- lifecycle --------------------------------------------------------

    def connection_made(self, connection: Connection) -> None:
        if self.stopping:
            connection.abort()
        else:
            self.guard.admit(connection)

    def connection_lost(self, connection: Connection) -> None:
        self.guard.lost(connection)
        self.longpoll.release(connection)
        if connection.worker_id and not self.stopping:
            self.pipeline.detach(connection)

    def stop(self) -> None:
        """Answer held fetches, stop the timer, close every connection once
        its replies are out. Processes stay as they are: after the restart
        each gets the restart grace to come back (core.boot)."""
        self.stopping = True
        self.guard.stop()
        self.ticker.stop()
        self.longpoll.answer_all()
        for connection in list(self.connections):
            self.committer.after(lambda _ok, c=connection: c.close())  # type: ignore[misc]
