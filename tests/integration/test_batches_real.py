"""Batches against a real broker, with real ``leash worker`` processes.

- 1,000 jobs in one batch while workers are killed with kill -9 at random
  (a seeded schedule, seed printed) and the broker is killed -9 once and
  restarted on the same port: the success callback runs exactly once, the
  status is consistent and fsck finds nothing.
- A running member adds jobs to its committed batch (``add_to_batch``).
- With a short retention, a finished batch disappears completely, also
  after a restart.

The callback queue is served by a worker that is never killed: a callback
job whose worker died mid-run would run again (delivery is at least once),
and this test is about the broker enqueuing it once. Every process started
here is stopped by its pid.
"""

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from leash.client import Client, NotFound
from tests.integration.broker_proc import BrokerProcess
from tests.waiting import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The chaos kills a worker every half second, so a job may lose its lease
# three times in a row without being one that kills its worker: the limit
# on lost leases is lifted (it is tested in test_recovery_defaults.py).
BROKER_FLAGS = (
    "--fsync", "always", "--process-ttl-ms", "3000", "--heartbeat-ms", "500",
    "--reconnect-grace-ms", "500", "--lost-leases-max", "1000",
)  # fmt: skip
WORKER_WARM_S = 1.0  # a worker is killed only after it has had time to lease jobs


class Workers:
    """``leash worker`` processes on the batch task module, stopped by pid."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, port: int, queues: str, concurrency: int) -> "subprocess.Popen[bytes]":
        command = [
            sys.executable, "-c", "from leash.client.cli import main; main()", "worker",
            "tests.integration.apps.batch_tasks", "--port", str(port), "--queues", queues,
            "--concurrency", str(concurrency), "--grace-s", "1", "--log-level", "WARNING",
        ]  # fmt: skip
        log = open(os.path.join(self.log_dir, f"worker-{len(self.started)}.log"), "wb")  # noqa: SIM115
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
        log.close()
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(10)


@pytest.fixture
def workers(tmp_path: "os.PathLike[str]") -> Iterator[Workers]:
    started = Workers(str(tmp_path))
    yield started
    started.stop_all()


@pytest.fixture
def brokers() -> Iterator[list[BrokerProcess]]:
    started: list[BrokerProcess] = []
    yield started
    for broker in started:
        broker.kill()


def finished(path: str) -> set[str]:
    """The member indexes that ran to the end at least once."""
    return {line for line in lines(path) if not line.startswith("start")}


def lines(path: str) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path) as file:
        return file.read().splitlines()


def status_or_none(client: Client, batch_id: str) -> object:
    try:
        return client.batch_status(batch_id)
    except NotFound:
        return None


@pytest.mark.timeout(150)
def test_a_batch_of_1000_jobs_survives_kill_9_of_workers_and_broker_and_succeeds_once(
    tmp_path: "os.PathLike[str]", workers: Workers, brokers: list[BrokerProcess]
) -> None:
    seed = int(os.environ.get("LEASH_CHAOS_SEED", "20260301"))
    print(f"chaos seed={seed} (rerun: LEASH_CHAOS_SEED={seed})")
    rng = random.Random(seed)
    data_dir, progress, calls = (os.path.join(tmp_path, name) for name in ("data", "ran", "cb"))
    broker = BrokerProcess(data_dir, BROKER_FLAGS).start()
    brokers.append(broker)
    port = broker.port
    with Client("127.0.0.1", port) as client:
        jobs = [
            {"type": "member", "queue": "work", "retry_base_ms": 50,
             "args": {"index": n, "path": progress, "sleep_s": 0.1}}
            for n in range(1000)
        ]  # fmt: skip
        created = client.create_batch(
            jobs,
            id="chaos",
            on_success={"type": "on_success", "queue": "cb", "args": {"path": calls}},
            commit=True,
        )
    assert created.created and len(created.results) == 1000
    workers.start(port, "cb", 1)  # never killed
    chaos = [(workers.start(port, "work", 6), time.monotonic()) for _ in range(3)]
    kills, broker_killed = 0, False
    started_s = time.monotonic()
    while len(finished(progress)) < 1000 and time.monotonic() - started_s < 90:
        time.sleep(rng.uniform(0.2, 0.6))
        victim = rng.randrange(len(chaos))
        process, born_s = chaos[victim]
        if time.monotonic() - born_s < WORKER_WARM_S:  # let it start and take jobs first
            continue
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        chaos[victim] = (workers.start(port, "work", 6), time.monotonic())
        kills += 1
        if not broker_killed and len(finished(progress)) >= 300:
            broker.kill()
            broker = BrokerProcess(data_dir, (*BROKER_FLAGS, "--port", str(port))).start()
            brokers.append(broker)
            broker_killed = True
    ran = finished(progress)
    assert broker_killed and ran == {str(n) for n in range(1000)}, (len(ran), broker_killed)
    with Client("127.0.0.1", port) as client, broker.admin() as admin:
        assert wait_until(lambda: len(lines(calls)) >= 1, 30), "the success callback never ran"
        view = client.batch_status("chaos")
        assert wait_until(lambda: admin.fsck().problems == [], 5), admin.fsck().problems
        (fired,) = view.fired
        assert wait_until(lambda: status_or_none(client, fired.job_id) is None, 5)
        time.sleep(1.0)  # a second run would have had time to show
        assert lines(calls) == [f"success {fired.job_id}"]
        assert (view.state, view.succeeded, view.total, view.pending) == ("finished", True, 1000, 0)
        assert (view.dead, view.failures, view.members) == (0, 0, [])
        assert admin.fsck().problems == []
    starts = sum(line.startswith("start") for line in lines(progress))
    elapsed_s = time.monotonic() - started_s
    print(
        f"1000 jobs, {starts} runs started ({starts - 1000} again after a kill), {kills} workers "
        f"killed, broker killed once; success callback ran once; {elapsed_s:.1f} s"
    )


def test_a_running_member_adds_jobs_to_its_committed_batch(
    tmp_path: "os.PathLike[str]", workers: Workers, brokers: list[BrokerProcess]
) -> None:
    progress, calls = os.path.join(tmp_path, "ran"), os.path.join(tmp_path, "cb")
    broker = BrokerProcess(os.path.join(tmp_path, "data")).start()
    brokers.append(broker)
    with Client("127.0.0.1", broker.port) as client, broker.admin() as admin:
        client.create_batch(
            [{"type": "fan_out", "queue": "work", "args": {"count": 20, "path": progress}}],
            id="fan",
            on_success={"type": "on_success", "queue": "work", "args": {"path": calls}},
            commit=True,
        )
        workers.start(broker.port, "work", 4)
        assert wait_until(lambda: len(lines(calls)) == 1, 30), lines(progress)
        view = client.batch_status("fan")
        assert (view.state, view.succeeded, view.total) == ("finished", True, 21)
        ran = lines(progress)
        assert "fan_out" in ran and {str(n) for n in range(20)} <= set(ran)
        assert admin.fsck().problems == []


def test_with_a_short_retention_a_finished_batch_disappears_completely(
    tmp_path: "os.PathLike[str]", brokers: list[BrokerProcess]
) -> None:
    data_dir = os.path.join(tmp_path, "data")
    flags = ("--batch-retention-ms", "500")
    broker = BrokerProcess(data_dir, flags).start()
    brokers.append(broker)
    with Client("127.0.0.1", broker.port) as client, broker.admin() as admin:
        client.create_batch([{"type": "t", "id": "one"}, {"type": "t", "id": "two"}], id="brief")
        client.commit_batch("brief")
        for job in client.fetch_many("default", 2):
            client.ack(job)
        finished = client.batch_status("brief")
        assert finished.state == "finished"
        assert finished.expires_ms == finished.finished_ms + 500  # type: ignore[operator]
        assert wait_until(lambda: status_or_none(client, "brief") is None, 5)
        report = admin.fsck()
        assert (report.problems, report.batches, report.jobs) == ([], 0, 0)
        admin.compact()  # a snapshot of the state now, and the segments it covers gone
    for name in os.listdir(data_dir):
        if name.endswith((".snap", ".log")):
            with open(os.path.join(data_dir, name), "rb") as file:
                assert b"brief" not in file.read(), f"{name} still names the batch"
    broker.kill()
    broker = BrokerProcess(data_dir, flags).start()
    brokers.append(broker)
    with Client("127.0.0.1", broker.port) as client, broker.admin() as admin:
        assert status_or_none(client, "brief") is None  # the replay removes it too
        assert admin.fsck().batches == 0
