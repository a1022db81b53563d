"""The life of a lease: fencing tokens, ack, ack_many, fail, extend and
release, each with the stale and unknown cases that must change nothing."""

import pytest

from leash.broker.core import records as R
from leash.broker.core.retry import retry_delay_ms
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from tests.unit.test_core_harness import SECOND_MS, START_MS, Core

DAY_MS = 24 * 3600 * SECOND_MS
BOOM = M.ErrorInfo(type="ValueError", message="boom", backtrace="Traceback ...")


# --- tokens --------------------------------------------------------------------


def test_a_token_is_the_epoch_above_a_counter() -> None:
    core = Core()
    core.push(id="a")
    token = core.lease().token
    assert token >> 32 == core.state.epoch == 1
    assert token & 0xFFFF_FFFF < core.state.counter


def test_lease_tokens_never_repeat_even_after_a_new_boot() -> None:
    core = Core()
    core.push(id="a")
    tokens: list[int] = []

    def cycle(times: int) -> None:
        for _ in range(times):
            delivery = core.lease()
            tokens.append(delivery.token)
            core.release(delivery)

    cycle(3)
    core.boot()
    cycle(3)
    core.restart()  # a fresh State from the records, then a new epoch
    cycle(3)
    assert tokens == sorted(set(tokens))
    assert [token >> 32 for token in tokens] == [1] * 3 + [2] * 3 + [3] * 3


def test_a_lease_granted_before_a_restart_can_still_be_acked_after_it() -> None:
    core = Core()
    core.push(id="a")
    delivery = core.lease()
    core.restart()
    core.push(id="b")
    assert core.lease().token > delivery.token
    core.ack(delivery)
    assert "a" not in core.state.jobs


# --- ack -----------------------------------------------------------------------


def test_acking_a_held_lease_removes_the_job() -> None:
    core = Core()
    core.push(id="a")
    delivery = core.lease()
    assert core.send(M.Ack(5, "a", delivery.token)).records == [
        R.JobsAcked([M.LeaseRef("a", delivery.token)], core.now_ms)
    ]
    assert core.state.jobs == {}
    finished = core.expect(M.GetJob(6, "a"), M.JobInfo).job  # from the finished-job history
    assert (finished.state, finished.finished_ms, finished.finished_by) == (
        "succeeded",
        core.now_ms,
        "w1",
    )


def test_acking_twice_is_not_found() -> None:
    core = Core()
    core.push(id="a")
    delivery = core.lease()
    core.ack(delivery)
    error = core.refused(M.Ack(9, "a", delivery.token), ErrorCode.NOT_FOUND)
    assert error.path == "$.id"


def test_acking_with_a_wrong_token_is_a_stale_lease_and_changes_nothing() -> None:
    core = Core()
    core.push(id="a")
    delivery = core.lease()
    error = core.refused(M.Ack(9, "a", delivery.token + 1), ErrorCode.STALE_LEASE)
    assert error.path == "$.token"
    assert core.job("a").state == "leased"


def test_acking_a_job_that_is_not_leased_is_a_stale_lease() -> None:
    core = Core()
    core.push(id="a")
    core.refused(M.Ack(9, "a", 1), ErrorCode.STALE_LEASE)
    assert core.job("a").state == "ready"


def test_a_stale_token_cannot_ack_a_re_leased_job() -> None:
    core = Core()
    core.push(id="a", lease_ttl_ms=SECOND_MS)
    first = core.lease()
    core.advance(SECOND_MS)  # the lease expires: the job is ready again at once
    assert core.job("a").state == "ready"
    core.refused(M.Ack(1, "a", first.token), ErrorCode.STALE_LEASE)
    second = core.lease()
    assert second.token != first.token
    core.refused(M.Ack(2, "a", first.token), ErrorCode.STALE_LEASE)
    core.refused(M.Fail(3, "a", first.token), ErrorCode.STALE_LEASE)
    core.refused(M.Extend(4, "a", first.token), ErrorCode.STALE_LEASE)
    core.refused(M.Release(5, "a", first.token), ErrorCode.STALE_LEASE)
    core.ack(second)
    assert core.state.jobs == {}


# --- ack_many --------------------------------------------------------------------


def test_ack_many_answers_per_item_and_writes_only_the_valid_ones() -> None:
    core = Core()
    for job_id in ("a", "b", "c"):
        core.push(id=job_id)
    a, b, c = core.fetch(count=3)
    outcome = core.send(
        M.AckMany(
            1,
            [
                M.LeaseRef("a", a.token),
                M.LeaseRef("b", b.token + 100),
                M.LeaseRef("nobody", 7),
                M.LeaseRef("a", a.token),
                M.LeaseRef("c", c.token),
            ],
        )
    )
    assert isinstance(outcome.reply, M.AckedMany)
    codes = [result.code for result in outcome.reply.results]
    assert codes == [None, ErrorCode.STALE_LEASE, ErrorCode.NOT_FOUND, ErrorCode.STALE_LEASE, None]
    assert [result.id for result in outcome.reply.results] == ["a", "b", "nobody", "a", "c"]
    acked = [M.LeaseRef("a", a.token), M.LeaseRef("c", c.token)]
    assert outcome.records == [R.JobsAcked(acked, core.now_ms)]
    assert list(core.state.jobs) == ["b"]
    assert core.job("b").state == "leased"


def test_ack_many_with_no_valid_item_writes_nothing() -> None:
    core = Core()
    core.push(id="a")
    delivery = core.lease()
    outcome = core.send(M.AckMany(1, [M.LeaseRef("a", delivery.token + 1)]))
    assert isinstance(outcome.reply, M.AckedMany)
    assert outcome.reply.results[0].code == ErrorCode.STALE_LEASE
    assert outcome.records == []


# --- fail ------------------------------------------------------------------------


def test_a_failure_schedules_a_retry_after_the_backoff() -> None:
    core = Core()
    core.push(id="a")
    delivery = core.lease()
    core.now_ms += 250
    failed = core.fail(delivery, BOOM)
    expected_ms = core.now_ms + retry_delay_ms("a", 1, None, core.config.retry_delay_max_ms)
    assert failed == M.Failed(core.rid, "retrying", expected_ms)
    view = core.job("a")
    assert (view.state, view.run_at_ms, view.attempt) == ("retrying", expected_ms, 1)
    assert view.last_error == BOOM
    assert (view.owner, view.token, view.deadline_ms) == (None, None, None)
    assert core.fetch() == []


def test_a_retry_runs_at_its_time_as_the_next_attempt() -> None:
    core = Core()
    core.push(id="a")
    retry_at_ms = core.fail(core.lease()).retry_at_ms or 0
    core.advance_to(retry_at_ms - 1)
    assert core.fetch() == []
    core.advance_to(retry_at_ms)
    assert core.lease().attempt == 2


def test_a_failure_uses_the_jobs_retry_base() -> None:
    core = Core()
    core.push(id="a", retry_base_ms=2000)
    for attempt in (1, 2, 3):
        delivery = core.lease()
        failed = core.fail(delivery)
        delay_ms = (failed.retry_at_ms or 0) - core.now_ms
        assert delay_ms == retry_delay_ms("a", attempt, 2000, core.config.retry_delay_max_ms)
        assert 2000 * 2 ** (attempt - 1) <= delay_ms <= 2000 * 2 ** (attempt - 1) * 11 // 10
        core.advance_to(failed.retry_at_ms or 0)


def test_a_retry_delay_is_capped_by_the_config() -> None:
    core = Core(retry_delay_max_ms=5 * SECOND_MS)
    core.push(id="a")
    failed = core.fail(core.lease())
    assert failed.retry_at_ms == core.now_ms + 5 * SECOND_MS


def test_a_failure_at_max_attempts_makes_the_job_dead() -> None:
    core = Core()
    core.push(id="a", max_attempts=2)
    first = core.fail(core.lease())
    assert first.state == "retrying"
    core.advance_to(first.retry_at_ms or 0)
    last = core.lease()
    assert (last.attempt, last.max_attempts) == (2, 2)
    core.now_ms += 3
    assert core.fail(last, BOOM) == M.Failed(core.rid, "dead")
    view = core.job("a")
    assert (view.state, view.attempt, view.run_at_ms) == ("dead", 2, None)
    assert view.died_ms == core.now_ms
    assert view.last_error == BOOM
    assert core.state.counts["dead"] == 1
    core.advance(DAY_MS)
    assert core.fetch() == []


def test_a_job_with_one_attempt_dies_on_its_first_failure() -> None:
    core = Core()
    core.push(id="a", max_attempts=1)
    assert core.fail(core.lease()).state == "dead"


def test_a_fail_that_gives_up_sends_the_job_to_the_dead_set_with_attempts_left() -> None:
    core = Core()
    core.push(id="a", max_attempts=25)
    delivery = core.lease()
    outcome = core.send(M.Fail(1, "a", delivery.token, BOOM, dead=True))
    assert outcome.reply == M.Failed(1, "dead", None)
    job = core.job("a")
    assert (job.state, job.attempt, job.last_error) == ("dead", 1, BOOM)
    assert core.state.counts["dead"] == 1


def test_the_failure_record_carries_its_results_not_now() -> None:
    core = Core()
    core.push(id="a")
    delivery = core.lease()
    outcome = core.send(M.Fail(1, "a", delivery.token, BOOM))
    (record,) = outcome.records
    assert isinstance(record, R.AttemptsFailed)
    (failure,) = record.failures
    assert (failure.id, failure.token, failure.error, failure.at_ms) == (
        "a",
        delivery.token,
        BOOM,
        core.now_ms,
    )
    assert failure.retry_at_ms == outcome.reply.retry_at_ms  # type: ignore[union-attr]


def test_failing_with_a_stale_token_changes_nothing() -> None:
    core = Core()
    core.push(id="a")
    delivery = core.lease()
    core.refused(M.Fail(1, "a", delivery.token - 1), ErrorCode.STALE_LEASE)
    core.refused(M.Fail(2, "b", delivery.token), ErrorCode.NOT_FOUND)
    assert core.job("a").attempt == 0


# --- extend ----------------------------------------------------------------------


def test_extend_sets_a_new_deadline_from_now() -> None:
    core = Core()
    core.push(id="a", lease_ttl_ms=10 * SECOND_MS)
    delivery = core.lease()
    core.now_ms += 4 * SECOND_MS
    extended = core.extend(delivery, lease_ttl_ms=30 * SECOND_MS)
    assert extended == M.Extended(core.rid, core.now_ms + 30 * SECOND_MS)
    assert core.job("a").deadline_ms == extended.deadline_ms


def test_extend_without_a_ttl_uses_the_jobs_own_ttl() -> None:
    core = Core()
    core.push(id="a", lease_ttl_ms=10 * SECOND_MS)
    delivery = core.lease()
    core.now_ms += 4 * SECOND_MS
    assert core.extend(delivery).deadline_ms == core.now_ms + 10 * SECOND_MS


def test_an_extended_lease_outlives_its_first_deadline_and_expires_at_the_new_one() -> None:
    core = Core()
    core.push(id="a", lease_ttl_ms=10 * SECOND_MS)
    delivery = core.lease()
    core.advance(9 * SECOND_MS)
    deadline_ms = core.extend(delivery).deadline_ms
    assert core.advance_to(START_MS + 10 * SECOND_MS) == []
    assert core.job("a").state == "leased"
    assert core.advance_to(deadline_ms - 1) == []
    core.advance_to(deadline_ms)
    assert (core.job("a").state, core.job("a").attempt) == ("ready", 1)


def test_a_lease_can_be_extended_to_a_shorter_deadline() -> None:
    core = Core()
    core.push(id="a", lease_ttl_ms=60 * SECOND_MS)
    delivery = core.lease()
    deadline_ms = core.extend(delivery, lease_ttl_ms=SECOND_MS).deadline_ms
    core.advance_to(deadline_ms)
    assert (core.job("a").state, core.job("a").attempt) == ("ready", 1)


def test_a_lease_extended_to_the_deadline_it_had_expires_once() -> None:
    core = Core()
    core.push(id="a", lease_ttl_ms=10 * SECOND_MS)
    delivery = core.lease()
    core.extend(delivery)  # same now, same ttl: the same deadline again
    core.extend(delivery, lease_ttl_ms=20 * SECOND_MS)
    core.now_ms += 10 * SECOND_MS
    core.extend(delivery)  # back to now + 10 s = the second deadline
    records = core.advance(10 * SECOND_MS)
    failures = [f for r in records if isinstance(r, R.AttemptsFailed) for f in r.failures]
    assert [failure.id for failure in failures] == ["a"]
    assert core.job("a").attempt == 1


def test_extending_with_a_stale_token_is_refused() -> None:
    core = Core()
    core.push(id="a")
    delivery = core.lease()
    core.release(delivery)
    core.refused(M.Extend(1, "a", delivery.token), ErrorCode.STALE_LEASE)
    core.refused(M.Extend(2, "zzz", delivery.token), ErrorCode.NOT_FOUND)


# --- release ---------------------------------------------------------------------


def test_a_released_job_goes_back_to_the_front_of_its_priority() -> None:
    core = Core()
    for job_id in ("a", "b", "c"):
        core.push(id=job_id)
    core.push(id="urgent", priority=9)
    urgent, a = core.fetch(count=2)
    core.release(a)
    core.release(urgent)
    assert [d.id for d in core.fetch(count=4)] == ["urgent", "a", "b", "c"]


def test_a_released_job_has_no_attempt_counted() -> None:
    core = Core()
    core.push(id="a", max_attempts=1)
    for _ in range(3):
        delivery = core.lease()
        assert delivery.attempt == 1
        core.release(delivery)
    view = core.job("a")
    assert (view.state, view.attempt, view.last_error, view.owner) == ("ready", 0, None, None)


def test_a_job_released_into_a_paused_queue_waits_for_resume() -> None:
    core = Core()
    core.push(id="a", queue="q")
    delivery = core.lease("q")
    core.pause("q")
    core.release(delivery)
    assert core.fetch("q") == []
    core.resume("q")
    assert core.lease("q").id == "a"


@pytest.mark.parametrize("how", ["ack", "fail", "release"])
def test_releasing_a_lease_that_already_ended_is_refused(how: str) -> None:
    core = Core()
    core.push(id="a")
    delivery = core.lease()
    getattr(core, how)(delivery)
    code = ErrorCode.NOT_FOUND if how == "ack" else ErrorCode.STALE_LEASE
    core.refused(M.Release(1, "a", delivery.token), code)
