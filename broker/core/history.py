"""Finished-job history: the jobs that left the jobs table, for a while.

Theory of operation. A job that succeeds (its ack), is deleted by an
operator or expires before any lease is forgotten by the jobs table in the
record that ends it; the same record adds a ``Finished`` entry here, so
``get_job`` can still say when and by whom it finished. Dead jobs are not
entered: the dead set keeps them whole. ``state.history`` maps ids to
entries; ``state.history_order`` holds the same entries in the order they
finished (oldest first), so a trim pops from its front. An id finished
twice (pushed again after its first run was forgotten) moves to the end.

An entry is small and holds no args: id, queue, type (names interned, so
shared between entries), outcome, created and finished times, the failed
attempts before it, and for a success the worker id, host and pid of the
process that acked it. About 300 B an entry with its map slot and
its id (measured with tracemalloc): 3 MB at the default of 10,000.

Bounds: ``CoreConfig.history_max_jobs`` entries (0: none kept past the
next tick: apply enters every finished job whatever the configuration, as
applying a record never depends on it) and
``history_max_age_ms``. The tick trims (``HistoryTrimmed``: the number of
oldest entries dropped, so the record is a few bytes whatever it drops)
once the entries pass the count by a slack (a sixteenth), so that a busy
broker writes one trim record for many acks, and once the oldest passes
the age. Only apply adds and trims.
"""

import sys
from typing import Final

from leash.broker.core import records as R
from leash.broker.core.state import Finished, State
from leash.protocol import messages as M

# The fields of an entry (state.Finished), by position
ID: Final = 0
QUEUE: Final = 1
TYPE: Final = 2
OUTCOME: Final = 3
CREATED_MS: Final = 4
FINISHED_MS: Final = 5
FAILURES: Final = 6
WORKER_ID: Final = 7
HOSTNAME: Final = 8
PID: Final = 9
SUCCEEDED: Final = "succeeded"
DELETED: Final = "deleted"
EXPIRED: Final = "expired"
OUTCOMES: Final = (SUCCEEDED, DELETED, EXPIRED)
_intern = sys.intern


def slack(max_jobs: int) -> int:
    """How far past its count the history may grow before a trim."""
    return max(1, max_jobs // 16) if max_jobs else 0


# --- apply's ----------------------------------------------------------------


def add(state: State, entry: Finished) -> None:
    """The entry joins the history, as its newest (an id that finished
    before, pushed again since, leaves its older place: rare, O(entries))."""
    history = state.history
    job_id = entry[ID]
    old = history.get(job_id)
    if old is not None:
        state.history_order.remove(old)
        del history[job_id]
    history[job_id] = entry
    state.history_order.append(entry)


def succeeded(
    state: State,
    job_id: str,
    queue: str,
    job_type: str,
    created_ms: int,
    failures: int,
    owner: str,
    at_ms: int,
) -> None:
    """A job was acked by ``owner`` at ``at_ms`` (on every ack: kept lean).
    Whatever the configuration: applying a record never depends on it (the
    snapshotter replays with the defaults); the tick trims to the bounds."""
    process = state.processes.get(owner)
    if process is None:  # (an owner is a live process: never, but for old journals)
        entry: Finished = (job_id, _intern(queue), _intern(job_type), SUCCEEDED, created_ms,
                           at_ms, failures, _intern(owner), "", 0)  # fmt: skip
    else:
        info = process.info
        entry = (job_id, _intern(queue), _intern(job_type), SUCCEEDED, created_ms,
                 at_ms, failures, process.worker_id, info.hostname, info.pid)  # fmt: skip
    if job_id in state.history:
        add(state, entry)
    else:
        state.history[job_id] = entry
        state.history_order.append(entry)


def ended(state: State, job_id: str, queue: str, job_type: str, created_ms: int,
          failures: int, outcome: str, at_ms: int) -> None:  # fmt: skip
    """A job was deleted or expired."""
    add(state, (job_id, _intern(queue), _intern(job_type), outcome, created_ms, at_ms,
                failures, "", "", 0))  # fmt: skip


def trimmed(state: State, record: R.HistoryTrimmed) -> None:
    history, order = state.history, state.history_order
    assert record.count <= len(order), (record, len(order))
    for _ in range(record.count):
        del history[order.popleft()[ID]]


# --- the tick's -------------------------------------------------------------


def to_trim(state: State, now_ms: int, limit: int) -> int:
    """How many of the oldest entries to drop now (0: none), at most ``limit``."""
    order = state.history_order
    if not order:
        return 0
    config = state.config
    over = len(order) - config.history_max_jobs
    count = min(over if over > slack(config.history_max_jobs) else 0, limit)
    oldest_kept_ms = now_ms - config.history_max_age_ms
    while count < min(limit, len(order)) and order[count][FINISHED_MS] <= oldest_kept_ms:
        count += 1
    return count


def next_due_ms(state: State) -> int:
    """When the tick has the history to trim (the history holds entries)."""
    order = state.history_order
    config = state.config
    if len(order) - config.history_max_jobs > slack(config.history_max_jobs):
        return order[0][FINISHED_MS]
    return order[0][FINISHED_MS] + config.history_max_age_ms


# --- reading ----------------------------------------------------------------


def view(entry: Finished) -> M.JobView:
    """A finished job as ``get_job`` shows it: its state is its outcome."""
    job_id, queue, job_type, outcome, created_ms, finished_ms, failures, by, host, pid = entry
    return M.JobView(
        id=job_id,
        queue=queue,
        type=job_type,
        args=M.EMPTY_ARGS,
        state=outcome,
        priority=0,
        attempt=failures,
        max_attempts=0,
        lease_ttl_ms=0,
        created_ms=created_ms,
        finished_ms=finished_ms,
        finished_by=by or None,
        finished_host=host or None,
        finished_pid=pid or None,
    )


def problems(state: State) -> list[str]:
    """Each entry under its own id, once in the order, with a known
    outcome. (An id may be live again after it finished: pushed again.)"""
    history = state.history
    found = [f"history entry {k} names {e[ID]}" for k, e in history.items() if k != e[ID]]
    if [e[ID] for e in state.history_order] != list(history) or any(
        history[e[ID]] is not e for e in state.history_order
    ):
        found.append("the history's order and its entries disagree")
    if any(e[OUTCOME] not in OUTCOMES for e in history.values()):
        found.append("a history entry has an unknown outcome")
    return found
