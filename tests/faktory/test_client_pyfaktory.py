"""Conformance with Faktory's ``pyfaktory`` client (PyPI, installed by the
test extra): it pushes (one and in bulk), fetches, acks, fails, schedules,
beats, asks INFO, MUTATEs and FLUSHes against a live Leash through the
Faktory port, with a password too, and its consumer runs a batch of jobs to
completion."""

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pyfaktory import Client, Producer
from pyfaktory.models import Job, JobFilter, MutateOperation

from leash.client.admin import AdminClient
from leash.protocol import messages as M
from tests.faktory.conftest import Launch
from tests.faktory.workers import WorkerProcess
from tests.integration.broker_proc import BrokerProcess
from tests.waiting import wait_for

pytestmark = pytest.mark.timeout(120)


def later(seconds: float) -> str:
    return datetime.fromtimestamp(time.time() + seconds, UTC).isoformat()


@pytest.fixture
def client(broker: BrokerProcess) -> Iterator[Client]:
    url = f"tcp://127.0.0.1:{broker.faktory_port}"
    both = Client(faktory_url=url, role="both", worker_id="pyf-wid-0001", beat_period=5)
    both.connect()
    yield both
    both.disconnect()


def test_the_client_pushes_fetches_acks_fails_schedules_and_beats(
    client: Client, admin: AdminClient
) -> None:
    producer = Producer(client=client)
    assert producer.push(
        Job(jid="pyf-job-0001", jobtype="add", args=[1, 2], queue="pyf", custom={"k": [1]})
    )
    refused = producer.push_bulk(
        [
            Job(jid="pyf-job-0002", jobtype="add", args=[3], queue="pyf", retry=-1),
            Job(jid="pyf-job-0003", jobtype="add", args=[4], queue="pyf-later", at=later(1.5)),
            Job(jid="pyf-job-0004", jobtype="add", args=[5], queue="pyf", reserve_for=86401),
        ]
    )
    assert list(refused) == ["pyf-job-0004"] and "reserve_for" in refused["pyf-job-0004"]
    job = client._fetch(["pyf"])
    assert job is not None
    assert (job["jid"], job["args"], job["custom"]) == ("pyf-job-0001", [1, 2], {"k": [1]})
    assert client._ack(jid="pyf-job-0001")
    job = client._fetch(["pyf"])
    assert job is not None and (job["jid"], job["retry"]) == ("pyf-job-0002", -1)
    assert client._fail(jid="pyf-job-0002", errtype="KeyError", message="k", backtrace=["x"])
    assert admin.job("pyf-job-0002").state == "dead", "retry -1: dead at the first failure"
    assert admin.job("pyf-job-0002").last_error == M.ErrorInfo("KeyError", "k", "x")
    scheduled = None
    deadline_s = time.monotonic() + 10
    while scheduled is None and time.monotonic() < deadline_s:
        scheduled = client._fetch(["pyf-later"])
    assert scheduled is not None and scheduled["jid"] == "pyf-job-0003"
    assert client._beat()
    info = client.info()
    assert info["faktory"]["tasks"]["Busy"]["size"] == 1 and "queues" in info["faktory"]
    admin.control("pyf-wid-0001", "quiet")
    assert client._beat()
    assert client.state.name == "QUIET", "the BEAT's answer made the client quiet"


def test_the_client_mutates_and_flushes(client: Client, admin: AdminClient) -> None:
    producer = Producer(client=client)
    for n in range(4):
        producer.push(Job(jid=f"pyf-dead-{n:04}", jobtype=f"t{n % 2}", args=[], retry=-1))
    for _ in range(4):
        job = client._fetch(["default"])
        assert job is not None
        client._fail(jid=job["jid"], errtype="E", message="m", backtrace=[])
    kill = MutateOperation(
        cmd="requeue", target="dead", filter=JobFilter(jids=None, regexp=None, jobtype="t1")
    )
    assert client.mutate(kill)
    assert sorted(admin.queues()[0].__struct_fields__) and admin.queues()[0].ready == 2
    assert client._flush()
    assert admin.stats().jobs == {
        s: 0 for s in ("ready", "scheduled", "leased", "retrying", "dead")
    }


def test_the_client_gives_its_password(launch: Launch, tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("horse-battery")
    path.chmod(0o600)
    broker = launch("--faktory-password-file", str(path), "--auth-fail-delay-ms", "50")
    url = f"tcp://:horse-battery@127.0.0.1:{broker.faktory_port}"
    producer = Client(faktory_url=url, role="producer")
    producer.connect()  # sha256 applied as many times as the HI says
    assert Producer(client=producer).push(Job(jid="pyf-job-0001", jobtype="t", args=[]))
    producer.disconnect()
    wrong = Client(faktory_url=url.replace("horse", "mule"), role="producer")
    with pytest.raises(Exception, match="Invalid password"):
        wrong.connect()
    wrong.sock.close()  # the library leaves it open


def test_its_consumer_runs_a_batch_of_jobs_to_completion(
    broker: BrokerProcess, admin: AdminClient
) -> None:
    url = f"tcp://127.0.0.1:{broker.faktory_port}"
    producer = Client(faktory_url=url, role="producer")
    producer.connect()
    jobs = [
        Job(jid=f"pyf-square-{n:02}", jobtype="square", args=[n], queue="batch") for n in range(20)
    ]
    jobs += [
        Job(jid=f"pyf-explode-{n}", jobtype="explode", args=[], queue="batch") for n in range(3)
    ]
    assert Producer(client=producer).push_bulk(jobs) == {}
    producer.disconnect()
    with WorkerProcess("pyfaktory_worker", str(broker.faktory_port), "pyf-worker-01", "batch"):
        took_s = wait_for(lambda: admin.stats().totals["acked"] == 20, "20 jobs acked")
        wait_for(lambda: admin.stats().totals["failed"] == 3, "3 jobs failed")
    print(f"pyfaktory's consumer ran 23 jobs in {took_s:.2f} s")
    failed = admin.job("pyf-explode-0")
    assert failed.last_error is not None and failed.last_error.type == "ValueError"
    assert "exploded on purpose" in failed.last_error.message
