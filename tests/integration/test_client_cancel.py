"""A long poll its caller gives up is ended at the broker (``cancel``), and
the jobs a reply that crossed it leased go back at once (``release``):
no job stays leased to a fetch nobody waits for. Against a real broker,
and against the fake one, which ends nothing on a cancel and decides
fetches late on request (as a reply that crossed the cancel)."""

import asyncio
import threading
from typing import Any

import pytest

from leash import AsyncClient, Client, Worker
from leash.client import RequestTimeout
from leash.protocol.messages import Cancel, Fetch
from tests.integration.broker_proc import BrokerProcess
from tests.integration.fake_broker import WAIT_S, FakeBroker
from tests.integration.test_worker_prefetch import requests_of
from tests.integration.worker_thread import running
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)
QUEUE = "cancelled"


def test_a_fetch_that_timed_out_is_cancelled_and_what_its_late_reply_leased_released(
    fake: FakeBroker,
) -> None:
    job_id = fake.add_job("late")
    fake.hold_fetches()
    with Client("127.0.0.1", fake.port, timeout_s=0.2) as client:
        with pytest.raises(RequestTimeout):
            client.fetch("default")
        fake.wait_for(lambda f: bool(requests_of(f, Cancel)), "the cancel")
        (fetch,), (cancel,) = requests_of(fake, Fetch), requests_of(fake, Cancel)
        assert cancel.of == fetch.rid
        fake.answer_fetches()  # the job is leased to the fetch given up
        fake.wait_for(lambda f: f.jobs[job_id].state == "leased", "the late lease")
        client.get_job(job_id)  # the next call reads the late reply
        fake.wait_for(lambda f: f.seen.released == [job_id], "the release")
        assert client.get_job(job_id).state == "ready"


async def test_an_async_fetch_given_up_is_cancelled_and_what_its_late_reply_leased_released(
    fake: FakeBroker,
) -> None:
    job_id = fake.add_job("late")
    fake.hold_fetches()
    async with AsyncClient("127.0.0.1", fake.port) as client:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.fetch("default", wait_ms=5_000), 0.2)
        await fake.wait_for_async(lambda f: bool(requests_of(f, Cancel)), "the cancel")
        (fetch,), (cancel,) = requests_of(fake, Fetch), requests_of(fake, Cancel)
        assert cancel.of == fetch.rid
        fake.answer_fetches()  # the reader takes the late reply with no call waiting
        await fake.wait_for_async(lambda f: f.seen.released == [job_id], "the release")
        assert (await client.get_job(job_id)).state == "ready"


async def test_an_async_fetch_cancelled_just_as_its_reply_came_releases_its_jobs(
    fake: FakeBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reply is matched to the fetch (its job leased to this process),
    and the task is cancelled before it resumes: the job goes back."""
    job_id = fake.add_job("ready")
    async with AsyncClient("127.0.0.1", fake.port) as client:
        fetching: list[asyncio.Task[Any]] = []
        take = client._core.take_releases

        def cancel_then_take() -> bytes:  # the reader, just after it matched a reply
            if fetching:
                fetching.pop().cancel()
            return take()

        monkeypatch.setattr(client._core, "take_releases", cancel_then_take)
        fetching.append(asyncio.create_task(client.fetch("default")))
        task = fetching[0]
        with pytest.raises(asyncio.CancelledError):
            await task
        await fake.wait_for_async(lambda f: f.seen.released == [job_id], "the release")
        assert (await client.get_job(job_id)).state == "ready"


async def test_a_cancelled_async_fetch_ends_at_the_broker_and_leases_nothing(
    broker: BrokerProcess,
) -> None:
    async with AsyncClient("127.0.0.1", broker.port) as client:
        task = asyncio.create_task(client.fetch(QUEUE, wait_ms=20_000))
        while not client._core.in_flight:  # sent: held at the broker
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        job_id = await client.push("after", queue=QUEUE)  # after the cancel, on its connection
        view = await client.get_job(job_id)
        assert view.state == "ready" and view.attempts == [], "leased to the fetch given up"
        job = await client.fetch(QUEUE)
        assert job is not None and job.id == job_id and job.attempt == 1


def test_a_stopping_worker_ends_its_held_fetch_at_once(broker: BrokerProcess) -> None:
    """A graceful stop with a job still running: the worker's held fetch
    ends at the broker when the stop begins, so a job pushed during the
    drain is never leased to the stopping worker (before, it was leased and
    released again)."""
    opened, started = threading.Event(), threading.Event()

    def slow() -> None:
        started.set()
        opened.wait(WAIT_S)

    worker = Worker([QUEUE], port=broker.port, concurrency=2, prefetch=0, wait_ms=20_000)
    worker.register("slow", slow)
    worker.register("late", lambda: None)
    with Client("127.0.0.1", broker.port) as client:
        slow_id = client.push("slow", queue=QUEUE)
        try:
            with running(worker) as thread:
                assert started.wait(WAIT_S)
                assert wait_until(lambda: worker._fetching), "the second slot's fetch"
                worker.stop()
                # Else the broker would end the fetch after a third of the process TTL.
                within_s = client.welcome.process_ttl_ms / 3 / 2 / 1000
                assert wait_until(lambda: worker._fetcher.done(), within_s), "the fetch went on"
                late_id = client.push("late", queue=QUEUE)
                assert thread.is_alive()  # still draining the slow job
                view = client.get_job(late_id)
                assert view.state == "ready" and view.attempts == []
                opened.set()
        finally:
            opened.set()
        assert client.get_job(slow_id).state == "succeeded"
        late = client.get_job(late_id)
        assert late.state == "ready" and late.attempts == []
