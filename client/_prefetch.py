"""Jobs a worker leased ahead of a free slot: how long one may wait for it.

A ``Worker`` leases up to ``prefetch`` jobs beyond its free slots, so that
a handler that returns finds its next job here instead of waiting for a
round trip to the broker. A prefetched job's lease runs while it waits, so
each waits at most ``hold_s(job)``: half its ``lease_ttl_ms``, and never
more than ``PREFETCH_WAIT_MAX_S``, counted from when its lease arrived
(which is after the broker started the lease: the local count can only be
late by the one-way trip, far less than the half ttl left). Then the worker
releases it (back to its queue at once, no attempt counted), for another
worker to run; a job taken to run before then has its lease extended from
the same point on (at half its ttl, then every half ttl: the worker's
sweep and ``leash.client._keepalive``), so its lease never runs out either.

Sans-IO: the time is an argument (the worker passes its loop's clock), so
the rule is tested with a clock the test moves.
"""

from collections import deque
from typing import NamedTuple

from ._types import Job

PREFETCH_WAIT_MAX_S = 1.0  # a prefetched job waits at most this long for a free slot


def hold_s(job: Job) -> float:
    """How long ``job`` may wait for a slot once its lease has arrived (half
    its time limit at most too: a job never reaches its limit unstarted)."""
    half_ms = min(job.lease_ttl_ms, job.time_limit_ms or job.lease_ttl_ms) / 2
    return min(half_ms / 1000, PREFETCH_WAIT_MAX_S)


class Waiting(NamedTuple):
    job: Job
    leased_s: float  # when its lease arrived
    release_s: float  # when it is given back if still here


class Prefetched:
    """Leased jobs waiting for a slot, oldest first."""

    def __init__(self) -> None:
        self._waiting: deque[Waiting] = deque()

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, job: Job, leased_s: float) -> None:
        self._waiting.append(Waiting(job, leased_s, leased_s + hold_s(job)))

    def take(self) -> Waiting | None:
        """The oldest, to run now; None when none waits."""
        return self._waiting.popleft() if self._waiting else None

    def due(self, now_s: float) -> list[Job]:
        """Remove and return the jobs that have waited as long as they may."""
        if not any(w.release_s <= now_s for w in self._waiting):
            return []
        due = [w.job for w in self._waiting if w.release_s <= now_s]
        self._waiting = deque(w for w in self._waiting if w.release_s > now_s)
        return due

    def next_due_s(self) -> float | None:
        """When the next job must be given back (None: none waits)."""
        return min((w.release_s for w in self._waiting), default=None)

    def clear(self) -> list[Job]:
        """Every waiting job, removed (shutting down: to release)."""
        jobs = [w.job for w in self._waiting]
        self._waiting.clear()
        return jobs
