"""Time limits: one attempt of a job runs at most ``time_limit_ms`` from its lease.

Theory of operation. A push may give ``time_limit_ms``; the push record
carries it (records.JobExtras) and the job keeps it (``Job.time_limit_ms``,
packed with the job's cold fields). The limit is a cap on the lease, not a
timer of its own: a lease granted at ``leased_ms`` ends at the latest at
``leased_ms + time_limit_ms`` (``limit_ms``):
- a fetch grants the lease for the shorter of its ttl and the limit
  (``granted_ms``); an ``extend`` or a ``progress`` report moves the
  deadline out as usual but never past the limit (``capped_ms``), and the
  reply names the capped deadline, so a worker sees its lease's end;
- when a capped deadline passes, the tick ends the lease as it ends any
  expired lease, in the same ``AttemptsFailed`` record, but the attempt is
  a failure with the error ``TimeLimitExceeded`` (``reached``), which
  follows the retry policy as a failure its handler reported does (the
  backoff, dead at ``max_attempts``), not the lost-lease rule.
So the existing lease-deadline heap is the only timer, and a job without
a limit pays one falsy check per grant. check_invariants: no leased job's
deadline is past its limit.
"""

from leash.broker.core.state import Job
from leash.protocol.messages import TIME_LIMIT_EXCEEDED, ErrorInfo

__all__ = ["TIME_LIMIT_EXCEEDED", "capped_ms", "error", "granted_ms", "limit_ms", "reached"]


def error(job: Job) -> ErrorInfo:
    """The error of an attempt that ran out of time."""
    limit_s = job.time_limit_ms / 1000
    return ErrorInfo(TIME_LIMIT_EXCEEDED, f"the attempt ran past its time limit of {limit_s:g} s")


def limit_ms(job: Job) -> int:
    """When the leased job's attempt must end (0: it has no limit)."""
    return job.leased_ms + job.time_limit_ms if job.time_limit_ms else 0


def granted_ms(job: Job, now_ms: int) -> int:
    """The deadline of a lease granted now."""
    if job.time_limit_ms and job.time_limit_ms < job.lease_ttl_ms:
        return now_ms + job.time_limit_ms
    return now_ms + job.lease_ttl_ms


def capped_ms(job: Job, deadline_ms: int) -> int:
    """A deadline asked for the leased job, cut at its limit."""
    if job.time_limit_ms:
        return min(deadline_ms, job.leased_ms + job.time_limit_ms)
    return deadline_ms


def reached(job: Job) -> bool:
    """Whether the leased job's deadline is its limit: its expiry is a
    time limit exceeded, not a lost lease."""
    return bool(job.time_limit_ms) and job.deadline_ms >= job.leased_ms + job.time_limit_ms
