"""``cancel`` in the broker's shell, on virtual time (tests/shell_rig.py):
a connection ends its own long poll now, which is answered as its wait's
end would answer it, before the cancel's ``ok``; nothing else changes."""

from leash.protocol import messages as M
from tests.shell_rig import Peer, shell
from tests.unit.test_shell_virtual_time import jobs_in, push

WAIT_MS = 10_000


def sent_fetch(peer: Peer, wait_ms: int = 0) -> int:
    """A fetch of queue q: its rid."""
    rid = peer.rid()
    peer.send(M.Fetch(rid=rid, queues=["q"], wait_ms=wait_ms))
    return rid


def held_fetch(peer: Peer) -> int:
    """A fetch of queue q held for WAIT_MS (none is ready): its rid."""
    return sent_fetch(peer, WAIT_MS)


def test_a_cancel_ends_a_held_fetch_before_its_ok_and_a_later_job_stays_ready() -> None:
    rig = shell()
    worker, producer = rig.peer("w"), rig.peer("p")
    rid = held_fetch(worker)
    rig.advance(0.5)
    cancel = M.Cancel(rid=worker.rid(), of=rid)
    worker.send(cancel)
    rig.settle()
    assert worker.read() == [M.Jobs(rid, []), M.Ok(cancel.rid)]
    assert rig.broker.longpoll.waiters.count == 0 and not worker.connection.waiters
    push(producer, "after")
    rig.settle()
    (pushed,) = producer.read()
    assert worker.read() == []
    job = rig.state.jobs[pushed.id]
    assert job.state == "ready" and job.token == 0 and not job.attempts  # never leased
    rig.advance(WAIT_MS / 1000)
    assert worker.read() == [], "the cancelled fetch was answered twice"


def test_a_cancel_ends_only_its_own_connections_hold() -> None:
    """The same rid held on two connections: the cancel of one leaves the
    other held, and the job pushed next goes to it."""
    rig = shell()
    first, second, producer = rig.peer("w1"), rig.peer("w2"), rig.peer("p")
    rid = held_fetch(first)
    assert held_fetch(second) == rid
    first.send(M.Cancel(rid=first.rid(), of=rid))
    rig.settle()
    assert [type(reply) for reply in first.read()] == [M.Jobs, M.Ok]
    push(producer, "after")
    rig.settle()
    assert jobs_in(second.read()) == ["after"]


def test_a_cancel_of_a_rid_not_held_is_ok_and_changes_nothing() -> None:
    rig = shell()
    worker, producer = rig.peer("w"), rig.peer("p")
    push(producer, "ready")
    rig.settle()
    producer.read()
    answered = sent_fetch(worker)  # answered at once: nothing stays held
    rid = held_fetch(worker)
    rig.settle()
    assert jobs_in(worker.read()) == ["ready"]
    for of in (answered, rid + 100):
        cancel = M.Cancel(rid=worker.rid(), of=of)
        worker.send(cancel)
        rig.settle()
        assert worker.read() == [M.Ok(cancel.rid)]
    assert rig.broker.longpoll.waiters.count == 1, "the held fetch was ended"


def test_a_cancel_ends_a_held_get_result_with_its_job_as_it_is() -> None:
    rig = shell()
    producer = rig.peer("p")
    push(producer, "slow", keep_result_ms=60_000)
    rig.settle()
    (pushed,) = producer.read()
    waiting = M.GetResult(rid=producer.rid(), id=pushed.id, wait_ms=WAIT_MS)
    producer.send(waiting)
    rig.advance(1.0)
    assert producer.read() == []
    cancel = M.Cancel(rid=producer.rid(), of=waiting.rid)
    producer.send(cancel)
    rig.settle()
    result, ok = producer.read()
    assert isinstance(result, M.JobResult) and result.rid == waiting.rid
    assert result.state == "ready" and ok == M.Ok(cancel.rid)
    assert not rig.broker.longpoll.results
