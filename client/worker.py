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

How a running worker leases, runs, settles and keeps its jobs (theory of
operation, threads, liveness, time limits) is in ``leash.client._running``.

Shutdown: ``stop()``, SIGTERM / SIGINT under ``run()``, or ``terminate``
from the broker, stops fetching. An idle worker returns at once: closing its
connection ends the held fetch, which then leases nothing. Otherwise
prefetched jobs are released unrun; running handlers get ``grace_s`` to
finish and settle, and the worker returns as soon as their outcomes are
answered: a fetch the broker holds is ended at the stop's start
(``cancel``; with a broker that predates it, closing the connection ends
it), and jobs a fetch in flight delivers meanwhile are released unrun
too; then every job still running is released and ``run`` returns (async
handlers still running are cancelled, child processes still running are
killed). A second signal, or
``stop(now=True)``, skips the grace. Threads cannot be killed:
``unfinished`` counts handlers still running when ``run`` returned. When
``run`` returns, the signal handlers there were before it are back
(``leash.client._signals``).
"""

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence

from leash.protocol import limits

from . import _signals
from ._control import ClassesOption
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
from ._keepalive import Heartbeat
from ._link import Link
from ._metrics import JobFigures, MetricsEndpoint, WorkerCollector
from ._middleware import Chain
from ._running import Running
from ._runs import Runs
from ._security import KeyOption, TlsOption, as_key, as_tls
from ._settle import Settler
from ._slots import Slots
from ._unknown import checked_policy
from ._url import DEFAULT_HOST, DEFAULT_PORT, Endpoint, parse_url
from .aio import AsyncClient

PREFETCH_MAX = 1_000  # jobs leased beyond the free slots (the default: one a slot)


class Worker(Running):
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
        prefetch: int | None = None,
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
        self._prefetch_given = prefetch  # None: follows the concurrency (with_options)
        if prefetch is None:
            prefetch = min(concurrency, PREFETCH_MAX)  # each slot's next job, leased ahead
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
        self._loop = None

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
            prefetch=prefetch if prefetch is not None else self._prefetch_given,
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
        self._collected = asyncio.Event()
        self._held = {}
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
        self._prefetching = True
        self._sweep_timer = None
        self._settler = Settler(self._link)
        self._tasks = set()
        self._held_fetch = None
        self._releasing_fetched = False
        self._fatal = None
        self.process_state = "ok"
        self._may_fetch = asyncio.Event()
        self._may_fetch.set()
        self._fetcher = asyncio.create_task(self._fetch_loop(), name="leash-fetch")
        self._fetcher.add_done_callback(self._fetcher_done)
        ran = lambda: self.figures.report(limits.BEAT_TYPES_MAX)  # noqa: E731
        heartbeat = Heartbeat(self._link, self._on_process_state, ran)
        self._heartbeat = asyncio.create_task(heartbeat.run(), name="leash-heartbeat")

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


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
