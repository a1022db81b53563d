"""How the operator commands print: tables and ``key: value`` lines for
people, one JSON document (times in unix ms, job args decoded) with
``--json``."""

import datetime
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec

from leash.protocol import admin as A
from leash.protocol import argtypes
from leash.protocol import messages as M


class Table:
    """Rows under headers, each column as wide as its widest cell."""

    def __init__(self, headers: Sequence[str], rows: Iterable[Sequence[object]], data: Any) -> None:
        self.headers = list(headers)
        self.rows = [[cell(value) for value in row] for row in rows]
        self.data = data  # what --json prints

    def text(self) -> str:
        if not self.rows:
            return "(none)"
        widths = [max(len(h), *(len(r[i]) for r in self.rows)) for i, h in enumerate(self.headers)]
        lines = [self.headers, *self.rows]
        return "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
            for line in lines
        )


class Fields:
    """``key: value`` lines."""

    def __init__(self, pairs: Sequence[tuple[str, object]], data: Any) -> None:
        self.pairs = pairs
        self.data = data

    def text(self) -> str:
        width = max(len(key) for key, _ in self.pairs)
        return "\n".join(f"{key + ':':<{width + 1}} {cell(value)}" for key, value in self.pairs)


def cell(value: object) -> str:
    return "" if value is None else str(value)


def when(at_ms: int | None) -> str:
    if not at_ms:
        return ""
    moment = datetime.datetime.fromtimestamp(at_ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def duration(ms: int) -> str:
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms / 1000
    if seconds < 120:
        return f"{seconds:.1f} s"
    return str(datetime.timedelta(seconds=round(seconds)))


def per_duration(interval_ms: int) -> str:
    """A rate's interval as ``leash`` prints it: ``per 60.0 s``."""
    return f"per {duration(interval_ms)}"


def limits_text(
    concurrency: int, per_key: int, rate: int, rate_interval_ms: int, per: Callable[[int], str]
) -> str:
    """Limits as set: ``20 at once, 1 per key, 600 per 60.0 s`` (``per`` says
    the rate's interval); ``no limits`` when none is."""
    parts = [
        f"{concurrency} at once" if concurrency else "",
        f"{per_key} per key" if per_key else "",
        f"{rate} {per(rate_interval_ms)}" if rate else "",
    ]
    return ", ".join(part for part in parts if part) or "no limits"


def limits_use_text(queue: A.QueueView, per: Callable[[int], str]) -> str:
    """A queue's limits with their use now: ``3/20 running, 1 per key (2 of
    5 keys full), 412/600 per 60.0 s`` (``per`` says the rate's interval);
    empty without limits."""
    parts = []
    if queue.concurrency_limit:
        parts.append(f"{queue.in_flight}/{queue.concurrency_limit} running")
    if queue.per_key_limit:
        keys = f"{queue.keys_saturated} of {queue.keys_leased} keys full"
        parts.append(f"{queue.per_key_limit} per key ({keys})")
    if queue.rate_limit:
        parts.append(f"{queue.rate_used}/{queue.rate_limit} {per(queue.rate_interval_ms)}")
    return ", ".join(parts)


def progress_text(percent: int | None, message: str | None) -> str:
    """A running job's progress report: ``40% 4 of 10 files`` ("" if none)."""
    if percent is None:
        return ""
    return f"{percent}% {message}" if message else f"{percent}%"


def counts(by_name: dict[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in by_name.items())


def error_text(job: M.JobView) -> str:
    error = job.last_error
    if error is None:
        return ""
    text = f"{error.type}: {error.message}".replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def decoded_args(raw: msgspec.Raw) -> Any:
    """A job's args as JSON shows them: datetimes in RFC 3339, Decimals and
    UUIDs as text, bytes in base64 (``leash.protocol.argtypes.readable``)."""
    try:
        return argtypes.readable(argtypes.unpack(raw))
    except (msgspec.DecodeError, ValueError, RecursionError):
        return {"undecodable_msgpack": bytes(raw).hex()}


def plain(value: Any) -> Any:
    """What --json prints: builtins, with job args decoded."""
    if isinstance(value, Table | Fields):
        return plain(value.data)
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, msgspec.Struct):
        builtins = msgspec.to_builtins(value, enc_hook=_decode_args)
        builtins.pop("rid", None)
        return builtins
    return value


def _decode_args(value: Any) -> Any:
    if isinstance(value, msgspec.Raw):
        return decoded_args(value)
    raise NotImplementedError(type(value))


RUN_OUTCOMES: tuple[str, ...] = M.JobsRun.__struct_fields__  # done, retrying, dead, ...


def jobs_ran(runs: Iterable[M.JobsRun]) -> str:
    """Runs summed by outcome, the ones that happened: ``11 done, 1 retrying``."""
    totals = dict.fromkeys(RUN_OUTCOMES, 0)
    for run in runs:
        for outcome in RUN_OUTCOMES:
            totals[outcome] += getattr(run, outcome)
    return ", ".join(f"{count} {outcome}" for outcome, count in totals.items() if count)


def jobs_ran_by_type(ran: dict[str, M.JobsRun] | None) -> str:
    """A process's runs, per job type: ``mail: 2 done; resize: 11 done, 1 dead``."""
    return "; ".join(f"{name}: {jobs_ran([run])}" for name, run in sorted((ran or {}).items()))
