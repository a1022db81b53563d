"""A tiny in-memory broker that speaks the wire protocol, for client tests.

It runs its own event loop in a thread on 127.0.0.1 (port 0), so both the
blocking and the async client can talk to it from a test. It knows just
enough job semantics to exercise the clients: push, fetch (with a held
long-poll), ack/fail/extend/progress/release with token checks, get_job, and beat,
which answers the state a test sets with ``set_process_state`` (a process
that is not ``ok`` is handed no jobs). Everything it receives is recorded; tests wait
on it with ``wait_for``. Not a model of the real broker: no persistence, no
retries, no expiry, no process deaths.
"""

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from leash.protocol import PROTOCOL_VERSION
from leash.protocol.errors import ErrorCode
from leash.protocol.frames import FrameDecoder, encode_frame
from leash.protocol.limits import FRAME_MAX_BYTES
from leash.protocol.messages import (
    Ack,
    AckedMany,
    AckMany,
    BadRequest,
    Beat,
    Delivery,
    Error,
    Extend,
    Extended,
    Fail,
    Failed,
    Fetch,
    GetJob,
    Hello,
    ItemResult,
    JobInfo,
    Jobs,
    JobSpec,
    JobView,
    Ok,
    ProcessState,
    Progress,
    Push,
    Pushed,
    PushedMany,
    PushMany,
    PushResult,
    Release,
    Reply,
    Request,
    Welcome,
    decode_request,
    encoder,
)

T = TypeVar("T")
WAIT_S = 10.0  # the longest any test waits for the fake to see something


@dataclass
class FakeJob:
    spec: JobSpec
    token: int | None = None  # set while leased
    state: str = "ready"
    owner: str | None = None  # the worker id that leased it


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
        self.heartbeat_ms = heartbeat_ms  # None: the Welcome's default
        self.process_states: dict[str, str] = {}  # by worker id, once it said hello
        self.seen = Seen()
        self.jobs: dict[str, FakeJob] = {}
        self.port = 0
        self._tokens = itertools.count(1000)
        self._changed = threading.Condition()
        self._fetch_waiters: list[asyncio.Event] = []
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

    def add_job(self, type: str, args: bytes = b"\x90", **options: Any) -> str:
        spec = JobSpec(type=type, args=msgspec.Raw(args), id=f"job-{next(self._tokens)}", **options)

        async def add() -> str:
            self._store(spec)
            return spec.id or ""

        return self.call(add)

    def set_process_state(self, worker_id: str, state: str) -> None:
        """What beat answers to ``worker_id`` from now on."""

        async def set_state() -> None:
            self.process_states[worker_id] = state

        self.call(set_state)

    def beats_after(self, state: str) -> int:
        """How many beats came after the first one answered ``state`` (-1: none was)."""
        answered = [s for _, s in self.seen.beats]
        return len(answered) - answered.index(state) - 1 if state in answered else -1

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

    # --- server side (the fake's loop) ---------------------------------------

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
            self._notify()

    def _handshake(self, writer: asyncio.StreamWriter, request: Request) -> bool:
        if not isinstance(request, Hello):
            self._send(
                writer, Error(rid=0, code=ErrorCode.HANDSHAKE_REQUIRED, message="hello first")
            )
            return False
        self.seen.hellos.append(request)
        self.process_states.setdefault(request.worker_id, "ok")
        self._notify()
        if self.hello_reply is not None:
            self._send(writer, self.hello_reply)
            return isinstance(self.hello_reply, Welcome)
        welcome = Welcome(
            rid=request.rid,
            version=PROTOCOL_VERSION,
            server="fake/0",
            epoch=7,
            max_frame_bytes=self.max_frame_bytes,
        )
        if self.heartbeat_ms is not None:
            welcome.heartbeat_ms = self.heartbeat_ms
        self._send(writer, welcome)
        return True

    def _send(self, writer: asyncio.StreamWriter, reply: Reply) -> None:
        if not writer.is_closing():
            writer.write(encode_frame(encoder.encode(reply)))

    async def _answer(self, writer: asyncio.StreamWriter, request: Request, worker_id: str) -> None:
        reply = await self._reply(request, worker_id)
        if isinstance(request, Push | PushMany) and self.lose_push_replies > 0:
            self.lose_push_replies -= 1
            writer.transport.abort()  # applied, and the reply lost with the connection
        else:
            self._send(writer, reply)
        self._notify()

    async def _reply(self, request: Request, worker_id: str) -> Reply:
        match request:
            case Push(rid=rid, job=spec):
                created = self._store(spec)
                return Pushed(rid=rid, id=spec.id or "", created=created, state="ready")
            case PushMany(rid=rid, jobs=specs):
                results = [PushResult(s.id or "", self._store(s), "ready") for s in specs]
                return PushedMany(rid=rid, results=results)
            case Fetch():
                return await self._fetch(request, worker_id)
            case Ack(rid=rid, id=job_id, token=token):
                error = self._check(rid, job_id, token)
                if error is None:
                    del self.jobs[job_id]
                    self.seen.acked.append(job_id)
                return error or Ok(rid=rid)
            case AckMany(rid=rid, leases=leases):
                items = []
                for ref in leases:
                    error = self._check(rid, ref.id, ref.token)
                    if error is None:
                        del self.jobs[ref.id]
                        self.seen.acked.append(ref.id)
                    items.append(ItemResult(ref.id, error.code if error else None))
                return AckedMany(rid=rid, results=items)
            case Fail(rid=rid, id=job_id, token=token):
                error = self._check(rid, job_id, token)
                if error is None:
                    self._unlease(job_id, "retrying")
                    self.seen.failed.append(request)
                return error or Failed(rid=rid, state="retrying", retry_at_ms=123_456)
            case Extend(rid=rid, id=job_id, token=token, lease_ttl_ms=ttl_ms):
                return self._check(rid, job_id, token) or Extended(
                    rid=rid, deadline_ms=1_000_000 + (ttl_ms or 0)
                )
            case Progress(rid=rid, id=job_id, token=token):
                return self._check(rid, job_id, token) or Extended(rid=rid, deadline_ms=1_000_000)
            case Release(rid=rid, id=job_id, token=token):
                error = self._check(rid, job_id, token)
                if error is None:
                    self._unlease(job_id, "ready")
                    self.seen.released.append(job_id)
                return error or Ok(rid=rid)
            case GetJob(rid=rid, id=job_id):
                if job_id not in self.jobs:
                    return Error(rid=rid, code=ErrorCode.NOT_FOUND, message=f"no job {job_id}")
                return JobInfo(rid=rid, job=self._view(self.jobs[job_id]))
            case Beat(rid=rid):
                return self._beat(rid, worker_id)
            case _:
                return Error(rid=request.rid, code=ErrorCode.UNKNOWN_OP, message="not in the fake")

    def _beat(self, rid: int, worker_id: str) -> Reply:
        state = self.process_states[worker_id]
        self.seen.beats.append((time.monotonic(), state))
        return ProcessState(rid=rid, state=state)

    def _unlease(self, job_id: str, state: str) -> None:
        job = self.jobs[job_id]
        job.token, job.state, job.owner = None, state, None

    def _store(self, spec: JobSpec) -> bool:
        assert spec.id is not None, "the client always sends an id"
        if spec.id in self.jobs:
            return False
        self.jobs[spec.id] = FakeJob(spec)
        for waiter in self._fetch_waiters:
            waiter.set()
        self._notify()
        return True

    async def _fetch(self, request: Fetch, worker_id: str) -> Jobs:
        jobs = self._lease(request, worker_id)
        if jobs or not request.wait_ms:
            return Jobs(rid=request.rid, jobs=jobs)
        arrived = asyncio.Event()
        self._fetch_waiters.append(arrived)
        try:
            async with asyncio.timeout(request.wait_ms / 1000):
                while not jobs:
                    await arrived.wait()
                    arrived.clear()
                    jobs = self._lease(request, worker_id)
        except TimeoutError:
            pass
        finally:
            self._fetch_waiters.remove(arrived)
        return Jobs(rid=request.rid, jobs=jobs)

    def _lease(self, request: Fetch, worker_id: str) -> list[Delivery]:
        jobs: list[Delivery] = []
        if self.process_states.get(worker_id) != "ok":
            return jobs  # quiet or terminating: held, handed nothing
        for job in self.jobs.values():
            if len(jobs) == request.count:
                break
            if job.state == "ready" and job.spec.queue in request.queues:
                job.token, job.state, job.owner = next(self._tokens), "leased", worker_id
                jobs.append(self._delivery(job))
        return jobs

    def _delivery(self, job: FakeJob) -> Delivery:
        spec = job.spec
        assert job.token is not None
        return Delivery(
            id=spec.id or "",
            queue=spec.queue,
            type=spec.type,
            args=spec.args,
            token=job.token,
            deadline_ms=1_000_000,
            attempt=1,
            max_attempts=spec.max_attempts,
            lease_ttl_ms=spec.lease_ttl_ms,
            priority=spec.priority,
            created_ms=1,
            time_limit_ms=spec.time_limit_ms,
        )

    def _view(self, job: FakeJob) -> JobView:
        spec = job.spec
        return JobView(
            id=spec.id or "",
            queue=spec.queue,
            type=spec.type,
            args=spec.args,
            state=job.state,  # type: ignore[arg-type]
            priority=spec.priority,
            attempt=0,
            max_attempts=spec.max_attempts,
            lease_ttl_ms=spec.lease_ttl_ms,
            created_ms=1,
            token=job.token,
        )

    def _check(self, rid: int, job_id: str, token: int) -> Error | None:
        job = self.jobs.get(job_id)
        if job is None:
            return Error(rid=rid, code=ErrorCode.NOT_FOUND, message=f"no job {job_id}")
        if job.token != token:
            return Error(rid=rid, code=ErrorCode.STALE_LEASE, message="not your lease")
        return None
