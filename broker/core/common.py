"""What decide, tick and the process rules share: the refusal exception,
the lease check, and the record of a failed attempt."""

from leash.broker.core import records as R
from leash.broker.core.retry import retry_delay_ms
from leash.broker.core.state import LEASED, Job, State
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode

LEASE_EXPIRED = M.ErrorInfo(type="LeaseExpired", message="lease expired")


class Rejected(Exception):
    def __init__(self, code: ErrorCode, message: str, path: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.path = code, message, path


def failure_for(state: State, job: Job, error: M.ErrorInfo, now_ms: int) -> R.Failure:
    """The record of a failed attempt: retried later, or dead at its limit."""
    attempt = job.failures + 1
    if attempt >= job.max_attempts:
        return R.Failure(job.id, job.token, error, None, now_ms)
    delay_ms = retry_delay_ms(job.id, attempt, job.retry_base_ms, state.config.retry_delay_max_ms)
    return R.Failure(job.id, job.token, error, now_ms + delay_ms, now_ms)


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
