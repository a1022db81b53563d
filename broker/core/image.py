"""The state as a stream of chunks, and back (pure: Structs in, State out).

``dump(state)`` yields an ``ImageHead`` first, then one chunk Struct per slice
of a table: ``QueuesImage`` (the paused queues), ``NamesImage`` (the jobs
table's queue and type names, by number), ``ProcessesImage``,
``PackedJobsImage`` (waiting jobs as the jobs table packs them, at most
``JOBS_PER_CHUNK`` each), ``JobsImage`` (leased jobs, in full) and
``BatchesImage`` (in the order the batches were created), so a million jobs
stream as a few hundred small objects and load without being unpacked
into objects. A chunk also closes once what it holds passes
``CHUNK_TARGET_BYTES``, so that its size depends on no job's args, no
batch's member table: a chunk is at most that plus one item, far below what
a snapshot's reader takes (a job's args are at most 16 MiB).
``load(chunks, config)`` rebuilds a State whose ``canonical`` form equals
the dumped one and whose invariants hold.

Only the persistent tables are written; every index is rebuilt from them:
- ready order: READY jobs are dumped bucket by bucket in ready order and
  appended to their bucket as they load;
- the dead set's order: DEAD jobs are dumped in the dead set's order;
- the scheduled, lease-deadline, process-deadline and batch-deadline heaps,
  the counts, the name uses and the leases by owner (in token order, the
  order leases are granted) are derived from the jobs, processes and batches.

Versions: 3 (this one) is 2 with more fields at the end of a ``Job`` and
of the packed job's ``Cold`` part: what a front end keeps on a job
(``extra`` and ``discard_dead``), the leases it lost in a row
(``lost_leases``) and its last ended attempts (``attempts``); a version 2
image decodes to them at their defaults (a job of it has no history), and
an older broker, which could not decode them, refuses a version 3 image as
too new. Version 3 also has the uniqueness key a job holds (``unique_key``,
``unique_for_ms``, last in ``Job`` and ``Cold``) and a ``UniqueImage``
chunk of the keys held; and a job's expiry (``expires_ms``, last in ``Job``
and ``Cold``) with an ``ExpiriesImage`` chunk of the live expiry entries;
and a job's concurrency key (``concurrency_key``, last in ``Job`` and
``Cold``), the queues' limits and rate windows (``LimitsImage``) and, for
each bucket with keyed jobs, its entries and its lanes (``LanesImage``,
after the jobs: the bucket loaded with every ready job is replaced by them;
limits.py). The leases counted by key are derived from the leased jobs.
And a job's time limit (``time_limit_ms``) and ``keep_result_ms`` (beside
the concurrency key, last in ``Job`` and ``Cold``), the schedules
(``SchedulesImage``: their tick heap is derived), the finished-job history
in ``HistoryImage`` chunks, oldest first, and the results kept in
``ResultsImage`` chunks.
2 writes waiting jobs packed, after the names their numbers refer to; 1
wrote every job as a ``Job`` in a ``JobsImage`` and had no names.
``load`` reads all three. Schema evolution: a new kind of table gets its
own chunk Struct, appended to ``Chunk`` with a new tag (old images simply
have none); new fields of ``Job`` and ``Process`` go last with defaults, so
older images still load. Anything else — the packed job's layout
(jobs.Packed) included — bumps ``IMAGE_VERSION``, and ``load`` keeps
reading the released versions. A ``Job`` is encoded as an array
(``array_like``): the image relies on its field order, which golden fixture
files pin.
"""

import heapq
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from itertools import pairwise
from typing import TypeVar, assert_never

import msgspec
from msgspec import Struct

from leash.broker.core.batches.state import OPEN, Batch
from leash.broker.core.config import CoreConfig
from leash.broker.core.jobs import PACKED_STATES, PackedState, key_ms, write
from leash.broker.core.limits import is_token, ready_ids
from leash.broker.core.ready import ReadyBucket
from leash.broker.core.records import QueueLimitsSet
from leash.broker.core.state import (
    DEAD,
    LEASED,
    PRIORITIES,
    PROCESS_DEADLINES,
    READY,
    RETRYING,
    SCHEDULED,
    Finished,
    Job,
    Process,
    Schedule,
    State,
    UniqueLock,
    live_dead_entries,
    live_expiry,
    process_deadline_ms,
)
from leash.broker.errors import BrokerError
from leash.protocol.messages import JobState

IMAGE_VERSION = 3
LOADS_VERSIONS = (1, 2, 3)
JOBS_PER_CHUNK = 4096
PROCESSES_PER_CHUNK = 4096
KEYS_PER_CHUNK = 2048  # a key is at most ~400 B
BATCHES_PER_CHUNK = 256  # a batch carries its member table
SCHEDULES_PER_CHUNK = 256  # a schedule carries its job's args
CHUNK_TARGET_BYTES = 1 << 20  # a chunk takes no more items once its items pass this


class ImageHead(Struct, tag="head", array_like=True):
    version: int
    epoch: int
    counter: int


class QueuesImage(Struct, tag="queues", array_like=True):
    paused: list[str]  # queues that are paused (a queue with ready jobs exists anyway)


class ProcessesImage(Struct, tag="processes", array_like=True):
    processes: list[Process]


class JobsImage(Struct, tag="jobs", array_like=True):
    jobs: list[Job]  # version 2: the leased jobs; version 1: every job


class BatchesImage(Struct, tag="batches", array_like=True):
    batches: list[Batch]


class NamesImage(Struct, tag="names", array_like=True):
    names: list[str]  # by number ("": a number no name has)


class PackedJobsImage(Struct, tag="packed", array_like=True):
    """Jobs in one state, packed, in the order of their index, with what
    loading needs from their records beside them, so that a chunk loads in
    bulk without unpacking a job."""

    state: PackedState
    priority: int  # ready: the bucket's (a chunk of ready jobs is of one bucket); else 0
    ids: list[str]
    jobs: list[bytes]  # the job of each id, packed (jobs.Packed)
    queues: list[int]  # the number of each job's queue name
    types: list[int]  # the number of each job's type name
    keys_ms: list[int]  # scheduled, retrying: when each is due; dead: when it died; ready: []


class HeldKey(Struct, array_like=True):
    key: str
    job_id: str
    until_ms: int  # 0: held by the live job; else until then, after its success


class ExpiriesImage(Struct, tag="expiries", array_like=True):
    """The live entries of the expiry heap (expiry.py): (expires_ms, job id),
    written rather than derived on load for the same reason as the keys."""

    entries: list[tuple[int, str]]


class UniqueImage(Struct, tag="unique", array_like=True):
    """Uniqueness keys and who holds them (unique.py), written beside the
    jobs rather than derived on load, so that a load need not unpack every
    waiting job; check_invariants cross-checks them."""

    keys: list[HeldKey]


class LimitsImage(Struct, tag="limits", array_like=True):
    """The queues' limits and the lease times of their rate windows (limits.py)."""

    limits: list[QueueLimitsSet]
    starts: list[tuple[str, list[int]]]


class Lane(Struct, array_like=True):
    key: str
    ids: list[str]


class LanesImage(Struct, tag="lanes", array_like=True):
    """One bucket of a queue with keyed ready jobs (limits.py): its live
    entries, tokens among them, and its priority's lanes, each in order."""

    queue: str
    priority: int
    entries: list[str]
    lanes: list[Lane]


class SchedulesImage(Struct, tag="schedules", array_like=True):
    """The schedules (cron.py); their tick heap is derived on load."""

    schedules: list[Schedule]


class HistoryImage(Struct, tag="history", array_like=True):
    """The finished-job history (history.py), oldest first."""

    entries: list[Finished]


class ResultsImage(Struct, tag="results", array_like=True):
    """Kept results (results.py): (job id, until_ms, value)."""

    results: list[tuple[str, int, bytes]]


Chunk = (
    ImageHead
    | QueuesImage
    | ProcessesImage
    | JobsImage
    | BatchesImage
    | NamesImage
    | PackedJobsImage
    | UniqueImage
    | ExpiriesImage
    | LimitsImage
    | LanesImage
    | SchedulesImage
    | HistoryImage
    | ResultsImage
)

chunk_encoder = msgspec.msgpack.Encoder()
chunk_decoder = msgspec.msgpack.Decoder(Chunk)


ItemT = TypeVar("ItemT", Process, Job, Batch, HeldKey, Schedule, Finished, tuple[str, int, bytes])


class ImageError(BrokerError, ValueError):
    """The chunks do not form an image this version can load."""


class ImageTooNew(ImageError):
    """An image of a later version than this build writes: not damage."""


def dump(state: State) -> Iterator[Chunk]:
    yield ImageHead(IMAGE_VERSION, state.epoch, state.counter)
    yield QueuesImage(sorted(name for name, q in state.queues.items() if q.paused))
    names, packed_form = state.jobs.for_image()
    yield NamesImage(names)
    for processes in _sized(state.processes.values(), PROCESSES_PER_CHUNK):
        yield ProcessesImage(processes)
    yield from _packed_chunks(state, packed_form)
    leased = sorted(
        (state.jobs[job_id] for owned in state.leases_by_owner.values() for job_id in owned),
        key=lambda job: job.token,
    )
    for jobs in _sized(leased, JOBS_PER_CHUNK):
        yield JobsImage(jobs)
    for batches in _sized(state.batches.values(), BATCHES_PER_CHUNK):
        yield BatchesImage(batches)
    held = (HeldKey(key, lock.job_id, lock.until_ms) for key, lock in state.unique.items())
    for keys in _sized(held, KEYS_PER_CHUNK):
        yield UniqueImage(keys)
    expiring = sorted({e for e in state.expiries if live_expiry(state, e)})
    for start in range(0, len(expiring), JOBS_PER_CHUNK):
        yield ExpiriesImage(expiring[start : start + JOBS_PER_CHUNK])
    if state.limits:
        starts = [(name, list(times)) for name, times in state.starts.items()]
        yield LimitsImage(list(state.limits.values()), starts)
    yield from _lanes_chunks(state)
    for schedules in _sized(state.schedules.values(), SCHEDULES_PER_CHUNK):
        yield SchedulesImage(schedules)
    for entries in _sized(state.history_order, JOBS_PER_CHUNK):
        yield HistoryImage(entries)
    kept = ((job_id, until_ms, value) for job_id, (until_ms, value) in state.results.items())
    for chunk in _sized(kept, JOBS_PER_CHUNK):
        yield ResultsImage(chunk)


def _lanes_chunks(state: State) -> Iterator[LanesImage]:
    for queue in state.queues.values():
        for priority in PRIORITIES if queue.lanes else ():
            lanes = [
                Lane(key, list(by_priority[priority]))
                for key, by_priority in queue.lanes.items()
                if priority in by_priority
            ]
            if lanes:
                entries = list(queue.buckets.get(priority) or ())
                yield LanesImage(queue.name, priority, entries, lanes)


def _sized(items: Iterable[ItemT], count_max: int) -> Iterator[list[ItemT]]:
    """``items`` in runs of at most ``count_max`` that close once their
    encoded sizes pass CHUNK_TARGET_BYTES."""
    run: list[ItemT] = []
    run_bytes = 0
    measure = chunk_encoder.encode
    for item in items:
        run.append(item)
        run_bytes += len(measure(item))
        if len(run) == count_max or run_bytes >= CHUNK_TARGET_BYTES:
            yield run
            run, run_bytes = [], 0
    if run:
        yield run


def _packed_chunks(
    state: State, packed_form: Callable[[str], tuple[bytes, int, int]]
) -> Iterator[PackedJobsImage]:
    """Every job that is not leased, once: ready ones bucket by bucket in
    ready order, dead ones in the dead set's order, then scheduled and
    retrying ones."""
    for queue in state.queues.values():
        for priority in list(queue.buckets) if not queue.lanes else PRIORITIES:
            ready = ((job_id, 0) for job_id in ready_ids(queue, priority))
            yield from _chunked(packed_form, READY, priority, ready)
    dead = ((job_id, died_ms) for died_ms, job_id in live_dead_entries(state))
    yield from _chunked(packed_form, DEAD, 0, dead)
    due: dict[PackedState, dict[str, int]] = {SCHEDULED: {}, RETRYING: {}}
    for run_at_ms, job_id in state.scheduled:  # a job can have two equal live entries
        keyed = state.jobs.keyed_at(job_id)
        if keyed is not None and keyed[1] == run_at_ms and keyed[0] in due:
            due[keyed[0]][job_id] = run_at_ms
    for job_state, jobs in due.items():
        yield from _chunked(packed_form, job_state, 0, jobs.items())


def _chunked(
    packed_form: Callable[[str], tuple[bytes, int, int]],
    job_state: PackedState,
    priority: int,
    entries: Iterable[tuple[str, int]],
) -> Iterator[PackedJobsImage]:
    chunk = PackedJobsImage(job_state, priority, [], [], [], [], [])
    chunk_bytes = 0
    for job_id, at_ms in entries:
        if len(chunk.ids) == JOBS_PER_CHUNK or chunk_bytes >= CHUNK_TARGET_BYTES:
            yield chunk
            chunk = PackedJobsImage(job_state, priority, [], [], [], [], [])
            chunk_bytes = 0
        record, queue, type_ = packed_form(job_id)
        chunk_bytes += len(record) + len(job_id)
        chunk.ids.append(job_id)
        chunk.jobs.append(record)
        chunk.queues.append(queue)
        chunk.types.append(type_)
        if job_state != READY:
            chunk.keys_ms.append(at_ms)
    if chunk.ids:
        yield chunk


def load(chunks: Iterable[Chunk], config: CoreConfig) -> State:
    state = State(config)
    stream = iter(chunks)
    head = next(stream, None)
    if not isinstance(head, ImageHead):
        raise ImageError("the image does not start with its head")
    if head.version not in LOADS_VERSIONS:
        too_new = ImageTooNew if head.version > IMAGE_VERSION else ImageError
        raise too_new(f"image version {head.version} is not supported")
    state.epoch, state.counter = head.epoch, head.counter
    named = head.version == 1  # version 1 images name queues and types in full
    for chunk in stream:
        match chunk:
            case JobsImage(jobs=jobs):
                if not named:
                    raise ImageError("jobs come before the names")
                _load_jobs(state, jobs)
            case PackedJobsImage():
                if not named or head.version == 1:
                    raise ImageError("packed jobs come after the names, in version 2 on")
                _load_packed(state, chunk)
            case NamesImage(names=names):
                if named:
                    raise ImageError("the names come once, before the jobs, in version 2 on")
                try:
                    state.jobs.names.load(names)
                except ValueError as error:
                    raise ImageError(str(error)) from None
                named = True
            case ProcessesImage(processes=processes):
                _load_processes(state, processes)
            case QueuesImage(paused=paused):
                for name in paused:
                    state.queue(name).paused = True
            case BatchesImage(batches=batches):
                _load_batches(state, batches)
            case UniqueImage(keys=keys):
                _load_keys(state, keys)
            case ExpiriesImage(entries=entries):
                state.expiries.extend(entries)
            case LimitsImage():
                _load_limits(state, chunk)
            case LanesImage():
                _load_lanes(state, chunk)
            case SchedulesImage(schedules=schedules):
                _load_schedules(state, schedules)
            case HistoryImage(entries=entries):
                _load_history(state, entries)
            case ResultsImage(results=kept):
                _load_results(state, kept)
            case ImageHead():
                raise ImageError("an image has one head")
            case _:
                assert_never(chunk)
    state.jobs.names.prune()
    if any(a > b for a, b in pairwise(state.dead)):
        state.dead = deque(sorted(state.dead))  # version 1 and 2 kept the order they died in
    heapq.heapify(state.scheduled)
    heapq.heapify(state.deadlines)
    heapq.heapify(state.process_deadlines)
    heapq.heapify(state.batch_deadlines)
    heapq.heapify(state.unique_windows)
    heapq.heapify(state.expiries)
    heapq.heapify(state.schedule_ticks)
    heapq.heapify(state.result_expiries)
    if any(job_id not in state.jobs for _, job_id in state.expiries):
        raise ImageError("an expiry names a job the image does not hold")
    for key, lock in state.unique.items():
        if not lock.until_ms and lock.job_id not in state.jobs:
            raise ImageError(f"uniqueness key {key!r} is held by job {lock.job_id!r}, not in it")
    _count_keys(state)
    return state


def _load_limits(state: State, chunk: LimitsImage) -> None:
    for limits in chunk.limits:
        state.limits[limits.queue] = limits
    for name, times in chunk.starts:
        if name not in state.limits:
            raise ImageError(f"queue {name!r} has a rate window but no limits")
        state.starts[name] = times


def _load_lanes(state: State, chunk: LanesImage) -> None:
    """A bucket with keyed jobs: its entries and lanes replace what the
    packed chunks put in it (the same jobs, the lanes' expanded)."""
    queue = state.queues.get(chunk.queue)
    loaded = list(queue.buckets.get(chunk.priority) or ()) if queue is not None else []
    plain = [entry for entry in chunk.entries if not is_token(entry)]
    laned = [job_id for lane in chunk.lanes for job_id in lane.ids]
    if queue is None or Counter(loaded) != Counter(plain + laned):
        raise ImageError(f"the lanes of {chunk.queue}/{chunk.priority} are not its ready jobs")
    bucket = queue.buckets[chunk.priority] = ReadyBucket()
    bucket.extend(chunk.entries)
    for lane in chunk.lanes:
        queue.lanes.setdefault(lane.key, {})[chunk.priority] = ready = ReadyBucket()
        ready.extend(lane.ids)


def _count_keys(state: State) -> None:
    """The leases counted by key (limits.py), from the leased jobs."""
    for owned in state.leases_by_owner.values():
        for job_id in owned:
            job = state.jobs[job_id]
            if job.concurrency_key is not None:
                counted = state.queue(job.queue).key_leased
                counted[job.concurrency_key] = counted.get(job.concurrency_key, 0) + 1


def _load_schedules(state: State, schedules: list[Schedule]) -> None:
    for schedule in schedules:
        state.schedules[schedule.spec.name] = schedule
        if schedule.next_ms and not schedule.paused:
            state.schedule_ticks.append((schedule.next_ms, schedule.spec.name))


def _load_jobs(state: State, jobs: list[Job]) -> None:
    """Jobs in full: the leased ones (and, in version 1, every one)."""
    for job in jobs:
        if job.id in state.jobs:
            raise ImageError(f"job {job.id!r} appears twice")
        # Decoded args point into the whole chunk: keep only theirs. (Jobs
        # are frozen: written here as they are built, before the table has them.)
        write(job, "args", job.args.copy())
        if job.state == READY and not job.ready_ms:  # an image from before jobs kept it
            write(job, "ready_ms", job.created_ms)
        state.jobs.load_job(job)
        if job.state == LEASED:
            state.deadlines.append((job.deadline_ms, job.token, job.id))
            owned = state.leases_by_owner.get(job.owner)
            if owned is None:
                owned = state.leases_by_owner[job.owner] = {}
            owned[job.id] = None
        _index(state, job.id, job.state, job.queue, job.priority, key_ms(job))


def _load_packed(state: State, chunk: PackedJobsImage) -> None:
    """A chunk of packed jobs, in bulk: the jobs table takes them as they
    are (unpacked when first read: ``leash fsck`` reads them all), the
    indexes and counts take the numbers beside them."""
    job_state, ids, count = chunk.state, chunk.ids, len(chunk.ids)
    ready = job_state == READY
    if job_state not in PACKED_STATES or (len(chunk.keys_ms) != (0 if ready else count)):
        raise ImageError(f"a chunk of {count} {job_state} jobs with {len(chunk.keys_ms)} times")
    if ready and (len(set(chunk.queues)) > 1 or chunk.priority not in PRIORITIES):
        raise ImageError("a chunk of ready jobs is of one queue and one priority")
    try:
        state.jobs.load_packed(ids, chunk.jobs, chunk.queues, chunk.types)
    except ValueError as error:
        raise ImageError(str(error)) from None
    names = state.jobs.names.names
    state.counts[job_state] += count
    for number, in_queue in Counter(chunk.queues).items():
        state.queue(names[number]).counts[job_state] += in_queue
    if ready and ids:
        queue = state.queue(names[chunk.queues[0]])
        queue.bucket(chunk.priority).extend(ids)
        queue.ready += count
    elif job_state == DEAD:
        state.dead.extend(zip(chunk.keys_ms, ids, strict=True))
    elif not ready:
        state.scheduled.extend(zip(chunk.keys_ms, ids, strict=True))


def _index(
    state: State, job_id: str, job_state: JobState, name: str, priority: int, key_ms: int
) -> None:
    """Count a loaded job and put it in the index of its state (but the
    lease deadlines: the caller has the token)."""
    state.counts[job_state] += 1
    queue = state.queue(name)
    queue.counts[job_state] += 1
    match job_state:
        case "ready":
            bucket = queue.buckets.get(priority)
            (bucket if bucket is not None else queue.bucket(priority)).append(job_id)
            queue.ready += 1
        case "scheduled" | "retrying":
            state.scheduled.append((key_ms, job_id))
        case "dead":
            state.dead.append((key_ms, job_id))
        case "leased":
            pass
        case _:
            assert_never(job_state)


def _load_processes(state: State, processes: list[Process]) -> None:
    for process in processes:
        if process.worker_id in state.processes:
            raise ImageError(f"process {process.worker_id!r} appears twice")
        state.processes[process.worker_id] = process
        for kind in PROCESS_DEADLINES:
            deadline_ms = process_deadline_ms(process, kind)
            if deadline_ms:
                state.process_deadlines.append((deadline_ms, process.worker_id, kind))


def _load_batches(state: State, batches: list[Batch]) -> None:
    for batch in batches:
        if batch.id in state.batches:
            raise ImageError(f"batch {batch.id!r} appears twice")
        state.batches[batch.id] = batch
        state.batch_deadlines.append((batch.expires_ms, batch.id, "expire"))
        if batch.state == OPEN:
            state.batch_deadlines.append((batch.open_deadline_ms, batch.id, "open"))


def _load_keys(state: State, keys: list[HeldKey]) -> None:
    for held in keys:
        if held.key in state.unique:
            raise ImageError(f"uniqueness key {held.key!r} appears twice")
        state.unique[held.key] = UniqueLock(held.job_id, held.until_ms)
        if held.until_ms:
            state.unique_windows.append((held.until_ms, held.key))


def _load_history(state: State, entries: list[Finished]) -> None:
    for entry in entries:
        job_id = entry[0]
        if job_id in state.history:
            raise ImageError(f"finished job {job_id!r} appears twice in the history")
        state.history[job_id] = entry
        state.history_order.append(entry)


def _load_results(state: State, kept: list[tuple[str, int, bytes]]) -> None:
    for job_id, until_ms, value in kept:
        if job_id in state.results:
            raise ImageError(f"the result of job {job_id!r} appears twice")
        state.results[job_id] = (until_ms, value)
        state.result_expiries.append((until_ms, job_id))
        state.result_bytes += len(value)


def jobs_in(chunk: Chunk) -> int:
    """How many jobs a chunk holds (what a snapshot's trailer counts)."""
    return len(chunk.jobs) if isinstance(chunk, JobsImage | PackedJobsImage) else 0
