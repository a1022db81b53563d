"""check_invariants(state): every index cross-checked against the jobs table.

Part of the fsck request and run by the core tests after every record; the
list is empty when the state is consistent. What is checked: the counts
(the state's and each queue's) against the jobs; every kept queue holds a
job or is paused; each ready bucket's live entries are exactly the READY
jobs of its queue and priority (ready.py's own checks too); every job is in
the index of its state; leases have a valid owner and token, and the
leases-by-owner index agrees; every process deadline has its timer; the
front of every lazy index is live and its size within its bound (state.py:
no index outlives what it tracks), and the dead set in its order; the jobs
table's forms and names, and its recent window within its size (jobs.py);
the batches against the jobs (batches/checks.py); the uniqueness keys
against the jobs that hold them (unique.py); a keyed ready job in its
key's lane and every lane's token, the leases counted by key, the rate
windows (limits.py).
"""

from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

from leash.broker.core import history, limits, results
from leash.broker.core.batches.checks import batch_problems
from leash.broker.core.state import (
    DEAD,
    JOB_STATES,
    LEASED,
    PROCESS_DEADLINES,
    READY,
    RETRYING,
    SCHEDULED,
    WAITING,
    Job,
    State,
    index_sizes,
    live_batch_deadline,
    live_dead,
    live_deadline,
    live_expiry,
    live_process_deadline,
    live_result,
    live_schedule_tick,
    live_scheduled,
    live_unique_window,
    process_deadline_ms,
)
from leash.broker.core.timelimit import limit_ms
from leash.protocol.limits import SCHEDULES_MAX


def check_invariants(state: State) -> list[str]:
    jobs = list(state.jobs.values())
    problems = _counts(state, jobs) + _ready(state, jobs)
    live = {
        SCHEDULED: {e[1] for e in state.scheduled if live_scheduled(state, e)},
        LEASED: {e[2] for e in state.deadlines if live_deadline(state, e)},
        DEAD: {e[1] for e in state.dead if live_dead(state, e)},
    }
    live[RETRYING] = live[SCHEDULED]
    for job in jobs:
        if job.state != READY and job.id not in live[job.state]:
            problems.append(f"job {job.id} is {job.state} but missing from its index")
        if job.state == LEASED and not (job.owner and job.token >> 32 <= state.epoch):
            problems.append(f"job {job.id} is leased without a valid owner or token")
        if job.state == LEASED and job.owner not in state.processes:
            problems.append(f"job {job.id} is leased by {job.owner}, which is not a live process")
    owned = {(o, j) for o, ids in state.leases_by_owner.items() for j in ids}
    leased = {(j.owner, j.id) for j in jobs if j.state == LEASED}
    if owned != leased or any(not ids for ids in state.leases_by_owner.values()):
        problems.append("the leases-by-owner index disagrees with the jobs table")
    for process in state.processes.values():
        for kind in PROCESS_DEADLINES:
            deadline_ms = process_deadline_ms(process, kind)
            entry = (deadline_ms, process.worker_id, kind)
            if deadline_ms and entry not in state.process_deadlines:
                problems.append(f"process {process.worker_id} has no {kind} timer")
    problems += _fronts(state) + _bounds(state) + _dead_order(state)
    problems += state.jobs.problems() + batch_problems(state) + _unique(state, jobs)
    problems += history.problems(state) + results.problems(state)
    return (
        problems
        + _expiries(state, jobs)
        + _running(jobs)
        + limits.problems(state)
        + _schedules(state)
    )


def _running(jobs: list[Job]) -> list[str]:
    """No lease runs past its job's time limit (timelimit.py); only a
    leased job carries a progress report, made during its lease (progress.py)."""
    problems = [
        f"job {job.id}'s lease ends at {job.deadline_ms}, past its time limit"
        for job in jobs
        if job.state == LEASED and job.time_limit_ms and job.deadline_ms > limit_ms(job)
    ]
    problems += [
        f"job {job.id} ({job.state}) carries a progress report from {job.progress.at_ms}"
        for job in jobs
        if job.progress is not None and (job.state != LEASED or job.progress.at_ms < job.leased_ms)
    ]
    return problems


def _schedules(state: State) -> list[str]:
    """Every schedule that ticks has its live timer; a tick that fired is
    before the next one (cron.py); the count within its bound."""
    live = {e for e in state.schedule_ticks if live_schedule_tick(state, e)}
    problems = [
        f"schedule {name} ticks at {s.next_ms} but has no timer"
        for name, s in state.schedules.items()
        if s.next_ms and not s.paused and (s.next_ms, name) not in live
    ]
    problems += [
        f"schedule {name} fired tick {s.last_tick_ms}, not before its next {s.next_ms}"
        for name, s in state.schedules.items()
        if s.next_ms and s.last_tick_ms >= s.next_ms
    ]
    if len(state.schedules) > SCHEDULES_MAX:
        problems.append(f"{len(state.schedules)} schedules, over the limit")
    return problems


def _expiries(state: State, jobs: list[Job]) -> list[str]:
    """Every waiting job that expires has its live entry; no job was leased
    at or after its expiry (expiry.py)."""
    live = {e for e in state.expiries if live_expiry(state, e)}
    problems = [
        f"job {job.id} expires at {job.expires_ms} but has no timer"
        for job in jobs
        if job.expires_ms and job.state in WAITING and (job.expires_ms, job.id) not in live
    ]
    problems += [
        f"job {job.id} was leased at {job.leased_ms}, past its expiry {job.expires_ms}"
        for job in jobs
        if job.state == LEASED and 0 < job.expires_ms <= job.leased_ms
    ]
    return problems


def _unique(state: State, jobs: list[Job]) -> list[str]:
    """A uniqueness key is held by exactly the live job that carries it, or
    by the window after its job's success, which has its timer (unique.py)."""
    problems = []
    carried = {job.unique_key: job.id for job in jobs if job.unique_key is not None}
    if len(carried) != sum(job.unique_key is not None for job in jobs):
        problems.append("two jobs carry one uniqueness key")
    if any(job.state == DEAD and job.unique_key is not None for job in jobs):
        problems.append("a dead job carries a uniqueness key")
    held = {key: lock.job_id for key, lock in state.unique.items() if not lock.until_ms}
    if held != carried:
        problems.append(f"the uniqueness keys held {held} are not the jobs' {carried}")
    for key, lock in state.unique.items():
        if lock.until_ms and (lock.until_ms, key) not in state.unique_windows:
            problems.append(f"the window of uniqueness key {key!r} has no timer")
    if len(state.unique) > state.config.unique_keys_max:
        problems.append(f"{len(state.unique)} uniqueness keys held, over the limit")
    return problems


def _counts(state: State, jobs: list[Job]) -> list[str]:
    problems = []
    counts = dict.fromkeys(JOB_STATES, 0)
    by_queue: dict[str, dict[str, int]] = {}
    for job in jobs:
        counts[job.state] += 1
        queue_counts = by_queue.setdefault(job.queue, dict.fromkeys(JOB_STATES, 0))
        queue_counts[job.state] += 1
    if counts != state.counts:
        problems.append(f"counts {state.counts} != {counts}")
    for name in by_queue.keys() - state.queues.keys():
        problems.append(f"queue {name} has jobs but is not kept")
    for name, queue in state.queues.items():
        if queue.counts != by_queue.get(name, dict.fromkeys(JOB_STATES, 0)):
            problems.append(f"queue {name} counts {queue.counts}, holds {by_queue.get(name)}")
        if queue.is_empty():
            problems.append(f"queue {name} is empty but kept")
    return problems


def _ready(state: State, jobs: list[Job]) -> list[str]:
    """Each bucket's live entries are its plain ready jobs and the tokens of
    its open lanes; each lane's, the ready jobs of its key (limits.py)."""
    problems = []
    ready: dict[tuple[str, int], set[str]] = {}
    keyed: dict[tuple[str, str, int], set[str]] = {}
    for job in jobs:
        key = job.concurrency_key
        if job.state == READY and key is None:
            ready.setdefault((job.queue, job.priority), set()).add(job.id)
        elif job.state == READY and key is not None:
            keyed.setdefault((job.queue, key, job.priority), set()).add(job.id)
    for (name, key, priority), ids in keyed.items():
        queue = state.queues.get(name)
        lane = queue.lanes.get(key, {}).get(priority) if queue is not None else None
        if lane is None:
            problems.append(f"ready jobs {sorted(ids)} have no lane {name}/{key!r}/{priority}")
            continue
        problems += lane.problems(ids)
        if limits.key_open(state, queue, key):  # type: ignore[arg-type]
            ready.setdefault((name, priority), set()).add(limits.token(key))
    for name, queue in state.queues.items():
        in_queue = sum(len(lane) for lanes in queue.lanes.values() for lane in lanes.values())
        for priority, bucket in queue.buckets.items():
            problems += bucket.problems(ready.pop((name, priority), set()))
            in_queue += sum(1 for entry in bucket if not limits.is_token(entry))
        if in_queue != queue.ready:
            problems.append(f"queue {name} counts {queue.ready} ready, holds {in_queue}")
    for (name, priority), ids in ready.items():
        problems.append(f"ready jobs {sorted(ids)} have no bucket {name}/{priority}")
    return problems


def _fronts(state: State) -> list[str]:
    """Apply leaves the front of every lazy index live after every record."""
    fronts: list[tuple[str, Sequence[Any], Callable[[State, Any], bool]]] = [
        ("scheduled", state.scheduled, live_scheduled),
        ("deadlines", state.deadlines, live_deadline),
        ("dead", state.dead, live_dead),
        ("process deadlines", state.process_deadlines, live_process_deadline),
        ("batch deadlines", state.batch_deadlines, live_batch_deadline),
        ("unique windows", state.unique_windows, live_unique_window),
        ("expiries", state.expiries, live_expiry),
        ("schedule ticks", state.schedule_ticks, live_schedule_tick),
        ("result expiries", state.result_expiries, live_result),
    ]
    return [
        f"the front of the {name} index is stale: {index[0]}"
        for name, index, live in fronts
        if index and not live(state, index[0])
    ]


def _dead_order(state: State) -> list[str]:
    """The dead set is sorted (state.add_dead): listings resume by bisection."""
    pairs = pairwise(state.dead)
    return [f"the dead set holds {a} before {b}" for a, b in pairs if a > b][:1]


def _bounds(state: State) -> list[str]:
    """No lazy index holds more than twice what its live objects allow,
    plus the slack (state.py): stale entries never outnumber live ones
    for long, whatever sits at the front."""
    slack = state.config.index_slack_entries
    return [
        f"the {size.name} index holds {size.entries} entries, over its bound "
        f"{size.bound(slack)} for {size.live_max} live"
        for size in index_sizes(state)
        if size.entries > size.bound(slack)
    ]
