"""Random walks through batches, checked against a model after every record.

``BatchWalk`` drives the harness's ``Core`` (every record round-tripped,
replayed into a shadow state, ``check_invariants`` after each) with batches,
nested batches, members adding members, acks, failures with retries, deaths,
operator deletes, kills and requeues, batch deletion, lease expiry, worker
death (two worker processes with a short TTL that stop beating when the
clock jumps), duplicate and stale acks, and restarts (a replay of every
record into a fresh state). After every record it checks, against the plain
model of tests/property/batch_model.py:

- the batches, their states, member tables, children, parents and fired
  callbacks are the model's; ``pending`` is the number of unfinished members;
- each callback job is enqueued at most once in the whole walk, and exactly
  the callbacks whose conditions held were (the model's set);
- the jobs that name a batch are the model's;
- every batch expires when the rules say, and after a batch is removed
  nothing of it remains in the state;
- after every clock move no open batch is past its open deadline and no
  batch is past its expiry;
- no index holds more than its bound (``check_invariants``, with no slack:
  state.py), with jobs scheduled, deleted, killed, requeued and expired
  beside batches that live for hours.

Two drivers: a hypothesis ``RuleBasedStateMachine`` (``print_blob=True``)
and a long seeded walk with ``random.Random(seed)`` that prints its seed.
"""

import random

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from leash.broker.core import Record, canonical, next_due_ms
from leash.broker.core.batches.views import batch_view
from leash.broker.core.state import LEASED, index_sizes
from leash.protocol import admin as A
from leash.protocol import messages as M
from tests.property.batch_model import BatchModel
from tests.tier import scaled, seeds
from tests.unit.test_core_batch_life import mentions
from tests.unit.test_core_harness import Core, replay

START_MS = 1_700_000_000_000
SECOND_MS = 1000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
BATCH_IDS = tuple(f"bat-{n}" for n in range(5))  # a small pool: ids are reused after expiry
JOB_IDS = tuple(f"job-{n}" for n in range(6))
WORKERS = ("w1", "w2")
QUEUES = ["q", "cb"]
CALLBACKS = M.BatchCallbacks(
    success=M.JobSpec(type="success", queue="cb", max_attempts=2, retry_base_ms=SECOND_MS),
    complete=M.JobSpec(type="complete", queue="cb", max_attempts=2, retry_base_ms=SECOND_MS),
    death=M.JobSpec(type="death", queue="cb", max_attempts=2, retry_base_ms=SECOND_MS),
)
CONFIG = {
    "process_ttl_ms": 20 * SECOND_MS,
    "heartbeat_ms": 5 * SECOND_MS,
    "batch_open_timeout_ms": 10 * MINUTE_MS,
    "batch_finished_retention_ms": HOUR_MS,
    "batch_unfinished_retention_ms": 6 * HOUR_MS,
    "dead_max_jobs": 6,
    "tick_max_items": 4,
}
STEPS_MS = (0, 1, 500, 2 * SECOND_MS, 30 * SECOND_MS, 11 * MINUTE_MS, 2 * HOUR_MS, 7 * HOUR_MS)
DELAYS_MS = (None, None, None, 0, 30 * SECOND_MS, 3 * HOUR_MS)


class BatchWalk(Core):
    def __init__(self) -> None:
        self.model = BatchModel(Core(START_MS, **CONFIG).config)
        self.callbacks_seen: set[str] = set()  # every callback job that ever existed
        self.held: dict[int, M.Delivery] = {}  # token -> a lease we believe current
        self.ended: list[M.LeaseRef] = []
        super().__init__(START_MS, **CONFIG)

    # --- after every record ---------------------------------------------------------

    def apply(self, record: Record) -> None:
        before = {job_id for job_id in self.state.jobs if job_id.startswith("_cb:")}
        super().apply(record)
        self.model.observe(record, self.now_ms)
        for job_id in self.state.jobs:
            if job_id.startswith("_cb:") and job_id not in before:
                assert job_id not in self.callbacks_seen, f"callback {job_id} enqueued twice"
                self.callbacks_seen.add(job_id)
        self.compare()

    def compare(self) -> None:
        state, model = self.state, self.model
        for size in index_sizes(state):
            assert size.entries <= size.bound(self.config.index_slack_entries), size
        assert self.callbacks_seen == model.callbacks, "callbacks differ from the rules"
        assert set(state.batches) == set(model.batches)
        for batch_id, expected in model.batches.items():
            batch = state.batches[batch_id]
            assert batch.state == expected.state, batch_id
            assert batch.members == expected.members, batch_id
            assert list(batch.children) == expected.children, batch_id
            assert batch.parent == expected.parent, batch_id
            assert set(batch.fired) == expected.fired, batch_id
            assert batch.succeeded == expected.succeeded, batch_id
            assert batch.expires_ms == model.expires_ms(expected), batch_id
            unfinished = sum(m in ("pending", "retrying") for m in expected.members.values())
            assert batch_view(state, batch, 0).pending == unfinished
        named = {job.id: job.batch for job in state.jobs.values() if job.batch is not None}
        assert named == {j: b for j, b in model.job_batch.items() if j in state.jobs}
        text = repr(canonical(state))
        for batch_id in set(model.removed) - set(state.batches):
            assert mentions(state, batch_id, text) == [], batch_id

    # --- steps ------------------------------------------------------------------------

    def create(self, rng: random.Random) -> None:
        parents = [None, *self.state.batches]
        parent = rng.choice(parents)
        lease = None
        if parent is not None and self.held and rng.random() < 0.7:
            lease = self._lease_of(rng.choice(list(self.held.values())))
        jobs = [self._spec(rng) for _ in range(rng.randint(0, 3))]
        request = M.CreateBatch(
            self.next_rid(),
            id=rng.choice((None, *BATCH_IDS)),
            parent=parent,
            callbacks=CALLBACKS if rng.random() < 0.8 else M.BatchCallbacks(),
            jobs=jobs,
            commit=rng.random() < 0.5,
            lease=lease,
        )
        self.send(request, rng.choice(WORKERS))

    def push(self, rng: random.Random) -> None:
        if not self.state.batches:
            return
        lease = self._lease_of(rng.choice(list(self.held.values()))) if self.held else None
        specs = [
            self._spec(rng, batch=rng.choice([None, *self.state.batches]))
            for _ in range(rng.randint(1, 3))
        ]
        self.send(M.PushMany(self.next_rid(), specs, lease=lease), rng.choice(WORKERS))

    def commit(self, rng: random.Random) -> None:
        if self.state.batches:
            self.send(M.CommitBatch(self.next_rid(), rng.choice(list(self.state.batches))))

    def fetch(self, rng: random.Random) -> None:  # type: ignore[override]
        worker = rng.choice(WORKERS)
        request = M.Fetch(self.next_rid(), rng.sample(QUEUES, 2), rng.randint(1, 4))
        reply = self.send(request, worker).reply
        assert isinstance(reply, M.Jobs)
        for delivery in reply.jobs:
            self.held[delivery.token] = delivery

    def settle(self, rng: random.Random) -> None:
        if not self.held:
            return
        delivery = rng.choice(list(self.held.values()))
        action = rng.choice(("ack", "ack", "fail", "fail", "release"))
        requests: dict[str, M.Request] = {
            "ack": M.Ack(self.next_rid(), delivery.id, delivery.token),
            "fail": M.Fail(self.rid, delivery.id, delivery.token, M.ErrorInfo(type="E")),
            "release": M.Release(self.rid, delivery.id, delivery.token),
        }
        self.send(requests[action], rng.choice(WORKERS))

    def stale(self, rng: random.Random) -> None:
        """An ack or fail with a token that is no longer current changes nothing."""
        if not self.ended:
            return
        ref = rng.choice(self.ended)
        request: M.Request = rng.choice(
            (
                M.Ack(self.next_rid(), ref.id, ref.token),
                M.AckMany(self.rid, [ref, ref]),
            )
        )
        self.touch(WORKERS[0])
        records = len(self.records)
        reply = self.send(request).reply
        assert len(self.records) == records, "a stale ack wrote a record"
        assert isinstance(reply, M.Error | M.AckedMany)
        if isinstance(reply, M.AckedMany):
            assert all(result.code is not None for result in reply.results)

    def operate(self, rng: random.Random) -> None:
        job_ids = sorted(self.state.jobs)
        if not job_ids:
            return
        job_id = rng.choice(job_ids)
        op = rng.choice((A.DeleteJob, A.KillJob, A.RequeueJob, A.RequeueJob))
        self.send(op(self.next_rid(), job_id))

    def delete_batch(self, rng: random.Random) -> None:
        if self.state.batches:
            self.send(A.DeleteBatch(self.next_rid(), rng.choice(list(self.state.batches))))

    def move_clock(self, rng: random.Random) -> None:
        self.now_ms += rng.choice(STEPS_MS)
        self.tick()
        due_ms = next_due_ms(self.state)
        assert due_ms is None or due_ms > self.now_ms, "tick left due work"
        for batch in self.state.batches.values():
            assert batch.expires_ms > self.now_ms, f"batch {batch.id} outlived its retention"
            if batch.state == "open":
                assert batch.open_deadline_ms > self.now_ms, f"batch {batch.id} stayed open"

    def restart(self) -> None:
        replayed = replay(self.records, self.config)
        assert replayed is not self.state
        super().restart()

    def prune(self) -> None:
        """Forget leases that ended (acked, failed, released, expired, owner died)."""
        for token, delivery in list(self.held.items()):
            job = self.state.jobs.get(delivery.id)
            if job is None or job.state != LEASED or job.token != token:
                del self.held[token]
                self.ended.append(M.LeaseRef(delivery.id, token))
        del self.ended[:-20]

    # --- helpers ----------------------------------------------------------------------

    def _spec(self, rng: random.Random, batch: str | None = None) -> M.JobSpec:
        return M.JobSpec(
            type="t",
            queue="q",
            id=rng.choice((None, None, *JOB_IDS)),
            max_attempts=rng.randint(1, 3),
            lease_ttl_ms=rng.choice((SECOND_MS, 60 * SECOND_MS)),
            retry_base_ms=rng.choice((1, SECOND_MS)),
            delay_ms=rng.choice(DELAYS_MS),  # scheduled: deleted, killed or due later
            batch=batch,
        )

    @staticmethod
    def _lease_of(delivery: M.Delivery) -> M.LeaseRef:
        return M.LeaseRef(delivery.id, delivery.token)


STEP_NAMES = (
    "create",
    "push",
    "commit",
    "fetch",
    "settle",
    "stale",
    "operate",
    "delete_batch",
    "move_clock",
)
WEIGHTS = (12, 12, 8, 20, 25, 4, 5, 2, 12)


def step(walk: BatchWalk, name: str, rng: random.Random) -> None:
    if name == "restart":
        walk.restart()
    else:
        getattr(walk, name)(rng)
    walk.prune()


# --- the hypothesis driver -----------------------------------------------------------


class BatchMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.walk = BatchWalk()

    @rule(name=st.sampled_from(STEP_NAMES), seed=st.integers(0, 2**32 - 1))
    def act(self, name: str, seed: int) -> None:
        step(self.walk, name, random.Random(seed))

    @precondition(lambda self: len(self.walk.records) > 5)
    @rule()
    def restart(self) -> None:
        step(self.walk, "restart", random.Random(0))

    @invariant()
    def consistent(self) -> None:
        self.walk.compare()


BatchMachine.TestCase.settings = settings(
    max_examples=scaled(150),
    stateful_step_count=40,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBatchStateMachine = BatchMachine.TestCase


# --- the seeded driver -----------------------------------------------------------------

WALK_STEPS = 2500


@pytest.mark.parametrize("seed", seeds([5, 20260202, 8675309]))
def test_a_long_seeded_walk_through_batches_keeps_every_rule(seed: int) -> None:
    print(f"batch walk seed={seed} (rerun: this test with that seed)")
    rng = random.Random(seed)
    walk = BatchWalk()
    for number in range(WALK_STEPS):
        name = "restart" if rng.random() < 0.01 else rng.choices(STEP_NAMES, WEIGHTS)[0]
        try:
            step(walk, name, rng)
        except AssertionError as failure:
            raise AssertionError(f"seed={seed} step={number} ({name}): {failure}") from failure
    walk.now_ms += 8 * HOUR_MS  # everything retried, died, finished, expired
    walk.tick()
    walk.now_ms += 8 * HOUR_MS
    walk.tick()
    assert walk.state.batches == {}, "a batch outlived every retention"
    assert len(walk.model.removed) > 10 and len(walk.callbacks_seen) > 10
    kinds = {job_id.rsplit(":", 1)[1] for job_id in walk.callbacks_seen}
    assert kinds == {"success", "complete", "death"}
