"""Job handlers: how they are registered, and how one is called for a job.

Calling convention, by the type of the job's decoded args: a list is spread
as positional arguments (``fn(*args)``), a dict as keyword arguments
(``fn(**args)``), anything else is passed as the one argument (``fn(args)``).
A job pushed without args has an empty list, so its handler is called as
``fn()``. The return value is ignored; raising fails the attempt.

Handlers are plain functions: the worker runs them in threads. Coroutine
functions are refused at registration instead of silently never awaited.
While a handler runs, ``current_job()`` in its thread is the ``Job`` it runs
for, and ``add_to_batch(...)`` pushes a job into that job's batch through
the worker's connection, presenting the running job's lease (so a committed
batch takes it, and cannot finish before the handler returns).
"""

import inspect
import threading
from collections.abc import Callable, MutableMapping
from typing import Any, TypeVar

from leash.protocol.messages import ErrorInfo, JobSpec

from ._types import Job, error_info, job_spec

Handler = Callable[..., Any]
F = TypeVar("F", bound=Handler)

registry: dict[str, Handler] = {}
"""Handlers registered with the module-level ``leash.client.handler``: what
``leash worker`` runs."""


def add_handler(handlers: MutableMapping[str, Handler], type: str, fn: Handler) -> None:
    if not callable(fn):
        raise TypeError(f"the handler for {type!r} is not callable: {fn!r}")
    if inspect.iscoroutinefunction(fn):
        raise TypeError(
            f"the handler for {type!r} is a coroutine function; handlers run in threads, "
            "so write a plain function (it may call asyncio.run itself)"
        )
    existing = handlers.get(type)
    if existing is not None and existing is not fn:
        raise ValueError(f"job type {type!r} already has a handler: {existing!r}")
    handlers[type] = fn


def handler(type: str | None = None) -> Callable[[F], F]:
    """Register the decorated function for job ``type`` (default: the function's name).

    The handler goes to the default registry, which ``leash worker MODULE``
    runs after importing MODULE. A ``Worker`` made in code has its own
    ``Worker.handler`` instead.
    """

    def decorate(fn: F) -> F:
        add_handler(registry, type if type is not None else fn.__name__, fn)
        return fn

    return decorate


Pusher = Callable[[JobSpec, Job], str]  # push one spec presenting the job's lease: its id
_running = threading.local()  # .job and .push while a handler runs in this thread


def current_job() -> Job | None:
    """The job the handler running in this thread was called for (None outside one)."""
    job: Job | None = getattr(_running, "job", None)
    return job


def add_to_batch(type: str, args: Any = None, **options: Any) -> str:
    """From a handler: add a job to the running job's batch; return its id.

    ``options`` are ``push``'s (queue, priority, delay_ms, ...). Raises
    ``RuntimeError`` outside a handler run by a ``Worker``, ``ValueError`` if
    the running job is not a member of a batch, and the broker's refusal
    (``StaleLease`` once the lease is lost) like any push.
    """
    job, push = current_job(), getattr(_running, "push", None)
    if job is None or push is None:
        raise RuntimeError("add_to_batch is for handlers that a Worker runs")
    if job.batch is None:
        raise ValueError(f"job {job.id} is not a member of a batch")
    pushed: str = push(job_spec(type, args, batch=job.batch, **options), job)
    return pushed


def invoke(fn: Handler, job: Job, push: Pusher | None = None) -> ErrorInfo | None:
    """Run ``fn`` for ``job`` (in a worker thread); the error to report, or None."""
    _running.job, _running.push = job, push
    try:
        args = job.args
        if isinstance(args, list):
            fn(*args)
        elif isinstance(args, dict):
            fn(**args)
        else:
            fn(args)
    except BaseException as exc:  # a thread boundary: whatever the handler raises fails the job
        if exc.__traceback__ is not None and exc.__traceback__.tb_next is not None:
            exc = exc.with_traceback(exc.__traceback__.tb_next)  # drop this frame
        return error_info(exc)
    finally:
        _running.job = _running.push = None
    return None


def unknown_type_error(job: Job, known: list[str]) -> ErrorInfo:
    names = ", ".join(repr(name) for name in sorted(known)) or "none"
    message = f"no handler for job type {job.type!r} on this worker (it has: {names})"
    return error_info(ErrorInfo(type="leash.UnknownJobType", message=message))
