"""Who may connect, and the deadlines of every connection, checked by one sweep.

Admission: at most ``max_connections`` connections are open, at most
``max_unauthenticated`` of them have not been welcomed yet, and at most
``max_unauthenticated_per_address`` of those come from one address (an IPv6
/64, ``limits.source_address``), so that one source of slow or failing
handshakes cannot take every place; a connection beyond any gets one
``too_many_connections`` error and is closed, and nothing it sends is read.

Deadlines. No timer is armed per frame or per connection: one timer sweeps
every connection every ``period_s`` (at most 0.5 s; less when a configured
timeout is short) and reads counters that the hot path only increments.

- handshake: a connection is welcomed within ``handshake_timeout_ms`` of its
  start (on a TLS listener, of the end of the TLS handshake);
- frame: a frame is complete within ``frame_timeout_ms`` of the first sweep
  that saw it begun, so a frame gets between the timeout and the timeout plus
  one period;
- idle: a welcomed connection with no request in flight and no frame begun
  that has received and sent no frame for its ``idle_timeout_ms`` (the
  limit's; never on the Faktory port) is closed (never earlier; a frame
  begun is the frame deadline's);
- write stall: a connection whose replies stay above the transport's
  high-water mark for ``write_stall_ms`` is aborted (the client is not reading).

A closed connection whose last frame cannot be flushed (its peer reads
nothing) is aborted after ``CLOSE_LINGER_S``.
"""

from typing import TYPE_CHECKING

from leash.broker.journal.scheduler import Scheduler, Timer
from leash.broker.server.limits import Limits, RefusalLog, source_address
from leash.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from leash.broker.server.connection import Connection

SWEEP_MAX_PERIOD_S = 0.5
SWEEP_MIN_PERIOD_S = 0.02
CLOSE_LINGER_S = 2.0


def sweep_period_s(limits: Limits) -> float:
    timeouts_ms = [
        limits.handshake_timeout_ms,
        limits.frame_timeout_ms,
        limits.idle_timeout_ms,
        limits.write_stall_ms,
    ]
    shortest_s = min(ms for ms in timeouts_ms if ms > 0) / 1000
    return max(SWEEP_MIN_PERIOD_S, min(SWEEP_MAX_PERIOD_S, shortest_s / 4))


class Guard:
    def __init__(
        self,
        limits: Limits,
        connections: "set[Connection]",
        refusals: RefusalLog,
        scheduler: Scheduler,
    ) -> None:
        """``scheduler``: the sweep's timer and the monotonic clock every
        deadline is read on (the connections' marks are on it too)."""
        self.limits = limits
        self.connections = connections
        self.refusals = refusals
        self.scheduler = scheduler
        self.unauthenticated = 0
        self.unauthenticated_from: dict[str, int] = {}  # by source address; none at 0
        self.period_s = sweep_period_s(limits)
        self._timer: Timer | None = None

    def start(self) -> None:
        self._timer = self.scheduler.call_later(self.period_s, self._sweep)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # --- admission ----------------------------------------------------------

    def admit(self, connection: "Connection") -> bool:
        """Count a new connection in, or refuse it (and say so) and return False."""
        limits = self.limits
        source = connection.source = source_address(connection.host)
        pending = self.unauthenticated_from.get(source, 0)
        if len(self.connections) >= limits.max_connections:
            message = f"the broker holds its limit of {limits.max_connections} connections"
        elif self.unauthenticated >= limits.max_unauthenticated:
            message = (
                f"the broker holds its limit of {limits.max_unauthenticated} connections "
                "that have not finished their handshake"
            )
        elif pending >= limits.max_unauthenticated_per_address:
            message = (
                f"{source} holds its limit of {limits.max_unauthenticated_per_address} "
                "connections that have not finished their handshake"
            )
        else:
            now_s = self.scheduler.now()
            self.connections.add(connection)
            self.unauthenticated += 1
            self.unauthenticated_from[source] = pending + 1
            connection.admitted = True
            connection.deadline_s = now_s + limits.handshake_timeout_ms / 1000
            connection.active_s = now_s
            return True
        self.refusals.refused(connection.peer, ErrorCode.TOO_MANY_CONNECTIONS, message)
        connection.refuse(ErrorCode.TOO_MANY_CONNECTIONS, message)
        return False

    def welcomed(self, connection: "Connection") -> None:
        self._handshake_over(connection)
        connection.deadline_s = 0.0

    def lost(self, connection: "Connection") -> None:
        if connection.admitted:
            connection.admitted = False
            self.connections.discard(connection)
            if not connection.greeted:
                self._handshake_over(connection)

    def _handshake_over(self, connection: "Connection") -> None:
        self.unauthenticated -= 1
        left = self.unauthenticated_from[connection.source] - 1
        if left:
            self.unauthenticated_from[connection.source] = left
        else:
            del self.unauthenticated_from[connection.source]

    # --- deadlines ----------------------------------------------------------

    def _sweep(self) -> None:
        now_s = self.scheduler.now()
        for connection in list(self.connections):
            self.check(connection, now_s)
        self.refusals.flush()
        self._timer = self.scheduler.call_later(self.period_s, self._sweep)

    def check(self, connection: "Connection", now_s: float) -> None:
        """Close ``connection`` if it is past one of its deadlines at ``now_s``."""
        if connection.closed:
            if now_s - connection.closed_s >= CLOSE_LINGER_S:
                connection.abort()
            return
        limits = self.limits
        if (
            connection.frames_in != connection.seen_in
            or connection.frames_out != connection.seen_out
            or connection.in_flight
        ):
            connection.seen_in, connection.seen_out = connection.frames_in, connection.frames_out
            connection.active_s = now_s
        in_frame = not connection.paused and connection.decoder.in_frame
        if connection.paused & connection.PAUSED_FOR_WRITES:
            if now_s - connection.write_paused_s >= limits.write_stall_ms / 1000:
                message = f"replies have not drained for {limits.write_stall_ms} ms"
                self.refusals.refused(connection.peer, ErrorCode.SLOW_READER, message)
                connection.abort()
                return
        elif in_frame:
            if connection.frame_mark != connection.frames_in:
                connection.frame_mark, connection.frame_since_s = connection.frames_in, now_s
            elif now_s - connection.frame_since_s >= limits.frame_timeout_ms / 1000:
                message = f"a frame was not complete within {limits.frame_timeout_ms} ms"
                self._close(connection, ErrorCode.FRAME_TIMEOUT, message)
                return
        else:
            connection.frame_mark = -1
        if not connection.greeted:
            if connection.deadline_s and now_s >= connection.deadline_s and connection.reading:
                message = f"the handshake did not finish within {limits.handshake_timeout_ms} ms"
                self._close(connection, ErrorCode.HANDSHAKE_TIMEOUT, message)
        elif (
            connection.idle_timeout_ms
            and not in_frame
            and (now_s - connection.active_s >= connection.idle_timeout_ms / 1000)
        ):
            message = f"no frame for {connection.idle_timeout_ms} ms"
            self._close(connection, ErrorCode.IDLE_TIMEOUT, message)

    def _close(self, connection: "Connection", code: ErrorCode, message: str) -> None:
        self.refusals.refused(connection.peer, code, message)
        connection.refuse(code, message)
