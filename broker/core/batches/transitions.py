"""Batch transitions: what a record means for the batches, run inside apply.

Theory of operation. Every batch consequence is derived here, while the
record that causes it is applied: the ack of a last member finishes its
batch, enqueues the batch's callback jobs and, cascading, finishes its
parents — all in that one record. Live and replay run the same code, so
they agree; a torn journal tail cannot cut a transition from its callback,
because they belong to one record. Each function that can fire callbacks
returns the callback jobs for apply to create (their memberships, if any,
are already recorded here).

Rules (state.py has the words):
- A job joins a batch in the record that creates it, and leaves it when
  its member state becomes final: ``succeeded`` and ``deleted`` jobs are
  gone from the jobs table, ``dead`` ones are detached when the batch
  finishes. A job names a batch only while that batch is unfinished.
- A batch is judged only once committed (``_judge``): complete fires the
  first time no item is unrun, the batch finishes when no item is
  unfinished, and succeeds if nothing below failed. Death fires on the
  first death of a member, in the batch and in every ancestor (an open
  batch fires it when committed). Each callback fires at most once: its
  kind is recorded in ``fired`` in the same step.
- A child batch's callback jobs are members of its parent, so a parent
  waits for them (and they may add to it).
- Abandoning, deleting or expiring a batch detaches what is still live —
  member jobs go on as ordinary jobs, child batches become top-level —
  and judges the parent again in the same record.
"""

import heapq
from typing import TypeVar, assert_never

from leash.broker.core import records as R
from leash.broker.core.batches.state import (
    ABANDONED,
    COMMITTED,
    COMPLETE,
    DEAD,
    DEATH,
    DELETED,
    FAILED,
    FINISHED,
    OPEN,
    PENDING,
    RETRYING,
    RUNNING,
    SUCCEEDED,
    SUCCESS,
    UNFINISHED_CHILD,
    UNFINISHED_MEMBER,
    Batch,
    BatchDeadline,
    ChildState,
    MemberState,
    callback_id,
)
from leash.broker.core.pushes import new_job
from leash.broker.core.state import Job, State

Callbacks = list[R.NewJob]


def open_batch(state: State, new: R.NewBatch) -> None:
    assert new.id not in state.batches, new.id
    batch = Batch(
        id=new.id,
        serial=new.serial,
        description=new.description,
        parent=new.parent,
        callbacks={spec.kind: spec for spec in new.callbacks},
        created_ms=new.created_ms,
        open_deadline_ms=0,
        expires_ms=0,
        finished_retention_ms=new.finished_retention_ms,
    )
    state.batches[new.id] = batch
    if new.parent is not None:
        parent = state.batches[new.parent]
        assert parent.unfinished, (new.id, parent.id, parent.state)
        _set_child(parent, new.id, RUNNING)
    batch.open_deadline_ms = new.open_deadline_ms
    if not new.committed:
        _timer(state, batch, "open", new.open_deadline_ms)
    _timer(state, batch, "expire", new.expires_ms)


def join(state: State, batch_id: str, job_id: str) -> None:
    """A job created by this record is a member from now on."""
    batch = state.batches[batch_id]
    assert batch.unfinished and job_id not in batch.members, (batch_id, job_id)
    _set_member(batch, job_id, PENDING)


def commit(state: State, batch_id: str, at_ms: int) -> Callbacks:
    batch = state.batches[batch_id]
    assert batch.state == OPEN, (batch_id, batch.state)
    batch.state, batch.committed_ms = COMMITTED, at_ms
    out: Callbacks = []
    if batch.died_ms:
        _fire(state, batch, DEATH, at_ms, out)
    _judge(state, batch, at_ms, out)
    return out


def ended(state: State, job: Job, outcome: MemberState, at_ms: int) -> Callbacks:
    """A member's attempt failed (``retrying``), it died, succeeded, or was deleted."""
    assert job.batch is not None, job
    batch = state.batches[job.batch]
    was = batch.members[job.id]
    out: Callbacks = []
    if was == outcome:  # failed again: nothing changes
        return out
    assert was in UNFINISHED_MEMBER or (was == DEAD and outcome == DELETED), (job.id, was, outcome)
    _set_member(batch, job.id, outcome)
    if outcome == DEAD:
        _death(state, batch, at_ms, out)
    _judge(state, batch, at_ms, out)
    return out


def requeued(state: State, job: Job) -> None:
    """A dead or retrying member runs again: it is unfinished, and it has run."""
    assert job.batch is not None, job
    batch = state.batches[job.batch]
    assert batch.unfinished, batch.id
    if batch.members[job.id] == DEAD:
        _set_member(batch, job.id, RETRYING)


def abandon(state: State, batch_id: str, at_ms: int) -> Callbacks:
    """An open batch was never committed: it will never fire; what is live goes on."""
    batch = state.batches[batch_id]
    assert batch.state == OPEN and batch.open_deadline_ms <= at_ms, (batch_id, batch.state)
    batch.state, batch.finished_ms = ABANDONED, at_ms
    _timer(state, batch, "expire", at_ms + batch.finished_retention_ms)
    for job_id, member in list(batch.members.items()):
        if member in UNFINISHED_MEMBER:
            del batch.members[job_id]
            batch.tally[member] -= 1
            state.jobs.change(state.jobs.thaw(job_id), batch=None)
    _detach_dead(state, batch)
    for child_id, child in list(batch.children.items()):
        if child in UNFINISHED_CHILD:
            del batch.children[child_id]
            batch.child_tally[child] -= 1
            state.batches[child_id].parent = None
    out: Callbacks = []
    parent = _update_parent(state, batch)
    if parent is not None:
        _judge(state, parent, at_ms, out)
    return out


def remove(state: State, batch_id: str, at_ms: int) -> Callbacks:
    """The batch and all its bookkeeping go at once (deleted, or expired)."""
    batch = state.batches.pop(batch_id)
    if batch.unfinished:  # only an unfinished batch has jobs that name it
        for job_id, member in batch.members.items():
            if member != SUCCEEDED:
                _unlink(state, job_id, batch_id)
    for child_id in batch.children:
        state.batches[child_id].parent = None
    out: Callbacks = []
    if batch.parent is not None:
        parent = state.batches[batch.parent]
        was = parent.children.pop(batch_id)
        if was in UNFINISHED_CHILD:  # deleted never blocks its parent
            parent.child_tally[was] -= 1
            parent.child_tally[DELETED] += 1
            _judge(state, parent, at_ms, out)
    return out


# --- judging ---------------------------------------------------------------


def _judge(state: State, batch: Batch, at_ms: int, out: Callbacks) -> None:
    """Judge a batch after a change to its items, then its parent, and so on up."""
    node: Batch | None = batch
    while node is not None and node.state == COMMITTED:
        changed = False
        if not node.complete_ms and node.unrun_items() == 0:
            node.complete_ms = at_ms
            _fire(state, node, COMPLETE, at_ms, out)
            changed = True
        if node.unfinished_items() == 0:
            _finish(state, node, at_ms, out)
            changed = True
        if not changed:
            return
        node = _update_parent(state, node)


def _finish(state: State, batch: Batch, at_ms: int, out: Callbacks) -> None:
    batch.state, batch.finished_ms = FINISHED, at_ms
    batch.succeeded = batch.tally[DEAD] == 0 and batch.child_tally[FAILED] == 0
    if batch.succeeded:
        _fire(state, batch, SUCCESS, at_ms, out)
    _timer(state, batch, "expire", at_ms + batch.finished_retention_ms)
    _detach_dead(state, batch)


def _death(state: State, batch: Batch, at_ms: int, out: Callbacks) -> None:
    node: Batch | None = batch
    while node is not None:
        if not node.died_ms:
            node.died_ms = at_ms
        if node.state == COMMITTED:
            _fire(state, node, DEATH, at_ms, out)
        node = state.batches[node.parent] if node.parent is not None else None


def _fire(state: State, batch: Batch, kind: R.CallbackKind, at_ms: int, out: Callbacks) -> None:
    """Enqueue the batch's callback of this kind, unless it has none or it fired."""
    spec = batch.callbacks.get(kind)
    if spec is None or kind in batch.fired:
        return
    batch.fired[kind] = at_ms
    job_id = callback_id(batch, kind)
    parent = state.batches[batch.parent] if batch.parent is not None else None
    if parent is not None:
        assert parent.unfinished, (batch.id, parent.id, parent.state)
        _set_member(parent, job_id, PENDING)
    run_at_ms = at_ms + spec.delay_ms if spec.delay_ms else spec.run_at_ms
    if run_at_ms is not None and run_at_ms <= at_ms:
        run_at_ms = None  # due already: ready at once
    out.append(new_job(spec, job_id, at_ms, run_at_ms, None if parent is None else parent.id))


# --- tables ----------------------------------------------------------------


def _update_parent(state: State, child: Batch) -> Batch | None:
    """Write the child's state into its parent's table; the parent, if any."""
    if child.parent is None:
        return None
    parent = state.batches[child.parent]
    _set_child(parent, child.id, child.as_child())
    return parent


def _detach_dead(state: State, batch: Batch) -> None:
    """Dead members' jobs stop naming a batch that will not change any more."""
    if not batch.tally[DEAD]:
        return
    for job_id, member in batch.members.items():
        if member == DEAD:
            _unlink(state, job_id, batch.id)


def _unlink(state: State, job_id: str, batch_id: str) -> None:
    """The job, if it is still there and names the batch, names none from now on."""
    job = state.jobs.get(job_id)
    if job is not None and job.batch == batch_id:
        state.jobs.change(state.jobs.thaw(job_id), batch=None)


def _set_member(batch: Batch, job_id: str, member: MemberState) -> None:
    _set(batch.members, batch.tally, job_id, member)


def _set_child(batch: Batch, child_id: str, child: ChildState) -> None:
    _set(batch.children, batch.child_tally, child_id, child)


Item = TypeVar("Item", MemberState, ChildState)


def _set(table: dict[str, Item], tally: dict[Item, int], key: str, value: Item) -> None:
    was = table.get(key)
    if was is not None:
        tally[was] -= 1
    table[key] = value
    tally[value] += 1


def _timer(state: State, batch: Batch, kind: BatchDeadline, deadline_ms: int) -> None:
    match kind:
        case "open":
            batch.open_deadline_ms = deadline_ms
        case "expire":
            batch.expires_ms = deadline_ms
        case _:
            assert_never(kind)
    heapq.heappush(state.batch_deadlines, (deadline_ms, batch.id, kind))
