"""One TCP connection: bytes in, frames to the broker, replies out.

An asyncio Protocol (no streams: fewer allocations on the hot path). It
owns the frame decoder and back-pressure: when the transport's write buffer
is over its high-water mark, reading stops until it drains. It holds no job
semantics; everything it decodes goes to ``Broker.handle``.
"""

import asyncio
import logging
from typing import TYPE_CHECKING, cast

from protocol import messages as M
from protocol.errors import ProtocolError
from protocol.frames import FrameDecoder, encode_frame
from protocol.limits import HANDSHAKE_FRAME_MAX_BYTES

if TYPE_CHECKING:
    from broker.core.records import ProcessInfo
    from broker.server.broker import Broker
    from broker.server.waiters import Waiter

log = logging.getLogger("leash.server")


class Connection(asyncio.Protocol):
    def __init__(self, broker: "Broker") -> None:
        self.broker = broker
        self.decoder = FrameDecoder(HANDSHAKE_FRAME_MAX_BYTES)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.worker_id = ""  # set by hello; empty until the handshake is done
        self.info: ProcessInfo | None = None  # the identity hello gave
        self.waiters: set[Waiter] = set()
        self.closed = False

    @property
    def greeted(self) -> bool:
        return bool(self.worker_id)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.broker.connections.add(self)

    def data_received(self, data: bytes) -> None:
        decoder = self.decoder
        decoder.feed(data)
        while not self.closed:
            try:
                body = decoder.next_frame()
            except ProtocolError as error:
                log.info("closing %s: %s", self.peer, error.message)
                self.close_with(M.Error(0, error.code, error.message))
                return
            if body is None:
                return
            self.broker.handle(self, body)

    def send(self, reply: M.Reply) -> None:
        if not self.closed:
            assert self.transport is not None
            self.transport.write(encode_frame(M.encoder.encode(reply)))

    def close_with(self, reply: M.Reply) -> None:
        """Send a last reply and close (after it is flushed)."""
        self.send(reply)
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.broker.connection_lost(self)
