"""Visible work: a log line as each job a worker runs starts and ends, on the
``leash.worker`` logger, and its count and duration in the worker's metrics.

- started: ``job ID (TYPE) attempt N/M started``;
- done: ``job ID (TYPE) attempt N/M done in 0.012 s``;
- snoozed (``Snooze``): ``... snoozed for 5 s after 0.012 s``;
- failed and to be retried: WARNING, with the traceback;
- failed for the last time (out of attempts, ``Discard``, a ``give_up_on``
  exception): ERROR, with the traceback.

The start, done and snoozed lines are at INFO, as Celery, RQ and Sidekiq
log each job, unless the worker's ``job_log`` says ``"debug"`` (DEBUG) or
``"off"`` (not logged); failures are logged at WARNING or ERROR whatever it
says: they are what an operator must see.

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
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from leash._logs import NO_JOB

from ._control import Failure, Outcome, Snoozed
from ._types import Job

log = logging.getLogger("leash.worker")

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


JobLog = Literal["info", "debug", "off"]  # the level of the start, done and snoozed lines
JOB_LOGS: tuple[JobLog, ...] = ("info", "debug", "off")
_LEVELS: dict[str, int | None] = {"info": logging.INFO, "debug": logging.DEBUG, "off": None}

# What a run came to, as the worker's metrics count it: its "outcome" label.
JobOutcome = Literal["done", "retrying", "dead", "snoozed", "unknown"]


class Counts(Protocol):
    """Where a worker counts the runs it watched (``leash.client._metrics``)."""

    def observe(self, job_type: str, outcome: JobOutcome, duration_s: float | None) -> None: ...


def checked_job_log(value: str) -> JobLog:
    for known in JOB_LOGS:
        if value == known:
            return known
    raise ValueError(f"job_log must be one of {', '.join(JOB_LOGS)}, not {value!r}")


@dataclass(frozen=True, slots=True)
class Watch:
    """What a worker does as each job starts and ends: log it, at ``job_log``'s
    level, and count it in ``counts`` (if any)."""

    job_log: JobLog = "info"
    counts: Counts | None = None

    def started(self, job: Job) -> None:
        level = _LEVELS[self.job_log]
        if level is not None and log.isEnabledFor(level):
            _log(job, level, None, None, "%s started", _name(job))

    def unknown_type(self, job: Job) -> None:
        """Count a job of a type with no handler here (it ran nothing: no duration)."""
        if self.counts is not None:
            self.counts.observe(job.type, "unknown", None)

    def finished(
        self, job: Job, outcome: Outcome, duration_s: float, exc: BaseException | None = None
    ) -> None:
        """Log and count how a run of ``job`` ended."""
        ended = _ended(job, outcome)
        if self.counts is not None:
            self.counts.observe(job.type, ended, duration_s)
        quiet = _LEVELS[self.job_log]
        match outcome:
            case None:
                if quiet is not None and log.isEnabledFor(quiet):
                    message = "%s done in %.3f s"
                    _log(job, quiet, duration_s, None, message, _name(job), duration_s)
            case Snoozed(delay_ms=delay_ms):
                if quiet is not None and log.isEnabledFor(quiet):
                    message = "%s snoozed for %g s after %.3f s"
                    args = (_name(job), delay_ms / 1000, duration_s)
                    _log(job, quiet, duration_s, None, message, *args)
            case Failure(error=error, retry_in_ms=retry_in_ms):
                then = "giving up" if ended == "dead" else _when(retry_in_ms)
                why = f"{error.type}: {error.message}" if error.message else error.type
                level = logging.ERROR if ended == "dead" else logging.WARNING
                message = "%s failed after %.3f s, %s: %s"
                _log(job, level, duration_s, exc, message, _name(job), duration_s, then, why)


DEFAULT_WATCH = Watch()


def _ended(job: Job, outcome: Outcome) -> JobOutcome:
    match outcome:
        case None:
            return "done"
        case Snoozed():
            return "snoozed"
        case Failure(dead=dead):
            return "dead" if dead or job.attempt >= job.max_attempts else "retrying"


def _name(job: Job) -> str:
    return f"job {job.id} ({job.type}) attempt {job.attempt}/{job.max_attempts}"


def _log(
    job: Job, level: int, duration_s: float | None, exc: BaseException | None, *args: object
) -> None:
    if not log.isEnabledFor(level):
        return
    extra: dict[str, object] = {} if duration_s is None else {"duration_s": duration_s}
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
