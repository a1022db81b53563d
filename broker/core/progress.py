"""Progress: a running job's handler says how far it is.

Theory of operation. A ``progress`` request names a lease (fenced as an
``extend`` is: the current token only), a percent (0 to 100) and a short
message. It is one ``ProgressReported`` record that does what a
``LeaseExtended`` does — the lease moves out by the job's ttl (or the one
asked for), capped at its time limit (timelimit.py) — and keeps the report
on the job (``Job.progress``). The report belongs to the running attempt:
every end of the lease clears it (indexes.lease_remove, and the job is
forgotten on an ack), so a job waiting for its next attempt shows none. It
is journalled because the lease extension must be, and so it survives a
restart with its lease. Only leased jobs, which are never packed, carry it.
"""

from leash.broker.core import records as R
from leash.broker.core import timelimit
from leash.broker.core.common import lease_of
from leash.broker.core.jobs import Progress, write
from leash.broker.core.state import Job, State
from leash.protocol import messages as M


def report(state: State, request: M.Progress, now_ms: int) -> tuple[M.Reply, list[R.Record]]:
    """The reply and the record of a progress report."""
    job = lease_of(state, request.id, request.token)
    deadline_ms = timelimit.capped_ms(job, now_ms + (request.lease_ttl_ms or job.lease_ttl_ms))
    record = R.ProgressReported(
        request.id, request.token, deadline_ms, request.percent, request.message, now_ms
    )
    return M.Extended(request.rid, deadline_ms), [record]


def reported(job: Job, record: R.ProgressReported) -> None:
    """Apply's: the leased job (thawed by apply) keeps the report."""
    write(job, "progress", Progress(record.percent, record.message, record.at_ms))
