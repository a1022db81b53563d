"""apply(state, record): the only code that changes broker state.

Used live (right after decide) and when replaying the journal, so both
build the same state by construction. A record that does not fit the state
is a bug, not bad input — decide validated it — so apply asserts instead of
returning errors. After every record the jobs it changed are packed again
(jobs.py: ``thaw`` gives the one Job object to change during a record,
``repack`` ends it) and the fronts of the lazy indexes are live again: only
the indexes the kind of record can leave a stale front in are purged
(``_STALES``; check_invariants checks every front after every record in the
core tests). What a record means for batches (members ending, batches
finishing, callbacks) is derived by batches.py while the record is applied;
the callback jobs it returns are created here.
"""

import heapq
from typing import Final, assert_never

from broker.core import batch_state as B
from broker.core import batches
from broker.core import records as R
from broker.core.state import (
    DEAD,
    LEASED,
    PURGES,
    READY,
    RETRYING,
    SCHEDULED,
    Job,
    Process,
    Purge,
    Queue,
    State,
    purge_batch_deadlines,
    purge_deadlines,
    purge_process_deadlines,
)
from protocol.messages import JobState

# The lazy indexes whose front a record of this kind can leave stale (an
# entry goes stale when its job, process or batch changes); all of them for
# a kind not named here. Pushes and leases only add entries.
_STALES: Final[dict[type, tuple[Purge, ...]]] = {
    R.JobsPushed: (),
    R.JobsLeased: (),
    R.JobsAcked: (purge_deadlines, purge_batch_deadlines),
    R.ProcessSeen: (purge_process_deadlines,),
    R.LeaseExtended: (purge_deadlines,),
}


def apply(state: State, record: R.Record) -> None:
    _apply(state, record)
    state.jobs.repack()
    for purge in _STALES.get(type(record), PURGES):
        purge(state)


def _apply(state: State, record: R.Record) -> None:
    match record:
        case R.JobsPushed(jobs=jobs, counter_after=counter):
            _push_members(state, jobs)
            state.counter = counter
        case R.JobsLeased(owner=owner, grants=grants, counter_after=counter, at_ms=at_ms):
            for grant in grants:
                _lease(state, grant, owner, at_ms)
            state.counter = counter
        case R.JobsAcked(leases=leases, at_ms=at_ms):
            for lease in leases:
                job = _leased(state, lease.id, lease.token)
                _remove(state, job)
                if job.batch is not None:
                    _push_all(state, batches.ended(state, job, B.SUCCEEDED, at_ms))
        case R.AttemptsFailed(failures=failures):
            for failure in failures:
                _fail(state, failure)
        case R.LeaseExtended(id=job_id, token=token, deadline_ms=deadline_ms):
            job = _leased(state, job_id, token)
            job.deadline_ms = deadline_ms
            heapq.heappush(state.deadlines, (deadline_ms, token, job_id))
        case R.LeaseReleased(id=job_id, token=token, at_ms=at_ms):
            _release(state, _leased(state, job_id, token), at_ms)
        case R.JobsPromoted(ids=ids):
            for job_id in ids:
                job = state.jobs.thaw(job_id)
                assert job.state in (SCHEDULED, RETRYING), job
                due_ms, job.run_at_ms = job.run_at_ms, 0
                _make_ready(state, job, due_ms)
        case R.QueuePaused(queue=name):
            _queue(state, name).paused = True
        case R.QueueResumed(queue=name):
            queue = _queue(state, name)
            queue.paused = False
            if queue.ready:
                state.readied.add(name)
            _drop_if_empty(state, queue)
        case R.DeadTrimmed(ids=ids):
            for job_id in ids:
                job = state.jobs.thaw(job_id)
                assert job.state == DEAD, job
                _remove(state, job)
        case R.Booted(epoch=epoch, process_deadline_ms=deadline_ms):
            assert epoch > state.epoch, (epoch, state.epoch)
            state.epoch = epoch
            state.counter = 1
            for process in state.processes.values():  # no connection survived the restart
                process.grace_deadline_ms = 0
                _set_process_deadline(state, process, "beat", deadline_ms)
        case R.ProcessSeen(worker_id=worker_id, info=info, at_ms=at_ms):
            _seen(state, worker_id, info, at_ms, record.beat_deadline_ms)
        case R.ProcessDetached(worker_id=worker_id, grace_deadline_ms=deadline_ms):
            _set_process_deadline(state, state.processes[worker_id], "grace", deadline_ms)
        case R.ProcessControlled(worker_id=worker_id, state=wanted):
            process = state.processes[worker_id]
            process.state = wanted
            if record.terminate_deadline_ms:
                _set_process_deadline(state, process, "terminate", record.terminate_deadline_ms)
        case R.ProcessDied(worker_id=worker_id, failures=failures, released=released):
            for failure in failures:
                _fail(state, failure)
            for lease in released:
                _release(state, _leased(state, lease.id, lease.token), record.at_ms)
            del state.processes[worker_id]
            assert worker_id not in state.leases_by_owner, worker_id
        case (
            R.BatchOpened()
            | R.BatchCommitted()
            | R.BatchDeleted()
            | R.BatchesAbandoned()
            | R.BatchesExpired()
        ):
            _apply_batch(state, record)
        case R.JobDeleted() | R.JobKilled() | R.JobRequeued():
            _apply_operator(state, record)
        case _:
            assert_never(record)


BatchRecord = (
    R.BatchOpened | R.BatchCommitted | R.BatchDeleted | R.BatchesAbandoned | R.BatchesExpired
)


def _apply_batch(state: State, record: BatchRecord) -> None:
    match record:
        case R.BatchOpened(batch=new, jobs=jobs, counter_after=counter):
            batches.open_batch(state, new)
            _push_members(state, jobs)
            state.counter = counter
            if new.committed:
                _push_all(state, batches.commit(state, new.id, new.created_ms))
        case R.BatchCommitted(id=batch_id, at_ms=at_ms):
            _push_all(state, batches.commit(state, batch_id, at_ms))
        case R.BatchDeleted(id=batch_id, at_ms=at_ms):
            _push_all(state, batches.remove(state, batch_id, at_ms))
        case R.BatchesAbandoned(ids=ids, at_ms=at_ms):
            for batch_id in ids:
                _push_all(state, batches.abandon(state, batch_id, at_ms))
        case R.BatchesExpired(ids=ids, at_ms=at_ms):
            for batch_id in ids:
                assert state.batches[batch_id].expires_ms <= at_ms, batch_id
                _push_all(state, batches.remove(state, batch_id, at_ms))
        case _:
            assert_never(record)


def _apply_operator(state: State, record: R.JobDeleted | R.JobKilled | R.JobRequeued) -> None:
    match record:
        case R.JobDeleted(id=job_id, at_ms=at_ms):
            job = state.jobs.thaw(job_id)
            _remove(state, job)
            if job.batch is not None:
                _push_all(state, batches.ended(state, job, B.DELETED, at_ms))
        case R.JobKilled(id=job_id, error=error, at_ms=at_ms):
            job = state.jobs.thaw(job_id)
            assert job.state != DEAD, job
            _leave(state, job)
            job.last_error, job.run_at_ms = error, 0
            _die(state, job, at_ms)
        case R.JobRequeued(id=job_id, at_ms=at_ms):
            job = state.jobs.thaw(job_id)
            assert job.state in (DEAD, RETRYING), job
            if job.state == DEAD:
                job.failures = 0  # a fresh set of attempts (died_ms stays: see _die)
            job.run_at_ms = 0
            _make_ready(state, job, at_ms)
            if job.batch is not None:
                batches.requeued(state, job)
        case _:
            assert_never(record)


def _seen(
    state: State, worker_id: str, info: R.ProcessInfo | None, at_ms: int, deadline_ms: int
) -> None:
    process = state.processes.get(worker_id)
    if process is None:
        assert info is not None, worker_id
        process = state.processes[worker_id] = Process(worker_id, info, at_ms, at_ms, 0)
    process.info = info or process.info
    process.last_seen_ms, process.grace_deadline_ms = at_ms, 0
    _set_process_deadline(state, process, "beat", deadline_ms)


def _push_members(state: State, jobs: list[R.NewJob]) -> None:
    """Create jobs, each a member of its batch (if it names one) from now on."""
    for new in jobs:
        _push(state, new)
        if new.batch is not None:
            batches.join(state, new.batch, new.id)


def _push_all(state: State, callbacks: list[R.NewJob]) -> None:
    """Create the callback jobs a batch transition enqueued (members already recorded)."""
    for new in callbacks:
        _push(state, new)


def _push(state: State, new: R.NewJob) -> None:
    assert new.id not in state.jobs, new.id
    state.jobs.create(new)  # the args are copied into the packed job: no record kept alive
    queue = _queue(state, new.queue)
    if new.run_at_ms is None:
        state.counts[READY] += 1
        queue.counts[READY] += 1
        queue.bucket(new.priority).append(new.id)
        queue.ready += 1
        state.readied.add(new.queue)
    else:
        state.counts[SCHEDULED] += 1
        queue.counts[SCHEDULED] += 1
        heapq.heappush(state.scheduled, (new.run_at_ms, new.id))


def _lease(state: State, grant: R.Grant, owner: str, at_ms: int) -> None:
    job = state.jobs.thaw(grant.id)
    assert job.state == READY, job
    _unready(state, job)
    _set_state(state, job, LEASED)
    job.owner, job.token, job.deadline_ms = owner, grant.token, grant.deadline_ms
    job.leased_ms = at_ms
    owned = state.leases_by_owner.get(owner)
    if owned is None:
        owned = state.leases_by_owner[owner] = {}
    owned[job.id] = None
    heapq.heappush(state.deadlines, (grant.deadline_ms, grant.token, job.id))


def _fail(state: State, failure: R.Failure) -> None:
    job = _leased(state, failure.id, failure.token)
    _clear_lease(state, job)
    job.failures += 1
    job.last_error = failure.error
    if failure.retry_at_ms is None:
        assert job.failures >= job.max_attempts, job
        _die(state, job, failure.at_ms)
        return
    _set_state(state, job, RETRYING)
    job.run_at_ms = failure.retry_at_ms
    heapq.heappush(state.scheduled, (failure.retry_at_ms, job.id))
    if job.batch is not None:
        _push_all(state, batches.ended(state, job, B.RETRYING, failure.at_ms))


def _die(state: State, job: Job, at_ms: int) -> None:
    _set_state(state, job, DEAD)
    # A job's death times only increase: an entry of an earlier death (stale
    # since a requeue) can never match again and come back to life.
    job.died_ms = max(at_ms, job.died_ms + 1) if job.died_ms else at_ms
    state.dead.append((job.died_ms, job.id))
    if job.batch is not None:
        _push_all(state, batches.ended(state, job, B.DEAD, at_ms))


def _leave(state: State, job: Job) -> None:
    """Take a job out of the index of its state; the lazy ones need nothing."""
    if job.state == READY:
        _unready(state, job)
    elif job.state == LEASED:
        _clear_lease(state, job)


def _remove(state: State, job: Job) -> None:
    """Forget a job, whatever its state (acked, trimmed, or deleted by an operator)."""
    _leave(state, job)
    state.counts[job.state] -= 1
    queue = state.queues[job.queue]
    queue.counts[job.state] -= 1
    state.jobs.pop(job.id)
    _drop_if_empty(state, queue)


def _unready(state: State, job: Job) -> None:
    """Out of its ready bucket (its queue keeps counting it until it goes)."""
    queue = state.queues[job.queue]
    queue.buckets[job.priority].discard(job.id)
    queue.ready -= 1
    job.ready_ms = 0


def _make_ready(state: State, job: Job, at_ms: int, *, front: bool = False) -> None:
    _set_state(state, job, READY)
    job.ready_ms = at_ms
    queue = state.queues[job.queue]
    bucket = queue.bucket(job.priority)
    if front:
        bucket.appendleft(job.id)
    else:
        bucket.append(job.id)
    queue.ready += 1
    state.readied.add(job.queue)


def _leased(state: State, job_id: str, token: int) -> Job:
    job = state.jobs.thaw(job_id)
    assert job.state == LEASED and job.token == token, (job, token)
    return job


def _release(state: State, job: Job, at_ms: int) -> None:
    leased_ms = job.leased_ms
    _clear_lease(state, job)
    _make_ready(state, job, at_ms or leased_ms, front=True)


def _clear_lease(state: State, job: Job) -> None:
    owned = state.leases_by_owner[job.owner]
    del owned[job.id]
    if not owned:
        del state.leases_by_owner[job.owner]
    job.owner, job.token, job.deadline_ms, job.leased_ms = "", 0, 0, 0


def _set_process_deadline(state: State, process: Process, kind: str, deadline_ms: int) -> None:
    setattr(process, f"{kind}_deadline_ms", deadline_ms)
    heapq.heappush(state.process_deadlines, (deadline_ms, process.worker_id, kind))


def _set_state(state: State, job: Job, new: JobState) -> None:
    state.counts[job.state] -= 1
    state.counts[new] += 1
    counts = state.queues[job.queue].counts
    counts[job.state] -= 1
    counts[new] += 1
    job.state = new


def _queue(state: State, name: str) -> Queue:
    queue = state.queues.get(name)
    if queue is None:
        queue = state.queues[name] = Queue(name)
    return queue


def _drop_if_empty(state: State, queue: Queue) -> None:
    if queue.is_empty():
        del state.queues[queue.name]
