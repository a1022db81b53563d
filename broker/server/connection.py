"""One TCP (or TLS) connection: bytes in, frames to the broker, replies out.

An asyncio Protocol (no streams: fewer allocations on the hot path). It
owns the frame decoder and back-pressure. It stops reading (and stops
decoding frames it has already read) while any of these holds, and goes on
where it stopped once none does:

- the transport's write buffer is over its high-water mark (the client is
  not reading its replies); while it is, a reply that would be queued on
  top of ``max_outbound_bytes`` aborts the connection instead;
- ``max_in_flight`` requests have been read and not answered yet (replies
  wait for the group commit, held long-poll fetches for a job): reading
  resumes when half of them are answered;
- the connection is doomed (a failed authentication waits out its delay).

The hot path only bumps two counters (``in_flight`` and ``frames_out``;
the frames read are their sum) and tests one field (``paused``, which a close
sets too); ``guard.Guard`` reads them in its sweep to enforce the
deadlines. It holds no job semantics; everything it decodes goes to
``handler`` (``Broker.handle``; faktory.py's connection speaks another
protocol through the same machinery: its own decoder, encoding and handler).

Replies are coalesced: ``send`` encodes a reply into the connection's
outbound list, and the broker ``flush``es every connection that has one at
the end of the loop turn (after the journal batch of the turn is written),
so a pipelining client gets all the replies of a turn in one write. A reply
is only ever sent once its records are written, so writing early is always
allowed: once ``OUT_FLUSH_BYTES`` are queued they go to the transport at
once, whose back-pressure (above) then applies as to any write; the limit on
outbound bytes counts the queue with the transport's buffer.
"""

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode, ProtocolError
from leash.protocol.frames import FrameDecoder, encode_frame
from leash.protocol.limits import HANDSHAKE_FRAME_MAX_BYTES

if TYPE_CHECKING:
    from leash.broker.core.records import ProcessInfo
    from leash.broker.server.auth import PendingAuth
    from leash.broker.server.broker import Broker
    from leash.broker.server.waiters import ResultWaiter, Waiter

log = logging.getLogger("leash.server")


PAUSED_FOR_WRITES = 1
PAUSED_FOR_IN_FLIGHT = 2
PAUSED_FOR_GOOD = 4  # doomed: nothing more is read
PAUSED_CLOSED = 8  # set with closed, so the hot path tests one field
OUT_FLUSH_BYTES = 64 * 1024  # queued replies written before the end of the turn


class Decoder(Protocol):
    """What a connection needs of its protocol's decoder (frames.FrameDecoder;
    faktory.CommandDecoder): bytes in, the next request (or None) out."""

    max_frame_bytes: int

    @property
    def in_frame(self) -> bool: ...

    def feed(self, data: bytes | bytearray | memoryview) -> None: ...

    def next_frame(self) -> Any: ...


class Connection(asyncio.Protocol):
    PAUSED_FOR_WRITES = PAUSED_FOR_WRITES  # for the guard

    __slots__ = (
        "_continuing",
        "_reading_paused",
        "active_s",
        "admitted",
        "broker",
        "closed",
        "closed_s",
        "deadline_s",
        "decoder",
        "frame_mark",
        "frame_since_s",
        "frames_out",
        "handler",
        "host",
        "idle_timeout_ms",
        "in_flight",
        "info",
        "max_in_flight",
        "out",
        "out_bytes",
        "paused",
        "peer",
        "pending_auth",
        "seen_in",
        "seen_out",
        "source",
        "transport",
        "waiters",
        "worker_id",
        "write_paused_s",
    )

    def __init__(self, broker: "Broker") -> None:
        self.broker = broker
        self.decoder: Decoder = FrameDecoder(HANDSHAKE_FRAME_MAX_BYTES)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.host = "?"  # the peer's address without the port
        self.source = "?"  # the host as the per-address limits count it (set by the guard)
        self.worker_id = ""  # set by the welcome; empty until the handshake is done
        self.info: ProcessInfo | None = None  # the identity hello gave
        self.pending_auth: PendingAuth | None = None  # challenged, waiting for auth
        self.waiters: set[Waiter | ResultWaiter] = set()
        self.closed = False
        self.closed_s = 0.0
        self.admitted = False  # counted by the guard
        self.max_in_flight = broker.config.limits.max_in_flight
        self.idle_timeout_ms = broker.config.limits.idle_timeout_ms  # 0: never (guard.py)
        self.handler: Callable[[Any, Any], None] = broker.handle  # takes each frame's body
        # Counters of the hot path, and the marks the guard's sweep keeps.
        self.frames_out = self.in_flight = 0
        self.seen_in = self.seen_out = 0
        self.frame_mark, self.frame_since_s = -1, 0.0
        self.active_s = self.deadline_s = self.write_paused_s = 0.0
        self.paused = 0  # PAUSED_FOR_* bits
        self.out: list[bytes] = []  # encoded replies of this turn, written by flush()
        self.out_bytes = 0
        self._reading_paused = False
        self._continuing = False

    @property
    def greeted(self) -> bool:
        return bool(self.worker_id)

    @property
    def frames_in(self) -> int:
        """Requests read: each is answered (counted out) or still in flight."""
        return self.frames_out + self.in_flight

    @property
    def reading(self) -> bool:
        """False once doomed: the connection only waits to send its last error."""
        return not self.paused & PAUSED_FOR_GOOD

    # --- asyncio callbacks ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.host = str(peer[0])
            self.peer = f"[{peer[0]}]:{peer[1]}" if ":" in self.host else f"{peer[0]}:{peer[1]}"
        else:
            self.peer = self.host = str(peer)
        self.broker.connection_made(self)

    def data_received(self, data: bytes) -> None:
        """Hand every complete frame to the broker, until paused or out of bytes."""
        if self.closed:
            return
        decoder = self.decoder
        decoder.feed(data)
        if self.paused:
            return  # kept until the pause ends (see _continue)
        handle, max_in_flight = self.handler, self.max_in_flight
        while True:
            try:
                body = decoder.next_frame()
            except ProtocolError as error:
                self.broker.refusals.refused(self.peer, error.code, error.message)
                self.refuse(error.code, error.message)
                return
            if body is None:
                return
            self.in_flight += 1
            handle(self, body)
            if self.paused:  # closed is a pause too
                return
            if self.in_flight >= max_in_flight:
                self._pause(PAUSED_FOR_IN_FLIGHT)
                return

    def pause_writing(self) -> None:
        self.write_paused_s = self.broker.scheduler.now()
        self._pause(PAUSED_FOR_WRITES)

    def resume_writing(self) -> None:
        self._resume(PAUSED_FOR_WRITES)

    def connection_lost(self, exc: Exception | None) -> None:
        self._mark_closed()
        self.broker.connection_lost(self)

    # --- replies out ------------------------------------------------------------

    def encode(self, reply: Any) -> bytes:
        """A reply as it goes on the wire: a frame of msgpack."""
        return encode_frame(M.encoder.encode(reply))

    def nothing(self, request: Any) -> Any:
        """The answer to a held fetch whose wait ended: no jobs."""
        return M.Jobs(request.rid, [])

    def send(self, reply: Any) -> None:
        """Queue the reply to a request read from this connection (see ``flush``)."""
        if self.closed:
            return
        if self.paused:
            self._send_while_paused(reply)
            return
        self._queue(self.encode(reply))
        self.frames_out += 1
        self.in_flight -= 1

    def _send_while_paused(self, reply: Any) -> None:
        """``send`` off the hot path: abort rather than queue past max_outbound_bytes
        while writes are paused; resume reading once half the requests are answered."""
        transport = self.transport
        assert transport is not None
        limit = self.broker.config.limits.max_outbound_bytes
        if (
            self.paused & PAUSED_FOR_WRITES
            and transport.get_write_buffer_size() + self.out_bytes > limit
        ):
            message = f"over {limit} bytes of replies are waiting to be read"
            self.broker.refusals.refused(self.peer, ErrorCode.SLOW_READER, message)
            self.abort()
            return
        self._queue(self.encode(reply))
        self.frames_out += 1
        self.in_flight -= 1
        if self.paused & PAUSED_FOR_IN_FLIGHT and self.in_flight <= self.max_in_flight // 2:
            self._resume(PAUSED_FOR_IN_FLIGHT)

    def _queue(self, frame: bytes) -> None:
        if not self.out:
            self.broker.reply_later(self)
        self.out.append(frame)
        self.out_bytes += len(frame)
        if self.out_bytes >= OUT_FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the replies queued this turn, in one write."""
        out = self.out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self.out_bytes = 0
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def close_with(self, reply: Any) -> None:
        """Send a last reply and close (after it is flushed)."""
        if not self.closed and self.transport is not None:
            self.out.append(self.encode(reply))
        self.close()  # flushes

    def refuse(self, code: ErrorCode, message: str) -> None:
        """Say why (rid 0) and close, reading nothing more."""
        self.stop_reading()
        self.close_with(M.Error(0, code, message))

    def stop_reading(self) -> None:
        self._pause(PAUSED_FOR_GOOD)

    def close(self) -> None:
        if not self.closed:
            self.flush()
            self._mark_closed()
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        """Close at once, dropping whatever is still queued for the peer."""
        self._mark_closed()
        self.out.clear()
        self.out_bytes = 0
        if self.transport is not None:
            self.transport.abort()

    def _mark_closed(self) -> None:
        if not self.closed:
            self.closed = True
            self.paused |= PAUSED_CLOSED
            self.closed_s = self.broker.scheduler.now()

    # --- pausing ----------------------------------------------------------------

    def _pause(self, reason: int) -> None:
        self.paused |= reason
        if not self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume(self, reason: int) -> None:
        self.paused &= ~reason
        if not self.paused and not self._continuing and not self.closed:
            # Not from inside the callback that answered a request: the broker
            # may be in the middle of serving waiters.
            self._continuing = True
            self.broker.scheduler.call_soon(self._continue)

    def _continue(self) -> None:
        self._continuing = False
        if self.closed or self.paused:
            return
        self.data_received(b"")  # the frames read before the pause
        if not (self.closed or self.paused) and self._reading_paused:
            self._reading_paused = False
            assert self.transport is not None
            self.transport.resume_reading()
