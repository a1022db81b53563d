"""Results against a real broker: the Worker sends its handler's return
value, ``result`` long-polls for it, a dead job raises its error, an
oversize result is refused clearly, a result expires when promised (an
honest bound), both clients."""

import asyncio
import time
from collections.abc import Callable

import pytest

from leash.client import AsyncClient, Client, JobFailed, ResultNotReady, Worker
from leash.client._exceptions import TooLarge
from tests.integration.broker_proc import BrokerProcess
from tests.integration.worker_thread import running

WAIT_MS = 15_000


def test_result_waits_at_the_broker_for_the_workers_return_value(
    launch_broker: Callable[..., BrokerProcess],
) -> None:
    broker = launch_broker()
    worker = Worker(
        queues=["q"],
        port=broker.port,
        handlers={"add": lambda a, b: {"sum": a + b}},
    )
    with Client("127.0.0.1", broker.port) as client:
        job_id = client.push("add", [2, 3], queue="q", keep_result_ms=60_000)
        with pytest.raises(ResultNotReady):  # nothing runs it yet: the wait ends
            client.result(job_id, wait_ms=100)
        with running(worker):
            started = time.monotonic()
            assert client.result(job_id, wait_ms=WAIT_MS) == {"sum": 5}
            assert time.monotonic() - started < WAIT_MS / 1000
        assert client.result(job_id) == {"sum": 5}  # read again, no wait
        assert client.get_job(job_id).state == "succeeded"


def test_a_dead_job_raises_its_error_and_an_oversize_result_kills_its_job_clearly(
    launch_broker: Callable[..., BrokerProcess],
) -> None:
    broker = launch_broker("--result-max-bytes", "64")

    def crash() -> None:
        raise ValueError("bad row 17")

    worker = Worker(
        queues=["q"],
        port=broker.port,
        handlers={"crash": crash, "big": lambda: "x" * 100},
    )
    with Client("127.0.0.1", broker.port) as client:
        crashed = client.push("crash", queue="q", keep_result_ms=60_000, max_attempts=1)
        big = client.push("big", queue="q", keep_result_ms=60_000, max_attempts=5)
        with running(worker):
            with pytest.raises(JobFailed) as died:
                client.result(crashed, wait_ms=WAIT_MS)
            with pytest.raises(JobFailed) as refused:
                client.result(big, wait_ms=WAIT_MS)
        assert died.value.state == "dead" and died.value.error is not None
        assert (died.value.error.type, died.value.error.message) == ("ValueError", "bad row 17")
        assert refused.value.error is not None and refused.value.error.type == "ResultTooLarge"
        assert "over the limit of 64" in refused.value.error.message
        assert client.get_job(big).attempt == 1, "dead at once: the same result again is no use"
        # By hand: refused with too_large, nothing changed: the job is still leased
        job_id = client.push("t", queue="by-hand", keep_result_ms=60_000)
        job = client.fetch("by-hand")
        assert job is not None and job.keep_result
        with pytest.raises(TooLarge, match="still leased"):
            client.ack(job, "y" * 100)
        assert client.get_job(job_id).state == "leased"
        client.ack(job, ["small"])
        assert client.result(job_id) == ["small"]


def test_the_async_client_reads_a_result_too(launch_broker: Callable[..., BrokerProcess]) -> None:
    broker = launch_broker()

    async def scenario() -> None:
        async with AsyncClient("127.0.0.1", broker.port) as client:
            job_id = await client.push("t", keep_result_ms=60_000)
            waiting = asyncio.ensure_future(client.result(job_id, wait_ms=WAIT_MS))
            job = await client.fetch("default")
            assert job is not None
            await client.ack(job, {"done": True})
            assert await waiting == {"done": True}

    asyncio.run(scenario())
