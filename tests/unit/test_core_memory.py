"""No bookkeeping outlives what it tracks, measured: the core churns through
jobs, batches and scheduled jobs beside a few that live long, and neither
its index sizes nor the process's memory grow with the churn.

Three workloads, each beside long-lived objects that sit at the front of
the indexes the churn goes through (what the front purge alone never
cleaned):

- jobs pushed, leased and acked beside one lease held all along (a long
  job, or one a Worker keeps extending): the lease deadline heap;
- batches created, finished and expired beside one unfinished batch that
  lives for a month: the batch deadline heap;
- jobs scheduled a year ahead and deleted, beside one due in an hour: the
  scheduled heap.

After each workload every index is within its bound (twice its live
entries, plus the slack: state.py) and check_invariants finds nothing; the
process's resident memory is back within 10 % of what it was before the
churn. The core runs in this process, with a clock the test moves, as the
shell drives it. ``make memory-heavy`` runs 1,000,000 jobs, 200,000
batches and 200,000 scheduled jobs and prints the figures; ``make test``
runs a fiftieth of that. The batches' finished retention is a second here
(the clock moves a second a round), so the unfinished one (30 days) stays
all along.
"""

import gc
import os
import time
from collections.abc import Callable

from bench.core_driver import CoreDriver
from leash.broker.core import CoreConfig, apply, check_invariants, decide_admin, tick
from leash.broker.core.state import index_sizes
from leash.protocol import admin as A
from leash.protocol import messages as M

JOBS = int(os.environ.get("LEASH_MEMORY_JOBS", "20000"))
BATCHES = int(os.environ.get("LEASH_MEMORY_BATCHES", "4000"))
SCHEDULED = int(os.environ.get("LEASH_MEMORY_SCHEDULED", "4000"))
PER_REQUEST = 1000  # jobs a push_many, fetch or ack_many carries
BATCHES_PER_ROUND = 100
RSS_GROWTH_MAX = 0.10  # of the resident memory before the churn
SECOND_MS = 1000
HOUR_MS = 3600 * SECOND_MS
DAY_MS = 24 * HOUR_MS


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Driver(CoreDriver):
    """The core as the shell drives it (bench/core_driver.py), with the
    steps of these workloads."""

    def __init__(self) -> None:
        super().__init__(
            CoreConfig(
                process_ttl_ms=365 * DAY_MS,
                heartbeat_ms=DAY_MS,
                batch_finished_retention_ms=SECOND_MS,
            )
        )

    def operate(self, request: A.AdminRequest) -> None:
        reply, records = decide_admin(self.state, request, self.now_ms)
        assert isinstance(reply, M.Ok), reply
        for record in records:
            apply(self.state, record)

    def push_many(self, specs: list[M.JobSpec]) -> None:
        reply = self.send(M.PushMany(self.next(), specs))
        assert isinstance(reply, M.PushedMany) and all(r.created for r in reply.results)

    def lease(self, queue: str, count: int) -> list[M.Delivery]:
        reply = self.send(M.Fetch(self.next(), [queue], count))
        assert isinstance(reply, M.Jobs)
        return reply.jobs

    def ack(self, deliveries: list[M.Delivery]) -> None:
        refs = [M.LeaseRef(d.id, d.token) for d in deliveries]
        reply = self.send(M.AckMany(self.next(), refs))
        assert isinstance(reply, M.AckedMany) and all(r.code is None for r in reply.results)

    def advance(self, ms: int) -> None:
        self.now_ms += ms
        while records := tick(self.state, self.now_ms):
            for record in records:
                apply(self.state, record)

    def sizes(self) -> str:
        return ", ".join(f"{s.name} {s.entries}/{s.live_max} live" for s in index_sizes(self.state))

    def check_bounds(self) -> None:
        slack = self.state.config.index_slack_entries
        for size in index_sizes(self.state):
            assert size.entries <= size.bound(slack), size


Step = Callable[[Driver], None]


def churn(name: str, count: int, per_round: int, setup: Step, one_round: Step) -> None:
    """Set up the long-lived objects, churn ``count`` objects through the
    core (``per_round`` a round), and compare the indexes and the resident
    memory before and after."""
    driver = Driver()
    setup(driver)
    one_round(driver)  # one warm round: the allocator's pools exist
    gc.collect()
    before = rss_bytes()
    began_s = time.perf_counter()
    for _ in range(max(1, count // per_round)):
        one_round(driver)
        driver.check_bounds()
    elapsed_s = time.perf_counter() - began_s
    gc.collect()
    after = rss_bytes()
    assert check_invariants(driver.state) == []
    print(
        f"{name}: {count} through the core in {elapsed_s:.1f} s; RSS {before / 2**20:.1f} -> "
        f"{after / 2**20:.1f} MiB; indexes: {driver.sizes()}"
    )
    assert after <= before * (1 + RSS_GROWTH_MAX), (before, after)


def test_jobs_leased_and_acked_beside_one_long_lease_leave_no_memory_behind() -> None:
    held: list[M.Delivery] = []

    def setup(driver: Driver) -> None:
        driver.push_many([M.JobSpec(type="long", queue="long", lease_ttl_ms=60 * SECOND_MS)])
        held.extend(driver.lease("long", 1))

    def one_round(driver: Driver) -> None:
        # Its deadline comes before theirs (a lease_ttl_ms of 30 min by
        # default): it sits at the front of the heap all along, extended as
        # a Worker extends a long job's lease.
        (long,) = held
        reply = driver.send(M.Extend(driver.next(), long.id, long.token))
        assert isinstance(reply, M.Extended)
        driver.push_many([M.JobSpec(type="t", queue="q") for _ in range(PER_REQUEST)])
        driver.ack(driver.lease("q", PER_REQUEST))
        driver.now_ms += 1
        assert driver.state.deadlines[0][2] == long.id

    churn("jobs leased and acked", JOBS, PER_REQUEST, setup, one_round)


def test_batches_finished_and_expired_beside_one_unfinished_batch_leave_no_memory_behind() -> None:
    def setup(driver: Driver) -> None:
        spec = M.JobSpec(type="t", queue="held")
        reply = driver.send(M.CreateBatch(driver.next(), id="month", jobs=[spec], commit=True))
        assert isinstance(reply, M.BatchCreated)

    def one_round(driver: Driver) -> None:
        for _ in range(BATCHES_PER_ROUND):
            jobs = [M.JobSpec(type="t", queue="q")]
            reply = driver.send(M.CreateBatch(driver.next(), jobs=jobs, commit=True))
            assert isinstance(reply, M.BatchCreated)
        driver.ack(driver.lease("q", BATCHES_PER_ROUND))  # each batch finishes
        driver.advance(driver.state.config.batch_finished_retention_ms)  # and expires
        assert list(driver.state.batches) == ["month"]

    churn("batches finished and expired", BATCHES, BATCHES_PER_ROUND, setup, one_round)


def test_jobs_scheduled_and_deleted_beside_one_due_later_leave_no_memory_behind() -> None:
    def setup(driver: Driver) -> None:
        driver.push_many([M.JobSpec(type="t", queue="soon", id="soon", delay_ms=HOUR_MS)])

    def one_round(driver: Driver) -> None:
        ids = [f"year-{driver.rid}-{n}" for n in range(PER_REQUEST)]
        driver.push_many([M.JobSpec(type="t", id=i, delay_ms=365 * DAY_MS) for i in ids])
        for job_id in ids:
            driver.operate(A.DeleteJob(driver.next(), job_id))

    churn("jobs scheduled and deleted", SCHEDULED, PER_REQUEST, setup, one_round)
