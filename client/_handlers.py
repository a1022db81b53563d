"""Job handlers: how they are registered, and how one is called for a job.

Calling convention, by the type of the job's decoded args: a list is spread
as positional arguments (``fn(*args)``), a dict as keyword arguments
(``fn(**args)``), anything else is passed as the one argument (``fn(args)``).
A job pushed without args has an empty list, so its handler is called as
``fn()``. The return value is ignored; raising fails the attempt.

Handlers are plain functions: the worker runs them in threads. Coroutine
functions are refused at registration instead of silently never awaited.
"""

import inspect
from collections.abc import Callable, MutableMapping
from typing import Any, TypeVar

from protocol.messages import ErrorInfo

from ._types import Job, error_info

Handler = Callable[..., Any]
F = TypeVar("F", bound=Handler)

registry: dict[str, Handler] = {}
"""Handlers registered with the module-level ``client.handler``: what ``leash worker`` runs."""


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


def invoke(fn: Handler, job: Job) -> ErrorInfo | None:
    """Run ``fn`` for ``job`` (in a worker thread); the error to report, or None."""
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
    return None


def unknown_type_error(job: Job, known: list[str]) -> ErrorInfo:
    names = ", ".join(repr(name) for name in sorted(known)) or "none"
    message = f"no handler for job type {job.type!r} on this worker (it has: {names})"
    return error_info(ErrorInfo(type="leash.UnknownJobType", message=message))
