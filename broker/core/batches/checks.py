"""Cross-checks of the batch tables against each other and the jobs table.

Part of ``state.check_invariants`` (and so of the fsck request): every list
here is empty when the state is consistent. What is checked:

- every member points at a live job or a final outcome: an unfinished
  member's job exists, names the batch and agrees with the member state;
  every job that names a batch is listed by it, and that batch is unfinished;
- the tallies agree with the tables, so counts cannot go negative or drift;
- parents and children point at each other, agree on the child's state,
  an unfinished batch has an unfinished parent, and nesting is bounded;
- every batch has an expiry timer (and an open one has an open timer);
- nothing is stuck: a committed batch with nothing unfinished is a bug;
- callbacks fired exactly when their conditions held: at most once (the
  ``fired`` table has one entry per kind) and never missing.
"""

from collections import Counter

from leash.broker.core.batches.state import (
    ABANDONED,
    CHILD_STATES,
    COMMITTED,
    COMPLETE,
    DEAD,
    DEATH,
    FAILED,
    FINISHED,
    MEMBER_STATES,
    OPEN,
    PENDING,
    SUCCESS,
    UNFINISHED_CHILD,
    UNFINISHED_MEMBER,
    Batch,
    BatchDeadline,
    callback_id,
)
from leash.broker.core.state import DEAD as JOB_DEAD
from leash.broker.core.state import State
from leash.protocol.limits import BATCH_DEPTH_MAX


def batch_problems(state: State) -> list[str]:
    problems: list[str] = []
    timers = set(state.batch_deadlines)
    for batch_id, batch in state.batches.items():
        if batch.id != batch_id:
            problems.append(f"batch {batch_id} is stored as {batch.id}")
        problems += _tables(batch) + _links(state, batch) + _timers(timers, batch)
        problems += _judged(batch) + _fired(state, batch)
    problems += _jobs(state)
    return problems


def _tables(batch: Batch) -> list[str]:
    problems = []
    members = Counter(batch.members.values())
    if set(members) - set(MEMBER_STATES) or batch.tally != {s: members[s] for s in MEMBER_STATES}:
        problems.append(f"batch {batch.id} tallies {batch.tally} but lists {dict(members)}")
    children = Counter(batch.children.values())
    if set(children) - set(CHILD_STATES) or any(
        batch.child_tally[s] < children[s]
        or (s in UNFINISHED_CHILD and batch.child_tally[s] != children[s])
        for s in CHILD_STATES
    ):
        problems.append(
            f"batch {batch.id} tallies children {batch.child_tally} but lists {dict(children)}"
        )
    return problems


def _links(state: State, batch: Batch) -> list[str]:
    problems = []
    for child_id, listed in batch.children.items():
        child = state.batches.get(child_id)
        if child is None or child.parent != batch.id:
            problems.append(f"batch {batch.id} lists child {child_id}, which is not its child")
        elif listed != child.as_child():
            problems.append(
                f"batch {batch.id} has child {child_id} as {listed}, not {child.as_child()}"
            )
    if batch.parent is not None:
        parent = state.batches.get(batch.parent)
        if parent is None or batch.id not in parent.children:
            problems.append(f"batch {batch.id} names parent {batch.parent}, which does not list it")
        elif batch.unfinished and not parent.unfinished:
            problems.append(f"batch {batch.id} is unfinished but its parent is {parent.state}")
    depth, node = 1, batch
    while node.parent is not None and node.parent in state.batches and depth <= BATCH_DEPTH_MAX:
        node, depth = state.batches[node.parent], depth + 1
    if depth > BATCH_DEPTH_MAX:
        problems.append(f"batch {batch.id} is nested deeper than {BATCH_DEPTH_MAX}")
    return problems


def _timers(timers: set[tuple[int, str, BatchDeadline]], batch: Batch) -> list[str]:
    problems = []
    if (batch.expires_ms, batch.id, "expire") not in timers:
        problems.append(f"batch {batch.id} has no expiry timer")
    if batch.state == OPEN and (batch.open_deadline_ms, batch.id, "open") not in timers:
        problems.append(f"open batch {batch.id} has no open deadline timer")
    return problems


def _judged(batch: Batch) -> list[str]:
    problems = []
    if batch.state not in (OPEN, COMMITTED, FINISHED, ABANDONED):
        problems.append(f"batch {batch.id} is in no known state: {batch.state}")
    if not batch.unfinished and (batch.unfinished_items() or not batch.finished_ms):
        problems.append(f"batch {batch.id} is {batch.state} with unfinished items")
    if batch.state == COMMITTED and batch.unfinished_items() == 0:
        problems.append(f"batch {batch.id} is committed, nothing in it is unfinished: stuck")
    judged = batch.state in (COMMITTED, FINISHED)
    if judged and batch.unrun_items() == 0 and not batch.complete_ms:
        problems.append(f"batch {batch.id} has run everything but is not complete")
    if batch.complete_ms and not judged:
        problems.append(f"batch {batch.id} is complete but {batch.state}")
    failed = batch.tally[DEAD] + batch.child_tally[FAILED]
    if batch.succeeded != (batch.state == FINISHED and failed == 0):
        problems.append(f"batch {batch.id} succeeded={batch.succeeded} disagrees with its items")
    return problems


def _fired(state: State, batch: Batch) -> list[str]:
    """Exactly once: a kind fired iff the batch has it and its condition held."""
    judged = batch.state in (COMMITTED, FINISHED)
    due = {
        SUCCESS: batch.succeeded,
        COMPLETE: bool(batch.complete_ms),
        DEATH: judged and bool(batch.died_ms),
    }
    problems = []
    for kind, held in due.items():
        if (kind in batch.fired) != (held and kind in batch.callbacks):
            problems.append(f"batch {batch.id}: callback {kind} fired={kind in batch.fired}")
    parent = state.batches.get(batch.parent) if batch.parent is not None else None
    if parent is None or parent.state == ABANDONED:  # it forgot its unfinished members
        return problems
    for kind in batch.fired:
        if callback_id(batch, kind) not in parent.members:
            problems.append(f"batch {batch.id}: callback {kind} is not a member of {parent.id}")
    return problems


def _jobs(state: State) -> list[str]:
    problems = []
    for job in state.jobs.values():
        if job.batch is None:
            continue
        batch = state.batches.get(job.batch)
        member = batch.members.get(job.id) if batch is not None else None
        expected = {DEAD} if job.state == JOB_DEAD else UNFINISHED_MEMBER
        if batch is None or not batch.unfinished or member is None or member not in expected:
            problems.append(f"job {job.id} names batch {job.batch}, which has it as {member}")
        elif member == PENDING and job.failures:
            problems.append(f"job {job.id} has failed but is pending in batch {job.batch}")
    for batch in state.batches.values():
        for job_id, member in batch.members.items():
            found = state.jobs.get(job_id) if member in UNFINISHED_MEMBER else None
            if member in UNFINISHED_MEMBER and (found is None or found.batch != batch.id):
                problems.append(f"batch {batch.id} has {member} member {job_id} with no such job")
    return problems
