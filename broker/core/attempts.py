"""The attempts a job keeps: when each ended attempt was leased and ended,
by which process, how it ended and with what error.

Derived from the records that end a lease (fail, expiry, a process's death,
release, kill), while apply applies them, so a replay of the journal gives
the same history and a snapshot keeps it with its job. Bounded per job:
the last ``ATTEMPTS_KEPT`` attempts, each error cut to the attempt limits
(the backtrace keeps its end, where the failing line is); the job's
``last_error`` keeps the whole of the latest. An acked or deleted job is
forgotten with its history.
"""

from typing import Final, Literal

from leash.broker.core.common import LEASE_EXPIRED
from leash.broker.core.jobs import Attempt, Job
from leash.broker.core.state import State
from leash.protocol import limits as L
from leash.protocol.messages import AttemptView, ErrorInfo

Outcome = Literal["failed", "expired", "lost", "released", "killed"]
KEEP_BEFORE: Final = L.ATTEMPTS_KEPT - 1  # kept attempts before the one ending


def failed_outcome(error: ErrorInfo) -> Outcome:
    """A failure the worker reported, or the broker's expiry of the lease
    (its message may say the job is dead for it: common.lost_lease_for)."""
    return "expired" if error.type == LEASE_EXPIRED.type else "failed"


def attempt_ended(
    state: State, job: Job, outcome: Outcome, at_ms: int, error: ErrorInfo | None
) -> None:
    """Add the leased job's attempt that ends now to its history (before
    the lease fields are cleared: they say who held it since when)."""
    process = state.processes.get(job.owner)
    hostname, pid = (process.info.hostname, process.info.pid) if process is not None else ("", 0)
    attempt = Attempt(
        job.failures + 1,
        job.leased_ms,
        at_ms or job.leased_ms,  # 0 in old journals' releases
        job.owner,
        hostname,
        pid,
        outcome,
        None if error is None else _cut(error),
    )
    kept = job.attempts[-KEEP_BEFORE:] if job.attempts and KEEP_BEFORE else []
    state.jobs.change(job, attempts=[*kept, attempt])


def _cut(error: ErrorInfo) -> ErrorInfo:
    message, backtrace = error.message, error.backtrace
    if len(message) <= L.ATTEMPT_MESSAGE_MAX_CHARS and (
        len(backtrace) <= L.ATTEMPT_BACKTRACE_MAX_CHARS
    ):
        return error
    return ErrorInfo(
        type=error.type,
        message=message[: L.ATTEMPT_MESSAGE_MAX_CHARS],
        backtrace=backtrace[-L.ATTEMPT_BACKTRACE_MAX_CHARS :] if backtrace else "",
    )


def attempt_views(job: Job) -> list[AttemptView]:
    return [
        AttemptView(
            attempt=a.attempt,
            leased_ms=a.leased_ms,
            ended_ms=a.ended_ms,
            worker_id=a.worker_id,
            outcome=a.outcome,
            hostname=a.hostname,
            pid=a.pid,
            error=a.error,
        )
        for a in job.attempts or ()
    ]
