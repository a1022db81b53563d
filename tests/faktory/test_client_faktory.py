"""Conformance with Faktory's ``faktory`` client (PyPI, installed by the test
extra): it pushes, fetches, acks, fails, schedules and beats against a live
Leash through the Faktory port, with a password too, and its worker runs a
batch of jobs to completion."""

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from faktory import Client
from faktory._proto import Connection

from leash.client.admin import AdminClient
from leash.protocol import messages as M
from tests.faktory.conftest import Launch
from tests.faktory.workers import WorkerProcess
from tests.integration.broker_proc import BrokerProcess
from tests.waiting import wait_for

pytestmark = pytest.mark.timeout(120)


def later(seconds: float) -> str:
    return datetime.fromtimestamp(time.time() + seconds, UTC).isoformat()


def url(broker: BrokerProcess, password: str = "") -> str:
    return f"tcp://{':' + password + '@' if password else ''}127.0.0.1:{broker.faktory_port}"


def consumer(broker: BrokerProcess, wid: str) -> Connection:
    connection = Connection(url(broker), worker_id=wid, labels=["python"])
    connection.connect(worker_id=wid)
    return connection


def command(connection: Connection, verb: str, argument: dict[str, object]) -> str:
    connection.reply(verb, argument)
    answer: str = next(connection.get_message())
    return answer


def test_the_client_pushes_fetches_acks_fails_schedules_and_beats(
    broker: BrokerProcess, admin: AdminClient
) -> None:
    with Client(url(broker)) as client:
        assert client.queue(
            "add",
            args=[1, 2],
            queue="py",
            priority=7,
            jid="py-job-0001",
            custom={"trace": "t-1"},
            reserve_for=120,
            retry=3,
            backtrace=5,
        )
        assert client.queue("add", args=[3], queue="py", jid="py-job-0002")
        assert client.queue("add", args=[4], queue="py-later", jid="py-job-0003", at=later(1.5))
    assert admin.job("py-job-0003").state == "scheduled"
    worker = consumer(broker, "py-wid-0001")
    try:
        job = worker.fetch(["py"])
        assert job is not None
        assert (job["jid"], job["jobtype"], job["args"], job["priority"]) == (
            "py-job-0001",
            "add",
            [1, 2],
            7,
        )
        assert (job["custom"], job["reserve_for"], job["retry"], job["backtrace"]) == (
            {"trace": "t-1"},
            120,
            3,
            5,
        )
        assert [busy.worker_id for busy in admin.busy()] == ["py-wid-0001"]
        assert command(worker, "ACK", {"jid": "py-job-0001"}) == "OK"
        job = worker.fetch(["py"])
        assert job is not None and job["jid"] == "py-job-0002"
        failure = {"jid": "py-job-0002", "errtype": "ValueError", "message": "bad row"}
        assert command(worker, "FAIL", {**failure, "backtrace": ["a.py:1", "b.py:2"]}) == "OK"
        kept = admin.job("py-job-0002")
        assert (kept.state, kept.last_error) == (
            "retrying",
            M.ErrorInfo("ValueError", "bad row", "a.py:1\nb.py:2"),
        )
        scheduled = None
        deadline_s = time.monotonic() + 10
        while scheduled is None and time.monotonic() < deadline_s:
            scheduled = worker.fetch(["py-later"])  # blocks up to 2 s while there is none
        assert scheduled is not None and scheduled["jid"] == "py-job-0003"
        assert command(worker, "BEAT", {"wid": "py-wid-0001"}) == "OK"
        admin.control("py-wid-0001", "quiet")
        assert "quiet" in command(worker, "BEAT", {"wid": "py-wid-0001"})
    finally:
        worker.disconnect()


def test_the_client_gives_its_password(launch: Launch, tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("horse-battery")
    path.chmod(0o600)
    broker = launch("--faktory-password-file", str(path), "--auth-fail-delay-ms", "50")
    with Client(url(broker, "horse-battery")) as client:  # it hashes once: it sends no version
        assert client.queue("t", args=[], jid="py-job-0001")
    with pytest.raises(Exception, match="wrong password"):
        Client(url(broker, "wrong")).connect()


def test_its_worker_runs_a_batch_of_jobs_to_completion(
    broker: BrokerProcess, admin: AdminClient
) -> None:
    with Client(url(broker)) as client:
        for n in range(20):
            assert client.queue("square", args=[n], queue="batch", jid=f"py-square-{n:02}")
        for n in range(3):
            assert client.queue("explode", args=[], queue="batch", jid=f"py-explode-{n}")
    with WorkerProcess("py_worker", str(broker.faktory_port), "py-worker-01", "batch"):
        took_s = wait_for(lambda: admin.stats().totals["acked"] == 20, "20 jobs acked")
        wait_for(lambda: admin.stats().totals["failed"] == 3, "3 jobs failed")
    print(f"the faktory package's worker ran 23 jobs in {took_s:.2f} s")
    for n in range(3):
        job = admin.job(f"py-explode-{n}")
        assert job.state == "retrying" and job.last_error is not None
        assert (job.last_error.type, job.last_error.message) == (
            "ValueError",
            "exploded on purpose",
        )
