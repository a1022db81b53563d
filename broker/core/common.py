"""What decide, tick and the process rules share: the refusal exception and
the record of a failed attempt."""

from broker.core import records as R
from broker.core.retry import retry_delay_ms
from broker.core.state import Job, State
from protocol import messages as M
from protocol.errors import ErrorCode


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
