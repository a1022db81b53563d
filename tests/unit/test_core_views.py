"""The operator views in the core: queue figures, paged job listings, and
what each record counts for in the totals."""

import random

import msgspec
import pytest

from leash.broker.core import State, apply, tally
from leash.broker.core.state import DEAD, LEASED, READY, RETRYING, SCHEDULED
from leash.protocol import admin as A
from leash.protocol import limits as L
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from tests.unit.test_core_harness import SECOND_MS, Core

MINUTE_MS = 60 * SECOND_MS


def queues(core: Core) -> dict[str, A.QueueView]:
    reply = core.expect(A.ListQueues(core.next_rid()), A.Queues)
    return {view.name: view for view in reply.queues}


def page(
    core: Core, kind: A.ListKind, cursor: str = "", limit: int = 50, **filter: str
) -> A.JobPage:
    request = A.ListJobs(core.next_rid(), kind, A.JobFilter(**filter), cursor, limit)
    return core.expect(request, A.JobPage)


def listing(core: Core, kind: A.ListKind, limit: int = 7, **filter: str) -> list[str]:
    ids, cursor = [], ""
    while True:
        found = page(core, kind, cursor, limit, **filter)
        ids += [job.id for job in found.jobs]
        if not found.next:
            return ids
        cursor = found.next


def to_dead(core: Core, queue: str = "default", **spec: object) -> str:
    core.push(queue=queue, max_attempts=1, **spec)
    delivery = core.lease(queue)
    core.fail(delivery, M.ErrorInfo("Boom", f"broke {delivery.id}"))
    return delivery.id


# --- queues ------------------------------------------------------------------


def test_a_queue_view_counts_its_jobs_in_every_state() -> None:
    core = Core()
    to_dead(core, "q", id="d")
    core.push(id="r", queue="q")
    core.push(id="l", queue="q")
    core.push(id="s", queue="q", delay_ms=MINUTE_MS)
    core.push(id="t", queue="q", max_attempts=2)
    leased = core.fetch("q", count=3)  # r, l and t, in push order
    core.fail(next(job for job in leased if job.id == "t"))
    core.release(next(job for job in leased if job.id == "r"))
    view = queues(core)["q"]
    assert (view.ready, view.scheduled, view.in_flight, view.dead) == (1, 2, 1, 1)
    counts = core.state.queues["q"].counts
    assert counts == {READY: 1, SCHEDULED: 1, RETRYING: 1, LEASED: 1, DEAD: 1}


def test_latency_is_the_age_of_the_oldest_ready_job_and_zero_when_none_is_ready() -> None:
    core = Core()
    core.push(id="a", queue="q", priority=1)
    core.advance(3 * SECOND_MS)
    core.push(id="b", queue="q", priority=9)
    core.advance(2 * SECOND_MS)
    assert queues(core)["q"].latency_ms == 5 * SECOND_MS  # "a", though "b" is more urgent
    core.fetch("q", count=2)
    assert queues(core)["q"].latency_ms == 0


def test_a_promoted_job_waits_from_its_due_time_and_a_released_one_from_its_release() -> None:
    core = Core()
    core.push(id="later", queue="q", delay_ms=10 * SECOND_MS)
    core.advance(12 * SECOND_MS)  # the tick promotes it at +12 s; it was due at +10 s
    assert queues(core)["q"].latency_ms == 2 * SECOND_MS
    delivery = core.lease("q")
    core.advance(30 * SECOND_MS)
    core.release(delivery)
    core.advance(SECOND_MS)
    assert queues(core)["q"].latency_ms == SECOND_MS


def test_a_queue_is_kept_while_it_has_any_job_and_dropped_after_the_last_one() -> None:
    core = Core()
    core.push(id="a", queue="q", delay_ms=MINUTE_MS)
    assert "q" in queues(core)
    core.advance(MINUTE_MS)
    core.ack(core.lease("q"))
    assert "q" not in core.state.queues and queues(core) == {}


# --- listings ----------------------------------------------------------------


def test_scheduled_and_retrying_jobs_are_listed_soonest_first_and_dead_ones_newest_first() -> None:
    core = Core()
    for n in (5, 1, 3):
        core.push(id=f"s{n}", delay_ms=n * MINUTE_MS)
    core.push(id="r1", max_attempts=5, retry_base_ms=90 * MINUTE_MS)
    core.fail(core.lease())
    dead = []
    for _ in range(3):
        dead.append(to_dead(core))
        core.advance(SECOND_MS)
    assert listing(core, "scheduled") == ["s1", "s3", "s5"]
    assert listing(core, "retrying") == ["r1"]
    assert listing(core, "dead") == dead[::-1]


def test_filters_take_queue_type_and_error_text() -> None:
    core = Core()
    a = to_dead(core, "a", type="send")
    b = to_dead(core, "b", type="send")
    c = to_dead(core, "a", type="other")
    assert set(listing(core, "dead", queue="a")) == {a, c}
    assert listing(core, "dead", type="send", queue="b") == [b]
    assert listing(core, "dead", error=f"broke {c}") == [c]
    assert listing(core, "dead", error="Boom", queue="b") == [b]
    assert listing(core, "dead", error="nothing like it") == []


def test_every_job_is_listed_exactly_once_however_small_the_pages() -> None:
    core = Core()
    ids = [f"j{n:03}" for n in range(60)]
    for n, job_id in enumerate(ids):
        core.push(id=job_id, delay_ms=(1 + n % 7) * MINUTE_MS)
    for limit in (1, 2, 7, 60, 1000):
        found = listing(core, "scheduled", limit=limit)
        assert sorted(found) == ids, limit


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_paging_while_jobs_come_and_go_shows_every_staying_job_once(seed: int) -> None:
    print(f"seed {seed}")
    rng = random.Random(seed)
    core = Core()
    for n in range(80):
        core.push(id=f"j{n:02}", delay_ms=rng.randrange(1, 100) * MINUTE_MS)
    staying = {f"j{n:02}" for n in range(0, 80, 2)}
    seen: list[str] = []
    cursor = ""
    while True:
        found = page(core, "scheduled", cursor, limit=5)
        seen += [job.id for job in found.jobs]
        gone = [job_id for job_id in core.state.jobs if job_id not in staying]
        if gone:  # a job that is not staying leaves between pages
            victim = rng.choice(gone)
            core.advance_to(core.state.jobs[victim].run_at_ms)
            for delivery in core.fetch(count=1000):
                (core.ack if delivery.id not in staying else core.release)(delivery)
        if not found.next:
            break
        cursor = found.next
    assert len(seen) == len(set(seen))
    assert staying - {job_id for job_id in core.state.jobs} <= set(seen)


def test_a_listing_stops_at_its_scan_budget_and_the_cursor_goes_on_from_there() -> None:
    core = Core()
    budget = L.ADMIN_SCAN_MAX
    specs = [M.JobSpec(type="t", queue="other", delay_ms=MINUTE_MS) for _ in range(1000)]
    for _ in range(budget // 1000 + 1):
        core.push_many(*specs)
    core.push(id="wanted", queue="q", delay_ms=2 * MINUTE_MS)
    first = page(core, "scheduled", queue="q")
    assert (first.jobs, first.scanned) == ([], budget)
    assert first.next
    second = page(core, "scheduled", first.next, queue="q")
    assert [job.id for job in second.jobs] == ["wanted"] and second.next == ""


def test_a_page_keeps_its_args_within_the_reply_bound_but_has_at_least_one_job() -> None:
    core = Core()
    big = M.JobSpec(type="t", args=A_MEGABYTE_OF_ARGS, delay_ms=MINUTE_MS)
    for _ in range(10):
        core.push_many(big)
    found = page(core, "scheduled", limit=10)
    per_page = L.FETCH_REPLY_ARGS_MAX_BYTES // len(A_MEGABYTE_OF_ARGS)
    assert len(found.jobs) == per_page and found.next
    assert sorted(listing(core, "scheduled", limit=10)) == sorted(core.state.jobs)


A_MEGABYTE_OF_ARGS = msgspec.Raw(msgspec.msgpack.encode(b"x" * (1024 * 1024)))


def test_a_cursor_the_broker_did_not_make_is_refused() -> None:
    core = Core()
    request = A.ListJobs(core.next_rid(), "dead", A.JobFilter(), "not-a-cursor")
    error = core.refused(request, ErrorCode.BAD_REQUEST)
    assert error.path == "$.cursor"


# --- totals ------------------------------------------------------------------


def test_each_record_counts_for_its_totals_by_queue() -> None:
    core = Core(tick_max_items=1000)
    core.push(queue="q", lease_ttl_ms=SECOND_MS, max_attempts=2, retry_base_ms=1)
    core.push(queue="q")
    first = core.lease("q")
    core.ack(core.lease("q"))
    core.advance(SECOND_MS)  # the first lease expires: a failed attempt
    core.advance(SECOND_MS)  # ... and its retry is due
    core.fail(core.lease("q"))  # its last attempt: dead
    counted: dict[tuple[str, str], int] = {}
    shadow = State(core.config)  # replays the records, tallying each before it applies
    for record in core.records:
        for key in tally(shadow, record):
            counted[key] = counted.get(key, 0) + 1
        apply(shadow, record)
    assert first.id in core.state.jobs
    assert counted == {
        ("q", "pushed"): 2,
        ("q", "acked"): 1,
        ("q", "failed"): 2,
        ("q", "expired"): 1,
        ("q", "dead"): 1,
    }
