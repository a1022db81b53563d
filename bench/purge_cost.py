"""What keeping every index bounded costs the hot path: CPU per job, side by side.

    .venv/bin/python bench/purge_cost.py [--jobs 200000] [--runs 5] [--batch 100]

Drives the pure core as the broker does for a busy queue (``decide`` then
``apply``: push_many, fetch, ack_many of ``--batch`` jobs, a sign of life
per request), in this process, and reads the CPU time it takes per job,
with two versions of the purge that runs after the records of an ack, a
lease extension or a process's sign of life:

- ``bounded``: today's (state.py): the front of each index made live, and
  the index rebuilt without its stale entries once they outnumber its live
  ones;
- ``front only``: the purge as it was before the bound: the front alone.

Each in two workloads: ``plain`` (nothing else leased) and ``long lease``
(one lease with an earlier deadline sits at the front of the heap all
along, as a long job a Worker keeps extending does: the case where stale
entries pile up behind it, and the bounded purge rebuilds the heap). Runs
alternate between the versions, so a machine whose speed drifts drifts for
both; medians of ``--runs``. Also prints the heap's size at the end of a
run: what the front-only purge left behind. A measurement, not a test.
"""

import argparse
import gc
import heapq
import importlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.core_driver import CoreDriver
from leash.broker.core import State
from leash.broker.core import state as state_module
from leash.protocol import messages as M

apply_module = importlib.import_module("leash.broker.core.apply")  # the module, not apply()


def front_only_purge_deadlines(state: State) -> None:
    """The lease deadline purge before the bound (main at 62d6319)."""
    heap, leased = state.deadlines, state.jobs.leased
    while heap:
        deadline_ms, token, job_id = heap[0]
        job = leased(job_id)
        if job is not None and job.token == token and job.deadline_ms == deadline_ms:
            return
        heapq.heappop(heap)


def front_only(live: Callable[[State, tuple[int, str, str]], bool], name: str) -> Callable:  # type: ignore[type-arg]
    def purge(state: State) -> None:
        heap = getattr(state, name)
        while heap and not live(state, heap[0]):
            heapq.heappop(heap)

    return purge


FRONT_ONLY = {
    "purge_deadlines": front_only_purge_deadlines,
    "purge_batch_deadlines": front_only(state_module.live_batch_deadline, "batch_deadlines"),
    "purge_process_deadlines": front_only(state_module.live_process_deadline, "process_deadlines"),
}


@contextmanager
def purges(version: str) -> Iterator[None]:
    """The purges apply calls after acks, extensions and signs of life."""
    saved = {name: getattr(apply_module, name) for name in FRONT_ONLY}
    if version == "front only":
        for name, purge in FRONT_ONLY.items():
            setattr(apply_module, name, purge)
    try:
        yield
    finally:
        for name, purge in saved.items():
            setattr(apply_module, name, purge)


class Driver(CoreDriver):
    def __init__(self, long_lease: bool) -> None:
        super().__init__()
        self.long: M.Delivery | None = None
        if long_lease:
            self.send(
                M.Push(self.next(), M.JobSpec(type="long", queue="long", lease_ttl_ms=60_000))
            )
            reply = self.send(M.Fetch(self.next(), ["long"], 1))
            assert isinstance(reply, M.Jobs)
            (self.long,) = reply.jobs

    def round(self, batch: int) -> None:
        specs = [M.JobSpec(type="t", queue="q") for _ in range(batch)]
        self.send(M.PushMany(self.next(), specs))
        reply = self.send(M.Fetch(self.next(), ["q"], batch))
        assert isinstance(reply, M.Jobs) and len(reply.jobs) == batch
        self.send(M.AckMany(self.next(), [M.LeaseRef(d.id, d.token) for d in reply.jobs]))
        if self.long is not None and self.rid % 300 == 0:  # a Worker extends it now and then
            self.send(M.Extend(self.next(), self.long.id, self.long.token))
        self.now_ms += 1


def run(version: str, workload: str, jobs: int, batch: int) -> tuple[float, int]:
    """CPU µs per job, and the lease deadline heap's size at the end."""
    with purges(version):
        driver = Driver(long_lease=workload == "long lease")
        driver.round(batch)  # warm
        gc.collect()
        began = time.process_time()
        for _ in range(jobs // batch):
            driver.round(batch)
        spent = time.process_time() - began
    return spent / jobs * 1e6, len(driver.state.deadlines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200_000, help="jobs a run")
    parser.add_argument("--runs", type=int, default=5, help="runs of each version and workload")
    parser.add_argument("--batch", type=int, default=100, help="jobs a request")
    args = parser.parse_args(argv)
    versions = ("front only", "bounded")
    for workload in ("plain", "long lease"):
        times: dict[str, list[float]] = {version: [] for version in versions}
        sizes: dict[str, int] = {}
        for _ in range(args.runs):
            for version in versions:  # alternating: a drifting machine drifts for both
                per_job_us, sizes[version] = run(version, workload, args.jobs, args.batch)
                times[version].append(per_job_us)
        before, after = (statistics.median(times[v]) for v in versions)
        print(
            f"{workload:<10}  front only {before:.3f} µs/job (heap {sizes['front only']:>7})  "
            f"bounded {after:.3f} µs/job (heap {sizes['bounded']:>3})  "
            f"{after - before:+.3f} µs/job ({(after / before - 1) * 100:+.1f} %)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
