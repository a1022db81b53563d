"""The ready index through apply: jobs that leave a ready bucket from the
middle (an operator's delete or kill, a lease that is not the first) leave a
stale entry behind, and the order a fetch takes must not notice. The
harness checks invariants, replay and state images after every record."""

from typing import Any

import pytest

from leash.broker.core import CoreConfig, Replay, State, apply, tally
from leash.broker.core import records as R
from leash.protocol import admin as A
from leash.protocol import messages as M
from tests.unit.test_core_harness import START_MS, Core


def queue_of(core: Core, *ids: str, **spec: object) -> None:
    for job_id in ids:
        core.push(id=job_id, **spec)


def test_a_ready_job_deleted_from_the_middle_and_pushed_again_waits_at_the_back() -> None:
    core = Core()
    queue_of(core, "a", "x", "b")
    core.expect(A.DeleteJob(core.next_rid(), "x"), M.Ok)
    assert core.ready_ids() == ["a", "b"]
    core.push(id="x")
    assert core.ready_ids() == ["a", "b", "x"]
    assert [d.id for d in core.fetch(count=3)] == ["a", "b", "x"]


def test_a_ready_job_killed_from_the_middle_and_requeued_waits_at_the_back() -> None:
    core = Core()
    queue_of(core, "a", "x", "b")
    core.expect(A.KillJob(core.next_rid(), "x"), M.Ok)
    assert core.job("x").state == "dead" and core.ready_ids() == ["a", "b"]
    core.expect(A.RequeueJob(core.next_rid(), "x"), M.Ok)
    assert [d.id for d in core.fetch(count=3)] == ["a", "b", "x"]


def test_a_job_leased_from_the_middle_then_released_goes_to_the_front_once() -> None:
    core = Core()
    queue_of(core, "a", "x", "b")
    core.touch()
    token = core.state.next_token()
    # Not a fetch's choice (a fetch takes the first), but a record apply must take.
    grant = R.Grant("x", token, START_MS + 60_000)
    core.apply(R.JobsLeased("w1", [grant], core.state.counter + 1, core.now_ms))
    assert core.ready_ids() == ["a", "b"]
    core.release(M.Delivery("x", "default", "t", M.EMPTY_ARGS, token, 0, 1, 25, 1, 5, 0))
    assert core.ready_ids() == ["x", "a", "b"]
    assert [d.id for d in core.fetch(count=3)] == ["x", "a", "b"]


def test_jobs_deleted_from_the_middle_by_the_hundred_keep_the_others_in_order() -> None:
    core = Core()
    ids = [f"j{n:03d}" for n in range(300)]
    queue_of(core, *ids)
    kept = [job_id for n, job_id in enumerate(ids) if n % 3 == 0]
    for n, job_id in enumerate(ids):
        if n % 3:
            core.expect(A.DeleteJob(core.next_rid(), job_id), M.Ok)
    bucket = core.state.queues["default"].buckets[5]
    assert len(bucket.ids) < 2 * len(kept), "stale entries never outnumber the live ones"
    assert core.ready_ids() == kept
    assert [d.id for d in core.fetch(count=len(kept))] == kept


def test_the_latency_of_a_queue_is_its_oldest_live_job_after_the_first_is_deleted() -> None:
    core = Core()
    core.push(id="first")
    core.now_ms += 5_000
    core.push(id="second")
    core.now_ms += 5_000
    core.expect(A.DeleteJob(core.next_rid(), "first"), M.Ok)
    (view,) = core.expect(A.ListQueues(core.next_rid()), A.Queues).queues
    assert view.latency_ms == 5_000


def test_apply_replay_and_tally_refuse_a_record_of_no_known_kind() -> None:
    """Their dispatch is a match ending in assert_never: mypy flags a kind
    with no case, and one that slips through fails loudly here."""

    class Unknown:
        pass

    record: Any = Unknown()
    state = State(CoreConfig())
    with pytest.raises(AssertionError):
        apply(state, record)
    with pytest.raises(AssertionError):
        tally(state, record)
    with pytest.raises(AssertionError):
        Replay(state).apply(record)
