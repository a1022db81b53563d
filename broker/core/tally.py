"""What a record counts for: pushed, acked, failed, dead, expired, by queue.

Read before the record is applied (an ack removes the job it names, so its
queue must be read first). Pure; the shell keeps the running totals since
start for the stats view and the metrics.
"""

from collections.abc import Iterator

from leash.broker.core import records as R
from leash.broker.core.state import State
from leash.broker.core.tick import LEASE_EXPIRED

TOTALS = ("pushed", "acked", "failed", "dead", "expired")


def tally(state: State, record: R.Record) -> Iterator[tuple[str, str]]:
    """(queue, total) once for every count the record adds to."""
    match record:
        case R.JobsPushed(jobs=jobs) | R.KeptJobsPushed(jobs=jobs):
            for new in jobs:
                yield new.queue, "pushed"
        case R.JobsAcked(leases=leases):
            for lease in leases:
                yield state.jobs[lease.id].queue, "acked"
        case R.AttemptsFailed(failures=failures) | R.ProcessDied(failures=failures):
            for failure in failures:
                queue = state.jobs[failure.id].queue
                yield queue, "failed"
                if failure.retry_at_ms is None:
                    yield queue, "dead"
                if failure.error == LEASE_EXPIRED:
                    yield queue, "expired"
        case _:
            return
