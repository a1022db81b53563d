"""kill -9 of the broker while a job with a time limit runs: the limit and
the progress report come back with the lease, and the lease still ends at
the limit (the job failed with TimeLimitExceeded then), not a lease ttl
later. Both are journalled: the job's limit with its push, the report
with the lease extension it makes."""

import os

from leash.client import Client
from tests.integration.broker_proc import BrokerProcess
from tests.waiting import wait_until

FLAGS = ["--fsync", "always"]
LIMIT_MS = 3_000
LEASE_TTL_MS = 60_000  # far past the limit: only the limit can end the lease
TICK_SLACK_MS = 2_000  # the broker's timer firing late on a loaded machine


def test_a_time_limit_and_a_progress_report_survive_a_kill_9_and_the_limit_holds(
    tmp_path: "os.PathLike[str]",
) -> None:
    data_dir = os.path.join(tmp_path, "data")
    broker = BrokerProcess(data_dir, FLAGS).start()
    try:
        with Client("127.0.0.1", broker.port, worker_id="w-limit") as worker:
            job_id = worker.push(
                "hang", queue="q", time_limit_ms=LIMIT_MS, lease_ttl_ms=LEASE_TTL_MS
            )
            job = worker.fetch("q")
            assert job is not None and job.time_limit_ms == LIMIT_MS
            leased_ms = worker.get_job(job_id).leased_ms
            assert leased_ms is not None and job.deadline_ms == leased_ms + LIMIT_MS
            worker.progress(job, 60, "6 of 10 parts")
        broker.kill()
        broker = BrokerProcess(data_dir, FLAGS).start()
        with Client("127.0.0.1", broker.port, worker_id="w-limit") as worker:
            view = worker.get_job(job_id)
            assert (view.state, view.progress, view.progress_message) == (
                "leased",
                60,
                "6 of 10 parts",
            )
            assert view.time_limit_ms == LIMIT_MS and view.leased_ms is not None
            limit_at_ms = view.leased_ms + LIMIT_MS
            assert worker.extend(job) <= limit_at_ms, "extended past the limit after a restart"
            assert wait_until(lambda: worker.get_job(job_id).state == "retrying", 30)
            failed = worker.get_job(job_id)
        assert failed.last_error is not None and failed.last_error.type == "TimeLimitExceeded"
        assert failed.progress is None
        (attempt,) = failed.attempts
        assert limit_at_ms <= attempt.ended_ms <= limit_at_ms + TICK_SLACK_MS
    finally:
        broker.kill()
