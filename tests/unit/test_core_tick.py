"""tick and next_due_ms: what the passage of time does — leases expire and
count an attempt, scheduled and retrying jobs become ready in run_at order,
the dead set keeps to its count and age bounds — and no more than
``tick_max_items`` jobs per record."""

from leash.broker.core import State, next_due_ms, tick
from leash.broker.core import records as R
from leash.broker.core.state import live_dead
from leash.protocol import admin as A
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from tests.unit.test_core_harness import PROCESS_TTL_MS, SECOND_MS, START_MS, Core

MINUTE_MS = 60 * SECOND_MS
DAY_MS = 24 * 60 * MINUTE_MS


def promoted_ids(records: list[R.Record]) -> list[str]:
    return [job_id for r in records if isinstance(r, R.JobsPromoted) for job_id in r.ids]


def failures(records: list[R.Record]) -> list[R.Failure]:
    return [f for r in records if isinstance(r, R.AttemptsFailed) for f in r.failures]


def trimmed_ids(records: list[R.Record]) -> list[str]:
    return [job_id for r in records if isinstance(r, R.DeadTrimmed) for job_id in r.ids]


def items(record: R.Record) -> int:
    """How many jobs a timer record touches."""
    match record:
        case R.JobsPromoted(ids=ids) | R.DeadTrimmed(ids=ids):
            return len(ids)
        case R.AttemptsFailed(failures=found):
            return len(found)
    raise AssertionError(record)


def job_due_ms(state: State) -> int | None:
    """next_due_ms without the beat deadlines of the test's worker processes,
    which are all at least PROCESS_TTL_MS after the start."""
    due_ms = next_due_ms(state)
    return None if due_ms is not None and due_ms >= START_MS + PROCESS_TTL_MS else due_ms


def kill(core: Core, job_id: str) -> None:
    """Push a job with one attempt and fail it: it is dead at core.now_ms."""
    core.push(id=job_id, queue="doomed", max_attempts=1)
    assert core.fail(core.lease("doomed")).state == "dead"


# --- lease expiry ----------------------------------------------------------------


def test_a_tick_on_a_quiet_state_writes_nothing() -> None:
    core = Core()
    assert tick(core.state, core.now_ms) == []
    core.push(id="a")
    assert tick(core.state, core.now_ms + DAY_MS) == []


def test_a_lease_expires_at_its_deadline_and_not_before() -> None:
    core = Core()
    core.push(id="a", lease_ttl_ms=5 * SECOND_MS)
    delivery = core.lease()
    assert core.advance_to(delivery.deadline_ms - 1) == []
    assert core.job("a").state == "leased"
    records = core.advance_to(delivery.deadline_ms)
    (failure,) = failures(records)
    assert (failure.id, failure.token, failure.at_ms) == ("a", delivery.token, core.now_ms)


def test_an_expired_lease_counts_an_attempt_with_error_type_lease_expired() -> None:
    core = Core()
    core.push(id="a", lease_ttl_ms=5 * SECOND_MS)
    delivery = core.lease()
    core.advance(MINUTE_MS)
    view = core.job("a")
    assert (view.state, view.attempt, view.token, view.run_at_ms) == ("ready", 1, None, None)
    assert view.last_error is not None and view.last_error.type == "LeaseExpired"
    again = core.lease()  # at once: no backoff for a lost lease
    assert (again.attempt, again.token > delivery.token) == (2, True)


def test_a_job_whose_lease_always_expires_ends_dead() -> None:
    core = Core()
    core.push(id="a", lease_ttl_ms=SECOND_MS, max_attempts=2)
    for attempt in (1, 2):
        assert core.lease().attempt == attempt
        core.advance(SECOND_MS)
    view = core.job("a")
    assert (view.state, view.attempt, view.died_ms) == ("dead", 2, core.now_ms)
    assert view.last_error == M.ErrorInfo("LeaseExpired", "lease expired")  # max_attempts
    core.advance(DAY_MS)
    assert core.fetch() == []


def test_leases_of_one_tick_expire_in_one_record() -> None:
    core = Core()
    for n in range(4):
        core.push(id=f"j{n}", lease_ttl_ms=(n + 1) * SECOND_MS)
    core.fetch(count=4)
    records = core.advance(3 * SECOND_MS)
    assert [type(r) for r in records] == [R.AttemptsFailed]
    assert sorted(f.id for f in failures(records)) == ["j0", "j1", "j2"]
    assert core.job("j3").state == "leased"


# --- scheduled and retrying jobs ---------------------------------------------------


def test_tick_promotes_due_scheduled_jobs_in_run_at_order_and_not_before() -> None:
    core = Core()
    for job_id, delay_s in [("c", 30), ("a", 10), ("d", 40), ("b", 20)]:
        core.push(id=job_id, delay_ms=delay_s * SECOND_MS)
    assert core.advance(10 * SECOND_MS - 1) == []
    assert promoted_ids(core.advance(1)) == ["a"]
    assert promoted_ids(core.advance(25 * SECOND_MS)) == ["b", "c"]
    assert core.ready_ids() == ["a", "b", "c"]
    assert core.job("d").state == "scheduled"
    assert promoted_ids(core.advance(DAY_MS)) == ["d"]
    view = core.job("d")
    assert (view.state, view.run_at_ms) == ("ready", None)


def test_a_promoted_job_joins_the_back_of_its_priority() -> None:
    core = Core()
    core.push(id="later", delay_ms=SECOND_MS)
    core.push(id="now")
    core.push(id="urgent-later", delay_ms=SECOND_MS, priority=9)
    core.advance(SECOND_MS)
    assert [d.id for d in core.fetch(count=3)] == ["urgent-later", "now", "later"]


def test_tick_promotes_due_retries_with_the_scheduled_jobs() -> None:
    core = Core()
    core.push(id="r", retry_base_ms=5 * SECOND_MS)
    retry_at_ms = core.fail(core.lease()).retry_at_ms or 0
    core.push(id="s", run_at_ms=retry_at_ms + 1)
    core.push(id="t", run_at_ms=retry_at_ms - 1)
    assert core.advance_to(retry_at_ms - 2) == []
    assert promoted_ids(core.advance_to(retry_at_ms + 1)) == ["t", "r", "s"]


def test_jobs_due_at_the_same_time_are_promoted_in_id_order() -> None:
    core = Core()
    for job_id in ("b", "c", "a"):
        core.push(id=job_id, run_at_ms=START_MS + SECOND_MS)
    assert promoted_ids(core.advance(SECOND_MS)) == ["a", "b", "c"]


# --- the dead set ------------------------------------------------------------------


def test_the_dead_set_is_trimmed_by_count_oldest_first() -> None:
    core = Core(dead_max_jobs=2)
    for n in range(4):
        kill(core, f"d{n}")
        core.now_ms += SECOND_MS
    assert core.state.counts["dead"] == 4  # trimming is the timer's work
    assert trimmed_ids(core.tick()) == ["d0", "d1"]
    assert sorted(core.state.jobs) == ["d2", "d3"]
    kill(core, "d4")
    assert trimmed_ids(core.tick()) == ["d2"]


def test_the_dead_set_is_trimmed_by_age() -> None:
    core = Core(dead_max_age_ms=DAY_MS)
    kill(core, "old")
    core.now_ms += MINUTE_MS
    kill(core, "young")
    assert core.advance_to(START_MS + DAY_MS - 1) == []
    assert trimmed_ids(core.advance_to(START_MS + DAY_MS)) == ["old"]
    assert trimmed_ids(core.advance(MINUTE_MS)) == ["young"]
    assert core.state.jobs == {}
    assert job_due_ms(core.state) is None


def test_a_job_requeued_and_dead_again_in_the_same_millisecond_has_one_place_in_the_dead_set() -> (
    None
):
    core = Core(dead_max_jobs=1)
    kill(core, "twice")
    kill(core, "other")  # now "twice" is oldest: it would be trimmed first
    core.send(A.RequeueJob(core.next_rid(), "twice"))
    core.send(A.KillJob(core.next_rid(), "twice"))  # the same millisecond as its first death
    live = [entry for entry in core.state.dead if live_dead(core.state, entry)]
    assert [job_id for _, job_id in live] == ["other", "twice"]  # its first entry stays stale
    assert trimmed_ids(core.tick()) == ["other"]


def test_a_trimmed_dead_job_is_gone() -> None:
    core = Core(dead_max_jobs=0)
    kill(core, "a")
    core.tick()
    core.refused(M.GetJob(1, "a"), ErrorCode.NOT_FOUND)
    assert core.push(id="a").created is True


# --- tick_max_items ------------------------------------------------------------------


def test_tick_max_items_bounds_each_record_and_repeated_ticks_finish_the_work() -> None:
    core = Core(tick_max_items=3, dead_max_jobs=0)
    for n in range(10):
        core.push(id=f"s{n}", delay_ms=SECOND_MS)
    for n in range(7):
        core.push(id=f"l{n}", queue="busy", lease_ttl_ms=SECOND_MS, max_attempts=1)
    core.fetch("busy", count=7)
    core.now_ms += SECOND_MS
    first = tick(core.state, core.now_ms)
    assert [type(r) for r in first] == [R.JobsPromoted, R.AttemptsFailed]
    records = core.tick()
    assert max(items(r) for r in records) == 3
    assert len(promoted_ids(records)) == 10
    assert len(failures(records)) == 7
    assert core.state.counts == {"ready": 10, "scheduled": 0, "leased": 0, "retrying": 0, "dead": 0}


def test_a_bounded_tick_still_promotes_in_run_at_order() -> None:
    core = Core(tick_max_items=2)
    order = [7, 3, 9, 1, 5, 10, 2, 8, 4, 6, 12, 11]  # pushed out of order
    for n in order:
        core.push(id=f"j{n:02}", run_at_ms=START_MS + n * SECOND_MS)
    records = core.advance(MINUTE_MS)
    assert all(len(r.ids) <= 2 for r in records if isinstance(r, R.JobsPromoted))
    expected = [f"j{n:02}" for n in sorted(order)]
    assert promoted_ids(records) == expected
    assert core.ready_ids() == expected


def test_a_bounded_tick_still_expires_the_earliest_deadlines_first() -> None:
    core = Core(tick_max_items=2)
    ttls = [7, 3, 9, 1, 5, 10, 2, 8, 4, 6]
    for n in ttls:
        core.push(id=f"j{n:02}", lease_ttl_ms=n * SECOND_MS)
    core.fetch(count=len(ttls))
    records = core.advance(MINUTE_MS)
    assert [f.id for f in failures(records)] == [f"j{n:02}" for n in sorted(ttls)]


# --- next_due_ms ---------------------------------------------------------------------


def test_next_due_ms_is_none_when_time_has_nothing_to_do() -> None:
    assert next_due_ms(State()) is None
    core = Core()
    assert next_due_ms(core.state) is None
    core.push(id="a")
    assert next_due_ms(core.state) == START_MS + PROCESS_TTL_MS  # the worker's beat
    assert job_due_ms(core.state) is None


def test_next_due_ms_is_the_earliest_run_at_or_deadline() -> None:
    core = Core(history_max_jobs=0)
    core.push(id="s", delay_ms=MINUTE_MS)
    assert job_due_ms(core.state) == START_MS + MINUTE_MS
    core.push(id="l", lease_ttl_ms=10 * SECOND_MS)
    delivery = core.lease()
    assert job_due_ms(core.state) == START_MS + 10 * SECOND_MS
    extended = core.extend(delivery, lease_ttl_ms=2 * MINUTE_MS)
    assert job_due_ms(core.state) == START_MS + MINUTE_MS
    core.advance_to(START_MS + MINUTE_MS)
    assert job_due_ms(core.state) == extended.deadline_ms
    core.ack(delivery)
    core.tick()  # (the finished-job history is off: its entry goes at once)
    assert job_due_ms(core.state) is None


def test_next_due_ms_follows_a_retry() -> None:
    core = Core()
    core.push(id="a")
    failed = core.fail(core.lease())
    assert job_due_ms(core.state) == failed.retry_at_ms


def test_next_due_ms_is_when_the_oldest_dead_job_ages_out() -> None:
    core = Core(dead_max_age_ms=DAY_MS)
    kill(core, "a")
    assert job_due_ms(core.state) == START_MS + DAY_MS


def test_next_due_ms_is_already_due_when_the_dead_set_is_over_its_count() -> None:
    core = Core(dead_max_jobs=1)
    kill(core, "a")
    core.now_ms += SECOND_MS
    kill(core, "b")
    due_ms = job_due_ms(core.state)
    assert due_ms is not None and due_ms <= core.now_ms
    assert trimmed_ids(core.tick()) == ["a"]
    assert job_due_ms(core.state) == core.now_ms + core.config.dead_max_age_ms


def test_ticking_at_next_due_ms_always_does_something() -> None:
    core = Core(dead_max_jobs=2, dead_max_age_ms=DAY_MS)
    core.push(id="s", delay_ms=5 * SECOND_MS)
    core.push(id="l", lease_ttl_ms=3 * SECOND_MS, max_attempts=2)
    core.lease()
    for n in range(3):
        kill(core, f"d{n}")
    steps = 0
    while (due_ms := job_due_ms(core.state)) is not None:
        core.now_ms = max(core.now_ms, due_ms)
        assert core.tick() != []
        steps += 1
        assert steps < 50
    assert set(core.state.jobs) == {"s", "l"}
