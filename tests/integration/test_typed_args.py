"""Args that keep their types, against a real broker: pushed by a Client
and an AsyncClient, fetched as themselves, handed to a Worker's handler as
themselves, shown as text by the admin views; a push with a type that
would not come back as itself is refused before it is sent."""

import asyncio
import datetime
import uuid
from decimal import Decimal
from typing import Any

import pytest

from leash.client import AsyncClient, Client, UnsupportedArgType, Worker
from leash.client._admin_format import plain
from tests.integration.broker_proc import BrokerProcess

WAIT_S = 20.0
TYPED = {
    "at": datetime.datetime(
        2026, 1, 1, 9, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
    ),
    "local": datetime.datetime(2026, 1, 1, 9, 30, 0, 250_000),
    "day": datetime.date(2026, 1, 1),
    "amount": Decimal("12.50"),
    "id": uuid.UUID("6f1c2d7e-0b9a-4c35-8e21-5d4f3a2b1c0d"),
    "blob": b"\x00\xff",
    "nested": [{"due": datetime.date(2027, 2, 3)}, (Decimal("-0.001"),)],
}
BACK = TYPED | {"nested": [{"due": datetime.date(2027, 2, 3)}, [Decimal("-0.001")]]}


def assert_typed(args: Any) -> None:
    assert args == BACK
    assert {key: type(value) for key, value in args.items()} == {
        key: type(value) for key, value in BACK.items()
    }
    assert args["at"].utcoffset() == datetime.timedelta(0)
    assert args["local"].tzinfo is None
    assert str(args["amount"]) == "12.50"


def test_a_client_pushes_typed_args_and_fetches_them_as_themselves(broker: BrokerProcess) -> None:
    with Client("127.0.0.1", broker.port) as client:
        job_id = client.push("invoice", TYPED, queue="typed")
        (job,) = client.fetch_many(["typed"], count=1, wait_ms=5_000)
        assert job.id == job_id
        assert_typed(job.args)
        client.ack(job)


async def test_an_async_client_pushes_typed_args_and_fetches_them_as_themselves(
    broker: BrokerProcess,
) -> None:
    async with AsyncClient("127.0.0.1", broker.port) as client:
        await client.push("invoice", TYPED, queue="typed")
        (job,) = await client.fetch_many(["typed"], count=1, wait_ms=5_000)
        assert_typed(job.args)
        await client.ack(job)


async def test_a_worker_handler_receives_the_typed_values(broker: BrokerProcess) -> None:
    received: list[dict[str, Any]] = []
    worker = Worker(queues=["typed"], port=broker.port, concurrency=1, wait_ms=200)

    @worker.handler("invoice")
    def invoice(**args: Any) -> None:
        received.append(args)

    async with AsyncClient("127.0.0.1", broker.port) as client:
        job_id = await client.push("invoice", TYPED, queue="typed")
        running = asyncio.create_task(worker.run_async())
        try:
            async with asyncio.timeout(WAIT_S):
                while not received:
                    await asyncio.sleep(0.02)
        finally:
            worker.stop()
            await running
    assert_typed(received[0])
    with broker.admin() as admin:
        assert admin.job(job_id).state == "succeeded"  # acked: in the finished-job history


def test_a_push_with_an_unsupported_type_is_refused_before_it_is_sent(
    broker: BrokerProcess,
) -> None:
    with Client("127.0.0.1", broker.port) as client:
        with pytest.raises(UnsupportedArgType, match=r'^args\[1\]\["when"\]: set is not'):
            client.push("invoice", [1, {"when": {2026}}], queue="refused")
        with pytest.raises(UnsupportedArgType, match=r'^args\["colours"\]: frozenset'):
            client.push_many([{"type": "invoice", "args": {"colours": frozenset()}}])
    with broker.admin() as admin:
        assert admin.stats().jobs.get("ready", 0) == 0


def test_the_admin_view_shows_typed_args_as_text(broker: BrokerProcess) -> None:
    with Client("127.0.0.1", broker.port) as client:
        job_id = client.push("invoice", TYPED, queue="typed")
    with broker.admin() as admin:
        shown = plain(admin.job(job_id))["args"]
    assert shown == {
        "at": "2026-01-01T07:30:00Z",
        "local": "2026-01-01T09:30:00.250000",
        "day": "2026-01-01",
        "amount": "12.50",
        "id": "6f1c2d7e-0b9a-4c35-8e21-5d4f3a2b1c0d",
        "blob": "AP8=",
        "nested": [{"due": "2027-02-03"}, ["-0.001"]],
    }
