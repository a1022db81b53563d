"""Results: the values successful jobs returned, kept for ``get_result``.

Theory of operation. A push may ask for its job's result to be kept
(``keep_result_ms``, carried in ``JobExtras`` and on the job). The worker
sends the handler's return value with the ack (``result``, one a lease
in ``ack_many``: a
msgpack value, encoded); the ack record carries it, so a result is as
durable as the ack, and apply keeps it in ``state.results`` until
``at_ms + keep_result_ms``, with an entry (until_ms, id) in the heap
``state.result_expiries`` (lazy, as state.py's heaps are).

Bounds, and what happens at each:
- one result: ``CoreConfig.result_max_bytes`` (64 KiB). An ack with a
  larger result is refused with ``too_large`` and changes nothing: the job
  stays leased, and its worker fails it (the Python Worker fails it dead,
  with ``ResultTooLarge``). A result for a job that did not ask for one is
  not kept (decide drops it: it is not journalled).
- all results: ``CoreConfig.results_max_bytes`` (64 MiB). Acks are never
  refused for it: the tick drops the results nearest their end first until
  the total is within the bound again (``ResultsDropped``, as for those
  whose time passed). Between an ack and the next tick the total may pass
  the bound by the results of one turn.
A result dropped or expired is gone; the job's entry in the finished-job
history (history.py) stays. ``state.result_bytes`` is the total of the
values kept. Only apply changes results (``kept``, ``dropped``).
"""

import heapq
from typing import Final, NamedTuple

from leash.broker.core import records as R
from leash.broker.core.common import Rejected
from leash.broker.core.history import OUTCOME, SUCCEEDED
from leash.broker.core.state import DEAD, Job, State, due_entries, live_result
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from leash.protocol.messages import ErrorInfo

# The error get_result answers for a job that ended without success and is gone
ENDED_ERRORS: Final = {"deleted": "JobDeleted", "expired": "JobExpired"}


class Answer(NamedTuple):
    """What decide makes of a get_result (decide.Outcome's first fields)."""

    reply: M.JobResult
    records: list[R.Record]
    may_wait: bool = False  # the job has not finished: hold it up to its wait_ms


# --- apply's ----------------------------------------------------------------


def kept(state: State, job_id: str, value: bytes, until_ms: int) -> None:
    """A job succeeded with ``value``, kept until ``until_ms`` (a job with
    this id that finished before gives its place)."""
    old = state.results.get(job_id)
    if old is not None:
        state.result_bytes -= len(old[1])
    state.results[job_id] = (until_ms, value)
    state.result_bytes += len(value)
    heapq.heappush(state.result_expiries, (until_ms, job_id))


def dropped(state: State, record: R.ResultsDropped) -> None:
    for job_id in record.ids:
        _, value = state.results.pop(job_id)
        state.result_bytes -= len(value)


# --- the tick's -------------------------------------------------------------


def to_drop(state: State, now_ms: int, limit: int) -> list[str]:
    """The results whose time passed, then those nearest their end while
    the total is over its bound; at most ``limit``."""
    ids: dict[str, None] = {}
    over_bytes = state.result_bytes - state.config.results_max_bytes
    for entry in due_entries(state.result_expiries, now_ms, limit):
        if len(ids) >= limit:
            break
        if entry[1] not in ids and live_result(state, entry):
            ids[entry[1]] = None
            over_bytes -= len(state.results[entry[1]][1])
    if over_bytes > 0:
        for entry in heapq.nsmallest(limit * 2, state.result_expiries):
            if over_bytes <= 0 or len(ids) >= limit:
                break
            if entry[1] not in ids and live_result(state, entry):
                ids[entry[1]] = None
                over_bytes -= len(state.results[entry[1]][1])
    return list(ids)


def next_due_ms(state: State) -> int:
    """When the tick has results to drop (some are kept)."""
    heap = state.result_expiries
    if state.result_bytes > state.config.results_max_bytes:
        return 0  # at once
    return heap[0][0]


def problems(state: State) -> list[str]:
    found = []
    if sum(len(value) for _, value in state.results.values()) != state.result_bytes:
        found.append("the results' bytes disagree with their total")
    heap = set(state.result_expiries)
    for job_id, (until_ms, value) in state.results.items():
        if (until_ms, job_id) not in heap:
            found.append(f"the result of job {job_id} has no timer")
        if len(value) > state.config.result_max_bytes:
            found.append(f"the result of job {job_id} is over the limit")
    return found


# --- decide's ---------------------------------------------------------------


def to_keep(state: State, job: Job, result: bytes | None, path: str) -> bytes | None:
    """What an ack of ``job`` keeps of the result it carries: nothing unless
    the job asked; refused (``too_large``: nothing changes) over the limit."""
    if result is None or not job.keep_result_ms:
        return None
    limit = state.config.result_max_bytes
    if len(result) > limit:
        message = (
            f"the result of job {job.id!r} is {len(result)} bytes, over the limit of {limit}; "
            "the job is still leased"
        )
        raise Rejected(ErrorCode.TOO_LARGE, message, path)
    return result


def answer(state: State, request: M.GetResult) -> "Answer":
    """A get_result's reply; ``may_wait`` while its job has not finished."""
    rid, job_id = request.rid, request.id
    kept = state.results.get(job_id)
    job = state.jobs.get(job_id)
    if job is not None:
        if job.state == DEAD:
            error = job.last_error or ErrorInfo(type="Dead")
            return Answer(M.JobResult(rid, job_id, DEAD, error=error), [])
        return Answer(M.JobResult(rid, job_id, job.state), [], request.wait_ms > 0)
    if kept is not None:
        return Answer(M.JobResult(rid, job_id, SUCCEEDED, value=kept[1]), [])
    finished = state.history.get(job_id)
    if finished is None:
        raise Rejected(ErrorCode.NOT_FOUND, f"no job {job_id!r}", "$.id")
    outcome = finished[OUTCOME]
    if outcome != SUCCEEDED:
        error = ErrorInfo(type=ENDED_ERRORS[outcome], message=f"the job was {outcome}")
        return Answer(M.JobResult(rid, job_id, outcome, error=error), [])
    message = f"job {job_id!r} succeeded, but no result is kept (none asked for, or it expired)"
    raise Rejected(ErrorCode.NOT_FOUND, message, "$.id")
