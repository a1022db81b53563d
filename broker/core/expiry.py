"""Expiry: a job not leased by its ``expires_ms`` is never leased.

Theory of operation. A push may give ``expires_at_ms`` (wall clock) or
``ttl_ms`` (from the push's now); the push record carries the absolute time
(records.JobExtras), the job keeps it (``Job.expires_ms``), and the heap
``state.expiries`` holds (expires_ms, id) for it, lazy as state.py's heaps
are: an entry is live while its job waits (ready, scheduled, retrying).
Leasing a job makes its entry stale — a job leased in time runs to its
end, however long — and every end of a lease that leaves the job waiting
adds it again (apply._clear_lease), as an operator's requeue of a dead job
does: a retry is a new chance to start, within the same expiry.
- ``fetch`` never leases a job past its expiry, even before a tick
  removed it (``expired``);
- the tick removes the waiting jobs whose time came (``JobsExpired``), in
  one record with what their end implies: their uniqueness keys freed
  (unique.py), a batch member counted dead (never waited on: the batch's
  death callback fires, its success can no longer), the totals count them
  (``ttl_expired``). An expired job is forgotten, not kept.
"""

import heapq

from leash.broker.core.batches import state as B
from leash.broker.core.state import WAITING, Job, State, due_entries, live_expiry


def expired(job: Job, now_ms: int) -> bool:
    """Whether a waiting job may no longer be leased."""
    return 0 < job.expires_ms <= now_ms


def due(state: State, now_ms: int, limit: int) -> list[str]:
    """The waiting jobs whose expiry came, at most ``limit``, earliest first."""
    ids: dict[str, None] = {}  # a job may have two equal live entries (a lease in between)
    for entry in due_entries(state.expiries, now_ms, limit):
        if len(ids) >= limit:
            break
        if entry[1] not in ids and live_expiry(state, entry):
            ids[entry[1]] = None
    return list(ids)


# --- apply's ----------------------------------------------------------------


def waits(state: State, job: Job) -> None:
    """The job waits again (pushed, its lease ended, requeued): it expires then."""
    if job.expires_ms:
        heapq.heappush(state.expiries, (job.expires_ms, job.id))


def check_expiring(job: Job, at_ms: int) -> None:
    assert job.state in WAITING and expired(job, at_ms), (job, at_ms)


def member_outcome() -> B.MemberState:
    """What an expired member counts as for its batch."""
    return B.DEAD
