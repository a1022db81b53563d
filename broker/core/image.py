"""The state as a stream of chunks, and back (pure: Structs in, State out).

``dump(state)`` yields an ``ImageHead`` first, then one chunk Struct per slice
of a table: ``QueuesImage`` (the paused queues), ``ProcessesImage``,
``JobsImage`` (at most ``JOBS_PER_CHUNK`` jobs each) and ``BatchesImage``
(in the order the batches were created), so a million jobs stream as a few
hundred small objects. ``load(chunks, config)`` rebuilds a State
whose ``canonical`` form equals the dumped one and whose invariants hold.

Only the persistent tables are written; every index is rebuilt from them:
- ready order: READY jobs are dumped bucket by bucket in ready order and
  appended to their bucket as they load;
- the dead set's order: DEAD jobs are dumped in the dead set's order;
- the scheduled, lease-deadline, process-deadline and batch-deadline heaps,
  the counts and the leases by owner (in token order, the order leases are
  granted) are derived from the jobs, processes and batches.

Schema evolution: a new kind of table gets its own chunk Struct, appended
to ``Chunk`` with a new tag (old images simply have none); new fields of
``Job`` and ``Process`` go last with defaults, so older images still load.
Anything else bumps ``IMAGE_VERSION``, and ``load`` keeps reading the
released versions. A ``Job`` is encoded as an array (``array_like``): the
image relies on its field order, which golden fixture files pin.
"""

import heapq
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import assert_never

import msgspec
from msgspec import Struct

from broker.core.batch_state import OPEN, Batch
from broker.core.config import CoreConfig
from broker.core.state import (
    LEASED,
    RETRYING,
    SCHEDULED,
    Job,
    Process,
    Queue,
    State,
    live_dead,
)

IMAGE_VERSION = 1
JOBS_PER_CHUNK = 4096
PROCESSES_PER_CHUNK = 4096
BATCHES_PER_CHUNK = 256  # a batch carries its member table


class ImageHead(Struct, tag="head", array_like=True):
    version: int
    epoch: int
    counter: int


class QueuesImage(Struct, tag="queues", array_like=True):
    paused: list[str]  # queues that are paused (a queue with ready jobs exists anyway)


class ProcessesImage(Struct, tag="processes", array_like=True):
    processes: list[Process]


class JobsImage(Struct, tag="jobs", array_like=True):
    jobs: list[Job]


class BatchesImage(Struct, tag="batches", array_like=True):
    batches: list[Batch]


Chunk = ImageHead | QueuesImage | ProcessesImage | JobsImage | BatchesImage

chunk_encoder = msgspec.msgpack.Encoder()
chunk_decoder = msgspec.msgpack.Decoder(Chunk)


class ImageError(ValueError):
    """The chunks do not form an image this version can load."""


def dump(state: State) -> Iterator[Chunk]:
    yield ImageHead(IMAGE_VERSION, state.epoch, state.counter)
    yield QueuesImage(sorted(name for name, q in state.queues.items() if q.paused))
    processes = list(state.processes.values())
    for start in range(0, len(processes), PROCESSES_PER_CHUNK):
        yield ProcessesImage(processes[start : start + PROCESSES_PER_CHUNK])
    batch: list[Job] = []
    for job in _jobs_in_image_order(state):
        batch.append(job)
        if len(batch) == JOBS_PER_CHUNK:
            yield JobsImage(batch)
            batch = []
    if batch:
        yield JobsImage(batch)
    batches = list(state.batches.values())
    for start in range(0, len(batches), BATCHES_PER_CHUNK):
        yield BatchesImage(batches[start : start + BATCHES_PER_CHUNK])


def _jobs_in_image_order(state: State) -> Iterator[Job]:
    """Every job once: ready ones in ready order, dead ones in the dead
    set's order, then the rest (leased ones by token)."""
    for queue in state.queues.values():
        for bucket in queue.buckets.values():
            yield from bucket.values()
    seen_dead: set[str] = set()
    for entry in state.dead:
        if live_dead(state, entry) and entry[1] not in seen_dead:
            seen_dead.add(entry[1])
            yield state.jobs[entry[1]]
    leased: list[Job] = []
    for job in state.jobs.values():
        if job.state in (SCHEDULED, RETRYING):
            yield job
        elif job.state == LEASED:
            leased.append(job)
    leased.sort(key=lambda job: job.token)
    yield from leased


def load(chunks: Iterable[Chunk], config: CoreConfig) -> State:
    state = State(config)
    stream = iter(chunks)
    head = next(stream, None)
    if not isinstance(head, ImageHead):
        raise ImageError("the image does not start with its head")
    if head.version != IMAGE_VERSION:
        raise ImageError(f"image version {head.version} is not supported")
    state.epoch, state.counter = head.epoch, head.counter
    for chunk in stream:
        match chunk:
            case JobsImage(jobs=jobs):
                _load_jobs(state, jobs)
            case ProcessesImage(processes=processes):
                _load_processes(state, processes)
            case QueuesImage(paused=paused):
                for name in paused:
                    _queue(state, name).paused = True
            case BatchesImage(batches=batches):
                _load_batches(state, batches)
            case ImageHead():
                raise ImageError("an image has one head")
            case _:
                assert_never(chunk)
    heapq.heapify(state.scheduled)
    heapq.heapify(state.deadlines)
    heapq.heapify(state.process_deadlines)
    heapq.heapify(state.batch_deadlines)
    return state


def _load_jobs(state: State, jobs: list[Job]) -> None:
    table, counts = state.jobs, state.counts
    for job in jobs:
        if job.id in table:
            raise ImageError(f"job {job.id!r} appears twice")
        job.args = job.args.copy()  # decoded args point into the whole chunk: keep only theirs
        table[job.id] = job
        counts[job.state] += 1
        _queue(state, job.queue).counts[job.state] += 1
        match job.state:
            case "ready":
                if not job.ready_ms:  # an image from before jobs kept it: since the push
                    job.ready_ms = job.created_ms
                queue = _queue(state, job.queue)
                bucket = queue.buckets.get(job.priority)
                if bucket is None:
                    bucket = queue.buckets[job.priority] = OrderedDict()
                bucket[job.id] = job
                queue.ready += 1
            case "scheduled" | "retrying":
                state.scheduled.append((job.run_at_ms, job.id))
            case "leased":
                state.deadlines.append((job.deadline_ms, job.token, job.id))
                owned = state.leases_by_owner.get(job.owner)
                if owned is None:
                    owned = state.leases_by_owner[job.owner] = {}
                owned[job.id] = None
            case "dead":
                state.dead.append((job.died_ms, job.id))
            case _:
                assert_never(job.state)


def _load_processes(state: State, processes: list[Process]) -> None:
    for process in processes:
        if process.worker_id in state.processes:
            raise ImageError(f"process {process.worker_id!r} appears twice")
        state.processes[process.worker_id] = process
        for kind in ("beat", "grace", "terminate"):
            deadline_ms = getattr(process, f"{kind}_deadline_ms")
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


def _queue(state: State, name: str) -> Queue:
    queue = state.queues.get(name)
    if queue is None:
        queue = state.queues[name] = Queue(name)
    return queue


def jobs_in(chunk: Chunk) -> int:
    """How many jobs a chunk holds (what a snapshot's trailer counts)."""
    return len(chunk.jobs) if isinstance(chunk, JobsImage) else 0
