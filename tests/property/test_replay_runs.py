"""Replay in runs (core.Replay, what start-up uses) gives the state apply gives.

Seeded random journals are made by driving the real core (touch, decide,
apply, tick) with pushes into few queues and priorities, so that jobs of
one bucket interleave: single and many pushes, batches whose callbacks go
to the same queues, fetches of several jobs, acks, fails, extends,
releases, pauses, operator deletes, kills, requeues and terminations, delays and
retries coming due, leases expiring and worker processes dying, in turn
with calm stretches where workers keep up (pushes, leases and acks alone,
the runs that replay defers). At many
prefixes of each journal, a replay in runs (with the deferred jobs bounded
at 1, 3 and the default) must equal the record-by-record state
(``canonical``: every job, each bucket in order, the counts, the leases)
with every index consistent (``check_invariants``), and give each owner
its leases in the same order. Each test prints its seed.
"""

import random

import msgspec
import pytest

from leash.broker.core import (
    CoreConfig,
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
from leash.broker.core.replay import DEFERRED_MAX
from leash.protocol import admin as A
from leash.protocol import messages as M
from tests.tier import seeds

START_MS = 1_700_000_000_000
SECOND_MS = 1000
QUEUES = ("a", "b")
PRIORITIES = (0, 5)
WORKERS = ("w1", "w2", "w3")
CONFIG = CoreConfig(
    process_ttl_ms=20 * SECOND_MS, terminate_grace_ms=500, dead_max_jobs=5, tick_max_items=4
)
STEPS = 1500
CHECK_EVERY = 53  # records between two compared prefixes
BOUNDS = (1, 3, DEFERRED_MAX)


class Journal:
    """The core driven as the shell drives it; every record kept, decoded."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.state = State(CONFIG)
        self.now_ms = START_MS
        self.rid = 0
        self.records: list[Record] = []
        self.held: dict[int, M.Delivery] = {}  # token -> delivery
        self.known: list[str] = []  # job ids seen, for the operator's requests
        self.batches = 0
        self.calm = False
        self.apply(boot(self.state, self.now_ms))

    def apply(self, record: Record) -> None:
        apply(self.state, record)
        self.records.append(record_decoder.decode(record_encoder.encode(record)))

    def send(self, request: M.Request | A.AdminRequest, worker: str) -> M.Reply | A.AdminReply:
        if isinstance(request, M.Request.__args__):  # type: ignore[attr-defined]
            hello = M.Hello(rid=0, version=1, worker_id=worker)
            for record in touch(self.state, worker, info_of(hello), self.now_ms):
                self.apply(record)
            outcome = decide(self.state, request, worker, self.now_ms)
            reply, records = outcome.reply, outcome.records
        else:
            reply, records = decide_admin(self.state, request, self.now_ms)
        for record in records:
            self.apply(record)
        return reply

    def next_rid(self) -> int:
        self.rid += 1
        return self.rid

    def spec(self) -> M.JobSpec:
        rng = self.rng
        return M.JobSpec(
            type="t",
            queue=rng.choice(QUEUES),
            args=msgspec.Raw(msgspec.msgpack.encode(rng.randint(0, 9))),
            priority=rng.choice(PRIORITIES),
            delay_ms=rng.choice((None,) * 9 + (500, 3 * SECOND_MS)),
            max_attempts=rng.randint(1, 2),
            lease_ttl_ms=rng.choice((SECOND_MS, 10 * SECOND_MS)),
            retry_base_ms=rng.choice((None, 1)),
        )

    def step(self) -> None:
        rng, roll = self.rng, self.rng.random()
        if rng.random() < 0.02:
            self.calm = not self.calm
        worker = rng.choice(WORKERS)
        held = sorted(self.held)
        if self.calm:  # workers keep up: runs of pushes, leases and acks alone
            self.calm_step(roll, worker, held)
        elif roll < 0.28:
            self.send(M.Push(self.next_rid(), self.spec()), worker)
        elif roll < 0.32:
            specs = [self.spec() for _ in range(rng.randint(2, 4))]
            self.send(M.PushMany(self.next_rid(), specs), worker)
        elif roll < 0.35:
            self.batches += 1
            callbacks = M.BatchCallbacks(success=self.spec(), death=self.spec())
            jobs = [self.spec() for _ in range(rng.randint(1, 3))]
            request = M.CreateBatch(
                self.next_rid(), id=f"b{self.batches}", callbacks=callbacks, jobs=jobs, commit=True
            )
            self.send(request, worker)
        elif roll < 0.60:
            queues = rng.sample(QUEUES, rng.randint(1, 2))
            reply = self.send(M.Fetch(self.next_rid(), queues, rng.randint(1, 3)), worker)
            assert isinstance(reply, M.Jobs), reply
            for delivery in reply.jobs:
                self.held[delivery.token] = delivery
                self.known.append(delivery.id)
        elif roll < 0.88 and held:
            delivery = self.held.pop(rng.choice(held))
            action = rng.choice(("ack",) * 6 + ("fail", "fail", "extend", "release"))
            rid, job_id, token = self.next_rid(), delivery.id, delivery.token
            if action == "ack":
                self.send(M.Ack(rid, job_id, token), delivery_worker(self, delivery, worker))
            elif action == "fail":
                self.send(M.Fail(rid, job_id, token, M.ErrorInfo(type="E")), worker)
            elif action == "extend":
                self.send(M.Extend(rid, job_id, token, None), worker)
                self.held[token] = delivery
            else:
                self.send(M.Release(rid, job_id, token), worker)
        elif roll < 0.91 and held:
            chosen = [self.held.pop(token) for token in rng.sample(held, min(len(held), 3))]
            refs = [M.LeaseRef(d.id, d.token) for d in chosen]
            self.send(M.AckMany(self.next_rid(), refs), worker)
        elif roll < 0.92:
            queue = rng.choice(QUEUES)
            pause = rng.random() < 0.5
            self.send((A.Pause if pause else A.Resume)(self.next_rid(), queue), worker)
        elif roll < 0.94 and self.known:
            job_id = rng.choice(self.known[-20:])
            kind = rng.choice((A.DeleteJob, A.KillJob, A.RequeueJob))
            self.send(kind(self.next_rid(), job_id), worker)
        else:
            self.advance(rng.choice((0, 200, SECOND_MS, SECOND_MS, 4 * SECOND_MS, 25 * SECOND_MS)))

    def calm_step(self, roll: float, worker: str, held: list[int]) -> None:
        if roll > 0.995:  # an operator terminates a worker: its leases are released
            self.send(A.Control(self.next_rid(), worker, "terminate"), worker)
            self.advance(CONFIG.terminate_grace_ms + 1)
        elif roll < 0.3:
            spec = msgspec.structs.replace(self.spec(), delay_ms=None)
            self.send(M.Push(self.next_rid(), spec), worker)
        elif roll < 0.6 or not held:
            reply = self.send(
                M.Fetch(self.next_rid(), list(QUEUES), self.rng.randint(1, 3)), worker
            )
            assert isinstance(reply, M.Jobs), reply
            for delivery in reply.jobs:
                self.held[delivery.token] = delivery
        else:
            delivery = self.held.pop(self.rng.choice(held))
            rid, job_id, token = self.next_rid(), delivery.id, delivery.token
            worker = delivery_worker(self, delivery, worker)
            if roll < 0.95:
                self.send(M.Ack(rid, job_id, token), worker)
            elif roll < 0.97:  # a lease of a deferred job ends or changes by id
                self.send(M.Release(rid, job_id, token), worker)
            elif roll < 0.99:
                self.send(M.Fail(rid, job_id, token, M.ErrorInfo(type="E")), worker)
            else:
                self.send(M.Extend(rid, job_id, token, None), worker)
                self.held[token] = delivery

    def advance(self, ms: int) -> None:
        self.now_ms += ms
        while records := tick(self.state, self.now_ms):
            for record in records:
                self.apply(record)
        for token in [t for t, d in self.held.items() if d.deadline_ms <= self.now_ms]:
            del self.held[token]  # expired, or its process died: a stale lease now


def delivery_worker(journal: Journal, delivery: M.Delivery, default: str) -> str:
    job = journal.state.jobs.get(delivery.id)
    return job.owner if job is not None and job.owner else default


def one_by_one(records: list[Record]) -> State:
    state = State(CONFIG)
    for record in records:
        apply(state, record)
    return state


def in_runs(records: list[Record], deferred_max: int) -> State:
    runs = Replay(State(CONFIG), deferred_max)
    for record in records:
        runs.apply(record)
    return runs.finish()


def owners(state: State) -> dict[str, list[str]]:
    return {owner: list(ids) for owner, ids in state.leases_by_owner.items()}


@pytest.mark.parametrize("seed", seeds([1, 2026, 31337, 8080]))
def test_a_replay_in_runs_gives_the_state_of_every_prefix(seed: int) -> None:
    print(f"replay-in-runs seed={seed} (rerun: this test with that seed)")
    journal = Journal(random.Random(seed))
    for _ in range(STEPS):
        journal.step()
    journal.advance(60 * SECOND_MS)
    records = journal.records
    kinds = {type(record).__name__ for record in records}
    assert {"JobsPushed", "JobsLeased", "JobsAcked", "AttemptsFailed", "BatchOpened"} <= kinds
    cuts = sorted({*range(1, len(records), CHECK_EVERY), len(records)})
    for cut in cuts:
        expected = one_by_one(records[:cut])
        for bound in BOUNDS:
            replayed = in_runs(records[:cut], bound)
            where = f"seed={seed} records={cut} bound={bound}"
            assert check_invariants(replayed) == [], where
            assert canonical(replayed) == canonical(expected), where
            assert owners(replayed) == owners(expected), where
    assert canonical(in_runs(records, DEFERRED_MAX)) == canonical(journal.state)
