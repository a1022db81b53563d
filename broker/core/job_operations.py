"""Operator operations on jobs, and fsck. Pure, like decide.

- delete: the job is forgotten, whatever its state; a leased job's lease
  ends (its holder's ack then gets ``not_found``); a member of an
  unfinished batch becomes ``deleted``, which never blocks the batch.
- kill: the job goes to the dead set now, whatever its state (a leased
  job's lease ends); for its batch that is a death. Killing a dead job
  changes nothing.
- requeue: a dead or retrying job is ready again (a dead one with a fresh
  set of attempts). A member of an unfinished batch is unfinished again
  (``retrying``: it has run); a job whose batch has finished runs as an
  ordinary job, so callbacks never fire twice.
- fsck: every cross-check of ``check_invariants``; the list should be empty.
"""

from leash.broker.core import records as R
from leash.broker.core.checks import check_invariants
from leash.broker.core.common import Rejected
from leash.broker.core.state import DEAD, RETRYING, Job, State
from leash.protocol import admin as A
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from leash.protocol.limits import FSCK_PROBLEMS_MAX

KILLED = M.ErrorInfo(type="Killed", message="killed by an operator")
OperatorRequest = A.DeleteJob | A.KillJob | A.RequeueJob | A.Fsck


def decide_operator(
    state: State, request: OperatorRequest, now_ms: int
) -> tuple[A.AdminReply, list[R.Record]]:
    match request:
        case A.DeleteJob(rid=rid, id=job_id):
            _job(state, job_id)
            return M.Ok(rid), [R.JobDeleted(job_id, now_ms)]
        case A.KillJob(rid=rid, id=job_id):
            dead = _job(state, job_id).state == DEAD
            return M.Ok(rid), [] if dead else [R.JobKilled(job_id, KILLED, now_ms)]
        case A.RequeueJob(rid=rid, id=job_id):
            job = _job(state, job_id)
            if job.state not in (DEAD, RETRYING):
                message = f"job {job_id!r} is {job.state}: only dead or retrying jobs are requeued"
                raise Rejected(ErrorCode.INVALID_STATE, message, "$.id")
            return M.Ok(rid), [R.JobRequeued(job_id, now_ms)]
        case A.Fsck(rid=rid):
            problems = check_invariants(state)
            listed = problems[:FSCK_PROBLEMS_MAX]
            more = len(problems) > len(listed)
            return A.FsckReport(rid, listed, more, len(state.jobs), len(state.batches)), []


def _job(state: State, job_id: str) -> Job:
    job = state.jobs.get(job_id)
    if job is None:
        raise Rejected(ErrorCode.NOT_FOUND, f"no job {job_id!r}", "$.id")
    return job
