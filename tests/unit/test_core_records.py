"""Records and replay: every record survives the encoder, a replay of the
records rebuilds an equal state, a restart continues from it, get_job shows
each state, and check_invariants really notices a broken index."""

import heapq
from typing import get_args

import msgspec

from leash.broker.core import (
    Record,
    State,
    apply,
    boot,
    canonical,
    check_invariants,
    decide,
    decide_admin,
    record_decoder,
    record_encoder,
)
from leash.broker.core import records as R
from leash.broker.core.jobs import write
from leash.protocol import admin as A
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from tests.unit.test_core_harness import SECOND_MS, START_MS, WORKER, Core, args, replay

BOOM = M.ErrorInfo(type="KeyError", message="'x'", backtrace="line 1\nline 2")


def busy_core() -> Core:
    """A core that has written every kind of record."""
    core = Core(dead_max_jobs=1)
    core.push(id="a", args=args({"n": 1}), priority=9)
    core.push_many(
        M.JobSpec(type="t", queue="q", delay_ms=SECOND_MS, retry_base_ms=100),
        M.JobSpec(type="t", id="b", max_attempts=1),
        M.JobSpec(type="t", id="c", lease_ttl_ms=SECOND_MS),
    )
    a, b, _ = core.fetch(count=3)
    core.extend(a, lease_ttl_ms=60 * SECOND_MS)
    core.fail(b, BOOM)
    core.release(a)
    core.pause("q")
    core.advance(SECOND_MS)  # c's lease expires (ready again at once), the scheduled job is due
    core.resume("q")
    core.push(id="d", max_attempts=1)
    held = core.fetch(count=3)  # a first (priority 9), then c, then d
    assert [delivery.id for delivery in held] == ["a", "c", "d"]
    core.fail(held[2])
    core.tick()  # the dead set is over its count of one
    core.send(M.AckMany(core.next_rid(), [M.LeaseRef("a", core.job("a").token or 0)]))
    core.boot()
    return core


JOB_RECORDS = {
    R.Booted,
    R.JobsPushed,
    R.JobsLeased,
    R.JobsAcked,
    R.AttemptsFailed,
    R.LeaseExtended,
    R.LeaseReleased,
    R.JobsPromoted,
    R.QueuePaused,
    R.QueueResumed,
    R.DeadTrimmed,
}


def test_a_busy_core_writes_every_kind_of_job_record() -> None:
    kinds = {type(record) for record in busy_core().records}
    assert set(get_args(Record)) >= JOB_RECORDS
    assert kinds >= JOB_RECORDS


def test_every_record_round_trips_through_the_encoder() -> None:
    for record in busy_core().records:
        encoded = record_encoder.encode(record)
        decoded = record_decoder.decode(encoded)
        assert decoded == record
        assert record_encoder.encode(decoded) == encoded


def test_a_replay_of_the_records_rebuilds_an_equal_state() -> None:
    core = busy_core()
    replayed = State(core.config)
    for record in core.records:
        apply(replayed, record_decoder.decode(record_encoder.encode(record)))
    assert check_invariants(replayed) == []
    assert canonical(replayed) == canonical(core.state)


def test_a_replayed_state_answers_like_the_live_one() -> None:
    core = busy_core()
    replayed = replay(core.records, core.config)
    for request in [
        M.Fetch(1, ["default", "q"], count=10),
        M.Push(2, M.JobSpec(type="t")),
        M.GetJob(3, "c"),
        M.Ack(4, "a", 1),
    ]:
        live = decide(core.state, request, WORKER, core.now_ms)
        again = decide(replayed, request, WORKER, core.now_ms)
        assert live == again


def test_a_restart_continues_from_the_replayed_state() -> None:
    core = Core()
    core.push(id="a")
    core.push(id="b", delay_ms=SECOND_MS)
    held = core.lease()
    before = canonical(core.state)
    core.restart()
    after = canonical(core.state)
    assert after["jobs"] == before["jobs"]
    assert (after["epoch"], after["counter"]) == (2, 1)
    core.advance(SECOND_MS)
    assert core.lease().token >> 32 == 2
    core.ack(held)


def test_a_boot_opens_a_later_epoch_and_restarts_the_counter() -> None:
    state = State()
    first = boot(state, START_MS)
    assert (first.epoch, first.at_ms) == (1, START_MS)
    apply(state, first)
    second = boot(state, START_MS + 1)
    assert second.epoch == 2
    apply(state, second)
    assert (state.epoch, state.counter) == (2, 1)


def test_decide_changes_nothing_even_for_requests_that_write_records() -> None:
    core = Core()
    core.push(id="a", lease_ttl_ms=SECOND_MS)
    before = canonical(core.state)
    for request in [
        M.Push(1, M.JobSpec(type="t", id="z")),
        M.PushMany(2, [M.JobSpec(type="t"), M.JobSpec(type="t", delay_ms=5)]),
        M.Fetch(3, ["default"], count=5),
    ]:
        outcome = decide(core.state, request, WORKER, core.now_ms)
        assert outcome.records
        assert canonical(core.state) == before
    assert decide_admin(core.state, A.Pause(4, "default"), core.now_ms).records
    assert canonical(core.state) == before


def test_hello_is_refused_by_the_core() -> None:
    core = Core()
    core.refused(M.Hello(1, 1, WORKER), ErrorCode.BAD_REQUEST)


# --- get_job ---------------------------------------------------------------------


def test_get_job_of_an_unknown_id_is_not_found() -> None:
    core = Core()
    error = core.refused(M.GetJob(3, "nope"), ErrorCode.NOT_FOUND)
    assert (error.rid, error.path) == (3, "$.id")


def test_get_job_shows_each_state_with_its_own_fields() -> None:
    core = Core()
    core.push(id="s", queue="later", delay_ms=SECOND_MS)
    scheduled = core.job("s")
    assert (scheduled.state, scheduled.run_at_ms, scheduled.owner) == (
        "scheduled",
        START_MS + SECOND_MS,
        None,
    )

    core.push(id="j", max_attempts=2, retry_base_ms=1000, args=args([1]))
    ready = core.job("j")
    assert (ready.state, ready.run_at_ms, ready.token, ready.deadline_ms) == (
        "ready",
        None,
        None,
        None,
    )
    assert bytes(ready.args) == msgspec.msgpack.encode([1])

    delivery = core.lease(worker="w9")
    leased = core.job("j")
    assert (leased.state, leased.owner, leased.token, leased.deadline_ms) == (
        "leased",
        "w9",
        delivery.token,
        delivery.deadline_ms,
    )

    failed = core.fail(delivery, BOOM)
    retrying = core.job("j")
    assert (retrying.state, retrying.attempt, retrying.last_error) == ("retrying", 1, BOOM)
    assert retrying.run_at_ms == failed.retry_at_ms
    assert (retrying.owner, retrying.died_ms) == (None, None)

    core.advance_to(failed.retry_at_ms or 0)
    core.fail(core.lease(), M.ErrorInfo(type="Last"))
    dead = core.job("j")
    assert (dead.state, dead.attempt, dead.died_ms, dead.run_at_ms) == (
        "dead",
        2,
        core.now_ms,
        None,
    )
    assert dead.last_error == M.ErrorInfo(type="Last")
    assert (dead.created_ms, dead.retry_base_ms, dead.max_attempts) == (START_MS, 1000, 2)


# --- check_invariants --------------------------------------------------------------


def test_check_invariants_notices_a_broken_count() -> None:
    core = busy_core()
    core.state.counts["ready"] += 1
    assert any("counts" in problem for problem in check_invariants(core.state))


def test_check_invariants_notices_a_job_both_ready_and_leased() -> None:
    core = Core()
    core.push(id="a")
    core.push(id="b")
    core.lease()
    job = core.state.jobs["a"]
    core.state.queues["default"].buckets[job.priority].append("a")
    core.state.queues["default"].ready += 1
    assert check_invariants(core.state) != []


def test_check_invariants_notices_a_lease_missing_from_the_deadlines() -> None:
    core = Core()
    core.push(id="a")
    core.lease()
    core.state.deadlines.clear()
    assert any("missing" in problem for problem in check_invariants(core.state))


def test_check_invariants_notices_a_token_from_a_future_epoch() -> None:
    core = Core()
    core.push(id="a")
    core.lease()
    job = core.state.jobs["a"]
    write(job, "token", (core.state.epoch + 1) << 32)  # a corruption: no record does this
    core.state.deadlines.append((job.deadline_ms, job.token, "a"))
    assert any("token" in problem for problem in check_invariants(core.state))


def test_check_invariants_notices_a_stale_entry_at_the_front_of_a_lazy_index() -> None:
    core = Core()
    core.push(id="a", delay_ms=60_000)
    assert check_invariants(core.state) == []
    heapq.heappush(core.state.scheduled, (0, "gone"))  # older than any live entry
    assert any("front of the scheduled" in p for p in check_invariants(core.state))
