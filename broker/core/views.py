"""Read-only views of the state for operators: queues and paged job lists.

Pure, like the rest of the core: they read the state and the time they are
given and change nothing. A listing walks one index in order (walks.py)
and looks at no more than ``ADMIN_SCAN_MAX`` entries past its cursor per
request, so a page of a view over a million jobs costs one page of work,
not a sort of everything; when the budget runs out first the page is short
and its ``next`` cursor continues where it stopped. A cursor names the last
entry looked at, so a page stays right while jobs come and go between
requests. Bulk operations (requeue, delete, kill by filter) take the jobs a
scan finds.
"""

from typing import NamedTuple

from leash.broker.core import walks
from leash.broker.core.batches.views import batch_view
from leash.broker.core.decide import job_view
from leash.broker.core.limits import limits_view, ready_ids
from leash.broker.core.state import (
    DEAD,
    JOB_STATES,
    LEASED,
    PRIORITIES,
    READY,
    RETRYING,
    SCHEDULED,
    Job,
    State,
)
from leash.protocol import admin as A
from leash.protocol import limits as L
from leash.protocol import messages as M


def queue_views(state: State, now_ms: int) -> list[A.QueueView]:
    """Every queue with a job, paused or with limits (limits.py)."""
    views = []
    for name in sorted(state.queues.keys() | state.limits.keys()):
        queue = state.queues.get(name)
        counts = queue.counts if queue is not None else dict.fromkeys(JOB_STATES, 0)
        views.append(
            A.QueueView(
                name=name,
                ready=counts[READY],
                scheduled=counts[SCHEDULED] + counts[RETRYING],
                in_flight=counts[LEASED],
                dead=counts[DEAD],
                paused=queue is not None and queue.paused,
                latency_ms=_latency_ms(state, name, now_ms) if queue is not None else 0,
                **limits_view(state, queue, name, now_ms),
            )
        )
    return views


def _latency_ms(state: State, name: str, now_ms: int) -> int:
    """How long the oldest ready job of the queue has waited: the fronts of
    its priority buckets are the oldest of each (released jobs go to the
    front with the time they came back)."""
    queue = state.queues[name]
    oldest_ms = [
        state.jobs[next(ready_ids(queue, priority))].ready_ms
        for priority in PRIORITIES
        if queue.buckets.get(priority)
        or (queue.lanes and any(priority in lanes for lanes in queue.lanes.values()))
    ]
    return max(0, now_ms - min(oldest_ms)) if oldest_ms else 0


def list_jobs(state: State, request: A.ListJobs, now_ms: int) -> A.JobPage:
    """One page of the jobs of one state that match the filter."""
    found = scan(state, request.kind, request.filter, request.cursor, request.limit, now_ms)
    return A.JobPage(request.rid, [job_view(job) for job in found.jobs], found.next, found.scanned)


class Scanned(NamedTuple):
    jobs: list[Job]
    next: str  # "" when the listing is complete
    scanned: int


def scan(
    state: State,
    kind: str,
    wanted: A.JobFilter,
    cursor: str,
    limit: int,
    now_ms: int,
    *,
    taking: bool = False,
) -> Scanned:
    """Up to ``limit`` jobs of ``kind`` that match, after ``cursor``, within
    the scan budget (and, unless ``taking``, the reply's args budget).
    ``taking``: the jobs found leave the listing (a bulk operation), so a
    ready cursor names the last job looked at that stays."""
    jobs: list[Job] = []
    budget_bytes = 2**62 if taking else L.FETCH_REPLY_ARGS_MAX_BYTES
    scanned, last_key = 0, None  # the last entry looked at in full
    for key, job in walks.walk(state, kind, cursor, wanted.queue):
        if scanned >= L.ADMIN_SCAN_MAX or len(jobs) >= limit:
            return Scanned(jobs, _next(kind, cursor, last_key), scanned)
        scanned += 1
        if job is not None and job.state == kind and _matches(job, wanted, now_ms):
            budget_bytes -= len(job.args)
            if jobs and budget_bytes < 0:
                return Scanned(jobs, _next(kind, cursor, last_key), scanned)
            jobs.append(job)
            if taking and kind == READY:
                last_key = last_key or walks.start_of(job)
                continue
        last_key = key
    return Scanned(jobs, "", scanned)


def _next(kind: str, cursor: str, last_key: walks.Key | None) -> str:
    return cursor if last_key is None else walks.cursor(kind, last_key)


def list_batches(state: State, request: A.ListBatches) -> A.BatchPage:
    """Batches newest first (by serial: the order they were created in)."""
    after = walks.timed_cursor(request.cursor)
    views: list[M.BatchView] = []
    scanned, last_key = 0, after
    for batch in reversed(state.batches.values()):
        key = (batch.serial, batch.id)
        if after is not None and not key < after:
            continue
        if scanned >= L.ADMIN_SCAN_MAX or len(views) >= request.limit:
            return A.BatchPage(request.rid, views, _next("batches", "", last_key), scanned)
        scanned += 1
        if request.state is None or batch.state == request.state:
            views.append(batch_view(state, batch, 0))
        last_key = key
    return A.BatchPage(request.rid, views, "", scanned)


def _matches(job: Job, wanted: A.JobFilter, now_ms: int) -> bool:
    if wanted.queue is not None and job.queue != wanted.queue:
        return False
    if wanted.type is not None and job.type != wanted.type:
        return False
    age_ms = now_ms - job.created_ms
    if wanted.min_age_ms is not None and age_ms < wanted.min_age_ms:
        return False
    if wanted.max_age_ms is not None and age_ms > wanted.max_age_ms:
        return False
    if wanted.error is not None:
        error = job.last_error
        return error is not None and (wanted.error in error.type or wanted.error in error.message)
    return True
