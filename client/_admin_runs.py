"""What each operator command of ``leash`` does over the admin socket: a
function of the ``AdminClient`` and the parsed options that returns what to
print (a ``Table``, ``Fields``, a line, or a value for ``--json``). The
commands and their flags are registered in ``leash.client._admin_cli``."""

import argparse
import time
from collections.abc import Callable
from typing import Any, Literal

import msgspec

from leash.protocol import admin as A
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode

from ._admin_format import (
    Fields,
    Table,
    counts,
    decoded_args,
    duration,
    error_text,
    jobs_ran,
    limits_text,
    limits_use_text,
    per_duration,
    progress_text,
    when,
)
from ._exceptions import NotFound, UsageError
from .admin import AdminClient

Run = Callable[[AdminClient, argparse.Namespace], Any]
# Jobs one bulk request changes: each request is one turn of the broker's
# loop, so other clients wait at most that long; requests are paced
# (AdminClient: a pause as long as the last one took; bench/dashboard_load.py).
BULK_CHUNK = 100


# --- views -------------------------------------------------------------------


def ping(admin: AdminClient, options: argparse.Namespace) -> str:
    started = time.perf_counter()
    s = admin.stats()
    took_ms = (time.perf_counter() - started) * 1000
    return f"pong: {s.version}, up {duration(s.uptime_ms)}, answered in {took_ms:.1f} ms"


def stats(admin: AdminClient, options: argparse.Namespace) -> Fields:
    s = admin.stats()
    journal = s.journal
    pairs: list[tuple[str, object]] = [
        ("version", s.version),
        ("uptime", duration(s.uptime_ms)),
        ("epoch", s.epoch),
        ("jobs", counts(s.jobs)),
        ("since start", counts(s.totals)),
        ("connections", s.connections),
        ("held fetches", f"{s.held_fetches} (consumers waiting for a job)"),
        ("processes", s.processes),
        ("queues", s.queues),
        ("schedules", s.schedules),
        ("journal", f"{journal.bytes} bytes in {journal.segments} files, "
                    f"last seq {journal.last_seq}"),
        ("fsync", f"{journal.fsyncs} (p50 {journal.fsync_p50_ms:.2f} ms, "
                  f"p99 {journal.fsync_p99_ms:.2f} ms)"),
        ("group commit", f"{journal.commits} writes, "
                         f"{journal.commit_mean_records:.1f} records each"),
        ("replay at start", f"{journal.replay_records} records in {journal.replay_s:.3f} s"),
        ("limits", counts(s.limits)),
        ("finished jobs", s.finished_jobs),
        ("results kept", f"{s.results_kept} ({s.result_bytes} bytes)"),
    ]  # fmt: skip
    if s.expired_jobs:
        lines = [f"{j.id} ({j.queue}, {j.type}) at {when(j.expires_ms)}" for j in s.expired_jobs]
        pairs.append(("expired unstarted", "\n  " + "\n  ".join(lines)))
    return Fields(pairs, s)


def queues(admin: AdminClient, options: argparse.Namespace) -> Table:
    queues = admin.queues()
    rows = [
        (q.name, q.ready, q.scheduled, q.in_flight, q.dead, "yes" if q.paused else "",
         duration(q.latency_ms), q.held_fetches, limits_use_text(q, per_duration))
        for q in queues
    ]  # fmt: skip
    headers = (
        "QUEUE", "READY", "SCHEDULED", "IN FLIGHT", "DEAD", "PAUSED", "LATENCY", "WAITING", "LIMITS"
    )  # fmt: skip
    return Table(headers, rows, queues)


def limit(admin: AdminClient, options: argparse.Namespace) -> str:
    rate, interval_ms = options.rate or (0, 0)
    admin.set_queue_limits(
        options.queue,
        concurrency=options.concurrency,
        per_key=options.per_key,
        rate=rate,
        rate_interval_ms=interval_ms,
    )
    shown = limits_text(options.concurrency, options.per_key, rate, interval_ms, per_duration)
    return f"{options.queue}: {shown}"


def busy(admin: AdminClient, options: argparse.Namespace) -> Table:
    busy = admin.busy()
    rows = [
        (p.worker_id, j.id, j.queue, j.type, j.attempt, when(j.leased_ms), when(j.deadline_ms),
         progress_text(j.progress, j.progress_message))
        for p in busy
        for j in p.jobs
    ]  # fmt: skip
    headers = ("WORKER", "JOB", "QUEUE", "TYPE", "ATTEMPT", "LEASED", "DEADLINE", "PROGRESS")
    return Table(headers, rows, busy)


def processes(admin: AdminClient, options: argparse.Namespace) -> Table:
    processes = admin.processes()
    rows = [
        (p.worker_id, p.hostname, p.pid, ",".join(p.labels), p.state, when(p.last_seen_ms),
         p.connections, p.in_flight, jobs_ran((p.ran or {}).values()))
        for p in processes
    ]  # fmt: skip
    headers = ("WORKER", "HOST", "PID", "LABELS", "STATE", "LAST BEAT", "CONNS", "IN FLIGHT", "RAN")
    return Table(headers, rows, processes)


def job(admin: AdminClient, options: argparse.Namespace) -> Fields:
    job = admin.job(options.id)
    if job.finished_ms is not None:
        return _finished(job)
    error = job.last_error
    pairs: list[tuple[str, object]] = [
        ("id", job.id),
        ("queue", job.queue),
        ("type", job.type),
        ("state", job.state),
        ("args", msgspec.json.encode(decoded_args(job.args)).decode()),
        ("priority", job.priority),
        ("attempts", f"{job.attempt} failed of at most {job.max_attempts}"),
        ("created", when(job.created_ms)),
    ]
    optional: list[tuple[str, object]] = [
        ("runs at", when(job.run_at_ms) if job.run_at_ms else None),
        ("held by", job.owner),
        ("token", job.token),
        ("deadline", when(job.deadline_ms) if job.deadline_ms else None),
        ("died", when(job.died_ms) if job.died_ms else None),
        ("unique key", _unique(job)),
        ("expires", when(job.expires_ms) if job.expires_ms else None),
        ("time limit", duration(job.time_limit_ms) if job.time_limit_ms else None),
        ("progress", _progress(job)),
        ("concurrency key", job.concurrency_key),
        ("last error", f"{error.type}: {error.message}" if error else None),
        ("backtrace", error.backtrace if error and error.backtrace else None),
        (
            "attempts ended",
            "\n  " + "\n  ".join(map(_attempt, job.attempts)) if job.attempts else None,
        ),
    ]
    pairs += [(key, value) for key, value in optional if value is not None]
    return Fields(pairs, job)


def _progress(job: M.JobView) -> str | None:
    if job.progress is None:
        return None
    text = progress_text(job.progress, job.progress_message)
    return f"{text} (at {when(job.progress_ms)})" if job.progress_ms else text


def _finished(job: M.JobView) -> Fields:
    """A job from the broker's history of finished jobs: no args are kept."""
    assert job.finished_ms is not None
    pairs: list[tuple[str, object]] = [
        ("id", job.id),
        ("queue", job.queue),
        ("type", job.type),
        ("state", job.state),
        ("created", when(job.created_ms)),
        ("finished", when(job.finished_ms)),
    ]
    if job.finished_by is not None:
        where = f" ({job.finished_host} pid {job.finished_pid})" if job.finished_host else ""
        pairs.append(("finished by", f"{job.finished_by}{where}, attempt {job.attempt + 1}"))
    elif job.attempt:
        pairs.append(("attempts", f"{job.attempt} failed"))
    return Fields(pairs, job)


def _unique(job: M.JobView) -> str | None:
    if job.unique_key is None:
        return None
    if not job.unique_for_ms:
        return job.unique_key
    return f"{job.unique_key} (kept {duration(job.unique_for_ms)} after success)"


def _attempt(attempt: M.AttemptView) -> str:
    where = f" ({attempt.hostname} pid {attempt.pid})" if attempt.hostname else ""
    error = attempt.error
    why = f": {error.type}: {error.message}".replace("\n", " ") if error else ""
    return (
        f"{attempt.attempt} {attempt.outcome} at {when(attempt.ended_ms)} after "
        f"{duration(attempt.ended_ms - attempt.leased_ms)}, {attempt.worker_id}{where}{why}"
    )


def filter_of(options: argparse.Namespace) -> dict[str, Any]:
    """The job filter the options give (ages in whole ms)."""
    return {
        "queue": options.queue,
        "type": options.type,
        "error": options.error,
        "min_age_ms": None if options.min_age_s is None else round(options.min_age_s * 1000),
        "max_age_ms": None if options.max_age_s is None else round(options.max_age_s * 1000),
    }


_COLUMNS: dict[str, tuple[str, Callable[[M.JobView], int | None]]] = {
    "ready": ("CREATED", lambda j: j.created_ms),
    "leased": ("DEADLINE", lambda j: j.deadline_ms),
    "dead": ("DIED", lambda j: j.died_ms),
}


def lister(kind: A.ListKind) -> Run:
    def run(admin: AdminClient, options: argparse.Namespace) -> Table:
        jobs = list(admin.jobs(kind, most=options.limit, **filter_of(options)))
        column, time_of = _COLUMNS.get(kind, ("RUNS AT", lambda j: j.run_at_ms))
        rows = [
            (j.id, j.queue, j.type, j.attempt, when(time_of(j)), error_text(j))
            for j in jobs
        ]  # fmt: skip
        return Table(("JOB", "QUEUE", "TYPE", "FAILED", column, "LAST ERROR"), rows, jobs)

    return run


# --- operations --------------------------------------------------------------


def pause(admin: AdminClient, options: argparse.Namespace) -> str:
    try:
        admin.pause(options.queue, create=options.create)
    except NotFound:
        raise NotFound(
            ErrorCode.NOT_FOUND,
            f"no queue {options.queue!r} (it has no jobs); --create pauses it ahead of time",
        ) from None
    return f"{options.queue}: paused"


def resume(admin: AdminClient, options: argparse.Namespace) -> str:
    admin.resume(options.queue)
    return f"{options.queue}: resumed"


def control(state: A.ProcessControl) -> Run:
    def run(admin: AdminClient, options: argparse.Namespace) -> str:
        admin.control(options.worker_id, state)
        return f"{options.worker_id}: asked to {state}"

    return run


def job_op(verb: str) -> Run:
    def run(admin: AdminClient, options: argparse.Namespace) -> str | list[str]:
        filter = _one_or_many(options, options.state is not None, "--state")
        done = "killed" if verb == "kill" else "deleted"
        if filter is None:
            (admin.kill_job if verb == "kill" else admin.delete_job)(options.id)
            return f"{options.id}: {done}"
        bulk = admin.kill_jobs if verb == "kill" else admin.delete_jobs
        ids = bulk(options.state, chunk=BULK_CHUNK, pace=True, **filter)
        return ids if options.json else f"{done} {_jobs(len(ids))}"

    return run


def purge(admin: AdminClient, options: argparse.Namespace) -> str:
    return (
        f"{options.queue}: purged {_jobs(admin.purge(options.queue, chunk=BULK_CHUNK, pace=True))}"
    )


def requeue(admin: AdminClient, options: argparse.Namespace) -> str | list[str]:
    filter = _one_or_many(options, options.dead or options.retrying, "--dead or --retrying")
    if filter is None:
        admin.requeue_job(options.id)
        return f"{options.id}: requeued"
    kind: Literal["dead", "retrying"] = "dead" if options.dead else "retrying"
    ids = admin.requeue_jobs(kind, chunk=BULK_CHUNK, pace=True, **filter)
    return ids if options.json else f"requeued {_jobs(len(ids))}"


def _one_or_many(options: argparse.Namespace, bulk: bool, which: str) -> dict[str, Any] | None:
    """The filter of a bulk operation, or None for one job by id."""
    filter = filter_of(options)
    if bulk == (options.id is not None):
        raise UsageError(f"give a job id, or {which} (with filters)")
    if options.id is not None and any(value is not None for value in filter.values()):
        raise UsageError(f"--queue, --type, --error and the ages go with {which}")
    return filter if bulk else None


def _jobs(count: int) -> str:
    return f"{count} job{'s' if count != 1 else ''}"


def batches(admin: AdminClient, options: argparse.Namespace) -> Table:
    batches = list(admin.batches(options.state, most=options.limit))
    rows = [
        (b.id, b.state, b.total, b.pending, b.failures, b.dead, b.children, when(b.created_ms),
         when(b.finished_ms), b.description)
        for b in batches
    ]  # fmt: skip
    headers = ("BATCH", "STATE", "TOTAL", "PENDING", "FAILURES", "DEAD", "CHILDREN", "CREATED",
               "FINISHED", "DESCRIPTION")  # fmt: skip
    return Table(headers, rows, batches)


def batch(admin: AdminClient, options: argparse.Namespace) -> Fields:
    b = admin.batch(options.id, limit=options.limit)
    fired = ", ".join(f"{f.kind} at {when(f.at_ms)} ({f.job_id})" for f in b.fired)
    members = "; ".join(
        f"{m.id} {m.state}" + (f" held by {m.owner}" if m.owner else "") for m in b.members
    )
    pairs: list[tuple[str, object]] = [
        ("id", b.id),
        ("state", b.state + (" (succeeded)" if b.succeeded else "")),
        ("description", b.description),
        ("members", f"total {b.total}, pending {b.pending}, failures {b.failures}, "
                    f"dead {b.dead}, deleted {b.deleted}"),
        ("children", f"{b.children}, {b.children_pending} unfinished"),
        ("parent", b.parent),
        ("callbacks", ", ".join(b.callbacks) or "none"),
        ("fired", fired or "none yet"),
        ("created", when(b.created_ms)),
        ("finished", when(b.finished_ms) or None),
        ("expires", when(b.expires_ms)),
        ("unfinished", (members + (" ..." if b.more_members else "")) or None),
    ]  # fmt: skip
    pairs = [(key, value) for key, value in pairs if value is not None]
    return Fields(pairs, b)


def delete_batch(admin: AdminClient, options: argparse.Namespace) -> str:
    admin.delete_batch(options.id)
    return f"{options.id}: deleted"


def fsck(admin: AdminClient, options: argparse.Namespace) -> Fields:
    report = admin.fsck()
    problems = "none" if not report.problems else "\n  " + "\n  ".join(report.problems)
    pairs: list[tuple[str, object]] = [
        ("checked", f"{report.jobs} jobs, {report.batches} batches"),
        ("problems", problems + (" ..." if report.more else "")),
    ]
    return Fields(pairs, report)


def compact(admin: AdminClient, options: argparse.Namespace) -> Fields:
    done = admin.compact()
    pairs: list[tuple[str, object]] = [
        ("snapshot through seq", done.through_seq),
        ("journal", f"{done.journal_bytes} bytes on disk"),
    ]
    return Fields(pairs, done)
