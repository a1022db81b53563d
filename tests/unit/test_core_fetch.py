"""Fetch: which ready jobs a worker gets, in what order, and the lease it
gets with each; pause and resume; when a fetch may wait."""

from leash.broker.core import records as R
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from tests.unit.test_core_harness import SECOND_MS, START_MS, WORKER, Core


def ids(deliveries: list[M.Delivery]) -> list[str]:
    return [delivery.id for delivery in deliveries]


def test_a_fetch_takes_the_queues_in_the_order_given() -> None:
    core = Core()
    core.push(id="a1", queue="a", priority=9)
    core.push(id="b1", queue="b", priority=0)
    core.push(id="c1", queue="c")
    assert ids(core.fetch("b", "c", "a", count=3)) == ["b1", "c1", "a1"]


def test_a_later_queue_is_used_only_when_the_earlier_ones_run_dry() -> None:
    core = Core()
    core.push(id="a1", queue="a")
    core.push(id="a2", queue="a")
    core.push(id="b1", queue="b")
    assert ids(core.fetch("a", "b", count=2)) == ["a1", "a2"]
    assert ids(core.fetch("a", "b", count=2)) == ["b1"]


def test_priority_9_is_handed_out_before_priority_0() -> None:
    core = Core()
    for priority in (0, 5, 9, 1, 8):
        core.push(id=f"p{priority}", priority=priority)
    assert ids(core.fetch(count=5)) == ["p9", "p8", "p5", "p1", "p0"]


def test_jobs_of_one_priority_come_out_in_the_order_they_were_pushed() -> None:
    core = Core()
    for n in range(6):
        core.push(id=f"j{n}", priority=3 if n % 2 else 4)
    assert ids(core.fetch(count=6)) == ["j0", "j2", "j4", "j1", "j3", "j5"]


def test_count_bounds_the_jobs_of_one_fetch() -> None:
    core = Core()
    for n in range(5):
        core.push(id=f"j{n}")
    assert ids(core.fetch(count=2)) == ["j0", "j1"]
    assert ids(core.fetch(count=1)) == ["j2"]
    assert ids(core.fetch(count=10)) == ["j3", "j4"]
    assert core.fetch(count=10) == []


def test_one_fetch_writes_one_record_with_all_its_grants() -> None:
    core = Core()
    for n in range(3):
        core.push(id=f"j{n}")
    outcome = core.send(M.Fetch(1, ["default"], count=3), worker="w7")
    (record,) = outcome.records
    assert isinstance(record, R.JobsLeased)
    assert record.owner == "w7"
    assert [grant.id for grant in record.grants] == ["j0", "j1", "j2"]
    assert record.counter_after == core.state.counter


def test_a_delivery_carries_its_lease_and_what_the_worker_needs() -> None:
    core = Core()
    core.push(id="a", type="resize", queue="img", priority=2, max_attempts=4, lease_ttl_ms=5000)
    core.now_ms += 7
    (delivery,) = core.fetch("img")
    assert delivery == M.Delivery(
        id="a",
        queue="img",
        type="resize",
        args=M.EMPTY_ARGS,
        token=delivery.token,
        deadline_ms=START_MS + 7 + 5000,
        attempt=1,
        max_attempts=4,
        lease_ttl_ms=5000,
        priority=2,
        created_ms=START_MS,
    )
    view = core.job("a")
    assert (view.state, view.owner, view.token) == ("leased", WORKER, delivery.token)
    assert view.deadline_ms == delivery.deadline_ms


def test_a_leased_job_is_not_handed_out_again() -> None:
    core = Core()
    core.push(id="a")
    core.lease()
    assert core.fetch(count=5) == []


def test_a_paused_queue_hands_out_nothing_until_it_is_resumed() -> None:
    core = Core()
    core.push(id="a", queue="q")
    assert core.pause("q").records == [R.QueuePaused("q")]
    assert core.fetch("q", count=5) == []
    core.push(id="b", queue="q")  # a paused queue still takes pushes
    assert core.fetch("q", count=5) == []
    assert core.resume("q").records == [R.QueueResumed("q")]
    assert ids(core.fetch("q", count=5)) == ["a", "b"]


def test_a_paused_queue_does_not_hold_back_the_other_queues_of_a_fetch() -> None:
    core = Core()
    core.push(id="a", queue="a")
    core.push(id="b", queue="b")
    core.pause("a")
    assert ids(core.fetch("a", "b", count=5)) == ["b"]


def test_pausing_twice_or_resuming_a_running_queue_writes_nothing() -> None:
    core = Core()
    core.push(id="a", queue="q")
    assert core.resume("q").records == []
    core.pause("q")
    second = core.pause("q")
    assert (second.reply, second.records) == (M.Ok(core.rid), [])


def test_a_queue_paused_before_it_has_jobs_stays_paused() -> None:
    core = Core()
    core.pause("later")
    core.push(id="a", queue="later")
    assert core.fetch("later") == []
    core.resume("later")
    [job] = core.fetch("later")
    assert job.id == "a"
    assert core.state.queues["later"].counts["leased"] == 1  # kept while it has a job
    core.ack(job)
    assert "later" not in core.state.queues  # an empty running queue is not kept


def test_pausing_only_an_existing_queue_refuses_an_unknown_one_and_writes_nothing() -> None:
    core = Core()
    refused = core.pause("nope", create=False)
    assert refused.records == []
    assert isinstance(refused.reply, M.Error) and refused.reply.code == ErrorCode.NOT_FOUND
    assert (refused.reply.message, refused.reply.path) == ("no queue 'nope'", "$.queue")
    core.push(id="a", queue="q")
    assert core.pause("q", create=False).records == [R.QueuePaused("q")]
    assert core.pause("q", create=False).records == []  # a paused queue exists, even empty


def test_an_unknown_queue_gives_an_empty_fetch() -> None:
    core = Core()
    core.push(id="a")
    outcome = core.send(M.Fetch(1, ["nobody-pushes-here"], count=3))
    assert (outcome.reply, outcome.records, outcome.may_wait) == (M.Jobs(1, []), [], False)


def test_a_fetch_may_wait_only_when_it_asked_to_and_found_nothing() -> None:
    core = Core()
    assert core.send(M.Fetch(1, ["q"], wait_ms=1000)).may_wait is True
    assert core.send(M.Fetch(2, ["q"], wait_ms=0)).may_wait is False
    core.push(id="a", queue="q")
    found = core.send(M.Fetch(3, ["q"], wait_ms=1000))
    assert found.may_wait is False
    assert ids(found.reply.jobs) == ["a"]  # type: ignore[union-attr]


def test_a_fetch_of_a_paused_queue_may_wait() -> None:
    core = Core()
    core.push(id="a", queue="q")
    core.pause("q")
    assert core.send(M.Fetch(1, ["q"], wait_ms=1000)).may_wait is True


def test_a_queue_named_twice_is_taken_once() -> None:
    core = Core()
    core.push(id="a", queue="q")
    core.push(id="b", queue="q")
    core.push(id="c", queue="r")
    deliveries = core.fetch("q", "r", "q", count=10)
    assert ids(deliveries) == ["a", "b", "c"]
    assert len({delivery.token for delivery in deliveries}) == 3


def test_each_delivery_of_one_fetch_has_its_own_token() -> None:
    core = Core()
    for n in range(4):
        core.push(id=f"j{n}")
    tokens = [delivery.token for delivery in core.fetch(count=4)]
    assert tokens == sorted(set(tokens))
    assert all(token >> 32 == core.state.epoch for token in tokens)


def test_the_lease_deadline_is_the_fetch_time_plus_each_jobs_ttl() -> None:
    core = Core()
    core.push(id="short", lease_ttl_ms=SECOND_MS)
    core.push(id="long", lease_ttl_ms=60 * SECOND_MS)
    short, long = core.fetch(count=2)
    assert short.deadline_ms == START_MS + SECOND_MS
    assert long.deadline_ms == START_MS + 60 * SECOND_MS
