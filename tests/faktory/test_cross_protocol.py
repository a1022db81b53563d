"""One broker, one state: a job pushed by a Faktory client is worked by a
Leash ``Worker`` and the other way round, and the views, the process list
and the metrics see Faktory clients as they see Leash ones."""

import datetime
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from decimal import Decimal

import pytest
from faktory import Client as FaktoryClient

from leash.client import Client
from leash.client.admin import AdminClient
from tests.faktory.conftest import Launch
from tests.faktory.lines import Lines
from tests.faktory.workers import ROOT, WorkerProcess
from tests.integration.broker_proc import BrokerProcess
from tests.waiting import wait_for

pytestmark = pytest.mark.timeout(120)


def leash_worker(broker: BrokerProcess) -> "subprocess.Popen[bytes]":
    command = [sys.executable, "-c", "from leash.client.cli import main; main()", "worker"]
    command += ["tests.integration.apps.tasks", "--port", str(broker.port), "--concurrency", "4"]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_a_job_pushed_by_a_faktory_client_is_worked_by_a_leash_worker(
    broker: BrokerProcess, admin: AdminClient
) -> None:
    with FaktoryClient(f"tcp://127.0.0.1:{broker.faktory_port}") as client:
        for n in range(10):
            assert client.queue("double", args=[n], jid=f"fk-double-{n}")
        assert client.queue("explode", args=[], jid="fk-explode-1", retry=-1)
    worker = leash_worker(broker)
    try:
        wait_for(lambda: admin.stats().totals["acked"] == 10, "10 jobs acked by the Leash worker")
        wait_for(lambda: admin.job("fk-explode-1").state == "dead", "the exploding job dead")
    finally:
        os.kill(worker.pid, signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    assert worker.returncode == 0, stderr.decode()
    error = admin.job("fk-explode-1").last_error
    assert error is not None and error.message == "exploded on purpose"


def test_a_job_pushed_by_a_leash_client_is_worked_by_a_faktory_worker(
    broker: BrokerProcess, admin: AdminClient
) -> None:
    with Client("127.0.0.1", broker.port) as client:
        for n in range(10):
            client.push("square", [n], queue="cross", id=f"leash-square-{n}", max_attempts=3)
        client.push("explode", queue="cross", id="leash-explode-1", max_attempts=1)
    with WorkerProcess("py_worker", str(broker.faktory_port), "fk-worker-01", "cross"):
        wait_for(lambda: admin.stats().totals["acked"] == 10, "10 jobs acked by the Faktory worker")
        wait_for(lambda: admin.job("leash-explode-1").state == "dead", "the exploding job dead")
    error = admin.job("leash-explode-1").last_error
    assert error is not None and (error.type, error.message) == (
        "ValueError",
        "exploded on purpose",
    )


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_views_processes_and_metrics_see_a_faktory_consumer(launch: Launch) -> None:
    broker = launch("--metrics-port", "0")
    assert broker.wait_for_log("metrics on http://127.0.0.1:")
    line = next(line for line in broker.log if "metrics on http://" in line)
    metrics_port = int(line.rsplit(":", 1)[1].split("/")[0])
    with Lines(broker.faktory_port) as lines, broker.admin() as admin:
        lines.hello(wid="fk-wid-0001", hostname="box", pid=7)
        for n in range(3):
            lines.ok("PUSH", {"jid": f"fk-job-000{n}", "jobtype": "t", "args": [], "queue": "q"})
        for _ in range(3):
            lines.command("FETCH", "q")
        lines.ok("ACK", {"jid": "fk-job-0000"})
        lines.ok("FAIL", {"jid": "fk-job-0001", "errtype": "E", "message": "m"})
        (busy,) = admin.busy()
        assert busy.worker_id == "fk-wid-0001" and [job.id for job in busy.jobs] == ["fk-job-0002"]
        assert [(p.worker_id, p.in_flight) for p in admin.processes()] == [("fk-wid-0001", 1)]
        samples = metrics(metrics_port)
        assert samples['leash_queue_pushed_total{queue="q"}'] == 3
        assert samples['leash_queue_acked_total{queue="q"}'] == 1
        assert samples['leash_queue_failed_total{queue="q"}'] == 1
        assert samples['leash_queue_leased{queue="q"}'] == 1
        assert samples["leash_processes"] == 1


def test_a_leash_jobs_typed_args_reach_a_faktory_consumer_as_json_text(
    broker: BrokerProcess,
) -> None:
    plus_2 = datetime.timezone(datetime.timedelta(hours=2))
    when = datetime.datetime(2026, 1, 1, 9, 30, tzinfo=plus_2)
    args = [when, datetime.date(2026, 1, 1), Decimal("12.50"), uuid.UUID(int=7), b"\x00\xff"]
    with Client("127.0.0.1", broker.port) as client:
        client.push("invoice", [*args, {"local": datetime.datetime(2026, 1, 1, 9, 30)}])
    with Lines(broker.faktory_port) as lines:
        lines.hello(wid="typed-consumer")
        unit = lines.command("FETCH", "default").json
    assert unit["args"] == [
        "2026-01-01T07:30:00Z",
        "2026-01-01",
        "12.50",
        "00000000-0000-0000-0000-000000000007",
        "AP8=",
        {"local": "2026-01-01T09:30:00"},
    ]
