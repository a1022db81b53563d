"""The Worker's prefetch and its piggybacked outcomes, on a clock the test
moves: the Worker runs on an event loop whose time is the test's
(``ManualClockLoop``), against the in-test fake broker (real sockets, real
handler threads). Time passes only when the test says, so what must happen
at half a lease's ttl, or within the outcomes' wait bound, is checked at
that instant and not a moment before."""

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from leash.broker import core
from leash.client import Worker
from leash.client._prefetch import PREFETCH_WAIT_MAX_S
from leash.client._settle import SETTLE_WAIT_MAX_MS
from leash.protocol.messages import AckMany, Cancel, Fetch, Release
from tests.integration.fake_broker import WAIT_S, FakeBroker

pytestmark = pytest.mark.timeout(60)


class ManualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` is a number the test sets: timers fire
    when the test moves it past them (``Clock.advance`` wakes the loop)."""

    def __init__(self) -> None:
        super().__init__()
        self.now_s = 1000.0

    def time(self) -> float:
        return self.now_s


class Clock:
    """The Worker, run in a thread on a ManualClockLoop, and its clock."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.loop = ManualClockLoop()
        self.error: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with asyncio.Runner(loop_factory=lambda: self.loop) as runner:
            try:
                runner.run(self.worker.run_async())
            except BaseException as error:  # the test reports it
                self.error.append(error)

    def start(self) -> None:
        self.thread.start()

    def barrier(self) -> None:
        """Return once the loop has run everything that was due (a few turns)."""
        for _ in range(5):
            asyncio.run_coroutine_threadsafe(asyncio.sleep(0), self.loop).result(WAIT_S)

    def advance(self, seconds: float) -> None:
        def move() -> None:
            self.loop.now_s += seconds

        self.loop.call_soon_threadsafe(move)
        self.barrier()

    def stop(self) -> None:
        self.worker.stop(now=True)
        self.thread.join(WAIT_S)
        assert not self.error, self.error


class Gate:
    def __init__(self) -> None:
        self.started = threading.Event()
        self.opened = threading.Event()

    def handler(self) -> None:
        self.started.set()
        assert self.opened.wait(WAIT_S)


@pytest.fixture
def gate() -> Iterator[Gate]:
    gate = Gate()
    yield gate
    gate.opened.set()


def requests_of(fake: FakeBroker, kind: type) -> list[Any]:
    return [r for r in fake.seen.requests if isinstance(r, kind)]


def test_a_prefetched_job_is_released_at_half_its_lease_and_never_held_past_it(
    fake: FakeBroker, gate: Gate
) -> None:
    """One slot, busy with a handler that blocks; four jobs prefetched with a
    lease of 1 s: they are given back at 0.5 s after their lease arrived, not
    a moment before, while the running job's lease is extended from the same
    instant on. Nothing is prefetched again until the slot frees."""
    worker = Worker(port=fake.port, concurrency=1, prefetch=4, wait_ms=100, grace_s=5.0)
    worker.register("slow", gate.handler)
    worker.register("quick", lambda: None)
    slow = fake.add_job("slow", lease_ttl_ms=1000)
    waiting = [fake.add_job("quick", lease_ttl_ms=1000) for _ in range(4)]
    clock = Clock(worker)
    clock.start()
    try:
        assert gate.started.wait(WAIT_S)
        fake.wait_for(lambda f: sum(j.state == "leased" for j in f.jobs.values()) == 5, "5 leased")
        clock.barrier()
        assert worker._slots.waiting == 4
        hold_s = min(0.5, PREFETCH_WAIT_MAX_S)
        clock.advance(hold_s - 0.001)
        assert requests_of(fake, Release) == [] and worker._slots.waiting == 4
        clock.advance(0.001)
        fake.wait_for(lambda f: sorted(f.seen.released) == sorted(waiting), "the 4 released")
        assert worker._slots.waiting == 0
        fake.wait_for(lambda f: len(f.seen.extends(slow)) == 1, "the running job extended")
        fetches = fake.seen.fetches()
        clock.advance(0.3)  # the slot is still busy: nothing is leased ahead again
        assert fake.seen.fetches() == fetches
        assert all(job.state == "ready" for job in fake.jobs.values() if job.type == "quick")
        gate.opened.set()  # the slot frees: the four run
        fake.wait_for(lambda f: len(f.seen.acked) == 5, "every job acked")
    finally:
        clock.stop()


def test_a_finished_jobs_ack_goes_with_the_next_fetch_in_one_write(fake: FakeBroker) -> None:
    worker = Worker(port=fake.port, concurrency=1, prefetch=0, wait_ms=100)
    worker.register("quick", lambda: None)
    first = fake.add_job("quick")
    clock = Clock(worker)
    clock.start()
    try:
        fake.wait_for(lambda f: f.seen.acked == [first], "the ack")
        requests = fake.seen.requests
        index = next(i for i, r in enumerate(requests) if isinstance(r, AckMany))
        assert [j.id for j in requests[index].leases] == [first]
        assert isinstance(requests[index + 1], Fetch), requests  # the same write, after it
        assert not any(type(r).__name__ == "Ack" for r in requests)
    finally:
        clock.stop()


def test_an_ack_waits_for_no_held_fetch_longer_than_its_bound(fake: FakeBroker, gate: Gate) -> None:
    """Two slots: one runs a job, the other's fetch is held at the broker (no
    job ready). When the job ends, its ack waits for the next fetch at most
    SETTLE_WAIT_MAX_MS of the worker's clock, then goes alone."""
    with one_running_one_held(fake, gate, grace_s=25.0) as (worker, clock, job_id):
        gate.opened.set()
        for _ in range(int(WAIT_S / 0.01)):  # the handler returns (a thread): real time
            clock.barrier()
            if worker._settler.unanswered:
                break
        clock.barrier()
        assert fake.seen.acked == [] and worker._settler.unanswered == 1
        clock.advance(SETTLE_WAIT_MAX_MS / 1000 - 0.0005)
        assert fake.seen.acked == []
        clock.advance(0.001)
        fake.wait_for(lambda f: f.seen.acked == [job_id], "the ack, alone")
        assert fake.seen.fetches() == 2, "the held fetch was not what carried it"


@contextlib.contextmanager
def one_running_one_held(
    fake: FakeBroker, gate: Gate, grace_s: float
) -> Iterator[tuple[Worker, Clock, str]]:
    """A worker of two slots, one running a job (held at ``gate``), the
    other's fetch held at the broker (a long poll of 20 s, no job ready):
    the worker, its clock and the job's id. A job of type "late" would run
    and be acked."""
    worker = Worker(port=fake.port, concurrency=2, prefetch=0, wait_ms=20_000, grace_s=grace_s)
    worker.register("slow", gate.handler)
    worker.register("late", lambda: None)
    job_id = fake.add_job("slow")
    clock = Clock(worker)
    clock.start()
    try:
        assert gate.started.wait(WAIT_S)
        fake.wait_for(lambda f: f.seen.fetches() >= 2, "the held fetch")
        yield worker, clock, job_id
    finally:
        clock.stop()


@pytest.fixture
def stopping(fake: FakeBroker, gate: Gate) -> Iterator[tuple[Worker, Clock, str]]:
    """``one_running_one_held``, told to stop gracefully."""
    with one_running_one_held(fake, gate, grace_s=30.0) as (worker, clock, job_id):
        worker.stop()
        clock.barrier()
        yield worker, clock, job_id


def test_a_stop_waits_for_the_outcomes_and_never_for_a_held_fetch(
    fake: FakeBroker, gate: Gate, stopping: tuple[Worker, Clock, str]
) -> None:
    """The stopping worker ends as soon as the running job's ack is
    answered, without waiting out the held fetch (its clock never moves,
    and it ends before half the time the broker holds the fetch)."""
    worker, clock, job_id = stopping
    fake.wait_for(lambda f: bool(requests_of(f, Cancel)), "the held fetch's cancel")
    (cancel,) = requests_of(fake, Cancel)
    assert cancel.of == requests_of(fake, Fetch)[-1].rid
    gate.opened.set()
    clock.thread.join(core.hold_ms(fake.state, 20_000) / 1000 / 2)
    assert not clock.thread.is_alive(), "the stop waited for the held fetch"
    assert not clock.error, clock.error
    assert fake.seen.acked == [job_id]
    assert worker.unfinished == 0


def test_a_job_a_held_fetch_brings_during_a_stop_is_released_unrun(
    fake: FakeBroker, gate: Gate, stopping: tuple[Worker, Clock, str]
) -> None:
    """A job pushed while the worker stops reaches its held fetch (the
    fake ends no fetch on the worker's cancel, as when the reply crossed
    it): the worker releases it unrun (ready again, no attempt counted) and
    ends once the running job is acked."""
    _worker, clock, job_id = stopping
    late_id = fake.add_job("late")
    fake.wait_for(lambda f: any(r.id == late_id for r in requests_of(f, Release)), "the release")
    gate.opened.set()
    clock.thread.join(WAIT_S)
    assert not clock.thread.is_alive()
    assert not clock.error, clock.error
    assert fake.seen.acked == [job_id]
    late = fake.jobs[late_id]
    assert (late.state, late.attempt) == ("ready", 0)
