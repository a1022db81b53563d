"""Batches over their whole life: nesting, the open timeout, retention,
deleting a batch, the status view and fsck. On the harness's ``Core``
(invariants and replay checked after every record)."""

from leash.broker.core import State, canonical, check_invariants
from leash.broker.core import records as R
from leash.broker.core.batches.state import callback_id
from leash.broker.core.state import live_batch_deadline
from leash.protocol import admin as A
from leash.protocol import limits as L
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from tests.unit.test_core_batches import CALLBACKS, committed_batch, fired, spec
from tests.unit.test_core_harness import SECOND_MS, Core

MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS


def mentions(state: State, batch_id: str, text: str | None = None) -> list[str]:
    """Where the state still refers to a batch: its table entry, jobs that name it,
    batches that name it as parent or child, live timer entries (stale heap
    entries are dropped as they reach the front), and, in the canonical form
    of the whole state (``text``: its repr, if already made), the id as a
    string of its own anywhere. Callback jobs are jobs of their own: their ids
    contain the batch id, but they are not its bookkeeping."""
    found = []
    if batch_id in state.batches:
        found.append("batches")
    found += [f"job {j.id}" for j in state.jobs.values() if j.batch == batch_id]
    for other in state.batches.values():
        if other.parent == batch_id or batch_id in other.children:
            found.append(f"batch {other.id}")
    timers = [e for e in state.batch_deadlines if live_batch_deadline(state, e)]
    found += [f"timer {e}" for e in timers if e[1] == batch_id]
    if repr(batch_id) in (text if text is not None else repr(canonical(state))):
        found.append("canonical")
    return found


# --- nesting -------------------------------------------------------------------


def nest(core: Core, *child_jobs: M.JobSpec) -> None:
    """Parent "p" with job "pj" and child "c" (job "cj", or those given), both
    committed and with callbacks."""
    core.create_batch(spec("pj"), id="p", callbacks=CALLBACKS)
    jobs = child_jobs or (spec("cj"),)
    core.create_batch(*jobs, id="c", parent="p", callbacks=CALLBACKS, commit=True)
    core.commit_batch("p")


def test_a_parent_finishes_only_after_its_child_and_the_childs_callbacks() -> None:
    core = Core()
    nest(core)
    jobs = {d.id: d for d in core.fetch(count=2)}
    core.ack(jobs["pj"])
    assert core.batch("p").state == "committed"
    core.ack(jobs["cj"])
    assert core.batch("c").state == "finished"
    parent = core.batch("p")
    assert parent.state == "committed" and parent.pending == 2  # the child's two callbacks
    assert {m.id for m in parent.members} == {
        callback_id(core.state.batches["c"], kind) for kind in ("success", "complete")
    }
    for delivery in core.fetch("cb", count=2):
        core.ack(delivery)
    assert core.batch("p").state == "finished" and fired(core, "p") == ["complete", "success"]


def test_a_childs_callback_may_add_to_its_committed_parent() -> None:
    core = Core()
    nest(core)
    for delivery in core.fetch(count=2):
        core.ack(delivery)
    on_complete, on_success = sorted(core.fetch("cb", count=2), key=lambda d: d.type)
    lease = M.LeaseRef(on_success.id, on_success.token)
    core.expect(M.Push(9, spec("step2", batch="p"), lease=lease), M.Pushed)
    core.ack(on_success)
    core.ack(on_complete)
    assert core.batch("p").state == "committed"
    core.ack(core.lease())
    assert core.batch("p").succeeded


def test_a_death_below_fires_the_death_callbacks_of_the_child_and_the_parent_once() -> None:
    core = Core()
    core.create_batch(id="p", callbacks=CALLBACKS)
    core.create_batch(spec("cj"), id="c", parent="p", callbacks=CALLBACKS)
    core.create_batch(spec("gj", max_attempts=1), id="g", parent="c", commit=True)
    core.commit_batch("p")
    grandchild_job = next(d for d in core.fetch(count=2) if d.id == "gj")
    core.fail(grandchild_job)
    assert fired(core, "c") == [] and fired(core, "p") == ["death"]  # c is still open
    core.commit_batch("c")
    assert fired(core, "c") == ["death"] and fired(core, "p") == ["death"]
    assert core.batch("g").died_ms == core.batch("p").died_ms


def test_a_parent_with_a_failed_child_completes_but_does_not_succeed() -> None:
    core = Core()
    core.create_batch(spec("pj"), id="p", callbacks=CALLBACKS)
    core.create_batch(spec("cj"), id="c", parent="p", commit=True)
    core.create_batch(spec("x", max_attempts=1), id="c2", parent="p", commit=True)
    core.commit_batch("p")
    for delivery in core.fetch(count=3):
        if delivery.id == "x":
            core.fail(delivery)
        else:
            core.ack(delivery)
    for delivery in core.fetch("cb", count=10):
        core.ack(delivery)
    view = core.batch("p")
    assert (view.state, view.succeeded, view.children, view.children_pending) == (
        "finished",
        False,
        2,
        0,
    )
    assert fired(core, "p") == ["complete", "death"]


def test_a_committed_parent_takes_a_child_only_from_a_running_member() -> None:
    core = Core()
    committed_batch(core, spec("a"), id="p")
    core.refused(M.CreateBatch(9, id="c", parent="p"), ErrorCode.INVALID_STATE)
    held = core.lease()
    request = M.CreateBatch(10, id="c", parent="p", lease=M.LeaseRef(held.id, held.token))
    core.expect(request, M.BatchCreated)
    core.ack(held)
    assert core.batch("p").state == "committed"  # waits for its open child
    core.commit_batch("c")
    assert core.batch("p").state == "finished"


def test_a_child_of_an_unknown_or_finished_batch_is_refused() -> None:
    core = Core()
    assert core.refused(M.CreateBatch(9, parent="nope"), ErrorCode.NOT_FOUND).path == "$.parent"
    committed_batch(core, id="done")
    core.refused(M.CreateBatch(10, parent="done"), ErrorCode.INVALID_STATE)


def test_batches_nest_at_most_batch_depth_max_levels() -> None:
    core = Core()
    parent = None
    for level in range(L.BATCH_DEPTH_MAX):
        parent = core.create_batch(id=f"level-{level}", parent=parent).id
    error = core.refused(M.CreateBatch(9, parent=parent), ErrorCode.BAD_REQUEST)
    assert error.path == "$.parent"


def test_deleting_an_unfinished_child_does_not_block_its_parent() -> None:
    core = Core()
    nest(core)
    core.ack(next(d for d in core.fetch(count=2) if d.id == "pj"))
    core.expect(A.DeleteBatch(9, "c"), M.Ok)
    view = core.batch("p")
    assert (view.state, view.succeeded) == ("finished", True)
    assert core.state.jobs["cj"].batch is None  # its job goes on as an ordinary job
    assert mentions(core.state, "c") == []


# --- the open timeout --------------------------------------------------------------


def test_an_open_batch_not_committed_in_time_is_abandoned_and_its_jobs_run_on() -> None:
    core = Core(batch_open_timeout_ms=30 * MINUTE_MS)
    core.create_batch(spec("a"), spec("c"), id="b", callbacks=CALLBACKS)
    core.ack(core.lease())
    assert core.advance(30 * MINUTE_MS - 1) == []
    (record,) = core.advance(1)
    assert record == R.BatchesAbandoned(["b"], core.now_ms)
    view = core.batch("b")
    assert (view.state, view.total, view.pending, view.finished_ms) == (
        "abandoned",
        1,
        0,
        core.now_ms,
    )
    assert core.state.jobs["c"].batch is None
    core.ack(core.lease())
    assert core.batch("b").fired == []  # never: half the work must not look like success
    core.refused(M.CommitBatch(9, "b"), ErrorCode.INVALID_STATE)
    core.refused(M.Push(10, spec("late", batch="b")), ErrorCode.INVALID_STATE)


def test_a_committed_batch_is_never_abandoned() -> None:
    core = Core(batch_open_timeout_ms=MINUTE_MS)
    core.create_batch(spec("a"), id="b")
    core.commit_batch("b")
    core.advance(2 * MINUTE_MS)
    assert core.batch("b").state == "committed"


def test_an_abandoned_child_counts_as_failed_for_its_parent() -> None:
    core = Core(batch_open_timeout_ms=MINUTE_MS)
    core.create_batch(id="p", callbacks=CALLBACKS, commit=False)
    core.create_batch(spec("cj"), id="c", parent="p")
    core.advance(MINUTE_MS // 2)
    core.commit_batch("p")
    core.advance(MINUTE_MS // 2)
    view = core.batch("p")
    assert (view.state, view.succeeded) == ("finished", False)
    assert fired(core, "p") == ["complete"]
    assert core.state.jobs["cj"].batch is None


# --- retention ---------------------------------------------------------------------


def test_a_finished_batch_is_removed_whole_after_its_retention() -> None:
    core = Core(batch_finished_retention_ms=DAY_MS, history_max_age_ms=2 * DAY_MS)
    committed_batch(core, spec("a", max_attempts=1), spec("c"))
    core.fail(core.lease())
    core.ack(core.lease())
    assert core.batch("b").expires_ms == core.now_ms + DAY_MS
    core.advance(DAY_MS - 1)
    assert core.batch("b").state == "finished"
    (record,) = core.advance(1)
    assert record == R.BatchesExpired(["b"], core.now_ms)
    core.refused(M.GetBatchStatus(9, "b"), ErrorCode.NOT_FOUND)
    assert mentions(core.state, "b") == []
    assert core.state.jobs["a"].state == "dead"  # the dead job stays in the dead set


def test_an_unfinished_batch_is_removed_after_its_retention_and_its_jobs_go_on() -> None:
    core = Core(batch_unfinished_retention_ms=30 * DAY_MS, batch_finished_retention_ms=DAY_MS)
    committed_batch(core, spec("a", queue="idle"), id="p")
    held = core.lease("idle")
    lease = M.LeaseRef(held.id, held.token)
    request = M.CreateBatch(9, id="c", parent="p", lease=lease, commit=True, jobs=[spec("cj")])
    core.expect(request, M.BatchCreated)
    core.advance(30 * DAY_MS)
    assert core.state.batches == {}
    assert mentions(core.state, "p") == [] and mentions(core.state, "c") == []
    assert core.state.jobs["a"].batch is None and core.state.jobs["cj"].batch is None


def test_deleting_a_batch_removes_everything_at_once_and_detaches_its_jobs() -> None:
    core = Core()
    core.create_batch(spec("a"), spec("c", max_attempts=1), id="b", callbacks=CALLBACKS)
    core.create_batch(id="child", parent="b")
    core.commit_batch("b")
    core.fail(core.fetch(count=2)[1])
    outcome = core.send(A.DeleteBatch(9, "b"))
    assert outcome.records == [R.BatchDeleted("b", core.now_ms)]
    assert mentions(core.state, "b") == []
    assert core.batch("child").parent is None
    assert core.state.jobs["c"].batch is None  # dead: stays in the dead set, detached
    core.refused(A.DeleteBatch(10, "b"), ErrorCode.NOT_FOUND)


def test_batch_expiry_touches_at_most_tick_max_items_per_record() -> None:
    core = Core(tick_max_items=3, batch_finished_retention_ms=DAY_MS)
    for n in range(5):
        committed_batch(core, id=f"b{n}", callbacks=M.BatchCallbacks())
    records = core.advance(DAY_MS)
    assert [len(r.ids) for r in records if isinstance(r, R.BatchesExpired)] == [3, 2]
    assert core.state.batches == {}


# --- status and fsck -----------------------------------------------------------------


def test_status_lists_the_unfinished_members_and_their_holders_up_to_the_limit() -> None:
    core = Core()
    committed_batch(core, *[spec(f"j{n}") for n in range(5)], description="five")
    core.ack(core.lease())
    held = core.lease(worker="w7")
    view = core.batch("b", limit=2)
    assert (view.description, view.total, view.pending) == ("five", 5, 4)
    assert view.members == [
        M.MemberView("j1", "pending", "leased", "w7"),
        M.MemberView("j2", "pending", "ready"),
    ]
    assert view.more_members
    assert not core.batch("b", limit=4).more_members
    assert held.id == "j1"


def test_status_of_an_unknown_batch_is_not_found() -> None:
    core = Core()
    assert core.refused(M.GetBatchStatus(9, "nope"), ErrorCode.NOT_FOUND).path == "$.id"


def test_fsck_finds_nothing_in_a_consistent_state() -> None:
    core = Core()
    nest(core)
    core.fail(core.lease())
    report = core.expect(A.Fsck(9), A.FsckReport)
    assert report == A.FsckReport(9, [], False, len(core.state.jobs), 2)


def test_fsck_finds_a_ghost_member_a_wrong_count_and_a_stuck_batch() -> None:
    core = Core()
    committed_batch(core, spec("a"), spec("c"))
    state = core.state
    state.jobs.pop("a")  # a ghost: the batch waits for a job that is gone
    state.counts["ready"] -= 1
    state.queues["default"].buckets[5].discard("a")
    state.queues["default"].ready -= 1
    state.batches["b"].tally["retrying"] += 1
    problems = check_invariants(state)
    assert any("pending member a with no such job" in p for p in problems), problems
    assert any("tallies" in p for p in problems), problems
    state.batches["b"].tally["retrying"] -= 1
    state.batches["b"].members["a"] = state.batches["b"].members["c"] = "succeeded"
    state.batches["b"].tally.update(pending=0, succeeded=2)
    state.jobs.pop("c")
    state.counts["ready"] -= 1
    del state.queues["default"]
    assert any("stuck" in p for p in check_invariants(state)), check_invariants(state)
