"""tick(state, now_ms): the records that the passage of time implies.

Scheduled and retrying jobs whose time came become ready; processes past
a deadline die, ending their leases (processes.py); other leases past their
deadline are lost ("lease expired": the job is ready again at once and the
attempt counts, common.lost_lease_for), or failed with TimeLimitExceeded
when the deadline was the job's time limit (timelimit.py); the dead set is trimmed to
its count and age bounds; waiting jobs whose expiry came are removed
(expiry.py); uniqueness keys whose window after success
passed are freed (unique.py); schedules whose tick came fire, each in
one record (cron.py); the finished-job history is trimmed to its count
and age bounds (history.py); kept results whose time passed, or past the
results' bound in bytes, are dropped (results.py). Batch timers run in a
tick of their own, once
the job timers are quiet, so that a batch record is computed against the
state it is applied to (the job records of a tick may finish batches): open
batches past their open deadline are abandoned, then batches past their
retention are removed. Pure: reads the state, returns records, changes
nothing. Each record touches at most ``config.tick_max_items`` jobs (a
single batch bigger than that is still removed whole); the shell ticks
again while a tick returns records.
"""

from leash.broker.core import cron, expiry, history, results, timelimit
from leash.broker.core import records as R
from leash.broker.core.batches.state import BatchDeadline
from leash.broker.core.common import LEASE_EXPIRED, failure_for, lost_lease_for
from leash.broker.core.processes import deaths
from leash.broker.core.state import (
    DEAD,
    Job,
    State,
    due_entries,
    live_batch_deadline,
    live_dead,
    live_deadline,
    live_scheduled,
)
from leash.broker.core.unique import due_windows


def tick(state: State, now_ms: int) -> list[R.Record]:
    records: list[R.Record] = []
    limit = state.config.tick_max_items
    promoted = _due_scheduled(state, now_ms, limit)
    if promoted:
        records.append(R.JobsPromoted(ids=promoted))
    died = deaths(state, now_ms)
    records.extend(died)
    # A lease ends once: not by expiry if its owner's death ends it now.
    ended = {f.id for d in died for f in d.failures} | {r.id for d in died for r in d.released}
    expired = [f for f in _expired_leases(state, now_ms, limit) if f.id not in ended]
    if expired:
        records.append(R.AttemptsFailed(failures=expired))
    trimmed = _dead_to_trim(state, now_ms, limit)
    if trimmed:
        records.append(R.DeadTrimmed(ids=trimmed))
    lapsed = expiry.due(state, now_ms, limit)
    if lapsed:
        records.append(R.JobsExpired(lapsed, now_ms))
    freed = due_windows(state, now_ms, limit)
    if freed:
        records.append(R.UniqueWindowsEnded(freed, now_ms))
    if state.schedule_ticks:
        records.extend(cron.due(state, now_ms, limit))
    trimmed_count = history.to_trim(state, now_ms, limit)
    if trimmed_count:
        records.append(R.HistoryTrimmed(trimmed_count, now_ms))
    dropped = results.to_drop(state, now_ms, limit)
    if dropped:
        records.append(R.ResultsDropped(dropped, now_ms))
    if not records:
        records.extend(_due_batches(state, now_ms, limit))
    return records


def next_due_ms(state: State) -> int | None:
    """The earliest time at which tick may have something to do."""
    heaps = (
        state.scheduled,
        state.deadlines,
        state.process_deadlines,
        state.batch_deadlines,
        state.unique_windows,
        state.expiries,
        state.schedule_ticks,
    )
    fronts = [heap[0][0] for heap in heaps if heap]
    if state.history_order:
        fronts.append(history.next_due_ms(state))
    if state.result_expiries:
        fronts.append(results.next_due_ms(state))
    if state.dead:
        oldest_ms = state.dead[0][0]
        over_count = state.counts[DEAD] > state.config.dead_max_jobs
        fronts.append(oldest_ms if over_count else oldest_ms + state.config.dead_max_age_ms)
    return min(fronts) if fronts else None


def _due_scheduled(state: State, now_ms: int, limit: int) -> list[str]:
    ids: dict[str, None] = {}  # ordered and free of duplicate entries
    for entry in due_entries(state.scheduled, now_ms, limit):
        if len(ids) >= limit:
            break
        if live_scheduled(state, entry):
            ids[entry[1]] = None
    return list(ids)


def _expired_leases(state: State, now_ms: int, limit: int) -> list[R.Failure]:
    # Keyed by job id: extending a lease to a deadline it already had leaves
    # two live heap entries for one lease, and a lease fails only once.
    expired: dict[str, R.Failure] = {}
    for entry in due_entries(state.deadlines, now_ms, limit):
        if len(expired) >= limit:
            break
        job_id = entry[2]
        if job_id not in expired and live_deadline(state, entry):
            expired[job_id] = _lease_ended(state, state.jobs[job_id], now_ms)
    return list(expired.values())


def _lease_ended(state: State, job: Job, now_ms: int) -> R.Failure:
    """An expired lease: lost, or at its time limit a failure (timelimit.py)."""
    if job.time_limit_ms and timelimit.reached(job):
        return failure_for(state, job, timelimit.error(job), now_ms)
    return lost_lease_for(state, job, LEASE_EXPIRED, now_ms)


def _dead_to_trim(state: State, now_ms: int, limit: int) -> list[str]:
    config = state.config
    over_count = state.counts["dead"] - config.dead_max_jobs
    oldest_kept_ms = now_ms - config.dead_max_age_ms
    trimmed: dict[str, None] = {}  # ordered; a job may have two equal live entries (state.py)
    for entry in state.dead:
        if len(trimmed) >= limit:
            break
        if entry[1] in trimmed or not live_dead(state, entry):
            continue
        if len(trimmed) >= over_count and entry[0] > oldest_kept_ms:
            break
        trimmed[entry[1]] = None
    return list(trimmed)


def _due_batches(state: State, now_ms: int, limit: int) -> list[R.Record]:
    """One record: the open batches to abandon, or else the batches to remove.
    Ancestors come first, so no batch is judged after its parent went."""
    due: dict[BatchDeadline, dict[str, None]] = {"open": {}, "expire": {}}
    items = 0
    for entry in due_entries(state.batch_deadlines, now_ms, limit):
        if items >= limit:
            break
        _, batch_id, kind = entry
        if batch_id not in due[kind] and live_batch_deadline(state, entry):
            due[kind][batch_id] = None
            batch = state.batches[batch_id]
            items += 1 + len(batch.members) + len(batch.children)
    if due["open"]:
        return [R.BatchesAbandoned(_ancestors_first(state, due["open"]), now_ms)]
    if due["expire"]:
        return [R.BatchesExpired(_ancestors_first(state, due["expire"]), now_ms)]
    return []


def _ancestors_first(state: State, ids: dict[str, None]) -> list[str]:
    def depth(batch_id: str) -> int:
        levels, parent = 0, state.batches[batch_id].parent
        while parent is not None:
            levels, parent = levels + 1, state.batches[parent].parent
        return levels

    return sorted(ids, key=depth)
