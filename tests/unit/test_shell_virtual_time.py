"""The shell's timers on virtual time (tests/shell_rig.py): long-poll and
get_result waits, the tick timer (lease expiry, a process's death after its
TTL, a rate limit's next start) and the guard's idle and handshake
timeouts, each checked just before and just after its moment, in
milliseconds of real time."""

from typing import Any

from leash.broker.core import CoreConfig
from leash.broker.server.guard import sweep_period_s
from leash.broker.server.limits import Limits
from leash.protocol import admin as A
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from leash.protocol.frames import encode_frame
from tests.shell_rig import Peer, shell


def push(peer: Peer, job_type: str, queue: str = "q", **options: Any) -> None:
    peer.send(M.Push(rid=peer.rid(), job=M.JobSpec(type=job_type, queue=queue, **options)))


def fetch(peer: Peer, queue: str = "q", *, count: int = 1, wait_ms: int = 0) -> None:
    peer.send(M.Fetch(rid=peer.rid(), queues=[queue], count=count, wait_ms=wait_ms))


def jobs_in(replies: list[Any]) -> list[str]:
    return [job.type for reply in replies if isinstance(reply, M.Jobs) for job in reply.jobs]


class AdminPeer:
    def __init__(self) -> None:
        self.replies: list[Any] = []

    def send(self, reply: Any) -> None:
        self.replies.append(reply)


def test_a_held_fetch_is_answered_with_no_jobs_when_its_wait_ends() -> None:
    rig = shell()
    worker = rig.peer("w")
    fetch(worker, wait_ms=5_000)
    rig.advance(4.99)
    assert worker.read() == []
    rig.advance(0.02)
    (reply,) = worker.read()
    assert isinstance(reply, M.Jobs) and reply.jobs == []
    assert rig.broker.longpoll.waiters.count == 0


def test_a_held_fetch_waits_at_most_a_third_of_the_process_ttl() -> None:
    rig = shell(core_config=CoreConfig(process_ttl_ms=3_000))
    worker = rig.peer("w")
    fetch(worker, wait_ms=20_000)
    rig.advance(0.99)
    assert worker.read() == []
    rig.advance(0.02)
    assert [type(reply) for reply in worker.read()] == [M.Jobs]


def test_a_held_fetch_is_served_in_the_turn_a_job_arrives_and_waiters_in_arrival_order() -> None:
    rig = shell()
    workers = [rig.peer(f"w{n}") for n in range(3)]
    for worker in workers:
        fetch(worker, wait_ms=10_000)
        rig.advance(0.1)
    producer = rig.peer("p")
    for name in ("first", "second", "third"):
        push(producer, name)
    rig.settle()
    assert [jobs_in(worker.read()) for worker in workers] == [["first"], ["second"], ["third"]]
    assert rig.clock.now_s < 0.5  # served at once, not at the end of a wait


def test_a_held_get_result_is_answered_when_its_job_finishes_or_when_its_wait_ends() -> None:
    rig = shell()
    producer, worker = rig.peer("p"), rig.peer("w")
    push(producer, "a", keep_result_ms=60_000)
    push(producer, "b", keep_result_ms=60_000)
    rig.settle()
    first, second = (reply.id for reply in producer.read())
    producer.send(M.GetResult(rid=producer.rid(), id=first, wait_ms=3_000))
    producer.send(M.GetResult(rid=producer.rid(), id=second, wait_ms=3_000))
    fetch(worker, count=1)
    rig.settle()
    (delivery,) = worker.read()[0].jobs
    assert producer.read() == []
    rig.advance(1.0)
    worker.send(M.Ack(rid=worker.rid(), id=delivery.id, token=delivery.token, result=b"\x01"))
    rig.settle()
    (done,) = producer.read()
    assert isinstance(done, M.JobResult) and done.state == "succeeded" and done.value == b"\x01"
    rig.advance(1.99)
    assert producer.read() == []
    rig.advance(0.02)
    (waited,) = producer.read()
    assert isinstance(waited, M.JobResult) and waited.id == second and waited.state == "ready"


def test_the_tick_timer_makes_an_expired_lease_ready_again_at_its_deadline() -> None:
    rig = shell()
    producer, first, second = rig.peer("p"), rig.peer("w1"), rig.peer("w2")
    push(producer, "slow", lease_ttl_ms=2_000)
    fetch(first)
    rig.settle()
    assert jobs_in(first.read()) == ["slow"]
    fetch(second, wait_ms=10_000)
    rig.advance(1.99)
    assert second.read() == []
    rig.advance(0.02)
    (again,) = second.read()
    assert isinstance(again, M.Jobs) and [job.attempt for job in again.jobs] == [2]


def test_the_tick_timer_finds_a_silent_process_dead_after_its_ttl() -> None:
    rig = shell(limits=Limits(idle_timeout_ms=0), core_config=CoreConfig(process_ttl_ms=5_000))
    producer, silent = rig.peer("p"), rig.peer("silent")
    push(producer, "job", lease_ttl_ms=60_000)
    fetch(silent)
    rig.settle()
    assert jobs_in(silent.read()) == ["job"]
    for _ in range(3):  # the producer stays alive
        rig.advance(1.5)
        producer.send(M.Beat(rid=producer.rid()))
    rig.advance(0.49)  # 4.99 s of silence
    assert rig.state.processes["silent"].state == "ok"
    rig.advance(0.02)
    assert "silent" not in rig.state.processes
    fetch(producer)
    rig.settle()
    assert jobs_in(producer.read()) == ["job"]


def test_a_fetch_held_on_a_rate_limited_queue_wakes_when_the_window_moves_on() -> None:
    rig = shell()
    admin = AdminPeer()
    limit = A.SetQueueLimits(rid=1, queue="q", rate=1, rate_interval_ms=1_000)
    rig.broker.handle_admin(admin, limit)  # type: ignore[arg-type]
    producer, worker = rig.peer("p"), rig.peer("w")
    push(producer, "a")
    push(producer, "b")
    fetch(worker, count=2)
    rig.settle()
    assert jobs_in(worker.read()) == ["a"]  # one start a second
    fetch(worker, wait_ms=10_000)
    rig.advance(0.9)
    assert worker.read() == []
    rig.advance(0.2)
    assert jobs_in(worker.read()) == ["b"]


def test_an_idle_connection_is_closed_after_its_idle_timeout_and_not_before() -> None:
    limits = Limits(idle_timeout_ms=3_000)
    rig = shell(limits=limits)
    worker = rig.peer("w")
    rig.advance(2.9)
    assert not worker.closed
    worker.send(M.Beat(rid=worker.rid()))  # activity starts the wait again
    rig.advance(2.9)
    assert not worker.closed
    rig.advance(0.1 + sweep_period_s(limits) + 0.01)
    assert worker.closed
    error = worker.read()[-1]
    assert isinstance(error, M.Error) and error.code == ErrorCode.IDLE_TIMEOUT
    assert rig.broker.connections == set()


def test_a_connection_that_does_not_finish_its_handshake_in_time_is_closed() -> None:
    limits = Limits(handshake_timeout_ms=2_000)
    rig = shell(limits=limits)
    silent = Peer(rig)
    rig.advance(1.99)
    assert not silent.closed
    rig.advance(sweep_period_s(limits) + 0.02)
    assert silent.closed
    (error,) = silent.read()
    assert isinstance(error, M.Error) and error.code == ErrorCode.HANDSHAKE_TIMEOUT
    assert rig.broker.guard.unauthenticated == 0


def test_a_held_fetch_gets_every_job_of_a_pipelined_burst_and_keeps_its_turn() -> None:
    """Pushes that arrive in one read are served to a held fetch together,
    and a fetch read after them in that same read does not take them first."""
    rig = shell()
    waiting, other = rig.peer("waiting"), rig.peer("other")
    fetch(waiting, count=10, wait_ms=10_000)
    rig.settle()
    burst = [M.Push(rid=other.rid(), job=M.JobSpec(type=f"j{n}", queue="q")) for n in range(5)]
    late = M.Fetch(rid=other.rid(), queues=["q"], count=10)
    frames = [encode_frame(M.encoder.encode(message)) for message in [*burst, late]]
    other.connection.data_received(b"".join(frames))
    rig.settle()
    replies = other.read()
    assert [type(reply) for reply in replies] == [M.Pushed] * 5 + [M.Jobs]
    assert replies[-1].jobs == []  # the held fetch came first
    assert jobs_in(waiting.read()) == [f"j{n}" for n in range(5)]


def test_a_held_fetch_of_a_quiet_process_does_not_block_the_waiters_behind_it() -> None:
    rig = shell()
    quiet, busy, producer = rig.peer("quiet-one"), rig.peer("busy-one"), rig.peer("operator")
    admin = AdminPeer()
    control = A.Control(rid=1, worker_id="quiet-one", state="quiet")
    rig.broker.handle_admin(admin, control)  # type: ignore[arg-type]
    rig.settle()
    fetch(quiet, wait_ms=3_000)
    rig.advance(0.2)
    fetch(busy, wait_ms=3_000)
    rig.advance(0.2)
    push(producer, "t")
    rig.settle()
    assert jobs_in(busy.read()) == ["t"]
    assert quiet.read() == []
    rig.advance(2.59)
    assert quiet.read() == []
    rig.advance(0.02)
    (nothing,) = quiet.read()
    assert isinstance(nothing, M.Jobs) and nothing.jobs == []


def test_a_kept_result_expires_at_its_time_on_the_tick_timer() -> None:
    rig = shell()
    client = rig.peer("c")
    push(client, "t", keep_result_ms=1_000)
    fetch(client)
    rig.settle()
    pushed, jobs = client.read()
    (job,) = jobs.jobs
    client.send(M.Ack(rid=client.rid(), id=job.id, token=job.token, result=b"\x2a"))
    rig.settle()
    client.read()

    def result() -> Any:
        client.send(M.GetResult(rid=client.rid(), id=pushed.id))
        rig.settle()
        (reply,) = client.read()
        return reply

    assert result().value == b"\x2a"
    rig.advance(0.99)
    assert result().value == b"\x2a"
    rig.advance(0.02)
    gone = result()
    assert isinstance(gone, M.Error) and gone.code == ErrorCode.NOT_FOUND, gone
