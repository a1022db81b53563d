"""The request pipeline: decode, decide, then apply, journal and reply.

For each frame of a connection: decode it (typed), take it through the
handshake until the connection is welcomed, then call the core's decision
function with the current time (``serve``), apply the records it returns
and hand them to the group committer (the ledger), and send the reply once
they are durable, or hold a fetch or get_result that must wait (the long
poll). No await sits between decide and apply. Nothing here holds job
semantics; the core does.

It also keeps what the shell knows of the processes beyond the state: how
many connections each has open (``attached``) and the jobs each ran as its
last beat told (``ran``), both shown by the processes views.
"""

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from leash import __version__
from leash.broker import core
from leash.broker.server.auth import FailureTable, Handshake, Keyring
from leash.broker.server.config import ServerConfig
from leash.broker.server.guard import Guard
from leash.broker.server.ledger import JOURNAL_FAILED, Ledger
from leash.broker.server.limits import RefusalLog, oversized_args
from leash.broker.server.longpoll import LongPoll
from leash.protocol import PROTOCOL_VERSION
from leash.protocol import messages as M
from leash.protocol.admin import ADMIN_OPS
from leash.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from leash.broker.server.connection import Connection

log = logging.getLogger("leash.server")
SERVER_NAME = f"leash/{__version__}"  # in the welcome and in stats
DISK_FULL = "the journal's disk is nearly full; retry later"

# A core decision function: the Leash protocol's (core.decide) or the Faktory
# protocol's (core.decide_faktory); its outcome has reply, records, may_wait.
Decide = Callable[[core.State, Any, str, int], "core.Outcome | core.FaktoryOutcome"]


class Pipeline:
    def __init__(
        self,
        config: ServerConfig,
        state: core.State,
        ledger: Ledger,
        longpoll: LongPoll,
        guard: Guard,
        refusals: RefusalLog,
        keyring: Keyring | None,
        clock_ms: Callable[[], int],
        refuses_growth: Callable[[int], bool],
    ) -> None:
        """``refuses_growth``: whether a request that grows the state, of
        this many bytes, must be refused (journal.space.SpaceWatch)."""
        self.config = config
        self.state = state
        self.ledger = ledger
        self.longpoll = longpoll
        self.guard = guard
        self.clock_ms = clock_ms
        self.refuses_growth = refuses_growth
        self.attached: dict[str, int] = {}  # open greeted connections by worker id
        # The jobs each process ran, by type, as its last beat told: liveness
        # data for the processes views, not state (never journalled).
        self.ran: dict[str, dict[str, M.JobsRun]] = {}
        failures = FailureTable(config.limits.auth_fail_delay_ms)
        self.handshake = Handshake(keyring, failures, refusals, self._open_session, clock_ms)
        # Args cannot be over the limit when the frame limit is lower: skip the check.
        self._max_args_bytes = config.limits.max_args_bytes
        self._check_args = config.limits.max_args_bytes < config.max_frame_bytes

    def handle(self, connection: "Connection", body: bytes) -> None:
        """One frame of a Leash connection."""
        try:
            request = M.decode_request(body)
        except M.BadRequest as bad:
            if bad.op in ADMIN_OPS:
                message = f"{bad.op} is served on the admin socket only"
                bad = M.BadRequest(bad.rid, ErrorCode.ADMIN_ONLY, message, "$.op", bad.op)
            if connection.greeted:
                self.ledger.reply(connection, bad.reply())
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
                self.ledger.reply(connection, oversized)
                return
        if type(request) is M.Cancel:  # held requests are the shell's: ended before the ok
            self.longpoll.cancel(connection, request.of)
        self.serve(connection, request, core.decide, len(body))

    def serve(
        self, connection: "Connection", request: Any, decide: Decide, request_bytes: int
    ) -> None:
        """Decide a request of a greeted connection with ``decide`` (the
        core's for its protocol), apply and journal the records, and reply
        once they are durable (or hold a fetch that found nothing).
        ``request_bytes`` is about what its records append, for the disk
        watermark."""
        ledger, state = self.ledger, self.state
        if ledger.failed:
            ledger.reply(connection, M.Error(request.rid, ErrorCode.JOURNAL_FAILED, JOURNAL_FAILED))
            return
        if isinstance(request, M.Fetch) and state.readied:
            self.longpoll.wake()  # the fetches held before this one come first
        now_ms = self.clock_ms()
        if connection.info is not None:  # a process (a Faktory producer is none)
            alive = core.touch(state, connection.worker_id, connection.info, now_ms)
            if alive:
                ledger.commit(alive)
        if core.grows_state(request) and self.refuses_growth(request_bytes):
            ledger.reply(connection, M.Error(request.rid, ErrorCode.DISK_FULL, DISK_FULL))
            return
        ledger.roll_if_due(now_ms)
        try:
            outcome = decide(state, request, connection.worker_id, now_ms)
        except Exception:
            log.exception("decide failed on %s from %s", type(request).__name__, connection.peer)
            ledger.reply(connection, M.Error(request.rid, ErrorCode.INTERNAL, "internal error"))
            return
        if isinstance(request, M.Beat) and request.ran is not None:
            self._told_ran(connection.worker_id, request.ran)
        written = outcome.written_enough
        ledger.totals.count(core.duplicates(request, outcome.reply), now_ms)
        if outcome.records:
            ledger.commit(outcome.records, sync=not written)
        if outcome.may_wait:
            if isinstance(request, M.GetResult):
                self.longpoll.hold_result(connection, request)
            else:
                self.longpoll.hold(connection, request, decide)
        else:
            ledger.reply(connection, outcome.reply, written=written)

    def _told_ran(self, worker_id: str, ran: dict[str, M.JobsRun]) -> None:
        """A beat's report of the jobs its process ran (a beat that decided
        is of a live process); the reports of dead processes are dropped
        here, so there are never more than the live processes and this one."""
        self.ran[worker_id] = ran
        if len(self.ran) > len(self.state.processes):
            for gone in [known for known in self.ran if known not in self.state.processes]:
                del self.ran[gone]

    def attach(self, connection: "Connection", worker_id: str, info: core.ProcessInfo) -> None:
        """A connection of this process: register it (or show it is alive)."""
        connection.worker_id, connection.info = worker_id, info
        self.attached[worker_id] = self.attached.get(worker_id, 0) + 1
        self.ledger.commit(core.touch(self.state, worker_id, info, self.clock_ms(), hello=True))

    def detach(self, connection: "Connection") -> None:
        """A greeted connection closed: the last of its process detaches it."""
        worker_id = connection.worker_id
        self.attached[worker_id] -= 1
        if self.attached[worker_id] == 0:
            del self.attached[worker_id]
            records = core.detach(self.state, worker_id, self.clock_ms())
            if records:
                self.ledger.commit(records)

    def welcomed(self, connection: "Connection") -> None:
        """The handshake is done: frames up to the full limit from now on."""
        connection.decoder.max_frame_bytes = self.config.max_frame_bytes
        self.guard.welcomed(connection)

    def _open_session(self, connection: "Connection", hello: M.Hello, rid: int) -> None:
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
        self.ledger.reply(connection, welcome)
