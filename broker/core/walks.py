"""The walks of the operator listings: each index in its order, from a cursor.

A walk yields ``(key, job)`` for the live entries of one index after a
cursor, and ``cursor(kind, key)`` is the text that resumes after ``key``.
Entering a walk at its cursor costs little however deep the cursor is,
except in the heaps (below):

- ready: queue by queue (by name), most urgent priority first, each bucket
  in fetch order. Key (queue, priority, id); the walk resumes after the
  id's entry in its bucket (found by a search in C), or at the front of the
  bucket when the job has left it (taken by a fetch or an operator).
- dead: newest first. Key (died_ms, id), the dead set's own order (it is
  kept sorted), so resuming is a bisection, exact however many died in one
  millisecond, whatever left the set since, and across a restart.
- scheduled and retrying (one heap), and leased (the deadlines heap): in
  the order they come due, walked as a tree (a frontier heap) so that the
  first k entries cost O(k log k); a page deep in a heap first walks past
  the entries before its cursor (about a microsecond each). Keys
  (run_at_ms, id) and (deadline_ms, token).

Cursors are opaque to clients; a cursor this broker could not have made is
``bad_request``. Pure, like the rest of the core.
"""

import heapq
from bisect import bisect_left
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

from leash.broker.core.common import Rejected
from leash.broker.core.limits import ready_from
from leash.broker.core.state import (
    DEAD,
    LEASED,
    PRIORITIES,
    READY,
    Job,
    State,
    live_dead,
    live_deadline,
    live_scheduled,
)
from leash.protocol.errors import ErrorCode

Key = tuple[Any, ...]


def walk(
    state: State, kind: str, cursor: str, queue: str | None
) -> Iterator[tuple[Key, Job | None]]:
    """The entries of ``kind``'s index after ``cursor``, each with its job,
    or None for a stale entry (looked at, so counted against the scan
    budget, but no job's); ``queue``: only that queue's, where the index is
    by queue."""
    if kind == READY:
        return _ready(state, _ready_cursor(cursor), queue)
    if kind == DEAD:
        return _dead(state, timed_cursor(cursor))
    if kind == LEASED:
        after = _numbers_cursor(cursor)
        return _heap(state, state.deadlines, live_deadline, after, lambda e: (e[0], e[1]), 2)
    return _heap(state, state.scheduled, live_scheduled, timed_cursor(cursor), tuple, 1)


def cursor(kind: str, key: Key) -> str:
    """The text that resumes the walk of ``kind`` after ``key``."""
    return "/".join(str(part) for part in key) if kind == READY else ":".join(map(str, key))


def start_of(job: Job) -> Key:
    """A ready key that resumes at the front of the job's bucket."""
    return (job.queue, job.priority, "")


# --- ready ---------------------------------------------------------------------


def _ready(state: State, after: Key | None, only: str | None) -> Iterator[tuple[Key, Job | None]]:
    names = [only] if only is not None else sorted(state.queues)
    for name in names:
        if after is not None and name < after[0]:
            continue
        queue = state.queues.get(name)
        if queue is None:
            continue
        for priority in PRIORITIES:
            at = after is not None and name == after[0]
            if at and priority > after[1]:  # type: ignore[index]
                continue
            bucket = queue.buckets.get(priority)
            resume = after[2] if at and priority == after[1] else ""  # type: ignore[index]
            if queue.lanes:  # keyed jobs: their lanes in the order a fetch meets them
                ids = ready_from(queue, priority, resume)
            elif not bucket:
                continue
            else:
                ids = bucket.live_from(bucket.position_after(resume) if resume else 0)
            for job_id in ids:
                yield (name, priority, job_id), state.jobs[job_id]


def _ready_cursor(text: str) -> Key | None:
    if not text:
        return None
    parts = text.split("/")
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or len(parts[1]) > 1:
        raise _bad(text)
    return parts[0], int(parts[1]), parts[2]


# --- dead ----------------------------------------------------------------------


def _dead(state: State, after: tuple[int, str] | None) -> Iterator[tuple[Key, Job | None]]:
    """Newest first from the entry before ``after``'s place: the dead set
    is sorted (state.add_dead), so that place is found by bisection whether
    the cursor's entry is still there, went stale or was dropped."""
    dead = state.dead
    end = len(dead) if after is None else bisect_left(dead, after)
    previous = None  # a job can have two equal live entries, side by side
    for entry in islice(reversed(dead), len(dead) - end, None):
        live = entry != previous and live_dead(state, entry)
        previous = entry
        yield entry, state.jobs[entry[1]] if live else None


# --- the heaps -------------------------------------------------------------------


def _heap(
    state: State,
    heap: list[Any],
    live: Callable[[State, Any], bool],
    after: Key | None,
    key_of: Callable[[Any], Key],
    id_at: int,
) -> Iterator[tuple[Key, Job | None]]:
    """The live entries of a heap, smallest first, after ``after``; walked
    as a tree so that taking k entries costs O(k log k)."""
    frontier = [(heap[0], 0)] if heap else []
    seen: set[str] = set()  # a job can have two equal live entries
    while frontier:
        entry, index = heapq.heappop(frontier)
        for child in (2 * index + 1, 2 * index + 2):
            if child < len(heap):
                heapq.heappush(frontier, (heap[child], child))
        key = key_of(entry)
        if after is not None and not key > after:
            continue  # before the cursor: walked past, not looked at
        job_id = entry[id_at]
        if job_id not in seen and live(state, entry):
            seen.add(job_id)
            yield key, state.jobs[job_id]
        else:
            yield key, None


def timed_cursor(text: str) -> tuple[int, str] | None:
    if not text:
        return None
    at, _, job_id = text.partition(":")
    if not at.lstrip("-").isdigit() or len(at) > 20:
        raise _bad(text)
    return int(at), job_id


def _numbers_cursor(text: str) -> tuple[int, int] | None:
    if not text:
        return None
    deadline, _, token = text.partition(":")
    if not (deadline.isdigit() and token.isdigit()) or len(deadline) > 20 or len(token) > 20:
        raise _bad(text)
    return int(deadline), int(token)


def _bad(text: str) -> Rejected:
    return Rejected(ErrorCode.BAD_REQUEST, f"not a cursor this broker made: {text!r}", "$.cursor")
