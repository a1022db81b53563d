"""The Faktory port: a second listener, speaking Faktory's work protocol
(docs/faktory.md) to the one broker.

A ``FaktoryConnection`` is the TCP connection of the Leash port with another
codec (protocol/faktory.py) and handler: the same admission, limits,
deadlines, back-pressure and reply coalescing (connection.py, guard.py).
It differs in three ways: it greets first (``HI``), it decodes one command
at a time (replies go in order: there are no request ids), and it is never
closed for being idle (Faktory clients keep connections without traffic
and do not reconnect).

``FaktoryFront`` handles the commands. HELLO is the handshake: the password
(faktory_auth.py), then a consumer's ``wid`` becomes the connection's
process, registered and kept alive as a Leash process is. PUSH, PUSHB, FETCH,
ACK, FAIL and BEAT are decided by the core (core/faktory.py) through
``Broker.serve``, as the Leash requests are: journalled, answered once
durable, a FETCH that finds nothing held until a job is ready (2 s at
most). INFO is assembled here. MUTATE and FLUSH, allowed to a key with the
admin role or on a broker started with ``--faktory-allow-mutate``, run in
rounds (core/faktory_mutate.py), one per turn of the loop, and are answered
once all their rounds are durable. END is answered and the connection
closed.
"""

import logging
import resource
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, assert_never

from leash.broker import core
from leash.broker.core.state import DEAD, LEASED, READY, RETRYING, SCHEDULED
from leash.broker.server.broker import SERVER_NAME, Broker
from leash.broker.server.connection import PAUSED_FOR_IN_FLIGHT, Connection
from leash.broker.server.faktory_auth import ADMIN, HASH_ROUNDS, Passwords
from leash.protocol import faktory as F
from leash.protocol import faktory_units as U
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from leash.protocol.limits import HANDSHAKE_FRAME_MAX_BYTES

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger("leash.faktory")
SERVER_DESCRIPTION = "Leash"
_FIRST_HELLO = "the first command must be HELLO"
_INVALID_PASSWORD = "Invalid password"  # Faktory's words, which its clients look for
_NOT_ALLOWED = (
    "{verb} changes what an operator owns: it is allowed to a client whose password is a "
    "key with role admin, or on a broker started with --faktory-allow-mutate"
)


class FaktoryConnection(Connection):
    __slots__ = ("admin", "front", "identified", "lines", "salt")

    def __init__(self, broker: Broker, front: "FaktoryFront") -> None:
        super().__init__(broker)
        limits = broker.config.limits
        self.lines = F.CommandDecoder(HANDSHAKE_FRAME_MAX_BYTES, limits.max_args_bytes)
        self.decoder = self.lines
        self.handler = front.handle
        self.max_in_flight = 1  # one command at a time: replies go in order
        self.idle_timeout_ms = 0
        self.front = front
        self.identified = False  # HELLO succeeded
        self.admin = False  # may MUTATE and FLUSH
        self.salt: str | None = None  # the HI's, when a password is wanted

    @property
    def greeted(self) -> bool:
        return self.identified

    def connection_made(self, transport: "asyncio.BaseTransport") -> None:
        super().connection_made(transport)
        if self.admitted and not self.closed:
            self.salt = self.front.passwords.new_salt() if self.front.passwords.required else None
            self._queue(F.greeting(self.salt, HASH_ROUNDS))

    def encode(self, reply: Any) -> bytes:
        return F.encode_reply(reply)

    def _pause(self, reason: int) -> None:
        """While a command is answered the next is not decoded, but the
        socket is still read, so that a consumer that dies while its FETCH
        is held is seen at once (its leases end a reconnect grace later, not
        a FETCH wait after that). A client that runs ahead of its replies
        by more than a line's limit is not read until it is answered."""
        if reason == PAUSED_FOR_IN_FLIGHT:
            self.paused |= reason
            self._read_ahead_check()
            return
        super()._pause(reason)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.paused & PAUSED_FOR_IN_FLIGHT:
            self._read_ahead_check()

    def _read_ahead_check(self) -> None:
        if self.lines.buffered_bytes > self.lines.max_frame_bytes:
            super()._pause(PAUSED_FOR_IN_FLIGHT)

    def nothing(self, request: Any) -> Any:
        return F.Bulk(None)


class FaktoryFront:
    def __init__(self, broker: Broker, passwords: Passwords, allow_mutate: bool) -> None:
        self.broker = broker
        self.passwords = passwords
        self.allow_mutate = allow_mutate
        self.commands = 0  # handled since start (INFO's command_count)

    def connection(self) -> FaktoryConnection:
        return FaktoryConnection(self.broker, self)

    def handle(self, connection: FaktoryConnection, command: F.Command) -> None:
        self.commands += 1
        if not connection.identified:
            self._hello(connection, command)
            return
        match command:
            case F.Push() | F.PushBulk() | F.Fetch() | F.Ack() | F.Fail() | F.Beat():
                self.broker.serve(connection, command, core.decide_faktory, _growth_bytes(command))
            case F.Refused(code=code, message=message):
                self.broker.reply(connection, M.Error(0, code, message))
            case F.Info():
                self.broker.reply(connection, F.Bulk(self._info()))
            case F.End():
                connection.close_with(M.Ok(0))
            case F.Mutate():
                self._operate(connection, "MUTATE", self._mutate_rounds(command))
            case F.Flush():
                self._operate(connection, "FLUSH", self._flush_rounds())
            case F.Hello():
                message = "HELLO comes once, first"
                self.broker.reply(connection, M.Error(0, ErrorCode.BAD_REQUEST, message))
            case _:
                assert_never(command)

    # --- the handshake --------------------------------------------------------------

    def _hello(self, connection: FaktoryConnection, command: F.Command) -> None:
        broker = self.broker
        if not isinstance(command, F.Hello):
            why = command.message if isinstance(command, F.Refused) else _FIRST_HELLO
            broker.refusals.refused(connection.peer, ErrorCode.HANDSHAKE_REQUIRED, why)
            connection.close_with(M.Error(0, ErrorCode.BAD_REQUEST, f"{_FIRST_HELLO}: {why}"))
            return
        source = (connection.source, _PASSWORD_SOURCE)
        if connection.salt:
            wait_ms = broker.handshake.failures.wait_ms(source, broker.clock_ms())
            if wait_ms:
                message = f"too many failed authentications from here: try again in {wait_ms} ms"
                broker.refusals.refused(connection.peer, ErrorCode.AUTH_FAILED, message)
                connection.close_with(M.Error(0, ErrorCode.AUTH_FAILED, message))
                return
        rights = self.passwords.check(command, connection.salt) if connection.salt else ""
        if rights is None:
            self._failed(connection, source)
            return
        if connection.salt:
            broker.handshake.failures.succeeded(source)
        connection.identified = True
        connection.admin = self.allow_mutate or rights == ADMIN
        broker.welcomed(connection)
        if command.wid:
            info = core.ProcessInfo(command.hostname, command.pid, command.labels, 0, F.CLIENT_NAME)
            broker.attach(connection, command.wid, info)
        broker.reply(connection, M.Ok(0))

    def _failed(self, connection: FaktoryConnection, source: tuple[str, str]) -> None:
        """Answer a wrong password and close at once; the failures from its
        address put a delay on the next attempt from there (auth.FailureTable),
        so a guesser holds no place while it waits."""
        broker = self.broker
        broker.handshake.failures.failed(source, broker.clock_ms())
        broker.refusals.refused(connection.peer, ErrorCode.AUTH_FAILED, "wrong Faktory password")
        connection.close_with(M.Error(0, ErrorCode.AUTH_FAILED, _INVALID_PASSWORD))

    # --- INFO -------------------------------------------------------------------------

    def _info(self) -> bytes:
        broker, state = self.broker, self.broker.state
        now_ms = broker.clock_ms()
        queues = {name: queue.counts[READY] for name, queue in state.queues.items()}
        counts, totals = state.counts, broker.totals.all
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        info = {
            "now": U.iso_time(now_ms),
            "server_utc_time": time.strftime("%H:%M:%S UTC", time.gmtime(now_ms / 1000)),
            "faktory": {
                "total_failures": totals["failed"],
                "total_processed": totals["acked"] + totals["failed"],
                "total_enqueued": sum(queues.values()),
                "total_queues": len(queues),
                "queues": queues,
                "tasks": {
                    "Busy": {"size": counts[LEASED], "reaped": totals["expired"]},
                    "Scheduled": {"size": counts[SCHEDULED]},
                    "Retries": {"size": counts[RETRYING]},
                    "Dead": {"size": counts[DEAD]},
                    "Workers": {"size": len(state.processes)},
                },
            },
            "server": {
                "description": SERVER_DESCRIPTION,
                "faktory_version": SERVER_NAME,
                "uptime": (now_ms - broker.started_ms) // 1000,
                "connections": len(broker.connections),
                "command_count": self.commands,
                "used_memory_mb": rss_mb,  # the most the process has held
            },
        }
        return U.encode_unit(info)

    # --- MUTATE and FLUSH ---------------------------------------------------------------

    def _mutate_rounds(self, command: F.Mutate) -> "Step":
        return lambda start, now_ms: core.mutate_round(self.broker.state, command, start, now_ms)

    def _flush_rounds(self) -> "Step":
        return lambda _start, now_ms: core.flush_round(self.broker.state, now_ms)

    def _operate(self, connection: FaktoryConnection, verb: str, step: "Step") -> None:
        """Run an operator's command round by round, one round a turn of the
        loop, to its end even if its client goes away meanwhile; answer once
        the last round's records are durable."""
        broker = self.broker
        if not connection.admin:
            refusal = _NOT_ALLOWED.format(verb=verb)
            broker.reply(connection, M.Error(0, ErrorCode.PERMISSION_DENIED, refusal))
            return
        changed = 0

        def run(start: object) -> None:
            nonlocal changed
            if broker.stopping:
                return  # what the rounds so far did stays done, and journalled
            if broker.committer.failed is not None:
                broker.reply(connection, M.Error(0, ErrorCode.JOURNAL_FAILED, "journal failed"))
                return
            done = step(start, broker.clock_ms())
            if done.records:
                broker.commit(done.records)
            changed += done.changed
            if done.next is not None:
                broker.scheduler.call_soon(run, done.next)
                return
            log.info("%s from %s: %d jobs and batches changed", verb, connection.peer, changed)
            broker.reply(connection, M.Ok(0))

        run(None)


Step = Callable[[Any, int], core.Round]  # a round from where the last one stopped


def _growth_bytes(command: F.Command) -> int:
    """About what a command's records append to the journal (the disk
    watermark counts it): a pushed unit's args and kept fields, plus a
    record's fixed part."""
    match command:
        case F.Push(unit=unit):
            units = [unit]
        case F.PushBulk(units=units):
            pass
        case _:
            return 0
    return sum(len(u.spec.args) + len(u.extra or b"") + _RECORD_BYTES for u in units)


_RECORD_BYTES = 256  # a pushed job's record besides its args: ids, names, times
# The key-id half of a Faktory client's source in the failure table: its
# passwords are one secret, as every unknown key id of the Leash port is.
_PASSWORD_SOURCE = "faktory password"
