"""The worker runner: lease jobs, run their handlers, settle each lease.

Usage::

    worker = Worker(queues=["default"], concurrency=4)

    @worker.handler("send_email")
    def send_email(to, subject): ...

    worker.run()  # until SIGTERM / SIGINT or worker.stop()

How args reach a handler is in ``leash.client._handlers``: a list is spread
(``fn(*args)``), a dict is passed as keywords (``fn(**args)``), anything else
is the one argument. Returning acks the job (with the returned value when
its push asked for it kept, ``keep_result_ms``: ``Client.result`` reads it;
a value the broker refuses as too large fails the job dead with
``ResultTooLarge``); raising fails the attempt with
the exception's type, message and traceback, or steers the job
(``leash.client._control``: ``Retry``, ``Discard``, ``Snooze``, a
handler's ``retry_on`` / ``give_up_on``). A job of a type with no handler
goes to the dead set at once with an ``UnknownJobType`` error naming the
types this worker knows, or with ``unknown="release"`` back to its queue
for another worker (``leash.client._unknown`` says why and when).
Each run is logged (``leash.client._joblog``: a line as it starts and
ends, at ``job_log``'s level, failures at WARNING or ERROR), counted per
type and outcome (``Worker.figures``, served with ``metrics_port`` as a
Prometheus endpoint: ``leash.client._metrics``) and goes through the
middleware (``leash.client._middleware``).

Theory of operation. One asyncio loop owns one ``AsyncClient``. A fetch loop
keeps one long-poll ``fetch_many`` in flight, asking for as many jobs as
there are free slots (``concurrency`` minus handlers running) plus
``prefetch`` more, less those already held; the jobs beyond the free slots
wait for one (``leash.client._prefetch``: at most half their lease's ttl
and at most 1 s, then they are released for another worker, and no more
are leased ahead until a handler returns), so a handler that returns
starts the next job at once. The acks and fails of finished jobs go in the
same write as the next fetch, before it (``leash.client._settle``: an
outcome waits at most 5 ms for one). A lost connection is reopened with
capped exponential backoff; outcomes not yet answered are then sent on the
new connection, since a lease belongs to this process's worker id, not to
a connection. One timer (``_sweep``) serves every held job: it releases
the ones that waited too long and starts extending the leases of the ones
that have run for half their ttl.

Jobs run in threads so that the loop stays free: ``concurrency`` threads of
the worker's own (``leash.client._slots``), each taking the next held job
as soon as it is free, never on the loop: while a CPU-bound or
blocking handler runs, the loop goes on serving the connection, the
heartbeats and other jobs' acks, so one slow handler never delays another
job's bookkeeping nor makes the broker think this process is dead. The limit:
a handler that holds the GIL in C code (a long call into an extension that
does not release it) for longer than the broker's ``process_ttl_ms`` starves
the loop, the beats stop, and the broker fails this process's leases. Such
work belongs in child processes: a handler with ``pool="processes"`` (or
every plain one, with ``Worker(pool="processes")``) runs in a child of its
slot (``leash.client._procs``), its slot's thread waiting for it. An
``async def`` handler runs on the loop itself, its slot's thread waiting for
it the same way, so ``concurrency`` bounds every kind of job at once.

Liveness (``leash.client._keepalive``): a heartbeat beats every ``heartbeat_ms``
of the welcome until the end of shutdown. Its reply is what the broker wants:
``quiet`` stops fetching (running jobs go on and settle), ``ok`` resumes it,
``terminate`` is a graceful stop like SIGTERM. With ``auto_extend`` (the
default) a running job's lease is extended every half ``lease_ttl_ms``. An
ack or fail refused with ``StaleLease``/``NotFound`` means the lease was lost
(the broker declared this process dead, or the lease expired) and another
worker may run the job: logged as a warning, and the worker goes on.

Time limits: a job delivered with ``time_limit_ms`` is stopped when that
long has passed since its lease arrived (the broker caps the lease there
too, and fails the attempt if the worker does not). The worker stops
extending its lease, fails the attempt with ``TimeLimitExceeded`` itself
and frees its slot at once: a new thread takes the slot (``_slots``). The
handler is stopped as far as its kind allows: an async handler's task is
cancelled, a child process (``pool="processes"``) is killed; a thread
cannot be, so it is abandoned, runs on until its handler returns (its
outcome dropped) and is counted in ``stuck_threads``. A handler that
sleeps for ever thus costs a thread, never a slot.

Shutdown: ``stop()``, SIGTERM / SIGINT under ``run()``, or ``terminate``
from the broker, stops fetching. An idle worker returns at once: closing its
connection ends the held fetch, which then leases nothing. Otherwise
prefetched jobs are released unrun; a fetch already in flight is waited for
(at most ``wait_ms``) and what it delivers is released unrun too; running
handlers get ``grace_s`` to finish and settle; then every job still running
is released and ``run`` returns (async handlers still running are
cancelled, child processes still running are killed). A second signal, or
``stop(now=True)``, skips the grace. Threads cannot be killed:
``unfinished`` counts handlers still running when ``run`` returned. When
``run`` returns, the signal handlers there were before it are back
(``leash.client._signals``).
"""

import asyncio
import contextlib
import logging
import math
import signal
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from leash.protocol import limits
from leash.protocol.messages import TIME_LIMIT_EXCEEDED, ErrorInfo

from . import _signals
from ._backoff import backoff_s
from ._control import ClassesOption, Failure
from ._exceptions import Internal, QueuePaused
from ._handlers import (
    POOLS,
    F,
    Handler,
    Pool,
    Registered,
    add_handler,
    functions,
    registered,
)
from ._joblog import Watch, checked_job_log
from ._keepalive import Heartbeat, keep_extended
from ._link import Link
from ._metrics import JobFigures, MetricsEndpoint, WorkerCollector
from ._middleware import Chain
from ._runs import Runs
from ._security import KeyOption, TlsOption, as_key, as_tls
from ._settle import LINK_ERRORS, Settler
from ._slots import Slots
from ._types import Job
from ._unknown import checked_policy
from ._url import DEFAULT_HOST, DEFAULT_PORT, Endpoint, parse_url
from .aio import AsyncClient

log = logging.getLogger("leash.worker")

_RETRYABLE_FETCH_ERRORS = (Internal, QueuePaused)  # the other refusals stop the worker
PREFETCH_DEFAULT = 4  # jobs leased beyond the free slots
PREFETCH_MAX = 1_000


class Worker:
    """Runs registered handlers for jobs leased from ``queues``. See the module docstring."""

    def __init__(
        self,
        queues: str | Sequence[str] = ("default",),
        concurrency: int = 4,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        url: str | None = None,
        handlers: Mapping[str, Handler | Registered] | None = None,
        wait_ms: int = 5_000,
        grace_s: float = 25.0,
        timeout_s: float = 30.0,
        labels: Iterable[str] = (),
        worker_id: str | None = None,
        auto_extend: bool = True,
        key: KeyOption = None,
        tls: TlsOption = None,
        prefetch: int = PREFETCH_DEFAULT,
        pool: Pool = "threads",
        middleware: Sequence[object] = (),
        unknown: str = "dead",
        job_log: str = "info",
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
    ) -> None:
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)}, not {pool!r}")
        if not 1 <= concurrency <= 100_000:
            raise ValueError(f"concurrency must be from 1 to 100000, not {concurrency}")
        if not 0 <= prefetch <= PREFETCH_MAX:
            raise ValueError(f"prefetch must be from 0 to {PREFETCH_MAX}, not {prefetch}")
        if not 0 <= wait_ms <= limits.FETCH_WAIT_MAX_MS:
            raise ValueError(f"wait_ms must be from 0 to {limits.FETCH_WAIT_MAX_MS}, not {wait_ms}")
        if metrics_port is not None and not 0 <= metrics_port <= 65_535:
            raise ValueError(f"metrics_port must be from 0 to 65535, not {metrics_port}")
        self.queues = [queues] if isinstance(queues, str) else list(queues)
        self.concurrency = concurrency
        endpoint = parse_url(url) if url is not None else Endpoint(host, port)
        self.host, self.port = endpoint.host, endpoint.port
        self._key = as_key(key) if key is not None else endpoint.key
        self._tls = as_tls(tls) if tls is not None else endpoint.tls
        self.wait_ms, self.grace_s, self.timeout_s = wait_ms, grace_s, timeout_s
        self.labels, self.worker_id = tuple(labels), worker_id
        self.auto_extend = auto_extend  # extend running jobs' leases at half their ttl
        self.prefetch = prefetch  # jobs leased ahead of a free slot
        self.pool: Pool = pool  # where plain handlers run unless their own pool says
        self.middleware = list(middleware)  # hooks around each job and the worker's life
        self.unknown = checked_policy(unknown)  # a job of a type with no handler: "dead", "release"
        self.job_log = checked_job_log(job_log)  # the start and end lines: "info", "debug", "off"
        self.metrics_port, self.metrics_host = metrics_port, metrics_host  # None: no endpoint
        self.metrics_address: tuple[str, int] | None = None  # where the endpoint listens
        self.figures = JobFigures()  # the runs so far, per job type and outcome
        self.process_state = "ok"  # what the broker last asked of this process
        self.unfinished = 0  # handlers still running when run() returned
        self.stopped = False  # run() has finished its work (it may still be returning)
        self._handlers: dict[str, Registered] = {}
        for type, fn in (handlers or {}).items():
            self.register(type, fn)
        self._stop_early: bool | None = None  # stop() before run: now?
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- registration ----------------------------------------------------------

    def handler(
        self,
        type: str | None = None,
        *,
        retry_on: ClassesOption = (),
        give_up_on: ClassesOption = (),
        pool: Pool | None = None,
    ) -> Callable[[F], F]:
        """Decorator: run the function for jobs of ``type`` (default: its name).

        ``give_up_on``: exceptions that send the job to the dead set at once;
        ``retry_on``: if given, the only exceptions retried (any other gives
        up); ``pool``: this handler's pool (None: the worker's)."""

        def decorate(fn: F) -> F:
            name = type if type is not None else fn.__name__
            self.register(name, fn, retry_on=retry_on, give_up_on=give_up_on, pool=pool)
            return fn

        return decorate

    def register(
        self,
        type: str,
        fn: Handler | Registered,
        *,
        retry_on: ClassesOption = (),
        give_up_on: ClassesOption = (),
        pool: Pool | None = None,
    ) -> None:
        add_handler(self._handlers, type, registered(fn, retry_on, give_up_on, pool))

    @property
    def handlers(self) -> Mapping[str, Handler]:
        return functions(self._handlers)

    def with_options(
        self,
        *,
        queues: str | Sequence[str] | None = None,
        concurrency: int | None = None,
        endpoint: Endpoint | None = None,
        wait_ms: int | None = None,
        grace_s: float | None = None,
        auto_extend: bool | None = None,
        prefetch: int | None = None,
        pool: Pool | None = None,
        unknown: str | None = None,
        job_log: str | None = None,
        metrics_port: int | None = None,
        metrics_host: str | None = None,
    ) -> "Worker":
        """A new Worker with this one's handlers and settings, but the ones
        given (``leash worker`` runs a module's Worker with its flags). An
        ``endpoint`` replaces the address, and the key and TLS it names."""
        return Worker(
            queues if queues is not None else self.queues,
            concurrency if concurrency is not None else self.concurrency,
            endpoint.host if endpoint is not None else self.host,
            endpoint.port if endpoint is not None else self.port,
            handlers=self._handlers,
            wait_ms=wait_ms if wait_ms is not None else self.wait_ms,
            grace_s=grace_s if grace_s is not None else self.grace_s,
            timeout_s=self.timeout_s,
            labels=self.labels,
            worker_id=self.worker_id,
            auto_extend=auto_extend if auto_extend is not None else self.auto_extend,
            key=endpoint.key if endpoint is not None and endpoint.key else self._key,
            tls=endpoint.tls if endpoint is not None and endpoint.tls else self._tls,
            prefetch=prefetch if prefetch is not None else self.prefetch,
            pool=pool if pool is not None else self.pool,
            middleware=self.middleware,
            unknown=unknown if unknown is not None else self.unknown,
            job_log=job_log if job_log is not None else self.job_log,
            metrics_port=metrics_port if metrics_port is not None else self.metrics_port,
            metrics_host=metrics_host if metrics_host is not None else self.metrics_host,
        )

    # --- running ---------------------------------------------------------------

    def run(self) -> None:
        """Run until stopped; SIGTERM and SIGINT stop gracefully (a second one at once)."""
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(self.run_async(handle_signals=True))

    async def run_async(self, *, handle_signals: bool = False) -> None:
        """Run on the current loop until stopped; raise if the broker refuses the setup."""
        if not self._handlers:
            raise ValueError("no handlers registered")
        self.stopped = False
        endpoint = await self._serve_metrics()
        self._chain = Chain(self.middleware)
        try:
            self._chain.on_start(self)
        except BaseException:
            await endpoint.close()
            raise
        self._begin()
        if self._stop_early is not None:
            self._begin_stop(now=self._stop_early)
            self._stop_early = None
        previous = _signals.install(self._on_signal) if handle_signals else {}
        try:
            await self._stopping.wait()
            await self._drain()
        finally:
            try:
                await self._finish()
            finally:
                self.stopped = True
                _signals.remove(previous)
                await endpoint.close()
                self.metrics_address = None
                self._chain.on_stop(self)
        if self._fatal is not None:
            raise self._fatal

    async def _serve_metrics(self) -> MetricsEndpoint:
        """The Prometheus endpoint, listening if ``metrics_port`` asks for one."""
        running = lambda: self._running() if self._loop is not None else 0  # noqa: E731
        collector = WorkerCollector(self.figures, running, self.concurrency, self._stuck)
        endpoint = MetricsEndpoint(collector)
        if self.metrics_port is not None:
            self.metrics_address = await endpoint.start(self.metrics_host, self.metrics_port)
        return endpoint

    def stop(self, *, now: bool = False) -> None:
        """Stop fetching and finish (``now``: release running jobs at once). Thread-safe."""
        loop = self._loop
        if loop is None:
            self._stop_early = now or bool(self._stop_early)
            return
        try:
            in_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            in_loop = False
        if in_loop:
            self._begin_stop(now)
        else:
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                loop.call_soon_threadsafe(self._begin_stop, now)

    def _begin(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self._link = Link(self._connect)
        self._stopping, self._hard, self._wake = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self._collected = asyncio.Event()  # set when finished jobs were collected
        self._held: dict[int, _Held] = {}  # by token: leased, not finished (waiting or running)
        self._runs = Runs(
            self._handlers,
            self.pool,
            self.unknown,
            self._chain,
            self._link,
            self.timeout_s * 2,
            Watch(self.job_log, self.figures),
        )
        self._slots = Slots(self.concurrency, self._runs.run, loop, self._collect)
        self._prefetching = True  # off after jobs waited too long, until a handler returns
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._settler = Settler(self._link)
        self._tasks: set[asyncio.Task[None]] = set()  # releases
        self._fetching = False
        self._fatal: BaseException | None = None
        self.process_state = "ok"
        self._may_fetch = asyncio.Event()  # cleared while the broker wants this process quiet
        self._may_fetch.set()
        self._fetcher = asyncio.create_task(self._fetch_loop(), name="leash-fetch")
        self._fetcher.add_done_callback(self._fetcher_done)
        ran = lambda: self.figures.report(limits.BEAT_TYPES_MAX)  # noqa: E731
        heartbeat = Heartbeat(self._link, self._on_process_state, ran)
        self._heartbeat = asyncio.create_task(heartbeat.run(), name="leash-heartbeat")

    def _begin_stop(self, now: bool) -> None:
        if not self._stopping.is_set():
            log.info(
                "stopping: %d jobs running, grace %g s", self._running(), 0 if now else self.grace_s
            )
        self._stopping.set()
        self._link.quiet = True
        self._settler.urgent = True
        self._wake.set()
        if now:
            self._hard.set()
        if not self._fetching:
            self._fetcher.cancel()  # connecting or waiting: nothing to collect
        prefetched = self._slots.clear()
        for job in prefetched:
            del self._held[job.token]
        self._give_back(prefetched, "prefetched, not started before the stop")

    def _on_process_state(self, state: str) -> None:
        """A beat's reply: what the broker wants of this process now."""
        if state == self.process_state:
            return
        if state not in ("ok", "quiet", "terminate"):
            log.warning("the broker asked for process state %r, unknown here: ignored", state)
            return
        self.process_state = state
        if state == "terminate":
            log.warning("the broker asked this worker to terminate: finishing running jobs")
            self._begin_stop(now=False)
        elif state == "quiet":
            log.warning("the broker asked this worker to be quiet: fetching no new jobs")
            self._may_fetch.clear()
        else:
            log.info("the broker lets this worker fetch again")
            self._may_fetch.set()

    async def _connect(self) -> AsyncClient:
        return await AsyncClient.connect(
            self.host,
            self.port,
            worker_id=self.worker_id,
            timeout_s=self.timeout_s,
            labels=self.labels,
            concurrency=self.concurrency,
            key=self._key,
            tls=self._tls,
        )

    def _fetcher_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        self._fatal = task.exception()
        log.error("the fetch loop failed, stopping: %r", self._fatal)
        self._begin_stop(now=False)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._hard.is_set():
            return  # a third one, or more: already releasing
        if self._stopping.is_set():
            log.warning("%s again: releasing %d running jobs now", name, self._running())
            self._begin_stop(now=True)
        else:
            log.warning("%s: finishing running jobs (send it again to release them now)", name)
            self._begin_stop(now=False)

    # --- fetching --------------------------------------------------------------

    def _running(self) -> int:
        return len(self._held) - self._slots.waiting

    def _wanted(self) -> int:
        """Jobs to ask for: the free slots, and the prefetch, less what waits."""
        extra = self.prefetch if self._prefetching else 0
        return min(self.concurrency + extra - len(self._held), limits.FETCH_COUNT_MAX)

    async def _fetch_loop(self) -> None:
        refusals = 0
        while not self._stopping.is_set():
            if self._wanted() <= 0:
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self._may_fetch.is_set():
                await self._may_fetch.wait()
                continue
            client = await self._link.client()
            if self._stopping.is_set():
                break
            jobs = await self._fetch(client, self._wanted())
            if jobs is None:
                await asyncio.sleep(backoff_s(refusals))
                refusals += 1
                continue
            refusals = 0
            if self._stopping.is_set():
                await self._release(jobs, "fetched during shutdown")
                return
            if jobs:
                self._take(jobs)

    async def _fetch(self, client: AsyncClient, count: int) -> list[Job] | None:
        """One long-poll fetch, in one write with the outcomes waiting to be
        sent; None when refused for a while. Other refusals raise."""
        self._fetching = True  # from here on, a stop waits for the reply
        try:
            outcomes, calls = self._settler.take(client)
            calls.append(client._core.fetch(self.queues, count, self.wait_ms))
            try:
                replies = await client._together(calls)
            except LINK_ERRORS as exc:
                self._settler.put_back(outcomes)
                await self._link.lost(client, exc)
                return []
            self._settler.watch(client, outcomes, replies[:-1])
            jobs: list[Job] = await replies[-1]
            return jobs
        except LINK_ERRORS as exc:
            await self._link.lost(client, exc)
            return []
        except _RETRYABLE_FETCH_ERRORS as exc:
            log.warning("fetch refused, retrying: %s", exc)
            return None
        finally:
            self._fetching = False

    def _take(self, jobs: list[Job]) -> None:
        """Jobs for the slots: a free thread takes one at once, the rest wait."""
        now_s = asyncio.get_running_loop().time()
        extend = self.auto_extend
        for job in jobs:
            half_ttl_s = job.lease_ttl_ms / 2000
            extend_s = now_s + half_ttl_s if extend and half_ttl_s > 0 else math.inf
            limit_s = now_s + job.time_limit_ms / 1000 if job.time_limit_ms else math.inf
            self._held[job.token] = _Held(job, extend_s, limit_s)
        self._slots.add(jobs, now_s)
        self._arm_sweep()

    def _collect(self) -> None:
        """On the loop: the jobs the slots finished go to the settler."""
        finished = self._slots.take_finished()
        for job, outcome in finished:
            held = self._held.pop(job.token, None)
            if held is None:
                continue  # released meanwhile (a stop that did not wait)
            if held.extending is not None:
                held.extending.cancel()
            self._settler.add(job, outcome)
        if finished:
            self._prefetching = True
            self._wake.set()
            self._collected.set()

    # --- the clock: prefetched jobs that waited too long, leases to extend,
    # --- jobs past their time limit --------------------------------------------

    def _arm_sweep(self) -> None:
        """A timer for the first job that must be released, extended or stopped."""
        due_s = min(
            (
                min(h.extend_s if h.extending is None else math.inf, h.limit_s)
                for h in self._held.values()
            ),
            default=math.inf,
        )
        release_s = self._slots.next_release_s()
        if release_s is not None:
            due_s = min(due_s, release_s)
        timer = self._sweep_timer
        if timer is not None and (due_s == math.inf or timer.when() > due_s):
            timer.cancel()
            self._sweep_timer = timer = None
        if due_s != math.inf and timer is None:
            self._sweep_timer = asyncio.get_running_loop().call_at(due_s, self._sweep)

    def _sweep(self) -> None:
        """Release what waited for a slot as long as its lease allows (no more
        is leased ahead until a slot frees); extend, from now on, the lease of
        a job running for half its ttl (one still waiting was released first)."""
        self._sweep_timer = None
        now_s = asyncio.get_running_loop().time()
        due = self._slots.due(now_s)
        for job in due:
            del self._held[job.token]
        if due:
            self._prefetching = False
            self._give_back(due, "waited for a free slot as long as its lease allows")
        for held in list(self._held.values()):
            if held.limit_s <= now_s:
                self._time_out(held)
            elif held.extending is None and held.extend_s <= now_s:
                extending = keep_extended(self._link, held.job, first_delay_s=0.0)
                held.extending = asyncio.get_running_loop().create_task(extending)
        self._arm_sweep()

    def _time_out(self, held: "_Held") -> None:
        """The job ran to its time limit: no more extending, its attempt
        failed with ``TimeLimitExceeded`` (the broker fails it too, at the
        same limit; whichever comes first counts), its slot given to a new
        thread, its run stopped as far as its kind allows (``_runs``)."""
        job = held.job
        del self._held[job.token]
        if held.extending is not None:
            held.extending.cancel()
        thread_id = self._slots.abandon(job.token)
        self._runs.interrupt(job, thread_id)
        limit_s = (job.time_limit_ms or 0) / 1000
        message = f"the attempt ran past its time limit of {limit_s:g} s"
        self._settler.add(job, Failure(ErrorInfo(type=TIME_LIMIT_EXCEEDED, message=message)))
        log.warning(
            "job %s (type %s) ran past its time limit of %g s: failed, its slot freed "
            "(%d handler threads still running past their limit)",
            job.id,
            job.type,
            limit_s,
            self._slots.stuck,
        )
        self._prefetching = True
        self._wake.set()

    def _stuck(self) -> int:
        return self.stuck_threads

    @property
    def stuck_threads(self) -> int:
        """Threads still running a handler past its job's time limit: their
        slots were given to new threads (a thread cannot be stopped)."""
        return self._slots.stuck if hasattr(self, "_slots") else 0

    def _give_back(self, jobs: list[Job], why: str) -> None:
        if jobs:
            task = asyncio.get_running_loop().create_task(self._release(jobs, why))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # --- shutting down ---------------------------------------------------------

    async def _drain(self) -> None:
        """Wait for a fetch in flight and the running jobs, then for their
        outcomes to be answered, until done, the grace ends or ``now``."""
        loop = asyncio.get_running_loop()
        deadline_s = loop.time() + self.grace_s
        hard = asyncio.ensure_future(self._hard.wait())
        flushing: asyncio.Future[None] | None = None
        try:
            while not self._hard.is_set():
                remaining_s = deadline_s - loop.time()
                awaited: set[asyncio.Future[Any]]
                idle = not self._held and not self._tasks and self._settler.idle
                if idle:
                    return  # a fetch still held ends when the connection closes
                if not self._fetcher.done():
                    awaited = {self._fetcher}
                elif self._held:
                    self._collected.clear()
                    awaited = {asyncio.ensure_future(self._collected.wait())}
                elif self._tasks:
                    awaited = set(self._tasks)
                elif not self._settler.idle:
                    if flushing is None or flushing.done():
                        flushing = asyncio.ensure_future(self._settler.flush())
                    awaited = {flushing}
                else:
                    return
                if remaining_s <= 0:
                    return
                await asyncio.wait(
                    {*awaited, hard}, timeout=remaining_s, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            hard.cancel()
            if flushing is not None:
                flushing.cancel()

    async def _finish(self) -> None:
        """Release what is still running, then close the connection and the threads."""
        self._slots.close()
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
        unfinished = [held.job for held in self._held.values()]
        for held in self._held.values():
            if held.extending is not None:
                held.extending.cancel()
        self._runs.cancel()  # async handlers still running: their jobs are released below
        self._held.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        unsettled = self._settler.unanswered
        self._settler.cancel()
        if unsettled:
            log.warning("%d job outcomes not answered by the broker before the end", unsettled)
        if unfinished:
            await self._release(unfinished, "still running at shutdown")
        self.unfinished = len(unfinished)
        await asyncio.to_thread(self._runs.children.close, kill=True)  # their jobs are released
        self._heartbeat.cancel()  # beats went on while draining: the leases stayed ours
        await asyncio.gather(self._heartbeat, return_exceptions=True)
        # Closing ends a held fetch, which then leases nothing. Jobs in a reply that
        # crossed the close are logged; the broker frees them once this process is gone.
        await self._link.close()
        await asyncio.wait({self._fetcher}, timeout=self.timeout_s)
        self._fetcher.cancel()
        self._loop = None

    async def _release(self, jobs: list[Job], why: str) -> None:
        if not jobs:
            return
        client = self._link.current
        if client is None:
            log.warning(
                "%d jobs %s not released: no connection (the broker frees them)", len(jobs), why
            )
            return
        results = await asyncio.gather(
            *(client.release(job) for job in jobs), return_exceptions=True
        )
        for job, result in zip(jobs, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("could not release job %s (%s): %s", job.id, why, result)
            else:
                log.info("released job %s (%s)", job.id, why)


@dataclass(slots=True)
class _Held:
    """A job this worker holds: waiting in a slot's queue or running."""

    job: Job
    extend_s: float  # when its lease is first extended, if still running (loop time)
    limit_s: float = math.inf  # when it reaches its time limit (loop time)
    extending: "asyncio.Task[None] | None" = None


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
