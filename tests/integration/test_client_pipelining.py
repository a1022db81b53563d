"""Concurrent callers on one client, against a real broker: every thread (or
task) gets its own replies while their requests share the connection, a
long-poll fetch holds up nobody, and a producer killed in the middle of a
pipeline loses no job it was told about."""

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
from typing import Any

import pytest

from leash.client import AsyncClient, Client, NotFound
from tests.integration.broker_proc import BrokerProcess

pytestmark = pytest.mark.timeout(120)

THREADS = 16
CALLS = 60  # rounds of push + get_job per caller, with a fetch and ack every 5th
TASKS = 64


class SendCounter:
    """Wraps a socket: counts the writes (sendall) the client made."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.writes = 0

    def sendall(self, data: bytes) -> None:
        self.writes += 1
        self.real.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def one_caller(client: Client, me: int, wrong: list[str]) -> int:
    """Push to a queue of its own, read each job back, fetch and ack from
    that queue: a reply meant for another thread would show."""
    queue, requests = f"q{me}", 0
    for n in range(CALLS):
        job_id = client.push("t", {"caller": me, "n": n}, queue=queue)
        view = client.get_job(job_id)
        requests += 2
        if (view.queue, view.id) != (queue, job_id):
            wrong.append(f"caller {me} got {view.queue}/{view.id} for {queue}/{job_id}")
        if n % 5 == 4:
            jobs = client.fetch_many(queue, 5)
            requests += 1
            for job in jobs:
                if job.args["caller"] != me:
                    wrong.append(f"caller {me} fetched {job.args} from {queue}")
                client.ack(job)
                requests += 1
            if len(jobs) != 5:
                wrong.append(f"caller {me} fetched {len(jobs)} of 5")
    return requests


def test_threads_sharing_a_client_each_get_their_own_replies(broker: BrokerProcess) -> None:
    wrong: list[str] = []
    counts: list[int] = []
    with Client("127.0.0.1", broker.port) as client:
        pipe = client._pipe
        assert pipe is not None
        counter = SendCounter(pipe.sock)
        pipe.sock = counter  # type: ignore[assignment]
        polling = threading.Event()

        def long_poll() -> None:  # a fetch held at the broker the whole time
            while not polling.is_set():
                assert client.fetch("never", wait_ms=500) is None

        poller = threading.Thread(target=long_poll)
        poller.start()
        threads = [
            threading.Thread(target=lambda me=me: counts.append(one_caller(client, me, wrong)))
            for me in range(THREADS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        polling.set()
        poller.join(10)
        leftover = [client.fetch_many(f"q{me}", 100) for me in range(THREADS)]
    assert wrong == []
    assert len(counts) == THREADS, "a caller failed"
    assert all(jobs == [] for jobs in leftover), "a job was fetched twice or not acked"
    requests = sum(counts)
    print(f"{requests} requests from {THREADS} threads in {counter.writes} writes")
    assert counter.writes <= requests + 1_000  # the poller's fetches, at most one a write each


async def test_tasks_sharing_an_async_client_each_get_their_own_replies(
    broker: BrokerProcess,
) -> None:
    wrong: list[str] = []
    async with AsyncClient("127.0.0.1", broker.port) as client:
        writer = client._writer
        assert writer is not None
        real_write, writes = writer.write, [0]

        def counting_write(data: bytes) -> None:
            writes[0] += 1
            real_write(data)

        writer.write = counting_write  # type: ignore[method-assign]

        async def caller(me: int) -> int:
            queue, requests = f"t{me}", 0
            for n in range(CALLS // 3):
                job_id = await client.push("t", {"caller": me, "n": n}, queue=queue)
                view = await client.get_job(job_id)
                requests += 2
                if (view.queue, view.id) != (queue, job_id):
                    wrong.append(f"task {me} got {view.queue}/{view.id} for {queue}/{job_id}")
            jobs = await client.fetch_many(queue, 100)
            if sorted(job.args["n"] for job in jobs) != list(range(CALLS // 3)):
                wrong.append(f"task {me} fetched {[job.args for job in jobs]}")
            results = await client.ack_many(jobs)
            return requests + 2 + sum(result is not None for result in results)

        held = asyncio.create_task(client.fetch("never", wait_ms=2_000))
        counts = await asyncio.gather(*(caller(me) for me in range(TASKS)))
        assert await held is None
    assert wrong == []
    requests = sum(counts)
    print(f"{requests} requests from {TASKS} tasks in {writes[0]} writes")
    assert writes[0] < requests / 2, "the requests of a turn did not share writes"


PRODUCER = """
import sys
from leash.client import Client

client = Client("127.0.0.1", int(sys.argv[1]))
number = 0
while True:
    with client.pipeline() as pipeline:
        for _ in range(200):
            future = pipeline.push("t", {"n": number}, id=f"told-{number}")
            future.add_done_callback(lambda f: print(f.result(), flush=True))
            number += 1
"""


def test_a_producer_killed_mid_pipeline_loses_no_job_it_was_told_about(
    broker: BrokerProcess,
) -> None:
    seed = random.randrange(2**32)
    print(f"seed={seed}")
    told_before_kill = random.Random(seed).randrange(300, 3_000)
    producer = subprocess.Popen(
        [sys.executable, "-c", PRODUCER, str(broker.port)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    told: list[str] = []
    try:
        assert producer.stdout is not None
        for line in producer.stdout:
            told.append(line.strip())
            if len(told) >= told_before_kill:
                os.kill(producer.pid, signal.SIGKILL)  # in the middle of a pipeline
                break
        told += [line.strip() for line in producer.stdout if line.strip()]
    finally:
        if producer.poll() is None:
            os.kill(producer.pid, signal.SIGKILL)
        producer.wait(10)
        if producer.stdout is not None:
            producer.stdout.close()
    assert len(told) >= told_before_kill, f"seed={seed}: the producer stopped early"
    numbers = sorted(int(job_id.split("-")[1]) for job_id in told)
    with Client("127.0.0.1", broker.port) as client:
        for job_id in told:
            assert client.get_job(job_id).id == job_id  # NotFound: a told job was lost
        after = numbers[-1] + 1
        beyond = [n for n in range(after, after + 400) if _exists(client, f"told-{n}")]
    print(
        f"seed={seed}: {len(told)} jobs told, all there; of the pipeline in flight "
        f"{len(beyond)} were journalled without being told"
    )


def _exists(client: Client, job_id: str) -> bool:
    try:
        view = client.get_job(job_id)
    except NotFound:
        return False
    return view.finished_ms is None  # not in the history of finished jobs
