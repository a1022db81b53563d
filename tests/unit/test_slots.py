"""A worker's job slots (client/_slots.py): jobs given to idle threads run
at once, each on a thread of its own; a job that comes while every thread
is busy waits for the first to finish; closing ends the idle threads."""

import asyncio
import threading
from collections.abc import Iterator

import pytest

from leash.client._control import Outcome
from leash.client._slots import Slots
from leash.client._types import Job
from tests.unit.test_prefetch import job

WAIT_S = 10.0
pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()  # not run: the slots only schedule their collect on it
    yield loop
    loop.close()


def test_jobs_given_to_idle_threads_run_at_once_each_on_its_own(
    loop: asyncio.AbstractEventLoop,
) -> None:
    together = threading.Barrier(5, timeout=WAIT_S)  # this thread and four jobs at once
    threads: set[int] = set()

    def run(_job: Job) -> Outcome:
        threads.add(threading.get_ident())
        together.wait()
        return None

    slots = Slots(4, run, loop, lambda: None)
    try:
        slots.add([job(n, 60_000) for n in range(3)], 0.0)
        slots.add([job(3, 60_000)], 0.0)  # a second add wakes the fourth idle thread
        together.wait()
        assert _finished(slots, 4) == {0, 1, 2, 3}
        assert len(threads) == 4
    finally:
        _close(slots)


def test_a_job_for_busy_threads_waits_for_the_first_to_finish(
    loop: asyncio.AbstractEventLoop,
) -> None:
    started, release = threading.Semaphore(0), threading.Event()
    ran_on: dict[int, int] = {}

    def run(running: Job) -> Outcome:
        ran_on[running.token] = threading.get_ident()
        started.release()
        if running.token == 1:
            assert release.wait(WAIT_S)
        return None

    slots = Slots(1, run, loop, lambda: None)
    try:
        slots.add([job(0, 60_000), job(1, 60_000)], 0.0)  # tokens 1 and 2
        assert started.acquire(timeout=WAIT_S)
        assert slots.waiting == 1  # the second waits: the one thread is busy
        release.set()
        assert started.acquire(timeout=WAIT_S)
        assert _finished(slots, 2) == {0, 1}
        assert ran_on[1] == ran_on[2]  # the thread took it as it finished, none other woke
    finally:
        _close(slots)


def test_closing_ends_the_idle_threads_and_runs_no_job_not_taken(
    loop: asyncio.AbstractEventLoop,
) -> None:
    slots = Slots(3, lambda _job: None, loop, lambda: None)
    slots.close()
    for thread in slots.threads:
        thread.join(WAIT_S)
        assert not thread.is_alive()
    slots.add([job(0, 60_000)], 0.0)
    assert slots.waiting == 1 and not slots.finished


def _close(slots: Slots) -> None:
    """Close the slots and wait for their threads to end."""
    slots.close()
    for thread in slots.threads:
        thread.join(WAIT_S)
        assert not thread.is_alive()


def _finished(slots: Slots, count: int) -> set[int]:
    """The numbers of the first ``count`` jobs finished (waiting for them)."""
    done: set[int] = set()
    for _ in range(int(WAIT_S / 0.01)):
        done |= {int(finished.id[1:]) for finished, _outcome in slots.take_finished()}
        if len(done) >= count:
            return done
        threading.Event().wait(0.01)
    raise AssertionError(f"{len(done)} of {count} jobs finished")


def test_the_wake_pipe_is_closed_once_no_thread_reads_it(
    loop: asyncio.AbstractEventLoop,
) -> None:
    started, release = threading.Event(), threading.Event()

    def run(_job: Job) -> Outcome:
        started.set()
        assert release.wait(WAIT_S)
        return None

    slots = Slots(3, run, loop, lambda: None)
    slots.add([job(0, 60_000)], 0.0)
    assert started.wait(WAIT_S)
    slots.close()  # two threads asleep on the pipe, one running a job
    for _ in range(int(WAIT_S / 0.01)):
        if sum(t.is_alive() for t in slots.threads) <= 1:
            break
        threading.Event().wait(0.01)
    assert sum(t.is_alive() for t in slots.threads) == 1  # the idle ones ended
    assert not slots._pipe_open  # closed with the running thread still out
    release.set()
    for thread in slots.threads:
        thread.join(WAIT_S)
        assert not thread.is_alive()
    assert [finished.id for finished, _ in slots.take_finished()] == ["j0"]


def test_many_jobs_added_at_once_and_one_by_one_each_run_once(
    loop: asyncio.AbstractEventLoop,
) -> None:
    ran: list[str] = []
    ran_lock = threading.Lock()

    def run(running: Job) -> Outcome:
        with ran_lock:
            ran.append(running.id)
        return None

    slots = Slots(8, run, loop, lambda: None)
    try:
        slots.add([job(n, 60_000) for n in range(500)], 0.0)
        for n in range(500, 1000):
            slots.add([job(n, 60_000)], 0.0)
        assert _finished(slots, 1000) == set(range(1000))
        assert sorted(ran) == sorted(f"j{n}" for n in range(1000))
    finally:
        _close(slots)
