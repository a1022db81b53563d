"""Worker processes: registration, signs of life, control, death.

A process is registered by its hello and kept alive by signs of life: an
explicit beat always counts; any other request counts at most once per
heartbeat period (so a busy worker costs one record per period, not one
per request). It is dead when its beat deadline passes (no life for the
process TTL), when its grace deadline passes (all its connections gone for
the reconnect grace), or when its terminate deadline passes. Death is one
``ProcessDied`` record that removes the process and ends every lease it
held: lost with "worker lost: ..." (the job is ready again at once and an
attempt counts, so a job that kills its worker every time ends in the dead
set: common.lost_lease_for), or released after a terminate grace (the
operator asked it to stop; no attempt counts). After a broker restart
every process known from before must show life within the restart grace
(decide.boot): none of its connections survived.
"""

from typing import assert_never

from leash.broker.core import records as R
from leash.broker.core.common import Rejected, lost_lease_for
from leash.broker.core.state import (
    Job,
    ProcessDeadline,
    State,
    due_entries,
    live_process_deadline,
)
from leash.protocol import admin as A
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from leash.protocol.faktory import CLIENT_NAME

HEARTBEAT_TIMEOUT = "worker lost: heartbeat timeout"
DISCONNECTED = "worker lost: disconnected"
TERMINATED = "terminated: the terminate grace passed"


def info_of(hello: M.Hello) -> R.ProcessInfo:
    return R.ProcessInfo(
        hello.hostname, hello.pid, list(hello.labels), hello.concurrency, hello.client
    )


def touch(
    state: State, worker_id: str, info: R.ProcessInfo, now_ms: int, *, hello: bool = False
) -> list[R.Record]:
    """The records a sign of life implies: register an unknown process,
    re-attach a detached one, or move the beat deadline once a period."""
    process = state.processes.get(worker_id)
    config = state.config
    if (
        hello
        or process is None
        or process.grace_deadline_ms
        or now_ms - process.last_seen_ms >= config.heartbeat_ms
    ):
        return [R.ProcessSeen(worker_id, info, now_ms, now_ms + ttl_ms(state, info))]
    return []


def ttl_ms(state: State, info: R.ProcessInfo) -> int:
    """How long a process may go without a sign of life. A process that said
    HELLO on the Faktory protocol beats as seldom as that protocol allows, so
    it has a TTL of its own (Faktory forgets a worker after 60 s without a BEAT)."""
    config = state.config
    return config.faktory_process_ttl_ms if info.client == CLIENT_NAME else config.process_ttl_ms


def beat(state: State, rid: int, worker_id: str, now_ms: int) -> tuple[M.Reply, list[R.Record]]:
    process = state.processes[worker_id]  # the shell's touch registered it
    return M.ProcessState(rid, process.state), [seen(state, worker_id, now_ms)]


def seen(state: State, worker_id: str, now_ms: int) -> R.ProcessSeen:
    """An explicit beat of a known process: its deadline moves out by its TTL."""
    deadline_ms = now_ms + ttl_ms(state, state.processes[worker_id].info)
    return R.ProcessSeen(worker_id, None, now_ms, deadline_ms)


def detach(state: State, worker_id: str, now_ms: int) -> list[R.Record]:
    """The process's last connection closed."""
    if worker_id not in state.processes:
        return []
    return [R.ProcessDetached(worker_id, now_ms + state.config.reconnect_grace_ms)]


def control(state: State, request: A.Control, now_ms: int) -> list[R.Record]:
    process = state.processes.get(request.worker_id)
    if process is None:
        raise Rejected(ErrorCode.NOT_FOUND, f"no process {request.worker_id!r}", "$.worker_id")
    if process.state == request.state or process.state == "terminate":
        return []  # terminate is final; repeating a control changes nothing
    deadline_ms = now_ms + state.config.terminate_grace_ms if request.state == "terminate" else 0
    return [R.ProcessControlled(request.worker_id, request.state, deadline_ms)]


def hold_ms(state: State, wait_ms: int) -> int:
    """How long a fetch that found nothing is held: at most a third of the
    process TTL, so that a process that only long-polls shows life in time."""
    return min(wait_ms, state.config.process_ttl_ms // 3)


def can_fetch(state: State, worker_id: str) -> bool:
    process = state.processes.get(worker_id)
    return process is not None and process.state == "ok"


def deaths(state: State, now_ms: int) -> list[R.ProcessDied]:
    """Processes whose deadline passed, one record each."""
    died: dict[str, R.ProcessDied] = {}
    budget = state.config.tick_max_items
    for entry in due_entries(state.process_deadlines, now_ms, budget):
        _, worker_id, kind = entry
        if worker_id in died or not live_process_deadline(state, entry):
            continue
        jobs = [state.jobs[job_id] for job_id in state.leases_by_owner.get(worker_id, ())]
        died[worker_id] = _died(state, worker_id, kind, jobs, now_ms)
    return list(died.values())


def _died(
    state: State, worker_id: str, kind: ProcessDeadline, jobs: list[Job], now_ms: int
) -> R.ProcessDied:
    """Told to terminate: its leases are released; else they are lost."""
    match kind:
        case "terminate":
            released = [M.LeaseRef(job.id, job.token) for job in jobs]
            return R.ProcessDied(worker_id, TERMINATED, [], released, now_ms)
        case "beat" | "grace":
            reason = HEARTBEAT_TIMEOUT if kind == "beat" else DISCONNECTED
            error = M.ErrorInfo(type="WorkerLost", message=reason)
            failures = [lost_lease_for(state, job, error, now_ms) for job in jobs]
            return R.ProcessDied(worker_id, reason, failures, [], now_ms)
        case _:
            assert_never(kind)


def process_views(state: State) -> list[A.ProcessView]:
    return [
        A.ProcessView(
            worker_id=p.worker_id,
            state=p.state,
            hostname=p.info.hostname,
            pid=p.info.pid,
            labels=p.info.labels,
            concurrency=p.info.concurrency,
            client=p.info.client,
            registered_ms=p.registered_ms,
            last_seen_ms=p.last_seen_ms,
            beat_deadline_ms=p.beat_deadline_ms,
            in_flight=len(state.leases_by_owner.get(p.worker_id, ())),
            grace_deadline_ms=p.grace_deadline_ms or None,
            terminate_deadline_ms=p.terminate_deadline_ms or None,
        )
        for p in sorted(state.processes.values(), key=lambda p: p.worker_id)
    ]


def busy(state: State) -> list[A.BusyProcess]:
    """In-flight jobs by process, from the one lease table."""
    result = []
    for worker_id, job_ids in sorted(state.leases_by_owner.items()):
        jobs = [state.jobs[job_id] for job_id in job_ids]
        result.append(A.BusyProcess(worker_id, [_busy_job(j) for j in jobs]))
    return result


def _busy_job(job: Job) -> A.BusyJob:
    report = job.progress
    return A.BusyJob(
        job.id,
        job.type,
        job.queue,
        job.failures + 1,
        job.leased_ms,
        job.deadline_ms,
        job.time_limit_ms or None,
        None if report is None else report.percent,
        None if report is None else report.message,
    )
