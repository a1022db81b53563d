"""Job handlers: how they are registered, and how one is called for a job.

Calling convention, by the type of the job's decoded args: a list is spread
as positional arguments (``fn(*args)``), a dict as keyword arguments
(``fn(**args)``), anything else is passed as the one argument (``fn(args)``).
A job pushed without args has an empty list, so its handler is called as
``fn()``. The return value is ignored; raising fails the attempt, or steers
the job as ``leash.client._control`` says (``Retry``, ``Discard``,
``Snooze``, and the handler's ``retry_on`` / ``give_up_on``).

Plain functions run in the worker's threads. While one runs,
``current_job()`` in its thread is the ``Job`` it runs for, and
``add_to_batch(...)`` pushes a job into that job's batch through the
worker's connection, presenting the running job's lease (so a committed
batch takes it, and cannot finish before the handler returns).
``report_progress(percent, message)`` reports how far the running job is
(and extends its lease), from a plain handler in a thread (it waits for
the broker's answer) or an async one (sent in the background); a handler
in a child process cannot (``RuntimeError``). Coroutine functions
(``async def``) run on the worker's event loop instead
(``leash.client._aio_jobs``).

Each run is logged on ``leash.worker`` (``leash.client._joblog``).
"""

import inspect
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from leash.protocol import argtypes, limits
from leash.protocol.messages import ErrorInfo, JobSpec

from ._control import DEFAULT_POLICY, ClassesOption, Outcome, Policy, classes, outcome_of
from ._joblog import DEFAULT_WATCH, Watch
from ._middleware import NO_MIDDLEWARE, Chain
from ._types import Job, error_info, job_spec

Handler = Callable[..., Any]
F = TypeVar("F", bound=Handler)


Pool = Literal["threads", "processes"]  # where a plain handler runs
POOLS: tuple[Pool, ...] = ("threads", "processes")


@dataclass(frozen=True, slots=True)
class Registered:
    """A handler and how it runs: its exception policy, its pool (None: the
    worker's), and whether it is a coroutine function (run on the loop)."""

    fn: Handler
    policy: Policy = DEFAULT_POLICY
    pool: Pool | None = None

    def __post_init__(self) -> None:
        if self.pool is not None and self.pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)}, not {self.pool!r}")
        if self.pool == "processes" and self.is_async:
            raise TypeError("an async handler runs on the worker's loop, not in a process pool")

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)


registry: dict[str, Registered] = {}
"""Handlers registered with the module-level ``leash.client.handler``: what
``leash worker`` runs."""


def registered(
    fn: Handler | Registered,
    retry_on: ClassesOption = (),
    give_up_on: ClassesOption = (),
    pool: Pool | None = None,
) -> Registered:
    if isinstance(fn, Registered):
        return fn
    policy = Policy(classes(retry_on, "retry_on"), classes(give_up_on, "give_up_on"))
    return Registered(fn, policy, pool)


def add_handler(
    handlers: MutableMapping[str, Registered], type: str, fn: Handler | Registered
) -> None:
    entry = registered(fn)
    if not callable(entry.fn):
        raise TypeError(f"the handler for {type!r} is not callable: {entry.fn!r}")
    existing = handlers.get(type)
    if existing is not None and existing != entry:
        raise ValueError(f"job type {type!r} already has a handler: {existing.fn!r}")
    handlers[type] = entry


def functions(handlers: Mapping[str, Registered]) -> dict[str, Handler]:
    return {type: entry.fn for type, entry in handlers.items()}


def handler(
    type: str | None = None,
    *,
    retry_on: ClassesOption = (),
    give_up_on: ClassesOption = (),
    pool: Pool | None = None,
) -> Callable[[F], F]:
    """Register the decorated function for job ``type`` (default: the function's name).

    ``give_up_on``: exceptions that send the job to the dead set at once;
    ``retry_on``: if given, the only exceptions retried (any other gives
    up). ``pool``: ``"processes"`` runs it in a child process
    (``leash.client._procs``), ``"threads"`` in a thread; None: as the
    worker says. The handler goes to the default registry, which ``leash
    worker MODULE`` runs after importing MODULE. A ``Worker`` made in code
    has its own ``Worker.handler`` instead.
    """

    def decorate(fn: F) -> F:
        entry = registered(fn, retry_on, give_up_on, pool)
        add_handler(registry, type if type is not None else fn.__name__, entry)
        return fn

    return decorate


Pusher = Callable[[JobSpec, Job], str]  # push one spec presenting the job's lease: its id
Reporter = Callable[[Job, int, str], None]  # send a progress report for the job's lease
_running = threading.local()  # .job, .push and .report while a handler runs in this thread
_running_task: ContextVar[Job | None] = ContextVar("leash_job", default=None)  # async handlers
_reporting_task: ContextVar[Reporter | None] = ContextVar("leash_report", default=None)


def current_job() -> Job | None:
    """The job the handler running in this thread (or task, for an async
    handler) was called for (None outside one)."""
    job: Job | None = getattr(_running, "job", None)
    return job if job is not None else _running_task.get()


def add_to_batch(type: str, args: Any = None, **options: Any) -> str:
    """From a handler: add a job to the running job's batch; return its id.

    ``options`` are ``push``'s (queue, priority, delay_ms, ...). Raises
    ``RuntimeError`` outside a handler run by a ``Worker``, ``ValueError`` if
    the running job is not a member of a batch, and the broker's refusal
    (``StaleLease`` once the lease is lost) like any push.
    """
    job, push = current_job(), getattr(_running, "push", None)
    if job is not None and push is None:
        raise RuntimeError("add_to_batch is for plain handlers: an async one pushes with a client")
    if job is None or push is None:
        raise RuntimeError("add_to_batch is for handlers that a Worker runs")
    if job.batch is None:
        raise ValueError(f"job {job.id} is not a member of a batch")
    pushed: str = push(job_spec(type, args, batch=job.batch, **options), job)
    return pushed


def report_progress(percent: int, message: str = "") -> None:
    """From a handler: report how far the running job is, ``percent`` from 0
    to 100 and a short ``message`` (at most 200 characters); the broker keeps
    it on the job (``leash job``, the busy view, the dashboard) and extends
    the lease as ``extend`` does.

    In a plain handler it waits for the broker's answer (raising its
    refusal, ``StaleLease`` once the lease is lost); in an async one the
    report is sent in the background (a refusal is logged). Raises
    ``RuntimeError`` outside a handler run by a ``Worker``, and in a
    handler that runs in a child process (``pool="processes"``);
    ``ValueError`` for a percent or message out of bounds.
    """
    if not 0 <= percent <= 100:
        raise ValueError(f"percent must be from 0 to 100, not {percent!r}")
    if len(message) > limits.PROGRESS_MESSAGE_MAX_CHARS:
        raise ValueError(
            f"a progress message is at most {limits.PROGRESS_MESSAGE_MAX_CHARS} characters"
        )
    job = current_job()
    report = getattr(_running, "report", None) if getattr(_running, "job", None) else None
    report = report or _reporting_task.get()
    if job is None or report is None:
        raise RuntimeError(
            "report_progress is for handlers that a Worker runs in its threads or on its loop"
        )
    report(job, percent, message)


Runner = Callable[[Handler, Any], Any]  # calls a handler with a job's args


def invoke(
    entry: Registered | Handler,
    job: Job,
    push: Pusher | None = None,
    run: "Runner | None" = None,
    chain: Chain = NO_MIDDLEWARE,
    watch: Watch = DEFAULT_WATCH,
    report: Reporter | None = None,
) -> Outcome:
    """Run a plain handler for ``job`` (in a worker thread, or through
    ``run``: in a child process), with the middleware: what it comes to,
    logged and counted (``watch``)."""
    entry = registered(entry)
    _running.job, _running.push, _running.report = job, push, report
    ran: list[object] = []
    watch.started(job)
    started_s = time.monotonic()
    try:
        chain.before(job, ran)
        result = (run or call)(entry.fn, job.args)
    except BaseException as exc:  # a thread boundary: whatever the handler raises fails the job
        return _ended(entry, job, started_s, chain, ran, watch, None, _from_handler(exc))
    else:
        return _ended(entry, job, started_s, chain, ran, watch, result, None)
    finally:
        _running.job = _running.push = _running.report = None


async def invoke_async(
    entry: Registered,
    job: Job,
    chain: Chain = NO_MIDDLEWARE,
    watch: Watch = DEFAULT_WATCH,
    report: Reporter | None = None,
) -> Outcome:
    """Run a coroutine handler for ``job`` (on the worker's loop), with the
    middleware: what it comes to, logged and counted. A cancellation (the
    end of a shutdown's grace) is not an outcome: it goes on up, and the
    worker releases the job."""
    _running_task.set(job)  # the task's own context: no reset needed
    _reporting_task.set(report)
    ran: list[object] = []
    watch.started(job)
    started_s = time.monotonic()
    try:
        chain.before(job, ran)
        result = await call(entry.fn, job.args)
    except Exception as exc:
        return _ended(entry, job, started_s, chain, ran, watch, None, _from_handler(exc))
    return _ended(entry, job, started_s, chain, ran, watch, result, None)


def _from_handler(exc: BaseException) -> BaseException:
    """``exc`` with its traceback starting at the handler's frame: the frames
    of this module (invoke, call) dropped, but the last."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return exc.with_traceback(tb)


def _ended(
    entry: Registered,
    job: Job,
    started_s: float,
    chain: Chain,
    ran: list[object],
    watch: Watch,
    result: Any,
    exc: BaseException | None,
) -> Outcome:
    """What the run comes to: logged and counted, then the middleware told
    (in the handler's thread)."""
    if exc is None and job.keep_result:  # its ack carries the result, packed
        try:
            job.result = argtypes.pack(result)
        except TypeError as unpackable:  # a type that would not come back as itself
            exc = unpackable
    outcome = None if exc is None else outcome_of(exc, entry.policy)
    watch.finished(job, outcome, time.monotonic() - started_s, exc)
    if ran:
        chain.after(job, ran, result, exc, outcome)
    return outcome


def call(fn: Handler, args: Any) -> Any:
    """``fn`` called with a job's args, by the calling convention."""
    if isinstance(args, list):
        return fn(*args)
    if isinstance(args, dict):
        return fn(**args)
    return fn(args)


def unknown_type_error(job: Job, known: list[str]) -> ErrorInfo:
    names = ", ".join(repr(name) for name in sorted(known)) or "none"
    message = f"no handler for job type {job.type!r} on this worker (it has: {names})"
    return error_info(ErrorInfo(type="leash.UnknownJobType", message=message))
