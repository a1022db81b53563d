"""The schedule commands of ``leash``: ``leash schedules`` lists them;
``leash schedule add|rm|pause|resume NAME`` changes them over the admin
socket (the same socket options and exit statuses as every operator
command, ``_admin_cli``)."""

import argparse
from collections.abc import Callable
from typing import Any

import msgspec

from leash.protocol import limits

from ._admin_format import Table, duration, when
from ._admin_runs import Run
from ._args import whole
from ._exceptions import UsageError
from .admin import AdminClient

Command = Callable[["argparse._SubParsersAction[Any]", str, str, Run], argparse.ArgumentParser]


def add_schedule_commands(commands: "argparse._SubParsersAction[Any]", command: Command) -> None:
    command(commands, "schedules", "the schedules: when each ticks, its fires, its next", listing)
    schedule = commands.add_parser(
        "schedule", help="add, remove, pause or resume a schedule (cron or interval)"
    )
    verbs = schedule.add_subparsers(dest="verb", required=True, metavar="VERB")
    add = command(verbs, "add", "register a schedule, or replace the one of that name", add_run)
    add.add_argument("name", help="letters, digits, _ . - (at most 64)")
    when_ = add.add_mutually_exclusive_group(required=True)
    when_.add_argument("--cron", default=None, help="a cron expression, e.g. '*/5 * * * *'")
    when_.add_argument(
        "--every-ms",
        type=whole(limits.SCHEDULE_INTERVAL_MIN_MS, limits.SCHEDULE_INTERVAL_MAX_MS),
        default=None,
        help="a fixed interval instead (at least 1000)",
    )
    add.add_argument("--tz", default="UTC", help="the IANA zone the cron expression is read in")
    add.add_argument("--queue", default="default")
    add.add_argument("--type", required=True, help="the job type (handler name)")
    add.add_argument("--args", default=None, help="the args as JSON, e.g. '[1, 2]'")
    add.add_argument(
        "--priority", type=whole(limits.PRIORITY_MIN, limits.PRIORITY_MAX), default=None
    )
    add.add_argument(
        "--max-attempts",
        type=whole(limits.MAX_ATTEMPTS_MIN, limits.MAX_ATTEMPTS_MAX),
        default=None,
    )
    add.add_argument(
        "--missed",
        choices=["skip", "last"],
        default="skip",
        help="ticks that came while the broker was down: skip them (default) or run the last",
    )
    for verb, help_text, run in (
        ("rm", "remove a schedule (the jobs it pushed stay)", _change("remove")),
        ("pause", "stop a schedule's ticks", _change("pause")),
        ("resume", "tick again from the next tick (those while paused are skipped)",
         _change("resume")),
    ):  # fmt: skip
        command(verbs, verb, help_text, run).add_argument("name")


def listing(admin: AdminClient, options: argparse.Namespace) -> Table:
    schedules = admin.schedules()
    rows = [
        (
            s.name,
            f"{s.cron} ({s.tz})" if s.cron else f"every {duration(s.every_ms or 0)}",
            s.queue,
            s.type,
            s.missed,
            "paused" if s.paused else when(s.next_ms),
            when(s.last_tick_ms),
            s.fires,
            "config" if s.from_config else "admin",
        )
        for s in schedules
    ]
    headers = ("SCHEDULE", "WHEN", "QUEUE", "TYPE", "MISSED", "NEXT", "LAST", "FIRES", "FROM")
    return Table(headers, rows, schedules)


def add_run(admin: AdminClient, options: argparse.Namespace) -> str:
    job: dict[str, Any] = {"type": options.type, "queue": options.queue}
    if options.args is not None:
        try:
            job["args"] = msgspec.json.decode(options.args)
        except msgspec.DecodeError as exc:
            raise UsageError(f"--args is not JSON: {exc}") from None
    for field in ("priority", "max_attempts"):
        if getattr(options, field) is not None:
            job[field] = getattr(options, field)
    try:
        admin.add_schedule(
            options.name,
            job,
            cron=options.cron,
            tz=options.tz,
            every_ms=options.every_ms,
            missed=options.missed,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return f"schedule {options.name} added"


def _change(verb: str) -> Run:
    def run(admin: AdminClient, options: argparse.Namespace) -> str:
        getattr(admin, f"{verb}_schedule")(options.name)
        return f"schedule {options.name}: {verb}d"

    return run
