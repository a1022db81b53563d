"""The asyncio client: one TCP connection, many requests in flight.

``await AsyncClient.connect(host, port)`` (or ``await AsyncClient.from_url``)
opens the connection and completes the handshake; ``async with
AsyncClient(host, port)`` does the same on entry and closes on exit. The
constructor itself does no I/O.

Any number of tasks may call one AsyncClient at once: each request gets the
next rid and a future in the core's table, one reader task feeds the replies
back to their futures in whatever order the broker answers (a long-poll fetch
is answered after later requests). Requests share writes: the first request
of a loop turn is written at once (no added latency when idle), and the ones
made after it in that turn, by any task, go out together in one write at the
turn's end (and so on while requests keep coming). ``pipeline()`` sends many
pushes together and collects their ids. A call waits at most ``timeout_s`` for its
reply, plus ``wait_ms`` for a fetch, then raises ``RequestTimeout``; the
connection stays usable and the late reply is dropped. A cancelled call is
forgotten the same way. A long poll given up either way is ended at the
broker (``cancel``), and the jobs a fetch's reply leased all the same (it
crossed the cancel, or came as the task was cancelled) are released at
once. When the connection ends, every call in flight gets
``ConnectionLost``. The public methods mirror ``leash.client.blocking.Client``
exactly (a test keeps them in step); the request logic is in ``leash.client._core``.

An AsyncClient's connection belongs to the event loop it was opened in: a
call from another loop (a second ``asyncio.run``, a test's own loop) raises
a ``RuntimeError`` that says so at once; open one client per loop. A
connection that ended with its loop is opened again by the next call.

``key`` and ``tls`` are as for ``Client`` (see ``leash.client._security``). Idle
connections too: when the connection has been idle for three quarters of
the broker's ``idle_timeout_ms``, the next call opens a new one first (same
worker id); its request had not been sent. Lost connections and forks are
as for ``Client``: the calls in flight get ``ConnectionLost`` and the next
call opens a new connection; ``push``, ``push_many`` and ``create_batch``
are sent again with the same ids until answered or ``timeout_s`` has
passed; in a forked child the client opens a connection of its own (the
child runs its own event loop) and leaves the parent's alone.
"""

import asyncio
import contextlib
import dataclasses
import functools
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

from leash.protocol.limits import AUTH_NONCE_BYTES, BATCH_STATUS_MEMBERS_DEFAULT
from leash.protocol.messages import (
    BatchCreated,
    BatchView,
    Challenge,
    ErrorInfo,
    JobsRun,
    JobView,
    PushResult,
    Welcome,
)

from . import _fork
from ._backoff import PUSH_RETRYABLE, backoff_s
from ._calls import Call
from ._core import ClientCore
from ._env import Options, endpoint
from ._exceptions import ConnectFailed, ConnectionLost, LeashError, RequestTimeout, ServerError
from ._identity import Identity, process_worker_id
from ._pipeline import AsyncPipeline
from ._security import KeyOption, TlsOption, as_key, as_tls
from ._types import (
    NO_RESULT,
    FailResult,
    Job,
    JobOptions,
    JobSpecLike,
    Lease,
    as_job_spec,
    spec_from_options,
    with_id,
)
from ._url import DEFAULT_HOST, DEFAULT_PORT, parse_url
from .blocking import IDLE_REOPEN_FRACTION

T = TypeVar("T")

_RECV_BYTES = 256 * 1024
_NOT_CONNECTED = "not connected: use `await AsyncClient.connect(...)` or `async with`"


class AsyncClient:
    """An asyncio connection to a Leash broker. See the module docstring."""

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        worker_id: str | None = None,
        timeout_s: float = 30.0,
        hostname: str | None = None,
        labels: Iterable[str] = (),
        concurrency: int = 0,
        key: KeyOption = None,
        tls: TlsOption = None,
    ) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._own_worker_id = worker_id is None  # this process's id: a forked child takes its own
        self.worker_id = worker_id if worker_id is not None else process_worker_id()
        self._identity = Identity(self.worker_id, hostname, tuple(labels), concurrency)
        self._key, self._tls = as_key(key), as_tls(tls)
        self._core: ClientCore[asyncio.Future[Any]] = ClientCore()
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the connection's
        self._closed = False
        self._reopen = False  # the connection was lost: reconnect on the next call
        self._reopen_lock = asyncio.Lock()
        self._last_io_s = 0.0
        # Frames made after this turn's first write, for one write at the turn's
        # end (None: nothing written this turn, the next frame goes at once).
        self._out: list[bytes] | None = None
        self._pid = os.getpid()
        _fork.track(self)

    @classmethod
    async def connect(
        cls,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        worker_id: str | None = None,
        timeout_s: float = 30.0,
        hostname: str | None = None,
        labels: Iterable[str] = (),
        concurrency: int = 0,
        key: KeyOption = None,
        tls: TlsOption = None,
    ) -> Self:
        """A connected client."""
        client = cls(
            host,
            port,
            worker_id=worker_id,
            timeout_s=timeout_s,
            hostname=hostname,
            labels=labels,
            concurrency=concurrency,
            key=key,
            tls=tls,
        )
        await client._open()
        return client

    @classmethod
    async def from_url(
        cls,
        url: str,
        *,
        worker_id: str | None = None,
        timeout_s: float = 30.0,
        hostname: str | None = None,
        labels: Iterable[str] = (),
        concurrency: int = 0,
    ) -> Self:
        """A connected client for ``leash[s]://host:port[?options]`` (see ``leash.client._url``)."""
        endpoint = parse_url(url)
        return await cls.connect(
            endpoint.host,
            endpoint.port,
            worker_id=worker_id,
            timeout_s=timeout_s,
            hostname=hostname,
            labels=labels,
            concurrency=concurrency,
            key=endpoint.key,
            tls=endpoint.tls,
        )

    @classmethod
    async def from_env(
        cls,
        *,
        worker_id: str | None = None,
        timeout_s: float = 30.0,
        hostname: str | None = None,
        labels: Iterable[str] = (),
        concurrency: int = 0,
    ) -> Self:
        """A connected client for the broker the environment names: ``LEASH_URL``,
        ``LEASH_KEY_FILE``, ``LEASH_TLS_CA`` ... (``leash.client._env``); unset, 127.0.0.1:7420."""
        found = endpoint(Options())
        return await cls.connect(
            found.host,
            found.port,
            worker_id=worker_id,
            timeout_s=timeout_s,
            hostname=hostname,
            labels=labels,
            concurrency=concurrency,
            key=found.key,
            tls=found.tls,
        )

    @property
    def welcome(self) -> Welcome:
        """The broker's handshake reply: ``server``, ``epoch``, ``max_frame_bytes``."""
        if self._core.welcome is None:
            raise RuntimeError("not connected yet")
        return self._core.welcome

    @property
    def closed(self) -> bool:
        return (self._closed or self._writer is None) and not self._reopen

    async def close(self) -> None:
        """Close the connection; calls in flight get ConnectionLost."""
        self._reopen = False
        await self._drop()

    async def _drop(self) -> None:
        self._shut(ConnectionLost("the connection was closed by the client"))
        task = self._reader_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            await asyncio.wait({task})
        if self._writer is not None:
            with contextlib.suppress(OSError):  # already reset by the peer
                await self._writer.wait_closed()

    async def __aenter__(self) -> Self:
        if self._closed:
            raise ConnectionLost("the connection is closed")
        if self._writer is None:
            await self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- producer ------------------------------------------------------------

    async def push(
        self,
        type: str,
        args: Any = None,
        *,
        lease: Lease | None = None,
        **options: Unpack[JobOptions],
    ) -> str:
        """Add a job; return its id. The options (``JobOptions``) left out take
        the broker's defaults; ``lease``: the running member of a committed
        ``batch`` that adds the job to it (a ``Job``)."""
        spec = spec_from_options(type, args, options)
        return await self._call_again(self._core.push(spec, lease))

    async def push_many(
        self, jobs: Iterable[JobSpecLike], *, lease: Lease | None = None
    ) -> list[PushResult]:
        """Add several jobs in one request; one ``PushResult`` per job, in order.

        A spec without an id gets one here, so that sending it again adds
        nothing; a job that an attempt lost on the way had created is
        ``created=False`` in the answer to the next."""
        specs = [with_id(as_job_spec(job)) for job in jobs]
        return await self._call_again(self._core.push_many(specs, lease)) if specs else []

    async def result(self, id: str, wait_ms: int = 0) -> Any:
        """The value job ``id`` returned, waiting up to ``wait_ms`` for it to
        finish. ``JobFailed`` if it died (with its error), was deleted or
        expired; ``ResultNotReady`` if it has not finished; ``NotFound`` if
        the broker knows no such job or kept no result for it."""
        return await self._call(self._core.get_result(id, wait_ms))

    async def get_job(self, id: str) -> JobView:
        return await self._call(self._core.get_job(id))

    # --- worker ----------------------------------------------------------------

    async def fetch(self, queues: str | Sequence[str], *, wait_ms: int = 0) -> Job | None:
        """Lease one job from the first of ``queues`` that has one, waiting up to ``wait_ms``."""
        jobs = await self._call(self._core.fetch(queues, 1, wait_ms))
        return jobs[0] if jobs else None

    async def fetch_many(
        self, queues: str | Sequence[str], count: int, *, wait_ms: int = 0
    ) -> list[Job]:
        """Lease up to ``count`` jobs; wait up to ``wait_ms`` for the first one."""
        return await self._call(self._core.fetch(queues, count, wait_ms))

    async def ack(self, job: Lease, result: Any = NO_RESULT) -> None:
        """The job is done. ``StaleLease``/``NotFound`` if the lease was lost.
        ``result``: its return value, kept if its push asked (``keep_result_ms``);
        ``TooLarge`` (the job stays leased) over the broker's limit."""
        await self._call(self._core.ack(job, result))

    async def ack_many(self, jobs: Sequence[Lease]) -> list[ServerError | None]:
        """Ack several jobs; per job, None if acked or the error that refused it."""
        return await self._call(self._core.ack_many(jobs)) if jobs else []

    async def fail(
        self,
        job: Lease,
        error: BaseException | str | ErrorInfo,
        *,
        dead: bool = False,
        retry_in_ms: int | None = None,
    ) -> FailResult:
        """The attempt failed: the job is retried later or, out of attempts, dead.

        ``dead``: no more attempts (running it again cannot help), to the
        dead set now; ``retry_in_ms``: retry after this long instead of the
        job's backoff."""
        return await self._call(self._core.fail(job, error, dead, retry_in_ms))

    async def extend(self, job: Lease, lease_ttl_ms: int | None = None) -> int:
        """Push the lease deadline out; return it (and set ``job.deadline_ms``)."""
        return await self._call(self._core.extend(job, lease_ttl_ms))

    async def progress(
        self, job: Lease, percent: int, message: str = "", *, lease_ttl_ms: int | None = None
    ) -> int:
        """Report how far the job is (``percent`` 0-100, a message of at most
        200 characters); extends the lease as ``extend`` does and returns its
        deadline (set on ``job.deadline_ms``)."""
        return await self._call(self._core.progress(job, percent, message, lease_ttl_ms))

    async def release(self, job: Lease, *, delay_ms: int | None = None) -> None:
        """Give the job back to its queue without counting an attempt
        (``delay_ms``: scheduled for then instead of ready at once, a snooze)."""
        await self._call(self._core.release(job, delay_ms))

    # --- worker processes ------------------------------------------------------

    async def beat(self, ran: Mapping[str, JobsRun] | None = None) -> str:
        """Say this process is alive; return what the broker wants of it.

        ``"ok"`` (carry on), ``"quiet"`` (fetch nothing new) or ``"terminate"``
        (finish running jobs and exit). ``ran``: the jobs this process ran so
        far, by type, for the broker's processes views (at most
        ``BEAT_TYPES_MAX`` types). ``Worker`` beats by itself.
        """
        return await self._call(self._core.beat(ran))

    # --- batches ---------------------------------------------------------------

    async def create_batch(
        self,
        jobs: Iterable[JobSpecLike] = (),
        *,
        id: str | None = None,
        description: str = "",
        parent: str | None = None,
        on_success: JobSpecLike | None = None,
        on_complete: JobSpecLike | None = None,
        on_death: JobSpecLike | None = None,
        commit: bool = False,
        lease: Lease | None = None,
    ) -> BatchCreated:
        """Create a batch with its first ``jobs``; ``commit`` judges it at once.

        Callbacks are job specs (a ``JobSpec`` or a dict of ``push``'s
        parameters). Without ``id`` the client makes a random one, so a
        create sent again makes one batch. A child of a committed ``parent``
        is created by a running member of it, which presents its ``lease``.
        """
        call = self._core.create_batch(
            list(jobs),
            id=id,
            description=description,
            parent=parent,
            on_success=on_success,
            on_complete=on_complete,
            on_death=on_death,
            commit=commit,
            lease=lease,
        )
        return await self._call_again(call)

    async def commit_batch(self, id: str) -> None:
        """No more jobs from producers: the batch is judged from now on."""
        await self._call(self._core.commit_batch(id))

    async def batch_status(
        self, id: str, *, limit: int = BATCH_STATUS_MEMBERS_DEFAULT
    ) -> BatchView:
        """Counts, state, callbacks fired, and up to ``limit`` unfinished members."""
        return await self._call(self._core.batch_status(id, limit))

    def pipeline(self) -> AsyncPipeline:
        """Pushes sent together: ``async with client.pipeline() as p:`` then
        ``p.push(...)`` (the same parameters as ``push``) returns a future
        at once; when the block ends the pushes go out in few writes and the
        block waits for every reply. Each future then holds its job's id (or
        the error that refused it; the block raises the first). As for
        ``push``: client-made ids, sent again if the connection is lost, a
        reply only once the job is journalled."""
        return AsyncPipeline(self)

    # --- the connection --------------------------------------------------------

    async def _open(self) -> None:
        """Connect, and complete the handshake (authenticating, with a key)."""
        tls = self._tls
        try:
            async with asyncio.timeout(self.timeout_s):
                reader, writer = await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=tls,
                    server_hostname=self.host if tls is not None else None,
                    ssl_handshake_timeout=self.timeout_s if tls is not None else None,
                )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            where = f"{self.host}:{self.port}"
            raise ConnectFailed(f"cannot connect to the broker at {where}: {exc!r}") from exc
        self._core.reset()
        self._writer, self._closed = writer, False
        self._loop = asyncio.get_running_loop()
        self._last_io_s = asyncio.get_running_loop().time()
        self._reader_task = asyncio.create_task(self._read(reader, writer), name="leash-reader")
        try:
            nonce = secrets.token_bytes(AUTH_NONCE_BYTES) if self._key is not None else b""
            greeted = await self._exchange(self._core.hello(self._identity, self._key, nonce))
            if isinstance(greeted, Challenge):
                await self._exchange(self._core.authenticate())
        except BaseException:
            await self._drop()
            raise

    async def _call(self, call: Call[T]) -> T:
        if self._loop is not asyncio.get_running_loop():
            self._check_loop()
        if self._pid != os.getpid() or self._reopen or self._went_idle():
            await self._reconnect()
        return await self._exchange(call)

    def _check_loop(self) -> None:
        """A call from another event loop than the connection's (a second
        ``asyncio.run``, a test's own loop, a framework's loop per call):
        refused at once, where it would wait out its time for a reply that
        only the connection's loop can read."""
        if self._loop is None:
            return  # never connected: the call says so
        if self._writer is None or self._closed:  # ended: a new one opens in this loop
            self._writer, self._reader_task = None, None  # what is left is its loop's
            self._loop, self._reopen_lock = asyncio.get_running_loop(), asyncio.Lock()
            return
        whose = "an event loop that has ended" if self._loop.is_closed() else "another event loop"
        raise RuntimeError(
            f"this AsyncClient's connection belongs to {whose}: open a client in "
            "the loop that uses it (async with AsyncClient(...)), one per event loop"
        )

    async def _reconnect(self) -> None:
        """Before a call: a connection of this process's own, open and not
        about to be closed as idle."""
        if self._pid != os.getpid():  # forked, and the fork hook did not run
            self._after_fork()
        if self._reopen or self._went_idle():
            async with self._reopen_lock:
                if self._reopen or self._went_idle():
                    await self._drop()
                    self._reopen = True
                    try:
                        await self._open()
                    finally:
                        self._reopen = self._closed  # failed: the next call tries again

    async def _call_again(self, call: Call[T]) -> T:
        """A push (or batch creation), sent again on a new connection while
        the connection is lost, until answered or ``timeout_s`` has passed;
        its ids make every try after the first add nothing."""
        loop = asyncio.get_running_loop()
        deadline_s = loop.time() + self.timeout_s
        attempt = 0
        while True:
            try:
                return await self._call(call)
            except PUSH_RETRYABLE:
                delay_s = backoff_s(attempt)
                if self.closed or loop.time() + delay_s > deadline_s:
                    raise
            await asyncio.sleep(delay_s)
            attempt += 1

    def _after_fork(self) -> None:
        """In a forked child: forget the parent's connection without touching
        it (its objects belong to the parent's event loop) and open one of
        this process's own on the next call."""
        self._pid = os.getpid()
        self._reopen_lock = asyncio.Lock()  # bound to the parent's loop once used
        if self._own_worker_id:
            self.worker_id = process_worker_id()
            self._identity = dataclasses.replace(self._identity, worker_id=self.worker_id)
        writer, task = self._writer, self._reader_task
        self._writer, self._reader_task = None, None
        self._core.fail_pending()  # the parent's futures: its loop answers them, not ours
        if writer is not None:
            sock = writer.get_extra_info("socket")
            fd = sock.fileno() if sock is not None else -1
            if fd >= 0:
                _fork.drop_descriptor(fd)
            _fork.keep(writer, task)
            self._reopen = self._reopen or not self._closed
            self._closed = True

    async def _until_lost(self, timeout_s: float) -> None:
        """Wait ``timeout_s``, or less if the connection ends first (the
        worker's heartbeat: it reconnects at once)."""
        task = self._reader_task
        if task is None or task.done():
            await asyncio.sleep(timeout_s)
            return
        await asyncio.wait({task}, timeout=timeout_s)

    def _went_idle(self) -> bool:
        """Whether the broker is about to close this connection as idle."""
        welcome = self._core.welcome
        if self._closed or welcome is None or not welcome.idle_timeout_ms or self._core.in_flight:
            return False
        idle_s = asyncio.get_running_loop().time() - self._last_io_s
        return idle_s >= welcome.idle_timeout_ms * IDLE_REOPEN_FRACTION / 1000

    async def _exchange(self, call: Call[T]) -> T:
        writer = self._open_writer()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._core.start(call, future)
        limit_s = self.timeout_s + call.wait_ms / 1000
        timer = loop.call_later(limit_s, _time_out, future, limit_s)  # cheaper than a scope
        try:
            await self._write(writer, call.frame)
            return await future
        except BaseException:  # cancelled, maybe just as the reply came
            if future.done() and not future.cancelled() and future.exception() is None:
                self._core.unclaimed(future.result())  # a fetch's jobs go back
                self._post(self._core.take_releases())
            raise
        finally:
            timer.cancel()
            self._forget(call.rid)

    async def _together(self, calls: Sequence[Call[Any]]) -> list["asyncio.Future[Any]"]:
        """Send ``calls`` in one write; their futures, each with its own time
        limit (the Worker's acks and next fetch). Reconnects first as ``_call``."""
        if self._loop is not asyncio.get_running_loop():
            self._check_loop()
        if self._pid != os.getpid() or self._reopen or self._went_idle():
            await self._reconnect()
        writer = self._open_writer()
        loop, core = asyncio.get_running_loop(), self._core
        futures: list[asyncio.Future[Any]] = []
        for call in calls:
            future: asyncio.Future[Any] = loop.create_future()
            core.start(call, future)
            limit_s = self.timeout_s + call.wait_ms / 1000
            timer = loop.call_later(limit_s, _time_out, future, limit_s)
            future.add_done_callback(functools.partial(self._forgotten, timer, call.rid))
            futures.append(future)
        await self._write(writer, b"".join(call.frame for call in calls))
        return futures

    def _open_writer(self) -> asyncio.StreamWriter:
        writer = self._writer
        if writer is None or self._closed:
            opened = writer is not None or self._closed
            raise ConnectionLost("the connection is closed" if opened else _NOT_CONNECTED)
        return writer

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        """The turn's first frame goes at once; later ones join one write at
        the turn's end (``_flush_out``)."""
        out = self._out
        if out is not None:
            out.append(data)
            return
        loop = asyncio.get_running_loop()
        self._out = out = []
        loop.call_soon(self._flush_out, writer, out)
        try:
            writer.write(data)
            self._last_io_s = loop.time()
            if writer.transport.get_write_buffer_size():  # the kernel did not take it all
                await writer.drain()
        except OSError as exc:
            self._shut(ConnectionLost(f"the connection broke: {exc}"), reopen=True)

    def _forgotten(
        self, timer: asyncio.TimerHandle, rid: int, _future: "asyncio.Future[Any]"
    ) -> None:
        timer.cancel()
        self._forget(rid)

    def _forget(self, rid: int) -> None:
        """A call is over: if its caller stopped waiting for a long poll, the
        broker is told to end it (``ClientCore.abandon``)."""
        cancel = self._core.abandon(rid)
        if cancel is not None:
            self._post(cancel.frame)

    def _post(self, data: bytes) -> None:
        """Send frames whose replies nobody waits for: with the turn's
        queued frames, else at once."""
        writer = self._writer
        if writer is None or self._closed or not data:
            return
        if self._out is not None:
            self._out.append(data)
            return
        try:
            writer.write(data)
        except OSError as exc:
            self._shut(ConnectionLost(f"the connection broke: {exc}"), reopen=True)

    def _flush_out(self, writer: asyncio.StreamWriter, out: list[bytes]) -> None:
        """End of a turn: write what it queued in one write, and keep
        queueing until a turn queues nothing."""
        if out is not self._out:
            return  # the connection it was for has ended
        if not out:
            self._out = None
            return
        queued: list[bytes] = []
        self._out = queued
        loop = asyncio.get_running_loop()
        loop.call_soon(self._flush_out, writer, queued)
        try:
            writer.write(b"".join(out))
            self._last_io_s = loop.time()
        except OSError as exc:
            self._shut(ConnectionLost(f"the connection broke: {exc}"), reopen=True)

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Hand each reply to its waiting call until the connection ends."""
        core, loop = self._core, asyncio.get_running_loop()
        error: LeashError
        try:
            while True:
                data = await reader.read(_RECV_BYTES)
                if not data:
                    error = ConnectionLost("the broker closed the connection")
                    break
                self._last_io_s = loop.time()
                core.receive_data(data)
                while (completion := core.next_completion()) is not None:
                    future = completion.waiter
                    if future.done():  # its caller was cancelled, or its time ran out
                        core.unclaimed(completion.value)
                    elif completion.error is not None:
                        future.set_exception(completion.error)
                    else:
                        future.set_result(completion.value)
                releases = core.take_releases()
                if releases:
                    self._post(releases)
        except LeashError as exc:
            error = exc
        except OSError as exc:
            error = ConnectionLost(f"the connection broke: {exc}")
        except Exception as exc:  # a bug here must still fail the waiting calls
            error = ConnectionLost(f"the reply reader failed: {exc!r}")
            error.__cause__ = exc
        if writer is self._writer:  # not a connection already replaced
            self._shut(error, reopen=core.welcome is not None)

    def _shut(self, error: LeashError, *, reopen: bool = False) -> None:
        """End the connection: every call in flight fails with ConnectionLost.
        ``reopen``: it was lost, not closed by the user: the next call reconnects."""
        if not self._closed and reopen:
            self._reopen = True
        self._closed = True
        self._out = None  # its frames were for this connection
        for future in self._core.fail_pending():
            if not future.done():
                lost = ConnectionLost(str(error))
                lost.__cause__ = error if not isinstance(error, ConnectionLost) else error.__cause__
                future.set_exception(lost)
        if self._writer is not None:
            self._writer.close()


def _time_out(future: "asyncio.Future[Any]", limit_s: float) -> None:
    if not future.done():
        future.set_exception(RequestTimeout(f"no reply within {limit_s:g} s"))
