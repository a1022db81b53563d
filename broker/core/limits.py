"""Concurrency and rate limits: how many jobs of a queue run at once, and
how many it starts in a time.

Theory of operation. A queue's limits are one record, ``QueueLimitsSet``,
kept in ``state.limits`` (a queue with none has no entry: the fetch of an
unlimited queue looks at nothing more than before):
- ``concurrency``: at most this many jobs of the queue leased at once
  (its ``counts[LEASED]``, derived from the jobs);
- ``per_key``: at most this many leased at once of each concurrency key, a
  push's ``concurrency_key`` (``Queue.key_leased``, derived from the jobs);
- ``rate`` per ``rate_interval_ms``: at most ``rate`` leases granted in any
  interval of that length (a sliding window), counted from the lease
  records' times: ``state.starts[queue]`` keeps the lease times of the
  last interval, at most ``rate`` of them, as of the last lease record.
  A fetch at ``now_ms`` may start ``rate`` minus those after
  ``now_ms - rate_interval_ms``; the next start is due when the oldest of
  the last ``rate`` leaves the window (``next_start_ms``: the shell's
  timer wakes the fetches held for it, so none polls).

Keyed jobs are never scanned past. A ready job with a concurrency key
waits in its key's lane (``Queue.lanes[key][priority]``, a ReadyBucket),
and the bucket of its priority holds one entry for the whole lane, the
key's token (``TOKEN_PREFIX`` + key; no job id starts so), while the lane
has a job and the key is under its limit ("open"). A fetch meets the
token where the lane's first job became ready and takes from the lane what
the key's room allows; a lease moves the token to the back of the bucket
(keys take turns), a key that reaches its limit loses its token, and the
end of one of its leases (ack, fail, release, lease expiry, a death, a
delete) gives it back, in the same record. So a fetch's work is bounded by
what it takes plus the live entries it passes, however many jobs wait
behind a saturated key. A queue without keyed jobs has no lanes.

Lowering a limit takes no lease away: the queue (or key) is over it until
enough leases end. Only apply changes this state (``set_limits``,
``entered``, ``left``, ``leased``, ``lease_ended``, ``started``); the fetch
reads it (``room``, ``key_room``).
"""

from bisect import bisect_right, insort
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Final

from leash.broker.core import records as R
from leash.broker.core.jobs import LEASED
from leash.broker.core.ready import ReadyBucket
from leash.broker.core.state import PRIORITIES, Queue, State
from leash.protocol import admin as A

TOKEN_PREFIX: Final = "\x00"  # a bucket entry that stands for a key's lane
UNLIMITED: Final = 1 << 62


def token(key: str) -> str:
    return TOKEN_PREFIX + key


def is_token(entry: str) -> bool:
    return entry[0] == TOKEN_PREFIX


def key_of(entry: str) -> str:
    return entry[1:]


def _open(per_key: int, leased: int) -> bool:
    return not per_key or leased < per_key


def key_open(state: State, queue: Queue, key: str) -> bool:
    limits = state.limits.get(queue.name)
    return limits is None or _open(limits.per_key, queue.key_leased.get(key, 0))


# --- the decisions' ----------------------------------------------------------


def decide_limits(state: State, request: A.SetQueueLimits) -> list[R.Record]:
    """The record that sets a queue's limits; none when they are already so."""
    record = limits_record(request)
    before = state.limits.get(request.queue) or R.QueueLimitsSet(request.queue)
    return [] if before == record else [record]


def limits_record(request: A.SetQueueLimits) -> R.QueueLimitsSet:
    return R.QueueLimitsSet(
        request.queue, request.concurrency, request.per_key, request.rate, request.rate_interval_ms
    )


def seeded_limits(state: State, configured: Iterable[R.QueueLimitsSet]) -> list[R.Record]:
    """At a start, the records that give queues the limits the configuration
    names, where the journalled ones differ (a queue it does not name keeps
    its limits, set by an operator)."""
    records: list[R.Record] = []
    for record in configured:
        before = state.limits.get(record.queue) or R.QueueLimitsSet(record.queue)
        if before != record:
            records.append(record)
    return records


def limits_view(state: State, queue: Queue | None, name: str, now_ms: int) -> dict[str, int]:
    """A queue's limits and their use, as the queue view's fields."""
    limits = state.limits.get(name)
    if limits is None:
        return {}
    keys = queue.key_leased if queue is not None else {}
    per_key = limits.per_key
    return {
        "concurrency_limit": limits.concurrency,
        "per_key_limit": per_key,
        "rate_limit": limits.rate,
        "rate_interval_ms": limits.rate_interval_ms,
        "rate_used": in_window(state, limits, now_ms) if limits.rate else 0,
        "keys_leased": len(keys),
        "keys_saturated": sum(1 for n in keys.values() if per_key and n >= per_key),
    }


# --- the fetch's ------------------------------------------------------------


def room(state: State, queue: Queue, now_ms: int) -> int:
    """How many more jobs of the queue may be leased now (UNLIMITED: no limit)."""
    limits = state.limits.get(queue.name)
    if limits is None:
        return UNLIMITED
    free = UNLIMITED
    if limits.concurrency:
        free = limits.concurrency - queue.counts[LEASED]
    if limits.rate:
        free = min(free, limits.rate - in_window(state, limits, now_ms))
    return max(free, 0)


def in_window(state: State, limits: R.QueueLimitsSet, now_ms: int) -> int:
    """The leases of the queue in the rate window that ends at ``now_ms``."""
    starts = state.starts.get(limits.queue, [])
    return len(starts) - bisect_right(starts, now_ms - limits.rate_interval_ms)


def key_room(state: State, queue: Queue, key: str, taken: int) -> int:
    """How many more jobs of the key may be leased, ``taken`` already by this fetch."""
    limits = state.limits.get(queue.name)
    if limits is None or not limits.per_key:
        return UNLIMITED
    return limits.per_key - queue.key_leased.get(key, 0) - taken


def servable(queue: Queue) -> bool:
    """Whether a bucket of the queue holds an entry a fetch could take (a
    queue whose ready jobs all wait behind saturated keys holds none)."""
    return not queue.lanes or any(queue.buckets.values())


def next_start_ms(state: State, now_ms: int) -> int | None:
    """The earliest time after ``now_ms`` at which a rate-limited queue with
    ready jobs may start one more (None: no queue waits for its rate)."""
    due: list[int] = []
    for name, starts in state.starts.items():
        queue = state.queues.get(name)
        limits = state.limits[name]
        if queue is None or not queue.ready or len(starts) < limits.rate:
            continue
        due_ms = starts[len(starts) - limits.rate] + limits.rate_interval_ms
        if due_ms > now_ms:
            due.append(due_ms)
    return min(due) if due else None


def ready_ids(queue: Queue, priority: int) -> Iterator[str]:
    """The ready jobs of one bucket in the order a fetch meets them: each
    token stands for its lane's jobs; the lanes of saturated keys follow."""
    bucket = queue.buckets.get(priority)
    if not queue.lanes:
        yield from bucket or ()
        return
    shown: set[str] = set()
    for entry in bucket or ():
        if is_token(entry):
            key = key_of(entry)
            shown.add(key)
            yield from queue.lanes[key][priority]
        else:
            yield entry
    for key, lanes in queue.lanes.items():
        lane = lanes.get(priority)
        if lane and key not in shown:
            yield from lane


def ready_from(queue: Queue, priority: int, after_id: str) -> Iterator[str]:
    """``ready_ids`` from the job after ``after_id`` (from the start if it
    is not there): a listing's cursor, found by walking to it."""
    if after_id:
        rest = ready_ids(queue, priority)
        for job_id in rest:
            if job_id == after_id:
                yield from rest
                return
    yield from ready_ids(queue, priority)


# --- apply's ----------------------------------------------------------------


def set_limits(state: State, record: R.QueueLimitsSet) -> None:
    name = record.queue
    before = state.limits.get(name)
    if record.concurrency or record.per_key or record.rate:
        state.limits[name] = record
    else:
        state.limits.pop(name, None)
    if record.rate:
        starts = state.starts.setdefault(name, [])
        del starts[: max(0, len(starts) - record.rate)]
    else:
        state.starts.pop(name, None)
    queue = state.queues.get(name)
    if queue is None:
        return
    old_per_key = before.per_key if before is not None else 0
    for key, lanes in queue.lanes.items():
        leased = queue.key_leased.get(key, 0)
        was, now = _open(old_per_key, leased), _open(record.per_key, leased)
        if was != now:
            for priority in _by_priority(lanes):
                bucket = queue.bucket(priority)
                if now:
                    bucket.append(token(key))
                else:
                    bucket.discard(token(key))
    if queue.ready:
        state.readied.add(name)  # held fetches may be served under the new limits


def _by_priority(lanes: dict[int, ReadyBucket]) -> list[int]:
    return [priority for priority in PRIORITIES if priority in lanes]


def entered(state: State, queue: Queue, job_id: str, key: str, priority: int, front: bool) -> None:
    """A job with a key became ready (at the front of its lane: a release)."""
    lanes = queue.lanes.get(key)
    if lanes is None:
        lanes = queue.lanes[key] = {}
    lane = lanes.get(priority)
    if lane is None:
        lane = lanes[priority] = ReadyBucket()
    first = not lane
    if front:
        lane.appendleft(job_id)
    else:
        lane.append(job_id)
    if first and key_open(state, queue, key):
        bucket = queue.bucket(priority)
        if front:
            bucket.appendleft(token(key))
        else:
            bucket.append(token(key))


def left(state: State, queue: Queue, job_id: str, key: str, priority: int) -> None:
    """A ready job with a key is ready no more (deleted, killed, expired, leased)."""
    lanes = queue.lanes[key]
    lane = lanes[priority]
    lane.discard(job_id)
    if lane:
        return
    del lanes[priority]
    if not lanes:
        del queue.lanes[key]
    if key_open(state, queue, key):
        queue.buckets[priority].discard(token(key))


def leased(state: State, queue: Queue, job_id: str, key: str, priority: int) -> None:
    """A ready job with a key was leased: its key counts it; the key's
    token goes to the back of the bucket (keys take turns) while the lane
    has jobs and the key room."""
    was_open = key_open(state, queue, key)
    lanes = queue.lanes[key]
    lane = lanes[priority]
    lane.discard(job_id)
    queue.key_leased[key] = queue.key_leased.get(key, 0) + 1
    now_open = key_open(state, queue, key)
    if not lane:
        del lanes[priority]
        if not lanes:
            del queue.lanes[key]
    if was_open:
        bucket = queue.buckets[priority]
        bucket.discard(token(key))
        if lane and now_open:
            bucket.append(token(key))
    if was_open and not now_open:  # its lanes of other priorities lose their tokens too
        for other in _by_priority(queue.lanes.get(key, {})):
            if other != priority:
                queue.buckets[other].discard(token(key))


def lease_ended(state: State, queue: Queue, key: str) -> None:
    """A leased job with a key is leased no more: a key back under its
    limit has its lanes' tokens again."""
    was_open = key_open(state, queue, key)
    left_leased = queue.key_leased[key] - 1
    if left_leased:
        queue.key_leased[key] = left_leased
    else:
        del queue.key_leased[key]
    if not was_open and key_open(state, queue, key):
        lanes = queue.lanes.get(key, {})
        for priority in _by_priority(lanes):
            queue.bucket(priority).append(token(key))
        if lanes:
            state.readied.add(queue.name)


def slot_freed(state: State, queue: Queue) -> None:
    """A lease of a limited queue ended: fetches held for it may be served."""
    if queue.name in state.limits and queue.ready:
        state.readied.add(queue.name)


def started(state: State, names: Iterable[str], at_ms: int) -> None:
    """Leases of these queues (one name a lease) granted at ``at_ms``: a
    rate-limited queue keeps their times while they are in its window."""
    for name, count in Counter(names).items():
        if name in state.starts:
            _started(state, state.limits[name], at_ms, count)


def _started(state: State, limits: R.QueueLimitsSet, at_ms: int, count: int) -> None:
    starts = state.starts[limits.queue]
    for _ in range(count):
        insort(starts, at_ms)
    del starts[: bisect_right(starts, at_ms - limits.rate_interval_ms)]
    del starts[: max(0, len(starts) - limits.rate)]


# --- checks -----------------------------------------------------------------


def problems(state: State) -> list[str]:
    """Cross-checks of the limits' state against the jobs; [] when consistent."""
    found: list[str] = []
    for name, limits in state.limits.items():
        if not (limits.concurrency or limits.per_key or limits.rate) or limits.queue != name:
            found.append(f"queue {name} keeps limits {limits}")
        starts = state.starts.get(name)
        if (starts is not None) != bool(limits.rate):
            found.append(f"queue {name} keeps rate starts {starts} for limits {limits}")
        elif starts is not None and (len(starts) > limits.rate or starts != sorted(starts)):
            found.append(f"queue {name} keeps {starts}, over its rate {limits.rate} or unsorted")
    for name in state.starts.keys() - state.limits.keys():
        found.append(f"queue {name} keeps rate starts without limits")
    leased: dict[str, dict[str, int]] = {}
    for owned in state.leases_by_owner.values():
        for job_id in owned:
            job = state.jobs[job_id]
            if job.concurrency_key is not None:
                by_key = leased.setdefault(job.queue, {})
                by_key[job.concurrency_key] = by_key.get(job.concurrency_key, 0) + 1
    for queue in state.queues.values():
        found.extend(_queue_problems(state, queue, leased.get(queue.name, {})))
    return found


def _queue_problems(state: State, queue: Queue, leased: dict[str, int]) -> list[str]:
    found: list[str] = []
    if leased != queue.key_leased:
        found.append(f"queue {queue.name} counts {queue.key_leased} leased by key, holds {leased}")
    for key, lanes in queue.lanes.items():
        for priority, lane in lanes.items():
            if not lane:
                found.append(f"queue {queue.name} keeps an empty lane {key!r}/{priority}")
            tokens = sum(1 for entry in queue.buckets.get(priority, ()) if entry == token(key))
            wanted = 1 if lane and key_open(state, queue, key) else 0
            if tokens != wanted:
                found.append(f"queue {queue.name} holds {tokens} tokens of lane {key!r}/{priority}")
            for job_id in lane:
                job = state.jobs.get(job_id)
                if job is None or job.concurrency_key != key or job.priority != priority:
                    found.append(f"lane {key!r}/{priority} holds job {job_id}, not its own")
    for priority, bucket in queue.buckets.items():
        for entry in bucket:
            if is_token(entry) and priority not in queue.lanes.get(key_of(entry), {}):
                found.append(f"queue {queue.name} holds a token of no lane: {entry[1:]!r}")
    return found
