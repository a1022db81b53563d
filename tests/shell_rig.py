"""The whole broker shell on virtual time, without sockets.

``shell()`` builds a real ``Broker`` (pipeline, ledger, long poll, tick
timer, admin service, guard, group committer) over a real core state and a
real ``Journal`` on an in-memory disk (tests/commit_rig.py's ClockedDisk),
all driven by a ``VirtualClock`` and a ``ManualWriter``
(tests/virtual_time.py). A ``Peer`` is a real ``Connection`` on a fake
transport: the test writes request frames into it and reads the reply
frames it wrote. Nothing sleeps and nothing runs on another thread: time
moves when the test says (``Shell.advance``), and the writer's jobs finish
when the test says (``Shell.settle`` finishes them all).
"""

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from leash.broker import core
from leash.broker.core import CoreConfig
from leash.broker.journal.group_commit import FsyncPolicy
from leash.broker.journal.log import Journal
from leash.broker.server.broker import Broker
from leash.broker.server.config import ServerConfig
from leash.broker.server.connection import Connection
from leash.broker.server.limits import Limits
from leash.protocol import PROTOCOL_VERSION
from leash.protocol import messages as M
from leash.protocol.frames import FrameDecoder, encode_frame
from tests.commit_rig import DIRECTORY, ClockedDisk
from tests.virtual_time import ManualWriter, VirtualClock

WALL_START_MS = 1_800_000_000_000  # the wall clock when virtual time is 0
REPLY_FRAME_MAX_BYTES = 1 << 26
SETTLE_ROUNDS_MAX = 10_000  # loop turns and writer jobs in one settle: more never settles


class FakeTransport:
    """What a Connection uses of an asyncio transport; a close is seen by
    the connection on the next loop turn, as asyncio does."""

    def __init__(
        self, clock: VirtualClock, host: str, port: int, on_write: Callable[[bytes], None]
    ) -> None:
        self.clock = clock
        self.peer = (host, port)
        self.on_write = on_write
        self.closed = self.aborted = False  # by the broker
        self.gone = False  # the client went away: what is written is lost
        self.reading = True
        self.protocol: Connection | None = None

    def get_extra_info(self, name: str) -> Any:
        return self.peer if name == "peername" else None

    def write(self, data: bytes) -> None:
        assert not self.closed, "a write after close"
        if not self.gone:
            self.on_write(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if not self.gone:
                self.clock.call_soon(self._lost)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def hang_up(self) -> None:
        """The client closes its end: the broker sees it on the next turn."""
        if not (self.gone or self.closed):
            self.gone = True
            self.clock.call_soon(self._lost)

    def _lost(self) -> None:
        if self.protocol is not None:
            self.protocol.connection_lost(None)


class Peer:
    """One client connection to the shell: requests in, replies out
    (``on_reply`` is told each reply as the broker writes it)."""

    _ports = itertools.count(40_000)

    def __init__(
        self,
        shell: "Shell",
        host: str = "127.0.0.1",
        on_reply: "Callable[[Peer, Any], None] | None" = None,
    ) -> None:
        self.shell = shell
        self.on_reply = on_reply
        self._decoder = FrameDecoder(REPLY_FRAME_MAX_BYTES)
        self._read = 0
        self.replies: list[Any] = []
        self._rids = itertools.count(1)
        self.transport = FakeTransport(shell.clock, host, next(self._ports), self._written)
        self.connection = Connection(shell.broker)
        self.transport.protocol = self.connection
        self.connection.connection_made(self.transport)  # type: ignore[arg-type]

    def rid(self) -> int:
        return next(self._rids)

    def send(self, message: Any) -> None:
        """Write a request frame, as if it had arrived from the network."""
        self.connection.data_received(encode_frame(M.encoder.encode(message)))

    def hello(self, worker_id: str) -> None:
        self.send(M.Hello(rid=self.rid(), version=PROTOCOL_VERSION, worker_id=worker_id))

    def _written(self, data: bytes) -> None:
        self._decoder.feed(data)
        while (body := self._decoder.next_frame()) is not None:
            reply = M.reply_decoder.decode(body)
            self.replies.append(reply)
            if self.on_reply is not None:
                self.on_reply(self, reply)

    def read(self) -> list[Any]:
        """The replies written since the last read (all are in ``replies``)."""
        new, self._read = self.replies[self._read :], len(self.replies)
        return new

    @property
    def closed(self) -> bool:
        """Closed by the broker, or by the client."""
        return self.transport.closed or self.transport.gone

    def close(self) -> None:
        """The client goes away."""
        self.transport.hang_up()


@dataclass
class Shell:
    clock: VirtualClock
    disk: ClockedDisk
    writer: ManualWriter
    journal: Journal
    broker: Broker
    failures: list[BaseException] = field(default_factory=list)

    def wall_ms(self) -> int:
        return WALL_START_MS + round(self.clock.now_s * 1000)

    @property
    def state(self) -> core.State:
        return self.broker.state

    def peer(
        self, worker_id: str | None = None, on_reply: Callable[[Peer, Any], None] | None = None
    ) -> Peer:
        """A new connection; welcomed as ``worker_id`` when given."""
        peer = Peer(self, on_reply=on_reply)
        if worker_id is not None:
            peer.hello(worker_id)
            self.settle()
            welcome = peer.read()
            assert welcome and isinstance(welcome[-1], M.Welcome), welcome
        return peer

    def settle(self) -> None:
        """Run the loop turns and the writer's jobs until neither has work
        (virtual time does not move)."""
        for _ in range(SETTLE_ROUNDS_MAX):
            self.clock.run_ready()
            if not self.writer.complete():
                return
        raise AssertionError("the shell never settles")

    def advance(self, seconds: float, step_s: float = 0.01) -> None:
        """Move virtual time on by ``seconds``, settling every ``step_s``."""
        target = self.clock.now_s + seconds
        self.settle()
        while self.clock.now_s < target - 1e-9:
            self.clock.advance(min(step_s, target - self.clock.now_s))
            self.settle()


def shell(
    mode: str = "never",
    *,
    limits: Limits | None = None,
    core_config: CoreConfig | None = None,
    segment_bytes: int = 1 << 30,
) -> Shell:
    """A booted broker shell on a fresh in-memory journal, at virtual time 0."""
    clock = VirtualClock()
    disk = ClockedDisk(clock)
    journal = Journal(DIRECTORY, disk, segment_bytes)
    state = core.State(core_config or CoreConfig())
    writer = ManualWriter(clock, disk.job_started, disk.job_finished)
    failures: list[BaseException] = []
    booted = core.boot(state, WALL_START_MS)
    core.apply(state, booted)
    journal.open(1, None, booted.epoch)
    journal.write_now([booted])
    disk.events.clear()
    config = ServerConfig(
        data_dir=DIRECTORY,
        fsync=FsyncPolicy.parse(mode),
        core=core_config or CoreConfig(),
        limits=limits or Limits(),
        segment_bytes=segment_bytes,
    )
    broker = Broker(
        config,
        state,
        journal,
        on_journal_failed=failures.append,
        clock_ms=lambda: WALL_START_MS + round(clock.now_s * 1000),
        scheduler=clock,
        writer=writer,
    )
    return Shell(clock, disk, writer, journal, broker, failures)
