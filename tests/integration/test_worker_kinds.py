"""Handler kinds against a real broker: async handlers on the worker's loop and
plain ones in child processes run jobs, keep their leases while they wait or
burn a CPU, and leave nothing leased after a graceful stop; a child killed
with SIGKILL fails only its own job's attempt."""

import asyncio
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from leash import Client, Worker
from tests.integration.apps import kind_tasks
from tests.integration.broker_proc import BrokerProcess
from tests.integration.worker_thread import gone, running, settled
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(90)
SHORT_LEASE_MS = 1000  # the shortest lease: extended every 0.5 s while its job runs


@pytest.fixture
def client(broker: BrokerProcess) -> Iterator[Client]:
    with Client("127.0.0.1", broker.port) as producer:
        yield producer


def new_worker(broker: BrokerProcess, **options: object) -> Worker:
    return Worker(["kinds"], port=broker.port, wait_ms=200, **options)  # type: ignore[arg-type]


def push(client: Client, type: str, args: object, **options: object) -> str:
    return client.push(type, args, queue="kinds", **options)  # type: ignore[arg-type]


# --- async handlers ---------------------------------------------------------------


def test_async_handlers_run_on_the_loop_and_keep_their_leases(
    broker: BrokerProcess, client: Client
) -> None:
    worker = new_worker(broker, concurrency=8)
    runs: list[tuple[int, str]] = []

    @worker.handler("add_one")
    async def add_one(n: int, pause_s: float) -> None:
        await asyncio.sleep(pause_s)
        runs.append((n, threading.current_thread().name))

    with running(worker):
        quick = [push(client, "add_one", [n, 0.01]) for n in range(20)]
        # Longer than its lease: acked once, so its lease was extended meanwhile.
        slow = push(client, "add_one", [99, 1.6], lease_ttl_ms=SHORT_LEASE_MS)
        assert wait_until(lambda: all(gone(client, j) for j in [*quick, slow]))
    assert sorted(n for n, _ in runs) == [*range(20), 99]  # each once
    assert not any(name.startswith("leash-job") for _, name in runs)  # on the loop's thread


def test_a_stop_waits_for_coroutines_within_the_grace_then_releases_their_jobs(
    broker: BrokerProcess, client: Client
) -> None:
    worker = new_worker(broker, concurrency=2, grace_s=0.5)
    started: list[int] = []
    cancelled: list[int] = []
    finished: list[int] = []

    @worker.handler("nap")
    async def nap(n: int, seconds: float) -> None:
        started.append(n)
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            cancelled.append(n)
            raise
        finished.append(n)

    with running(worker):
        short = push(client, "nap", [1, 0.2])
        long = push(client, "nap", [2, 60])
        assert wait_until(lambda: 2 in started)  # running, not only leased: the stop cancels it
    assert gone(client, short) and finished == [1]  # finished within the grace
    view = client.get_job(long)
    assert (view.state, view.attempt) == ("ready", 0)  # released, no attempt counted
    assert cancelled == [2]


# --- process pool -----------------------------------------------------------------


def test_process_handlers_run_jobs_and_keep_their_leases_while_they_burn_a_cpu(
    broker: BrokerProcess, client: Client
) -> None:
    worker = new_worker(broker, concurrency=2, pool="processes")
    worker.register("square", kind_tasks.square)
    worker.register("burn", kind_tasks.burn)
    with running(worker):
        squares = [push(client, "square", [n]) for n in range(10)]
        burning = push(client, "burn", [1.6], lease_ttl_ms=SHORT_LEASE_MS)
        assert wait_until(lambda: all(gone(client, j) for j in [*squares, burning]), 30)


def test_a_child_killed_fails_only_its_job_and_the_slot_gets_a_new_child(
    broker: BrokerProcess, client: Client, tmp_path: Path
) -> None:
    worker = new_worker(broker, concurrency=2, grace_s=5)
    worker.register("wait", kind_tasks.wait_for_file, pool="processes")
    worker.register("square", kind_tasks.square, pool="processes")
    stop = tmp_path / "stop"
    pid_files = [tmp_path / "first", tmp_path / "second"]
    with running(worker):
        victim, survivor = (push(client, "wait", [str(f), str(stop)]) for f in pid_files)
        assert wait_until(lambda: all(f.exists() and f.read_text() for f in pid_files), 30)
        os.kill(int(pid_files[0].read_text()), signal.SIGKILL)
        view = settled(client, victim, "retrying")
        assert view.attempt == 1 and view.last_error is not None
        assert "BrokenProcessPool" in view.last_error.type
        assert client.get_job(survivor).state == "leased"  # its child runs on
        stop.touch()
        assert wait_until(lambda: gone(client, survivor))
        after = [push(client, "square", [n]) for n in range(4)]
        assert wait_until(lambda: all(gone(client, j) for j in after), 30)


def test_a_child_leaves_the_stop_signals_to_the_worker_and_finishes_its_job(
    broker: BrokerProcess, client: Client, tmp_path: Path
) -> None:
    """A terminal's Ctrl-C, or a signal to the worker's whole process group,
    reaches its children too: a child ignores SIGINT and SIGTERM, so its
    job finishes (before, SIGINT failed it with KeyboardInterrupt and
    SIGTERM killed the child)."""
    worker = new_worker(broker, concurrency=1, pool="processes")
    worker.register("wait", kind_tasks.wait_for_file)
    pid_file, stop = tmp_path / "pid", tmp_path / "stop"
    with running(worker):
        job = push(client, "wait", [str(pid_file), str(stop)])
        assert wait_until(lambda: pid_file.exists() and bool(pid_file.read_text()), 30)
        child = int(pid_file.read_text())
        for signum in (signal.SIGINT, signal.SIGTERM):
            os.kill(child, signum)
        assert _alive(child)
        stop.touch()
        assert wait_until(lambda: gone(client, job))
    view = client.get_job(job)
    assert (view.state, view.last_error) == ("succeeded", None)  # no attempt failed


def test_a_stop_kills_children_still_running_after_the_grace_and_releases_their_jobs(
    broker: BrokerProcess, client: Client, tmp_path: Path
) -> None:
    worker = new_worker(broker, concurrency=1, grace_s=0.3, pool="processes")
    worker.register("wait", kind_tasks.wait_for_file)
    pid_file = tmp_path / "pid"
    with running(worker):
        job = push(client, "wait", [str(pid_file), str(tmp_path / "never")])
        assert wait_until(lambda: pid_file.exists() and bool(pid_file.read_text()), 30)
    view = client.get_job(job)
    assert (view.state, view.attempt) == ("ready", 0)
    assert wait_until(lambda: not _alive(int(pid_file.read_text())), 5)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
