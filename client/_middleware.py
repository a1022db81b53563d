"""Middleware: hooks around each job a Worker runs and around the Worker's life.

A middleware is an object with any of these methods (``Middleware`` has
them all, doing nothing: subclass it and write the ones you need)::

    on_start(worker)          the worker starts, before it fetches (on its loop)
    on_stop(worker)           the worker has stopped (on its loop)
    before(job)               a job's handler is about to run
    after(job, result)        it returned ``result``: the job is acked
    on_failure(job, exc)      it raised ``exc`` (a Retry, Discard or Snooze too)
    on_retry(job, exc)        ... and the job will run again (a Retry; the backoff)
    on_death(job, exc)        ... and the job is dead (Discard, give_up_on, last attempt)

``Worker(middleware=[a, b])``: ``before`` and ``on_start`` are called in
that order (a, then b), the others in reverse (b, then a), so each
middleware's "after" sees the job as its "before" left it. The job hooks
run in the thread (or, for an async handler, the task) that runs the
handler, so a context variable or a tracing span set in ``before`` is the
handler's too; for a handler in a child process they run in the parent,
around it. A ``Snooze`` calls ``on_failure`` only (no attempt is counted).
``on_death`` is the worker's reading (the broker has the last word: an
operator may have raised ``max_attempts``); the broker's answers are logged.

Errors of a middleware: one raised by ``before`` fails the attempt as the
handler's own error would (the handler does not run, the hooks of the
middlewares whose ``before`` ran are called as for a failure); one raised by
a hook after the handler is logged, with its traceback, and changes nothing:
the job's outcome was decided by the handler, and it is sent once. One
raised by ``on_start`` stops ``run`` before it fetches (it raises it); one
raised by ``on_stop`` is logged.

Why hooks and not one ``__call__(job, call_next)``: a wrapper cannot tell a
retry from a death (the outcome is decided after the handler returns,
from the job's attempts and the handler's policy), and Celery's signals,
dramatiq's middleware and arq's ``on_job_start``/``on_job_end`` all name
these moments as separate hooks, so their users port a middleware one
method at a time.
"""

import logging
from collections.abc import Sequence
from typing import Any

from ._control import Failure, Outcome
from ._types import Job

log = logging.getLogger("leash.worker")


class Middleware:
    """Every hook, doing nothing: subclass it and write the ones you need."""

    def on_start(self, worker: Any) -> None:
        """The worker starts (on its loop, before it fetches)."""

    def on_stop(self, worker: Any) -> None:
        """The worker has stopped (on its loop)."""

    def before(self, job: Job) -> None:
        """The job's handler is about to run."""

    def after(self, job: Job, result: Any) -> None:
        """The handler returned ``result``; the job is acked."""

    def on_failure(self, job: Job, exc: BaseException) -> None:
        """The handler raised ``exc``."""

    def on_retry(self, job: Job, exc: BaseException) -> None:
        """The handler raised ``exc`` and the job will run again."""

    def on_death(self, job: Job, exc: BaseException) -> None:
        """The handler raised ``exc`` and the job is dead."""


def hook(middleware: object, name: str, *args: Any) -> bool:
    """Call ``middleware.name(*args)`` if it has it; log what it raises (False)."""
    method = getattr(middleware, name, None)
    if method is None:
        return True
    try:
        method(*args)
    except Exception:
        log.exception("middleware %r raised in %s: logged, the job goes on", middleware, name)
        return False
    return True


class Chain:
    """The middlewares of one job's run, in order."""

    def __init__(self, middleware: Sequence[object]) -> None:
        self.middleware = tuple(middleware)

    def __bool__(self) -> bool:
        return bool(self.middleware)

    def before(self, job: Job, ran: list[object]) -> None:
        """Call each ``before`` in order, adding each middleware whose
        ``before`` returned to ``ran`` (raises what one raised)."""
        for each in self.middleware:
            method = getattr(each, "before", None)
            if method is not None:
                method(job)
            ran.append(each)

    @staticmethod
    def after(
        job: Job, ran: list[object], result: Any, exc: BaseException | None, outcome: Outcome
    ) -> None:
        """The hooks after the handler, for the middlewares whose ``before`` ran."""
        for each in reversed(ran):
            if exc is None:
                hook(each, "after", job, result)
                continue
            hook(each, "on_failure", job, exc)
            if isinstance(outcome, Failure):
                last = outcome.dead or job.attempt >= job.max_attempts
                hook(each, "on_death" if last else "on_retry", job, exc)

    def on_start(self, worker: Any) -> None:
        for each in self.middleware:
            method = getattr(each, "on_start", None)
            if method is not None:
                method(worker)

    def on_stop(self, worker: Any) -> None:
        for each in reversed(self.middleware):
            hook(each, "on_stop", worker)


NO_MIDDLEWARE = Chain(())
