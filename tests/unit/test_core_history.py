"""The finished-job history (core/history.py): what get_job says of a job
that is gone, and the count and age bounds the tick keeps it within. The
harness checks replay, the state image and the invariants after every record."""

from leash.broker.core import records as R
from leash.broker.core.history import slack
from leash.protocol import admin as A
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from tests.unit.test_core_harness import SECOND_MS, Core

DAY_MS = 24 * 3600 * SECOND_MS


def finished(core: Core, job_id: str) -> M.JobView:
    view = core.expect(M.GetJob(core.next_rid(), job_id), M.JobInfo).job
    assert view.finished_ms is not None, view
    return view


def test_an_acked_job_says_when_and_by_which_process_and_attempt_it_finished() -> None:
    core = Core()
    core.push(id="a", max_attempts=3, retry_base_ms=1)
    core.fail(core.lease())
    core.advance(SECOND_MS)
    core.ack(core.lease(worker="w2"))
    assert "a" not in core.state.jobs
    view = finished(core, "a")
    assert (view.state, view.finished_ms, view.finished_by, view.attempt) == (
        "succeeded",
        core.now_ms,
        "w2",
        1,  # one failed attempt before the one that succeeded
    )
    assert (view.queue, view.type, view.created_ms) == ("default", "t", core.now_ms - SECOND_MS)


def test_a_deleted_and_an_expired_job_are_in_the_history_without_a_process() -> None:
    core = Core()
    core.push(id="d")
    core.expect(A.DeleteJob(core.next_rid(), "d"), M.Ok)
    core.push(id="e", ttl_ms=SECOND_MS)
    core.advance(SECOND_MS)
    assert (finished(core, "d").state, finished(core, "d").finished_by) == ("deleted", None)
    assert finished(core, "e").state == "expired"


def test_the_history_is_trimmed_to_its_count_once_past_its_slack_in_one_record() -> None:
    core = Core(history_max_jobs=32)
    over = slack(32) + 1
    for number in range(32 + over):
        core.push(id=f"j{number}")
        core.ack(core.lease())
    records = core.tick()
    assert records == [R.HistoryTrimmed(over, core.now_ms)]
    assert list(core.state.history) == [f"j{n}" for n in range(over, 32 + over)]
    core.refused(M.GetJob(core.next_rid(), "j0"), ErrorCode.NOT_FOUND)


def test_within_its_slack_the_history_is_not_trimmed() -> None:
    core = Core(history_max_jobs=32)
    for number in range(32 + slack(32)):
        core.push(id=f"j{number}")
        core.ack(core.lease())
    assert core.tick() == []
    assert len(core.state.history) == 32 + slack(32)


def test_a_finished_job_is_forgotten_at_its_age_bound() -> None:
    core = Core(history_max_age_ms=DAY_MS)
    core.push(id="old")
    core.ack(core.lease())
    core.advance(SECOND_MS)
    core.push(id="new")
    core.ack(core.lease())
    assert core.advance(DAY_MS - SECOND_MS - 1) == []
    assert core.advance(1) == [R.HistoryTrimmed(1, core.now_ms)]
    assert list(core.state.history) == ["new"]


def test_an_id_that_finishes_again_is_kept_once_as_its_latest_finish() -> None:
    core = Core()
    core.push(id="a")
    core.ack(core.lease())
    core.push(id="b")
    core.ack(core.lease())
    core.advance(SECOND_MS)
    core.push(id="a")  # the first is forgotten: a new job with its id
    assert core.job("a").state == "ready", "a live job is shown before its finished namesake"
    core.ack(core.lease())
    assert list(core.state.history) == ["b", "a"]
    assert finished(core, "a").finished_ms == core.now_ms


def test_with_no_history_an_acked_job_is_not_found() -> None:
    core = Core(history_max_jobs=0)
    core.push(id="a")
    core.ack(core.lease())
    assert core.tick() == [R.HistoryTrimmed(1, core.now_ms)]
    assert core.state.history == {}
    core.refused(M.GetJob(core.next_rid(), "a"), ErrorCode.NOT_FOUND)


def test_a_restart_keeps_the_history() -> None:
    core = Core()
    core.push(id="a")
    core.ack(core.lease())
    core.restart()
    assert finished(core, "a").finished_by == "w1"
