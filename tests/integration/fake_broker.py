"""A broker for client tests: the broker's own core behind a small server
that a test drives and breaks.

It runs its own event loop in a thread on 127.0.0.1 (port 0), so both the
blocking and the async client can talk to it from a test. Every request
after the hello is decided and applied by the real pure core
(``leash.broker.core``: ``decide``, then ``apply`` of its records on a
``State``, with the time passed in), as the broker's shell does it: a sign
of life registers the process, a fetch that finds nothing is held until a
job arrives or its wait ends, the last connection of a process closing
detaches it. So the jobs, leases, tokens, errors and process states a
client sees are the broker's, and cannot drift from them; the state's
invariants are checked after every change.

What the fake writes itself is the shell a client meets and the faults a
test injects: the reply to the hello (``hello_reply``, a refusal), a frame
limit, a heartbeat period, push replies lost with their connection
(``lose_push_replies``), connections cut (``drop_connections``), a process
state an operator sets (``set_process_state``), a lease another worker
took (``steal_lease``), and fetches decided late (``hold_fetches``), after
their caller gave up. A ``cancel`` is answered ``ok`` and ends nothing: as
a broker whose reply crossed the cancel, or one that predates it. Not the
broker: no journal, no authentication, and no timers. Its clock stands
still at ``CLOCK_MS`` (so leases do not expire and processes do not die
while a test runs; deadlines are exact numbers).
Everything it receives is recorded; tests wait on it with ``wait_for``.
"""

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from leash.broker import core
from leash.broker.core import records as R
from leash.broker.core.timelimit import granted_ms
from leash.protocol import PROTOCOL_VERSION
from leash.protocol import admin as A
from leash.protocol.errors import ErrorCode
from leash.protocol.frames import FrameDecoder, encode_frame
from leash.protocol.limits import FRAME_MAX_BYTES
from leash.protocol.messages import (
    Ack,
    AckedMany,
    AckMany,
    BadRequest,
    Beat,
    Error,
    Extend,
    Fail,
    Failed,
    Fetch,
    Hello,
    Jobs,
    JobSpec,
    JobView,
    Ok,
    ProcessState,
    Push,
    Pushed,
    PushMany,
    Release,
    Reply,
    Request,
    Welcome,
    decode_request,
    encoder,
)

T = TypeVar("T")
WAIT_S = 10.0  # the longest any test waits for the fake to see something
CLOCK_MS = 1_000_000  # the fake's time: it stands still
EPOCH = 7  # the epoch the fake's core was booted into (as after six restarts)
THIEF = "fake-thief"  # the worker id of the process steal_lease hands a lease to
SERVER_NAME = "fake/0"


@dataclass
class Seen:
    """Everything the fake received, in order."""

    hellos: list[Hello] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    failed: list[Fail] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    beats: list[tuple[float, str]] = field(default_factory=list)  # (monotonic s, state answered)

    def extends(self, job_id: str) -> list[Extend]:
        return [r for r in self.requests if isinstance(r, Extend) and r.id == job_id]

    def fetches(self) -> int:
        return sum(isinstance(r, Fetch) for r in self.requests)

    def released_first(self, job_id: str) -> bool:
        """The first release was of ``job_id``, and every other one too: a
        worker's fetch still held while it stops is handed the job it has
        just released, and the worker releases that again, as the broker's."""
        return self.released[:1] == [job_id] and set(self.released) == {job_id}

    def note(self, request: Request, reply: Reply) -> None:
        """What the core's reply says was done (only what was)."""
        match request, reply:
            case Ack(id=job_id), Ok():
                self.acked.append(job_id)
            case AckMany(), AckedMany(results=items):
                self.acked += [item.id for item in items if item.code is None]
            case Fail(), Failed():
                self.failed.append(request)
            case Release(id=job_id), Ok():
                self.released.append(job_id)
            case Beat(), ProcessState(state=state):
                self.beats.append((time.monotonic(), state))


class FakeBroker:
    def __init__(
        self,
        *,
        hello_reply: Reply | None = None,
        max_frame_bytes: int = FRAME_MAX_BYTES,
        heartbeat_ms: int | None = None,
        lose_push_replies: int = 0,
    ) -> None:
        self.hello_reply = hello_reply  # instead of the Welcome
        # Pushes applied whose reply is lost: the connection is cut instead
        self.lose_push_replies = lose_push_replies
        self.max_frame_bytes = max_frame_bytes
        config = core.CoreConfig()
        if heartbeat_ms is not None:
            config = msgspec.structs.replace(config, heartbeat_ms=heartbeat_ms)
        self.state = core.State(config)
        core.apply(self.state, R.Booted(epoch=EPOCH, at_ms=CLOCK_MS))
        self.seen = Seen()
        self.port = 0
        self._ids = itertools.count(1000)
        self._attached: dict[str, int] = {}  # connections of each process
        self._changed = threading.Condition()
        self._fetch_waiters: list[asyncio.Event] = []
        self._fetch_gate: asyncio.Event | None = None  # set: fetches are decided
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    # --- test side (any thread) ---------------------------------------------

    def start(self) -> None:
        ready = threading.Event()
        self._ready = ready
        self._thread.start()
        assert ready.wait(WAIT_S), "fake broker did not start"

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(WAIT_S)

    def call(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``fn()`` on the fake's loop and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(fn(), self._loop).result(WAIT_S)

    @property
    def jobs(self) -> dict[str, JobView]:
        """The jobs the core holds (acked ones are gone), as get_job shows them."""
        return {job_id: core.job_view(job) for job_id, job in self.state.jobs.items()}

    def add_job(self, type: str, args: bytes = b"\x90", **options: Any) -> str:
        """Push a job as a producer would; its id."""
        spec = JobSpec(type=type, args=msgspec.Raw(args), id=f"job-{next(self._ids)}", **options)

        async def add() -> str:
            reply = self._decide(Push(rid=0, job=spec), "")
            assert isinstance(reply, Pushed), reply
            return reply.id

        return self.call(add)

    def set_process_state(self, worker_id: str, state: A.ProcessControl) -> None:
        """What beat answers to ``worker_id`` from now on: an operator's control."""

        async def control() -> None:
            outcome = core.decide_admin(self.state, A.Control(0, worker_id, state), CLOCK_MS)
            assert not isinstance(outcome.reply, Error), outcome.reply
            self._commit(outcome.records)

        self.call(control)

    def steal_lease(self, job_id: str) -> None:
        """Another worker holds the job now (its lease was released and the
        job leased again, to THIEF): the old token is stale."""

        async def steal() -> None:
            job = self.state.jobs[job_id]
            assert job.token is not None, f"{job_id} is not leased"
            info = R.ProcessInfo("fake-host", 1, [], 1, "fake")
            self._commit(core.touch(self.state, THIEF, info, CLOCK_MS, hello=True))
            self._commit([R.LeaseReleased(job_id, job.token, CLOCK_MS)])
            grant = R.Grant(job_id, self.state.next_token(), granted_ms(job, CLOCK_MS))
            self._commit([R.JobsLeased(THIEF, [grant], self.state.counter + 1, CLOCK_MS)])

        self.call(steal)

    def beats_after(self, state: str) -> int:
        """How many beats came after the first one answered ``state`` (-1: none was)."""
        answered = [s for _, s in self.seen.beats]
        return len(answered) - answered.index(state) - 1 if state in answered else -1

    def hold_fetches(self) -> None:
        """From now on a fetch is decided only once ``answer_fetches`` is
        called: its caller may give up first."""

        async def close() -> None:
            self._fetch_gate = asyncio.Event()

        self.call(close)

    def answer_fetches(self) -> None:
        """Decide the fetches held by ``hold_fetches``, and later ones at once."""

        async def open_gate() -> None:
            gate, self._fetch_gate = self._fetch_gate, None
            if gate is not None:
                gate.set()

        self.call(open_gate)

    def drop_connections(self) -> None:
        async def drop() -> None:
            for writer in list(self._writers):
                writer.transport.abort()

        self.call(drop)

    def wait_for(self, predicate: Callable[["FakeBroker"], bool], what: str = "") -> None:
        with self._changed:
            ok = self._changed.wait_for(lambda: predicate(self), WAIT_S)
        assert ok, f"the fake broker never saw {what or predicate}"

    async def wait_for_async(
        self, predicate: Callable[["FakeBroker"], bool], what: str = ""
    ) -> None:
        await asyncio.to_thread(self.wait_for, predicate, what)

    # --- the core (the fake's loop) -------------------------------------------

    def _decide(self, request: Request, worker_id: str) -> Reply:
        """Decide and apply at once (no await between): the reply."""
        outcome = core.decide(self.state, request, worker_id, CLOCK_MS)
        self._commit(outcome.records)
        return outcome.reply

    def _commit(self, records: list[R.Record]) -> None:
        for record in records:
            core.apply(self.state, record)
        assert core.check_invariants(self.state) == []
        if records:
            for waiter in self._fetch_waiters:
                waiter.set()
            self._notify()

    # --- the shell (the fake's loop) -------------------------------------------

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stopped.wait()
            for writer in list(self._writers):
                writer.transport.abort()
            if self._connections:
                await asyncio.wait(self._connections, timeout=WAIT_S)

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = asyncio.current_task()
        assert connection is not None
        self._connections.add(connection)
        connection.add_done_callback(self._connections.discard)
        self._writers.add(writer)
        decoder = FrameDecoder(self.max_frame_bytes)
        worker_id = ""  # the hello's, once handshaken
        try:
            while data := await reader.read(65536):
                decoder.feed(data)
                while (body := decoder.next_frame()) is not None:
                    try:
                        request = decode_request(body)
                    except BadRequest as exc:
                        self._send(writer, exc.reply())
                        continue
                    if not worker_id:
                        if not self._handshake(writer, request):
                            writer.close()
                            return
                        assert isinstance(request, Hello)
                        worker_id = request.worker_id
                        continue
                    self.seen.requests.append(request)
                    self._notify()
                    task = asyncio.create_task(self._answer(writer, request, worker_id))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        except Exception:
            writer.transport.abort()
        finally:
            self._writers.discard(writer)
            writer.close()
            if worker_id:
                self._detach(worker_id)
            self._notify()

    def _handshake(self, writer: asyncio.StreamWriter, request: Request) -> bool:
        if not isinstance(request, Hello):
            self._send(
                writer, Error(rid=0, code=ErrorCode.HANDSHAKE_REQUIRED, message="hello first")
            )
            return False
        self.seen.hellos.append(request)
        self._notify()
        if self.hello_reply is not None and not isinstance(self.hello_reply, Welcome):
            self._send(writer, self.hello_reply)
            return False
        self._attached[request.worker_id] = self._attached.get(request.worker_id, 0) + 1
        info = core.info_of(request)
        self._commit(core.touch(self.state, request.worker_id, info, CLOCK_MS, hello=True))
        config = self.state.config
        welcome = self.hello_reply or Welcome(
            rid=request.rid,
            version=PROTOCOL_VERSION,
            server=SERVER_NAME,
            epoch=self.state.epoch,
            max_frame_bytes=self.max_frame_bytes,
            heartbeat_ms=config.heartbeat_ms,
            process_ttl_ms=config.process_ttl_ms,
        )
        self._send(writer, welcome)
        return True

    def _detach(self, worker_id: str) -> None:
        """A connection closed: the process is detached once its last one has."""
        self._attached[worker_id] -= 1
        if not self._attached[worker_id]:
            del self._attached[worker_id]
            self._commit(core.detach(self.state, worker_id, CLOCK_MS))

    def _send(self, writer: asyncio.StreamWriter, reply: Reply) -> None:
        if not writer.is_closing():
            writer.write(encode_frame(encoder.encode(reply)))

    async def _answer(self, writer: asyncio.StreamWriter, request: Request, worker_id: str) -> None:
        process = self.state.processes.get(worker_id)
        if process is not None:  # a sign of life, as the shell gives it
            self._commit(core.touch(self.state, worker_id, process.info, CLOCK_MS))
        if isinstance(request, Fetch):
            reply = await self._fetch(request, worker_id)
        else:
            reply = self._decide(request, worker_id)
        self.seen.note(request, reply)
        if isinstance(request, Push | PushMany) and self.lose_push_replies > 0:
            self.lose_push_replies -= 1
            writer.transport.abort()  # applied, and the reply lost with the connection
        else:
            self._send(writer, reply)
        self._notify()

    async def _fetch(self, request: Fetch, worker_id: str) -> Reply:
        """Decide the fetch; one that found nothing is held (core.hold_ms)
        and decided again after each change, until it takes a job."""
        gate = self._fetch_gate
        if gate is not None:
            await gate.wait()
        outcome = core.decide(self.state, request, worker_id, CLOCK_MS)
        if not outcome.may_wait:
            self._commit(outcome.records)
            return outcome.reply
        arrived = asyncio.Event()
        self._fetch_waiters.append(arrived)
        try:
            async with asyncio.timeout(core.hold_ms(self.state, request.wait_ms) / 1000):
                while outcome.may_wait:
                    await arrived.wait()
                    arrived.clear()
                    outcome = core.decide(self.state, request, worker_id, CLOCK_MS)
        except TimeoutError:
            return Jobs(rid=request.rid, jobs=[])
        finally:
            self._fetch_waiters.remove(arrived)
        self._commit(outcome.records)
        return outcome.reply
