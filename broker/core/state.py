"""The broker's state: jobs, queues, and the indexes the timers walk.

The persistent table is ``jobs`` (jobs.py: leased jobs as objects, the rest
packed): every other structure is an index over it.
- ``queues[q].buckets[p]``: READY jobs of queue q at priority p, in the order
  they became ready (ready.py: a deque with lazy deletion).
- ``scheduled``: a heap of (run_at_ms, id) for SCHEDULED and RETRYING jobs.
- ``deadlines``: a heap of (deadline_ms, token, id) for LEASED jobs.
- ``dead``: a deque of (died_ms, id) for DEAD jobs, sorted (oldest first;
  ``add_dead``), so a listing's cursor finds its place by bisection.
- ``batch_deadlines``: a heap of (deadline_ms, batch id, kind) for batches:
  kind "open" (abandoned then unless committed) or "expire" (removed then).
Batches (``batches``, see batches/state.py) are a second table: a job names
its batch, the batch lists its members.
The heaps and the deques are lazy: an entry is live only while it matches
its job (``live_*``); stale entries are dropped when they reach the front,
so the front is always live, and an index that holds more than twice the
entries its objects can have live, plus ``index_slack_entries``
(CoreConfig), is rebuilt without its stale ones (``index_bounds``): an
index never outlives what it tracks, whatever sits at its front (one long
lease, one batch that lives for a month). A rebuild costs what the stale
entries since the last one cost to add, so it is amortized O(1) a record.
The ready buckets keep their own bound (ready.py). Apply keeps fronts and
bounds true after every record; check_invariants checks them. Only
apply.py mutates a State (and replay.py, which applies journal records in
runs to the state apply gives), and the counts, the ready buckets, the
leases and the heaps of jobs only through indexes.py's named functions.
"""

import heapq
from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Literal, NamedTuple, assert_never

import msgspec
from msgspec import Struct

from leash.broker.core.batches.state import OPEN, Batch, BatchDeadline, plain_batch
from leash.broker.core.config import CoreConfig
from leash.broker.core.jobs import (
    DEAD,
    JOB_STATES,
    LEASED,
    READY,
    RETRYING,
    SCHEDULED,
    Job,
    JobTable,
)
from leash.broker.core.ready import ReadyBucket
from leash.broker.core.records import ProcessInfo, QueueLimitsSet, ScheduleSpec
from leash.protocol.admin import ProcessControl
from leash.protocol.limits import PRIORITY_MAX, PRIORITY_MIN

__all__ = [  # the job words are jobs.py's; the rest of the core takes them from here
    "DEAD",
    "JOB_STATES",
    "LEASED",
    "PRIORITIES",
    "READY",
    "RETRYING",
    "SCHEDULED",
    "Job",
    "Process",
    "Queue",
    "State",
]

PRIORITIES: Final = range(PRIORITY_MAX, PRIORITY_MIN - 1, -1)  # most urgent first

# A token is (epoch << 32) | counter, so the counter must stay below 2**32.
# Before a decision the shell rolls to a new epoch once the counter reaches
# COUNTER_ROLL_AT (decide.roll_due); no one decision takes more numbers than
# the headroom left (a 16 MiB frame holds far fewer than 2**24 jobs).
COUNTER_LIMIT: Final = 1 << 32
COUNTER_ROLL_AT: Final = COUNTER_LIMIT - (1 << 24)


class Process(Struct):
    """A registered worker process. Its leases are the jobs whose owner it
    is (state.leases_by_owner, derived from the jobs table)."""

    worker_id: str
    info: ProcessInfo
    registered_ms: int
    last_seen_ms: int
    beat_deadline_ms: int
    state: ProcessControl = "ok"
    grace_deadline_ms: int = 0  # detached: dead then unless it comes back
    terminate_deadline_ms: int = 0


# A process's timers (state.process_deadlines): no beat by then, detached
# too long, or told to terminate and still there.
ProcessDeadline = Literal["beat", "grace", "terminate"]
PROCESS_DEADLINES: Final[tuple[ProcessDeadline, ...]] = ("beat", "grace", "terminate")


def process_deadline_ms(process: Process, kind: ProcessDeadline) -> int:
    match kind:
        case "beat":
            return process.beat_deadline_ms
        case "grace":
            return process.grace_deadline_ms
        case "terminate":
            return process.terminate_deadline_ms
        case _:
            assert_never(kind)


class UniqueLock(Struct, array_like=True, gc=False):
    """Who holds a uniqueness key (unique.py)."""

    job_id: str
    until_ms: int = 0  # 0: the live job holds it; else its success's window ends then


class Schedule(Struct, array_like=True, gc=False):
    """A registered schedule and where it stands (cron.py)."""

    spec: ScheduleSpec
    next_ms: int  # its next tick (0: none ever)
    added_ms: int
    up_since_ms: int  # the broker's last boot (or the add): ticks before it came while down
    paused: bool = False
    last_tick_ms: int = 0  # the last tick that pushed its job (0: none yet)
    fires: int = 0  # ticks that pushed their job
    skips: int = 0  # times the ticks missed while the broker was down were skipped


# A finished job (history.py): (id, queue, type, outcome, created_ms,
# finished_ms, failures, worker_id, hostname, pid). A tuple, not a Struct:
# one is made on every ack, and a tuple costs a fraction of a Struct to make
# and keep (measured: 0.2 against 1.1 us an entry kept in the history).
Finished = tuple[str, str, str, str, int, int, int, str, str, int]


class Queue:
    """The ready jobs of one queue, how many of its jobs are in each state,
    and whether it is paused. A queue exists while it has a job in any state
    or is paused. The ready jobs with a concurrency key wait in their key's
    lane, which a bucket entry stands for (limits.py)."""

    __slots__ = ("buckets", "counts", "key_leased", "lanes", "name", "paused", "ready")

    def __init__(self, name: str) -> None:
        self.name = name
        self.paused = False
        self.ready = 0
        self.buckets: dict[int, ReadyBucket] = {}
        self.counts: dict[str, int] = dict.fromkeys(JOB_STATES, 0)  # derived from jobs
        self.lanes: dict[str, dict[int, ReadyBucket]] = {}  # key -> priority -> its ready jobs
        self.key_leased: dict[str, int] = {}  # key -> its leased jobs (derived from jobs)

    def bucket(self, priority: int) -> ReadyBucket:
        bucket = self.buckets.get(priority)
        if bucket is None:
            bucket = self.buckets[priority] = ReadyBucket()
        return bucket

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
        "expiries",
        "history",
        "history_order",
        "jobs",
        "leases_by_owner",
        "limits",
        "process_deadlines",
        "processes",
        "queues",
        "readied",
        "result_bytes",
        "result_expiries",
        "results",
        "schedule_ticks",
        "scheduled",
        "schedules",
        "starts",
        "unique",
        "unique_windows",
    )

    def __init__(self, config: CoreConfig | None = None) -> None:
        self.config = config or CoreConfig()
        self.jobs = JobTable(self.config.recent_jobs)
        self.queues: dict[str, Queue] = {}
        self.scheduled: list[tuple[int, str]] = []
        self.deadlines: list[tuple[int, int, str]] = []
        self.dead: deque[tuple[int, str]] = deque()  # sorted: see add_dead
        self.counts: dict[str, int] = dict.fromkeys(JOB_STATES, 0)
        self.processes: dict[str, Process] = {}
        self.process_deadlines: list[tuple[int, str, ProcessDeadline]] = []  # (ms, worker_id, kind)
        self.leases_by_owner: dict[str, dict[str, None]] = {}  # derived from jobs
        self.batches: dict[str, Batch] = {}
        self.batch_deadlines: list[tuple[int, str, BatchDeadline]] = []  # (deadline_ms, id, kind)
        self.expiries: list[tuple[int, str]] = []  # (expires_ms, id): waiting jobs (expiry.py)
        self.unique: dict[str, UniqueLock] = {}  # uniqueness key -> its holder (unique.py)
        self.unique_windows: list[tuple[int, str]] = []  # (until_ms, key): windows after success
        self.limits: dict[str, QueueLimitsSet] = {}  # queue -> its limits (limits.py)
        self.starts: dict[str, list[int]] = {}  # rate-limited queue -> its recent lease times
        self.schedules: dict[str, Schedule] = {}  # by name (cron.py)
        self.schedule_ticks: list[tuple[int, str]] = []  # (next_ms, name): schedules' next ticks
        # Finished jobs by id, and in the order they finished (history.py)
        self.history: dict[str, Finished] = {}
        self.history_order: deque[Finished] = deque()
        # Results kept (results.py): id -> (until_ms, value), their timers, their total
        self.results: dict[str, tuple[int, bytes]] = {}
        self.result_expiries: list[tuple[int, str]] = []
        self.result_bytes = 0
        self.epoch = 0  # set by the Booted record of each start
        self.counter = 1  # next number in this epoch for tokens and broker-made ids
        # Queues that gained ready jobs since the shell last looked: a hint for
        # waking long-poll fetches, not state (not journalled, not compared).
        self.readied: set[str] = set()

    def next_token(self, offset: int = 0) -> int:
        assert self.counter + offset < COUNTER_LIMIT, (self.epoch, self.counter, offset)
        return (self.epoch << 32) | (self.counter + offset)

    def queue(self, name: str) -> Queue:
        """The queue of this name, made if there is none yet (for the code
        that builds state: apply, replay, loading an image)."""
        queue = self.queues.get(name)
        if queue is None:
            queue = self.queues[name] = Queue(name)
        return queue

    def take_readied(self) -> set[str]:
        readied, self.readied = self.readied, set()
        return readied


def live_scheduled(state: State, entry: tuple[int, str]) -> bool:
    keyed = state.jobs.keyed_at(entry[1])
    return keyed is not None and keyed[0] in (SCHEDULED, RETRYING) and keyed[1] == entry[0]


def live_process_deadline(state: State, entry: tuple[int, str, ProcessDeadline]) -> bool:
    process = state.processes.get(entry[1])
    return process is not None and process_deadline_ms(process, entry[2]) == entry[0]


def live_batch_deadline(state: State, entry: tuple[int, str, BatchDeadline]) -> bool:
    batch = state.batches.get(entry[1])
    if batch is None:
        return False
    match entry[2]:
        case "open":
            return batch.state == OPEN and batch.open_deadline_ms == entry[0]
        case "expire":
            return batch.expires_ms == entry[0]
        case _:
            assert_never(entry[2])


WAITING: Final = (READY, SCHEDULED, RETRYING)  # the states a job can expire in


def live_expiry(state: State, entry: tuple[int, str]) -> bool:
    """A waiting job expires then (a leased job's entry is not live: it is
    added again when its lease ends, expiry.py)."""
    job = state.jobs.get(entry[1])
    return job is not None and job.expires_ms == entry[0] and job.state in WAITING


def live_unique_window(state: State, entry: tuple[int, str]) -> bool:
    lock = state.unique.get(entry[1])
    return lock is not None and lock.until_ms == entry[0]


def live_schedule_tick(state: State, entry: tuple[int, str]) -> bool:
    schedule = state.schedules.get(entry[1])
    return schedule is not None and not schedule.paused and schedule.next_ms == entry[0] > 0


def live_result(state: State, entry: tuple[int, str]) -> bool:
    kept = state.results.get(entry[1])
    return kept is not None and kept[0] == entry[0]


def live_deadline(state: State, entry: tuple[int, int, str]) -> bool:
    job = state.jobs.leased(entry[2])
    return job is not None and job.token == entry[1] and job.deadline_ms == entry[0]


def live_dead(state: State, entry: tuple[int, str]) -> bool:
    keyed = state.jobs.keyed_at(entry[1])
    return keyed is not None and keyed[0] == DEAD and keyed[1] == entry[0]


def add_dead(state: State, entry: tuple[int, str]) -> None:
    """Add an entry to the dead set in its sorted place. Deaths come in time
    order, so this is an append but for jobs that die in one millisecond
    out of id order (a bulk kill), or a death time moved up (apply._die) or
    a clock that went back: those are inserted, in O(entries after)."""
    dead = state.dead
    if not dead or dead[-1] <= entry:
        dead.append(entry)
    else:
        dead.insert(bisect_right(dead, entry), entry)


def live_dead_entries(state: State) -> list[tuple[int, str]]:
    """The live entries of the dead set, in their order. A job
    pushed again with the id of one that died and was forgotten may die in
    the same ms: the old entry is then live again, a copy of the new one,
    which is the last; the copy is left out."""
    seen: set[str] = set()
    kept: list[tuple[int, str]] = []
    for entry in reversed(state.dead):
        if entry[1] not in seen and live_dead(state, entry):
            seen.add(entry[1])
            kept.append(entry)
    kept.reverse()
    return kept


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


# --- the lazy indexes: their fronts live, their size bounded ------------------

# What each process and each batch can have live in its heap at once.
PROCESS_DEADLINE_KINDS: Final = 3  # beat, grace, terminate
BATCH_DEADLINE_KINDS: Final = 2  # open, expire


class IndexSize(NamedTuple):
    name: str
    entries: int
    live_max: int  # the most entries its live objects can have

    def bound(self, slack: int) -> int:
        """The most entries it may hold after any record (state.py's docstring)."""
        return 2 * self.live_max + slack


def index_sizes(state: State) -> list[IndexSize]:
    """Every lazy index of the state beside what its live objects allow."""
    counts = state.counts
    return [
        IndexSize("scheduled", len(state.scheduled), counts[SCHEDULED] + counts[RETRYING]),
        IndexSize("lease deadlines", len(state.deadlines), counts[LEASED]),
        IndexSize("dead", len(state.dead), counts[DEAD]),
        IndexSize(
            "process deadlines",
            len(state.process_deadlines),
            PROCESS_DEADLINE_KINDS * len(state.processes),
        ),
        IndexSize(
            "batch deadlines", len(state.batch_deadlines), BATCH_DEADLINE_KINDS * len(state.batches)
        ),
        IndexSize("unique windows", len(state.unique_windows), len(state.unique)),
        IndexSize("expiries", len(state.expiries), _waiting(state)),
        IndexSize("schedule ticks", len(state.schedule_ticks), len(state.schedules)),
        IndexSize("result expiries", len(state.result_expiries), len(state.results)),
    ]


def _waiting(state: State) -> int:
    counts = state.counts
    return counts[READY] + counts[SCHEDULED] + counts[RETRYING]


def _over(state: State, entries: int, live_max: int) -> bool:
    return entries > 2 * live_max + state.config.index_slack_entries


def _purge_heap(
    state: State, heap: list[Any], live: Callable[[State, Any], bool], live_max: int
) -> None:
    """A lazy heap's front live, and the heap rebuilt once it holds more
    than twice ``live_max`` (its live entries at most) plus the slack."""
    while heap and not live(state, heap[0]):
        heapq.heappop(heap)
    if _over(state, len(heap), live_max):
        _rebuild_heap(state, heap, live)


def _rebuild_heap(state: State, heap: list[Any], live: Callable[[State, Any], bool]) -> None:
    """The heap without its stale entries (and without a second copy of a
    live one), in place."""
    kept = list(dict.fromkeys(entry for entry in heap if live(state, entry)))
    heapq.heapify(kept)
    heap[:] = kept


def purge_scheduled(state: State) -> None:
    heap = state.scheduled
    while heap and not live_scheduled(state, heap[0]):
        heapq.heappop(heap)
    if _over(state, len(heap), state.counts[SCHEDULED] + state.counts[RETRYING]):
        _rebuild_heap(state, heap, live_scheduled)


def purge_deadlines(state: State) -> None:
    heap, leased = state.deadlines, state.jobs.leased
    while heap:  # live_deadline, inlined: this runs after every ack
        deadline_ms, token, job_id = heap[0]
        job = leased(job_id)
        if job is not None and job.token == token and job.deadline_ms == deadline_ms:
            break
        heapq.heappop(heap)
    if len(heap) > 2 * state.counts[LEASED] + state.config.index_slack_entries:
        _rebuild_heap(state, heap, live_deadline)


def purge_dead(state: State) -> None:
    dead = state.dead
    while dead and not live_dead(state, dead[0]):
        dead.popleft()
    if _over(state, len(dead), state.counts[DEAD]):
        kept = live_dead_entries(state)
        dead.clear()
        dead.extend(kept)


def purge_process_deadlines(state: State) -> None:
    _purge_heap(
        state,
        state.process_deadlines,
        live_process_deadline,
        PROCESS_DEADLINE_KINDS * len(state.processes),
    )


def purge_batch_deadlines(state: State) -> None:
    _purge_heap(
        state, state.batch_deadlines, live_batch_deadline, BATCH_DEADLINE_KINDS * len(state.batches)
    )


def purge_unique_windows(state: State) -> None:
    _purge_heap(state, state.unique_windows, live_unique_window, len(state.unique))


def purge_expiries(state: State) -> None:
    _purge_heap(state, state.expiries, live_expiry, _waiting(state))


def purge_schedule_ticks(state: State) -> None:
    _purge_heap(state, state.schedule_ticks, live_schedule_tick, len(state.schedules))


def purge_result_expiries(state: State) -> None:
    _purge_heap(state, state.result_expiries, live_result, len(state.results))


def purge_indexes(state: State) -> None:
    """Every lazy index: its front live, its size within its bound."""
    purge_scheduled(state)
    purge_deadlines(state)
    purge_dead(state)
    purge_process_deadlines(state)
    purge_batch_deadlines(state)
    purge_unique_windows(state)
    purge_expiries(state)
    purge_schedule_ticks(state)
    purge_result_expiries(state)


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
                "lanes": {
                    key: {p: list(lane) for p, lane in sorted(lanes.items())}
                    for key, lanes in sorted(q.lanes.items())
                },
                "key_leased": dict(sorted(q.key_leased.items())),
            }
            for name, q in sorted(state.queues.items())
        },
        "scheduled": sorted({e for e in state.scheduled if live_scheduled(state, e)}),
        "deadlines": sorted({e for e in state.deadlines if live_deadline(state, e)}),
        "dead": live_dead_entries(state),
        "counts": dict(state.counts),
        "processes": {k: msgspec.to_builtins(v) for k, v in sorted(state.processes.items())},
        "process_deadlines": sorted(
            {e for e in state.process_deadlines if live_process_deadline(state, e)}
        ),
        "batches": {k: plain_batch(v) for k, v in sorted(state.batches.items())},
        "batch_deadlines": sorted(
            {e for e in state.batch_deadlines if live_batch_deadline(state, e)}
        ),
        "unique": {k: (v.job_id, v.until_ms) for k, v in sorted(state.unique.items())},
        "unique_windows": sorted({e for e in state.unique_windows if live_unique_window(state, e)}),
        "expiries": sorted({e for e in state.expiries if live_expiry(state, e)}),
        "limits": {k: msgspec.to_builtins(v) for k, v in sorted(state.limits.items())},
        "starts": {k: list(v) for k, v in sorted(state.starts.items())},
        "schedules": {k: msgspec.msgpack.encode(v) for k, v in sorted(state.schedules.items())},
        "schedule_ticks": sorted({e for e in state.schedule_ticks if live_schedule_tick(state, e)}),
        "history": [msgspec.to_builtins(entry) for entry in state.history_order],
        "results": dict(sorted(state.results.items())),
        "result_bytes": state.result_bytes,
        "result_expiries": sorted({e for e in state.result_expiries if live_result(state, e)}),
    }


def _plain_job(job: Job) -> dict[str, Any]:
    plain = msgspec.structs.asdict(job)
    plain["args"] = bytes(job.args)
    plain["last_error"] = msgspec.to_builtins(job.last_error)
    return plain
