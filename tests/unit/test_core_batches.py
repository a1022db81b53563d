"""Batches in the core, one rule a test: membership, judging, callbacks,
failures and deaths, operator deletes, kills and requeues.

Every test runs on the harness's ``Core``, which round-trips each record,
replays it into a shadow state and runs ``check_invariants`` (with the batch
cross-checks) after every record. Nesting, open timeouts, retention, status
and fsck are in test_core_batch_life.py.
"""

from typing import Any

from leash.broker.core import records as R
from leash.broker.core.batches.state import callback_id
from leash.protocol import admin as A
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from tests.unit.test_core_harness import SECOND_MS, START_MS, Core

CALLBACKS = M.BatchCallbacks(
    success=M.JobSpec(type="on_success", queue="cb"),
    complete=M.JobSpec(type="on_complete", queue="cb"),
    death=M.JobSpec(type="on_death", queue="cb"),
)


def spec(job_id: str | None = None, **fields: Any) -> M.JobSpec:
    return M.JobSpec(type=fields.pop("type", "t"), id=job_id, **fields)


def callback_jobs(core: Core, batch_id: str) -> dict[str, str]:
    """The callback jobs of a batch that exist now: kind -> job state."""
    batch = core.state.batches[batch_id]
    found = {}
    for kind in ("success", "complete", "death"):
        job = core.state.jobs.get(callback_id(batch, kind))
        if job is not None:
            found[kind] = job.state
    return found


def fired(core: Core, batch_id: str) -> list[str]:
    return sorted(f.kind for f in core.batch(batch_id).fired)


def committed_batch(core: Core, *jobs: M.JobSpec, **fields: Any) -> str:
    fields.setdefault("id", "b")
    fields.setdefault("callbacks", CALLBACKS)
    return core.create_batch(*jobs, commit=True, **fields).id


# --- membership ------------------------------------------------------------------


def test_a_batch_created_with_jobs_makes_them_members_in_the_same_record() -> None:
    core = Core()
    outcome = core.send(M.CreateBatch(1, id="b", jobs=[spec("a"), spec()], commit=True))
    assert [type(record) for record in outcome.records] == [R.BatchOpened]
    reply = outcome.reply
    assert isinstance(reply, M.BatchCreated)
    assert (reply.id, reply.created, reply.state) == ("b", True, "committed")
    ids = [result.id for result in reply.results]
    assert ids[0] == "a" and ids[1].startswith("_")
    assert all(core.state.jobs[job_id].batch == "b" for job_id in ids)
    view = core.batch("b")
    assert (view.total, view.pending, view.state) == (2, 2, "committed")
    assert [m.id for m in view.members] == ids


def test_creating_a_batch_whose_id_is_known_changes_nothing() -> None:
    core = Core()
    core.create_batch(spec("a"), id="b")
    outcome = core.send(M.CreateBatch(2, id="b", jobs=[spec("c")], commit=True))
    assert outcome.reply == M.BatchCreated(2, "b", False, "open", [])
    assert outcome.records == []
    assert "c" not in core.state.jobs


def test_a_broker_made_batch_id_starts_with_an_underscore_and_never_repeats() -> None:
    core = Core()
    first = core.create_batch().id
    second = core.create_batch().id
    core.restart()
    third = core.create_batch().id
    assert all(batch_id.startswith("_") for batch_id in (first, second, third))
    assert len({first, second, third}) == 3


def test_an_open_batch_is_judged_only_once_committed() -> None:
    core = Core()
    core.create_batch(spec("a"), id="b", callbacks=CALLBACKS)
    core.ack(core.lease())
    assert core.batch("b").state == "open" and fired(core, "b") == []
    outcome = core.commit_batch("b")
    assert outcome.records == [R.BatchCommitted("b", core.now_ms)]
    assert core.batch("b").state == "finished"
    assert callback_jobs(core, "b") == {"success": "ready", "complete": "ready"}


def test_an_empty_batch_committed_at_once_succeeds_at_once() -> None:
    core = Core()
    committed_batch(core)
    view = core.batch("b")
    assert (view.state, view.succeeded, view.total) == ("finished", True, 0)
    assert fired(core, "b") == ["complete", "success"]


def test_committing_twice_changes_nothing_the_second_time() -> None:
    core = Core()
    core.create_batch(spec("a"), id="b")
    assert core.commit_batch("b").records != []
    assert core.commit_batch("b").records == []
    assert core.commit_batch("b").reply == M.Ok(core.rid)


def test_anyone_may_add_jobs_to_an_open_batch() -> None:
    core = Core()
    core.create_batch(id="b")
    core.push(id="x", batch="b")
    core.push_many(spec("y", batch="b"), spec("z"))
    assert core.batch("b").total == 2
    assert core.state.jobs["z"].batch is None


def test_a_committed_batch_takes_no_jobs_without_a_members_lease() -> None:
    core = Core()
    committed_batch(core, spec("a"))
    error = core.refused(M.Push(9, spec("x", batch="b")), ErrorCode.INVALID_STATE)
    assert error.path == "$.job.batch"


def test_a_running_member_adds_to_its_committed_batch_which_waits_for_both() -> None:
    core = Core()
    committed_batch(core, spec("split"))
    split = core.lease()
    lease = M.LeaseRef(split.id, split.token)
    core.expect(M.Push(9, spec("part", batch="b"), lease=lease), M.Pushed)
    core.ack(split)
    assert core.batch("b").state == "committed" and fired(core, "b") == []
    core.ack(core.lease())
    assert fired(core, "b") == ["complete", "success"]


def test_a_stale_lease_cannot_add_to_a_committed_batch() -> None:
    core = Core()
    committed_batch(core, spec("a"), spec("b2"))
    held = core.lease()
    core.release(held)
    error = core.refused(
        M.Push(9, spec("x", batch="b"), lease=M.LeaseRef(held.id, held.token)),
        ErrorCode.STALE_LEASE,
    )
    assert error.path == "$.lease[1]"


def test_the_lease_of_a_job_outside_the_batch_cannot_add_to_it() -> None:
    core = Core()
    committed_batch(core, spec("a"))
    core.push(id="outsider", queue="other")
    outsider = core.lease("other")
    lease = M.LeaseRef(outsider.id, outsider.token)
    core.refused(M.Push(9, spec("x", batch="b"), lease=lease), ErrorCode.INVALID_STATE)


def test_a_finished_batch_takes_nothing() -> None:
    core = Core()
    committed_batch(core)
    core.refused(M.Push(9, spec("x", batch="b")), ErrorCode.INVALID_STATE)


def test_a_push_to_an_unknown_batch_is_not_found() -> None:
    core = Core()
    error = core.refused(M.PushMany(9, [spec(), spec(batch="nope")]), ErrorCode.NOT_FOUND)
    assert error.path == "$.jobs[1].batch"


def test_pushing_an_acked_members_id_into_its_batch_again_creates_nothing() -> None:
    core = Core()
    core.create_batch(spec("a"), id="b")
    core.ack(core.lease())
    pushed = core.push(id="a", batch="b")
    assert (pushed.created, pushed.state) == (False, "succeeded")
    assert core.batch("b").total == 1 and "a" not in core.state.jobs


def test_the_jobs_of_a_new_batch_may_not_name_another_batch() -> None:
    core = Core()
    core.create_batch(id="other")
    request = M.CreateBatch(9, id="b", jobs=[spec("a", batch="other")])
    assert core.refused(request, ErrorCode.BAD_REQUEST).path == "$.jobs[0].batch"


def test_a_callback_spec_with_its_own_id_or_batch_is_refused() -> None:
    core = Core()
    for callback, path in [
        (M.BatchCallbacks(success=spec("mine")), "$.callbacks.success.id"),
        (M.BatchCallbacks(death=spec(batch="x")), "$.callbacks.death.batch"),
    ]:
        error = core.refused(M.CreateBatch(9, callbacks=callback), ErrorCode.BAD_REQUEST)
        assert error.path == path
    assert core.state.batches == {}


# --- callbacks ---------------------------------------------------------------------


def test_the_last_ack_finishes_the_batch_and_enqueues_its_callbacks_in_one_record() -> None:
    core = Core()
    committed_batch(core, spec("a"), spec("c"))
    first, second = core.fetch(count=2)
    core.ack(first)
    assert callback_jobs(core, "b") == {}
    outcome = core.send(M.Ack(9, second.id, second.token))
    assert [type(record) for record in outcome.records] == [R.JobsAcked]
    assert callback_jobs(core, "b") == {"success": "ready", "complete": "ready"}
    view = core.batch("b")
    assert (view.state, view.succeeded, view.finished_ms) == ("finished", True, core.now_ms)


def test_callback_jobs_carry_their_spec_and_a_broker_made_id() -> None:
    core = Core()
    callbacks = M.BatchCallbacks(
        success=M.JobSpec(type="done", queue="q", priority=9, max_attempts=2, lease_ttl_ms=5_000)
    )
    core.create_batch(id="b", callbacks=callbacks, commit=True)
    (fired_view,) = core.batch("b").fired
    assert fired_view.job_id.startswith("_cb:b:") and fired_view.job_id.endswith(":success")
    job = core.job(fired_view.job_id)
    assert (job.type, job.queue, job.priority, job.max_attempts, job.lease_ttl_ms) == (
        "done",
        "q",
        9,
        2,
        5_000,
    )
    assert job.batch is None  # a callback is not a member of its own batch


def test_a_callback_with_a_delay_is_scheduled_from_the_firing_time() -> None:
    core = Core()
    core.create_batch(spec("a"), id="b", callbacks=M.BatchCallbacks(success=spec(delay_ms=500)))
    core.advance(10 * SECOND_MS)
    core.commit_batch("b")
    core.ack(core.lease())
    (fired_view,) = core.batch("b").fired
    job = core.job(fired_view.job_id)
    assert (job.state, job.run_at_ms) == ("scheduled", core.now_ms + 500)


def test_complete_fires_once_every_member_ran_and_success_waits_for_the_retry() -> None:
    core = Core()
    committed_batch(core, spec("a"), spec("c", retry_base_ms=1_000))
    a, c = core.fetch(count=2)
    core.fail(c)
    assert fired(core, "b") == []
    core.ack(a)
    view = core.batch("b")
    assert fired(core, "b") == ["complete"]
    assert (view.state, view.pending, view.failures, view.complete_ms) == (
        "committed",
        1,
        1,
        core.now_ms,
    )
    assert [(m.id, m.state) for m in view.members] == [("c", "retrying")]
    core.advance(2 * SECOND_MS)
    core.ack(core.lease())
    assert fired(core, "b") == ["complete", "success"]
    assert core.batch("b").failures == 0


def test_death_fires_on_the_first_death_only_and_success_never() -> None:
    core = Core()
    committed_batch(core, spec("a", max_attempts=1), spec("c", max_attempts=1), spec("d"))
    a, c, d = core.fetch(count=3)
    assert core.fail(a).state == "dead"
    assert fired(core, "b") == ["death"]
    core.fail(c)
    core.ack(d)
    view = core.batch("b")
    assert fired(core, "b") == ["complete", "death"]
    assert (view.state, view.succeeded, view.dead, view.failures, view.pending) == (
        "finished",
        False,
        2,
        2,
        0,
    )
    assert core.state.jobs["a"].batch is None  # dead jobs of a finished batch are detached


def test_a_duplicate_or_stale_ack_of_a_member_changes_nothing() -> None:
    core = Core()
    committed_batch(core, spec("a"), spec("c"))
    a = core.lease()
    core.ack(a)
    before = core.batch("b")
    core.refused(M.Ack(9, a.id, a.token), ErrorCode.NOT_FOUND)
    core.release(c := core.lease())
    core.refused(M.Ack(9, c.id, c.token), ErrorCode.STALE_LEASE)
    core.refused(M.Fail(9, c.id, c.token), ErrorCode.STALE_LEASE)
    assert core.batch("b") == before
    assert callback_jobs(core, "b") == {}


def test_a_lease_expiry_is_a_failed_attempt_for_the_batch() -> None:
    core = Core()
    committed_batch(core, spec("a", max_attempts=1, lease_ttl_ms=SECOND_MS))
    core.lease()
    core.advance(SECOND_MS)
    view = core.batch("b")
    assert (view.state, view.dead) == ("finished", 1)
    assert fired(core, "b") == ["complete", "death"]


def test_a_worker_death_fails_the_attempts_of_its_members() -> None:
    core = Core(process_ttl_ms=15 * SECOND_MS)
    committed_batch(core, spec("a", retry_base_ms=1_000))
    core.lease(worker="doomed")
    core.advance(16 * SECOND_MS)
    assert [(m.id, m.state) for m in core.batch("b").members] == [("a", "retrying")]
    assert fired(core, "b") == ["complete"]


# --- operators -------------------------------------------------------------------


def test_a_deleted_member_never_blocks_and_does_not_prevent_success() -> None:
    core = Core()
    committed_batch(core, spec("a"), spec("stuck", queue="paused-forever"))
    core.ack(core.lease())
    assert core.batch("b").state == "committed"
    core.expect(A.DeleteJob(9, "stuck"), M.Ok)
    view = core.batch("b")
    assert (view.state, view.succeeded, view.deleted, view.pending) == ("finished", True, 1, 0)
    assert fired(core, "b") == ["complete", "success"]


def test_deleting_a_leased_job_ends_its_lease_for_its_holder() -> None:
    core = Core()
    core.push(id="a")
    held = core.lease()
    core.expect(A.DeleteJob(9, "a"), M.Ok)
    core.refused(M.Ack(10, held.id, held.token), ErrorCode.NOT_FOUND)
    assert core.state.leases_by_owner == {}
    core.refused(A.DeleteJob(11, "a"), ErrorCode.NOT_FOUND)


def test_killing_a_member_is_a_death_for_its_batch_and_its_holder_is_stale() -> None:
    core = Core()
    committed_batch(core, spec("a"), spec("c"))
    held = core.lease()
    core.expect(A.KillJob(9, held.id), M.Ok)
    assert core.job(held.id).state == "dead"
    assert core.job(held.id).last_error == M.ErrorInfo("Killed", "killed by an operator")
    assert fired(core, "b") == ["death"]
    core.refused(M.Ack(10, held.id, held.token), ErrorCode.STALE_LEASE)


def test_killing_a_dead_job_changes_nothing() -> None:
    core = Core()
    core.push(id="a", max_attempts=1)
    core.fail(core.lease())
    assert core.send(A.KillJob(9, "a")).records == []


def test_requeueing_a_dead_member_of_an_unfinished_batch_lets_it_still_succeed() -> None:
    core = Core()
    committed_batch(core, spec("a", max_attempts=1), spec("c"))
    core.fail(core.lease())
    assert fired(core, "b") == ["death"]
    core.expect(A.RequeueJob(9, "a"), M.Ok)
    job = core.job("a")
    assert (job.state, job.attempt) == ("ready", 0)
    assert [(m.id, m.state) for m in core.batch("b").members] == [
        ("a", "retrying"),
        ("c", "pending"),
    ]
    for delivery in core.fetch(count=2):
        core.ack(delivery)
    assert fired(core, "b") == ["complete", "death", "success"]


def test_a_dead_job_of_a_finished_batch_requeued_runs_as_an_ordinary_job() -> None:
    core = Core()
    committed_batch(core, spec("a", max_attempts=1))
    core.fail(core.lease())
    before = core.batch("b")
    assert before.state == "finished"
    core.expect(A.RequeueJob(9, "a"), M.Ok)
    core.ack(core.lease())
    assert core.batch("b") == before  # callbacks never fire twice
    assert sorted(callback_jobs(core, "b")) == ["complete", "death"]


def test_deleting_a_dead_member_of_an_unfinished_batch_lets_it_succeed() -> None:
    core = Core()
    committed_batch(core, spec("a", max_attempts=1), spec("c"))
    core.fail(core.lease())
    core.expect(A.DeleteJob(9, "a"), M.Ok)
    core.ack(core.lease())
    assert core.batch("b").succeeded


def test_only_a_dead_or_retrying_job_is_requeued() -> None:
    core = Core()
    core.push(id="a")
    core.refused(A.RequeueJob(9, "a"), ErrorCode.INVALID_STATE)
    core.fail(core.lease())
    core.expect(A.RequeueJob(10, "a"), M.Ok)
    assert core.job("a").state == "ready" and core.job("a").attempt == 1
    core.refused(A.RequeueJob(11, "nope"), ErrorCode.NOT_FOUND)


def test_a_restart_replays_the_batches_to_the_same_state() -> None:
    core = Core()
    committed_batch(core, spec("a", max_attempts=1), spec("c"))
    core.fail(core.lease())
    before = core.batch("b")
    core.restart()  # the harness checks that the replayed state equals the live one
    assert core.batch("b") == before
    core.ack(core.lease())
    assert core.batch("b").state == "finished" and core.now_ms == START_MS
