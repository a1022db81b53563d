"""What a handler's run comes to (handler control) and how it is logged, without a broker."""

import logging
from typing import get_args

import msgspec
import pytest

from leash import Discard, Retry, Snooze, Worker
from leash.client._admin_format import jobs_ran, jobs_ran_by_type
from leash.client._control import Failure, Policy, Snoozed, outcome_of
from leash.client._handlers import Registered, invoke, registered
from leash.client._joblog import JobLog, JobOutcome, Watch
from leash.client._metrics import OTHER_TYPE, TYPES_MAX, JobFigures
from leash.client._types import Job
from leash.protocol.messages import Delivery, JobsRun


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


def test_a_run_is_logged_at_info_as_it_starts_and_ends_with_the_job_and_its_duration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="leash.worker")
    assert invoke(Registered(lambda: None), job_at(2)) is None
    started, done = caplog.records
    assert (started.levelno, done.levelno) == (logging.INFO, logging.INFO)
    assert started.getMessage() == "job j-1 (resize) attempt 2/3 started"
    assert done.getMessage().startswith("job j-1 (resize) attempt 2/3 done in ")
    for record in (started, done):
        job = (record.job_id, record.job_type, record.job_attempt)  # type: ignore[attr-defined]
        assert job == ("j-1", "resize", 2)
    assert done.duration_s >= 0  # type: ignore[attr-defined]
    assert not hasattr(started, "duration_s")


@pytest.mark.parametrize(("job_log", "level"), [("debug", logging.DEBUG), ("off", None)])
def test_job_log_turns_the_start_done_and_snooze_lines_down_but_never_failures(
    caplog: pytest.LogCaptureFixture, job_log: JobLog, level: int | None
) -> None:
    caplog.set_level(logging.DEBUG, logger="leash.worker")
    watch = Watch(job_log)
    invoke(Registered(lambda: None), job_at(1), watch=watch)
    invoke(raising(Snooze(5)), job_at(1), watch=watch)
    quiet = [(r.levelno, r.getMessage().split(" ", 5)[-1][:7]) for r in caplog.records]
    if level is None:
        assert quiet == []
    else:
        assert quiet == [
            (level, "started"),
            (level, "done in"),
            (level, "started"),
            (level, "snoozed"),
        ]
    caplog.clear()
    invoke(raising(KeyError("gone")), job_at(1), watch=watch)
    assert [r.levelno for r in caplog.records if r.levelno > logging.INFO] == [logging.WARNING]


def test_job_log_must_be_a_known_level() -> None:
    with pytest.raises(ValueError, match="job_log must be one of info, debug, off, not 'loud'"):
        Worker(job_log="loud")


def test_the_figures_count_each_run_by_type_and_outcome_with_its_duration() -> None:
    figures = JobFigures()
    watch = Watch("off", figures)
    invoke(Registered(lambda: None), job_at(1), watch=watch)
    invoke(raising(KeyError("k")), job_at(1), watch=watch)
    invoke(raising(KeyError("k")), job_at(3), watch=watch)
    invoke(raising(Snooze(1)), job_at(1, type="mail"), watch=watch)
    assert figures.counts() == {
        "resize": {"done": 1, "retrying": 1, "dead": 1},
        "mail": {"snoozed": 1},
    }
    resize = figures.snapshot()["resize"]
    assert (resize.timed, sum(resize.buckets)) == (3, 3)
    assert resize.sum_s >= 0


def test_a_beat_reports_the_types_that_ran_most_and_the_processes_views_sum_them() -> None:
    figures = JobFigures()
    assert figures.report(2) is None  # nothing ran: nothing told
    for job_type, outcome, times in [("a", "done", 1), ("b", "done", 3), ("c", "dead", 2)]:
        for _ in range(times):
            figures.observe(job_type, outcome, 0.001)
    figures.observe("c", "retrying", 0.001)
    told = figures.report(2)
    assert told == {"b": JobsRun(done=3), "c": JobsRun(dead=2, retrying=1)}
    assert jobs_ran(told.values()) == "3 done, 1 retrying, 2 dead"
    assert jobs_ran_by_type(told) == "b: 3 done; c: 1 retrying, 2 dead"
    assert (jobs_ran([]), jobs_ran_by_type(None)) == ("", "")


def test_the_outcomes_counted_are_the_ones_a_beat_can_tell() -> None:
    assert get_args(JobOutcome) == JobsRun.__struct_fields__


def test_the_figures_keep_a_bounded_number_of_types() -> None:
    figures = JobFigures()
    for n in range(TYPES_MAX + 5):
        figures.observe(f"t{n}", "unknown", None)
    counts = figures.counts()
    assert len(counts) == TYPES_MAX + 1
    assert counts[OTHER_TYPE] == {"unknown": 5}


def test_a_failure_to_be_retried_is_a_warning_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="leash.worker")
    invoke(raising(KeyError("gone")), job_at(1))
    _, record = caplog.records
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
    _, record = caplog.records
    assert record.levelno == logging.ERROR
    assert ", giving up: " in record.getMessage()
    assert record.exc_info is not None and record.exc_info[1] is exc


def test_retry_and_snooze_say_when(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="leash.worker")
    invoke(raising(Retry(30)), job_at(1))
    invoke(raising(Snooze(5)), job_at(1))
    _, retried, _, snoozed = caplog.records
    assert (retried.levelno, snoozed.levelno) == (logging.WARNING, logging.INFO)
    assert "retrying in 30 s" in retried.getMessage()
    assert "snoozed for 5 s" in snoozed.getMessage()
