"""The schedules of the ``--config`` TOML file: one ``[schedules.NAME]``
table each, registered at every start.

A table takes ``cron`` (with ``tz``, default ``UTC``) or ``every-ms``, the
job's ``type``, ``queue``, ``args`` (any TOML value), ``priority``,
``max-attempts``, ``lease-ttl-ms`` and ``retry-base-ms``, and ``missed``
(``skip`` or ``last``). Each becomes the ``add_schedule`` request an
operator could send, marked ``from_config``, checked here as the core
checks it (a bad expression or zone stops the start with its file and
name). At start the broker applies them as the core says
(``core.schedules.config_records``): an unchanged one is no record (it
keeps its next tick and its missed policy), a changed one replaces the
schedule of its name, and a schedule the file made before that is no
longer in it is removed. An operator may pause, replace or remove a
config schedule over the admin socket; the file wins again at the next
start.
"""

from typing import Any

import msgspec

from leash.broker.core.common import Rejected
from leash.broker.core.schedules import spec_of
from leash.broker.errors import BrokerError
from leash.protocol import admin as A
from leash.protocol import messages as M

SCHEDULES_TABLE = "schedules"
_JOB_KEYS = ("type", "queue", "args", "priority", "max-attempts", "lease-ttl-ms", "retry-base-ms")
_WHEN_KEYS = ("cron", "tz", "every-ms", "missed")


class ScheduleConfigError(BrokerError, ValueError):
    """A schedule table that cannot be one; the message names it."""


def schedules_of(table: object) -> tuple[A.AddSchedule, ...]:
    """The ``add_schedule`` requests of the file's ``schedules`` table."""
    if not isinstance(table, dict):
        raise ScheduleConfigError("schedules: expected tables [schedules.NAME]")
    return tuple(_request(name, fields) for name, fields in sorted(table.items()))


def _request(name: str, fields: object) -> A.AddSchedule:
    where = f"schedules.{name}"
    if not isinstance(fields, dict):
        raise ScheduleConfigError(f"{where}: expected a table")
    unknown = sorted(set(fields) - {*_JOB_KEYS, *_WHEN_KEYS})
    if unknown:
        raise ScheduleConfigError(f"{where}: unknown key {unknown[0]!r}")
    job: dict[str, Any] = {k.replace("-", "_"): v for k, v in fields.items() if k in _JOB_KEYS}
    job["args"] = msgspec.Raw(msgspec.msgpack.encode(job.get("args", [])))
    plain = {k.replace("-", "_"): v for k, v in fields.items() if k in _WHEN_KEYS}
    try:
        request = msgspec.convert(
            {**plain, "rid": 0, "name": name, "job": job, "from_config": True}, A.AddSchedule
        )
        spec_of(request)  # the core's own checks: the expression, the zone
    except msgspec.ValidationError as error:
        raise ScheduleConfigError(f"{where}: {error}") from None
    except Rejected as rejected:
        raise ScheduleConfigError(f"{where}: {rejected.message}") from None
    assert isinstance(request.job, M.JobSpec)
    return request
