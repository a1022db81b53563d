"""Pushes sent again after a lost connection, against the fake broker.

The fake applies a push, then cuts the connection instead of answering it
(a broker that crashed after journalling it, or a network cut): the client
opens a new connection and sends the push again with the same job ids, so
the job lands once and the call returns as if nothing happened. A push
that never gets an answer raises once ``timeout_s`` has passed.
"""

import time
from collections.abc import Iterator

import pytest

from leash.client import AsyncClient, Client, ConnectionLost
from leash.protocol.messages import JobSpec, Push, PushMany
from tests.integration.fake_broker import FakeBroker


@pytest.fixture
def losing() -> Iterator[FakeBroker]:
    """A fake that loses the reply to the first push it applies."""
    fake = FakeBroker(lose_push_replies=1)
    fake.start()
    yield fake
    fake.stop()


def pushes(fake: FakeBroker) -> list[list[str | None]]:
    """The job ids of every push and push_many the fake received, in order."""
    sent: list[list[str | None]] = []
    for request in fake.seen.requests:
        if isinstance(request, Push):
            sent.append([request.job.id])
        elif isinstance(request, PushMany):
            sent.append([spec.id for spec in request.jobs])
    return sent


def test_a_push_whose_reply_is_lost_is_sent_again_with_its_id_and_lands_once(
    losing: FakeBroker,
) -> None:
    with Client(port=losing.port) as client:
        job_id = client.push("t", {"n": 1})
        assert client.get_job(job_id).id == job_id
    assert pushes(losing) == [[job_id], [job_id]]
    assert list(losing.jobs) == [job_id]
    assert len(losing.seen.hellos) == 2, "sent again on a new connection"


def test_push_many_gives_every_spec_an_id_so_sending_it_again_adds_nothing(
    losing: FakeBroker,
) -> None:
    with Client(port=losing.port) as client:
        results = client.push_many([{"type": "t"}, JobSpec(type="u")])  # the second has no id
    first, again = pushes(losing)
    assert first == again and None not in first
    assert [r.id for r in results] == first
    assert [r.created for r in results] == [False, False], "created by the lost first try"
    assert sorted(losing.jobs) == sorted(first)


async def test_the_async_client_sends_a_push_again_too(losing: FakeBroker) -> None:
    async with AsyncClient(port=losing.port) as client:
        ids = [await client.push("t", [n]) for n in range(3)]
    assert pushes(losing) == [[ids[0]], [ids[0]], [ids[1]], [ids[2]]]
    assert sorted(losing.jobs) == sorted(ids)


def test_a_push_is_sent_again_only_until_its_timeout() -> None:
    fake = FakeBroker(lose_push_replies=1_000_000)
    fake.start()
    try:
        with Client(port=fake.port, timeout_s=1.0) as client:
            started_s = time.monotonic()
            with pytest.raises(ConnectionLost):
                client.push("t", id="never-answered")
            elapsed_s = time.monotonic() - started_s
        tries = len(pushes(fake))
        print(f"{tries} tries in {elapsed_s:.2f} s")
        assert tries >= 2 and elapsed_s < 2.5
        assert list(fake.jobs) == ["never-answered"], "every try was the same job"
    finally:
        fake.stop()


def test_a_client_closed_by_its_user_does_not_push_again(losing: FakeBroker) -> None:
    client = Client(port=losing.port)
    client.close()
    with pytest.raises(ConnectionLost, match="closed"):
        client.push("t")
    assert pushes(losing) == []
