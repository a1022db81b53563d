"""The status of one batch, as the batch_status request shows it.

Bounded: the unfinished members (with their job's state and, when leased,
its holder) and the unfinished children are listed up to the request's
limit (at most ``BATCH_STATUS_MEMBERS_MAX``), in the order they joined; the
counts are always whole. Finished members are not listed: their outcomes
are in the counts.
"""

from leash.broker.core.batches.state import (
    DEAD,
    DELETED,
    OPEN,
    PENDING,
    RETRYING,
    UNFINISHED_CHILD,
    UNFINISHED_MEMBER,
    Batch,
    callback_id,
)
from leash.broker.core.state import LEASED, State
from leash.protocol import messages as M


def batch_view(state: State, batch: Batch, limit: int) -> M.BatchView:
    members, more = _unfinished_members(state, batch, limit)
    tally, children = batch.tally, batch.child_tally
    pending_children = [
        M.ChildView(child_id, child)
        for child_id, child in batch.children.items()
        if child in UNFINISHED_CHILD
    ][:limit]
    return M.BatchView(
        id=batch.id,
        state=batch.state,
        description=batch.description,
        created_ms=batch.created_ms,
        expires_ms=batch.expires_ms,
        total=len(batch.members),
        pending=tally[PENDING] + tally[RETRYING],
        failures=tally[RETRYING] + tally[DEAD],
        dead=tally[DEAD],
        deleted=tally[DELETED],
        children=sum(children.values()),
        children_pending=sum(children[child] for child in UNFINISHED_CHILD),
        succeeded=batch.succeeded,
        callbacks=sorted(batch.callbacks),
        fired=[
            M.CallbackFired(kind, at_ms, callback_id(batch, kind))
            for kind, at_ms in batch.fired.items()
        ],
        members=members,
        more_members=more,
        pending_children=pending_children,
        parent=batch.parent,
        committed_ms=batch.committed_ms or None,
        open_deadline_ms=batch.open_deadline_ms if batch.state == OPEN else None,
        complete_ms=batch.complete_ms or None,
        died_ms=batch.died_ms or None,
        finished_ms=batch.finished_ms or None,
    )


def _unfinished_members(state: State, batch: Batch, limit: int) -> tuple[list[M.MemberView], bool]:
    left = batch.tally[PENDING] + batch.tally[RETRYING]
    views: list[M.MemberView] = []
    if not left:
        return views, False
    for job_id, member in batch.members.items():
        if member not in UNFINISHED_MEMBER:
            continue
        if len(views) == limit:
            return views, True
        job = state.jobs[job_id]
        owner = job.owner if job.state == LEASED else None
        views.append(M.MemberView(job_id, member, job.state, owner))
        if len(views) == left:
            break
    return views, False
