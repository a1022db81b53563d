"""How the templates show values: times, durations, sizes, job args. Each
returns text; the templates escape it."""

import datetime
from collections.abc import Callable
from typing import Any, Final

import msgspec

from leash.client._admin_format import (
    decoded_args,
    jobs_ran,
    jobs_ran_by_type,
    limits_use_text,
)
from leash.client._admin_format import limits_text as set_limits_text
from leash.protocol import admin as A
from leash.protocol import messages as M

PER: Final = {1000: "s", 60_000: "min", 3_600_000: "h", 86_400_000: "day"}


def when(at_ms: int | None) -> str:
    if not at_ms:
        return ""
    moment = datetime.datetime.fromtimestamp(at_ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + "Z"


def duration(ms: int | float | None) -> str:
    if ms is None:
        return ""
    ms = max(0, int(ms))
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms // 1000
    if seconds < 120:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 120:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} d {hours % 24} h"


def size(count: int | None) -> str:
    value = float(count or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def args_json(raw: msgspec.Raw, indent: int = 2) -> str:
    """A job's args as JSON text (user data: the template escapes it)."""
    value = decoded_args(raw)
    try:
        text = msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        return repr(value)
    return msgspec.json.format(text, indent=indent)


def short(text: str | None, chars: int = 80) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= chars else text[: chars - 1] + "…"


def rate(per_s: float) -> str:
    if per_s <= 0:
        return "0"
    return f"{per_s:.2f}/s" if per_s < 10 else f"{per_s:.0f}/s"


def ran(runs: dict[str, M.JobsRun] | None) -> str:
    """A process's runs, all types together: ``11 done, 1 dead``."""
    return jobs_ran((runs or {}).values())


def per(interval_ms: int) -> str:
    """A rate's interval: ``per min``, or ``per 90 s``."""
    return f"per {PER.get(interval_ms) or duration(interval_ms)}"


def limits_text(limits: dict[str, int]) -> str:
    """Limits as set: ``20 at once, 1 per key, 600 per min``."""
    fields = ("concurrency", "per_key", "rate", "rate_interval_ms")
    concurrency, per_key, rate_, interval_ms = (limits.get(field) or 0 for field in fields)
    return set_limits_text(concurrency, per_key, rate_, interval_ms, per)


def queue_limits(queue: A.QueueView) -> str:
    """A queue's limits with their use now: ``3/20 running, 1 per key (2 of
    5 keys full), 412/600 per min``; empty without limits."""
    return limits_use_text(queue, per)


FILTERS: Final[dict[str, Callable[..., Any]]] = {
    "when": when,
    "duration": duration,
    "size": size,
    "args_json": args_json,
    "short": short,
    "rate": rate,
    "per": per,
    "queue_limits": queue_limits,
    "ran": ran,
    "ran_by_type": jobs_ran_by_type,
}
