"""What the dashboard reads from a request: the job filter, the page, the
state, a bulk scope — each checked, so bad input is a clear 400, never a
crash and never a request the broker has to refuse half-way."""

import math
from collections.abc import Mapping
from typing import Any, Final, get_args

import msgspec
from starlette.exceptions import HTTPException

from leash.protocol import admin as A
from leash.protocol import limits as L
from leash.web.gateway import PAGE_DEFAULT, PAGE_MAX

STATES: Final[tuple[str, ...]] = get_args(A.ListKind)
KILLABLE: Final[tuple[str, ...]] = get_args(A.KillKind)
RETRYABLE: Final = ("retrying", "dead")
ACTIONS: Final = ("retry", "delete", "kill")
AGE_MAX_S: Final = L.TIME_MAX_MS // 1000
BULK_MOST_MAX: Final = 10_000_000  # jobs one bulk call of the API changes at most
IDS_MAX: Final = PAGE_MAX  # jobs picked by id in one bulk call
FILTER_FIELDS: Final = ("queue", "type", "error", "min_age_s", "max_age_s")


def bad(message: str) -> HTTPException:
    return HTTPException(400, message)


def state_of(text: str, allowed: tuple[str, ...] = STATES) -> str:
    if text not in allowed:
        raise bad(f"state must be one of {', '.join(allowed)}, not {text!r}")
    return text


def job_filter(values: Mapping[str, Any]) -> dict[str, Any]:
    """The JobFilter fields the values give (ages in seconds become ms);
    empty values are not given."""
    fields: dict[str, Any] = {}
    for name in ("queue", "type", "error"):
        value = values.get(name)
        if value not in (None, ""):
            fields[name] = str(value)
    for name in ("min_age_s", "max_age_s"):
        seconds = number(values.get(name), name, 0, AGE_MAX_S, allow_float=True)
        if seconds is not None:
            fields[name.replace("_s", "_ms")] = round(seconds * 1000)
    try:
        msgspec.convert(fields, A.JobFilter)
    except msgspec.ValidationError as error:
        raise bad(f"bad filter: {error}") from None
    return fields


def filter_query(values: Mapping[str, Any]) -> dict[str, str]:
    """The filter fields given, as text (for links and hidden fields)."""
    return {name: str(values[name]) for name in FILTER_FIELDS if values.get(name) not in (None, "")}


def limit_of(values: Mapping[str, Any], default: int = PAGE_DEFAULT, high: int = PAGE_MAX) -> int:
    found = number(values.get("limit"), "limit", 1, high)
    return default if found is None else int(found)


def cursor_of(values: Mapping[str, Any]) -> str:
    cursor = str(values.get("cursor") or "")
    if len(cursor) > 512:
        raise bad("cursor: at most 512 characters")
    return cursor


def ids_of(values: list[str]) -> list[str]:
    ids = [value for value in values if value]
    if len(ids) > IDS_MAX:
        raise bad(f"at most {IDS_MAX} job ids at once")
    if any(len(job_id) > L.JOB_ID_MAX_CHARS for job_id in ids):
        raise bad(f"a job id has at most {L.JOB_ID_MAX_CHARS} characters")
    return ids


def number(
    value: object, name: str, low: float, high: float, *, allow_float: bool = False
) -> float | None:
    if value in (None, ""):
        return None
    try:
        found = float(value) if allow_float else int(str(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        kind = "a number" if allow_float else "a whole number"
        raise bad(f"{name} must be {kind}, not {value!r}") from None
    if isinstance(value, bool) or math.isnan(found) or not low <= found <= high:
        raise bad(f"{name} must be between {low:g} and {high:g}, not {value!r}")
    return found
