"""Time limits and progress in the Worker: a handler that never returns is
failed with TimeLimitExceeded at its job's limit and its slot runs the next
job, whatever the handler's kind (a thread is abandoned and counted, an
async task cancelled, a child process killed); handlers report progress.
Against a real broker (which enforces the limit too) and against the fake
one (which does not: there the Worker's own fail is all there is)."""

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from leash import Client, Worker, report_progress
from leash.protocol.messages import Fail, Progress
from tests.integration.apps import kind_tasks
from tests.integration.broker_proc import BrokerProcess
from tests.integration.fake_broker import FakeBroker
from tests.integration.test_worker_visible import samples, scrape
from tests.integration.worker_thread import gone, running, settled, wait_until

pytestmark = pytest.mark.timeout(90)
LIMIT_MS = 1000
HUNG_S = 60.0  # a hung handler's bound, so that its thread ends after the test


@pytest.fixture
def hang() -> Iterator[threading.Event]:
    """A handler's ``wait()`` that does not return before the test ends."""
    released = threading.Event()
    yield released
    released.set()


def test_a_handler_that_sleeps_for_ever_fails_at_its_limit_and_its_slot_runs_the_next_job(
    broker: BrokerProcess, hang: threading.Event
) -> None:
    worker = Worker(["hung"], port=broker.port, concurrency=1, wait_ms=200)
    ran: list[str] = []
    worker.register("sleep", lambda: hang.wait(HUNG_S))
    worker.register("quick", lambda n: ran.append(n))
    with Client("127.0.0.1", broker.port) as client, running(worker):
        heartbeat_ms = client.welcome.heartbeat_ms
        hung = client.push("sleep", queue="hung", time_limit_ms=LIMIT_MS, max_attempts=1)
        view = settled(client, hung, "dead")
        assert view.last_error is not None and view.last_error.type == "TimeLimitExceeded"
        (attempt,) = view.attempts
        assert attempt.ended_ms - attempt.leased_ms <= LIMIT_MS + heartbeat_ms
        assert attempt.error is not None and attempt.error.type == "TimeLimitExceeded"
        after = client.push("quick", ["after"], queue="hung")
        assert wait_until(lambda: gone(client, after)), "the freed slot ran nothing"
        assert ran == ["after"] and worker.stuck_threads == 1
        assert client.get_job(hung).state == "dead"
        hang.set()  # the abandoned thread returns: its outcome is dropped
        assert wait_until(lambda: worker.stuck_threads == 0)


def failed_with_limit(fake: FakeBroker, job_id: str) -> bool:
    return any(f.id == job_id and f.error.type == "TimeLimitExceeded" for f in fake.seen.failed)


def test_the_worker_itself_fails_a_thread_past_its_limit_and_counts_it(
    fake: FakeBroker, hang: threading.Event
) -> None:
    worker = Worker(port=fake.port, concurrency=1, prefetch=0, wait_ms=100, metrics_port=0)
    worker.register("sleep", lambda: hang.wait(HUNG_S))
    worker.register("quick", lambda: None)
    with running(worker):
        hung = fake.add_job("sleep", time_limit_ms=300)
        started_s = time.monotonic()
        fake.wait_for(lambda f: failed_with_limit(f, hung), "the hung job failed at its limit")
        assert time.monotonic() - started_s >= 0.3
        quick = fake.add_job("quick")
        fake.wait_for(lambda f: quick in f.seen.acked, "the next job run in the freed slot")
        assert worker.stuck_threads == 1 and worker.metrics_address is not None
        metrics = samples(scrape(worker.metrics_address))
        assert metrics[("leash_worker_stuck_threads", ())] == 1
        (failure,) = fake.seen.failed
        assert isinstance(failure, Fail) and "0.3 s" in failure.error.message
        assert failure.retry_in_ms is None and not failure.dead  # the job's retry policy
        hang.set()
        assert wait_until(lambda: worker.stuck_threads == 0)


def test_an_async_handler_past_its_limit_is_cancelled(fake: FakeBroker) -> None:
    worker = Worker(port=fake.port, concurrency=1, prefetch=0, wait_ms=100)
    cancelled = threading.Event()

    @worker.handler("sleep")
    async def sleep() -> None:
        try:
            await asyncio.sleep(HUNG_S)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    worker.register("quick", lambda: None)
    with running(worker):
        hung = fake.add_job("sleep", time_limit_ms=300)
        fake.wait_for(lambda f: failed_with_limit(f, hung), "the hung job failed at its limit")
        assert cancelled.wait(10)
        quick = fake.add_job("quick")
        fake.wait_for(lambda f: quick in f.seen.acked, "the next job run in the freed slot")
        # The abandoned slot thread waited on the task: it ends once the
        # cancellation reaches it, a loop turn later, and is no longer counted.
        assert wait_until(lambda: worker.stuck_threads == 0), "the cancelled run's thread lives on"


def test_a_child_process_past_its_limit_is_killed(fake: FakeBroker, tmp_path: Path) -> None:
    worker = Worker(port=fake.port, concurrency=1, prefetch=0, wait_ms=100, pool="processes")
    worker.register("spin", kind_tasks.wait_for_file)
    worker.register("square", kind_tasks.square)
    pid_file, stop_file = tmp_path / "pid", tmp_path / "stop"
    args = kind_tasks_args(str(pid_file), str(stop_file))
    with running(worker):
        hung = fake.add_job("spin", args, time_limit_ms=3000)  # a child starts in that time
        fake.wait_for(lambda f: failed_with_limit(f, hung), "the hung job failed at its limit")
        pid = int(pid_file.read_text())
        assert wait_until(lambda: not alive(pid)), "the child was not killed"
        quick = fake.add_job("square", kind_tasks_args(3))
        fake.wait_for(lambda f: quick in f.seen.acked, "the next job run in the freed slot")
        assert worker.stuck_threads == 0


def kind_tasks_args(*args: object) -> bytes:
    return msgspec.msgpack.encode(list(args))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


# --- progress ---------------------------------------------------------------------


def progress_of(fake: FakeBroker, job_id: str) -> list[tuple[int, str]]:
    return [
        (r.percent, r.message)
        for r in fake.seen.requests
        if isinstance(r, Progress) and r.id == job_id
    ]


def test_thread_and_async_handlers_report_progress_on_their_lease(fake: FakeBroker) -> None:
    worker = Worker(port=fake.port, concurrency=2, wait_ms=100)

    @worker.handler("plain")
    def plain() -> None:
        report_progress(10, "started")
        report_progress(100, "done")

    @worker.handler("coroutine")
    async def coroutine() -> None:
        report_progress(50, "half way")

    with running(worker):
        first, second = fake.add_job("plain"), fake.add_job("coroutine")
        fake.wait_for(lambda f: {first, second} <= set(f.seen.acked), "both acked")
        fake.wait_for(lambda f: progress_of(f, second) == [(50, "half way")], "async progress")
    assert progress_of(fake, first) == [(10, "started"), (100, "done")]


def test_progress_outside_a_handler_or_out_of_bounds_is_refused_clearly() -> None:
    with pytest.raises(RuntimeError, match="handlers that a Worker runs"):
        report_progress(5)
    with pytest.raises(ValueError, match="from 0 to 100"):
        report_progress(101)
    with pytest.raises(ValueError, match="at most 200 characters"):
        report_progress(5, "m" * 201)


def test_a_job_shows_its_progress_and_time_limit_while_it_runs(
    broker: BrokerProcess, hang: threading.Event
) -> None:
    worker = Worker(["shown"], port=broker.port, concurrency=1, wait_ms=200)

    @worker.handler("report")
    def report() -> None:
        report_progress(40, "4 of 10")
        hang.wait(HUNG_S)

    with Client("127.0.0.1", broker.port) as client, running(worker):
        job_id = client.push("report", queue="shown", time_limit_ms=60_000)
        assert wait_until(lambda: client.get_job(job_id).progress == 40)
        view = client.get_job(job_id)
        assert (view.state, view.progress_message, view.time_limit_ms) == (
            "leased",
            "4 of 10",
            60_000,
        )
        assert view.deadline_ms is not None and view.leased_ms is not None
        assert view.deadline_ms <= view.leased_ms + 60_000
        hang.set()
        assert wait_until(lambda: gone(client, job_id))
