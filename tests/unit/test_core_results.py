"""Results (core/results.py): kept with the ack that carries them, answered
by get_result, dropped when promised or past the bound in bytes; oversize
refused with nothing changed. The harness checks replay, the state image
and the invariants after every record."""

import msgspec

from leash.broker.core import records as R
from leash.protocol import admin as A
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from tests.unit.test_core_harness import SECOND_MS, Core

MINUTE_MS = 60 * SECOND_MS
VALUE = msgspec.msgpack.encode({"rows": 17})


def result_of(core: Core, job_id: str, wait_ms: int = 0) -> M.JobResult:
    return core.expect(M.GetResult(core.next_rid(), job_id, wait_ms), M.JobResult)


def ack_with(core: Core, delivery: M.Delivery, value: bytes) -> M.Ok:
    return core.expect(M.Ack(core.next_rid(), delivery.id, delivery.token, value), M.Ok)


def test_a_result_is_kept_with_its_ack_and_answered_until_its_time_passes() -> None:
    core = Core()
    core.push(id="a", keep_result_ms=MINUTE_MS)
    delivery = core.lease()
    assert delivery.keep_result
    assert result_of(core, "a").state == "leased"  # not finished: the state it is in
    ack_with(core, delivery, VALUE)
    assert core.records[-1] == R.ResultsAcked(
        [M.LeaseRef("a", delivery.token)], [VALUE], core.now_ms
    )
    assert (result_of(core, "a").state, result_of(core, "a").value) == ("succeeded", VALUE)
    assert core.advance(MINUTE_MS - 1) == []
    assert core.advance(1) == [R.ResultsDropped(["a"], core.now_ms)]
    core.refused(M.GetResult(core.next_rid(), "a"), ErrorCode.NOT_FOUND)
    assert core.job("a").state == "succeeded"  # the history keeps the job's end


def test_a_result_over_the_limit_is_refused_and_the_job_stays_leased() -> None:
    core = Core(result_max_bytes=8)
    core.push(id="a", keep_result_ms=MINUTE_MS)
    delivery = core.lease()
    refused = core.refused(
        M.Ack(core.next_rid(), "a", delivery.token, b"\xa9123456789"), ErrorCode.TOO_LARGE
    )
    assert refused.path == "$.result" and "still leased" in refused.message
    assert core.job("a").state == "leased"
    many = core.expect(
        M.AckMany(core.next_rid(), [M.LeaseRef("a", delivery.token)], [b"\xa9123456789"]),
        M.AckedMany,
    )
    assert [item.code for item in many.results] == [ErrorCode.TOO_LARGE]
    ack_with(core, delivery, b"\xa3abc")
    assert result_of(core, "a").value == b"\xa3abc"


def test_a_result_for_a_job_that_did_not_ask_is_not_kept() -> None:
    core = Core()
    core.push(id="a")
    delivery = core.lease()
    assert not delivery.keep_result
    ack_with(core, delivery, VALUE)
    assert core.records[-1] == R.JobsAcked([M.LeaseRef("a", delivery.token)], core.now_ms)
    assert core.state.results == {}
    refused = core.refused(M.GetResult(core.next_rid(), "a"), ErrorCode.NOT_FOUND)
    assert "no result is kept" in refused.message


def test_a_dead_job_answers_its_last_error_and_a_deleted_one_says_so() -> None:
    core = Core()
    core.push(id="d", keep_result_ms=MINUTE_MS, max_attempts=1)
    core.fail(core.lease(), M.ErrorInfo(type="ValueError", message="bad row"))
    answer = result_of(core, "d")
    assert (answer.state, answer.error) == (
        "dead",
        M.ErrorInfo(type="ValueError", message="bad row"),
    )
    core.push(id="x", keep_result_ms=MINUTE_MS)
    core.expect(A.DeleteJob(core.next_rid(), "x"), M.Ok)
    answer = result_of(core, "x")
    assert answer.state == "deleted" and answer.error is not None
    assert answer.error.type == "JobDeleted"
    core.refused(M.GetResult(core.next_rid(), "never"), ErrorCode.NOT_FOUND)


def test_a_get_result_for_a_job_not_finished_may_wait() -> None:
    core = Core()
    core.push(id="a", keep_result_ms=MINUTE_MS)
    outcome = core.send(M.GetResult(core.next_rid(), "a", 1000))
    assert outcome.may_wait and outcome.records == []
    assert not core.send(M.GetResult(core.next_rid(), "a", 0)).may_wait


def test_past_the_bound_in_bytes_the_results_nearest_their_end_are_dropped() -> None:
    core = Core(results_max_bytes=2 * len(VALUE))
    for job_id, keep_ms in (("long", 10 * MINUTE_MS), ("short", MINUTE_MS), ("mid", 5 * MINUTE_MS)):
        core.push(id=job_id, keep_result_ms=keep_ms)
        ack_with(core, core.lease(), VALUE)
    assert core.state.result_bytes == 3 * len(VALUE)
    assert core.tick() == [R.ResultsDropped(["short"], core.now_ms)]
    assert set(core.state.results) == {"long", "mid"}
    assert core.state.result_bytes == 2 * len(VALUE)


def test_results_survive_a_restart_and_keep_their_time() -> None:
    core = Core()
    core.push(id="a", keep_result_ms=MINUTE_MS)
    ack_with(core, core.lease(), VALUE)
    core.restart()
    assert result_of(core, "a").value == VALUE
    assert core.advance(MINUTE_MS) == [R.ResultsDropped(["a"], core.now_ms)]


def test_an_id_acked_again_keeps_only_its_latest_result() -> None:
    core = Core()
    core.push(id="a", keep_result_ms=MINUTE_MS)
    ack_with(core, core.lease(), VALUE)
    core.advance(SECOND_MS)
    core.push(id="a", keep_result_ms=2 * MINUTE_MS)
    ack_with(core, core.lease(), b"\x01")
    assert core.state.results == {"a": (core.now_ms + 2 * MINUTE_MS, b"\x01")}
    assert core.state.result_bytes == 1
    assert core.advance(MINUTE_MS) == []  # the first result's time: its timer is stale
