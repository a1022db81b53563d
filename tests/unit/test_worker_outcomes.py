"""What a handler's run comes to (handler control) and how it is logged, without a broker."""

import logging

import msgspec
import pytest

from leash import Discard, Retry, Snooze
from leash.client._control import Failure, Policy, Snoozed, outcome_of
from leash.client._handlers import Registered, invoke, registered
from leash.client._types import Job
from leash.protocol.messages import Delivery


def job_at(attempt: int, max_attempts: int = 3, type: str = "resize") -> Job:
    return Job(
        Delivery(
            id="j-1",
            queue="default",
            type=type,
            args=msgspec.Raw(msgspec.msgpack.encode([])),
            token=1,
            deadline_ms=1,
            attempt=attempt,
            max_attempts=max_attempts,
            lease_ttl_ms=30_000,
            priority=5,
            created_ms=1,
        )
    )


def raising(exc: BaseException) -> Registered:
    def handler() -> None:
        raise exc

    return Registered(handler)


# --- outcomes ---------------------------------------------------------------


def test_each_control_exception_maps_to_its_request() -> None:
    retry = outcome_of(Retry(2.5))
    assert isinstance(retry, Failure)
    assert (retry.retry_in_ms, retry.dead, retry.error.type) == (2500, False, "leash.Retry")
    discard = outcome_of(Discard("bad input"))
    assert isinstance(discard, Failure)
    assert (discard.dead, discard.error.message) == (True, "bad input")
    assert outcome_of(Snooze(90)) == Snoozed(90_000)


def test_give_up_on_wins_and_retry_on_lists_the_only_retried_exceptions() -> None:
    policy = Policy(retry_on=(OSError,), give_up_on=(FileNotFoundError,))

    def gives_up(exc: Exception) -> bool:
        outcome = outcome_of(exc, policy)
        assert isinstance(outcome, Failure) and outcome.retry_in_ms is None
        return outcome.dead

    assert gives_up(FileNotFoundError("x"))  # an OSError too, but give_up_on comes first
    assert not gives_up(ConnectionError("x"))  # an OSError
    assert gives_up(KeyError("x"))  # not in retry_on
    without = outcome_of(KeyError("x"))
    assert isinstance(without, Failure) and not without.dead  # by default everything retries


def test_a_control_exception_cannot_be_classified() -> None:
    with pytest.raises(TypeError, match="Snooze"):
        registered(print, retry_on=(Snooze,))


# --- visible work -------------------------------------------------------------


def test_a_success_is_logged_at_debug_with_the_job_and_its_duration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="leash.worker")
    assert invoke(Registered(lambda: None), job_at(2)) is None
    (record,) = caplog.records
    assert record.levelno == logging.DEBUG
    assert record.getMessage().startswith("job j-1 (resize) attempt 2/3 done in ")
    job = (record.job_id, record.job_type, record.job_attempt)  # type: ignore[attr-defined]
    assert job == ("j-1", "resize", 2)
    assert record.duration_s >= 0  # type: ignore[attr-defined]


def test_a_failure_to_be_retried_is_a_warning_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="leash.worker")
    invoke(raising(KeyError("gone")), job_at(1))
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "job j-1 (resize) attempt 1/3 failed after" in message
    assert message.endswith("retrying after its backoff: KeyError: 'gone'")
    assert "raise exc" in caplog.text  # the traceback, as the broker keeps it


@pytest.mark.parametrize(("exc", "attempt"), [(KeyError("k"), 3), (Discard("no such user"), 1)])
def test_a_last_failure_is_an_error_with_its_traceback(
    caplog: pytest.LogCaptureFixture, exc: Exception, attempt: int
) -> None:
    caplog.set_level(logging.DEBUG, logger="leash.worker")
    invoke(raising(exc), job_at(attempt))
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert ", giving up: " in record.getMessage()
    assert record.exc_info is not None and record.exc_info[1] is exc


def test_retry_and_snooze_say_when(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="leash.worker")
    invoke(raising(Retry(30)), job_at(1))
    invoke(raising(Snooze(5)), job_at(1))
    retried, snoozed = caplog.records
    assert (retried.levelno, snoozed.levelno) == (logging.WARNING, logging.INFO)
    assert "retrying in 30 s" in retried.getMessage()
    assert "snoozed for 5 s" in snoozed.getMessage()
