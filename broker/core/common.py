"""What decide, tick and the process rules share: the refusal exception,
the lease check, and the records of a failed attempt and of a lost lease."""

from leash.broker.core import records as R
from leash.broker.core.retry import retry_delay_ms
from leash.broker.core.state import LEASED, Job, State
from leash.broker.errors import BrokerError
from leash.protocol import limits
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode

LEASE_EXPIRED = M.ErrorInfo(type="LeaseExpired", message="lease expired")


class Rejected(BrokerError):
    def __init__(self, code: ErrorCode, message: str, path: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.path = code, message, path


def failure_for(
    state: State,
    job: Job,
    error: M.ErrorInfo,
    now_ms: int,
    dead: bool = False,
    retry_in_ms: int | None = None,
) -> R.Failure:
    """The record of an attempt its handler reported failed: retried after
    the backoff (retry.py) or after the ``retry_in_ms`` it asked for, or
    dead at its limit or when it asked to give up (``dead``)."""
    attempt = job.failures + 1
    if dead or attempt >= job.max_attempts:
        return R.Failure(job.id, job.token, error, None, now_ms)
    cap_ms = state.config.retry_delay_max_ms
    if retry_in_ms is None:
        delay_ms = retry_delay_ms(job.id, attempt, job.retry_base_ms, cap_ms)
    else:  # at least 1 ms: a reported failure always waits (records.Failure)
        delay_ms = max(min(retry_in_ms, cap_ms), 1)
    return R.Failure(job.id, job.token, error, now_ms + delay_ms, now_ms)


def lost_lease_for(state: State, job: Job, error: M.ErrorInfo, now_ms: int) -> R.Failure:
    """The record of a lease that ended because its holder is gone (it
    expired, or its owner died): the job is ready again at once, with no
    backoff, and the attempt counts. It is dead at ``max_attempts``, or once
    its lease is lost ``lost_leases_max`` times in a row (a job that kills or
    hangs its worker every time), with an error that says so."""
    if job.failures + 1 >= job.max_attempts:
        return R.Failure(job.id, job.token, error, None, now_ms)
    lost = job.lost_leases + 1
    if lost >= state.config.lost_leases_max:
        why = f"{error.message}; its lease was lost {lost} times in a row, so it is dead"
        dead = M.ErrorInfo(type=error.type, message=why[: limits.ERROR_MESSAGE_MAX_CHARS])
        return R.Failure(job.id, job.token, dead, None, now_ms)
    return R.Failure(job.id, job.token, error, now_ms, now_ms)


def lease_of(
    state: State, job_id: str, token: int, id_path: str = "$.id", token_path: str = "$.token"
) -> Job:
    """The job leased under this token; ``not_found`` or ``stale_lease`` otherwise."""
    job = state.jobs.get(job_id)
    if job is None:
        raise Rejected(ErrorCode.NOT_FOUND, f"no job {job_id!r}", id_path)
    if job.state != LEASED or job.token != token:
        raise Rejected(
            ErrorCode.STALE_LEASE,
            f"token {token} is not the current lease of job {job_id!r} ({job.state})",
            token_path,
        )
    return job
