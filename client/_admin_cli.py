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
from collections.abc import Mapping
from typing import Any

import msgspec

from leash.protocol import admin as A
from leash.protocol import limits

from . import _admin_runs as R
from ._admin_format import plain
from ._admin_runs import Run
from ._args import rate, seconds, whole
from ._exceptions import (
    ConnectFailed,
    ConnectionLost,
    NotFound,
    PermissionDenied,
    ServerError,
    UsageError,
)
from ._schedule_cli import add_schedule_commands
from .admin import DEFAULT_DATA_DIR, SOCKET_FILE, AdminClient

EXIT_REFUSED, EXIT_USAGE, EXIT_NOT_FOUND = 1, 2, 3
EXIT_UNAVAILABLE, EXIT_NO_PERMISSION = 69, 77
ENV_SOCKET, ENV_DATA_DIR = "LEASH_ADMIN_SOCKET", "LEASH_DATA_DIR"
PING_TIMEOUT_S = 1.0
LISTING_MAX = 1_000_000  # --limit of a listing (fetched page by page)


def add_commands(commands: "argparse._SubParsersAction[Any]") -> None:
    """Register every admin subcommand on the ``leash`` parser."""
    ping = _command(
        commands,
        "ping",
        "check that the broker answers on its admin socket (exit 0), within --timeout-s",
        R.ping,
    )
    ping.add_argument(
        "--timeout-s",
        type=seconds(0.01, 60),
        default=PING_TIMEOUT_S,
        help=f"give up after this long (default {PING_TIMEOUT_S:g}; exit 69)",
    )
    _command(commands, "stats", "counts, totals, journal and limits", R.stats)
    _command(commands, "queues", "each queue: ready, scheduled, in flight, dead, latency", R.queues)
    _command(commands, "busy", "the jobs each worker process is running now", R.busy)
    _command(commands, "processes", "the live worker processes", R.processes)
    job = _command(commands, "job", "everything about one job", R.job)
    job.add_argument("id", help="the job id")
    for kind, help_text in (
        ("ready", "jobs waiting to be fetched, queue by queue in fetch order"),
        ("leased", "jobs held by workers, soonest deadline first"),
        ("scheduled", "jobs scheduled for later, soonest first"),
        ("retries", "jobs waiting to be retried, soonest first"),
        ("dead", "jobs in the dead set, newest first"),
    ):
        listing = _command(commands, kind, help_text, R.lister(_KINDS[kind]))
        _add_filter(listing)
        listing.add_argument(
            "--limit", type=whole(1, LISTING_MAX), default=50, help="at most this many (50)"
        )
    pause = _command(
        commands, "pause", "stop handing out a queue's jobs (pushes still go in)", R.pause
    )
    pause.add_argument("queue", help="a queue that exists (has jobs), unless --create")
    pause.add_argument(
        "--create", action="store_true", help="pause it even if it has no jobs yet (ahead of time)"
    )
    resume = _command(commands, "resume", "hand out a paused queue's jobs again", R.resume)
    resume.add_argument("queue")
    _add_limit(commands)
    _add_job_operations(commands)
    _add_batch_commands(commands)
    add_schedule_commands(commands, _command)
    controls: list[tuple[str, A.ProcessControl, str]] = [
        ("quiet", "quiet", "ask a worker process to stop fetching"),
        ("unquiet", "ok", "let a quiet worker process fetch again"),
        ("stop", "terminate", "ask a worker process to exit (not the broker)"),
    ]
    parsers = {}
    for verb, state, help_text in controls:
        parsers[verb] = _command(commands, verb, help_text, R.control(state))
        parsers[verb].add_argument("worker_id", help="the worker id, as leash processes lists it")
    parsers["stop"].description = (
        "Ask a worker process to exit: it fetches no more jobs, finishes its running ones "
        "within its grace and releases the rest; what it still holds after the broker's "
        "--terminate-grace-ms is released for it. The broker keeps running (stop the broker "
        "with SIGTERM)."
    )


def _add_limit(commands: "argparse._SubParsersAction[Any]") -> None:
    limit = _command(commands, "limit", "set a queue's concurrency and rate limits", R.limit)
    limit.description = (
        "Set a queue's limits, replacing the ones it had; a limit not given is none. "
        "A limit lowered below what runs now takes no job away."
    )
    limit.add_argument("queue")
    limit.add_argument(
        "--concurrency", type=whole(0, limits.CONCURRENCY_LIMIT_MAX), default=0, metavar="N",
        help="at most N of its jobs leased at once",
    )  # fmt: skip
    limit.add_argument(
        "--per-key", type=whole(0, limits.CONCURRENCY_LIMIT_MAX), default=0, metavar="N",
        help="at most N leased at once of each concurrency key (a push's concurrency_key)",
    )  # fmt: skip
    limit.add_argument(
        "--rate", type=rate, default=None, metavar="N/INTERVAL",
        help="at most N jobs started in any INTERVAL (10/1s, 600/1m, 5/500ms)",
    )  # fmt: skip


def _add_job_operations(commands: "argparse._SubParsersAction[Any]") -> None:
    for verb, help_text, states in (
        ("kill", "move a job to the dead set now, or every one that matches", _KILL_STATES),
        ("delete", "forget a job, whatever its state, or every one that matches", _STATES),
    ):
        job_op = _command(commands, verb, help_text, R.job_op(verb))
        job_op.add_argument("id", nargs="?", default=None, help="the job id (or --state below)")
        job_op.add_argument(
            "--state", choices=states, default=None, help="every job in this state that matches"
        )
        _add_filter(job_op)
    purge = _command(commands, "purge", "delete every ready job of a queue", R.purge)
    purge.add_argument("queue")
    requeue = _command(
        commands,
        "requeue",
        "make a dead or retrying job ready again, or every one that matches a filter",
        R.requeue,
    )
    requeue.add_argument("id", nargs="?", default=None, help="the job id (or a filter below)")
    which = requeue.add_mutually_exclusive_group()
    which.add_argument("--dead", action="store_true", help="every dead job that matches")
    which.add_argument("--retrying", action="store_true", help="every retrying job that matches")
    _add_filter(requeue)


def _add_batch_commands(commands: "argparse._SubParsersAction[Any]") -> None:
    batches = _command(commands, "batches", "the batches, newest first", R.batches)
    batches.add_argument(
        "--state", choices=["open", "committed", "finished", "abandoned"], default=None
    )
    batches.add_argument(
        "--limit", type=whole(1, LISTING_MAX), default=50, help="at most this many (50)"
    )
    batch = _command(commands, "batch", "one batch's status and its unfinished members", R.batch)
    batch.add_argument("id", help="the batch id")
    batch.add_argument(
        "--limit",
        type=whole(1, limits.BATCH_STATUS_MEMBERS_MAX),
        default=limits.BATCH_STATUS_MEMBERS_DEFAULT,
        help=f"unfinished members listed ({limits.BATCH_STATUS_MEMBERS_DEFAULT})",
    )
    delete_batch = _command(
        commands, "delete-batch", "remove a batch and all its bookkeeping", R.delete_batch
    )
    delete_batch.add_argument("id", help="the batch id")
    _command(commands, "fsck", "cross-check the broker's whole state", R.fsck)
    _command(commands, "compact", "snapshot the journal now and drop what it covers", R.compact)


_KINDS: dict[str, A.ListKind] = {
    "ready": "ready",
    "leased": "leased",
    "scheduled": "scheduled",
    "retries": "retrying",
    "dead": "dead",
}
_STATES = ("ready", "leased", "scheduled", "retrying", "dead")
_KILL_STATES = ("ready", "leased", "scheduled", "retrying")
AGE_MAX_S = 10 * 365 * 24 * 3600


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
    parser.add_argument(
        "--min-age-s",
        type=seconds(0, AGE_MAX_S),
        default=None,
        help="only jobs created at least this long ago",
    )
    parser.add_argument(
        "--max-age-s",
        type=seconds(0, AGE_MAX_S),
        default=None,
        help="only jobs created at most this long ago",
    )


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
