"""Lost leases in the core: a lease that ends because its holder is gone
(it expired, or its owner died) makes the job ready at once, with no
backoff, and counts an attempt; a job that loses its lease
``lost_leases_max`` times in a row (3 by default) is dead, with an error
that says so; a failure its handler reports starts the count again and
waits for the backoff. Every step goes through the harness, which checks
the replay and every invariant after each record."""

import pytest

from leash.broker.core import records as R
from leash.broker.core.retry import retry_delay_ms
from leash.broker.core.state import DEAD, READY, RETRYING
from leash.protocol import admin as A
from leash.protocol import limits
from leash.protocol import messages as M
from tests.unit.test_core_harness import SECOND_MS, Core

TTL_MS = 5 * SECOND_MS


def expire(core: Core, job_id: str = "a") -> M.JobView:
    """Lease the job and let the lease run out; the job as it is then."""
    delivery = core.lease()
    assert delivery.id == job_id
    records = core.advance(TTL_MS)
    (failure,) = [f for r in records if isinstance(r, R.AttemptsFailed) for f in r.failures]
    assert failure.id == job_id
    return core.job(job_id)


def test_an_expired_lease_makes_its_job_ready_at_once_and_counts_an_attempt() -> None:
    core = Core()
    core.push(id="a", lease_ttl_ms=TTL_MS)
    first = core.lease()
    records = core.advance(TTL_MS)
    (record,) = records
    assert isinstance(record, R.AttemptsFailed)
    (failure,) = record.failures
    assert failure.retry_at_ms == failure.at_ms == core.now_ms, "the record says: ready now"
    view = core.job("a")
    assert (view.state, view.attempt, view.run_at_ms) == (READY, 1, None)
    assert view.last_error == M.ErrorInfo("LeaseExpired", "lease expired")
    second = core.lease(worker="w2")  # another worker, at once, no tick in between
    assert (second.attempt, second.token > first.token) == (2, True)
    assert core.state.jobs["a"].lost_leases == 1


def test_a_dead_owners_leases_are_ready_at_once_and_wait_behind_the_jobs_already_ready() -> None:
    core = Core(process_ttl_ms=15 * SECOND_MS, reconnect_grace_ms=2 * SECOND_MS)
    core.push(id="held")
    core.lease(worker="doomed")
    core.push(id="waiting")
    core.advance(15 * SECOND_MS - 1)
    records = core.advance(1)
    (died,) = [r for r in records if isinstance(r, R.ProcessDied) and r.worker_id == "doomed"]
    assert [f.retry_at_ms for f in died.failures] == [died.at_ms]
    assert core.ready_ids() == ["waiting", "held"]
    view = core.job("held")
    assert (view.state, view.attempt) == (READY, 1)
    assert view.last_error == M.ErrorInfo("WorkerLost", "worker lost: heartbeat timeout")


def test_a_job_that_loses_its_lease_three_times_in_a_row_is_dead_and_says_why() -> None:
    core = Core()
    core.push(id="a", lease_ttl_ms=TTL_MS)  # max_attempts 25: the count decides
    for lost in (1, 2):
        assert expire(core).state == READY
        assert core.state.jobs["a"].lost_leases == lost
    view = expire(core)
    assert (view.state, view.attempt, view.died_ms) == (DEAD, 3, core.now_ms)
    message = "lease expired; its lease was lost 3 times in a row, so it is dead"
    assert view.last_error == M.ErrorInfo("LeaseExpired", message)
    assert limits.LOST_LEASES_MAX_DEFAULT == core.config.lost_leases_max == 3


def test_the_count_of_lost_leases_is_configurable() -> None:
    core = Core(lost_leases_max=1)
    core.push(id="a", lease_ttl_ms=TTL_MS)
    view = expire(core)
    assert (view.state, view.attempt) == (DEAD, 1)
    assert view.last_error is not None and "lost 1 times in a row" in view.last_error.message


def test_max_attempts_below_the_count_ends_the_job_first_with_the_plain_error() -> None:
    core = Core()
    core.push(id="a", lease_ttl_ms=TTL_MS, max_attempts=2)
    assert expire(core).state == READY
    view = expire(core)
    assert (view.state, view.attempt) == (DEAD, 2)
    assert view.last_error == M.ErrorInfo("LeaseExpired", "lease expired")


def test_a_failure_its_handler_reports_waits_for_the_backoff_and_starts_the_count_again() -> None:
    core = Core()
    core.push(id="a", lease_ttl_ms=TTL_MS)
    expire(core)
    expire(core)
    delivery = core.lease()
    failed = core.fail(delivery)
    delay_ms = retry_delay_ms("a", 3, None, core.config.retry_delay_max_ms)
    assert (failed.state, failed.retry_at_ms) == (RETRYING, core.now_ms + delay_ms)
    assert core.state.jobs["a"].lost_leases == 0
    core.advance_to(failed.retry_at_ms or 0)
    expire(core)
    assert expire(core).state == READY, "two lost in a row since the reported failure"
    assert expire(core).state == DEAD


def test_a_release_leaves_the_count_and_a_requeue_of_the_dead_job_starts_it_afresh() -> None:
    core = Core()
    core.push(id="a", lease_ttl_ms=TTL_MS)
    expire(core)
    core.release(core.lease())
    assert core.state.jobs["a"].lost_leases == 1, "a release is not an outcome"
    expire(core)
    assert expire(core).state == DEAD
    assert core.state.jobs["a"].lost_leases == 0
    core.expect(A.RequeueJob(core.next_rid(), "a"), M.Ok)
    assert expire(core).state == READY and expire(core).state == READY
    assert expire(core).state == DEAD


def test_a_batch_member_whose_lease_is_lost_is_retrying_in_its_batch_and_ready_to_run() -> None:
    core = Core()
    created = core.create_batch(M.JobSpec(type="t", id="m", lease_ttl_ms=TTL_MS), commit=True)
    view = expire(core, "m")
    assert view.state == READY
    status = core.batch(created.id)
    assert (status.pending, status.failures, status.state) == (1, 1, "committed")
    core.ack(core.lease())
    assert core.batch(created.id).state == "finished"


@pytest.mark.parametrize("cap_ms", [0, 1])
def test_a_reported_failure_always_waits_at_least_a_millisecond(cap_ms: int) -> None:
    """So a record tells a lost lease (ready now) from a reported failure."""
    assert retry_delay_ms("a", 1, 1, cap_ms) == 1
    core = Core(retry_delay_max_ms=cap_ms)
    core.push(id="a")
    failed = core.fail(core.lease())
    assert (failed.state, failed.retry_at_ms) == (RETRYING, core.now_ms + 1)
