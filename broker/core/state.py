"""The broker's state: jobs, queues, and the indexes the timers walk.

The persistent table is ``jobs``: every other structure is an index over it.
- ``queues[q].buckets[p]``: READY jobs of queue q at priority p, in the order
  they became ready (an OrderedDict: O(1) pop from the front and removal).
- ``scheduled``: a heap of (run_at_ms, id) for SCHEDULED and RETRYING jobs.
- ``deadlines``: a heap of (deadline_ms, token, id) for LEASED jobs.
- ``dead``: a deque of (died_ms, id) for DEAD jobs, oldest first.
- ``batch_deadlines``: a heap of (deadline_ms, batch id, kind) for batches:
  kind "open" (abandoned then unless committed) or "expire" (removed then).
Batches (``batches``, see batch_state.py) are a second table: a job names
its batch, the batch lists its members.
The heaps and the deque are lazy: an entry is live only while it matches
its job (``_live_*``); stale entries are dropped when they reach the front,
so the front is always live (apply keeps that true after every record).
Only apply.py mutates a State.
"""

import heapq
from collections import OrderedDict, deque
from typing import Any, Final

import msgspec
from msgspec import Raw, Struct

from broker.core.batch_state import OPEN, Batch, plain_batch
from broker.core.config import CoreConfig
from broker.core.records import ProcessInfo
from protocol.limits import PRIORITY_MAX, PRIORITY_MIN
from protocol.messages import ErrorInfo, JobState

READY: Final = "ready"
SCHEDULED: Final = "scheduled"
LEASED: Final = "leased"
RETRYING: Final = "retrying"
DEAD: Final = "dead"
JOB_STATES: Final = (READY, SCHEDULED, LEASED, RETRYING, DEAD)
PRIORITIES: Final = range(PRIORITY_MAX, PRIORITY_MIN - 1, -1)  # most urgent first


class Job(Struct, array_like=True, gc=False):
    id: str
    queue: str
    type: str
    args: Raw
    priority: int
    max_attempts: int
    lease_ttl_ms: int
    retry_base_ms: int | None
    created_ms: int
    state: JobState
    run_at_ms: int = 0  # SCHEDULED / RETRYING: when it becomes ready
    failures: int = 0
    last_error: ErrorInfo | None = None
    owner: str = ""  # LEASED: the worker id holding it
    token: int = 0  # LEASED: the current fencing token
    deadline_ms: int = 0  # LEASED
    died_ms: int = 0  # DEAD: when (kept after a requeue: a later death is later still)
    leased_ms: int = 0  # LEASED: when the lease was granted
    batch: str | None = None  # a member of this unfinished batch
    ready_ms: int = 0  # READY: since when it waits (its queue's latency)


class Process(Struct):
    """A registered worker process. Its leases are the jobs whose owner it
    is (state.leases_by_owner, derived from the jobs table)."""

    worker_id: str
    info: ProcessInfo
    registered_ms: int
    last_seen_ms: int
    beat_deadline_ms: int
    state: str = "ok"  # "ok", "quiet" or "terminate"
    grace_deadline_ms: int = 0  # detached: dead then unless it comes back
    terminate_deadline_ms: int = 0


class Queue:
    """The ready jobs of one queue, how many of its jobs are in each state,
    and whether it is paused. A queue exists while it has a job in any state
    or is paused."""

    __slots__ = ("buckets", "counts", "name", "paused", "ready")

    def __init__(self, name: str) -> None:
        self.name = name
        self.paused = False
        self.ready = 0
        self.buckets: dict[int, OrderedDict[str, Job]] = {}
        self.counts: dict[str, int] = dict.fromkeys(JOB_STATES, 0)  # derived from jobs

    def is_empty(self) -> bool:
        return not self.paused and not any(self.counts.values())


class State:
    __slots__ = (
        "batch_deadlines",
        "batches",
        "config",
        "counter",
        "counts",
        "dead",
        "deadlines",
        "epoch",
        "jobs",
        "leases_by_owner",
        "process_deadlines",
        "processes",
        "queues",
        "readied",
        "scheduled",
    )

    def __init__(self, config: CoreConfig | None = None) -> None:
        self.config = config or CoreConfig()
        self.jobs: dict[str, Job] = {}
        self.queues: dict[str, Queue] = {}
        self.scheduled: list[tuple[int, str]] = []
        self.deadlines: list[tuple[int, int, str]] = []
        self.dead: deque[tuple[int, str]] = deque()
        self.counts: dict[str, int] = dict.fromkeys(JOB_STATES, 0)
        self.processes: dict[str, Process] = {}
        # (deadline_ms, worker_id, kind): kind is "beat", "grace" or "terminate"
        self.process_deadlines: list[tuple[int, str, str]] = []
        self.leases_by_owner: dict[str, dict[str, None]] = {}  # derived from jobs
        self.batches: dict[str, Batch] = {}
        self.batch_deadlines: list[tuple[int, str, str]] = []  # (deadline_ms, id, kind)
        self.epoch = 0  # set by the Booted record of each start
        self.counter = 1  # next number in this epoch for tokens and broker-made ids
        # Queues that gained ready jobs since the shell last looked: a hint for
        # waking long-poll fetches, not state (not journalled, not compared).
        self.readied: set[str] = set()

    def next_token(self, offset: int = 0) -> int:
        return (self.epoch << 32) | (self.counter + offset)

    def take_readied(self) -> set[str]:
        readied, self.readied = self.readied, set()
        return readied


def live_scheduled(state: State, entry: tuple[int, str]) -> bool:
    job = state.jobs.get(entry[1])
    return job is not None and job.state in (SCHEDULED, RETRYING) and job.run_at_ms == entry[0]


_DEADLINE_FIELDS: Final = {kind: f"{kind}_deadline_ms" for kind in ("beat", "grace", "terminate")}


def live_process_deadline(state: State, entry: tuple[int, str, str]) -> bool:
    process = state.processes.get(entry[1])
    return process is not None and getattr(process, _DEADLINE_FIELDS[entry[2]]) == entry[0]


def live_batch_deadline(state: State, entry: tuple[int, str, str]) -> bool:
    batch = state.batches.get(entry[1])
    if batch is None:
        return False
    if entry[2] == "open":
        return batch.state == OPEN and batch.open_deadline_ms == entry[0]
    return batch.expires_ms == entry[0]


def live_deadline(state: State, entry: tuple[int, int, str]) -> bool:
    job = state.jobs.get(entry[2])
    return (
        job is not None
        and job.state == LEASED
        and job.token == entry[1]
        and job.deadline_ms == entry[0]
    )


def live_dead(state: State, entry: tuple[int, str]) -> bool:
    job = state.jobs.get(entry[1])
    return job is not None and job.state == DEAD and job.died_ms == entry[0]


def due_entries(heap: list[Any], now_ms: int, limit: int) -> list[Any]:
    """The smallest heap entries whose key (first item) is at most now_ms,
    smallest first, at most ``limit * 2`` of them.

    Walks the heap as a tree without popping, best first (a small heap of
    frontier nodes), so a bounded walk still returns the smallest entries: a
    node over now_ms has no due descendants. Stale entries are included; the
    caller filters them."""
    found: list[Any] = []
    frontier = [(heap[0], 0)] if heap and heap[0][0] <= now_ms else []
    while frontier and len(found) < limit * 2:
        entry, i = heapq.heappop(frontier)
        found.append(entry)
        for child in (2 * i + 1, 2 * i + 2):
            if child < len(heap) and heap[child][0] <= now_ms:
                heapq.heappush(frontier, (heap[child], child))
    return found


def purge_fronts(state: State) -> None:
    """Drop stale entries at the front of the lazy indexes."""
    scheduled, deadlines, dead = state.scheduled, state.deadlines, state.dead
    while scheduled and not live_scheduled(state, scheduled[0]):
        heapq.heappop(scheduled)
    while deadlines and not live_deadline(state, deadlines[0]):
        heapq.heappop(deadlines)
    while dead and not live_dead(state, dead[0]):
        dead.popleft()
    processes = state.process_deadlines
    while processes and not live_process_deadline(state, processes[0]):
        heapq.heappop(processes)
    batches = state.batch_deadlines
    while batches and not live_batch_deadline(state, batches[0]):
        heapq.heappop(batches)


def canonical(state: State) -> dict[str, Any]:
    """The state as plain data, with the lazy indexes reduced to their live
    entries: two states that behave the same have equal canonical forms."""
    return {
        "epoch": state.epoch,
        "counter": state.counter,
        "jobs": {k: _plain_job(v) for k, v in sorted(state.jobs.items())},
        "queues": {
            name: {
                "paused": q.paused,
                "counts": dict(q.counts),
                "ready": {p: list(b) for p, b in sorted(q.buckets.items()) if b},
            }
            for name, q in sorted(state.queues.items())
        },
        "scheduled": sorted({e for e in state.scheduled if live_scheduled(state, e)}),
        "deadlines": sorted({e for e in state.deadlines if live_deadline(state, e)}),
        "dead": [e for e in state.dead if live_dead(state, e)],
        "counts": dict(state.counts),
        "processes": {k: msgspec.to_builtins(v) for k, v in sorted(state.processes.items())},
        "process_deadlines": sorted(
            {e for e in state.process_deadlines if live_process_deadline(state, e)}
        ),
        "batches": {k: plain_batch(v) for k, v in sorted(state.batches.items())},
        "batch_deadlines": sorted(
            {e for e in state.batch_deadlines if live_batch_deadline(state, e)}
        ),
    }


def _plain_job(job: Job) -> dict[str, Any]:
    plain = msgspec.structs.asdict(job)
    plain["args"] = bytes(job.args)
    plain["last_error"] = msgspec.to_builtins(job.last_error)
    return plain


def check_invariants(state: State) -> list[str]:
    """Cross-check every index against the jobs table, and the batches
    against the jobs (batch_checks.py); [] when consistent."""
    problems: list[str] = []
    counts = dict.fromkeys(JOB_STATES, 0)
    by_queue: dict[str, dict[str, int]] = {}
    for job in state.jobs.values():
        counts[job.state] += 1
        queue_counts = by_queue.setdefault(job.queue, dict.fromkeys(JOB_STATES, 0))
        queue_counts[job.state] += 1
    if counts != state.counts:
        problems.append(f"counts {state.counts} != {counts}")
    for name in by_queue.keys() - state.queues.keys():
        problems.append(f"queue {name} has jobs but is not kept")
    for name, queue in state.queues.items():
        if queue.counts != by_queue.get(name, dict.fromkeys(JOB_STATES, 0)):
            problems.append(f"queue {name} counts {queue.counts}, holds {by_queue.get(name)}")
    ready_seen: set[str] = set()
    for name, queue in state.queues.items():
        if queue.is_empty():
            problems.append(f"queue {name} is empty but kept")
        in_queue = 0
        for priority, bucket in queue.buckets.items():
            for job_id, job in bucket.items():
                in_queue += 1
                if job_id in ready_seen or state.jobs.get(job_id) is not job:
                    problems.append(f"ready entry {job_id} is duplicated or unknown")
                elif (job.state, job.queue, job.priority) != (READY, name, priority):
                    problems.append(f"job {job_id} is in ready {name}/{priority} but {job.state}")
                ready_seen.add(job_id)
        if in_queue != queue.ready:
            problems.append(f"queue {name} counts {queue.ready} ready, holds {in_queue}")
    live = {
        READY: ready_seen,
        SCHEDULED: {e[1] for e in state.scheduled if live_scheduled(state, e)},
        LEASED: {e[2] for e in state.deadlines if live_deadline(state, e)},
        DEAD: {e[1] for e in state.dead if live_dead(state, e)},
    }
    live[RETRYING] = live[SCHEDULED]
    for job in state.jobs.values():
        if job.id not in live[job.state]:
            problems.append(f"job {job.id} is {job.state} but missing from its index")
        if job.state == LEASED and not (job.owner and job.token >> 32 <= state.epoch):
            problems.append(f"job {job.id} is leased without a valid owner or token")
        if job.state == LEASED and job.owner not in state.processes:
            problems.append(f"job {job.id} is leased by {job.owner}, which is not a live process")
    owned = {(o, j) for o, ids in state.leases_by_owner.items() for j in ids}
    leased = {(j.owner, j.id) for j in state.jobs.values() if j.state == LEASED}
    if owned != leased or any(not ids for ids in state.leases_by_owner.values()):
        problems.append("the leases-by-owner index disagrees with the jobs table")
    for process in state.processes.values():
        for kind in ("beat", "grace", "terminate"):
            deadline_ms = getattr(process, f"{kind}_deadline_ms")
            entry = (deadline_ms, process.worker_id, kind)
            if deadline_ms and entry not in state.process_deadlines:
                problems.append(f"process {process.worker_id} has no {kind} timer")
    from broker.core.batch_checks import batch_problems  # it reads State: imported here

    problems.extend(batch_problems(state))
    return problems
