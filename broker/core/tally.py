"""What a record counts for: pushed, acked, failed, dead, expired, by queue.

Read before the record is applied (an ack removes the job it names, so its
queue must be read first), one case for every kind of record: a kind
added without one fails type checking. Every job created counts as pushed
(by a push on either protocol, a batch's creation, or a batch callback:
those are derived while a record is applied, so ``enqueued`` counts the
ones ``apply`` returns), and every job that dies as dead (its attempts used
up, its lease lost too often, or killed by an operator; a job pushed to be
forgotten when it dies, a Faktory unit with ``retry`` 0, counts as dead
too). A push that names a key some job holds counts as a duplicate
(``duplicates``, from its reply). A failure with the error
``TimeLimitExceeded`` (the broker's or the worker's) counts as
``time_limited`` too. Pure; the shell keeps the running totals since start for the stats
view and the metrics.
"""

from collections.abc import Iterable
from typing import Final, Literal, assert_never, get_args

from leash.broker.core import records as R
from leash.broker.core.common import LEASE_EXPIRED
from leash.broker.core.state import State
from leash.broker.core.timelimit import TIME_LIMIT_EXCEEDED
from leash.protocol import admin as A
from leash.protocol import messages as M

Total = Literal[
    "pushed",
    "acked",
    "failed",
    "dead",
    "expired",
    "duplicate",
    "ttl_expired",
    "time_limited",
]
TOTALS: Final[tuple[Total, ...]] = get_args(Total)

Counted = list[tuple[str, Total]]  # (queue, total), once for every count a record adds to


def tally(state: State, record: R.Record) -> Counted:
    """(queue, total) once for every count the record adds to, read before it is applied."""
    match record:
        case R.JobsPushed(jobs=jobs) | R.KeptJobsPushed(jobs=jobs) | R.BatchOpened(jobs=jobs):
            return [(new.queue, "pushed") for new in jobs]
        case R.JobsAcked(leases=leases) | R.ResultsAcked(leases=leases):
            return [(state.jobs[lease.id].queue, "acked") for lease in leases]
        case R.AttemptsFailed(failures=failures) | R.ProcessDied(failures=failures):
            return _failures(state, failures)
        case R.JobKilled(id=job_id):
            return [(state.jobs[job_id].queue, "dead")]
        case R.JobsExpired(ids=ids):
            return [(state.jobs[job_id].queue, "ttl_expired") for job_id in ids]
        case R.ScheduleFired(job=job):
            return [] if job is None else [(job.queue, "pushed")]
        case (
            R.Booted()
            | R.EpochRolled()
            | R.JobsLeased()
            | R.LeaseExtended()
            | R.LeaseReleased()
            | R.JobsPromoted()
            | R.QueuePaused()
            | R.QueueResumed()
            | R.DeadTrimmed()
            | R.ProcessSeen()
            | R.ProcessDetached()
            | R.ProcessControlled()
            | R.BatchCommitted()
            | R.BatchDeleted()
            | R.BatchesAbandoned()
            | R.BatchesExpired()
            | R.JobDeleted()
            | R.JobRequeued()
            | R.UniqueWindowsEnded()
            | R.ProgressReported()
            | R.QueueLimitsSet()
            | R.ScheduleAdded()
            | R.ScheduleRemoved()
            | R.SchedulePaused()
            | R.ScheduleResumed()
            | R.HistoryTrimmed()
            | R.ResultsDropped()
        ):
            return []  # no job created or ended by the record itself (callbacks: enqueued)
        case _:
            assert_never(record)


def duplicates(request: object, reply: object) -> Counted:
    """What a push's reply counts for: each push of a key some job held
    (``duplicate``, by the queue the push named). No record says it: a
    duplicate push changes nothing."""
    match reply:
        case M.Pushed(duplicate=True) if isinstance(request, M.Push):
            return [(request.job.queue, "duplicate")]
        case M.PushedMany(results=results) if isinstance(request, M.PushMany):
            specs = request.jobs
            return [(specs[i].queue, "duplicate") for i, r in enumerate(results) if r.duplicate]
        case _:
            return []


def expired_jobs(state: State, record: R.Record) -> list[A.ExpiredJob]:
    """The jobs a record removes at their expiry, as the stats list them
    (read before it is applied, as ``tally``)."""
    if type(record) is not R.JobsExpired:
        return []
    jobs = [state.jobs[job_id] for job_id in record.ids]
    return [A.ExpiredJob(j.id, j.queue, j.type, j.created_ms, j.expires_ms) for j in jobs]


def enqueued(callbacks: Iterable[R.NewJob]) -> Counted:
    """What the callback jobs ``apply`` returned count for: pushed."""
    return [(new.queue, "pushed") for new in callbacks]


def _failures(state: State, failures: list[R.Failure]) -> Counted:
    counted: Counted = []
    for failure in failures:
        queue = state.jobs[failure.id].queue
        counted.append((queue, "failed"))
        if failure.retry_at_ms is None:
            counted.append((queue, "dead"))
        if failure.error.type == LEASE_EXPIRED.type:
            counted.append((queue, "expired"))
        elif failure.error.type == TIME_LIMIT_EXCEEDED:  # by the broker or the worker
            counted.append((queue, "time_limited"))
    return counted
