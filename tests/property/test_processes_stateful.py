"""A hypothesis state machine over worker processes: they register, beat,
lease, disconnect, reconnect, get controlled and die while time moves and
the broker restarts. After every step every lease is owned by a live
process (or its job is ready or retrying again), the views agree with the
lease table, and the replayed state equals the live one (the harness checks
that after every record)."""

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from leash.broker.core import detach
from leash.broker.core.state import LEASED
from leash.protocol import admin as A
from leash.protocol import messages as M
from tests.tier import scaled
from tests.unit.test_core_harness import Core

WORKERS = ["w1", "w2", "w3"]
TTL_MS, BEAT_MS, GRACE_MS, TERMINATE_MS = 3_000, 1_000, 500, 4_000


class ProcessMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.core = Core(
            process_ttl_ms=TTL_MS,
            heartbeat_ms=BEAT_MS,
            reconnect_grace_ms=GRACE_MS,
            terminate_grace_ms=TERMINATE_MS,
        )
        self.held: dict[str, list[M.Delivery]] = {w: [] for w in WORKERS}
        self.tokens_seen: set[int] = set()

    @rule(count=st.integers(1, 4))
    def push(self, count: int) -> None:
        for _ in range(count):
            self.core.push(type="t", retry_base_ms=50, max_attempts=4)

    @rule(worker=st.sampled_from(WORKERS), count=st.integers(1, 3))
    def fetch(self, worker: str, count: int) -> None:
        for delivery in self.core.fetch("default", count=count, worker=worker):
            assert delivery.token not in self.tokens_seen
            self.tokens_seen.add(delivery.token)
            self.held[worker].append(delivery)

    @rule(worker=st.sampled_from(WORKERS))
    def beat(self, worker: str) -> None:
        self.core.send(M.Beat(self.core.next_rid()), worker)

    @rule(worker=st.sampled_from(WORKERS), data=st.data())
    def ack(self, worker: str, data: st.DataObject) -> None:
        if not self.held[worker]:
            return
        delivery = data.draw(st.sampled_from(self.held[worker]))
        self.held[worker].remove(delivery)
        job = self.core.state.jobs.get(delivery.id)
        current = job is not None and job.state == LEASED and job.token == delivery.token
        outcome = self.core.send(M.Ack(self.core.next_rid(), delivery.id, delivery.token), worker)
        assert isinstance(outcome.reply, M.Ok) == current, outcome.reply

    @rule(worker=st.sampled_from(WORKERS))
    def disconnect(self, worker: str) -> None:
        for record in detach(self.core.state, worker, self.core.now_ms):
            self.core.apply(record)

    @rule(worker=st.sampled_from(WORKERS))
    def reconnect(self, worker: str) -> None:
        self.core.touch(worker)

    @rule(worker=st.sampled_from(WORKERS), wanted=st.sampled_from(["quiet", "terminate"]))
    def control(self, worker: str, wanted: str) -> None:
        if worker in self.core.state.processes:
            request = A.Control(self.core.next_rid(), worker, wanted)  # type: ignore[arg-type]
            self.core.send(request, "operator")

    @rule(step_ms=st.sampled_from([1, 100, 499, 500, 999, 1_000, 2_999, 3_000, 5_000]))
    def advance(self, step_ms: int) -> None:
        self.core.advance(step_ms)

    @rule()
    def restart(self) -> None:
        self.core.restart()

    @invariant()
    def every_lease_is_owned_by_a_live_process(self) -> None:
        state = self.core.state
        for job in state.jobs.values():
            if job.state == LEASED:
                assert job.owner in state.processes, job
        for worker, job_ids in state.leases_by_owner.items():
            assert worker in state.processes
            assert all(state.jobs[j].owner == worker for j in job_ids)

    @invariant()
    def the_views_agree_with_the_lease_table(self) -> None:
        state = self.core.state
        leased = sum(1 for j in state.jobs.values() if j.state == LEASED)
        views = self.core.expect(A.GetBusy(self.core.next_rid()), A.Busy, "operator")
        assert sum(len(p.jobs) for p in views.processes) == leased


ProcessMachine.TestCase.settings = settings(
    max_examples=scaled(60), stateful_step_count=40, deadline=None, print_blob=True
)
TestProcessMachine = ProcessMachine.TestCase
