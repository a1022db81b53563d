"""The totals since start: jobs pushed, acked, failed, dead and expired, in
all and by queue, for the stats view and the Prometheus counters; and the
last jobs removed at their expiry (``expired``: the stats list them).

Shell state, never journalled: a restart starts them at zero. What a record
counts for is the core's (``core.tally`` before it is applied, and
``core.enqueued`` for the batch callback jobs applying it created), so
every job created and every job that dies is counted, whatever made it.
Queues are counted by name up to ``QUEUE_TOTALS_MAX``; later names count
under ``OTHER_QUEUES``, so the table is bounded however many names pass.
The same counts go into the history of the dashboard's graphs (history.py:
totals a second, each queue's rates), at the time the shell passes in.
"""

from collections import deque
from collections.abc import Iterable, Sequence

from leash.broker import core
from leash.broker.core.records import NewJob, Record
from leash.broker.server.history import History
from leash.protocol.admin import ExpiredJob
from leash.protocol.limits import EXPIRED_JOBS_KEPT

QUEUE_TOTALS_MAX = 10_000  # queues counted by name since start; the rest as OTHER_QUEUES
OTHER_QUEUES = "_other"


class Totals:
    __slots__ = ("all", "by_queue", "expired", "history")

    def __init__(self, started_ms: int) -> None:
        self.all: dict[str, int] = dict.fromkeys(core.TOTALS, 0)
        # the last jobs removed at their expiry (the jobs are gone: a short history)
        self.expired: deque[ExpiredJob] = deque(maxlen=EXPIRED_JOBS_KEPT)
        self.by_queue: dict[str, dict[str, int]] = {}  # at most QUEUE_TOTALS_MAX queues
        self.history = History(started_ms)

    def apply(self, state: core.State, record: Record, now_ms: int) -> Sequence[NewJob]:
        """Apply a record (``core.apply``) and count what it did, at
        ``now_ms``: what the record says, read before (an ack removes its
        job), and the callback jobs applying it enqueued. Those jobs."""
        counted = core.tally(state, record)
        self.expired.extend(core.expired_jobs(state, record))
        callbacks = core.apply(state, record)
        self.count(counted, now_ms)
        if callbacks:
            self.count(core.enqueued(callbacks), now_ms)
        return callbacks

    def count(self, counted: Iterable[tuple[str, str]], now_ms: int) -> None:
        """Add (queue, total) pairs, as ``core.tally`` and ``core.enqueued`` give them."""
        for queue, total in counted:
            self.all[total] += 1
            counts, name = self.by_queue.get(queue), queue
            if counts is None:
                name = queue if len(self.by_queue) < QUEUE_TOTALS_MAX else OTHER_QUEUES
                counts = self.by_queue.setdefault(name, dict.fromkeys(core.TOTALS, 0))
            counts[total] += 1
            self.history.count(now_ms, name, total)
