"""Concurrency and rate limits against a real broker: a fetch held by a
limit is served when a slot frees, or when the rate allows one more start
(the broker's timer, not the client, wakes it). Bounds are honest upper
bounds for a loaded machine; each test prints what it measured."""

import time
from collections.abc import Callable

from leash.client import Client
from tests.integration.broker_proc import BrokerProcess

WAIT_MS = 10_000  # a fetch's long-poll: far longer than any bound here


def _client(broker: BrokerProcess) -> Client:
    return Client("127.0.0.1", broker.port, timeout_s=20.0)


def test_a_fetch_held_by_the_concurrency_limit_is_served_when_a_slot_frees(
    launch_broker: Callable[..., BrokerProcess],
) -> None:
    broker = launch_broker()
    with broker.admin() as admin:
        admin.set_queue_limits("one", concurrency=1)
    with _client(broker) as first, _client(broker) as second:
        first.push_many([{"type": "t", "queue": "one"}, {"type": "t", "queue": "one"}])
        held = first.fetch_many("one", 2)
        assert len(held) == 1
        assert second.fetch_many("one", 1) == []
        future_s = time.monotonic()
        first.ack(held[0])
        (served,) = second.fetch_many("one", 1, wait_ms=WAIT_MS)
        elapsed_s = time.monotonic() - future_s
    print(f"served {elapsed_s:.3f} s after the ack")
    assert served.id != held[0].id
    assert elapsed_s < 3.0


def test_a_fetch_that_finds_only_rate_limited_jobs_waits_for_the_next_start(
    launch_broker: Callable[..., BrokerProcess],
) -> None:
    broker = launch_broker()
    interval_ms = 1500
    with broker.admin() as admin:
        admin.set_queue_limits("paced", rate=2, rate_interval_ms=interval_ms)
    with _client(broker) as client:
        client.push_many([{"type": "t", "queue": "paced"} for _ in range(3)])
        started_s = time.monotonic()
        assert len(client.fetch_many("paced", 3)) == 2
        assert len(client.fetch_many("paced", 3, wait_ms=WAIT_MS)) == 1
        elapsed_s = time.monotonic() - started_s
        with broker.admin() as admin:
            (view,) = [q for q in admin.queues() if q.name == "paced"]
    print(f"the third job started {elapsed_s:.3f} s after the first two (window 1.5 s)")
    assert interval_ms / 1000 - 0.1 <= elapsed_s < interval_ms / 1000 + 3.0
    assert (view.rate_limit, view.rate_used, view.in_flight) == (2, 1, 3)
