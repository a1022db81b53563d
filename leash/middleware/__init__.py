"""Middleware for a ``Worker``: hooks around each job and around the worker's life.

    from leash import Worker
    from leash.middleware import LoggingContext, Middleware

    class ResetDatabase(Middleware):
        def before(self, job):
            db.close_old_connections()

    worker = Worker(middleware=[LoggingContext(), ResetDatabase()])

The hooks, their order and what an error in one does are in
``leash.client._middleware`` (``Middleware`` has them all, doing nothing).
Shipped here:

- ``LoggingContext``: the running job's id, type and attempt on every log
  record made while its handler runs (``%(job_id)s``, ``%(job_type)s``,
  ``%(job_attempt)s`` in a format, or the fields of a JSON formatter);
- ``leash.middleware.otel.OpenTelemetry``: a span per job (with the
  ``otel`` extra: ``pip install 'leash-broker[otel]'``).
"""

from leash.client import _joblog
from leash.client._middleware import Middleware
from leash.client._types import Job

__all__ = ["LoggingContext", "Middleware"]


class LoggingContext(Middleware):
    """Adds ``job_id``, ``job_type`` and ``job_attempt`` to every log record.

    While a handler runs (in its thread, or its task for an async handler)
    they are its job's; elsewhere they are ``"-"``. The attributes are set by
    a log record factory (``logging.setLogRecordFactory``, wrapping the one
    there was) put in place when the first ``LoggingContext`` is made and
    kept for the life of the process, so every logger and handler sees them,
    the application's own included, and a format that names them works for
    every record, before and after the worker runs too.
    """

    def __init__(self) -> None:
        _joblog.install_context()

    def before(self, job: Job) -> None:
        _joblog.current_job_context.set(job)

    def after(self, job: Job, result: object) -> None:
        _joblog.current_job_context.set(None)

    def on_failure(self, job: Job, exc: BaseException) -> None:
        # The hooks after it (on_retry, on_death) are called outside the job's context.
        _joblog.current_job_context.set(None)
