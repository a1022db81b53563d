"""Replay in runs (core.Replay): the cases its rules are for, one by one.

Each test makes a journal with the real core (the harness's Core), checks
that the replay defers what the case is about (the job is remembered, not
built, when the record that reads it comes), then that the replay gives the
live state: ``canonical``, every index consistent, each owner's leases in
order. The random journals of tests/property/test_replay_runs.py cover the
mixtures.
"""

import pytest

from leash.broker.core import Record, Replay, State, canonical, check_invariants
from leash.broker.core import records as R
from leash.protocol import admin as A
from leash.protocol import messages as M
from tests.unit.test_core_harness import Core, core_config, replay

SECOND_MS = 1000


def spec(**fields: object) -> M.JobSpec:
    return M.JobSpec(type="t", queue="q", **fields)  # type: ignore[arg-type]


def deferred_when(records: list[Record], kind: type, core: Core) -> set[str]:
    """The jobs a replay holds deferred when the first record of ``kind`` comes."""
    runs = Replay(State(core.config))
    for record in records:
        if isinstance(record, kind):
            return runs.deferred()
        runs.apply(record)
    raise AssertionError(f"no {kind.__name__} record")


def assert_replays(core: Core) -> None:
    for bound in (1, 2, 1 << 16):
        replayed = replay(core.records, core.config, bound)
        assert check_invariants(replayed) == [], bound
        assert canonical(replayed) == canonical(core.state), bound
        owners = {o: list(ids) for o, ids in replayed.leases_by_owner.items()}
        assert owners == {o: list(ids) for o, ids in core.state.leases_by_owner.items()}


def test_a_job_pushed_leased_and_acked_in_the_run_is_never_built() -> None:
    core = Core()
    done = core.push(queue="q", type="t").id
    kept = core.push(queue="q", type="t").id
    core.ack(core.lease("q"))
    runs = Replay(State(core.config))
    for record in core.records:
        runs.apply(record)
    assert done not in runs.state.jobs and kept not in runs.state.jobs  # both deferred
    assert runs.deferred() == {kept}  # the acked one is forgotten
    state = runs.finish()
    assert list(state.jobs) == [kept] and canonical(state) == canonical(core.state)


def test_older_deferred_jobs_stay_ahead_of_a_batch_callback_in_their_bucket() -> None:
    core = Core()
    batch = core.create_batch(spec(), callbacks=M.BatchCallbacks(success=spec()), commit=True)
    member = core.lease("q")
    waiting = [core.push(queue="q", type="t").id for _ in range(3)]
    core.ack(member)  # the batch succeeds: its callback is pushed behind the waiting jobs
    assert core.ready_ids("q")[:3] == waiting and len(core.ready_ids("q")) == 4, batch
    assert set(waiting) <= deferred_when(core.records, R.JobsAcked, core)
    assert_replays(core)


def test_older_deferred_jobs_stay_ahead_of_a_death_callback_named_by_a_failure() -> None:
    core = Core()
    core.create_batch(spec(max_attempts=1), callbacks=M.BatchCallbacks(death=spec()), commit=True)
    member = core.lease("q")
    waiting = [core.push(queue="q", type="t").id for _ in range(2)]
    core.fail(member)  # the member dies: the death callback goes behind the waiting jobs
    assert core.ready_ids("q")[:2] == waiting and len(core.ready_ids("q")) == 3
    assert set(waiting) <= deferred_when(core.records, R.AttemptsFailed, core)
    assert_replays(core)


def test_a_deferred_lease_released_by_a_terminated_process_goes_to_the_front() -> None:
    core = Core(terminate_grace_ms=500)
    older = core.push(queue="q", type="t").id
    held = core.push(queue="q", type="t").id
    newer = core.push(queue="q", type="t").id
    core.fetch("q")  # takes the older one
    delivery = core.lease("q")
    assert delivery.id == held
    core.send(A.Control(core.next_rid(), "w1", "terminate"))
    core.advance(501)  # the terminate grace ends: the process dies, its leases released
    assert core.ready_ids("q") == [held, older, newer]  # each released to the front
    assert held in deferred_when(core.records, R.ProcessDied, core)
    assert_replays(core)


def test_a_deferred_lease_that_fails_is_built_leased_then_failed() -> None:
    core = Core()
    core.push(queue="q", type="t", max_attempts=2, retry_base_ms=1)
    behind = core.push(queue="q", type="t").id
    delivery = core.lease("q")
    core.fail(delivery)  # a failure naming the deferred job: retrying, in no bucket
    assert core.job(delivery.id).state == "retrying"
    deferred = deferred_when(core.records, R.AttemptsFailed, core)
    assert {delivery.id, behind} <= deferred
    assert_replays(core)


def test_a_deferred_lease_that_expires_waits_behind_the_older_deferred_jobs() -> None:
    core = Core()
    core.push(queue="q", type="t", lease_ttl_ms=SECOND_MS)
    behind = core.push(queue="q", type="t").id
    delivery = core.lease("q")
    core.advance(SECOND_MS)  # the lease is lost: ready again at once, at the back
    assert core.ready_ids("q") == [behind, delivery.id]
    assert {delivery.id, behind} <= deferred_when(core.records, R.AttemptsFailed, core)
    assert_replays(core)  # the replay builds the older one before the lost lease


def test_a_queue_dropped_and_paused_while_its_jobs_are_deferred() -> None:
    core = Core()
    core.push(queue="q", type="t")
    first = core.lease("q")
    deferred = core.push(queue="q", type="t").id
    core.ack(first)  # the queue's only built job goes: a replay drops the queue for now
    core.pause("q")  # and makes it again, paused, before the deferred job is built
    core.resume("q")
    core.pause("q")
    assert core.state.queues["q"].paused and core.ready_ids("q") == [deferred]
    assert_replays(core)


def test_past_the_bound_the_older_deferred_jobs_are_built_in_push_order() -> None:
    core = Core()
    ids = [core.push(queue="q", type="t", priority=p).id for p in (1, 2, 1, 2, 1, 2, 1)]
    for _ in range(2):
        core.ack(core.lease("q"))
    runs = Replay(State(core.config), deferred_max=2)
    for record in core.records:
        runs.apply(record)
        assert len(runs.deferred()) <= 2
    assert canonical(runs.finish()) == canonical(core.state), ids
    assert_replays(core)


def test_a_push_of_a_known_id_fails_the_replay_as_apply_does() -> None:
    core = Core()
    job_id = core.push(queue="q", type="t", id="dup").id
    push = next(r for r in core.records if isinstance(r, R.JobsPushed))
    runs = Replay(State(core_config()))
    for record in core.records:
        runs.apply(record)
    with pytest.raises(AssertionError, match=job_id):
        runs.apply(push)
