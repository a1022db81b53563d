"""MUTATE and FLUSH: an operator's changes, asked for on the Faktory protocol. Pure.

Their records are the admin socket's (``JobDeleted``, ``JobKilled``,
``JobRequeued``, ``JobsPromoted``, ``BatchDeleted``), so they are journalled
and replayed like any operator's operation. One command can touch every
job, so it is done in rounds: a round changes at most ``ROUND_MAX`` jobs and
looks at no more than ``ROUND_SCAN_MAX`` index entries, and says where the
next one starts (``next``, None when the command is done). The shell runs
one round a turn of its loop, so a big MUTATE never stalls the broker, and
answers once every round's records are durable.

MUTATE's target is a set: ``retries`` (retrying jobs), ``scheduled`` or
``dead``; its filter (all that is given must match): ``jids``, ``jobtype``,
and ``regexp``, a glob (``*``, ``?``, ``[...]``, as Redis's SCAN MATCH) that
must match the job's work unit as FETCH would give it. ``clear`` empties the
target, whatever the filter (as Faktory does); ``discard`` deletes the
matches; ``kill`` moves them to the dead set; ``requeue`` makes them ready
now, as ``leash requeue`` does (a dead one with a fresh set of attempts; a
scheduled one too, which ``leash requeue`` does not take).

FLUSH deletes every batch (ancestors first, so no callback fires) and then
every job, whatever its state.
"""

from collections.abc import Hashable
from fnmatch import fnmatchcase
from itertools import islice
from typing import Final, Literal, NamedTuple, assert_never

from leash.broker.core import records as R
from leash.broker.core import walks
from leash.broker.core.faktory import unit_json
from leash.broker.core.job_operations import KILLED
from leash.broker.core.state import DEAD, RETRYING, SCHEDULED, Job, State
from leash.protocol import faktory as F
from leash.protocol.limits import ADMIN_SCAN_MAX

ROUND_MAX = 1_000  # jobs (or batches) one round changes
ROUND_SCAN_MAX = ADMIN_SCAN_MAX  # index entries one round looks at
Target = Literal["retrying", "scheduled", "dead"]  # the job states MUTATE changes
TARGETS: Final[dict[F.MutateTarget, Target]] = {
    "retries": RETRYING,
    "scheduled": SCHEDULED,
    "dead": DEAD,
}
Cursor = Hashable  # where a round starts: opaque to the shell


class Round(NamedTuple):
    records: list[R.Record]
    changed: int  # jobs or batches the records change
    next: Cursor | None  # None: done


def mutate_round(state: State, op: F.Mutate, start: Cursor | None, now_ms: int) -> Round:
    kind = TARGETS[op.target]
    if op.cmd == "kill" and kind == DEAD:
        return Round([], 0, None)  # a dead job is dead already
    if op.cmd == "clear":
        op = F.Mutate("discard", op.target, None, None, None)
    if op.jids is not None:
        offset = start if isinstance(start, int) else 0
        named = op.jids[offset : offset + ROUND_MAX]
        jobs = [job for jid in dict.fromkeys(named) if (job := _named(state, jid, kind, op))]
        done = offset + ROUND_MAX >= len(op.jids)
        next_start: Cursor | None = None if done else offset + ROUND_MAX
    else:
        jobs, next_start = _scan(state, kind, op, start if isinstance(start, str) else "")
    return Round(_records(op.cmd, jobs, now_ms), len(jobs), next_start)


def _named(state: State, jid: str, kind: Target, op: F.Mutate) -> Job | None:
    job = state.jobs.get(jid)
    return job if job is not None and job.state == kind and _matches(job, op) else None


def _scan(state: State, kind: Target, op: F.Mutate, after: str) -> tuple[list[Job], str | None]:
    """The matches past ``after`` (a listing's cursor), in the index's order
    (walks.py), within a round's bounds; where the next round starts."""
    found: list[Job] = []
    last = None
    for scanned, (key, job) in enumerate(walks.walk(state, kind, after, None)):
        if scanned >= ROUND_SCAN_MAX or len(found) >= ROUND_MAX:
            return found, after if last is None else walks.cursor(kind, last)
        last = key
        if job is not None and job.state == kind and _matches(job, op):
            found.append(job)
    return found, None


def _matches(job: Job, op: F.Mutate) -> bool:
    if op.jobtype is not None and job.type != op.jobtype:
        return False
    return op.pattern is None or fnmatchcase(unit_json(job).decode(), op.pattern)


def _records(cmd: F.MutateCommand, jobs: list[Job], now_ms: int) -> list[R.Record]:
    match cmd:
        case "kill":
            return [R.JobKilled(job.id, KILLED, now_ms) for job in jobs]
        case "requeue":
            return [R.JobRequeued(job.id, now_ms) for job in jobs]
        case "discard" | "clear":  # clear is discard without the filter (mutate_round)
            return [R.JobDeleted(job.id, now_ms) for job in jobs]
        case _:
            assert_never(cmd)


def flush_round(state: State, now_ms: int) -> Round:
    """Delete batches (those without a parent: deleting one makes its
    children such), then jobs; ``next`` is True until nothing is left."""
    if state.batches:
        roots = (batch.id for batch in state.batches.values() if batch.parent is None)
        ids = list(islice(roots, ROUND_MAX))
        records: list[R.Record] = [R.BatchDeleted(batch_id, now_ms) for batch_id in ids]
    else:
        ids = list(islice(state.jobs.ids, ROUND_MAX))
        records = [R.JobDeleted(job_id, now_ms) for job_id in ids]
    more = len(state.batches) + len(state.jobs) > len(ids)
    return Round(records, len(ids), True if more else None)
