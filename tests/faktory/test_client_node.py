"""Conformance with Faktory's Node client (faktory-worker of npm, installed
into tests/faktory/node_modules by make test): it pushes (one and in bulk),
fetches, acks, fails, schedules, beats, asks INFO, MUTATEs and FLUSHes
against a live Leash through the Faktory port, with a password too, and its
Worker runs a batch of jobs to completion. Skipped, saying why, only where
Node or npm's registry is missing (CI requires it)."""

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from leash.client.admin import AdminClient
from tests.faktory.conftest import Launch
from tests.faktory.node_client import NodeClient
from tests.integration.broker_proc import BrokerProcess

pytestmark = pytest.mark.timeout(120)


def later(seconds: float) -> str:
    return datetime.fromtimestamp(time.time() + seconds, UTC).isoformat()


def test_the_client_pushes_fetches_acks_fails_schedules_and_beats(
    broker: BrokerProcess, admin: AdminClient
) -> None:
    with NodeClient(broker.faktory_port, wid="node-wid-01") as node:
        jid = node.call(
            "push",
            jobtype="add",
            args=[1, {"x": 2}],
            jid="node-job-0001",
            queue="node",
            priority=7,
            retry=2,
            reserveFor=90,
            custom={"trace": "t-1"},
        )
        assert jid == "node-job-0001"
        node.call("push", jobtype="add", args=[3], jid="node-job-0002", queue="node")
        node.call("push", jobtype="add", args=[], jid="node-job-0003", queue="nl", at=later(1.5))
        job = node.call("fetch", queues=["node"])
        assert (job["jid"], job["args"], job["priority"]) == ("node-job-0001", [1, {"x": 2}], 7)
        assert (job["retry"], job["reserve_for"], job["custom"]) == (2, 90, {"trace": "t-1"})
        assert node.call("ack", jid="node-job-0001") == "OK"
        assert node.call("fetch", queues=["node"])["jid"] == "node-job-0002"
        assert node.call("fail", jid="node-job-0002", errtype="EBOOM", message="it broke") == "OK"
        failed = admin.job("node-job-0002")
        assert failed.state == "retrying" and failed.last_error is not None
        assert (failed.last_error.type, failed.last_error.message) == ("EBOOM", "it broke")
        assert "Error: it broke" in failed.last_error.backtrace  # the stack's lines, kept
        scheduled = None
        deadline_s = time.monotonic() + 10
        while scheduled is None and time.monotonic() < deadline_s:
            scheduled = node.call("fetch", queues=["nl"])
        assert scheduled is not None and scheduled["jid"] == "node-job-0003"
        assert node.call("beat") == "OK"
        admin.control("node-wid-01", "quiet")
        assert node.call("beat") == "quiet"
        admin.control("node-wid-01", "terminate")
        assert node.call("beat") == "terminate"


def test_the_client_pushes_in_bulk_asks_info_mutates_and_flushes(
    broker: BrokerProcess, admin: AdminClient
) -> None:
    with NodeClient(broker.faktory_port, wid="node-wid-01") as node:
        jobs = [
            {"jid": f"node-dead-{n:04}", "jobtype": f"t{n % 2}", "args": [], "retry": -1}
            for n in range(4)
        ]
        jobs.append({"jid": "short", "jobtype": "t", "args": []})
        rejected = node.call("pushBulk", jobs=jobs)
        assert list(rejected) == ["short"] and "8 to 128" in rejected["short"]["reason"]
        for _ in range(4):
            job = node.call("fetch", queues=["default"])
            node.call("fail", jid=job["jid"], errtype="E", message="m")
        assert node.call("info")["faktory"]["tasks"]["Dead"]["size"] == 4
        assert node.call("mutate", target="dead", cmd="requeue", jobtype="t1") == "OK"
        assert [(q.name, q.ready, q.dead) for q in admin.queues()] == [("default", 2, 2)]
        pattern = '*"jid":"node-dead-0000"*'
        assert node.call("mutate", target="dead", cmd="discard", pattern=pattern) == "OK"
        assert [(q.name, q.ready, q.dead) for q in admin.queues()] == [("default", 2, 1)]
        assert node.call("flush") == "OK"
        assert admin.queues() == []


def test_the_client_gives_its_password(launch: Launch, tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("horse-battery")
    path.chmod(0o600)
    broker = launch("--faktory-password-file", str(path), "--auth-fail-delay-ms", "50")
    with NodeClient(broker.faktory_port, password="horse-battery") as node:
        assert node.call("push", jobtype="t", args=[], jid="node-job-0001") == "node-job-0001"
    with broker.admin() as admin:
        assert admin.job("node-job-0001").state == "ready"


def test_its_worker_runs_a_batch_of_jobs_to_completion(
    broker: BrokerProcess, admin: AdminClient
) -> None:
    with NodeClient(broker.faktory_port) as producer:
        jobs = [
            {"jid": f"node-square-{n:02}", "jobtype": "square", "args": [n], "queue": "batch"}
            for n in range(20)
        ]
        jobs += [
            {"jid": f"node-explode-{n}", "jobtype": "explode", "args": [], "queue": "batch"}
            for n in range(3)
        ]
        assert producer.call("pushBulk", jobs=jobs) == {}
    with NodeClient(broker.faktory_port) as worker:
        started_s = time.monotonic()
        handled = worker.call(
            "work", wid="node-worker-01", queues=["batch"], concurrency=5, count=23
        )
        took_s = time.monotonic() - started_s
    print(f"faktory-worker ran 23 jobs in {took_s:.2f} s")
    assert handled == 23
    stats = admin.stats()
    assert (stats.totals["acked"], stats.totals["failed"]) == (20, 3)
    failed = admin.job("node-explode-0")
    assert failed.last_error is not None and failed.last_error.message == "exploded on purpose"
    assert (
        "at square" not in failed.last_error.backtrace and "explode" in failed.last_error.backtrace
    )
