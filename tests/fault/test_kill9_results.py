"""kill -9 while workers ack with results: every result the broker
acknowledged is there after the restart, with the job's history entry.

A thread pushes jobs that keep their results and acks each with a value
derived from its id, as fast as the broker answers; the broker (fsync
always, small segments and snapshot thresholds, so snapshots carry
results too) is killed with SIGKILL at a random moment and started again,
``CYCLES`` times. After each restart every ack that was answered ``ok``
has its result, exactly, and ``fsck`` finds nothing.
``LEASH_KILL9_SEED`` repeats a run (the seed is printed)."""

import contextlib
import os
import random
import threading
import time

from leash.client import Client, LeashError
from tests.integration.broker_proc import BrokerProcess

CYCLES = 3
FLAGS = ["--fsync", "always", "--segment-bytes", "8192", "--snapshot-min-bytes", "16384"]
LOAD_S = (0.1, 0.5)  # how long the load runs before the kill
KEEP_MS = 600_000  # past the test


def _value(job_id: str) -> dict[str, object]:
    return {"id": job_id, "rows": len(job_id)}


def _load(
    port: int, acked: dict[str, object], stop: threading.Event, clients: list[Client]
) -> None:
    with contextlib.suppress(LeashError, OSError):
        client = Client("127.0.0.1", port, timeout_s=5.0)
        clients.append(client)
        with client:
            while not stop.is_set():
                client.push("t", queue="r", keep_result_ms=KEEP_MS)
                job = client.fetch("r")  # (maybe one pushed before a kill, not acked)
                assert job is not None and job.keep_result
                value = _value(job.id)
                client.ack(job, value)
                acked[job.id] = value  # answered ok: durable (fsync always)


def test_every_acknowledged_result_survives_kill_9(tmp_path: "os.PathLike[str]") -> None:
    seed = int(os.environ.get("LEASH_KILL9_SEED", random.randrange(1 << 30)))
    print(f"LEASH_KILL9_SEED={seed}")
    rng = random.Random(seed)
    data_dir = os.path.join(tmp_path, "data")
    acked: dict[str, object] = {}
    for _ in range(CYCLES):
        broker = BrokerProcess(data_dir, FLAGS).start()
        try:
            stop, clients = threading.Event(), []
            thread = threading.Thread(target=_load, args=(broker.port, acked, stop, clients))
            thread.start()
            time.sleep(rng.uniform(*LOAD_S))  # a random moment of the load: the kill's
            broker.kill()
            stop.set()
            for client in clients:
                client.close()
            thread.join(10)
            assert not thread.is_alive()
        finally:
            broker.kill()
    assert acked, "the load acked nothing"
    broker = BrokerProcess(data_dir, FLAGS).start()
    try:
        with Client("127.0.0.1", broker.port) as client:
            for job_id, value in acked.items():
                assert client.result(job_id) == value, job_id
                assert client.get_job(job_id).state == "succeeded"
        with broker.admin() as admin:
            assert admin.fsck().problems == []
    finally:
        broker.kill()
