"""Concurrency and rate limits: a queue (and each concurrency key in it)
has at most its limit leased; a rate-limited queue starts at most its
rate in any window. Every step of the harness checks the invariants, the
replay and the state image too."""

import msgspec
import pytest

from leash.broker.core import limits, next_start_ms
from leash.broker.core import records as R
from leash.broker.core.decide import has_ready
from leash.protocol import admin as A
from leash.protocol import messages as M
from leash.protocol.limits import PRIORITY_DEFAULT
from tests.unit.test_core_harness import SECOND_MS, Core


def set_limits(core: Core, queue: str = "default", **fields: int) -> None:
    core.expect(A.SetQueueLimits(core.next_rid(), queue, **fields), M.Ok)


def ids(deliveries: list[M.Delivery]) -> list[str]:
    return [delivery.id for delivery in deliveries]


def test_a_queue_leases_no_more_than_its_concurrency_and_an_ack_frees_a_slot() -> None:
    core = Core()
    pushed = [core.push(id=f"j{n}").id for n in range(5)]
    set_limits(core, concurrency=2)
    first = core.fetch(count=5)
    assert ids(first) == pushed[:2]
    assert core.fetch(count=5) == []
    assert not has_ready(core.state, "default", core.now_ms)
    core.ack(first[0])
    assert has_ready(core.state, "default", core.now_ms)
    assert ids(core.fetch(count=5)) == [pushed[2]]


def test_other_queues_are_served_while_one_is_at_its_limit() -> None:
    core = Core()
    core.push(id="a1", queue="a")
    core.push(id="a2", queue="a")
    core.push(id="b1", queue="b")
    set_limits(core, "a", concurrency=1)
    assert ids(core.fetch("a", "b", count=3)) == ["a1", "b1"]


def test_each_key_has_its_own_limit_and_keys_take_turns() -> None:
    core = Core()
    for job_id, key in [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"), ("b2", "b")]:
        core.push(id=job_id, concurrency_key=key)
    core.push(id="p1")
    set_limits(core, per_key=1)
    first = core.fetch(count=10)
    assert ids(first) == ["a1", "b1", "p1"]
    assert core.fetch(count=10) == []
    core.ack(first[0])
    assert ids(core.fetch(count=10)) == ["a2"]


def test_a_saturated_key_at_the_head_is_not_scanned_past() -> None:
    core = Core()
    core.push_many(*[M.JobSpec(type="t", concurrency_key="big") for _ in range(300)])
    core.push(id="other", concurrency_key="small")
    set_limits(core, per_key=1)
    core.lease()
    queue = core.state.queues["default"]
    # The bucket holds one entry for the small key, none for the saturated one.
    assert list(queue.buckets[PRIORITY_DEFAULT]) == [limits.token("small")]
    assert ids(core.fetch(count=5)) == ["other"]
    assert len(queue.lanes["big"][PRIORITY_DEFAULT]) == 299  # they wait, ready, in their lane
    assert core.state.counts["ready"] == 299


def test_a_fetch_takes_several_jobs_of_a_key_up_to_its_room() -> None:
    core = Core()
    for n in range(5):
        core.push(id=f"k{n}", concurrency_key="k")
    set_limits(core, per_key=3)
    assert ids(core.fetch(count=10)) == ["k0", "k1", "k2"]


@pytest.mark.parametrize("ending", ["fail", "release", "expiry", "delete"])
def test_every_end_of_a_lease_gives_the_keys_slot_back(ending: str) -> None:
    core = Core()
    core.push(id="x1", concurrency_key="c", lease_ttl_ms=10 * SECOND_MS)
    core.push(id="x2", concurrency_key="c")
    set_limits(core, per_key=1)
    held = core.lease()
    assert core.fetch() == []
    match ending:
        case "fail":
            core.fail(held)
        case "release":
            core.release(held)
        case "expiry":
            core.advance(11 * SECOND_MS)
        case "delete":
            core.expect(A.DeleteJob(core.next_rid(), held.id), M.Ok)
    assert core.state.queues["default"].key_leased == {}
    assert core.fetch() != []


def test_a_dead_worker_frees_its_keys_slots() -> None:
    core = Core(process_ttl_ms=5 * SECOND_MS, restart_grace_ms=5 * SECOND_MS)
    core.push(id="x1", concurrency_key="c")
    core.push(id="x2", concurrency_key="c")
    set_limits(core, per_key=1)
    core.lease(worker="doomed")
    assert core.fetch(worker="other") == []
    core.advance(60 * SECOND_MS)  # the doomed process misses its beats and dies
    assert "doomed" not in core.state.processes
    assert len(core.fetch(count=2, worker="other")) == 1  # its job is back; still one at a time


def test_lowering_a_limit_takes_no_lease_away_and_raising_it_serves_more() -> None:
    core = Core()
    for n in range(4):
        core.push(id=f"j{n}", concurrency_key="k")
    set_limits(core, concurrency=3)
    leased = core.fetch(count=3)
    set_limits(core, concurrency=1)
    assert core.state.counts["leased"] == 3
    assert core.fetch() == []
    core.ack(leased[0])
    core.ack(leased[1])
    assert core.fetch() == []  # still at 1 leased: the limit
    set_limits(core, concurrency=1, per_key=5)
    set_limits(core)  # no limits at all
    assert core.state.limits == {}
    assert ids(core.fetch(count=3)) == ["j3"]


def test_a_per_key_limit_set_later_blocks_and_unblocks_the_keys_lanes() -> None:
    core = Core()
    for n in range(3):
        core.push(id=f"k{n}", concurrency_key="k", priority=n % 2)
    core.lease()  # k1 (priority 1) first
    set_limits(core, per_key=1)
    assert core.fetch() == []
    set_limits(core, per_key=2)
    assert len(core.fetch()) == 1
    set_limits(core, per_key=0, concurrency=10)
    assert len(core.fetch()) == 1


def test_a_rate_limit_starts_at_most_its_rate_in_any_window() -> None:
    core = Core()
    for n in range(6):
        core.push(id=f"j{n}")
    set_limits(core, rate=2, rate_interval_ms=SECOND_MS)
    assert ids(core.fetch(count=6)) == ["j0", "j1"]
    core.advance(SECOND_MS // 2)
    assert core.fetch(count=6) == []
    assert next_start_ms(core.state, core.now_ms) == core.now_ms + SECOND_MS // 2
    assert not has_ready(core.state, "default", core.now_ms)
    core.advance(SECOND_MS // 2 - 1)
    assert core.fetch(count=6) == []
    core.advance(1)
    assert ids(core.fetch(count=6)) == ["j2", "j3"]
    assert core.state.starts["default"] == [core.now_ms, core.now_ms]


def test_the_rate_window_survives_a_restart() -> None:
    core = Core()
    for n in range(4):
        core.push(id=f"j{n}")
    set_limits(core, rate=2, rate_interval_ms=10 * SECOND_MS)
    core.fetch(count=2)
    core.restart()
    core.advance(SECOND_MS)
    assert core.fetch(count=2) == []
    core.advance(9 * SECOND_MS)
    assert len(core.fetch(count=2)) == 2


def test_a_rate_limit_needs_its_interval() -> None:
    body = msgspec.msgpack.encode({"op": "set_queue_limits", "rid": 1, "queue": "q", "rate": 5})
    with pytest.raises(msgspec.ValidationError, match="rate_interval_ms"):
        A.admin_request_decoder.decode(body)


def test_setting_the_same_limits_again_writes_nothing() -> None:
    core = Core()
    set_limits(core, "q", concurrency=4)
    before = len(core.records)
    set_limits(core, "q", concurrency=4)
    assert len(core.records) == before
    assert isinstance(core.records[-1], R.QueueLimitsSet)


def test_the_views_show_the_limits_their_use_and_the_jobs_key() -> None:
    core = Core()
    core.push(id="k1", concurrency_key="cust-7")
    set_limits(core, "default", concurrency=5, per_key=1, rate=10, rate_interval_ms=SECOND_MS)
    set_limits(core, "idle", concurrency=1)
    core.lease()
    queues = {q.name: q for q in core.expect(A.ListQueues(core.next_rid()), A.Queues).queues}
    shown = queues["default"]
    assert (shown.concurrency_limit, shown.per_key_limit, shown.rate_limit) == (5, 1, 10)
    assert (shown.rate_used, shown.keys_leased, shown.keys_saturated) == (1, 1, 1)
    assert queues["idle"].concurrency_limit == 1 and queues["idle"].ready == 0
    assert core.job("k1").concurrency_key == "cust-7"


def test_the_ready_listing_shows_keyed_jobs_saturated_or_not() -> None:
    core = Core()
    for job_id, key in [("a1", "a"), ("a2", "a"), ("b1", "b")]:
        core.push(id=job_id, concurrency_key=key)
    core.push(id="p1")
    set_limits(core, per_key=1)
    core.lease()  # a1: key a is saturated
    first = core.expect(A.ListJobs(core.next_rid(), "ready", limit=2), A.JobPage)
    rest = core.expect(A.ListJobs(core.next_rid(), "ready", cursor=first.next), A.JobPage)
    assert [job.id for job in first.jobs + rest.jobs] == ["b1", "p1", "a2"]


def test_a_keys_lanes_at_two_priorities_share_its_room_in_one_fetch() -> None:
    core = Core()
    for n, priority in enumerate([9, 9, 1, 1]):
        core.push(id=f"k{n}", concurrency_key="k", priority=priority)
    set_limits(core, per_key=3)
    assert ids(core.fetch(count=10)) == ["k0", "k1", "k2"]


def test_a_start_gives_the_configured_limits_only_where_they_differ() -> None:
    core = Core()
    set_limits(core, "kept", concurrency=2)
    set_limits(core, "changed", concurrency=2)
    configured = [
        R.QueueLimitsSet("kept", 2),
        R.QueueLimitsSet("changed", 5),
        R.QueueLimitsSet("new", rate=1, rate_interval_ms=1),
    ]
    seeded = limits.seeded_limits(core.state, configured)
    assert seeded == configured[1:]
    for record in seeded:
        core.apply(record)
    assert core.state.limits["changed"].concurrency == 5
    assert limits.seeded_limits(core.state, configured) == []
