"""The real broker and the real clients, over 127.0.0.1.

Waiting here is real time (the broker is another process); every wait is a
long-poll or a bounded poll with a deadline, never a fixed sleep.
"""

import asyncio
import os
import socket
import threading
import time

import msgspec
import pytest

from leash.client import AsyncClient, Client
from leash.client._exceptions import BadRequest, NotFound, StaleLease
from leash.protocol import PROTOCOL_VERSION
from leash.protocol import messages as M
from leash.protocol.frames import FrameDecoder, encode_frame
from tests.integration.broker_proc import BrokerProcess
from tests.waiting import wait_until


def connect(broker: BrokerProcess, **options: object) -> Client:
    return Client("127.0.0.1", broker.port, **options)  # type: ignore[arg-type]


def test_a_pushed_job_is_fetched_with_its_args_and_acked_once(broker: BrokerProcess) -> None:
    with connect(broker) as producer, connect(broker) as worker:
        job_id = producer.push("greet", {"name": "Ada", "n": [1, 2.5, None]}, queue="mail")
        job = worker.fetch("mail")
        assert job is not None
        assert (job.id, job.type, job.queue, job.attempt) == (job_id, "greet", "mail", 1)
        assert job.args == {"name": "Ada", "n": [1, 2.5, None]}
        assert producer.get_job(job_id).state == "leased"
        worker.ack(job)
        with pytest.raises(NotFound):
            worker.ack(job)
        assert worker.fetch("mail") is None


def test_a_push_with_a_known_id_returns_the_existing_job(broker: BrokerProcess) -> None:
    with connect(broker) as client:
        first = client.push_many([{"type": "t", "id": "order-7"}])
        again = client.push_many([{"type": "t", "id": "order-7", "args": [2]}])
        assert first[0].created and not again[0].created
        assert client.fetch_many("default", 10) and client.fetch("default") is None


def test_an_expired_lease_cannot_ack_after_the_job_was_leased_again(
    broker: BrokerProcess,
) -> None:
    with connect(broker) as slow, connect(broker) as fast:
        slow.push("t", lease_ttl_ms=1000, retry_base_ms=1)
        old = slow.fetch("default")
        assert old is not None
        new = fast.fetch("default", wait_ms=5000)  # held until the lease expires
        assert new is not None and new.id == old.id and new.token != old.token
        assert new.attempt == 2
        with pytest.raises(StaleLease):
            slow.ack(old)
        fast.ack(new)
        assert fast.get_job(new.id).state == "succeeded"  # in the finished-job history


def test_failed_attempts_are_retried_then_end_in_the_dead_set(broker: BrokerProcess) -> None:
    with connect(broker) as client:
        job_id = client.push("boom", max_attempts=3, retry_base_ms=20)
        states = []
        for attempt in (1, 2, 3):
            job = client.fetch("default", wait_ms=5000)
            assert job is not None and job.attempt == attempt
            states.append(client.fail(job, ValueError(f"bad input {attempt}")).state)
        assert states == ["retrying", "retrying", "dead"]
        view = client.get_job(job_id)
        assert view.state == "dead" and view.attempt == 3
        assert view.last_error is not None
        assert view.last_error.type.endswith("ValueError")
        assert view.last_error.message == "bad input 3"
        assert client.fetch("default", wait_ms=200) is None


def test_a_scheduled_job_is_not_handed_out_before_its_time(broker: BrokerProcess) -> None:
    with connect(broker) as client:
        pushed_s = time.monotonic()
        client.push("later", delay_ms=400)
        assert client.fetch("default") is None
        job = client.fetch("default", wait_ms=5000)
        assert job is not None and job.type == "later"
        assert time.monotonic() - pushed_s >= 0.35


def test_the_most_urgent_priority_is_fetched_first_then_the_oldest(
    broker: BrokerProcess,
) -> None:
    with connect(broker) as client:
        for name, priority in [("low", 1), ("high-1", 9), ("mid", 5), ("high-2", 9)]:
            client.push(name, priority=priority)
        jobs = client.fetch_many("default", 10)
        assert [j.type for j in jobs] == ["high-1", "high-2", "mid", "low"]


def test_queues_are_taken_in_the_order_given_and_a_paused_queue_hands_out_nothing(
    broker: BrokerProcess,
) -> None:
    with connect(broker) as client, broker.admin() as admin:
        client.push("a", queue="a")
        client.push("b", queue="b", priority=9)
        admin.pause("a")
        assert [j.type for j in client.fetch_many(["a", "b"], 5)] == ["b"]
        admin.resume("a")
        assert [j.type for j in client.fetch_many(["a", "b"], 5)] == ["a"]


def test_a_long_poll_is_answered_when_a_job_arrives_while_later_requests_go_on(
    broker: BrokerProcess,
) -> None:
    async def scenario() -> None:
        async with await AsyncClient.connect("127.0.0.1", broker.port) as client:
            waiting = asyncio.ensure_future(client.fetch("late", wait_ms=10_000))
            await asyncio.sleep(0.05)
            assert not waiting.done()
            await client.push("other", queue="other")  # answered while the fetch is held
            started = time.monotonic()
            await client.push("job", queue="late")
            job = await asyncio.wait_for(waiting, 5)
            assert job is not None and job.type == "job"
            assert time.monotonic() - started < 2.0

    asyncio.run(scenario())


def test_a_bad_field_is_named_and_the_connection_stays_usable(broker: BrokerProcess) -> None:
    with connect(broker) as client:
        with pytest.raises(BadRequest) as caught:
            client.push("t", priority=42)
        assert caught.value.path == "$.job.priority"
        with pytest.raises(BadRequest):
            client.push("t", lease_ttl_ms=500)  # below 1 s: refused, never clamped
        assert client.push("t")


def test_a_frame_over_the_limit_gets_an_error_and_a_close(broker: BrokerProcess) -> None:
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as sock:
        sock.sendall((10**9).to_bytes(4, "big"))
        error = _read_reply(sock)
        assert isinstance(error, M.Error) and error.code == "too_large"
        assert sock.recv(1) == b""


def test_requests_before_hello_are_refused(broker: BrokerProcess) -> None:
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as sock:
        sock.sendall(encode_frame(M.encoder.encode(M.Fetch(rid=4, queues=["q"]))))
        error = _read_reply(sock)
        assert isinstance(error, M.Error)
        assert (error.rid, error.code) == (4, "handshake_required")
        assert sock.recv(1) == b""
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as sock:
        hello = M.Hello(rid=1, version=PROTOCOL_VERSION + 9, worker_id="w")
        sock.sendall(encode_frame(M.encoder.encode(hello)))
        error = _read_reply(sock)
        assert isinstance(error, M.Error) and error.code == "unsupported_version"


def test_random_bytes_on_many_connections_never_take_the_broker_down(
    broker: BrokerProcess,
) -> None:
    import random

    seed = random.randrange(2**32)
    print(f"fuzz seed {seed}")
    rng = random.Random(seed)
    for round_ in range(60):
        with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as sock:
            if round_ % 2:  # a valid handshake first, then garbage frames
                sock.sendall(encode_frame(M.encoder.encode(M.Hello(0, PROTOCOL_VERSION, "f"))))
                _read_reply(sock)
                for _ in range(5):
                    body = rng.randbytes(rng.randrange(1, 200))
                    sock.sendall(encode_frame(body))
                    reply = _read_reply(sock)
                    assert isinstance(reply, M.Error), reply
            else:
                sock.sendall(rng.randbytes(rng.randrange(1, 5000)))
    assert broker.alive()
    with connect(broker) as client:
        assert client.push("still-alive")


@pytest.mark.timeout(600)  # restarts under load: about 30 s here, more on a loaded machine
def test_acknowledged_pushes_survive_kill_9_with_fsync_always(tmp_path: os.PathLike[str]) -> None:
    data_dir = os.path.join(tmp_path, "data")
    broker = BrokerProcess(data_dir, ["--fsync", "always"]).start()
    acknowledged: list[str] = []
    stop = threading.Event()

    def produce() -> None:
        with connect(broker) as client:
            while not stop.is_set():
                try:
                    acknowledged.append(client.push("durable", [len(acknowledged)]))
                except Exception:
                    return

    producers = [threading.Thread(target=produce) for _ in range(4)]
    for thread in producers:
        thread.start()
    deadline = time.monotonic() + 10
    while len(acknowledged) < 500 and time.monotonic() < deadline:
        time.sleep(0.01)
    broker.kill()
    stop.set()
    for thread in producers:
        thread.join(10)
    count = len(acknowledged)
    assert count >= 500
    restarted = BrokerProcess(data_dir).start()
    try:
        with connect(restarted) as client:
            for job_id in acknowledged:
                assert client.get_job(job_id).state == "ready"
    finally:
        restarted.stop()
    print(f"{count} acknowledged pushes, all present after kill -9")


def test_sigterm_stops_cleanly_and_the_state_is_kept(tmp_path: os.PathLike[str]) -> None:
    data_dir = os.path.join(tmp_path, "data")
    broker = BrokerProcess(data_dir).start()
    with connect(broker) as client:
        kept = client.push("kept")
        gone = client.fetch("default")
        assert gone is not None
    assert broker.stop() == 0
    assert broker.wait_for_log("stopped (exit 0)")
    restarted = BrokerProcess(data_dir).start()
    try:
        with connect(restarted) as client:
            assert client.get_job(kept).state == "leased"  # leases are kept across restarts
            assert client.welcome.epoch == 2
    finally:
        restarted.stop()


def test_a_second_broker_on_the_same_data_dir_refuses_to_start(broker: BrokerProcess) -> None:
    second = BrokerProcess(broker.data_dir)
    with pytest.raises(RuntimeError, match="locked by pid"):
        second.start()
    assert broker.alive()


def _read_reply(sock: socket.socket) -> M.Reply:
    decoder = FrameDecoder(16 * 1024 * 1024)
    while True:
        body = decoder.next_frame()
        if body is not None:
            return msgspec.msgpack.decode(body, type=M.Reply)
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a reply")
        decoder.feed(chunk)


def test_a_job_not_started_within_its_ttl_is_removed_by_the_broker_and_counted(
    broker: BrokerProcess,
) -> None:
    with Client("127.0.0.1", broker.port) as client, broker.admin() as admin:
        lapsing = client.push("t", queue="expiring", ttl_ms=300)
        kept = client.push("t", queue="expiring", ttl_ms=600_000)
        assert client.get_job(lapsing).expires_ms is not None

        def gone() -> bool:
            try:
                view = client.get_job(lapsing)
            except NotFound:
                return True
            return view.state == "expired"  # in the history of finished jobs

        assert wait_until(gone, 5.0), "the broker's timer removes it (300 ms, 5 s bound)"
        job = client.fetch("expiring")
        assert job is not None and job.id == kept
        stats = admin.stats()
        assert stats.totals["ttl_expired"] == 1
        assert [(j.id, j.queue) for j in stats.expired_jobs] == [(lapsing, "expiring")]
