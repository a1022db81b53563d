"""Push and push_many: defaults, ids (made by the broker or chosen by the
producer), idempotent retries, and when a job becomes ready."""

import msgspec
import pytest

from leash.broker.core import records as R
from leash.protocol import limits as L
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from tests.unit.test_core_harness import SECOND_MS, START_MS, Core, args


def test_a_push_with_only_a_type_makes_a_ready_job_with_the_protocol_defaults() -> None:
    core = Core()
    pushed = core.push(type="send_mail")
    assert (pushed.created, pushed.state) == (True, "ready")
    view = core.job(pushed.id)
    assert view == M.JobView(
        id=pushed.id,
        queue="default",
        type="send_mail",
        args=M.EMPTY_ARGS,
        state="ready",
        priority=L.PRIORITY_DEFAULT,
        attempt=0,
        max_attempts=L.MAX_ATTEMPTS_DEFAULT,
        lease_ttl_ms=L.LEASE_TTL_DEFAULT_MS,
        created_ms=START_MS,
    )
    assert core.ready_ids() == [pushed.id]


def test_a_push_keeps_every_field_of_its_spec() -> None:
    core = Core()
    spec = M.JobSpec(
        type="resize",
        queue="images",
        args=args({"path": "/a.png", "sizes": [64, 128]}),
        id="img-1",
        priority=7,
        max_attempts=3,
        lease_ttl_ms=60 * SECOND_MS,
        retry_base_ms=500,
    )
    core.expect(M.Push(1, spec), M.Pushed)
    view = core.job("img-1")
    assert (view.queue, view.type, view.priority) == ("images", "resize", 7)
    assert (view.max_attempts, view.lease_ttl_ms, view.retry_base_ms) == (3, 60_000, 500)
    assert msgspec.msgpack.decode(view.args) == {"path": "/a.png", "sizes": [64, 128]}


def test_broker_made_ids_start_with_the_prefix_and_never_repeat_across_boots() -> None:
    core = Core()
    ids = [core.push().id for _ in range(3)]
    core.push_many(M.JobSpec(type="t"), M.JobSpec(type="t"))
    ids += [job_id for job_id in core.state.jobs if job_id not in ids]
    core.boot()
    ids += [core.push().id for _ in range(3)]
    core.restart()
    ids += [core.push().id for _ in range(3)]
    assert all(job_id.startswith(L.SERVER_ID_PREFIX) for job_id in ids)
    assert len(ids) == len(set(ids)) == 11


def test_broker_made_ids_share_the_epoch_counter_with_tokens_without_collision() -> None:
    core = Core()
    first = core.push()
    delivery = core.lease()
    second = core.push()
    # One counter per epoch numbers both: id, token, id took 1, 2 and 3.
    assert (first.id, second.id) == ("_1.1", "_1.3")
    assert delivery.token == (1 << 32) | 2


def test_pushing_a_known_client_id_returns_the_existing_job_and_writes_nothing() -> None:
    core = Core()
    core.push(id="order-7", queue="mail", delay_ms=60 * SECOND_MS)
    before = core.job("order-7")
    records_before = len(core.records)
    again = core.send(M.Push(9, M.JobSpec(type="other", queue="sms", id="order-7")))
    assert again.reply == M.Pushed(9, "order-7", False, "scheduled")
    assert again.records == []
    assert len(core.records) == records_before
    assert core.job("order-7") == before


def test_a_known_client_id_reports_the_jobs_current_state() -> None:
    core = Core()
    core.push(id="order-7")
    core.lease()
    assert core.push(id="order-7") == M.Pushed(core.rid, "order-7", False, "leased")


def test_push_many_creates_one_job_for_a_client_id_repeated_inside_it() -> None:
    core = Core()
    core.push(id="known", queue="q")
    outcome = core.send(
        M.PushMany(
            1,
            [
                M.JobSpec(type="t", id="a", delay_ms=SECOND_MS),
                M.JobSpec(type="other", id="a"),
                M.JobSpec(type="t", id="known"),
                M.JobSpec(type="t"),
                M.JobSpec(type="t", id="b"),
            ],
        )
    )
    assert isinstance(outcome.reply, M.PushedMany)
    results = outcome.reply.results
    assert [(r.id, r.created, r.state) for r in results[:3]] == [
        ("a", True, "scheduled"),
        ("a", False, "scheduled"),
        ("known", False, "ready"),
    ]
    assert results[3].id.startswith(L.SERVER_ID_PREFIX) and results[3].created
    assert (results[4].id, results[4].created) == ("b", True)
    (record,) = outcome.records
    assert isinstance(record, R.JobsPushed)
    assert [new.id for new in record.jobs] == ["a", results[3].id, "b"]
    assert core.job("a").type == "t"


def test_push_many_with_only_known_ids_writes_nothing() -> None:
    core = Core()
    core.push(id="a")
    outcome = core.send(M.PushMany(1, [M.JobSpec(type="t", id="a")] * 2))
    assert outcome.records == []


def test_push_many_gives_each_broker_made_id_its_own_number() -> None:
    core = Core()
    pushed = core.push_many(*[M.JobSpec(type="t") for _ in range(5)])
    ids = [result.id for result in pushed.results]
    assert len(set(ids)) == 5
    assert core.push().id not in ids


def test_push_many_is_refused_whole_when_one_job_is_bad() -> None:
    core = Core()
    too_far_ms = START_MS + L.SCHEDULE_HORIZON_MS + 1
    error = core.refused(
        M.PushMany(1, [M.JobSpec(type="t"), M.JobSpec(type="t", run_at_ms=too_far_ms)]),
        ErrorCode.BAD_REQUEST,
    )
    assert error.path == "$.jobs[1].run_at_ms"
    assert core.state.jobs == {}


def test_a_delay_schedules_the_job_at_now_plus_the_delay() -> None:
    core = Core()
    pushed = core.push(delay_ms=90 * SECOND_MS)
    assert pushed.state == "scheduled"
    view = core.job(pushed.id)
    assert (view.state, view.run_at_ms) == ("scheduled", START_MS + 90_000)
    assert core.fetch() == []


def test_a_run_at_in_the_future_schedules_the_job_at_that_time() -> None:
    core = Core()
    pushed = core.push(run_at_ms=START_MS + 5)
    assert core.job(pushed.id).run_at_ms == START_MS + 5


@pytest.mark.parametrize(
    "when",
    [{"delay_ms": 0}, {"run_at_ms": START_MS}, {"run_at_ms": START_MS - 1}, {"run_at_ms": 0}],
)
def test_a_zero_delay_or_a_run_at_not_in_the_future_makes_the_job_ready(
    when: dict[str, int],
) -> None:
    core = Core()
    pushed = core.push(**when)
    assert pushed.state == "ready"
    view = core.job(pushed.id)
    assert (view.state, view.run_at_ms) == ("ready", None)
    assert [d.id for d in core.fetch()] == [pushed.id]


def test_a_run_at_beyond_the_schedule_horizon_is_a_bad_request() -> None:
    core = Core()
    too_far = M.Push(1, M.JobSpec(type="t", run_at_ms=START_MS + L.SCHEDULE_HORIZON_MS + 1))
    error = core.refused(too_far, ErrorCode.BAD_REQUEST)
    assert error.path == "$.job.run_at_ms"
    assert core.push(run_at_ms=START_MS + L.SCHEDULE_HORIZON_MS).state == "scheduled"


def test_the_longest_delay_the_protocol_allows_is_accepted() -> None:
    core = Core()
    assert core.push(delay_ms=L.SCHEDULE_HORIZON_MS).state == "scheduled"


def test_run_at_and_delay_together_are_a_bad_request() -> None:
    # A spec with both cannot be built: the edge refuses it before the core.
    with pytest.raises(ValueError, match="not both"):
        M.JobSpec(type="t", run_at_ms=START_MS + 1, delay_ms=1)
    body = msgspec.msgpack.encode(
        {"op": "push", "rid": 4, "job": {"type": "t", "run_at_ms": 1, "delay_ms": 2}}
    )
    with pytest.raises(M.BadRequest) as refused:
        M.decode_request(body)
    assert (refused.value.rid, refused.value.code) == (4, ErrorCode.BAD_REQUEST)


def test_the_args_are_kept_as_the_producers_bytes() -> None:
    core = Core()
    raw = args([1, "two", {"three": 3.0}, None, b"\x00\xff"])
    core.push(id="a", args=raw)
    (delivery,) = core.fetch()
    assert bytes(delivery.args) == bytes(raw)
    assert msgspec.msgpack.decode(delivery.args) == [1, "two", {"three": 3.0}, None, b"\x00\xff"]
