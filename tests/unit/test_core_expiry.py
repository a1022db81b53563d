"""Expiry: a job not leased by its expiry is never leased; the tick removes
it. Every step of the harness checks the invariants (no job leased past its
expiry among them), the replay and the state image too."""

import msgspec
import pytest

from leash.broker.core import records as R
from leash.broker.core.tally import tally
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from tests.unit.test_core_harness import SECOND_MS, START_MS, Core


def test_a_ready_job_not_leased_by_its_ttl_is_removed_by_the_tick_and_counted() -> None:
    core = Core()
    pushed = core.push(ttl_ms=10 * SECOND_MS)
    assert core.job(pushed.id).expires_ms == START_MS + 10 * SECOND_MS
    assert core.advance(10 * SECOND_MS - 1) == []
    (record,) = core.advance(1)
    assert record == R.JobsExpired([pushed.id], core.now_ms)
    assert pushed.id not in core.state.jobs and core.ready_ids() == []


def test_the_tally_counts_an_expired_job_by_its_queue() -> None:
    core = Core()
    pushed = core.push(queue="q", ttl_ms=SECOND_MS)
    record = R.JobsExpired([pushed.id], START_MS + SECOND_MS)
    assert tally(core.state, record) == [("q", "ttl_expired")]


def test_fetch_never_leases_a_job_past_its_expiry_even_before_the_tick() -> None:
    core = Core()
    core.push(id="late", expires_at_ms=START_MS + SECOND_MS)
    core.push(id="fresh")
    core.now_ms += SECOND_MS  # no tick yet
    (delivery,) = core.fetch("default", count=10)
    assert delivery.id == "fresh"
    assert core.tick() == [R.JobsExpired(["late"], core.now_ms)]


def test_a_job_leased_in_time_runs_to_its_end_and_its_ack_is_taken() -> None:
    core = Core()
    core.push(ttl_ms=SECOND_MS, lease_ttl_ms=60 * SECOND_MS)
    delivery = core.lease()
    assert core.advance(30 * SECOND_MS) == []
    core.ack(delivery)


def test_a_job_that_fails_after_its_expiry_expires_instead_of_retrying() -> None:
    core = Core()
    pushed = core.push(ttl_ms=5 * SECOND_MS, retry_base_ms=60 * SECOND_MS)
    delivery = core.lease()
    core.advance(6 * SECOND_MS)
    core.fail(delivery)
    assert core.job(pushed.id).state == "retrying"
    assert core.tick() == [R.JobsExpired([pushed.id], core.now_ms)]


def test_scheduled_and_released_jobs_expire_too() -> None:
    core = Core()
    scheduled = core.push(delay_ms=60 * SECOND_MS, ttl_ms=30 * SECOND_MS)
    core.push(id="snoozed", ttl_ms=30 * SECOND_MS)
    snoozed = core.lease()
    core.expect(M.Release(core.next_rid(), snoozed.id, snoozed.token, 60 * SECOND_MS), M.Ok)
    expired = core.advance(30 * SECOND_MS)
    assert expired == [R.JobsExpired([scheduled.id, "snoozed"], core.now_ms)]
    assert core.state.jobs.ids == set()


def test_an_expired_job_frees_its_uniqueness_key() -> None:
    core = Core()
    core.push(unique_key="k", unique_for_ms=60 * SECOND_MS, ttl_ms=SECOND_MS)
    core.advance(SECOND_MS)
    assert core.push(unique_key="k").created


def test_an_expired_batch_member_counts_dead_so_the_batch_never_waits_for_it() -> None:
    core = Core()
    created = core.create_batch(
        M.JobSpec(type="t"),
        M.JobSpec(type="t", ttl_ms=SECOND_MS),
        commit=True,
        callbacks=M.BatchCallbacks(complete=M.JobSpec(type="done", queue="cb")),
    )
    core.ack(core.lease())  # the first; the second expires
    core.advance(SECOND_MS)
    view = core.batch(created.id)
    assert (view.pending, view.dead, view.state) == (0, 1, "finished")
    assert core.ready_ids("cb") != []


def test_an_expiry_in_the_past_is_refused_and_both_forms_together_too() -> None:
    core = Core()
    spec = M.JobSpec(type="t", expires_at_ms=START_MS)
    error = core.refused(M.Push(core.next_rid(), spec), ErrorCode.BAD_REQUEST)
    assert error.path == "$.job.expires_at_ms"
    decode = msgspec.msgpack.Decoder(M.JobSpec).decode
    for bad in (
        {"type": "t", "ttl_ms": 0},
        {"type": "t", "ttl_ms": 5, "expires_at_ms": START_MS + 10},
        {"type": "t", "expires_at_ms": -1},
    ):
        with pytest.raises(msgspec.ValidationError):
            decode(msgspec.msgpack.encode(bad))


def test_expiries_survive_a_restart_and_the_state_image() -> None:
    core = Core()
    waiting = core.push(ttl_ms=60 * SECOND_MS)
    core.push(id="held", ttl_ms=SECOND_MS)
    for _ in range(8):  # past the harness's image interval
        core.push()
    core.restart()
    assert core.job(waiting.id).expires_ms == START_MS + 60 * SECOND_MS
    expired = core.advance(60 * SECOND_MS)
    assert [r for r in expired if isinstance(r, R.JobsExpired)] == [
        R.JobsExpired(["held", waiting.id], core.now_ms)
    ]
