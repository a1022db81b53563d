"""decide_admin(state, request, now_ms): what an operator's request answers
and the records it implies. Views change nothing; operations are records
like any other, so they survive a restart and show in the journal dump.
Stats are assembled by the shell (they need its figures too)."""

from typing import NamedTuple, assert_never

from leash.broker.core import limits, views
from leash.broker.core import processes as P
from leash.broker.core import records as R
from leash.broker.core.batches.decide import decide_batch
from leash.broker.core.common import Rejected
from leash.broker.core.decide import decide
from leash.broker.core.job_operations import KILLED, decide_operator
from leash.broker.core.schedules import decide_schedule
from leash.broker.core.state import State
from leash.protocol import admin as A
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode

OPERATOR = ""  # the worker id operator requests are decided under: none


class AdminOutcome(NamedTuple):
    reply: A.AdminReply | M.Reply
    records: list[R.Record]


def decide_admin(state: State, request: A.AdminRequest, now_ms: int) -> AdminOutcome:
    try:
        return _decide_admin(state, request, now_ms)
    except Rejected as rejected:
        error = M.Error(request.rid, rejected.code, rejected.message, rejected.path)
        return AdminOutcome(error, [])


def _decide_admin(state: State, request: A.AdminRequest, now_ms: int) -> AdminOutcome:
    match request:
        case A.ListQueues(rid=rid):
            return AdminOutcome(A.Queues(rid, views.queue_views(state, now_ms)), [])
        case A.ListJobs():
            return AdminOutcome(views.list_jobs(state, request, now_ms), [])
        case M.GetJob():
            return AdminOutcome(*decide(state, request, OPERATOR, now_ms)[:2])
        case A.Pause(rid=rid, queue=name, create=create):
            if not create and name not in state.queues:
                raise Rejected(ErrorCode.NOT_FOUND, f"no queue {name!r}", "$.queue")
            return AdminOutcome(M.Ok(rid), [] if _paused(state, name) else [R.QueuePaused(name)])
        case A.Resume(rid=rid, queue=name):
            return AdminOutcome(M.Ok(rid), [R.QueueResumed(name)] if _paused(state, name) else [])
        case A.Control(rid=rid):
            return AdminOutcome(M.Ok(rid), P.control(state, request, now_ms))
        case A.ListProcesses(rid=rid):
            return AdminOutcome(A.Processes(rid, P.process_views(state)), [])
        case A.GetBusy(rid=rid):
            return AdminOutcome(A.Busy(rid, P.busy(state)), [])
        case A.DeleteJob() | A.KillJob() | A.RequeueJob() | A.Fsck():
            return AdminOutcome(*decide_operator(state, request, now_ms))
        case A.RequeueJobs() | A.DeleteJobs() | A.KillJobs():
            return _bulk(state, request, now_ms)
        case A.ListBatches():
            return AdminOutcome(views.list_batches(state, request), [])
        case M.GetBatchStatus() | A.DeleteBatch():
            return AdminOutcome(*decide_batch(state, request, now_ms))
        case A.SetQueueLimits(rid=rid):
            return AdminOutcome(M.Ok(rid), limits.decide_limits(state, request))
        case (
            A.AddSchedule()
            | A.RemoveSchedule()
            | A.PauseSchedule()
            | A.ResumeSchedule()
            | A.ListSchedules()
        ):
            return AdminOutcome(*decide_schedule(state, request, now_ms))
        case A.GetStats() | A.Compact() | A.GetHistory():
            raise AssertionError("the shell answers stats, history and compact itself")
        case _:
            assert_never(request)


def _bulk(
    state: State, request: A.RequeueJobs | A.DeleteJobs | A.KillJobs, now_ms: int
) -> AdminOutcome:
    """Every job of the listing that matches, up to the limit: each one
    record, like the operation on one job."""
    found = views.scan(
        state, request.kind, request.filter, request.cursor, request.limit, now_ms, taking=True
    )
    ids = [job.id for job in found.jobs]
    rid, after, scanned = request.rid, found.next, found.scanned
    match request:
        case A.RequeueJobs():
            return AdminOutcome(
                A.Requeued(rid, ids, after, scanned), [R.JobRequeued(i, now_ms) for i in ids]
            )
        case A.DeleteJobs():
            return AdminOutcome(
                A.JobsChanged(rid, ids, after, scanned), [R.JobDeleted(i, now_ms) for i in ids]
            )
        case A.KillJobs():
            killed: list[R.Record] = [R.JobKilled(i, KILLED, now_ms) for i in ids]
            return AdminOutcome(A.JobsChanged(rid, ids, after, scanned), killed)
        case _:
            assert_never(request)


def _paused(state: State, name: str) -> bool:
    queue = state.queues.get(name)
    return queue is not None and queue.paused
