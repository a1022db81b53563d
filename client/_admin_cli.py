"""The operator subcommands of ``leash``: views and operations over the admin socket.

Each prints a table (or a few ``key: value`` lines) by default and JSON
with ``--json``: one JSON document, times as unix milliseconds and job
args decoded from msgpack. The socket is ``--socket PATH`` or
``DATA_DIR/admin.sock`` with ``--data-dir`` (default ./leash-data). Exit
status: 0 done; 1 refused by the broker; 2 usage; 3 not found; 69 no admin
socket (the broker is not running there); 77 permission denied.
"""

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

import msgspec

from leash.protocol import admin as A

from ._admin_format import Fields, Table, counts, decoded_args, duration, error_text, plain, when
from ._exceptions import ConnectFailed, NotFound, PermissionDenied, ServerError
from .admin import DEFAULT_DATA_DIR, SOCKET_FILE, AdminClient

EXIT_REFUSED, EXIT_USAGE, EXIT_NOT_FOUND = 1, 2, 3
EXIT_UNAVAILABLE, EXIT_NO_PERMISSION = 69, 77


class UsageError(Exception):
    """Options that do not go together."""


Run = Callable[[AdminClient, argparse.Namespace], Any]


def add_commands(commands: "argparse._SubParsersAction[Any]") -> None:
    """Register every admin subcommand on the ``leash`` parser."""
    _command(commands, "stats", "counts, totals, journal and limits", _stats)
    _command(commands, "queues", "each queue: ready, scheduled, in flight, dead, latency", _queues)
    _command(commands, "busy", "the jobs each worker process is running now", _busy)
    _command(commands, "processes", "the live worker processes", _processes)
    job = _command(commands, "job", "everything about one job", _job)
    job.add_argument("id", help="the job id")
    for kind, help_text in (
        ("scheduled", "jobs scheduled for later, soonest first"),
        ("retries", "jobs waiting to be retried, soonest first"),
        ("dead", "jobs in the dead set, newest first"),
    ):
        listing = _command(commands, kind, help_text, _lister(_KINDS[kind]))
        _add_filter(listing)
        listing.add_argument("--limit", type=int, default=50, help="at most this many (50)")
    for verb, help_text in (("pause", "stop handing out a queue's jobs"), ("resume", "go on")):
        queue = _command(commands, verb, help_text, _queue_op(verb))
        queue.add_argument("queue")
    _add_job_operations(commands)
    _add_batch_commands(commands)
    controls: list[tuple[str, A.ProcessControl, str]] = [
        ("quiet", "quiet", "ask a worker process to stop fetching"),
        ("unquiet", "ok", "let a quiet worker process fetch again"),
        ("stop", "terminate", "ask a worker process to release its jobs and exit"),
    ]
    for verb, state, help_text in controls:
        control = _command(commands, verb, help_text, _control(state))
        control.add_argument("worker_id")


def _add_job_operations(commands: "argparse._SubParsersAction[Any]") -> None:
    for verb, help_text in (
        ("kill", "move a job to the dead set now"),
        ("delete", "forget a job, whatever its state"),
    ):
        job_op = _command(commands, verb, help_text, _job_op(verb))
        job_op.add_argument("id", help="the job id")
    requeue = _command(
        commands,
        "requeue",
        "make a dead or retrying job ready again, or every one that matches a filter",
        _requeue,
    )
    requeue.add_argument("id", nargs="?", default=None, help="the job id (or a filter below)")
    which = requeue.add_mutually_exclusive_group()
    which.add_argument("--dead", action="store_true", help="every dead job that matches")
    which.add_argument("--retrying", action="store_true", help="every retrying job that matches")
    _add_filter(requeue)


def _add_batch_commands(commands: "argparse._SubParsersAction[Any]") -> None:
    batches = _command(commands, "batches", "the batches, newest first", _batches)
    batches.add_argument(
        "--state", choices=["open", "committed", "finished", "abandoned"], default=None
    )
    batches.add_argument("--limit", type=int, default=50, help="at most this many (50)")
    batch = _command(commands, "batch", "one batch's status and its unfinished members", _batch)
    batch.add_argument("id", help="the batch id")
    batch.add_argument("--limit", type=int, default=100, help="unfinished members listed (100)")
    delete_batch = _command(
        commands, "delete-batch", "remove a batch and all its bookkeeping", _delete_batch
    )
    delete_batch.add_argument("id", help="the batch id")
    _command(commands, "fsck", "cross-check the broker's whole state", _fsck)
    _command(commands, "compact", "snapshot the journal now and drop what it covers", _compact)


_KINDS: dict[str, A.ListKind] = {"scheduled": "scheduled", "retries": "retrying", "dead": "dead"}


def _command(
    commands: "argparse._SubParsersAction[Any]",
    name: str,
    help_text: str,
    run: Run,
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=help_text, description=help_text
    )
    parser.add_argument("--socket", default=None, help="the admin socket's path")
    parser.add_argument(
        "--data-dir", default=None, help=f"find the socket in this directory ({DEFAULT_DATA_DIR})"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=lambda options: _run(run, options))
    return parser


def _add_filter(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queue", default=None, help="only this queue")
    parser.add_argument("--type", default=None, help="only this job type")
    parser.add_argument("--error", default=None, help="only jobs whose last error contains this")


def _run(run: Run, options: argparse.Namespace) -> int:
    if options.socket is not None and options.data_dir is not None:
        print("leash: error: give --socket or --data-dir, not both", file=sys.stderr)
        return EXIT_USAGE
    path = options.socket or os.path.join(options.data_dir or DEFAULT_DATA_DIR, SOCKET_FILE)
    try:
        with AdminClient(path, timeout_s=30.0) as admin:
            result = run(admin, options)
    except ConnectFailed as exc:
        no_permission = "permission denied" in str(exc)
        print(f"leash: error: {exc}", file=sys.stderr)
        return EXIT_NO_PERMISSION if no_permission else EXIT_UNAVAILABLE
    except PermissionDenied as exc:
        print(f"leash: error: {exc.message}", file=sys.stderr)
        return EXIT_NO_PERMISSION
    except NotFound as exc:
        print(f"leash: error: {exc.message}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except UsageError as exc:
        print(f"leash: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ServerError as exc:
        print(f"leash: error: {exc.message} ({exc.code})", file=sys.stderr)
        return EXIT_REFUSED
    if options.json:
        sys.stdout.write(msgspec.json.encode(plain(result)).decode() + "\n")
    elif isinstance(result, str):
        print(result)
    elif result is not None:
        print(result.text())
    return 0


# --- views -------------------------------------------------------------------


def _stats(admin: AdminClient, options: argparse.Namespace) -> Fields:
    s = admin.stats()
    journal = s.journal
    pairs: list[tuple[str, object]] = [
        ("version", s.version),
        ("uptime", duration(s.uptime_ms)),
        ("epoch", s.epoch),
        ("jobs", counts(s.jobs)),
        ("since start", counts(s.totals)),
        ("connections", s.connections),
        ("processes", s.processes),
        ("queues", s.queues),
        ("journal", f"{journal.bytes} bytes in {journal.segments} files, "
                    f"last seq {journal.last_seq}"),
        ("fsync", f"{journal.fsyncs} (p50 {journal.fsync_p50_ms:.2f} ms, "
                  f"p99 {journal.fsync_p99_ms:.2f} ms)"),
        ("group commit", f"{journal.commits} writes, "
                         f"{journal.commit_mean_records:.1f} records each"),
        ("replay at start", f"{journal.replay_records} records in {journal.replay_s:.3f} s"),
        ("limits", counts(s.limits)),
    ]  # fmt: skip
    return Fields(pairs, s)


def _queues(admin: AdminClient, options: argparse.Namespace) -> Table:
    queues = admin.queues()
    rows = [
        (q.name, q.ready, q.scheduled, q.in_flight, q.dead, "yes" if q.paused else "",
         duration(q.latency_ms))
        for q in queues
    ]  # fmt: skip
    headers = ("QUEUE", "READY", "SCHEDULED", "IN FLIGHT", "DEAD", "PAUSED", "LATENCY")
    return Table(headers, rows, queues)


def _busy(admin: AdminClient, options: argparse.Namespace) -> Table:
    busy = admin.busy()
    rows = [
        (p.worker_id, j.id, j.queue, j.type, j.attempt, when(j.leased_ms), when(j.deadline_ms))
        for p in busy
        for j in p.jobs
    ]
    headers = ("WORKER", "JOB", "QUEUE", "TYPE", "ATTEMPT", "LEASED", "DEADLINE")
    return Table(headers, rows, busy)


def _processes(admin: AdminClient, options: argparse.Namespace) -> Table:
    processes = admin.processes()
    rows = [
        (p.worker_id, p.hostname, p.pid, ",".join(p.labels), p.state, when(p.last_seen_ms),
         p.connections, p.in_flight)
        for p in processes
    ]  # fmt: skip
    headers = ("WORKER", "HOST", "PID", "LABELS", "STATE", "LAST BEAT", "CONNS", "IN FLIGHT")
    return Table(headers, rows, processes)


def _job(admin: AdminClient, options: argparse.Namespace) -> Fields:
    job = admin.job(options.id)
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
        ("last error", f"{error.type}: {error.message}" if error else None),
        ("backtrace", error.backtrace if error and error.backtrace else None),
    ]
    pairs += [(key, value) for key, value in optional if value is not None]
    return Fields(pairs, job)


def _lister(kind: A.ListKind) -> Run:
    def run(admin: AdminClient, options: argparse.Namespace) -> Table:
        filter = {"queue": options.queue, "type": options.type, "error": options.error}
        jobs = list(admin.jobs(kind, most=options.limit, **filter))
        column = "DIED" if kind == "dead" else "RUNS AT"
        rows = [
            (j.id, j.queue, j.type, j.attempt, when(j.died_ms if kind == "dead" else j.run_at_ms),
             error_text(j))
            for j in jobs
        ]  # fmt: skip
        return Table(("JOB", "QUEUE", "TYPE", "FAILED", column, "LAST ERROR"), rows, jobs)

    return run


# --- operations --------------------------------------------------------------


def _queue_op(verb: str) -> Run:
    def run(admin: AdminClient, options: argparse.Namespace) -> str:
        (admin.pause if verb == "pause" else admin.resume)(options.queue)
        return f"{options.queue}: {'paused' if verb == 'pause' else 'resumed'}"

    return run


def _control(state: A.ProcessControl) -> Run:
    def run(admin: AdminClient, options: argparse.Namespace) -> str:
        admin.control(options.worker_id, state)
        return f"{options.worker_id}: asked to {state}"

    return run


def _job_op(verb: str) -> Run:
    def run(admin: AdminClient, options: argparse.Namespace) -> str:
        (admin.kill_job if verb == "kill" else admin.delete_job)(options.id)
        return f"{options.id}: {'killed' if verb == 'kill' else 'deleted'}"

    return run


def _requeue(admin: AdminClient, options: argparse.Namespace) -> str | list[str]:
    filter = {"queue": options.queue, "type": options.type, "error": options.error}
    bulk = options.dead or options.retrying
    if bulk == (options.id is not None):
        raise UsageError("give a job id, or --dead or --retrying (with filters)")
    if options.id is not None:
        if any(filter.values()):
            raise UsageError("--queue, --type and --error go with --dead or --retrying")
        admin.requeue_job(options.id)
        return f"{options.id}: requeued"
    ids = admin.requeue_jobs("dead" if options.dead else "retrying", **filter)
    if options.json:
        return ids
    return f"requeued {len(ids)} job{'s' if len(ids) != 1 else ''}"


def _batches(admin: AdminClient, options: argparse.Namespace) -> Table:
    batches = list(admin.batches(options.state, most=options.limit))
    rows = [
        (b.id, b.state, b.total, b.pending, b.failures, b.dead, b.children, when(b.created_ms),
         when(b.finished_ms), b.description)
        for b in batches
    ]  # fmt: skip
    headers = ("BATCH", "STATE", "TOTAL", "PENDING", "FAILURES", "DEAD", "CHILDREN", "CREATED",
               "FINISHED", "DESCRIPTION")  # fmt: skip
    return Table(headers, rows, batches)


def _batch(admin: AdminClient, options: argparse.Namespace) -> Fields:
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


def _delete_batch(admin: AdminClient, options: argparse.Namespace) -> str:
    admin.delete_batch(options.id)
    return f"{options.id}: deleted"


def _fsck(admin: AdminClient, options: argparse.Namespace) -> Fields:
    report = admin.fsck()
    problems = "none" if not report.problems else "\n  " + "\n  ".join(report.problems)
    pairs: list[tuple[str, object]] = [
        ("checked", f"{report.jobs} jobs, {report.batches} batches"),
        ("problems", problems + (" ..." if report.more else "")),
    ]
    return Fields(pairs, report)


def _compact(admin: AdminClient, options: argparse.Namespace) -> Fields:
    done = admin.compact()
    pairs: list[tuple[str, object]] = [
        ("snapshot through seq", done.through_seq),
        ("journal", f"{done.journal_bytes} bytes on disk"),
    ]
    return Fields(pairs, done)
