"""A test double of the shell around the pure core, shared by the core tests.

``Core`` drives the core the way the server does — a sign of life from the
worker (``touch``, which registers it the first time), ``decide``, then
``apply`` every record; ``tick`` until it returns nothing — with a manual
clock (``now_ms`` is a number the test moves). Worker processes get a TTL
and a restart grace far longer than any test runs, so a lease ends only as
these tests say; process deaths are tested on their own. No index gets
slack beyond twice its live entries (state.py), so the index bounds that
``check_invariants`` checks are at their tightest. Every record goes
through ``record_encoder``/``record_decoder`` before it is kept, and a
second State replays the decoded records as they come, so every test also
checks, after every record, that:

- ``check_invariants`` finds nothing wrong, in both states;
- the replayed state equals the live one (``canonical``);
- a replay as start-up does it (``core.Replay``, which defers jobs whose
  life lies within the records) gives it too: from the last image at
  every image, from the start at every restart (``replay``);
- ``decide`` and ``tick`` leave the state as they found it.

The two states hold their jobs in different forms (core/jobs.py): the live
one packs every job that is not leased at the end of each record
(``recent_jobs=0``), the replayed one keeps recently changed jobs as
objects (the default), so every test also checks that the forms behave
alike.

Every ``IMAGE_EVERY`` records it also takes a state image (``core.image``,
each chunk through the chunk encoder, as a snapshot file holds it) and
checks that loading it gives the live state back; ``check_image`` checks
that the last image plus the records after it give the live state, as
recovery from a snapshot and the journal tail does.

This module holds no tests itself.
"""

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgspec

from leash.broker.core import (
    CoreConfig,
    Outcome,
    Record,
    Replay,
    State,
    apply,
    boot,
    canonical,
    check_invariants,
    decide,
    decide_admin,
    info_of,
    record_decoder,
    record_encoder,
    tick,
    touch,
)
from leash.broker.core import records as R
from leash.broker.core.faktory import Decided, decide_faktory
from leash.broker.core.faktory import Outcome as FaktoryOutcome
from leash.broker.core.image import chunk_decoder, chunk_encoder, dump, load
from leash.broker.core.replay import DEFERRED_MAX
from leash.protocol import admin as A
from leash.protocol import faktory as F
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode

START_MS = 1_700_000_000_000  # an ordinary wall-clock time in unix ms
SECOND_MS = 1000
WORKER = "w1"
PROCESS_TTL_MS = 100 * 365 * 24 * 3600 * SECOND_MS  # no process dies in these tests

ReplyT = TypeVar("ReplyT")
TCP_REQUESTS = M.Request.__args__  # the rest are the admin socket's


def args(value: Any) -> msgspec.Raw:
    """Job arguments as a producer sends them: msgpack bytes."""
    return msgspec.Raw(msgspec.msgpack.encode(value))


def round_trip(record: Record) -> Record:
    decoded = record_decoder.decode(record_encoder.encode(record))
    assert decoded == record, (decoded, record)
    return decoded


def replay(records: list[Record], config: CoreConfig, deferred_max: int = DEFERRED_MAX) -> State:
    """A fresh State from the records, as start-up replays them (core.Replay)."""
    runs = Replay(State(config), deferred_max)
    for record in records:
        runs.apply(record)
    return runs.finish()


IMAGE_EVERY = 8  # records between two state images


def image_of(state: State) -> list[bytes]:
    """The state as a snapshot file holds it: encoded chunks."""
    return [chunk_encoder.encode(chunk) for chunk in dump(state)]


def from_image(image: list[bytes], config: CoreConfig) -> State:
    state = load((chunk_decoder.decode(blob) for blob in image), config)
    assert check_invariants(state) == []
    return state


def core_config(**overrides: Any) -> CoreConfig:
    no_deaths = {
        "process_ttl_ms": PROCESS_TTL_MS,
        "faktory_process_ttl_ms": PROCESS_TTL_MS,
        "restart_grace_ms": PROCESS_TTL_MS,
    }
    # No slack: an index is rebuilt as soon as its stale entries outnumber
    # its live ones, so every test checks the tightest bound (state.py).
    return CoreConfig(**{**no_deaths, "index_slack_entries": 0, **overrides})


class Core:
    def __init__(self, now_ms: int = START_MS, **config: Any) -> None:
        # How the live state applies a record (the shell's counting apply, in the totals tests)
        self.apply_live: Callable[[State, Record], Sequence[R.NewJob]] = apply
        self.config = core_config(**config)
        self.state = State(msgspec.structs.replace(self.config, recent_jobs=0))
        self.shadow = State(self.config)  # replays the decoded records as they come
        self.now_ms = now_ms
        self.records: list[Record] = []
        self.image = image_of(self.state)
        self.image_at = 0  # the records the image covers
        self.rid = 0
        self.boot()

    # --- the one way in -------------------------------------------------

    def apply(self, record: Record) -> None:
        decoded = round_trip(record)
        enqueued = self.apply_live(self.state, record)
        assert apply(self.shadow, decoded) == enqueued, "live and replay enqueue the same callbacks"
        self.records.append(decoded)
        assert check_invariants(self.state) == []
        assert check_invariants(self.shadow) == []
        assert canonical(self.shadow) == canonical(self.state)
        if len(self.records) % IMAGE_EVERY == 0:
            self.check_image()
            self.image, self.image_at = image_of(self.state), len(self.records)
            assert canonical(from_image(self.image, self.config)) == canonical(self.state)
            shadow_image = image_of(self.shadow)  # recent jobs packed as the image is written
            assert canonical(from_image(shadow_image, self.config)) == canonical(self.state)

    def check_image(self) -> None:
        """The last image plus the records after it give the live state."""
        runs = Replay(from_image(self.image, self.config))
        for record in self.records[self.image_at :]:
            runs.apply(record)
        restored = runs.finish()
        assert check_invariants(restored) == []
        assert canonical(restored) == canonical(self.state)

    def boot(self) -> None:
        self.apply(boot(self.state, self.now_ms))

    def restart(self) -> None:
        """A broker restart: a fresh State from the records so far, then a boot."""
        self.state = replay(self.records, msgspec.structs.replace(self.config, recent_jobs=0))
        assert check_invariants(self.state) == []
        self.boot()

    def touch(self, worker: str = WORKER) -> None:
        """What the shell does before each request: a sign of life."""
        hello = M.Hello(rid=0, version=1, worker_id=worker)
        for record in touch(self.state, worker, info_of(hello), self.now_ms):
            self.apply(record)

    def send(self, request: M.Request | A.AdminRequest, worker: str = WORKER) -> Outcome:
        """A worker's request (a sign of life first), or an operator's on
        the admin socket (none: the operator is not a worker process)."""
        before = canonical(self.state)
        if isinstance(request, TCP_REQUESTS):
            self.touch(worker)
            before = canonical(self.state)
            outcome = decide(self.state, request, worker, self.now_ms)
        else:
            outcome = Outcome(*decide_admin(self.state, request, self.now_ms))
        assert canonical(self.state) == before, "decide changed the state"
        assert outcome.reply.rid == request.rid
        if isinstance(outcome.reply, M.Error):
            assert outcome.records == []
        for record in outcome.records:
            self.apply(record)
        return outcome

    def faktory(self, command: Decided, worker: str = WORKER) -> FaktoryOutcome:
        """A Faktory command from a connection whose HELLO had ``worker`` as
        its wid ("" for a producer), with the sign of life the shell gives."""
        if worker:
            info = R.ProcessInfo("host", 1, [], 0, F.CLIENT_NAME)
            for record in touch(self.state, worker, info, self.now_ms):
                self.apply(record)
        before = canonical(self.state)
        outcome = decide_faktory(self.state, command, worker, self.now_ms)
        assert canonical(self.state) == before, "decide changed the state"
        if isinstance(outcome.reply, M.Error):
            assert outcome.records == []
        for record in outcome.records:
            self.apply(record)
        return outcome

    def next_rid(self) -> int:
        self.rid += 1
        return self.rid

    def tick(self) -> list[Record]:
        """Tick until the core has nothing more to do now; the records applied."""
        applied: list[Record] = []
        while True:
            before = canonical(self.state)
            records = tick(self.state, self.now_ms)
            assert canonical(self.state) == before, "tick changed the state"
            if not records:
                return applied
            for record in records:
                self.apply(record)
            applied.extend(records)

    def advance(self, ms: int) -> list[Record]:
        self.now_ms += ms
        return self.tick()

    def advance_to(self, at_ms: int) -> list[Record]:
        assert at_ms >= self.now_ms
        self.now_ms = at_ms
        return self.tick()

    # --- requests, with the reply type checked ----------------------------

    def expect(
        self, request: M.Request | A.AdminRequest, reply_type: type[ReplyT], worker: str = WORKER
    ) -> ReplyT:
        reply = self.send(request, worker).reply
        assert isinstance(reply, reply_type), reply
        return reply

    def refused(self, request: M.Request | A.AdminRequest, code: ErrorCode) -> M.Error:
        """The request is refused with ``code`` and changes nothing (send
        checks that decide changed nothing; a refusal has no records)."""
        outcome = self.send(request)
        assert isinstance(outcome.reply, M.Error), outcome.reply
        assert outcome.reply.code == code, outcome.reply
        assert outcome.records == []
        return outcome.reply

    def push(self, **spec: Any) -> M.Pushed:
        spec.setdefault("type", "t")
        return self.expect(M.Push(self.next_rid(), M.JobSpec(**spec)), M.Pushed)

    def push_many(self, *specs: M.JobSpec) -> M.PushedMany:
        return self.expect(M.PushMany(self.next_rid(), list(specs)), M.PushedMany)

    def fetch(
        self, *queues: str, count: int = 1, wait_ms: int = 0, worker: str = WORKER
    ) -> list[M.Delivery]:
        request = M.Fetch(self.next_rid(), list(queues or ["default"]), count, wait_ms)
        return self.expect(request, M.Jobs, worker).jobs

    def lease(self, queue: str = "default", worker: str = WORKER) -> M.Delivery:
        (delivery,) = self.fetch(queue, worker=worker)
        return delivery

    def ack(self, delivery: M.Delivery) -> M.Ok:
        return self.expect(M.Ack(self.next_rid(), delivery.id, delivery.token), M.Ok)

    def fail(self, delivery: M.Delivery, error: M.ErrorInfo | None = None) -> M.Failed:
        error = error or M.ErrorInfo(type="ValueError", message="boom")
        request = M.Fail(self.next_rid(), delivery.id, delivery.token, error)
        return self.expect(request, M.Failed)

    def extend(self, delivery: M.Delivery, lease_ttl_ms: int | None = None) -> M.Extended:
        request = M.Extend(self.next_rid(), delivery.id, delivery.token, lease_ttl_ms)
        return self.expect(request, M.Extended)

    def release(self, delivery: M.Delivery) -> M.Ok:
        return self.expect(M.Release(self.next_rid(), delivery.id, delivery.token), M.Ok)

    def pause(self, queue: str, *, create: bool = True) -> Outcome:
        return self.send(A.Pause(self.next_rid(), queue, create))

    def resume(self, queue: str) -> Outcome:
        return self.send(A.Resume(self.next_rid(), queue))

    def job(self, job_id: str) -> M.JobView:
        return self.expect(M.GetJob(self.next_rid(), job_id), M.JobInfo).job

    def ready_ids(self, queue: str = "default") -> list[str]:
        """The ready jobs of a queue in the order a fetch would take them."""
        found = self.state.queues.get(queue)
        if found is None:
            return []
        return [job_id for p in sorted(found.buckets, reverse=True) for job_id in found.buckets[p]]

    # --- batches ----------------------------------------------------------

    def create_batch(self, *jobs: M.JobSpec, **fields: Any) -> M.BatchCreated:
        request = M.CreateBatch(self.next_rid(), jobs=list(jobs), **fields)
        return self.expect(request, M.BatchCreated)

    def commit_batch(self, batch_id: str) -> Outcome:
        return self.send(M.CommitBatch(self.next_rid(), batch_id))

    def batch(self, batch_id: str, limit: int = 100) -> M.BatchView:
        return self.expect(M.GetBatchStatus(self.next_rid(), batch_id, limit), M.BatchInfo).batch
