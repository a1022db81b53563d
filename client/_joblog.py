"""Visible work: one log record per job a worker ran, on the ``leash.worker`` logger.

- done: DEBUG, ``job ID (TYPE) attempt N/M done in 0.012 s``;
- snoozed (``Snooze``): INFO;
- failed and to be retried: WARNING, with the traceback;
- failed for the last time (out of attempts, ``Discard``, a ``give_up_on``
  exception): ERROR, with the traceback.

Each record carries the job as attributes too (``job_id``, ``job_type``,
``job_attempt``, and ``duration_s``), for a JSON formatter or a filter. The
traceback is the one the broker keeps as the attempt's ``last_error``
backtrace. The broker's answer to the outcome (``retrying``, ``dead``, a
lost lease) is logged when it comes (``leash.client._settle``).

The job context of log records (``leash.middleware.LoggingContext``) lives
here too: ``install_context`` wraps the log record factory so that every
record gets ``job_id``, ``job_type`` and ``job_attempt`` from
``current_job_context`` (``"-"`` outside a job); once it is installed, this
module's records get their job that way as well (a record may not be given
an attribute its factory set).
"""

import logging
import threading
from contextvars import ContextVar
from typing import Any

from ._control import Failure, Outcome, Snoozed
from ._types import Job

log = logging.getLogger("leash.worker")

NO_JOB = "-"  # the job attributes of a record made outside a job
current_job_context: ContextVar[Job | None] = ContextVar("leash_log_job", default=None)
_installed = False
_lock = threading.Lock()


def install_context() -> None:
    """Wrap the log record factory, once per process: every record gets the job attributes."""
    global _installed
    with _lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def record(*args: Any, **kwargs: Any) -> logging.LogRecord:
            made = previous(*args, **kwargs)
            job = current_job_context.get()
            made.job_id = job.id if job is not None else NO_JOB
            made.job_type = job.type if job is not None else NO_JOB
            made.job_attempt = job.attempt if job is not None else NO_JOB
            return made

        logging.setLogRecordFactory(record)
        _installed = True


def finished(
    job: Job, outcome: Outcome, duration_s: float, exc: BaseException | None = None
) -> None:
    """Log how a run of ``job`` ended."""
    name = f"job {job.id} ({job.type}) attempt {job.attempt}/{job.max_attempts}"
    match outcome:
        case None:
            if log.isEnabledFor(logging.DEBUG):
                _log(job, logging.DEBUG, duration_s, None, "%s done in %.3f s", name, duration_s)
        case Snoozed(delay_ms=delay_ms):
            message = "%s snoozed for %g s after %.3f s"
            _log(job, logging.INFO, duration_s, None, message, name, delay_ms / 1000, duration_s)
        case Failure(error=error, retry_in_ms=retry_in_ms, dead=dead):
            last = dead or job.attempt >= job.max_attempts
            then = "giving up" if last else _when(retry_in_ms)
            why = f"{error.type}: {error.message}" if error.message else error.type
            level = logging.ERROR if last else logging.WARNING
            message = "%s failed after %.3f s, %s: %s"
            _log(job, level, duration_s, exc, message, name, duration_s, then, why)


def _log(job: Job, level: int, duration_s: float, exc: BaseException | None, *args: object) -> None:
    if not log.isEnabledFor(level):
        return
    extra: dict[str, object] = {"duration_s": duration_s}
    if _installed:  # the factory sets the job's attributes: from the context, for this record
        token = current_job_context.set(job)
        try:
            log.log(level, *args, exc_info=exc, extra=extra)
        finally:
            current_job_context.reset(token)
        return
    extra.update(job_id=job.id, job_type=job.type, job_attempt=job.attempt)
    log.log(level, *args, exc_info=exc, extra=extra)


def _when(retry_in_ms: int | None) -> str:
    if retry_in_ms is None:
        return "retrying after its backoff"
    return f"retrying in {retry_in_ms / 1000:g} s"
