"""A job's attempt history: every ended attempt (when, by which process, how
it ended, the error), bounded in count and size, and rebuilt by a replay of
the journal and kept by a snapshot (the harness checks both after every
record)."""

from leash.broker.core import info_of, touch
from leash.broker.core.common import LEASE_EXPIRED
from leash.protocol import admin as A
from leash.protocol import limits as L
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from tests.unit.test_core_harness import SECOND_MS, WORKER, Core


def detail(core: Core, job_id: str) -> M.JobView:
    return core.expect(M.GetJob(core.next_rid(), job_id), M.JobInfo).job


def test_each_ended_attempt_says_when_who_and_how_it_ended() -> None:
    core = Core()
    core.push(id="j", max_attempts=5, lease_ttl_ms=10 * SECOND_MS, retry_base_ms=1)
    first = core.lease()
    leased_at = core.now_ms
    core.now_ms += 500
    core.fail(first, M.ErrorInfo("ValueError", "bad row", "Traceback ...\nValueError: bad row"))
    core.advance(SECOND_MS)
    core.release(core.lease())
    core.lease()
    core.advance(11 * SECOND_MS)  # the lease expires
    core.advance(60 * SECOND_MS)
    core.lease()
    core.expect(A.KillJob(core.next_rid(), "j"), M.Ok)
    attempts = detail(core, "j").attempts
    assert [(a.attempt, a.outcome) for a in attempts] == [
        (1, "failed"),
        (2, "released"),
        (2, "expired"),
        (3, "killed"),
    ]
    assert attempts[0].leased_ms == leased_at and attempts[0].ended_ms == leased_at + 500
    assert attempts[0].worker_id == WORKER
    assert attempts[0].error == M.ErrorInfo(
        "ValueError", "bad row", "Traceback ...\nValueError: bad row"
    )
    assert attempts[1].error is None
    assert attempts[2].error == LEASE_EXPIRED
    assert attempts[3].error is not None and attempts[3].error.type == "Killed"


def test_a_lost_worker_ends_its_attempt_as_lost_with_its_host_and_pid() -> None:
    core = Core()
    core.push(id="j")
    hello = M.Hello(0, 1, "w-lost", hostname="box-7", pid=4242)
    for record in touch(core.state, "w-lost", info_of(hello), core.now_ms, hello=True):
        core.apply(record)
    core.lease(worker="w-lost")
    core.advance(core.config.process_ttl_ms + SECOND_MS)
    (attempt,) = detail(core, "j").attempts
    assert (attempt.outcome, attempt.worker_id, attempt.hostname, attempt.pid) == (
        "lost",
        "w-lost",
        "box-7",
        4242,
    )
    assert attempt.error is not None and attempt.error.type == "WorkerLost"


def test_the_history_keeps_the_last_attempts_and_cuts_long_errors() -> None:
    core = Core()
    core.push(id="j", max_attempts=L.ATTEMPTS_KEPT + 5, retry_base_ms=1)
    long_error = M.ErrorInfo("E", "m" * 5000, "frame\n" * 2000 + "the failing line")
    for _ in range(L.ATTEMPTS_KEPT + 3):
        core.fail(core.lease(), long_error)
        core.advance(10 * SECOND_MS)
    job = detail(core, "j")
    assert [a.attempt for a in job.attempts] == list(range(4, L.ATTEMPTS_KEPT + 4))
    error = job.attempts[-1].error
    assert error is not None
    assert len(error.message) == L.ATTEMPT_MESSAGE_MAX_CHARS
    assert len(error.backtrace) == L.ATTEMPT_BACKTRACE_MAX_CHARS
    assert error.backtrace.endswith("the failing line")
    assert job.last_error == long_error, "the last error is kept whole"


def test_listings_leave_the_history_out_and_an_acked_job_is_forgotten_with_it() -> None:
    core = Core(history_max_jobs=0)
    core.push(id="j", max_attempts=3, retry_base_ms=1)
    core.fail(core.lease())
    page = core.expect(A.ListJobs(core.next_rid(), "retrying"), A.JobPage)
    assert [job.attempts for job in page.jobs] == [[]]
    core.advance(SECOND_MS)
    core.ack(core.lease())
    core.tick()  # (the finished-job history is off: its entry goes at once)
    core.refused(M.GetJob(core.next_rid(), "j"), ErrorCode.NOT_FOUND)
