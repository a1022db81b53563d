"""Replaying the journal: its records applied in order, to the state apply gives.

Theory of operation. Start-up replays every record since the last snapshot,
and most records of a busy broker are pushes, leases and acks of jobs whose
whole life lies within them. Applied one by one, each such job is built as a
``Job``, counted in its queue, put in its ready bucket, taken out of it,
put in the deadlines heap and forgotten again: work whose result is
nothing. ``Replay`` gives the same state as ``apply`` record by record
(equal ``canonical`` forms, every index consistent) but defers what no push,
lease or ack of another job reads: a pushed job is only remembered, with
its lease once it is leased. An ack of a deferred job forgets it. ``flush``
builds the jobs still deferred, in push order, as apply would have: in the
jobs table, counted, in their queues (made if need be) and ready buckets,
or leased and in the deadlines heap; ``finish`` flushes. The ready ones are
built in bulk: packed at once, each name numbered once, each run of one
queue and priority appended to its bucket in one go.

Only a job pushed ready, outside a batch and without a uniqueness key is
deferred. What is applied at
once, exactly as apply does, is each owner's leases (in their order: an
owner's leases are those of its process, and they are in token order), the
counter, and every job that is not deferred. The queues of deferred jobs
may meanwhile be dropped (their other jobs gone) and made again by the
flush: a queue's place among the queues and its empty buckets are not
state, nor is the hint of readied queues (a flush gives it for the queues
of the jobs it builds). The records that read what is deferred:

- the kinds that touch no job (boots, processes, pausing) apply at once;
- the kinds that end or change a lease by id (fail, extend, release, a
  process's death) build the deferred jobs they name first; those are
  leased, in no bucket, so nothing moves ahead of an older deferred job
  (a released job goes to the front of its bucket, ahead of them anyway);
- every other kind, a push of a job that waits for its time or joins a
  batch, a push that keeps a front end's fields on its jobs, the end of a
  lease of a batch member (it may finish the batch), and a lost lease (its
  job is ready again at once, at the back of its bucket) flush first: they
  may append to a ready bucket (a batch's callbacks are pushed), which must
  not overtake a deferred job.

Keyed jobs (limits.py) are never deferred (a push that carries one
applies at once), but a lease of one, or the end of its lease, moves its
key's token to the back of a bucket: once the state has keyed jobs
(``keyed``), such a record flushes first, as does a change of limits.
A rate-limited queue counts the leases of deferred jobs too, at their
lease record, as apply does.

At most ``DEFERRED_MAX`` jobs wait: past it the older half is built, in
push order, which keeps the buckets' order, so a journal of pushes alone
never holds its jobs twice.
"""

from itertools import islice
from typing import Final, assert_never

from leash.broker.core import indexes, limits
from leash.broker.core import records as R
from leash.broker.core.apply import ack_job, apply, counted, push_jobs
from leash.broker.core.history import succeeded
from leash.broker.core.state import (
    State,
    purge_batch_deadlines,
    purge_deadlines,
    purge_expiries,
    purge_unique_windows,
)

DEFERRED_MAX: Final = 1 << 14

Lease = tuple[str, R.Grant, int]  # a deferred job's lease: owner, grant, at_ms


class Replay:
    """Apply records in order, as apply does; ``finish`` before reading the state."""

    __slots__ = ("_leases", "_pushed", "deferred_max", "keyed", "state")

    def __init__(self, state: State, deferred_max: int = DEFERRED_MAX) -> None:
        self.state = state
        self.deferred_max = deferred_max
        # Whether the state may hold keyed jobs: their leases' tokens move.
        self.keyed = any(queue.lanes or queue.key_leased for queue in state.queues.values())
        self._pushed: dict[str, R.NewJob] = {}  # deferred jobs, in push order
        self._leases: dict[str, Lease] = {}  # the deferred jobs that are leased

    def apply(self, record: R.Record) -> None:
        match record:
            case R.JobsPushed():
                self._push(record)
            case R.JobsLeased():
                self._lease(record)
            case R.JobsAcked():
                self._ack(record)
            case (  # they touch no job
                R.Booted()
                | R.EpochRolled()
                | R.ProcessSeen()
                | R.ProcessDetached()
                | R.ProcessControlled()
                | R.QueuePaused()
                | R.QueueResumed()
                | R.UniqueWindowsEnded()
                | R.ScheduleAdded()
                | R.ScheduleRemoved()
                | R.SchedulePaused()
                | R.ScheduleResumed()
                | R.HistoryTrimmed()
                | R.ResultsDropped()
            ):
                apply(self.state, record)
            case (
                R.AttemptsFailed()
                | R.LeaseExtended()
                | R.LeaseReleased()
                | R.ProcessDied()
                | R.ProgressReported()
            ):
                named = _leases_named(record)
                if self.keyed or _readies(record) or self._ends_members(named):
                    self.flush()
                else:
                    self._build_named(named)
                apply(self.state, record)
            case (
                R.KeptJobsPushed()
                | R.JobsPromoted()
                | R.DeadTrimmed()
                | R.JobDeleted()
                | R.JobKilled()
                | R.JobRequeued()
                | R.BatchOpened()
                | R.BatchCommitted()
                | R.BatchDeleted()
                | R.BatchesAbandoned()
                | R.BatchesExpired()
                | R.JobsExpired()
                | R.QueueLimitsSet()
                | R.ScheduleFired()
                | R.ResultsAcked()
            ):
                self.keyed = self.keyed or _carries_keys(record)
                self.flush()
                apply(self.state, record)
            case _:
                assert_never(record)

    def deferred(self) -> set[str]:
        """The jobs deferred now: pushed and not yet built or acked."""
        return set(self._pushed)

    def finish(self) -> State:
        self.flush()
        return self.state

    def flush(self, keep: int = 0) -> None:
        """Build the deferred jobs, oldest first, all but the newest ``keep``."""
        pushed, leases, state = self._pushed, self._leases, self.state
        jobs = state.jobs
        built = list(islice(pushed.items(), len(pushed) - keep))
        if keep:
            for job_id, _ in built:
                del pushed[job_id]
        else:
            pushed.clear()
        ready = [new for job_id, new in built if job_id not in leases]
        if ready:
            indexes.ready_jobs_add(state, ready)
        if len(ready) < len(built):
            for job_id, new in built:
                lease = leases.pop(job_id, None)
                if lease is not None:
                    _build_leased(state, new, lease)
        if jobs.overdue > 0:
            jobs.pack_overdue()

    # --- the kinds that defer ----------------------------------------------------

    def _push(self, record: R.JobsPushed) -> None:
        news = record.jobs
        for new in news:
            if new.run_at_ms is not None or new.batch is not None or record.extras:
                self.keyed = self.keyed or _carries_keys(record)
                self.flush()
                apply(self.state, record)
                return
        state, pushed = self.state, self._pushed
        ids = state.jobs.ids
        for new in news:
            job_id = new.id
            assert job_id not in pushed and job_id not in ids, job_id
            pushed[job_id] = new
        state.counter = counted(record.counter_after)
        if len(pushed) > self.deferred_max:
            self.flush(keep=self.deferred_max // 2)

    def _lease(self, record: R.JobsLeased) -> None:
        state, pushed, leases = self.state, self._pushed, self._leases
        owner, at_ms = record.owner, record.at_ms
        owned = indexes.leases_of(state, owner)
        if state.starts:
            _started(state, pushed, record)
        for grant in record.grants:
            job_id = grant.id
            new = pushed.get(job_id)
            if new is None:
                if self.keyed and pushed:  # its token may move: nothing may overtake
                    self.flush()
                indexes.lease_grants(state, owner, [grant], at_ms)
                continue
            assert job_id not in leases, (job_id, "leased twice")
            indexes.owner_entry_add(owned, job_id)
            leases[job_id] = (owner, grant, at_ms)
        assert owned, record  # a record leases at least one job
        state.counter = counted(record.counter_after)
        if state.jobs.overdue > 0:
            state.jobs.pack_overdue()
        if state.expiries:  # as apply does after a lease record
            purge_expiries(state)

    def _ack(self, record: R.JobsAcked) -> None:
        state, pushed, leases = self.state, self._pushed, self._leases
        built = False
        for lease in record.leases:
            job_id = lease.id
            deferred = leases.pop(job_id, None)
            if deferred is None:
                assert job_id not in pushed, (job_id, "acked but not leased")
                if (self.keyed and pushed) or self._ends_members([job_id]):
                    self.flush()
                ack_job(state, lease, record.at_ms)
                built = True
                continue
            owner = deferred[0]
            assert deferred[1].token == lease.token, (lease, deferred)
            new = pushed.pop(job_id)
            succeeded(state, job_id, new.queue, new.type, new.created_ms, 0, owner, record.at_ms)
            indexes.owner_entry_remove(state, owner, job_id)
        if built:
            if state.jobs.overdue > 0:
                state.jobs.pack_overdue()
            purge_deadlines(state)
            purge_batch_deadlines(state)
            if state.unique_windows:  # as apply does after an ack record
                purge_unique_windows(state)

    def _ends_members(self, job_ids: list[str]) -> bool:
        """Whether any of these leased jobs is a batch member: ending its
        lease may finish its batch, whose callbacks are pushed."""
        leased = self.state.jobs.leased
        return any(
            (job := leased(job_id)) is not None and job.batch is not None for job_id in job_ids
        )

    def _build_named(self, job_ids: list[str]) -> None:
        """Build the deferred jobs among these, each of them leased."""
        pushed, leases, state = self._pushed, self._leases, self.state
        for job_id in job_ids:
            new = pushed.pop(job_id, None)
            if new is not None:
                lease = leases.pop(job_id, None)
                assert lease is not None, (job_id, "not leased")
                _build_leased(state, new, lease)


def _started(state: State, pushed: dict[str, R.NewJob], record: R.JobsLeased) -> None:
    """The lease record's grants count in their queues' rate windows, deferred or not."""
    names = []
    for grant in record.grants:
        new = pushed.get(grant.id)
        names.append(new.queue if new is not None else state.jobs[grant.id].queue)
    limits.started(state, names, record.at_ms)


def _carries_keys(record: R.Record) -> bool:
    """Whether a record creates keyed jobs or sets limits (limits.py)."""
    match record:
        case R.JobsPushed(extras=extras) | R.BatchOpened(extras=extras):
            return any(extra.concurrency_key is not None for extra in extras)
        case R.QueueLimitsSet():
            return True
        case _:
            return False


def _build_leased(state: State, new: R.NewJob, lease: Lease) -> None:
    """A deferred job, leased: what apply does for its push, then its lease
    (the owner's entry, made with the lease record, stays where it is)."""
    owner, grant, at_ms = lease
    push_jobs(state, [new], join=False)
    indexes.lease_grants(state, owner, [grant], at_ms)


LeaseRecord = (
    R.AttemptsFailed | R.LeaseExtended | R.LeaseReleased | R.ProcessDied | R.ProgressReported
)


def _readies(record: LeaseRecord) -> bool:
    """Whether the record makes a job ready at the back of its bucket: a
    lost lease (records.Failure)."""
    if isinstance(record, R.AttemptsFailed | R.ProcessDied):
        return any(f.retry_at_ms is not None and f.retry_at_ms <= f.at_ms for f in record.failures)
    return False


def _leases_named(
    record: LeaseRecord,
) -> list[str]:
    """The jobs a record that ends or changes leases by id names."""
    match record:
        case R.AttemptsFailed(failures=failures):
            return [failure.id for failure in failures]
        case (
            R.LeaseExtended(id=job_id) | R.LeaseReleased(id=job_id) | R.ProgressReported(id=job_id)
        ):
            return [job_id]
        case R.ProcessDied(failures=failures, released=released):
            return [failure.id for failure in failures] + [lease.id for lease in released]
        case _:
            assert_never(record)
