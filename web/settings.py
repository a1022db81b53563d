"""What the dashboard reads from a request that sets a queue's limits or adds
a schedule: each field checked as the broker checks it, and named when it
is wrong, so bad input is a clear 400 before any admin request is made
(never half a change). A form sends text (an empty field is not given, a
schedule's args are JSON text); a JSON body sends values."""

from collections.abc import Mapping
from typing import Any, Final

import msgspec

from leash.protocol import admin as A
from leash.protocol import limits as L
from leash.protocol import messages as M
from leash.web.forms import bad, number

FORM_ONLY: Final = ("csrf", "back")  # a form's own fields, never a setting
LIMIT_FIELDS: Final = {
    "concurrency": L.CONCURRENCY_LIMIT_MAX,
    "per_key": L.CONCURRENCY_LIMIT_MAX,
    "rate": L.RATE_LIMIT_MAX,
    "rate_interval_ms": L.RATE_INTERVAL_MAX_MS,
}
SCHEDULE_FIELDS: Final = (
    "name", "queue", "type", "args", "priority", "max_attempts", "cron", "tz", "every_ms", "missed",
)  # fmt: skip
JOB_NUMBERS: Final = {
    "priority": (L.PRIORITY_MIN, L.PRIORITY_MAX),
    "max_attempts": (L.MAX_ATTEMPTS_MIN, L.MAX_ATTEMPTS_MAX),
}


def _known(values: Mapping[str, Any], fields: tuple[str, ...]) -> None:
    unknown = sorted(set(values) - set(fields) - set(FORM_ONLY))
    if unknown:
        raise bad(f"no field {unknown[0]!r}: the fields are {', '.join(fields)}")


def queue_name(name: str) -> str:
    try:
        return msgspec.convert(name, M.QueueName)
    except msgspec.ValidationError:
        raise bad(f"queue: {name!r} is not a queue name (letters, digits, _ . : -)") from None


def limits_of(queue: str, values: Mapping[str, Any], is_form: bool) -> dict[str, int]:
    """The queue's new limits, all four (one not given is 0: no such limit).
    A form always sends its interval: without a rate it means nothing."""
    queue_name(queue)
    _known(values, tuple(LIMIT_FIELDS))
    found = {
        name: int(number(values.get(name), name, 0, high) or 0)
        for name, high in LIMIT_FIELDS.items()
    }
    if is_form and not found["rate"]:
        found["rate_interval_ms"] = 0
    if bool(found["rate"]) != bool(found["rate_interval_ms"]):
        raise bad("rate and rate_interval_ms: a rate limit needs both")
    return found


def _text(values: Mapping[str, Any], name: str) -> str | None:
    value = values.get(name)
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise bad(f"{name} must be text, not {value!r}")
    return value


def _args(values: Mapping[str, Any], is_form: bool) -> Any:
    value = values.get("args")
    if not is_form:
        return [] if value is None else value
    if value in (None, ""):
        return []
    try:
        return msgspec.json.decode(str(value))
    except msgspec.DecodeError as error:
        raise bad(f"args is not JSON: {error}") from None


def _packed(args: Any) -> msgspec.Raw:
    try:
        return msgspec.Raw(msgspec.msgpack.encode(args))
    except (msgspec.EncodeError, OverflowError, TypeError) as error:  # an int over 64 bits
        raise bad(f"args cannot be sent: {error}") from None


def schedule_of(values: Mapping[str, Any], is_form: bool) -> A.AddSchedule:
    """The schedule to add, checked whole (its ``rid`` is not used)."""
    _known(values, SCHEDULE_FIELDS)
    cron, every = _text(values, "cron"), values.get("every_ms")
    every_ms = number(every, "every_ms", L.SCHEDULE_INTERVAL_MIN_MS, L.SCHEDULE_INTERVAL_MAX_MS)
    if (cron is None) == (every_ms is None):
        raise bad("cron or every_ms: give one of them")
    job: dict[str, Any] = {
        "type": _text(values, "type"),
        "queue": _text(values, "queue") or "default",
        "args": _packed(_args(values, is_form)),
    }
    if job["type"] is None:
        raise bad("type: the job type is needed")
    for name, (low, high) in JOB_NUMBERS.items():
        found = number(values.get(name), name, low, high)
        if found is not None:
            job[name] = int(found)
    fields = {
        "rid": 0,
        "name": _text(values, "name"),
        "job": job,
        "cron": cron,
        "tz": _text(values, "tz") or "UTC",
        "every_ms": None if every_ms is None else int(every_ms),
        "missed": _text(values, "missed") or "skip",
    }
    try:
        return msgspec.convert(fields, A.AddSchedule)
    except msgspec.ValidationError as error:
        raise bad(f"bad schedule: {error}".replace("$.job.", "$.")) from None
