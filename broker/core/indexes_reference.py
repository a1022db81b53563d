"""The functions of indexes.py written the obvious way, to compare them with.

Each function has the name and the arguments of its namesake in
indexes.py, with a ``Reference`` in place of the State. What the indexes
hold is kept plainly: the jobs by id (plain ``Job`` objects, never packed),
each ready bucket a list in fetch order, each owner's leases a dict in the
order they were granted. Everything else is recounted from the jobs when it
is asked for: the counts, the queues, the live entries of the lazy heaps
and of the dead set. The composites (``lease_grants``, ``ack_gone``) are
their steps called one after the other. Slow on purpose: a test runs random
sequences of these against indexes.py and compares what both hold after
every step (tests/property/test_indexes_reference.py).

Not modelled: concurrency keys (their lanes are limits.py's and checked by
check_invariants), queue limits and paused queues.
"""

from collections import Counter

from leash.broker.core.jobs import DEAD, JOB_STATES, LEASED, READY, RETRYING, SCHEDULED, Job, write
from leash.broker.core.records import Grant, NewJob
from leash.protocol.messages import JobState


class Reference:
    __slots__ = ("jobs", "leases", "readied", "ready")

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.ready: dict[tuple[str, int], list[str]] = {}  # (queue, priority) -> ids
        self.leases: dict[str, dict[str, None]] = {}  # owner -> its leased ids
        self.readied: set[str] = set()

    # --- recounted from the jobs -----------------------------------------------

    def counts(self) -> dict[str, int]:
        counted = Counter(job.state for job in self.jobs.values())
        return {job_state: counted[job_state] for job_state in JOB_STATES}

    def queue_counts(self) -> dict[str, dict[str, int]]:
        counted = Counter((job.queue, job.state) for job in self.jobs.values())
        return {
            name: {job_state: counted[name, job_state] for job_state in JOB_STATES}
            for name in {job.queue for job in self.jobs.values()}
        }

    def deadlines(self) -> set[tuple[int, int, str]]:
        return {(j.deadline_ms, j.token, j.id) for j in self.jobs.values() if j.state == LEASED}

    def scheduled(self) -> set[tuple[int, str]]:
        waiting = (SCHEDULED, RETRYING)
        return {(j.run_at_ms, j.id) for j in self.jobs.values() if j.state in waiting}

    def dead(self) -> list[tuple[int, str]]:
        return sorted((j.died_ms, j.id) for j in self.jobs.values() if j.state == DEAD)


def jobs_add(ref: Reference, news: list[NewJob], keys: dict[str, str] | None = None) -> None:
    assert keys is None, "concurrency keys are not modelled"
    for new in news:
        assert new.id not in ref.jobs, new.id
        ready = new.run_at_ms is None
        ref.jobs[new.id] = Job(
            id=new.id,
            queue=new.queue,
            type=new.type,
            args=new.args,
            priority=new.priority,
            max_attempts=new.max_attempts,
            lease_ttl_ms=new.lease_ttl_ms,
            retry_base_ms=new.retry_base_ms,
            created_ms=new.created_ms,
            state=READY if ready else SCHEDULED,
            run_at_ms=0 if new.run_at_ms is None else new.run_at_ms,
            batch=new.batch,
            ready_ms=new.created_ms if ready else 0,
        )
        if ready:
            ref.ready.setdefault((new.queue, new.priority), []).append(new.id)
            ref.readied.add(new.queue)


def ready_jobs_add(ref: Reference, news: list[NewJob]) -> None:
    jobs_add(ref, news)


def job_move(ref: Reference, job: Job, new: JobState) -> None:
    write(job, "state", new)


def job_gone(ref: Reference, job: Job) -> None:
    del ref.jobs[job.id]


def ready_add(ref: Reference, job: Job, at_ms: int, *, front: bool = False) -> None:
    assert job.concurrency_key is None, "concurrency keys are not modelled"
    write(job, "ready_ms", at_ms)
    bucket = ref.ready.setdefault((job.queue, job.priority), [])
    if front:
        bucket.insert(0, job.id)
    else:
        bucket.append(job.id)
    ref.readied.add(job.queue)


def ready_remove(ref: Reference, job: Job) -> None:
    ref.ready[job.queue, job.priority].remove(job.id)
    write(job, "ready_ms", 0)


def leases_of(ref: Reference, owner: str) -> dict[str, None]:
    return ref.leases.setdefault(owner, {})


def lease_add(
    ref: Reference,
    owned: dict[str, None],
    owner: str,
    job: Job,
    token: int,
    deadline_ms: int,
    at_ms: int,
) -> None:
    for field, value in (
        ("owner", owner),
        ("token", token),
        ("deadline_ms", deadline_ms),
        ("leased_ms", at_ms),
    ):
        write(job, field, value)
    owned[job.id] = None


def owner_entry_add(owned: dict[str, None], job_id: str) -> None:
    owned[job_id] = None


def owner_entry_remove(ref: Reference, owner: str, job_id: str) -> None:
    del ref.leases[owner][job_id]
    if not ref.leases[owner]:
        del ref.leases[owner]


def lease_remove(ref: Reference, job: Job) -> None:
    owner_entry_remove(ref, job.owner, job.id)
    for field, cleared in (("owner", ""), ("token", 0), ("deadline_ms", 0), ("leased_ms", 0)):
        write(job, field, cleared)
    write(job, "progress", None)


def deadline_move(ref: Reference, job: Job, deadline_ms: int) -> None:
    write(job, "deadline_ms", deadline_ms)


def scheduled_add(ref: Reference, job: Job, run_at_ms: int) -> None:
    write(job, "run_at_ms", run_at_ms)


def scheduled_remove(ref: Reference, job: Job) -> None:
    write(job, "run_at_ms", 0)


def dead_add(ref: Reference, job: Job, at_ms: int) -> None:
    assert job.state == DEAD, job  # the dead set is recounted from the jobs
    write(job, "died_ms", at_ms if job.died_ms < at_ms else job.died_ms + 1)


def lease_grants(ref: Reference, owner: str, grants: list[Grant], at_ms: int) -> None:
    owned = leases_of(ref, owner)
    for grant in grants:
        job = ref.jobs[grant.id]
        assert job.state == READY, job
        ready_remove(ref, job)
        job_move(ref, job, LEASED)
        lease_add(ref, owned, owner, job, grant.token, grant.deadline_ms, at_ms)


def ack_gone(ref: Reference, job_id: str, token: int) -> Job:
    job = ref.jobs[job_id]
    assert job.state == LEASED and job.token == token, (job, token)
    owner_entry_remove(ref, job.owner, job.id)
    job_gone(ref, job)
    return job
