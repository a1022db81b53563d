"""Both clients and the Worker over real sockets, against the in-test fake broker."""

import asyncio
import contextlib
import itertools
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import msgspec
import pytest

from leash.client import (
    AsyncClient,
    BadRequest,
    Client,
    ConnectFailed,
    ConnectionLost,
    NotFound,
    StaleLease,
    TooLarge,
    UnsupportedVersion,
    Worker,
    job_spec,
    process_worker_id,
)
from leash.client.cli import main as leash
from leash.protocol.errors import ErrorCode
from leash.protocol.messages import Cancel, Error, Fetch, Push
from tests.integration.fake_broker import WAIT_S, FakeBroker
from tests.integration.test_worker_prefetch import requests_of

pytestmark = pytest.mark.timeout(60)


class Gate:
    """A handler that says it started, then waits until the test opens the gate."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.opened = threading.Event()

    def handler(self) -> None:
        self.started.set()
        self.opened.wait(WAIT_S)

    async def wait_started(self) -> None:
        assert await asyncio.to_thread(self.started.wait, WAIT_S), "the handler never started"


@pytest.fixture
def gate() -> Iterator[Gate]:
    """Always opened at the end, so no handler thread outlives its test."""
    gate = Gate()
    yield gate
    gate.opened.set()


# --- the blocking client ---------------------------------------------------


def test_the_handshake_presents_this_process(fake: FakeBroker) -> None:
    with Client(port=fake.port, labels=["gpu"], concurrency=3) as client:
        assert (client.welcome.server, client.welcome.epoch) == ("fake/0", 7)
    [hello] = fake.seen.hellos
    assert hello.worker_id == process_worker_id() == client.worker_id
    assert (hello.pid, hello.labels, hello.concurrency) == (os.getpid(), ["gpu"], 3)
    assert hello.hostname == socket.gethostname()
    assert hello.client.startswith("leash-py/")


def test_push_fetch_ack_round_trip(fake: FakeBroker) -> None:
    with Client.from_url(f"leash://127.0.0.1:{fake.port}") as client:
        job_id = client.push("send", ["ada", 7], queue="mail", priority=8)
        job = client.fetch(["other", "mail"])
        assert job is not None
        assert (job.id, job.type, job.queue, job.args) == (job_id, "send", "mail", ["ada", 7])
        client.ack(job)
        assert client.fetch("mail") is None
    [push, *_] = fake.seen.requests
    assert isinstance(push, Push) and push.job.priority == 8
    assert fake.seen.acked == [job_id]


def test_lease_errors_are_raised_as_their_exceptions(fake: FakeBroker) -> None:
    with Client(port=fake.port) as client:
        client.push("t")
        job = client.fetch("default")
        assert job is not None
        with pytest.raises(StaleLease):
            client.ack((job.id, job.token + 1))
        with pytest.raises(NotFound):
            client.ack(("no-such-job", 1))
        assert client.extend(job, 5_000) == job.deadline_ms == 1_005_000
        assert client.get_job(job.id).state == "leased"
        client.release(job)
        assert fake.seen.released == [job.id]


def test_fail_sends_the_exception(fake: FakeBroker) -> None:
    with Client(port=fake.port) as client:
        client.push("t")
        job = client.fetch("default")
        assert job is not None
        try:
            raise RuntimeError("disk full")
        except RuntimeError as exc:
            result = client.fail(job, exc)
    assert (result.state, result.retry_at_ms) == ("retrying", fake.jobs[job.id].run_at_ms)
    [failed] = fake.seen.failed
    assert (failed.error.type, failed.error.message) == ("RuntimeError", "disk full")
    assert "test_fail_sends_the_exception" in failed.error.backtrace


def test_push_many_takes_specs_and_dicts(fake: FakeBroker) -> None:
    with Client(port=fake.port) as client:
        spec = job_spec("a", [1], id="fixed-id")
        results = client.push_many([spec, {"type": "b", "args": {"k": 1}}, spec])
        assert client.push_many([]) == []
    assert [(r.id, r.created) for r in results][::2] == [("fixed-id", True), ("fixed-id", False)]
    assert results[1].created


def test_a_long_poll_fetch_returns_when_a_job_arrives(fake: FakeBroker) -> None:
    with Client(port=fake.port, timeout_s=0.5) as client:
        fetched: list[object] = []
        waiter = threading.Thread(target=lambda: fetched.append(client.fetch("q", wait_ms=15_000)))
        waiter.start()  # the socket timeout is 0.5 s; the wait is longer and must not trip it
        fake.wait_for(lambda f: any(isinstance(r, Fetch) for r in f.seen.requests), "the fetch")
        fake.add_job("late", queue="q")
        waiter.join(WAIT_S)
    [job] = fetched
    assert getattr(job, "type", None) == "late"


def test_a_refused_handshake_raises_its_error() -> None:
    refusal = Error(rid=1, code=ErrorCode.UNSUPPORTED_VERSION, message="v2 only")
    fake = FakeBroker(hello_reply=refusal)
    fake.start()
    try:
        with pytest.raises(UnsupportedVersion, match="v2 only"):
            Client(port=fake.port)
    finally:
        fake.stop()


def test_nothing_listening_is_connect_failed() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ConnectFailed, match=str(port)):
        Client(port=port)


def test_a_connection_dropped_during_a_call_is_connection_lost(fake: FakeBroker) -> None:
    client = Client(port=fake.port)
    outcome: list[BaseException] = []

    def fetch() -> None:
        try:
            client.fetch("q", wait_ms=5_000)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=fetch)
    thread.start()
    fake.wait_for(lambda f: f.seen.fetches() == 1, "the fetch")
    fake.drop_connections()
    thread.join(WAIT_S)
    assert len(outcome) == 1 and isinstance(outcome[0], ConnectionLost), outcome
    assert not client.closed  # the next call opens a new connection
    job_id = client.push("t")
    assert client.get_job(job_id).id == job_id
    assert len(fake.seen.hellos) == 2 and fake.seen.fetches() == 1, "the fetch is not sent again"
    client.close()
    assert client.closed
    with pytest.raises(ConnectionLost, match="closed"):
        client.push("t")  # closed by its user: for good


class InterruptedSend:
    """A socket whose next send is interrupted (Ctrl-C) after half its bytes."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real
        self.interrupted = False

    def sendall(self, data: bytes) -> None:
        if self.interrupted:
            self.real.sendall(data)
            return
        self.interrupted = True
        self.real.sendall(data[: len(data) // 2])
        raise KeyboardInterrupt

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)


def test_a_send_interrupted_midway_ends_the_connection_and_the_next_call_opens_a_new_one(
    fake: FakeBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Half a frame may have gone: the connection is not used again (before,
    the writer's role stayed taken and every later request sat unsent)."""
    with Client(port=fake.port, timeout_s=2.0) as client:
        pipe = client._pipe
        assert pipe is not None
        monkeypatch.setattr(pipe, "sock", InterruptedSend(pipe.sock))
        with pytest.raises(KeyboardInterrupt):
            client.push("cut")
        assert isinstance(pipe.broken, ConnectionLost)
        job_id = client.push("whole")
        assert client.get_job(job_id).type == "whole"
        assert len(fake.seen.hellos) == 2


def test_a_connection_the_broker_closed_while_idle_is_reopened_by_the_next_call(
    fake: FakeBroker,
) -> None:
    with Client(port=fake.port) as client:
        fake.drop_connections()
        pipe = client._pipe  # the test waits until the client's socket has seen the close
        assert pipe is not None
        sock = pipe.sock
        assert select.select([sock], [], [], WAIT_S)[0], "the close never reached the client"
        assert not client.closed  # it will reconnect: nothing was in flight
        job_id = client.push("t")
        assert client.get_job(job_id).id == job_id
    assert len(fake.seen.hellos) == 2  # the same worker id, on a new connection
    assert fake.seen.hellos[0].worker_id == fake.seen.hellos[1].worker_id


def test_a_request_over_the_frame_limit_is_refused_and_the_connection_kept() -> None:
    fake = FakeBroker(max_frame_bytes=1_000)
    fake.start()
    try:
        with Client(port=fake.port) as client:
            with pytest.raises(TooLarge):
                client.push("t", "x" * 2_000)
            client.push("t", "small")
    finally:
        fake.stop()


# --- the async client ------------------------------------------------------


async def test_replies_out_of_order_reach_their_callers(fake: FakeBroker) -> None:
    async with AsyncClient(port=fake.port) as client:
        held = asyncio.create_task(client.fetch("q", wait_ms=15_000))
        await fake.wait_for_async(lambda f: len(f.seen.requests) == 1, "the fetch")
        job_id = await client.push("t", {"n": 1}, queue="q")  # answered before the fetch
        job = await held
    assert job is not None and (job.id, job.args) == (job_id, {"n": 1})


async def test_many_calls_in_flight_on_one_connection(fake: FakeBroker) -> None:
    async with AsyncClient(port=fake.port) as client:
        ids = await asyncio.gather(*(client.push("t", [i]) for i in range(50)))
        jobs = await client.fetch_many("default", 50)
        results = await client.ack_many(jobs)
    assert sorted(job.id for job in jobs) == sorted(ids)
    assert results == [None] * 50


async def test_an_async_connection_closed_while_idle_is_reopened_by_the_next_call(
    fake: FakeBroker,
) -> None:
    async with AsyncClient(port=fake.port) as client:
        fake.drop_connections()
        reader = client._reader_task  # the test waits until the client has seen the close
        assert reader is not None
        await asyncio.wait_for(reader, WAIT_S)
        assert not client.closed  # it will reconnect: nothing was in flight
        job_id = await client.push("t")
        assert (await client.get_job(job_id)).id == job_id
    assert len(fake.seen.hellos) == 2
    assert fake.seen.hellos[0].worker_id == fake.seen.hellos[1].worker_id


async def test_a_dropped_connection_fails_every_call_in_flight(fake: FakeBroker) -> None:
    client = await AsyncClient.connect(port=fake.port)
    calls = [asyncio.create_task(client.fetch("q", wait_ms=15_000)) for _ in range(3)]
    await fake.wait_for_async(lambda f: len(f.seen.requests) == 3, "three fetches")
    fake.drop_connections()
    for call in calls:
        with pytest.raises(ConnectionLost):
            await call
    assert not client.closed  # the next call opens a new connection
    assert await client.fetch("q") is None
    assert len(fake.seen.hellos) == 2 and fake.seen.fetches() == 4
    await client.close()
    assert client.closed


def pushed_types(fake: FakeBroker) -> list[str]:
    return [request.job.type for request in fake.seen.requests if isinstance(request, Push)]


def test_an_async_client_used_from_another_event_loop_says_so_at_once(fake: FakeBroker) -> None:
    """Its connection belongs to a loop running in another thread: a call
    from a second loop is refused at once, naming the cause, where it
    waited out its time for a reply only the first loop could read."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def on_its_loop(work: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(work, loop).result(WAIT_S)

    try:
        client = on_its_loop(AsyncClient.connect(port=fake.port, timeout_s=WAIT_S))
        with pytest.raises(RuntimeError, match="belongs to another event loop"):
            asyncio.run(asyncio.wait_for(client.push("elsewhere"), WAIT_S / 2))
        on_its_loop(client.push("at home"))
        assert pushed_types(fake) == ["at home"]
        on_its_loop(client.close())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT_S)
        loop.close()


def test_an_async_client_whose_loop_ended_says_so_or_opens_anew() -> None:
    """Still connected through a loop that has ended: refused, naming it.
    A connection that ended with its loop: the next call opens one in
    the loop that makes it."""
    ended = asyncio.new_event_loop()
    ended.close()
    client = AsyncClient(port=1)
    client._loop, client._writer = ended, object()  # type: ignore[assignment]
    with pytest.raises(RuntimeError, match="belongs to an event loop that has ended"):
        client._check_loop()


def test_a_connection_lost_in_an_ended_loop_is_opened_again_in_the_next(fake: FakeBroker) -> None:
    kept: list[AsyncClient] = []

    async def first() -> None:
        client = await AsyncClient.connect(port=fake.port, timeout_s=WAIT_S)
        kept.append(client)
        reading = client._reader_task
        assert reading is not None
        fake.drop_connections()
        await asyncio.wait_for(reading, WAIT_S)  # the reader saw the end

    async def second() -> str:
        job_id = await kept[0].push("next loop")
        await kept[0].close()
        return job_id

    asyncio.run(first())
    job_id = asyncio.run(second())
    assert fake.jobs[job_id].type == "next loop" and len(fake.seen.hellos) == 2


async def test_a_refused_async_handshake_raises_its_error() -> None:
    refusal = Error(rid=1, code=ErrorCode.UNSUPPORTED_VERSION, message="v2 only")
    fake = FakeBroker(hello_reply=refusal)
    fake.start()
    try:
        with pytest.raises(UnsupportedVersion):
            await AsyncClient.from_url(f"leash://127.0.0.1:{fake.port}")
    finally:
        fake.stop()


def test_beat_answers_the_state_the_broker_set(fake: FakeBroker) -> None:
    with Client(port=fake.port) as worker:
        assert worker.beat() == "ok"
        fake.set_process_state(worker.worker_id, "quiet")
        assert worker.beat() == "quiet"


# --- the worker ------------------------------------------------------------


def make_worker(fake: FakeBroker, **options: object) -> Worker:
    return Worker(port=fake.port, concurrency=2, wait_ms=100, grace_s=10.0, **options)  # type: ignore[arg-type]


async def test_worker_acks_what_returns_and_fails_what_raises(fake: FakeBroker) -> None:
    worker = make_worker(fake)
    seen: list[tuple[int, int]] = []

    @worker.handler("add")
    def add(a: int, b: int) -> None:
        seen.append((a, b))

    @worker.handler("explode")
    def explode() -> None:
        raise ValueError("kaboom")

    ok_id = fake.add_job("add", msgspec.msgpack.encode([2, 3]))
    bad_id = fake.add_job("explode")
    unknown_id = fake.add_job("no_such_type")
    running = asyncio.create_task(worker.run_async())
    await fake.wait_for_async(lambda f: len(f.seen.acked) + len(f.seen.failed) == 3, "3 outcomes")
    worker.stop()
    await running
    assert seen == [(2, 3)]
    assert fake.seen.acked == [ok_id]
    failures = {fail.id: fail.error for fail in fake.seen.failed}
    assert (failures[bad_id].type, failures[bad_id].message) == ("ValueError", "kaboom")
    assert "in explode" in failures[bad_id].backtrace
    assert failures[unknown_id].type == "leash.UnknownJobType"
    assert "'no_such_type'" in failures[unknown_id].message


async def test_worker_stop_now_releases_running_jobs(fake: FakeBroker, gate: Gate) -> None:
    worker = make_worker(fake)
    worker.register("slow", gate.handler)
    job_id = fake.add_job("slow")
    running = asyncio.create_task(worker.run_async())
    await gate.wait_started()
    worker.stop(now=True)
    await running
    assert fake.seen.released_first(job_id)
    assert fake.seen.acked == []
    assert worker.unfinished == 1


async def test_worker_graceful_stop_lets_running_jobs_finish(fake: FakeBroker, gate: Gate) -> None:
    worker = make_worker(fake)
    worker.register("slow", gate.handler)
    job_id = fake.add_job("slow")
    running = asyncio.create_task(worker.run_async())
    await gate.wait_started()
    worker.stop()
    gate.opened.set()
    await running
    assert (fake.seen.acked, fake.seen.released, worker.unfinished) == ([job_id], [], 0)


async def test_worker_releases_what_the_grace_did_not_cover(fake: FakeBroker, gate: Gate) -> None:
    worker = Worker(port=fake.port, concurrency=1, wait_ms=100, grace_s=0.05)
    worker.register("slow", gate.handler)
    job_id = fake.add_job("slow")
    running = asyncio.create_task(worker.run_async())
    await gate.wait_started()
    worker.stop()
    await running
    assert fake.seen.released_first(job_id)


async def test_worker_goes_on_after_a_lost_lease(
    fake: FakeBroker, caplog: pytest.LogCaptureFixture
) -> None:
    worker = make_worker(fake)
    done = []

    @worker.handler("lost")
    def lost() -> None:
        fake.steal_lease(lost_id)  # someone else holds the job now

    worker.register("fine", lambda: done.append(1))
    lost_id = fake.add_job("lost")
    fake.add_job("fine")
    running = asyncio.create_task(worker.run_async())
    with caplog.at_level(logging.WARNING, logger="leash.worker"):
        await fake.wait_for_async(lambda f: len(f.seen.acked) == 1, "the other job's ack")
        worker.stop()
        await running
    assert done == [1]
    assert f"lease lost for job {lost_id} (type lost): the broker declared this worker dead" in (
        caplog.text
    )
    assert "another worker may run it (ack refused: stale_lease)" in caplog.text


async def test_worker_reconnects_and_settles_on_the_new_connection(
    fake: FakeBroker, gate: Gate
) -> None:
    worker = make_worker(fake)
    worker.register("slow", gate.handler)
    job_id = fake.add_job("slow")
    running = asyncio.create_task(worker.run_async())
    await gate.wait_started()
    fake.drop_connections()
    await fake.wait_for_async(lambda f: len(f.seen.hellos) == 2, "a second hello")
    gate.opened.set()
    await fake.wait_for_async(lambda f: f.seen.acked == [job_id], "the ack")
    worker.stop()
    await running
    assert {hello.worker_id for hello in fake.seen.hellos} == {process_worker_id()}


# --- the worker's liveness: heartbeats, process states, lease extension -----


@pytest.fixture
def beating() -> Iterator[FakeBroker]:
    """A fake that asks for a beat every 50 ms; its beats serve as the tests' clock."""
    broker = FakeBroker(heartbeat_ms=50)
    broker.start()
    yield broker
    broker.stop()


async def wait_beats(fake: FakeBroker, count: int) -> None:
    """Wait until ``count`` more beats have arrived: time passing, as the worker sees it."""
    target = len(fake.seen.beats) + count
    await fake.wait_for_async(lambda f: len(f.seen.beats) >= target, f"{count} more beats")


async def test_the_worker_beats_as_often_as_the_welcome_asks(beating: FakeBroker) -> None:
    worker = make_worker(beating)
    worker.register("t", print)
    running = asyncio.create_task(worker.run_async())
    await wait_beats(beating, 5)
    worker.stop()
    await running
    times = [at for at, _ in beating.seen.beats]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= 0.03, gaps  # not more often than asked (less transit jitter)
    assert sum(gaps) / len(gaps) < 1.0, gaps  # the welcome's 50 ms, not the 5 s fallback


async def test_beats_go_on_while_a_handler_blocks(beating: FakeBroker, gate: Gate) -> None:
    worker = Worker(port=beating.port, concurrency=1, wait_ms=100, grace_s=10.0)
    worker.register("slow", gate.handler)
    job_id = beating.add_job("slow")
    running = asyncio.create_task(worker.run_async())
    await gate.wait_started()
    await wait_beats(beating, 4)  # the only handler thread is stuck; the loop is not
    gate.opened.set()
    await beating.wait_for_async(lambda f: f.seen.acked == [job_id], "the ack")
    worker.stop()
    await running


async def test_beats_resume_after_a_reconnect(beating: FakeBroker) -> None:
    worker = make_worker(beating)
    worker.register("t", print)
    running = asyncio.create_task(worker.run_async())
    await wait_beats(beating, 2)
    beating.drop_connections()
    await beating.wait_for_async(lambda f: len(f.seen.hellos) == 2, "a second hello")
    await wait_beats(beating, 3)
    worker.stop()
    await running


async def test_quiet_stops_fetching_and_ok_resumes_it(beating: FakeBroker) -> None:
    worker = make_worker(beating)  # wait_ms=100: a held fetch ends within two beats
    worker.register("t", print)
    running = asyncio.create_task(worker.run_async())
    await wait_beats(beating, 1)
    beating.set_process_state(process_worker_id(), "quiet")
    await beating.wait_for_async(lambda f: f.beats_after("quiet") >= 4, "quiet heard")
    assert worker.process_state == "quiet"
    fetches = beating.seen.fetches()
    job_id = beating.add_job("t")
    await wait_beats(beating, 4)
    assert beating.seen.fetches() == fetches
    assert beating.jobs[job_id].state == "ready"
    beating.set_process_state(process_worker_id(), "ok")
    await beating.wait_for_async(lambda f: f.seen.acked == [job_id], "the ack after ok")
    worker.stop()
    await running


async def test_quiet_ends_the_held_fetch_at_the_broker(beating: FakeBroker) -> None:
    """A quiet worker takes no job: its long poll is ended at once (a
    cancel of its rid), not left held at the broker as an idle consumer."""
    worker = make_worker(beating).with_options(wait_ms=20_000)
    worker.register("t", print)
    running = asyncio.create_task(worker.run_async())
    await beating.wait_for_async(lambda f: f.seen.fetches() == 1, "the held fetch")
    beating.set_process_state(process_worker_id(), "quiet")
    await beating.wait_for_async(lambda f: bool(requests_of(f, Cancel)), "the cancel")
    (cancel,) = requests_of(beating, Cancel)
    assert cancel.of == requests_of(beating, Fetch)[0].rid
    assert worker.process_state == "quiet"
    worker.stop()
    await running


async def test_terminate_stops_the_worker_after_its_jobs_settle(
    beating: FakeBroker, gate: Gate
) -> None:
    worker = make_worker(beating)
    worker.register("slow", gate.handler)
    job_id = beating.add_job("slow")
    running = asyncio.create_task(worker.run_async())
    await gate.wait_started()
    beating.set_process_state(process_worker_id(), "terminate")
    await beating.wait_for_async(lambda f: f.beats_after("terminate") >= 2, "beats while draining")
    assert not running.done()  # the running job has its grace
    gate.opened.set()
    async with asyncio.timeout(WAIT_S):
        await running  # no stop() needed
    assert (beating.seen.acked, beating.seen.released, worker.unfinished) == ([job_id], [], 0)


async def test_a_long_handler_has_its_lease_extended_until_it_returns(
    beating: FakeBroker, gate: Gate, caplog: pytest.LogCaptureFixture
) -> None:
    worker = make_worker(beating)
    worker.register("slow", gate.handler)
    job_id = beating.add_job("slow", lease_ttl_ms=100)  # extended every 50 ms
    running = asyncio.create_task(worker.run_async())
    with caplog.at_level(logging.WARNING, logger="leash.worker"):
        await gate.wait_started()
        await beating.wait_for_async(lambda f: len(f.seen.extends(job_id)) >= 3, "three extends")
        gate.opened.set()
        await beating.wait_for_async(lambda f: f.seen.acked == [job_id], "the ack")
        extends = beating.seen.extends(job_id)
        await wait_beats(beating, 4)  # 200 ms: four more extends, were it still extending
        worker.stop()
        await running
    assert beating.seen.extends(job_id) == extends  # none after the ack
    assert all(extend.lease_ttl_ms is None for extend in extends)  # the job's own ttl
    assert "lease lost" not in caplog.text


async def test_without_auto_extend_no_lease_is_extended(beating: FakeBroker, gate: Gate) -> None:
    worker = make_worker(beating, auto_extend=False)
    worker.register("slow", gate.handler)
    job_id = beating.add_job("slow", lease_ttl_ms=100)
    running = asyncio.create_task(worker.run_async())
    await gate.wait_started()
    await wait_beats(beating, 4)  # past the whole ttl
    gate.opened.set()
    await beating.wait_for_async(lambda f: f.seen.acked == [job_id], "the ack")
    worker.stop()
    await running
    assert beating.seen.extends(job_id) == []


async def test_a_lease_lost_while_extending_is_logged_and_the_worker_goes_on(
    beating: FakeBroker, gate: Gate, caplog: pytest.LogCaptureFixture
) -> None:
    worker = make_worker(beating)

    @worker.handler("stolen")
    def stolen() -> None:
        beating.steal_lease(stolen_id)  # the broker gave the job to someone else
        gate.handler()

    worker.register("fine", print)
    stolen_id = beating.add_job("stolen", lease_ttl_ms=100)
    running = asyncio.create_task(worker.run_async())
    with caplog.at_level(logging.WARNING, logger="leash.worker"):
        await gate.wait_started()
        await beating.wait_for_async(lambda f: len(f.seen.extends(stolen_id)) == 1, "an extend")
        await wait_beats(beating, 4)
        fine_id = beating.add_job("fine")
        await beating.wait_for_async(lambda f: f.seen.acked == [fine_id], "the next job's ack")
        gate.opened.set()
        worker.stop()
        await running
    assert len(beating.seen.extends(stolen_id)) == 1  # the refusal stopped the extending
    lost = f"lease lost for job {stolen_id} (type stolen)"
    assert f"{lost}: the broker declared this worker dead or the lease expired" in caplog.text
    assert "no longer extending it (stale_lease)" in caplog.text
    assert "another worker may run it (ack refused: stale_lease)" in caplog.text


# --- the command line ------------------------------------------------------


def test_leash_push_prints_the_job_id(fake: FakeBroker, capsys: pytest.CaptureFixture[str]) -> None:
    code = leash(["push", "greet", '["ada"]', "--port", str(fake.port), "--queue", "q"])
    assert code == 0
    job_id = capsys.readouterr().out.strip()
    assert fake.jobs[job_id].queue == "q"
    assert msgspec.msgpack.decode(fake.jobs[job_id].args) == ["ada"]


def test_leash_push_to_nothing_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert leash(["push", "t", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("leash: error: cannot connect") and err.count("\n") == 1


def test_leash_worker_runs_a_module_until_sigterm(fake: FakeBroker, tmp_path: Path) -> None:
    (tmp_path / "tasks.py").write_text(
        "from leash.client import handler\n\n"
        "@handler('greet')\n"
        "def greet(name):\n"
        "    print('hello', name, flush=True)\n"
    )
    job_id = fake.add_job("greet", msgspec.msgpack.encode(["ada"]))
    with worker_process(fake, tmp_path, "tasks") as process:
        fake.wait_for(lambda f: f.seen.acked == [job_id], "the ack")
        process.terminate()
        out, err = process.communicate(timeout=WAIT_S)
    assert process.returncode == 0, err
    assert out == "hello ada\n"
    assert "SIGTERM" in err


def test_leash_worker_releases_at_once_on_a_second_sigint(fake: FakeBroker, tmp_path: Path) -> None:
    (tmp_path / "stuck.py").write_text(
        "import time\nfrom leash.client import handler\n\n"
        "@handler('stuck')\n"
        "def stuck():\n"
        "    print('started', flush=True)\n"
        "    time.sleep(60)\n"
    )
    job_id = fake.add_job("stuck")
    with worker_process(fake, tmp_path, "stuck.py") as process:
        assert process.stdout is not None
        assert process.stdout.readline() == "started\n"
        process.send_signal(signal.SIGINT)
        assert process.stderr is not None
        seen = "".join(iter_until(process.stderr, "send it again"))  # signals do not queue
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=WAIT_S)
        err = seen + err
    assert fake.seen.released_first(job_id), err
    assert process.returncode == 0, err
    assert "exiting with 1 handlers still running" in err


def iter_until(stream: IO[str], marker: str) -> Iterator[str]:
    for line in stream:
        yield line
        if marker in line:
            return


@contextlib.contextmanager
def worker_process(fake: FakeBroker, cwd: Path, module: str) -> Iterator[subprocess.Popen[str]]:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    command = [sys.executable, "-c", "from leash.client.cli import main; raise SystemExit(main())"]
    command += ["worker", module, "--port", str(fake.port), "--wait-ms", "100"]
    with subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            yield process
        finally:
            process.kill()


async def test_worker_stops_with_the_error_when_the_broker_refuses_its_queues(
    fake: FakeBroker,
) -> None:
    worker = Worker(["not a queue name!"], port=fake.port)
    worker.register("t", print)
    with pytest.raises(BadRequest, match="queues"):
        await worker.run_async()
