"""Worker processes in the core: registration, signs of life, death in one
record, the grace for reconnects and restarts, quiet and terminate."""

from leash.broker.core import detach
from leash.broker.core import records as R
from leash.broker.core.state import LEASED, READY, RETRYING
from leash.protocol import admin as A
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from tests.unit.test_core_harness import START_MS, Core

TTL_MS, BEAT_MS, GRACE_MS, TERMINATE_MS = 15_000, 5_000, 2_000, 25_000
RESTART_GRACE_MS = 3_000


def core() -> Core:
    return Core(
        process_ttl_ms=TTL_MS,
        heartbeat_ms=BEAT_MS,
        reconnect_grace_ms=GRACE_MS,
        restart_grace_ms=RESTART_GRACE_MS,
        terminate_grace_ms=TERMINATE_MS,
    )


def held(c: Core, count: int, worker: str = "w1") -> list[M.Delivery]:
    for _ in range(count):
        c.push(type="t", retry_base_ms=1)
    return c.fetch("default", count=count, worker=worker)


def deaths(records: list[R.Record]) -> list[R.ProcessDied]:
    return [r for r in records if isinstance(r, R.ProcessDied)]


def test_the_first_request_registers_the_process_and_the_views_show_it() -> None:
    c = core()
    leases = held(c, 2)
    (view,) = c.expect(A.ListProcesses(c.next_rid()), A.Processes).processes
    assert (view.worker_id, view.state, view.in_flight) == ("w1", "ok", 2)
    assert view.beat_deadline_ms == START_MS + TTL_MS
    (busy,) = c.expect(A.GetBusy(c.next_rid()), A.Busy).processes
    assert busy.worker_id == "w1"
    assert sorted(j.id for j in busy.jobs) == sorted(d.id for d in leases)
    assert all(j.leased_ms == START_MS and j.attempt == 1 for j in busy.jobs)


def test_a_silent_process_dies_at_its_ttl_and_all_its_leases_end_in_one_record() -> None:
    c = core()
    leases = held(c, 10)
    assert deaths(c.advance(TTL_MS - 1)) == []
    (died,) = deaths(c.advance(1))
    assert died.reason == "worker lost: heartbeat timeout"
    assert sorted(f.id for f in died.failures) == sorted(d.id for d in leases)
    assert "w1" not in c.state.processes
    for delivery in leases:
        job = c.job(delivery.id)
        assert job.state in (RETRYING, READY) and job.attempt == 1
        assert job.last_error == M.ErrorInfo("WorkerLost", "worker lost: heartbeat timeout")
    assert c.expect(A.GetBusy(c.next_rid()), A.Busy).processes == []


def test_beats_keep_a_process_alive_past_its_ttl() -> None:
    c = core()
    held(c, 1)
    for _ in range(5):
        c.advance(BEAT_MS)
        state = c.expect(M.Beat(c.next_rid()), M.ProcessState)
        assert state.state == "ok"
    assert c.state.jobs and all(j.state == LEASED for j in c.state.jobs.values())


def test_other_requests_count_as_life_but_are_recorded_once_per_heartbeat() -> None:
    c = core()
    c.push(type="t")
    seen_before = sum(isinstance(r, R.ProcessSeen) for r in c.records)
    for _ in range(10):
        c.advance(100)
        c.expect(M.GetJob(c.next_rid(), id="none"), M.Error)
    assert sum(isinstance(r, R.ProcessSeen) for r in c.records) == seen_before
    c.advance(BEAT_MS)
    c.expect(M.GetJob(c.next_rid(), id="none"), M.Error)
    assert sum(isinstance(r, R.ProcessSeen) for r in c.records) == seen_before + 1


def test_a_process_whose_connections_are_gone_dies_at_the_grace() -> None:
    c = core()
    held(c, 3)
    for record in detach(c.state, "w1", c.now_ms):
        c.apply(record)
    assert deaths(c.advance(GRACE_MS - 1)) == []
    (died,) = deaths(c.advance(1))
    assert died.reason == "worker lost: disconnected"
    assert len(died.failures) == 3


def test_a_process_that_reconnects_within_the_grace_keeps_its_leases() -> None:
    c = core()
    (lease,) = held(c, 1)
    for record in detach(c.state, "w1", c.now_ms):
        c.apply(record)
    c.advance(GRACE_MS - 1)
    c.touch("w1")  # the new connection's hello
    assert deaths(c.advance(GRACE_MS * 3)) == []
    c.ack(lease)


def test_an_ack_from_a_process_declared_dead_is_stale_and_it_can_work_again() -> None:
    c = core()
    (lease,) = held(c, 1)
    c.advance(TTL_MS)
    error = c.refused(M.Ack(c.next_rid(), lease.id, lease.token), ErrorCode.STALE_LEASE)
    assert "retrying" in error.message or "ready" in error.message
    assert "w1" in c.state.processes  # the ack's sign of life registered it again
    c.advance(1000)
    again = c.fetch("default")
    assert [d.id for d in again] == [lease.id] and again[0].attempt == 2
    c.ack(again[0])


def test_a_broker_restart_gives_every_process_the_restart_grace_to_come_back() -> None:
    c = core()
    (lease,) = held(c, 1)
    c.advance(TTL_MS - 1000)
    c.now_ms += 60_000  # the broker was down for a minute: every beat deadline passed
    c.restart()
    assert deaths(c.tick()) == []
    c.advance(RESTART_GRACE_MS - 1)
    c.touch("w1")  # the worker reconnects in time
    c.advance(TTL_MS - 1)  # then it has its TTL again
    assert c.job(lease.id).state == LEASED
    c.ack(lease)


def test_a_process_that_does_not_come_back_after_a_restart_dies_at_the_restart_grace() -> None:
    c = core()
    leases = held(c, 2)
    c.advance(BEAT_MS)  # it was detached, not dead yet, when the broker went down
    c.apply(R.ProcessDetached("w1", c.now_ms + GRACE_MS))
    c.restart()
    assert deaths(c.advance(RESTART_GRACE_MS - 1)) == []
    (died,) = deaths(c.advance(1))
    assert died.reason == "worker lost: heartbeat timeout"
    assert sorted(f.id for f in died.failures) == sorted(d.id for d in leases)
    assert all(c.job(d.id).state == READY for d in leases), "ready at once, no backoff"
    assert len(c.fetch("default", count=2, worker="w2")) == 2


def test_a_quiet_process_gets_nothing_and_hears_quiet_in_its_beat() -> None:
    c = core()
    c.push(type="t")
    c.touch("w1")
    c.expect(A.Control(c.next_rid(), "w1", "quiet"), M.Ok, worker="operator")
    assert c.fetch("default") == []
    assert c.expect(M.Beat(c.next_rid()), M.ProcessState).state == "quiet"
    outcome = c.send(M.Fetch(c.next_rid(), ["default"], wait_ms=1000))
    assert outcome.may_wait and outcome.records == []


def test_ok_after_quiet_lets_the_process_fetch_again() -> None:
    c = core()
    c.push(type="t")
    c.touch("w1")
    c.expect(A.Control(c.next_rid(), "w1", "quiet"), M.Ok, worker="operator")
    assert c.fetch("default") == []
    c.expect(A.Control(c.next_rid(), "w1", "ok"), M.Ok, worker="operator")
    assert c.expect(M.Beat(c.next_rid()), M.ProcessState).state == "ok"
    assert len(c.fetch("default")) == 1


def test_terminate_releases_what_is_left_without_an_attempt_after_the_grace() -> None:
    c = core()
    leases = held(c, 2)
    c.expect(A.Control(c.next_rid(), "w1", "terminate"), M.Ok, worker="operator")
    c.expect(A.Control(c.next_rid(), "w1", "quiet"), M.Ok, worker="operator")  # no change
    assert c.state.processes["w1"].state == "terminate"
    for _ in range(TERMINATE_MS // BEAT_MS - 1):
        c.advance(BEAT_MS)
        assert c.expect(M.Beat(c.next_rid()), M.ProcessState).state == "terminate"
    (died,) = deaths(c.advance(BEAT_MS))
    assert died.failures == [] and len(died.released) == 2
    for delivery in leases:
        job = c.job(delivery.id)
        assert (job.state, job.attempt) == (READY, 0)


def test_control_of_an_unknown_process_is_not_found() -> None:
    c = core()
    c.refused(A.Control(c.next_rid(), "nobody", "quiet"), ErrorCode.NOT_FOUND)


def test_a_job_that_kills_its_worker_every_time_ends_in_the_dead_set() -> None:
    c = core()
    c.push(type="poison", id="p", max_attempts=3, retry_base_ms=1)
    for worker in ("a", "b", "c"):
        c.advance(10)
        assert len(c.fetch("default", worker=worker)) == 1
        for record in detach(c.state, worker, c.now_ms):
            c.apply(record)
        c.advance(GRACE_MS)
    view = c.job("p")
    assert (view.state, view.attempt) == ("dead", 3)


def test_a_lease_that_expires_as_its_owner_dies_ends_once() -> None:
    c = core()
    c.push(type="t", lease_ttl_ms=TTL_MS, retry_base_ms=1)
    (lease,) = c.fetch("default")
    records = c.advance(TTL_MS)  # the deadline and the owner's TTL fall together
    ended = [f.id for r in records if isinstance(r, R.ProcessDied) for f in r.failures]
    ended += [f.id for r in records if isinstance(r, R.AttemptsFailed) for f in r.failures]
    assert ended == [lease.id]
    assert c.job(lease.id).attempt == 1


def test_the_views_show_nothing_of_a_dead_process() -> None:
    c = core()
    held(c, 4, worker="gone")
    c.touch("stays")
    for record in detach(c.state, "gone", c.now_ms):
        c.apply(record)
    c.advance(GRACE_MS)
    c.touch("stays")
    processes = c.expect(A.ListProcesses(c.next_rid()), A.Processes, worker="stays").processes
    assert "gone" not in [p.worker_id for p in processes]
    assert "stays" in [p.worker_id for p in processes]
    assert c.expect(A.GetBusy(c.next_rid()), A.Busy, worker="stays").processes == []
