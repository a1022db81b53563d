"""apply(state, record): the only code that changes broker state.

Used live (right after decide) and when replaying the journal, so both
build the same state by construction (start-up replays through replay.py,
which applies runs of pushes, leases and acks with this module's parts and
defers what no record of the run reads; its tests compare it with this).
A record that does not fit the state is a bug, not bad input — decide
validated it — so apply asserts instead of returning errors. Jobs are
changed through the jobs table (jobs.py: ``thaw`` gives the one Job object
to change; ``pack_overdue``, after every record, packs the jobs that are no
longer recent), and after every record the lazy indexes are within their
bounds again: their fronts live, their stale entries no more than their
live ones allow (state.py). Records are dispatched by kind in one
``match`` (exhaustive: a kind with no case fails type checking), each case
with the indexes a record of that kind can leave stale (pushes and leases
only add entries, an ack can end a lease and finish a batch; the other
kinds check them all); check_invariants checks every index after every
record in the core tests. What a record means for batches (members ending,
batches finishing, callbacks) is derived by batches/transitions.py while the record is
applied; the callback jobs it returns are created here, and ``apply``
returns them (no record lists them: the shell counts them as pushed).
"""

import heapq
from collections.abc import Iterable, Sequence
from typing import Final, assert_never

from leash.broker.core import cron, expiry, history, indexes, limits, progress, results, unique
from leash.broker.core import records as R
from leash.broker.core.attempts import Outcome, attempt_ended, failed_outcome
from leash.broker.core.batches import state as B
from leash.broker.core.batches import transitions as batches
from leash.broker.core.state import (
    COUNTER_LIMIT,
    DEAD,
    LEASED,
    READY,
    RETRYING,
    SCHEDULED,
    Job,
    Process,
    ProcessDeadline,
    State,
    purge_batch_deadlines,
    purge_deadlines,
    purge_expiries,
    purge_indexes,
    purge_process_deadlines,
    purge_result_expiries,
    purge_schedule_ticks,
    purge_unique_windows,
)
from leash.protocol.messages import LeaseRef

Enqueued = Sequence[R.NewJob]  # the callback jobs a record enqueued
NOTHING: Final[Enqueued] = ()


def apply(state: State, record: R.Record) -> Enqueued:
    """Apply one record; the batch callback jobs it enqueued."""
    enqueued = NOTHING
    match record:  # the kinds of a busy journal first
        case R.JobsPushed():
            _pushed(state, record)
        case R.KeptJobsPushed():
            _pushed_kept(state, record)
        case R.JobsLeased():
            _leased_jobs(state, record)
            if state.expiries:  # a job leased in time: its entry is stale now
                purge_expiries(state)
        case R.JobsAcked():
            enqueued = _acked(state, record)
            purge_deadlines(state)
            purge_batch_deadlines(state)
            if state.unique_windows:
                purge_unique_windows(state)
        case R.LeaseExtended():
            _extended(state, record)
            purge_deadlines(state)
        case R.ProgressReported():
            progress.reported(_extended(state, record), record)
            purge_deadlines(state)
        case R.ProcessSeen() | R.ProcessDetached() | R.ProcessControlled():
            _process_changed(state, record)
            purge_process_deadlines(state)
        case R.QueuePaused():
            state.queue(record.queue).paused = True
        case R.QueueResumed():
            _resumed(state, record)
        case R.EpochRolled():
            _rolled(state, record)
        case R.Booted():
            _booted(state, record)
            purge_indexes(state)
        case R.UniqueWindowsEnded():
            unique.windows_ended(state, record)
            purge_unique_windows(state)
        case R.QueueLimitsSet():
            limits.set_limits(state, record)
        case (
            R.ScheduleAdded()
            | R.ScheduleRemoved()
            | R.SchedulePaused()
            | R.ScheduleResumed()
            | R.ScheduleFired()
        ):
            _scheduled(state, record)
            purge_schedule_ticks(state)
        case R.HistoryTrimmed():
            history.trimmed(state, record)
        case R.ResultsDropped():
            results.dropped(state, record)
            purge_result_expiries(state)
        case (
            R.AttemptsFailed()
            | R.LeaseReleased()
            | R.JobsPromoted()
            | R.DeadTrimmed()
            | R.JobDeleted()
            | R.JobKilled()
            | R.JobRequeued()
            | R.ProcessDied()
            | R.BatchOpened()
            | R.BatchCommitted()
            | R.BatchDeleted()
            | R.BatchesAbandoned()
            | R.BatchesExpired()
            | R.JobsExpired()
            | R.ResultsAcked()
        ):
            enqueued = _apply_other(state, record)
            purge_indexes(state)
        case _:
            assert_never(record)
    if state.jobs.overdue > 0:
        state.jobs.pack_overdue()
    return enqueued


OtherRecord = (
    R.AttemptsFailed
    | R.LeaseReleased
    | R.JobsPromoted
    | R.DeadTrimmed
    | R.JobDeleted
    | R.JobKilled
    | R.JobRequeued
    | R.ProcessDied
    | R.BatchOpened
    | R.BatchCommitted
    | R.BatchDeleted
    | R.BatchesAbandoned
    | R.BatchesExpired
    | R.JobsExpired
    | R.ResultsAcked
)


def _apply_other(state: State, record: OtherRecord) -> Enqueued:
    """The kinds that may leave any index stale."""
    match record:
        case R.AttemptsFailed():
            return _fail_all(state, record.failures, None)
        case R.LeaseReleased():
            job = _leased(state, record.id, record.token)
            _release(state, job, record.at_ms, record.run_at_ms)
        case R.JobsPromoted():
            _promoted(state, record)
        case R.DeadTrimmed():
            _trimmed(state, record)
        case R.JobDeleted():
            return _deleted(state, record)
        case R.JobKilled():
            return _killed(state, record)
        case R.JobRequeued():
            _requeued(state, record)
        case R.ProcessDied():
            return _died(state, record)
        case R.BatchOpened():
            return _batch_opened(state, record)
        case R.BatchCommitted():
            return _push_all(state, batches.commit(state, record.id, record.at_ms))
        case R.BatchDeleted():
            return _push_all(state, batches.remove(state, record.id, record.at_ms))
        case R.BatchesAbandoned():
            return _batches_abandoned(state, record)
        case R.BatchesExpired():
            return _batches_expired(state, record)
        case R.JobsExpired():
            return _joined(_expire_job(state, job_id, record.at_ms) for job_id in record.ids)
        case R.ResultsAcked():
            return _joined(_acked_keeping(state, record))
        case _:
            assert_never(record)
    return NOTHING


# --- the records of jobs ------------------------------------------------------


def _pushed(state: State, record: R.JobsPushed) -> None:
    news = record.jobs
    indexes.jobs_add(state, news, _keys(record.extras))
    for new in news:  # push_jobs with join, written out: the record of every push
        if new.batch is not None:
            batches.join(state, new.batch, new.id)
    if record.extras:
        _carry(state, record.extras, record.jobs[0].created_ms)
    state.counter = counted(record.counter_after)


def _keys(extras: list[R.JobExtras]) -> dict[str, str] | None:
    """The concurrency keys of the jobs a push creates (limits.py), by id."""
    if not extras:
        return None
    return {e.id: e.concurrency_key for e in extras if e.concurrency_key is not None} or None


def _carry(state: State, extras: list[R.JobExtras], at_ms: int) -> None:
    """Jobs just created take their uniqueness keys (unique.py), expiries
    (expiry.py) and concurrency keys (limits.py; push_jobs put them in
    their lanes)."""
    for extra in extras:
        job = state.jobs.thaw(extra.id)  # the Job object just made
        state.jobs.change(
            job,
            concurrency_key=extra.concurrency_key,
            time_limit_ms=extra.time_limit_ms,
            keep_result_ms=extra.keep_result_ms,
        )
        if extra.unique_key is not None:
            state.jobs.change(job, unique_key=extra.unique_key, unique_for_ms=extra.unique_for_ms)
            unique.taken(state, job.id, extra.unique_key, at_ms)
        if extra.expires_ms:
            state.jobs.change(job, expires_ms=extra.expires_ms)
            expiry.waits(state, job)


def _pushed_kept(state: State, record: R.KeptJobsPushed) -> None:
    push_jobs(state, record.jobs, join=True)
    for new, kept in zip(record.jobs, record.kept, strict=True):
        job = state.jobs.thaw(new.id)  # the Job object just made
        state.jobs.change(job, extra=kept.extra, discard_dead=kept.discard_dead)
    if record.extras:
        _carry(state, record.extras, record.jobs[0].created_ms)
    state.counter = counted(record.counter_after)


# Leases and acks are most of a busy journal: a lease record and each ack
# take one call of the indexes (indexes.lease_grants, indexes.ack_gone: their
# steps written out); the replay of the journal (replay.py) calls them for
# the jobs it has built.


def _leased_jobs(state: State, record: R.JobsLeased) -> None:
    at_ms = record.at_ms
    indexes.lease_grants(state, record.owner, record.grants, at_ms)
    state.counter = counted(record.counter_after)
    if state.starts:
        limits.started(state, (state.jobs[grant.id].queue for grant in record.grants), at_ms)


def _acked(state: State, record: R.JobsAcked) -> Enqueued:
    at_ms = record.at_ms
    return _joined(ack_job(state, lease, at_ms) for lease in record.leases)


def _acked_keeping(state: State, record: R.ResultsAcked) -> Iterable[Enqueued]:
    """Each job acked, as ``ack_job`` does, and its result kept (results.py)."""
    at_ms = record.at_ms
    for lease, value in zip(record.leases, record.results, strict=True):
        keep_ms = _leased(state, lease.id, lease.token).keep_result_ms
        assert keep_ms > 0, lease  # decide keeps a result only for a job that asked
        yield ack_job(state, lease, at_ms)
        results.kept(state, lease.id, value, at_ms + keep_ms)


def _joined(parts: Iterable[Enqueued]) -> Enqueued:
    """The callback jobs of every part, in order (most parts have none)."""
    enqueued = NOTHING
    for made in parts:
        if made:
            enqueued = [*enqueued, *made]
    return enqueued


def ack_job(state: State, lease: LeaseRef, at_ms: int) -> Enqueued:
    """One lease of an ack record: the job is done and forgotten. The
    callback jobs it enqueued, if it finished a batch."""
    job = indexes.ack_gone(state, lease.id, lease.token)
    if job.unique_key is not None:
        unique.job_ended(state, job.id, job.unique_key, job.unique_for_ms, at_ms)
    history.succeeded(
        state, job.id, job.queue, job.type, job.created_ms, job.failures, job.owner, at_ms
    )
    if job.batch is not None:
        return _push_all(state, batches.ended(state, job, B.SUCCEEDED, at_ms))
    return NOTHING


def _fail_all(state: State, failures: list[R.Failure], outcome: Outcome | None) -> Enqueued:
    """Each failure's attempt ended as ``outcome`` (None: as its error says)."""
    return _joined(
        _fail(state, failure, outcome or failed_outcome(failure.error)) for failure in failures
    )


def _extended(state: State, record: R.LeaseExtended | R.ProgressReported) -> Job:
    job = _leased(state, record.id, record.token)
    indexes.deadline_move(state, job, record.deadline_ms)
    return job


def _promoted(state: State, record: R.JobsPromoted) -> None:
    for job_id in record.ids:
        job = state.jobs.thaw(job_id)
        assert job.state in (SCHEDULED, RETRYING), job
        due_ms = job.run_at_ms
        indexes.scheduled_remove(state, job)
        _make_ready(state, job, due_ms)


def _trimmed(state: State, record: R.DeadTrimmed) -> None:
    for job_id in record.ids:
        job = state.jobs.thaw(job_id)
        assert job.state == DEAD, job
        _remove(state, job)


def _deleted(state: State, record: R.JobDeleted) -> Enqueued:
    job = state.jobs.thaw(record.id)
    _remove(state, job)
    _finished(state, job, history.DELETED, record.at_ms)
    if job.batch is not None:
        return _push_all(state, batches.ended(state, job, B.DELETED, record.at_ms))
    return NOTHING


def _killed(state: State, record: R.JobKilled) -> Enqueued:
    job = state.jobs.thaw(record.id)
    assert job.state != DEAD, job
    if job.state == LEASED:
        attempt_ended(state, job, "killed", record.at_ms, record.error)
    _leave(state, job)
    state.jobs.change(job, last_error=record.error)
    indexes.scheduled_remove(state, job)
    return _die(state, job, record.at_ms)


def _requeued(state: State, record: R.JobRequeued) -> None:
    job = state.jobs.thaw(record.id)
    assert job.state in (DEAD, RETRYING, SCHEDULED), job  # scheduled: Faktory's MUTATE
    if job.state == DEAD:
        state.jobs.change(job, failures=0)  # a fresh set of attempts (died_ms stays: see _die)
        expiry.waits(state, job)
    indexes.scheduled_remove(state, job)
    _make_ready(state, job, record.at_ms)
    if job.batch is not None:
        batches.requeued(state, job)


# --- queues, processes, boots --------------------------------------------------


def _resumed(state: State, record: R.QueueResumed) -> None:
    queue = state.queue(record.queue)
    queue.paused = False
    if queue.ready:
        state.readied.add(record.queue)
    indexes.queue_drop_if_empty(state, queue)


def counted(counter_after: int) -> int:
    assert counter_after <= COUNTER_LIMIT, counter_after  # roll_due came too late
    return counter_after


def _booted(state: State, record: R.Booted) -> None:
    assert record.epoch > state.epoch, (record.epoch, state.epoch)
    state.epoch = record.epoch
    state.counter = 1
    if state.schedules:
        cron.booted(state, record.at_ms)
    for process in state.processes.values():  # no connection survived the restart
        process.grace_deadline_ms = 0
        _set_process_deadline(state, process, "beat", record.process_deadline_ms)


ScheduleRecord = (
    R.ScheduleAdded | R.ScheduleRemoved | R.SchedulePaused | R.ScheduleResumed | R.ScheduleFired
)


def _scheduled(state: State, record: ScheduleRecord) -> None:
    """A schedule's records (cron.py); a tick's job is pushed as any job is."""
    match record:
        case R.ScheduleAdded():
            cron.added(state, record)
        case R.ScheduleRemoved():
            cron.removed(state, record)
        case R.SchedulePaused():
            cron.paused(state, record)
        case R.ScheduleResumed():
            cron.resumed(state, record)
        case R.ScheduleFired():
            cron.fired(state, record)
            if record.job is not None:
                push_jobs(state, [record.job], join=False)
        case _:
            assert_never(record)


def _rolled(state: State, record: R.EpochRolled) -> None:
    assert record.epoch > state.epoch, (record.epoch, state.epoch)
    state.epoch = record.epoch
    state.counter = 1


def _process_changed(
    state: State, record: R.ProcessSeen | R.ProcessDetached | R.ProcessControlled
) -> None:
    match record:
        case R.ProcessSeen():
            _seen(state, record)
        case R.ProcessDetached():
            process = state.processes[record.worker_id]
            _set_process_deadline(state, process, "grace", record.grace_deadline_ms)
        case R.ProcessControlled():
            process = state.processes[record.worker_id]
            process.state = record.state
            if record.terminate_deadline_ms:
                _set_process_deadline(state, process, "terminate", record.terminate_deadline_ms)
        case _:
            assert_never(record)


def _seen(state: State, record: R.ProcessSeen) -> None:
    worker_id, info, at_ms = record.worker_id, record.info, record.at_ms
    process = state.processes.get(worker_id)
    if process is None:
        assert info is not None, worker_id
        process = state.processes[worker_id] = Process(worker_id, info, at_ms, at_ms, 0)
    process.info = info or process.info
    process.last_seen_ms, process.grace_deadline_ms = at_ms, 0
    _set_process_deadline(state, process, "beat", record.beat_deadline_ms)


def _died(state: State, record: R.ProcessDied) -> Enqueued:
    enqueued = _fail_all(state, record.failures, "lost")
    for lease in record.released:
        _release(state, _leased(state, lease.id, lease.token), record.at_ms)
    del state.processes[record.worker_id]
    assert record.worker_id not in state.leases_by_owner, record.worker_id
    return enqueued


# --- batches -----------------------------------------------------------------


def _batch_opened(state: State, record: R.BatchOpened) -> Enqueued:
    new = record.batch
    batches.open_batch(state, new)
    push_jobs(state, record.jobs, join=True, keys=_keys(record.extras))
    if record.extras:
        _carry(state, record.extras, new.created_ms)
    state.counter = counted(record.counter_after)
    if new.committed:
        return _push_all(state, batches.commit(state, new.id, new.created_ms))
    return NOTHING


def _batches_abandoned(state: State, record: R.BatchesAbandoned) -> Enqueued:
    at_ms = record.at_ms
    return _joined(_push_all(state, batches.abandon(state, b, at_ms)) for b in record.ids)


def _batches_expired(state: State, record: R.BatchesExpired) -> Enqueued:
    return _joined(_expire(state, batch_id, record.at_ms) for batch_id in record.ids)


def _expire(state: State, batch_id: str, at_ms: int) -> Enqueued:
    assert state.batches[batch_id].expires_ms <= at_ms, batch_id
    return _push_all(state, batches.remove(state, batch_id, at_ms))


def _push_all(state: State, callbacks: list[R.NewJob]) -> Enqueued:
    """Create the callback jobs a batch transition enqueued (members already
    recorded); the jobs."""
    if not callbacks:
        return NOTHING
    push_jobs(state, callbacks, join=False)
    return callbacks


def push_jobs(
    state: State, news: list[R.NewJob], *, join: bool, keys: dict[str, str] | None = None
) -> None:
    """Create jobs, ready or scheduled; with ``join``, each a member of the
    batch it names from now on; ``keys``: the concurrency keys of those
    that have one, by id (a ready one waits in its key's lane)."""
    indexes.jobs_add(state, news, keys)
    if join:
        for new in news:
            if new.batch is not None:
                batches.join(state, new.batch, new.id)


def _fail(state: State, failure: R.Failure, outcome: Outcome) -> Enqueued:
    """An attempt ended without success (records.Failure): dead; ready again
    at once (a lost lease, one more in a row); or retrying (its handler
    reported it: none lost in a row). The attempt joins the job's history."""
    job = _leased(state, failure.id, failure.token)
    attempt_ended(state, job, outcome, failure.at_ms, failure.error)
    _clear_lease(state, job)
    state.jobs.change(job, failures=job.failures + 1, last_error=failure.error)
    retry_at_ms, at_ms = failure.retry_at_ms, failure.at_ms
    if retry_at_ms is None:
        enqueued = _die(state, job, at_ms)
        if job.discard_dead:  # a death of its own attempts forgets it (an operator's kill does not)
            _remove(state, job)
        return enqueued
    if retry_at_ms <= at_ms:
        state.jobs.change(job, lost_leases=job.lost_leases + 1)
        _make_ready(state, job, at_ms)
    else:
        state.jobs.change(job, lost_leases=0)
        indexes.job_move(state, job, RETRYING)
        indexes.scheduled_add(state, job, retry_at_ms)
    if job.batch is not None:
        return _push_all(state, batches.ended(state, job, B.RETRYING, at_ms))
    return NOTHING


def _die(state: State, job: Job, at_ms: int) -> Enqueued:
    indexes.job_move(state, job, DEAD)
    _free_key(state, job)
    state.jobs.change(job, lost_leases=0)  # a requeue starts it afresh
    indexes.dead_add(state, job, at_ms)
    if job.batch is not None:
        return _push_all(state, batches.ended(state, job, B.DEAD, at_ms))
    return NOTHING


def _leave(state: State, job: Job) -> None:
    """Take a job out of the index of its state; the lazy ones need nothing."""
    if job.state == READY:
        indexes.ready_remove(state, job)
    elif job.state == LEASED:
        _clear_lease(state, job)


def _remove(state: State, job: Job) -> None:
    """Forget a job, whatever its state (acked, trimmed, or deleted by an operator)."""
    if job.state == READY:
        indexes.ready_remove(state, job)
    elif job.state == LEASED:
        indexes.lease_remove(state, job)
    _free_key(state, job)
    indexes.job_gone(state, job)


def _free_key(state: State, job: Job) -> None:
    """The job ends without success (it died or is forgotten): its key is free
    at once, and a dead job keeps none (unique.py)."""
    if job.unique_key is not None:
        unique.job_ended(state, job.id, job.unique_key, 0, 0)
        state.jobs.change(job, unique_key=None, unique_for_ms=0)


def _make_ready(state: State, job: Job, at_ms: int, *, front: bool = False) -> None:
    indexes.job_move(state, job, READY)
    indexes.ready_add(state, job, at_ms, front=front)


def _leased(state: State, job_id: str, token: int) -> Job:
    job = state.jobs.thaw(job_id)
    assert job.state == LEASED and job.token == token, (job, token)
    return job


def _release(state: State, job: Job, at_ms: int, run_at_ms: int = 0) -> None:
    """Back without an attempt counted: ready at the front of its bucket, or
    scheduled until ``run_at_ms`` (a snooze), as a push with a delay is."""
    attempt_ended(state, job, "released", at_ms, None)
    leased_ms = job.leased_ms
    _clear_lease(state, job)
    if run_at_ms > at_ms:
        indexes.job_move(state, job, SCHEDULED)
        indexes.scheduled_add(state, job, run_at_ms)
        return
    _make_ready(state, job, at_ms or leased_ms, front=True)


def _clear_lease(state: State, job: Job) -> None:
    """The lease ends; the job stays (waiting again, it may expire again)."""
    indexes.lease_remove(state, job)
    expiry.waits(state, job)


def _expire_job(state: State, job_id: str, at_ms: int) -> Enqueued:
    """A waiting job's expiry came before any lease: it is forgotten."""
    job = state.jobs.thaw(job_id)
    expiry.check_expiring(job, at_ms)
    _remove(state, job)
    _finished(state, job, history.EXPIRED, at_ms)
    if job.batch is not None:
        return _push_all(state, batches.ended(state, job, expiry.member_outcome(), at_ms))
    return NOTHING


def _finished(state: State, job: Job, outcome: str, at_ms: int) -> None:
    """A job forgotten without success joins the history (history.py)."""
    history.ended(state, job.id, job.queue, job.type, job.created_ms, job.failures, outcome, at_ms)


def _set_process_deadline(
    state: State, process: Process, kind: ProcessDeadline, deadline_ms: int
) -> None:
    match kind:
        case "beat":
            process.beat_deadline_ms = deadline_ms
        case "grace":
            process.grace_deadline_ms = deadline_ms
        case "terminate":
            process.terminate_deadline_ms = deadline_ms
        case _:
            assert_never(kind)
    heapq.heappush(state.process_deadlines, (deadline_ms, process.worker_id, kind))
