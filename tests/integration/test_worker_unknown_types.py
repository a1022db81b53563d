"""A job whose type no handler of the worker knows, against a real broker:
dead after its one fetch, with an error naming its type and the types the
worker knows (the default); or, with ``unknown="release"``, back in its
queue with no attempt counted, for a worker that knows it."""

import asyncio
import time

from leash.client import AsyncClient, Client, NotFound, Worker
from leash.protocol.messages import JobView
from tests.integration.broker_proc import BrokerProcess

WAIT_S = 20.0


async def wait_for_job(broker: BrokerProcess, job_id: str, done: "object") -> JobView:
    """The job's view once ``done(view)`` holds (polled on the admin socket)."""
    deadline = time.monotonic() + WAIT_S
    with broker.admin() as admin:
        while True:
            view = admin.job(job_id)
            if done(view):  # type: ignore[operator]
                return view
            assert time.monotonic() < deadline, view
            await asyncio.sleep(0.05)


async def acked(client: AsyncClient, job_id: str) -> bool:
    try:
        view = await client.get_job(job_id)
    except NotFound:
        return True
    return view.finished_ms is not None  # in the history of finished jobs


def worker_for(broker: BrokerProcess, unknown: str = "dead") -> Worker:
    worker = Worker(["mixed"], 2, port=broker.port, wait_ms=200, unknown=unknown)
    worker.register("resize", lambda *args: None)
    worker.register("send_email", lambda *args: None)
    return worker


async def test_a_job_of_a_type_no_handler_knows_is_dead_after_one_fetch(
    broker: BrokerProcess,
) -> None:
    worker = worker_for(broker)
    async with AsyncClient("127.0.0.1", broker.port) as client:
        job_id = await client.push("sned_email", ["ada@example.com"], queue="mixed")
        known_id = await client.push("send_email", ["ada@example.com"], queue="mixed")
    running = asyncio.create_task(worker.run_async())
    try:
        view = await wait_for_job(broker, job_id, lambda view: view.state == "dead")
        async with AsyncClient("127.0.0.1", broker.port) as client:
            async with asyncio.timeout(WAIT_S):  # the known one is worked as ever
                while not await acked(client, known_id):
                    await asyncio.sleep(0.05)
    finally:
        worker.stop()
        await running
    assert view.attempt == 1 and view.max_attempts == 25
    assert view.last_error is not None
    assert view.last_error.type == "leash.UnknownJobType"
    assert view.last_error.message == (
        "no handler for job type 'sned_email' on this worker (it has: 'resize', 'send_email')"
    )
    assert [attempt.outcome for attempt in view.attempts] == ["failed"]
    assert worker.unfinished == 0


async def test_with_release_the_job_goes_back_to_its_queue_without_an_attempt(
    broker: BrokerProcess,
) -> None:
    worker = worker_for(broker, unknown="release")
    async with AsyncClient("127.0.0.1", broker.port) as client:
        job_id = await client.push("thumbnail", [1], queue="mixed")
    running = asyncio.create_task(worker.run_async())
    try:
        view = await wait_for_job(broker, job_id, lambda view: len(view.attempts) >= 1)
    finally:
        worker.stop()
        await running
    assert [attempt.outcome for attempt in view.attempts][:1] == ["released"]
    assert view.attempt == 0 and view.last_error is None
    with Client("127.0.0.1", broker.port) as client:
        job = client.fetch("mixed", wait_ms=5_000)  # a worker that knows it takes it
        assert job is not None and job.id == job_id and job.attempt == 1
        client.ack(job)
