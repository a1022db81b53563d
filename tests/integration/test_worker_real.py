"""`leash worker` as a real process against a real broker."""

import os
import signal
import subprocess
import sys
import time

from leash.client import Client
from leash.client._exceptions import NotFound
from tests.integration.broker_proc import BrokerProcess
from tests.waiting import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def start_worker(broker: BrokerProcess, *args: str) -> "subprocess.Popen[bytes]":
    command = [
        sys.executable, "-c", "from leash.client.cli import main; main()", "worker",
        "tests.integration.apps.tasks", "--port", str(broker.port), *args,
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def gone(client: Client, job_id: str) -> bool:
    try:
        view = client.get_job(job_id)
    except NotFound:
        return True
    return view.finished_ms is not None  # in the history of finished jobs


def test_the_worker_acks_what_returns_and_fails_what_raises(broker: BrokerProcess) -> None:
    worker = start_worker(broker, "--concurrency", "4")
    try:
        with Client("127.0.0.1", broker.port) as client:
            done = [client.push("double", [n]) for n in range(50)]
            failing = client.push("explode", max_attempts=1)
            assert wait_until(lambda: all(gone(client, j) for j in done), 20)
            assert wait_until(lambda: client.get_job(failing).state == "dead", 20)
            error = client.get_job(failing).last_error
            assert error is not None and "RuntimeError" in error.type
            assert error.message == "exploded on purpose"
            assert "raise RuntimeError" in error.backtrace
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    assert worker.returncode == 0, stderr.decode()


def test_sigterm_with_jobs_in_flight_leaves_no_job_leased(broker: BrokerProcess) -> None:
    worker = start_worker(broker, "--concurrency", "4", "--grace-s", "1")
    with Client("127.0.0.1", broker.port) as client:
        quick = [client.push("slow", [0.2]) for _ in range(2)]
        stuck = [client.push("slow", [30]) for _ in range(2)]
        all_ids = quick + stuck
        assert wait_until(
            lambda: sum(client.get_job(j).state == "leased" for j in all_ids) >= 3, 15
        )
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
        assert worker.returncode == 0, stderr.decode()
        states = {j: ("acked" if gone(client, j) else client.get_job(j).state) for j in all_ids}
        assert "leased" not in states.values(), states
        assert all(states[j] == "ready" for j in stuck), states


def test_sigterm_sent_again_and_again_during_shutdown_still_exits_0(broker: BrokerProcess) -> None:
    """The second signal of a pair may come at any point of the shutdown,
    even after the worker's loop has stopped handling signals: a burst of
    them covers every point, and the status is 0, never killed by SIGTERM."""
    for _ in range(2):
        worker = start_worker(broker, "--concurrency", "2", "--grace-s", "1")
        with Client("127.0.0.1", broker.port) as client:
            running = client.push("double", [1])
            assert wait_until(lambda: gone(client, running), 15)  # noqa: B023
        deadline = time.monotonic() + 20
        while worker.poll() is None and time.monotonic() < deadline:
            worker.send_signal(signal.SIGTERM)
            time.sleep(0.002)
        _, stderr = worker.communicate(timeout=30)
        assert worker.returncode == 0, stderr.decode()
