"""decide_faktory(state, command, worker_id, now_ms): Faktory's commands,
decided on the one state with the rules of the Leash requests. Pure.

- PUSH and PUSHB push as ``push`` does (an id the broker still knows adds
  nothing). A unit that keeps fields (protocol/faktory_units.py) or has
  ``retry`` 0 is pushed by a ``KeptJobsPushed`` record, which stores them on
  the job. PUSHB answers the units it refused, by jid, and pushes the rest.
- FETCH leases one job to the consumer's process as ``fetch`` does (queues
  in order, most urgent first within a queue) and answers the work unit,
  with ``enqueued_at`` and ``failure`` made from the job.
- ACK and FAIL name a job, not a lease: they are taken only from the process
  (``wid``) that holds the job's lease, and end that lease as ``ack`` and
  ``fail`` do. Anything else is ``stale_lease`` (the lease ended: it
  expired, its process was declared dead, it was given to another) or
  ``not_found``.
- BEAT is a beat of the connection's process. A consumer that says it is
  quiet or terminating is recorded so (an operator's control, from the
  process itself); the answer is the process's state: OK, or
  ``{"state": "quiet"}`` / ``{"state": "terminate"}``.

The connection's ``worker_id`` is the ``wid`` of its HELLO ("" for a
producer, which may push but holds no jobs).
"""

from typing import Any, NamedTuple, assert_never

from leash.broker.core import processes as P
from leash.broker.core import records as R
from leash.broker.core.common import Rejected, failure_for
from leash.broker.core.decide import fetch
from leash.broker.core.pushes import push_specs
from leash.broker.core.state import READY, RETRYING, Job, State
from leash.protocol import admin as A
from leash.protocol import faktory as F
from leash.protocol import faktory_units as U
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from leash.protocol.limits import SCHEDULE_HORIZON_MS

Decided = F.Push | F.PushBulk | F.Fetch | F.Ack | F.Fail | F.Beat


class Outcome(NamedTuple):
    """As decide.Outcome, with a reply of this protocol."""

    reply: F.Reply
    records: list[R.Record]
    may_wait: bool = False  # a FETCH found nothing and waits for a job
    written_enough: bool = False  # a FETCH: its reply may leave before the fsync


_NO_JOB = "only a consumer (a HELLO with a wid) holds jobs"
# Faktory Enterprise's answer to a push of a unique job whose key is held
# (its clients look for the word): -NOTUNIQUE
NOT_UNIQUE = "notunique"


def decide_faktory(state: State, command: Decided, worker_id: str, now_ms: int) -> Outcome:
    try:
        return _decide(state, command, worker_id, now_ms)
    except Rejected as rejected:
        return Outcome(M.Error(0, rejected.code, rejected.message), [])


def _decide(state: State, command: Decided, worker_id: str, now_ms: int) -> Outcome:
    match command:
        case F.Push(unit=unit):
            _check_horizon(unit, now_ms)
            records, duplicates = _pushed(state, [unit], now_ms)
            if duplicates:
                return Outcome(M.Error(0, NOT_UNIQUE, duplicates[unit.jid]), [])
            return Outcome(M.Ok(0), records)
        case F.PushBulk(units=units, refused=refused):
            return _push_bulk(state, units, refused, now_ms)
        case F.Fetch():
            return _fetch(state, command, worker_id, now_ms)
        case F.Ack(jid=jid):
            job = _held(state, jid, worker_id)
            return Outcome(M.Ok(0), [R.JobsAcked([M.LeaseRef(jid, job.token)], now_ms)])
        case F.Fail(jid=jid, error=error):
            job = _held(state, jid, worker_id)
            return Outcome(M.Ok(0), [R.AttemptsFailed([failure_for(state, job, error, now_ms)])])
        case F.Beat(wid=wid, current_state=said):
            return _beat(state, wid, said, worker_id, now_ms)
        case _:
            assert_never(command)


# --- pushing --------------------------------------------------------------------


def _check_horizon(unit: U.Unit, now_ms: int) -> None:
    run_at_ms = unit.spec.run_at_ms
    if run_at_ms is not None and run_at_ms > now_ms + SCHEDULE_HORIZON_MS:
        raise Rejected(ErrorCode.BAD_REQUEST, f"{unit.jid}: at is more than 5 years ahead")


def _pushed(
    state: State, units: list[U.Unit], now_ms: int
) -> tuple[list[R.Record], dict[str, str]]:
    """The record of the units' jobs (those whose jid is new), and the
    units refused as duplicates of a unique job (Faktory's NOTUNIQUE), by
    jid."""
    specs = [unit.spec for unit in units]
    pushes = push_specs(state, specs, now_ms, None, ["$"] * len(specs))
    duplicates = {
        unit.jid: f"Job not unique: {result.id} holds its key"
        for unit, result in zip(units, pushes.results, strict=True)
        if result.duplicate
    }
    if not pushes.jobs:
        return [], duplicates
    kept: dict[str, R.Kept] = {}
    for unit in units:
        kept.setdefault(unit.jid, R.Kept(unit.extra, unit.discard_dead))
    keeps = [kept[new.id] for new in pushes.jobs]
    if all(k.extra is None and not k.discard_dead for k in keeps):
        return [R.JobsPushed(pushes.jobs, pushes.counter_after, pushes.extras)], duplicates
    return [R.KeptJobsPushed(pushes.jobs, keeps, pushes.counter_after, pushes.extras)], duplicates


def _push_bulk(state: State, units: list[U.Unit], refused: dict[str, str], now_ms: int) -> Outcome:
    """Push the units that can be pushed; answer the others, by jid."""
    answer = dict(refused)
    taken = []
    for unit in units:
        try:
            _check_horizon(unit, now_ms)
        except Rejected as rejected:
            answer[unit.jid] = rejected.message
            continue
        taken.append(unit)
    records, duplicates = _pushed(state, taken, now_ms) if taken else ([], {})
    answer.update((jid, f"{NOT_UNIQUE.upper()} {why}") for jid, why in duplicates.items())
    return Outcome(F.Bulk(U.encode_unit(answer)), records)


# --- consuming ------------------------------------------------------------------


def _fetch(state: State, command: F.Fetch, worker_id: str, now_ms: int) -> Outcome:
    if not worker_id:
        raise Rejected(ErrorCode.BAD_REQUEST, f"FETCH: {_NO_JOB}")
    request = M.Fetch(0, command.queues, 1, command.wait_ms)
    leased = fetch(state, request, worker_id, now_ms)
    if not leased.records:
        return Outcome(F.Bulk(None), [], leased.may_wait, leased.written_enough)
    assert isinstance(leased.reply, M.Jobs), leased.reply
    (delivery,) = leased.reply.jobs
    job = state.jobs[delivery.id]  # as it waits: decide changes nothing
    return Outcome(F.Bulk(unit_json(job)), leased.records, written_enough=leased.written_enough)


def _held(state: State, jid: str, worker_id: str) -> Job:
    """The job this process holds the lease of; ``stale_lease`` or ``not_found`` otherwise."""
    if not worker_id:
        raise Rejected(ErrorCode.BAD_REQUEST, _NO_JOB)
    job = state.jobs.leased(jid)
    if job is not None and job.owner == worker_id:
        return job
    if jid not in state.jobs:
        raise Rejected(ErrorCode.NOT_FOUND, f"no job {jid!r} (acked, deleted or never pushed)")
    now = "leased by another process" if job is not None else f"{state.jobs[jid].state}"
    raise Rejected(
        ErrorCode.STALE_LEASE,
        f"job {jid!r} is not leased by {worker_id!r}: it is {now} (its lease ended: it expired, "
        "the process was declared dead, or an operator moved the job)",
    )


def _beat(state: State, wid: str, said: str, worker_id: str, now_ms: int) -> Outcome:
    if not worker_id or wid != worker_id:
        message = f"BEAT for wid {wid!r} on a connection whose HELLO had wid {worker_id!r}"
        raise Rejected(ErrorCode.BAD_REQUEST, message)
    process = state.processes[worker_id]  # the shell's touch registered it
    records: list[R.Record] = [P.seen(state, worker_id, now_ms)]
    now = process.state
    if said in ("quiet", "terminate"):
        wanted: A.ProcessControl = "quiet" if said == "quiet" else "terminate"
        controlled = P.control(state, A.Control(0, worker_id, wanted), now_ms)
        records.extend(controlled)
        now = wanted if controlled else now
    if now == "ok":
        return Outcome(M.Ok(0), records)
    return Outcome(F.Bulk(U.encode_unit({"state": now})), records)


# --- a job as a work unit -------------------------------------------------------


def unit_json(job: Job) -> bytes:
    """The job as a work unit's JSON: what FETCH answers (and MUTATE's
    patterns match). Kept fields come back as they were sent."""
    unit: dict[str, Any] = {
        "jid": job.id,
        "queue": job.queue,
        "jobtype": job.type,
        "args": U.args_json(job.args),
        "priority": job.priority,
        "created_at": U.iso_time(job.created_ms),
    }
    if job.state == READY:
        unit["enqueued_at"] = U.iso_time(job.ready_ms)
    unit.update(U.kept_fields(job.extra))
    unit["reserve_for"] = max(1, job.lease_ttl_ms // 1000)
    unit["retry"] = U.retry_of(job.max_attempts, job.discard_dead)
    if job.failures:
        unit["failure"] = _failure(job)
    return U.encode_unit(unit)


def _failure(job: Job) -> dict[str, Any]:
    """The unit's ``failure``: its last error and the attempts left, as Faktory counts them."""
    error = job.last_error or M.ErrorInfo()
    failure: dict[str, Any] = {
        "retry_count": job.failures - 1,
        "remaining": max(job.max_attempts - job.failures, 0),
        "errtype": error.type,
        "message": error.message,
    }
    if error.backtrace:
        failure["backtrace"] = error.backtrace.split("\n")
    if job.state == RETRYING:
        failure["next_at"] = U.iso_time(job.run_at_ms)
    return failure
