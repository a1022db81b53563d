"""Time limits and progress in the core: a lease never runs past its job's
time limit, the tick fails it with TimeLimitExceeded (the retry policy of
a failure), and a progress report extends the lease as extend does and is
kept on the job while its lease lasts. Every step of the harness checks the
invariants (no lease past its limit among them), the replay and the image."""

from leash.broker.core import records as R
from leash.broker.core.tally import tally
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from tests.unit.test_core_harness import SECOND_MS, START_MS, Core


def test_a_lease_is_granted_for_the_shorter_of_its_ttl_and_the_time_limit() -> None:
    core = Core()
    core.push(id="short", time_limit_ms=5 * SECOND_MS, lease_ttl_ms=30 * SECOND_MS)
    core.push(id="long", time_limit_ms=60 * SECOND_MS, lease_ttl_ms=30 * SECOND_MS)
    short, long = core.fetch("default", count=2)
    assert (short.deadline_ms, short.time_limit_ms) == (START_MS + 5 * SECOND_MS, 5 * SECOND_MS)
    assert long.deadline_ms == START_MS + 30 * SECOND_MS
    assert core.job("short").time_limit_ms == 5 * SECOND_MS


def test_extend_is_capped_at_the_time_limit_and_answers_the_capped_deadline() -> None:
    core = Core()
    core.push(time_limit_ms=45 * SECOND_MS, lease_ttl_ms=30 * SECOND_MS)
    delivery = core.lease()
    core.advance(20 * SECOND_MS)
    assert core.extend(delivery).deadline_ms == START_MS + 45 * SECOND_MS
    assert core.job(delivery.id).deadline_ms == START_MS + 45 * SECOND_MS


def test_the_tick_fails_an_attempt_at_its_limit_with_time_limit_exceeded_and_retries_it() -> None:
    core = Core()
    core.push(id="hung", queue="q", time_limit_ms=10 * SECOND_MS, retry_base_ms=SECOND_MS)
    delivery = core.lease("q")
    core.advance(5 * SECOND_MS)
    core.extend(delivery)
    assert core.advance(5 * SECOND_MS - 1) == []
    (record,) = core.advance(1)
    assert isinstance(record, R.AttemptsFailed)
    (failure,) = record.failures
    assert failure.error.type == "TimeLimitExceeded" and "10 s" in failure.error.message
    assert failure.retry_at_ms is not None and failure.retry_at_ms > failure.at_ms  # backoff
    view = core.job("hung")
    assert view.state == "retrying" and view.attempts[-1].outcome == "failed"
    assert tally(core.state, R.AttemptsFailed([failure])) == [
        ("q", "failed"),
        ("q", "time_limited"),
    ]


def test_an_attempt_over_its_limit_on_its_last_attempt_is_dead() -> None:
    core = Core()
    core.push(id="hung", time_limit_ms=SECOND_MS, max_attempts=1)
    core.lease()
    core.advance(SECOND_MS)
    view = core.job("hung")
    assert view.state == "dead" and view.last_error is not None
    assert view.last_error.type == "TimeLimitExceeded"


def test_a_lease_that_expires_before_its_limit_is_lost_as_any_other() -> None:
    core = Core()
    core.push(id="slow", time_limit_ms=60 * SECOND_MS, lease_ttl_ms=10 * SECOND_MS)
    core.lease()
    (record,) = core.advance(10 * SECOND_MS)
    assert isinstance(record, R.AttemptsFailed)
    assert record.failures[0].error.type == "LeaseExpired"
    assert core.job("slow").state == "ready"


def test_a_time_limit_holds_after_a_restart() -> None:
    core = Core()
    core.push(id="hung", time_limit_ms=10 * SECOND_MS, lease_ttl_ms=60 * SECOND_MS)
    delivery = core.lease()
    core.restart()
    core.touch()
    assert core.extend(delivery).deadline_ms == START_MS + 10 * SECOND_MS


def test_a_time_limit_out_of_bounds_is_refused_at_decoding() -> None:
    body = M.encoder.encode({"op": "push", "rid": 1, "job": {"type": "t", "time_limit_ms": 5}})
    try:
        M.decode_request(body)
    except M.BadRequest as exc:
        assert exc.code == ErrorCode.BAD_REQUEST and exc.path == "$.job.time_limit_ms"
    else:
        raise AssertionError("a 5 ms time limit decoded")


def progress(core: Core, delivery: M.Delivery, percent: int, message: str = "") -> M.Extended:
    request = M.Progress(core.next_rid(), delivery.id, delivery.token, percent, message)
    return core.expect(request, M.Extended)


def test_progress_extends_the_lease_and_is_kept_on_the_job_while_it_runs() -> None:
    core = Core()
    core.push(id="p", lease_ttl_ms=30 * SECOND_MS)
    delivery = core.lease()
    core.advance(20 * SECOND_MS)
    reply = progress(core, delivery, 40, "4 of 10 files")
    assert reply.deadline_ms == core.now_ms + 30 * SECOND_MS
    view = core.job("p")
    assert (view.progress, view.progress_message, view.progress_ms) == (
        40,
        "4 of 10 files",
        core.now_ms,
    )
    assert view.deadline_ms == reply.deadline_ms


def test_progress_is_capped_at_the_time_limit_as_extend_is() -> None:
    core = Core()
    core.push(id="p", time_limit_ms=40 * SECOND_MS, lease_ttl_ms=30 * SECOND_MS)
    delivery = core.lease()
    core.advance(20 * SECOND_MS)
    assert progress(core, delivery, 50).deadline_ms == START_MS + 40 * SECOND_MS


def test_progress_belongs_to_the_attempt_and_is_gone_when_its_lease_ends() -> None:
    core = Core()
    core.push(id="p")
    delivery = core.lease()
    progress(core, delivery, 70, "nearly")
    core.fail(delivery)
    view = core.job("p")
    assert view.progress is None and view.progress_message is None


def test_progress_is_fenced_like_extend() -> None:
    core = Core()
    core.push(id="p", lease_ttl_ms=10 * SECOND_MS)
    first = core.lease()
    core.advance(10 * SECOND_MS)  # lost
    core.lease()
    core.refused(M.Progress(core.next_rid(), "p", first.token, 10), ErrorCode.STALE_LEASE)
    core.refused(M.Progress(core.next_rid(), "nope", first.token, 10), ErrorCode.NOT_FOUND)


def test_progress_survives_a_restart_with_its_lease() -> None:
    core = Core()
    core.push(id="p")
    delivery = core.lease()
    progress(core, delivery, 25, "a quarter")
    core.restart()
    assert core.job("p").progress == 25 and core.job("p").progress_message == "a quarter"
