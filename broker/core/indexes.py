"""The indexes over the jobs table, and the only code that changes them.

Theory of operation. A job's state is kept in the jobs table (jobs.py);
every other structure that names jobs is derived from it and changed here,
by name, so apply.py and replay.py read as domain steps:

- the counts (``state.counts``, each queue's ``counts``) and the queues
  themselves (a queue exists while it counts a job or is paused):
  ``jobs_add`` (jobs created, each in the index of its state),
  ``job_move`` (one job to another state, every count kept right),
  ``job_gone`` (a job forgotten);
- the ready jobs: ``ready_add`` / ``ready_remove`` (its queue's bucket at
  its priority, or its key's lane (limits.py); ``queue.ready``; the
  ``readied`` hint for the shell's held fetches);
- the leases: ``lease_add`` / ``lease_remove`` (the lease's fields on the
  job, the owner's entry in ``leases_by_owner``, the deadlines heap, the
  leases its key counts), ``deadline_move`` (an extension);
- the timers of waiting jobs: ``scheduled_add`` / ``scheduled_remove``
  (the run-at heap), ``dead_add`` (the dead set, with the job's death time).

The job's fields these structures key it by (its state, ready since, run
at, died at, its lease's owner, token, deadline and start, and the lease's
progress report) are written here too, directly (jobs.write: a Job is
frozen, and these run for every job); the other fields through the jobs
table's ``change``.

The heaps and the dead set are lazy (state.py): removing an entry is
changing the job so that the entry no longer matches it; apply purges
their fronts after each record.

Two composites are the paths of nearly every record of a busy broker, the
grants of a lease record (``lease_grants``: for each, ``ready_remove``,
``job_move`` to LEASED and ``lease_add``) and an ack (``ack_gone``:
``lease_remove`` and ``job_gone``), and are written out once here: a
call per step would add three Python calls to the path every job takes.
``jobs_add``, ``lease_grants`` and ``ready_jobs_add`` (replay's bulk
builder: ready jobs packed at once) are loops over a record's jobs, so
that a record costs one call, not one per job.

indexes_reference.py implements the same functions in the most obvious way
(plain lists, every count recounted from the jobs); a test runs random
sequences of them against both and compares what each holds after every
step. No other module changes these structures (limits.py moves the
tokens of keyed lanes in the buckets, called from here and for changes of
limits); the state image's loader (image.py) builds them in bulk from a
snapshot.
"""

import heapq
from itertools import groupby
from operator import attrgetter
from typing import Final

from leash.broker.core import limits
from leash.broker.core.jobs import write
from leash.broker.core.ready import ReadyBucket
from leash.broker.core.records import Grant, NewJob
from leash.broker.core.state import (
    LEASED,
    READY,
    SCHEDULED,
    Job,
    Queue,
    State,
    add_dead,
)
from leash.protocol.messages import JobState

_QUEUE_AND_PRIORITY: Final = attrgetter("queue", "priority")

# --- counts: jobs created, moved, forgotten -------------------------------------


def jobs_add(state: State, news: list[NewJob], keys: dict[str, str] | None = None) -> None:
    """Create jobs in the table, each counted and in the index of its state:
    READY at the back of its bucket (of its key's lane when ``keys``, by
    id, names one), or SCHEDULED in the run-at heap."""
    jobs, queues, counts = state.jobs, state.queues, state.counts
    create = jobs.create
    for new in news:
        create(new)
        name = new.queue
        queue = queues.get(name)
        if queue is None:
            queue = queues[name] = Queue(name)
        if new.run_at_ms is None:
            counts[READY] += 1
            queue.counts[READY] += 1
            if keys is not None and new.id in keys:
                limits.entered(state, queue, new.id, keys[new.id], new.priority, False)
            else:
                bucket = queue.buckets.get(new.priority)
                if bucket is None:
                    bucket = queue.buckets[new.priority] = ReadyBucket()
                bucket.append(new.id)
            queue.ready += 1
            state.readied.add(name)
        else:
            counts[SCHEDULED] += 1
            queue.counts[SCHEDULED] += 1
            heapq.heappush(state.scheduled, (new.run_at_ms, new.id))


def ready_jobs_add(state: State, news: list[NewJob]) -> None:
    """New ready jobs without a key or a run-at time, as ``jobs_add``
    makes them, in bulk: packed at once (jobs.py), counted, and each run
    of one queue and priority appended to its bucket in one go."""
    state.jobs.create_ready_packed(news)
    state.counts[READY] += len(news)
    readied = state.readied
    for (name, priority), run in groupby(news, _QUEUE_AND_PRIORITY):
        ids = [new.id for new in run]
        queue = state.queue(name)
        queue.counts[READY] += len(ids)
        queue.ready += len(ids)
        queue.bucket(priority).extend(ids)
        readied.add(name)


def job_move(state: State, job: Job, new: JobState) -> None:
    """The job is in state ``new`` from now on; every count follows. (The
    index of its old state is the caller's: ``ready_remove``,
    ``lease_remove``; the lazy ones need nothing.)"""
    counts = state.counts
    counts[job.state] -= 1
    counts[new] += 1
    queue_counts = state.queues[job.queue].counts
    queue_counts[job.state] -= 1
    queue_counts[new] += 1
    write(job, "state", new)


def job_gone(state: State, job: Job) -> None:
    """Forget the job (out of the index of its state already, but for the
    lazy ones): out of the table and its counts; its queue goes with its
    last job unless it is paused."""
    name, job_state = job.queue, job.state
    state.counts[job_state] -= 1
    queue = state.queues[name]
    counts = queue.counts
    counts[job_state] -= 1
    state.jobs.pop(job.id)
    if not queue.paused and not any(counts.values()):
        del state.queues[name]


def queue_drop_if_empty(state: State, queue: Queue) -> None:
    """A queue that counts no job and is not paused exists no more."""
    if queue.is_empty():
        del state.queues[queue.name]


# --- ready jobs --------------------------------------------------------------------


def ready_add(state: State, job: Job, at_ms: int, *, front: bool = False) -> None:
    """A READY job waits from ``at_ms`` at the back of its bucket (or its
    key's lane), or at the front (a released job)."""
    write(job, "ready_ms", at_ms)
    queue = state.queues[job.queue]
    if job.concurrency_key is not None:
        limits.entered(state, queue, job.id, job.concurrency_key, job.priority, front)
    elif front:
        queue.bucket(job.priority).appendleft(job.id)
    else:
        queue.bucket(job.priority).append(job.id)
    queue.ready += 1
    state.readied.add(job.queue)


def ready_remove(state: State, job: Job) -> None:
    """A READY job waits no more (deleted, killed, expired): out of its
    bucket or lane. Its counts are the caller's (``job_move``, ``job_gone``)."""
    queue = state.queues[job.queue]
    if job.concurrency_key is None:
        queue.buckets[job.priority].discard(job.id)
    else:
        limits.left(state, queue, job.id, job.concurrency_key, job.priority)
    queue.ready -= 1
    write(job, "ready_ms", 0)


# --- leases ------------------------------------------------------------------------


def leases_of(state: State, owner: str) -> dict[str, None]:
    """The owner's leases (made for a lease record: it leases at least one)."""
    owned = state.leases_by_owner.get(owner)
    if owned is None:
        owned = state.leases_by_owner[owner] = {}
    return owned


def lease_add(
    state: State,
    owned: dict[str, None],
    owner: str,
    job: Job,
    token: int,
    deadline_ms: int,
    at_ms: int,
) -> None:
    """A LEASED job's lease, granted at ``at_ms`` to ``owner`` (``owned``:
    its leases, ``leases_of``): its fields, its owner's entry, its deadline."""
    write(job, "owner", owner)
    write(job, "token", token)
    write(job, "deadline_ms", deadline_ms)
    write(job, "leased_ms", at_ms)
    owned[job.id] = None
    heapq.heappush(state.deadlines, (deadline_ms, token, job.id))


def lease_remove(state: State, job: Job) -> None:
    """The job's lease ends: out of its owner's leases (an owner with none
    left goes), its key's count (limits.py), its fields cleared (its
    deadline entry is stale from now on); recent in the jobs table."""
    owner_entry_remove(state, job.owner, job.id)
    if state.limits or job.concurrency_key is not None:
        _slot_freed(state, state.queues[job.queue], job)
    write(job, "owner", "")
    write(job, "token", 0)
    write(job, "deadline_ms", 0)
    write(job, "leased_ms", 0)
    write(job, "progress", None)  # the report of the attempt that ended (progress.py)
    state.jobs.lease_ended(job.id)  # an object while recent, then packed (jobs.py)


def owner_entry_add(owned: dict[str, None], job_id: str) -> None:
    """The job in its owner's leases (``leases_of``) alone: replay.py's,
    for a leased job it has not built yet (then ``lease_add`` keeps the
    entry where it is)."""
    owned[job_id] = None


def owner_entry_remove(state: State, owner: str, job_id: str) -> None:
    """The job out of its owner's leases; an owner with none left goes."""
    owned = state.leases_by_owner[owner]
    del owned[job_id]
    if not owned:
        del state.leases_by_owner[owner]


def deadline_move(state: State, job: Job, deadline_ms: int) -> None:
    """A LEASED job's lease runs until ``deadline_ms`` now."""
    write(job, "deadline_ms", deadline_ms)
    heapq.heappush(state.deadlines, (deadline_ms, job.token, job.id))


def _slot_freed(state: State, queue: Queue, job: Job) -> None:
    """A lease ended: its key counts it no more; held fetches may be served."""
    if job.concurrency_key is not None:
        limits.lease_ended(state, queue, job.concurrency_key)
    limits.slot_freed(state, queue)


# --- the timers of waiting jobs ---------------------------------------------------


def scheduled_add(state: State, job: Job, run_at_ms: int) -> None:
    """A SCHEDULED or RETRYING job becomes ready at ``run_at_ms``."""
    write(job, "run_at_ms", run_at_ms)
    heapq.heappush(state.scheduled, (run_at_ms, job.id))


def scheduled_remove(state: State, job: Job) -> None:
    """The job waits for no time (promoted, requeued, killed): its entry is stale."""
    write(job, "run_at_ms", 0)


def dead_add(state: State, job: Job, at_ms: int) -> None:
    """A DEAD job in the dead set, died at ``at_ms``, or just after its
    last death: a job's death times only increase, so an entry of an
    earlier death (stale since a requeue) can never match again and come
    back to life."""
    died_ms = max(at_ms, job.died_ms + 1) if job.died_ms else at_ms
    write(job, "died_ms", died_ms)
    add_dead(state, (died_ms, job.id))


# --- the two paths of a busy broker, written out ---------------------------------


def lease_grants(state: State, owner: str, grants: list[Grant], at_ms: int) -> None:
    """READY jobs leased to ``owner`` at ``at_ms`` (a lease record's
    grants): for each, ``ready_remove``, ``job_move`` to LEASED and
    ``lease_add``, in one call."""
    owned = state.leases_by_owner.get(owner)
    if owned is None:
        owned = state.leases_by_owner[owner] = {}
    thaw, queues, counts, deadlines = state.jobs.thaw, state.queues, state.counts, state.deadlines
    for grant in grants:
        job_id, token, deadline_ms = grant.id, grant.token, grant.deadline_ms
        job = thaw(job_id)
        assert job.state == READY, job
        queue = queues[job.queue]
        key = job.concurrency_key
        if key is None:
            queue.buckets[job.priority].discard(job_id)
        else:  # a lease from a lane moves its key's token (limits.py)
            limits.leased(state, queue, job_id, key, job.priority)
        queue.ready -= 1
        counts[READY] -= 1
        counts[LEASED] += 1
        queue_counts = queue.counts
        queue_counts[READY] -= 1
        queue_counts[LEASED] += 1
        write(job, "state", LEASED)
        write(job, "ready_ms", 0)
        write(job, "leased_ms", at_ms)
        write(job, "owner", owner)
        write(job, "token", token)
        write(job, "deadline_ms", deadline_ms)
        owned[job_id] = None
        heapq.heappush(deadlines, (deadline_ms, token, job_id))
    assert owned, grants  # a record leases at least one job


def ack_gone(state: State, job_id: str, token: int) -> Job:
    """The job leased with ``token`` done and forgotten: ``lease_remove``
    and ``job_gone`` in one call; the job as it was, lease and all."""
    job = state.jobs.pop_leased(job_id, token)
    owners = state.leases_by_owner
    owned = owners[job.owner]
    del owned[job.id]
    if not owned:
        del owners[job.owner]
    state.counts[LEASED] -= 1
    name = job.queue
    queue = state.queues[name]
    queue_counts = queue.counts
    queue_counts[LEASED] -= 1
    if state.limits or job.concurrency_key is not None:
        _slot_freed(state, queue, job)
    if not queue.paused and not any(queue_counts.values()):
        del state.queues[name]
    return job
