"""Read-only views of the state for operators: queues and paged job lists.

Pure, like the rest of the core: they read the state and the time they are
given and change nothing. A listing walks one index in order and looks at
no more than ``ADMIN_SCAN_MAX`` entries past its cursor per request, so the
first pages of a view over a million jobs cost one page of work, not a sort
of everything; when the budget runs out first the page is short and its
``next`` cursor continues where it stopped. Cursors are the sort key of the
last entry looked at, so a page stays right while jobs come and go between
requests. The scheduled index is a heap, which can be walked in order but
not entered in the middle: a page deep in it first walks past the entries
before its cursor (about a microsecond each).
"""

import heapq
from collections.abc import Iterator
from typing import NamedTuple

from leash.broker.core.batch_views import batch_view
from leash.broker.core.common import Rejected
from leash.broker.core.decide import job_view
from leash.broker.core.state import (
    DEAD,
    LEASED,
    PRIORITIES,
    READY,
    RETRYING,
    SCHEDULED,
    Job,
    State,
    live_dead,
    live_scheduled,
)
from leash.protocol import admin as A
from leash.protocol import limits as L
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode


def queue_views(state: State, now_ms: int) -> list[A.QueueView]:
    return [
        A.QueueView(
            name=name,
            ready=queue.counts[READY],
            scheduled=queue.counts[SCHEDULED] + queue.counts[RETRYING],
            in_flight=queue.counts[LEASED],
            dead=queue.counts[DEAD],
            paused=queue.paused,
            latency_ms=_latency_ms(state, name, now_ms),
        )
        for name, queue in sorted(state.queues.items())
    ]


def _latency_ms(state: State, name: str, now_ms: int) -> int:
    """How long the oldest ready job of the queue has waited: the fronts of
    its priority buckets are the oldest of each (released jobs go to the
    front with the time they came back)."""
    queue = state.queues[name]
    oldest_ms = [
        state.jobs[bucket.first()].ready_ms
        for priority in PRIORITIES
        if (bucket := queue.buckets.get(priority))
    ]
    return max(0, now_ms - min(oldest_ms)) if oldest_ms else 0


def list_jobs(state: State, request: A.ListJobs) -> A.JobPage:
    """One page of scheduled, retrying or dead jobs that match the filter."""
    found = scan(state, request.kind, request.filter, request.cursor, request.limit, with_args=True)
    return A.JobPage(request.rid, [job_view(job) for job in found.jobs], found.next, found.scanned)


class Scanned(NamedTuple):
    jobs: list[Job]
    next: str  # "" when the listing is complete
    scanned: int


def scan(
    state: State, kind: str, wanted: A.JobFilter, cursor: str, limit: int, *, with_args: bool
) -> Scanned:
    """Up to ``limit`` jobs of ``kind`` that match, after ``cursor``, within
    the scan budget (and, ``with_args``, the reply's args budget)."""
    newest_first = kind == DEAD
    after = _parse_cursor(cursor)
    walk = dead_newest_first(state) if newest_first else scheduled_in_order(state)
    jobs: list[Job] = []
    budget_bytes = L.FETCH_REPLY_ARGS_MAX_BYTES if with_args else 2**62
    scanned, last_key = 0, after  # the last entry looked at in full
    for key, job in walk:
        if after is not None and not (key < after if newest_first else key > after):
            continue  # before the cursor: walked past, not looked at
        if scanned >= L.ADMIN_SCAN_MAX or len(jobs) >= limit:
            return Scanned(jobs, _cursor(last_key), scanned)
        scanned += 1
        if job.state == kind and _matches(job, wanted):
            budget_bytes -= len(job.args)
            if jobs and budget_bytes < 0:
                return Scanned(jobs, _cursor(last_key), scanned)
            jobs.append(job)
        last_key = key
    return Scanned(jobs, "", scanned)


def list_batches(state: State, request: A.ListBatches) -> A.BatchPage:
    """Batches newest first (by serial: the order they were created in)."""
    after = _parse_cursor(request.cursor)
    views: list[M.BatchView] = []
    scanned, last_key = 0, after
    for batch in reversed(state.batches.values()):
        key = (batch.serial, batch.id)
        if after is not None and not key < after:
            continue
        if scanned >= L.ADMIN_SCAN_MAX or len(views) >= request.limit:
            return A.BatchPage(request.rid, views, _cursor(last_key), scanned)
        scanned += 1
        if request.state is None or batch.state == request.state:
            views.append(batch_view(state, batch, 0))
        last_key = key
    return A.BatchPage(request.rid, views, "", scanned)


Key = tuple[int, str]


def scheduled_in_order(state: State) -> Iterator[tuple[Key, Job]]:
    """The live entries of the scheduled heap, smallest first, walked as a
    tree (a frontier heap) so that taking k entries costs O(k log k)."""
    heap = state.scheduled
    frontier = [(heap[0], 0)] if heap else []
    seen: set[str] = set()  # a job can have two equal live entries
    while frontier:
        entry, index = heapq.heappop(frontier)
        for child in (2 * index + 1, 2 * index + 2):
            if child < len(heap):
                heapq.heappush(frontier, (heap[child], child))
        if entry[1] not in seen and live_scheduled(state, entry):
            seen.add(entry[1])
            yield entry, state.jobs[entry[1]]


def dead_newest_first(state: State) -> Iterator[tuple[Key, Job]]:
    seen: set[str] = set()  # a job can have two equal live entries
    for entry in reversed(state.dead):
        if entry[1] not in seen and live_dead(state, entry):
            seen.add(entry[1])
            yield entry, state.jobs[entry[1]]


def _matches(job: Job, wanted: A.JobFilter) -> bool:
    if wanted.queue is not None and job.queue != wanted.queue:
        return False
    if wanted.type is not None and job.type != wanted.type:
        return False
    if wanted.error is not None:
        error = job.last_error
        return error is not None and (wanted.error in error.type or wanted.error in error.message)
    return True


def _cursor(key: Key | None) -> str:
    return "" if key is None else f"{key[0]}:{key[1]}"


def _parse_cursor(text: str) -> Key | None:
    if not text:
        return None
    at, _, job_id = text.partition(":")
    if not at.lstrip("-").isdigit() or len(at) > 20:
        raise Rejected(
            ErrorCode.BAD_REQUEST, f"not a cursor this broker made: {text!r}", "$.cursor"
        )
    return int(at), job_id
