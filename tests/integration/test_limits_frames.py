"""Limits on what one connection may send, against the real broker (docs/protocol.md §4.7).

Sizes exactly at a limit are accepted and one byte more is refused before
the body is read. Time limits are given short values by flag so the tests
take seconds; the bounds are honest: never before the deadline, and within a
generous margin after it.
"""

import os
import socket
import time
from collections.abc import Callable

import msgspec
import pytest

from leash.client import AsyncClient, Client, TooManyConnections
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from leash.protocol.limits import FRAME_MAX_BYTES, HANDSHAKE_FRAME_MAX_BYTES
from tests.integration.broker_proc import BrokerProcess
from tests.integration.net_helpers import Raw, frame, rss_bytes, send_until_aborted

pytestmark = pytest.mark.timeout(90)
Launch = Callable[..., BrokerProcess]
SWEEP_SLACK_S = 1.5  # a deadline is acted on within one sweep (<= 0.5 s); the rest is load


def header(length: int) -> bytes:
    return length.to_bytes(4, "big")


def hello_of(size: int) -> bytes:
    """A valid hello frame whose body is exactly ``size`` bytes."""
    labels: list[str] = []
    for hostname_chars in range(256):
        labels = []
        while True:
            hello = M.Hello(1, 1, "w", hostname="h" * hostname_chars, labels=labels)
            body = M.encoder.encode(hello)
            if len(body) == size:
                return frame(hello)
            if len(body) > size or len(labels) == 32:
                break
            room = size - len(body)
            labels.append("x" * min(128, max(0, room - 3)))
    raise AssertionError(f"no hello of {size} bytes")


def push_of(size: int) -> bytes:
    """A valid push frame whose body is exactly ``size`` bytes."""
    for args_bytes in range(size - 64, size):
        push = M.Push(
            2, M.JobSpec(type="t", args=msgspec.Raw(msgspec.msgpack.encode(b"a" * args_bytes)))
        )
        if len(M.encoder.encode(push)) == size:
            return frame(push)
    raise AssertionError(f"no push of {size} bytes")


def test_a_hello_of_exactly_4096_bytes_is_accepted_and_4097_refused_unread(
    broker: BrokerProcess,
) -> None:
    with Raw(broker.port) as raw:
        raw.send(hello_of(HANDSHAKE_FRAME_MAX_BYTES))
        assert isinstance(raw.reply(), M.Welcome)
    with Raw(broker.port) as raw:
        raw.send(header(HANDSHAKE_FRAME_MAX_BYTES + 1))  # the length only: no body is sent
        error = raw.error()
        assert (error.code, error.rid) == (ErrorCode.TOO_LARGE, 0)
        assert "4097" in error.message
        assert raw.closed()


def test_a_frame_of_exactly_the_default_1_mib_is_accepted_and_one_more_refused_unread(
    broker: BrokerProcess,
) -> None:
    with Raw(broker.port) as raw:
        welcome = raw.hello()
        assert welcome.max_frame_bytes == FRAME_MAX_BYTES == 1024 * 1024
        raw.send(push_of(FRAME_MAX_BYTES))
        assert isinstance(raw.reply(), M.Pushed)
        raw.send(header(FRAME_MAX_BYTES + 1))
        error = raw.error()
        assert (error.code, error.rid) == (ErrorCode.TOO_LARGE, 0)
        assert raw.closed()


def test_a_length_of_2_to_the_32_minus_1_is_refused_at_once_and_allocates_nothing(
    broker: BrokerProcess,
) -> None:
    before = rss_bytes(broker.pid)
    for greeted in (False, True):
        with Raw(broker.port) as raw:
            if greeted:
                raw.hello()
            raw.send(b"\xff\xff\xff\xff")
            assert raw.error().code == ErrorCode.TOO_LARGE
            assert raw.closed()
    growth = rss_bytes(broker.pid) - before
    print(f"broker RSS growth after two 4 GiB headers: {growth / 1024:.0f} KiB")
    assert growth < 16 * 1024 * 1024  # a 4 GiB buffer was never made
    assert broker.alive()


def test_job_args_over_the_limit_are_refused_with_their_path_and_the_connection_kept(
    launch_broker: Launch,
) -> None:
    broker = launch_broker("--max-args-bytes", "1000")
    with Client("127.0.0.1", broker.port) as client:
        assert client.welcome.max_args_bytes == 1000
        exactly = b"x" * (1000 - 3)  # bin16 header: 3 bytes
        assert client.push("t", exactly)
        with pytest.raises(Exception) as refused:
            client.push("t", exactly + b"y")
        assert getattr(refused.value, "code", None) == ErrorCode.TOO_LARGE
        assert getattr(refused.value, "path", None) == "$.job.args"
        jobs = [{"type": "t"}] * 3 + [{"type": "t", "args": exactly + b"y"}]
        with pytest.raises(Exception) as refused_many:
            client.push_many(jobs)
        assert getattr(refused_many.value, "path", None) == "$.jobs[3].args"
        assert len(client.fetch_many("default", 10)) == 1  # nothing of the refused pushes


def test_requests_beyond_max_in_flight_are_not_read_until_replies_drain(
    launch_broker: Launch,
) -> None:
    def run(max_in_flight: int) -> tuple[float, list[M.Reply]]:
        broker = launch_broker("--max-in-flight", str(max_in_flight))
        with Raw(broker.port) as raw:
            assert raw.hello().max_in_flight == max_in_flight
            fetches = [M.Fetch(rid=10 + i, queues=["q"], wait_ms=1500) for i in range(4)]
            push = M.Push(rid=20, job=M.JobSpec(type="t", queue="q"))
            started_s = time.monotonic()
            raw.send(b"".join(frame(request) for request in [*fetches, push]))
            replies, pushed_s = [], 0.0
            while len(replies) < 5:
                replies.append(raw.reply())
                if isinstance(replies[-1], M.Pushed):
                    pushed_s = time.monotonic() - started_s
            return pushed_s, replies

    pushed_s, replies = run(4)  # four held fetches fill the window: the push waits
    print(f"max_in_flight 4: the push was answered after {pushed_s:.2f} s")
    assert pushed_s >= 1.4
    assert isinstance(replies[0], M.Jobs) and replies[0].jobs == [], "a fetch ran out first"
    # (a fetch still held when the push is read may get the job: on a loaded
    # machine the four timeouts can fire a loop turn apart)
    pushed_s, replies = run(5)  # room for the push: read at once, and a held fetch gets it
    assert pushed_s < 1.0
    assert sum(isinstance(r, M.Jobs) and len(r.jobs) == 1 for r in replies) == 1


def test_a_client_that_pipelines_and_never_reads_is_aborted_with_memory_bounded(
    launch_broker: Launch,
) -> None:
    broker = launch_broker("--write-stall-ms", "1000")
    with Raw(broker.port) as raw:
        raw.hello()
        big = msgspec.Raw(msgspec.msgpack.encode(os.urandom(256 * 1024)))
        raw.send(M.Push(rid=2, job=M.JobSpec(type="t", id="big", args=big)))
        assert isinstance(raw.reply(), M.Pushed)
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        before = rss_bytes(broker.pid)
        requests = b"".join(frame(M.GetJob(rid=3 + i, id="big")) for i in range(100))
        # each request is answered with 256 KiB that nobody reads
        aborted_s, peak = send_until_aborted(raw.sock, requests, broker.pid, 20)
    growth = peak - before
    print(
        f"never-reading client: aborted after {aborted_s:.2f} s; "
        f"broker RSS peak growth {growth / 2**20:.1f} MiB"
    )
    assert aborted_s > 0, "the connection was never closed"
    assert growth < 96 * 2**20
    assert broker.wait_for_log("slow_reader")
    with Client("127.0.0.1", broker.port) as client:
        assert client.get_job("big").id == "big"  # the broker is fine


def test_an_idle_connection_is_closed_at_the_idle_timeout_unless_a_request_is_in_flight(
    launch_broker: Launch,
) -> None:
    broker = launch_broker("--idle-timeout-ms", "400")
    with Raw(broker.port) as raw:
        started_s = time.monotonic()  # before the broker's last frame out
        assert raw.hello().idle_timeout_ms == 400
        error = raw.error()
        elapsed_s = time.monotonic() - started_s
        assert (error.code, error.rid) == (ErrorCode.IDLE_TIMEOUT, 0)
        assert raw.closed()
    print(f"idle connection closed after {elapsed_s:.2f} s (timeout 0.4 s)")
    assert 0.4 <= elapsed_s < 0.4 + SWEEP_SLACK_S
    with Raw(broker.port) as raw:  # a held fetch is a request in flight: not idle
        raw.hello()
        raw.send(M.Fetch(rid=5, queues=["q"], wait_ms=1200))
        reply = raw.reply()
        assert isinstance(reply, M.Jobs) and reply.rid == 5


def test_the_default_idle_timeout_is_three_heartbeats(launch_broker: Launch) -> None:
    broker = launch_broker("--heartbeat-ms", "200", "--process-ttl-ms", "2000")
    with Client("127.0.0.1", broker.port) as client:
        assert client.welcome.idle_timeout_ms == 600


def test_clients_that_sit_idle_past_the_idle_timeout_go_on_working(
    launch_broker: Launch,
) -> None:
    import asyncio

    broker = launch_broker("--idle-timeout-ms", "300")
    with Client("127.0.0.1", broker.port, worker_id="idle-one") as client:
        for _ in range(3):
            job_id = client.push("t")
            time.sleep(0.8)  # the broker's idle timeout is what is under test
            assert client.get_job(job_id).id == job_id

    async def idle_async() -> None:
        async with AsyncClient("127.0.0.1", broker.port, worker_id="idle-two") as client:
            for _ in range(3):
                job_id = await client.push("t")
                await asyncio.sleep(0.8)
                assert (await client.get_job(job_id)).id == job_id

    asyncio.run(idle_async())
    assert broker.wait_for_log("idle_timeout")  # the broker did close idle connections


def test_a_frame_that_does_not_complete_in_time_is_closed(launch_broker: Launch) -> None:
    broker = launch_broker("--frame-timeout-ms", "600")
    with Raw(broker.port) as raw:
        raw.hello()
        started_s = time.monotonic()  # before the frame begins
        raw.send(header(100) + b"\x82")  # begun, never finished
        error = raw.error()
        elapsed_s = time.monotonic() - started_s
        assert (error.code, error.rid) == (ErrorCode.FRAME_TIMEOUT, 0)
        assert raw.closed()
    assert 0.6 <= elapsed_s < 0.6 + SWEEP_SLACK_S


def test_connections_beyond_the_limits_get_too_many_connections(launch_broker: Launch) -> None:
    broker = launch_broker("--max-connections", "3", "--max-unauthenticated", "2")
    silent = [Raw(broker.port), Raw(broker.port)]  # two that never say hello
    try:
        with Raw(broker.port) as third:
            error = third.error()
            assert (error.code, error.rid) == (ErrorCode.TOO_MANY_CONNECTIONS, 0)
            assert "not finished their handshake" in error.message
            assert third.closed()
        silent[0].hello()  # one finishes its handshake: room for one more newcomer
        with Client("127.0.0.1", broker.port) as client:  # 3 connections: the limit
            assert client.push("t")
            silent[1].hello()
            with pytest.raises(TooManyConnections):
                Client("127.0.0.1", broker.port)
    finally:
        for raw in silent:
            raw.close()
    assert broker.alive()
