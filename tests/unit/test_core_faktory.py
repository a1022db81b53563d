"""Faktory's commands decided by the core (core/faktory.py), with the core
harness: every record round-trips, replays and survives a state image, so
what a unit keeps is checked across a restart too."""

from typing import Any

import msgspec
import pytest

from leash.broker.core import grows_state
from leash.broker.core.faktory import Outcome, unit_json
from leash.protocol import admin as A
from leash.protocol import faktory as F
from leash.protocol import faktory_units as U
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from tests.unit.test_core_harness import SECOND_MS, START_MS, WORKER, Core, args

PRODUCER = ""  # a connection whose HELLO had no wid


def command(line: bytes) -> Any:
    parsed = F.parse_line(line, 1 << 20)
    assert not isinstance(parsed, F.Refused), parsed
    return parsed


def push(core: Core, unit: dict[str, Any]) -> Outcome:
    fields = {"jobtype": "t", "args": [], **unit}
    return core.faktory(command(b"PUSH " + msgspec.json.encode(fields)), PRODUCER)


def fetched(core: Core, *queues: str, worker: str = WORKER) -> dict[str, Any] | None:
    reply = core.faktory(F.Fetch(list(queues or ["default"])), worker).reply
    assert isinstance(reply, F.Bulk), reply
    return None if reply.data is None else msgspec.json.decode(reply.data)


def refused(outcome: Outcome, code: ErrorCode) -> str:
    assert isinstance(outcome.reply, M.Error), outcome.reply
    assert outcome.reply.code == code, outcome.reply
    assert outcome.records == []
    return outcome.reply.message


def test_a_pushed_unit_is_fetched_with_its_fields_and_kept_ones_byte_for_byte() -> None:
    core = Core()
    line = (
        b'PUSH {"jid":"order-0001","jobtype":"mail","args":[1,"x",{"y":[2.5,null]}],'
        b'"queue":"mail","priority":7,"reserve_for":120,"retry":3,"backtrace":4,'
        b'"custom":{"trace":"ab","n":1.50},"created_at":"2024-05-06T07:08:09.123456789Z",'
        b'"enqueued_at":"ignored","zz":[ 1 ]}'
    )
    assert isinstance(core.faktory(command(line), PRODUCER).reply, M.Ok)
    unit = fetched(core, "mail")
    assert unit is not None
    assert {k: unit[k] for k in ("jid", "jobtype", "queue", "priority", "reserve_for")} == {
        "jid": "order-0001",
        "jobtype": "mail",
        "queue": "mail",
        "priority": 7,
        "reserve_for": 120,
    }
    assert unit["args"] == [1, "x", {"y": [2.5, None]}] and unit["retry"] == 3
    assert unit["created_at"] == "2024-05-06T07:08:09.123456789Z"  # as the client sent it
    assert unit["enqueued_at"] == "2023-11-14T22:13:20.000Z"  # the broker's, not the client's
    assert unit["custom"] == {"trace": "ab", "n": 1.5} and unit["zz"] == [1]
    raw = unit_json(core.state.jobs["order-0001"])
    assert b'"custom":{"trace":"ab","n":1.50}' in raw and b'"zz":[ 1 ]' in raw
    job = core.job("order-0001")
    assert (job.max_attempts, job.lease_ttl_ms, job.priority) == (4, 120 * SECOND_MS, 7)


@pytest.mark.parametrize(
    ("retry", "attempts"), [(None, 26), (25, 26), (1, 2), (-1, 1), (0, 1), (999, 1000)]
)
def test_retry_is_the_attempts_after_the_first(retry: int | None, attempts: int) -> None:
    core = Core()
    push(core, {"jid": "job-00001", "retry": retry})
    assert core.job("job-00001").max_attempts == attempts
    unit = fetched(core)
    assert unit is not None and unit["retry"] == (25 if retry is None else retry)


def test_retry_minus_one_dies_at_the_first_failure_and_stays_in_the_dead_set() -> None:
    core = Core()
    push(core, {"jid": "job-00001", "retry": -1})
    fetched(core)
    core.faktory(F.Fail("job-00001", M.ErrorInfo("E", "m")))
    assert core.job("job-00001").state == "dead"


def test_retry_zero_is_forgotten_when_its_one_attempt_fails_by_fail_expiry_or_death() -> None:
    core = Core()
    for jid in ("job-fail1", "job-expir", "job-death"):
        push(core, {"jid": jid, "retry": 0, "reserve_for": 60, "custom": {"k": 1}})
    fetched(core)
    assert isinstance(core.faktory(F.Fail("job-fail1", M.ErrorInfo("E", "m"))).reply, M.Ok)
    assert "job-fail1" not in core.state.jobs
    fetched(core)
    core.advance(61 * SECOND_MS)  # the lease expires: a failed attempt
    assert "job-expir" not in core.state.jobs
    fetched(core, worker="w2")
    core.expect(A.Control(core.next_rid(), "w2", "terminate"), M.Ok)
    assert core.state.counts["leased"] == 1
    core.send(A.KillJob(core.next_rid(), "job-death"))  # an operator's kill keeps it dead
    assert core.job("job-death").state == "dead"
    assert core.state.counts == {"ready": 0, "scheduled": 0, "leased": 0, "retrying": 0, "dead": 1}


def test_ack_is_taken_only_from_the_process_that_holds_the_lease() -> None:
    core = Core()
    push(core, {"jid": "job-00001", "reserve_for": 60})
    fetched(core)
    refused(core.faktory(F.Ack("job-00001"), "w2"), ErrorCode.STALE_LEASE)
    refused(core.faktory(F.Ack("job-00001"), PRODUCER), ErrorCode.BAD_REQUEST)
    refused(core.faktory(F.Ack("nobody-ever")), ErrorCode.NOT_FOUND)
    core.advance(61 * SECOND_MS)  # expired: ready again at once, then leased by w2
    message = refused(core.faktory(F.Ack("job-00001")), ErrorCode.STALE_LEASE)
    assert "ready" in message
    assert fetched(core, worker="w2") is not None
    refused(core.faktory(F.Ack("job-00001")), ErrorCode.STALE_LEASE)  # a late ack of w1
    assert isinstance(core.faktory(F.Ack("job-00001"), "w2").reply, M.Ok)
    refused(core.faktory(F.Ack("job-00001"), "w2"), ErrorCode.NOT_FOUND)


def test_fail_keeps_the_error_and_the_next_fetch_shows_the_failure() -> None:
    core = Core()
    push(core, {"jid": "job-00001", "retry": 3})
    fetched(core)
    error = M.ErrorInfo(type="KeyError", message="'x'", backtrace="a.py:1\nb.py:2")
    assert isinstance(core.faktory(F.Fail("job-00001", error)).reply, M.Ok)
    job = core.job("job-00001")
    assert (job.state, job.last_error) == ("retrying", error)
    core.advance_to(job.run_at_ms or 0)
    unit = fetched(core)
    assert unit is not None and unit["failure"] == {
        "retry_count": 0,
        "remaining": 3,
        "errtype": "KeyError",
        "message": "'x'",
        "backtrace": ["a.py:1", "b.py:2"],
    }
    core.faktory(F.Fail("job-00001", error))
    failure = msgspec.json.decode(unit_json(core.state.jobs["job-00001"]))["failure"]
    assert (failure["retry_count"], failure["remaining"]) == (1, 2) and "next_at" in failure


def test_at_schedules_a_unit_and_a_time_past_or_empty_makes_it_ready() -> None:
    core = Core()
    push(core, {"jid": "job-later", "at": "2023-11-14T22:14:20+00:00"})  # a minute ahead
    push(core, {"jid": "job-past1", "at": "2001-01-01T00:00:00Z"})
    push(core, {"jid": "job-blank", "at": ""})
    assert core.job("job-later").run_at_ms == START_MS + 60 * SECOND_MS
    assert core.ready_ids() == ["job-past1", "job-blank"]
    message = refused(push(core, {"jid": "job-far-1", "at": "2040-01-01T00:00:00Z"}), "bad_request")
    assert "5 years" in message


def test_pushb_pushes_the_good_units_and_answers_the_bad_ones_by_jid() -> None:
    core = Core()
    units = [
        {"jid": "job-00001", "jobtype": "t", "args": []},
        {"jid": "short", "jobtype": "t", "args": []},
        {"jid": "job-00002", "jobtype": "t"},
        {"jid": "job-00003", "jobtype": "t", "args": [], "at": "2040-01-01T00:00:00Z"},
        {"jid": "job-00001", "jobtype": "t", "args": [9]},  # known by then: nothing added
        7,
    ]
    outcome = core.faktory(command(b"PUSHB " + msgspec.json.encode(units)), PRODUCER)
    assert isinstance(outcome.reply, F.Bulk) and outcome.reply.data is not None
    answer = msgspec.json.decode(outcome.reply.data)
    assert set(answer) == {"short", "job-00002", "job-00003", "#5"}
    assert core.ready_ids() == ["job-00001"]
    assert msgspec.msgpack.decode(core.state.jobs["job-00001"].args) == []


def test_a_known_jid_adds_nothing() -> None:
    core = Core()
    push(core, {"jid": "job-00001", "args": [1]})
    outcome = push(core, {"jid": "job-00001", "args": [2]})
    assert isinstance(outcome.reply, M.Ok) and outcome.records == []


def test_a_jid_may_start_with_an_underscore_unless_it_looks_like_a_broker_id() -> None:
    core = Core()
    push(core, {"jid": "_Ab-9_xYzq1"})  # base64url, as Faktory's Go client makes them
    assert "_Ab-9_xYzq1" in core.state.jobs
    counter = core.state.counter
    push(core, {"jid": "_Zb-9_xYzq2"})
    assert core.state.counter == counter, "a client's id takes no number of the counter"
    for jid in ("_1.2abcdefg", "_cb:abcdefg"):
        with pytest.raises(U.UnitError, match="broker's own ids"):
            U.parse_unit(msgspec.json.encode({"jid": jid, "jobtype": "t", "args": []}), 100)


def test_fetch_tries_the_queues_in_order_and_a_quiet_process_gets_nothing() -> None:
    core = Core()
    push(core, {"jid": "job-low-1", "queue": "low", "priority": 9})
    push(core, {"jid": "job-high1", "queue": "high", "priority": 1})
    first = fetched(core, "high", "low")
    assert first is not None and first["jid"] == "job-high1"
    core.expect(A.Control(core.next_rid(), WORKER, "quiet"), M.Ok)
    outcome = core.faktory(F.Fetch(["low"]))
    assert outcome.reply == F.Bulk(None) and outcome.may_wait and outcome.records == []
    refused(core.faktory(F.Fetch(["low"]), PRODUCER), ErrorCode.BAD_REQUEST)


def test_an_empty_fetch_waits() -> None:
    core = Core()
    outcome = core.faktory(F.Fetch(["default"]))
    assert outcome.reply == F.Bulk(None) and outcome.may_wait


def test_beat_answers_the_process_state_and_records_what_the_consumer_says() -> None:
    core = Core()
    assert isinstance(core.faktory(F.Beat(WORKER, "")).reply, M.Ok)
    quiet = core.faktory(F.Beat(WORKER, "quiet"))
    assert quiet.reply == F.Bulk(b'{"state":"quiet"}')
    assert core.state.processes[WORKER].state == "quiet"
    core.expect(A.Control(core.next_rid(), WORKER, "terminate"), M.Ok)
    assert core.faktory(F.Beat(WORKER, "quiet")).reply == F.Bulk(b'{"state":"terminate"}')
    refused(core.faktory(F.Beat("someone-else", "")), ErrorCode.BAD_REQUEST)
    refused(core.faktory(F.Beat(WORKER, ""), PRODUCER), ErrorCode.BAD_REQUEST)


def test_a_faktory_consumer_has_the_faktory_ttl_and_after_a_restart_the_restart_grace() -> None:
    core = Core(
        process_ttl_ms=15 * SECOND_MS,
        faktory_process_ttl_ms=60 * SECOND_MS,
        restart_grace_ms=3 * SECOND_MS,
    )
    core.faktory(F.Beat("fk-worker", ""), "fk-worker")
    core.touch("leash-worker")
    deadlines = {w: p.beat_deadline_ms for w, p in core.state.processes.items()}
    assert deadlines["fk-worker"] == START_MS + 60 * SECOND_MS
    assert deadlines["leash-worker"] == START_MS + 15 * SECOND_MS
    core.restart()
    assert {p.beat_deadline_ms for p in core.state.processes.values()} == {
        START_MS + 3 * SECOND_MS
    }, "every process, whatever its protocol, has the restart grace to come back"
    core.faktory(F.Beat("fk-worker", ""), "fk-worker")  # back in time: its own TTL again
    assert core.state.processes["fk-worker"].beat_deadline_ms == START_MS + 60 * SECOND_MS


def test_a_faktory_consumer_not_back_within_the_restart_grace_loses_its_lease_at_once() -> None:
    core = Core(faktory_process_ttl_ms=60 * SECOND_MS, restart_grace_ms=3 * SECOND_MS)
    push(core, {"jid": "held-0001"})
    assert fetched(core, worker="fk-worker") is not None
    core.restart()
    core.advance(3 * SECOND_MS)
    assert "fk-worker" not in core.state.processes
    job = core.state.jobs["held-0001"]
    assert (job.state, job.failures, job.lost_leases) == ("ready", 1, 1)
    refused(core.faktory(F.Ack("held-0001"), "fk-worker"), ErrorCode.STALE_LEASE)
    unit = fetched(core, worker="fk-other")
    assert unit is not None and unit["jid"] == "held-0001"


def test_a_broker_low_on_disk_refuses_faktory_pushes_and_serves_the_rest() -> None:
    growing = [command(b'PUSH {"jid":"job-00001","jobtype":"t","args":[]}'), command(b"PUSHB []")]
    assert all(grows_state(request) for request in growing)
    others = [F.Fetch(["q"]), F.Ack("j"), F.Fail("j", M.ErrorInfo()), F.Beat("w", "")]
    assert not any(grows_state(request) for request in others)


def test_jobs_cross_the_protocols_both_ways() -> None:
    core = Core()
    push(core, {"jid": "from-fwp-1", "args": [1, {"a": 2}]})
    (delivery,) = core.fetch()
    assert msgspec.msgpack.decode(delivery.args) == [1, {"a": 2}]
    core.ack(delivery)
    core.push(id="from-leash", args=args({"to": "ada"}), max_attempts=5, lease_ttl_ms=90_000)
    core.push(id="from-leash-2", args=args([3, b"\x00"]))
    unit = fetched(core)
    assert unit is not None
    assert (unit["args"], unit["retry"], unit["reserve_for"]) == ([{"to": "ada"}], 4, 90)
    unit = fetched(core)
    assert unit is not None and unit["args"] == [3, "AA=="]  # bytes, as base64
    assert isinstance(core.faktory(F.Ack("from-leash")).reply, M.Ok)
