"""The operator subcommands of ``leash``: views and operations over the admin socket.

Each prints a table (or a few ``key: value`` lines) by default and JSON
with ``--json``: one JSON document, times as unix milliseconds and job
args decoded from msgpack. The socket is ``--socket PATH``, or
``DATA_DIR/admin.sock`` with ``--data-dir``; else ``LEASH_ADMIN_SOCKET``,
or the one in ``LEASH_DATA_DIR`` (the broker's own variables), else
./leash-data/admin.sock. Exit status: 0 done; 1 refused by the broker;
2 usage; 3 not found; 69 no answer on the admin socket (no broker running
there, or ``ping`` timed out); 77 permission denied.
"""

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from leash.protocol import admin as A
from leash.protocol import limits
from leash.protocol.errors import ErrorCode

from ._admin_format import Fields, Table, counts, decoded_args, duration, error_text, plain, when
from ._args import seconds, whole
from ._exceptions import ConnectFailed, ConnectionLost, NotFound, PermissionDenied, ServerError
from .admin import DEFAULT_DATA_DIR, SOCKET_FILE, AdminClient

EXIT_REFUSED, EXIT_USAGE, EXIT_NOT_FOUND = 1, 2, 3
EXIT_UNAVAILABLE, EXIT_NO_PERMISSION = 69, 77
ENV_SOCKET, ENV_DATA_DIR = "LEASH_ADMIN_SOCKET", "LEASH_DATA_DIR"
PING_TIMEOUT_S = 1.0
LISTING_MAX = 1_000_000  # --limit of a listing (fetched page by page)


class UsageError(Exception):
    """Options that do not go together."""


Run = Callable[[AdminClient, argparse.Namespace], Any]


def add_commands(commands: "argparse._SubParsersAction[Any]") -> None:
    """Register every admin subcommand on the ``leash`` parser."""
    ping = _command(
        commands,
        "ping",
        "check that the broker answers on its admin socket (exit 0), within --timeout-s",
        _ping,
    )
    ping.add_argument(
        "--timeout-s",
        type=seconds(0.01, 60),
        default=PING_TIMEOUT_S,
        help=f"give up after this long (default {PING_TIMEOUT_S:g}; exit 69)",
    )
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
        listing.add_argument(
            "--limit", type=whole(1, LISTING_MAX), default=50, help="at most this many (50)"
        )
    pause = _command(
        commands, "pause", "stop handing out a queue's jobs (pushes still go in)", _pause
    )
    pause.add_argument("queue", help="a queue that exists (has jobs), unless --create")
    pause.add_argument(
        "--create", action="store_true", help="pause it even if it has no jobs yet (ahead of time)"
    )
    resume = _command(commands, "resume", "hand out a paused queue's jobs again", _resume)
    resume.add_argument("queue")
    _add_job_operations(commands)
    _add_batch_commands(commands)
    controls: list[tuple[str, A.ProcessControl, str]] = [
        ("quiet", "quiet", "ask a worker process to stop fetching"),
        ("unquiet", "ok", "let a quiet worker process fetch again"),
        (
            "stop",
            "terminate",
            "ask a worker process to exit: it fetches no more jobs, finishes its running ones "
            "within its grace and releases the rest; what it still holds after the broker's "
            "--terminate-grace-ms is released for it. The broker keeps running (stop the "
            "broker with SIGTERM)",
        ),
    ]
    for verb, state, help_text in controls:
        control = _command(commands, verb, help_text, _control(state))
        control.add_argument("worker_id", help="the worker id, as leash processes lists it")


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
    batches.add_argument(
        "--limit", type=whole(1, LISTING_MAX), default=50, help="at most this many (50)"
    )
    batch = _command(commands, "batch", "one batch's status and its unfinished members", _batch)
    batch.add_argument("id", help="the batch id")
    batch.add_argument(
        "--limit",
        type=whole(1, limits.BATCH_STATUS_MEMBERS_MAX),
        default=limits.BATCH_STATUS_MEMBERS_DEFAULT,
        help=f"unfinished members listed ({limits.BATCH_STATUS_MEMBERS_DEFAULT})",
    )
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
    parser.add_argument(
        "--socket", default=None, help=f"the admin socket's path (default: {ENV_SOCKET})"
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help=f"find the socket in this directory ({ENV_DATA_DIR}, else {DEFAULT_DATA_DIR})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=lambda options: _run(run, options))
    return parser


def _add_filter(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queue", default=None, help="only this queue")
    parser.add_argument("--type", default=None, help="only this job type")
    parser.add_argument("--error", default=None, help="only jobs whose last error contains this")


def socket_path(socket: str | None, data_dir: str | None, environ: Mapping[str, str]) -> str:
    """The admin socket: the flags, else the broker's variables, else the default."""
    if socket is not None:
        return socket
    if data_dir is None:
        socket = environ.get(ENV_SOCKET) or None
        if socket is not None:
            return socket
        data_dir = environ.get(ENV_DATA_DIR) or DEFAULT_DATA_DIR
    return os.path.join(data_dir, SOCKET_FILE)


def _run(run: Run, options: argparse.Namespace) -> int:
    if options.socket is not None and options.data_dir is not None:
        print("leash: error: give --socket or --data-dir, not both", file=sys.stderr)
        return EXIT_USAGE
    path = socket_path(options.socket, options.data_dir, os.environ)
    try:
        with AdminClient(path, timeout_s=getattr(options, "timeout_s", 30.0)) as admin:
            result = run(admin, options)
    except ConnectFailed as exc:
        no_permission = "permission denied" in str(exc)
        print(f"leash: error: {exc}", file=sys.stderr)
        return EXIT_NO_PERMISSION if no_permission else EXIT_UNAVAILABLE
    except ConnectionLost as exc:
        print(f"leash: error: no answer on {path}: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
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


def _ping(admin: AdminClient, options: argparse.Namespace) -> str:
    started = time.perf_counter()
    s = admin.stats()
    took_ms = (time.perf_counter() - started) * 1000
    return f"pong: {s.version}, up {duration(s.uptime_ms)}, answered in {took_ms:.1f} ms"


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


def _pause(admin: AdminClient, options: argparse.Namespace) -> str:
    try:
        admin.pause(options.queue, create=options.create)
    except NotFound:
        raise NotFound(
            ErrorCode.NOT_FOUND,
            f"no queue {options.queue!r} (it has no jobs); --create pauses it ahead of time",
        ) from None
    return f"{options.queue}: paused"


def _resume(admin: AdminClient, options: argparse.Namespace) -> str:
    admin.resume(options.queue)
    return f"{options.queue}: resumed"


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
