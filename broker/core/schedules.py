"""The operator's schedule requests: add (or replace), remove, pause,
resume, list. Pure, like decide: each change is one record (cron.py says
what the records mean). Bounds: at most ``SCHEDULES_MAX`` schedules; names,
expressions and zones bounded by the admin messages; an interval of at
least ``SCHEDULE_INTERVAL_MIN_MS``.

An add with a name already registered replaces that schedule's spec and
keeps its fires, its last tick and its pause; its next tick is the first
after both now and its last fired tick, so no tick fires twice. An add that
changes nothing (the config's schedules at every boot) is no record at
all: the schedule keeps its next tick, and the ticks missed while the
broker was down still follow its policy.
"""

from collections.abc import Sequence

from msgspec import Raw

from leash.broker.core import cron
from leash.broker.core import records as R
from leash.broker.core.common import Rejected
from leash.broker.core.state import Schedule, State
from leash.protocol import admin as A
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from leash.protocol.limits import SCHEDULES_MAX

ScheduleRequest = (
    A.AddSchedule | A.RemoveSchedule | A.PauseSchedule | A.ResumeSchedule | A.ListSchedules
)


def decide_schedule(
    state: State, request: ScheduleRequest, now_ms: int
) -> tuple[A.Schedules | M.Ok, list[R.Record]]:
    match request:
        case A.AddSchedule(rid=rid):
            return M.Ok(rid), _add(state, request, now_ms)
        case A.RemoveSchedule(rid=rid, name=name):
            _known(state, name)
            return M.Ok(rid), [R.ScheduleRemoved(name, now_ms)]
        case A.PauseSchedule(rid=rid, name=name):
            paused = _known(state, name).paused
            return M.Ok(rid), [] if paused else [R.SchedulePaused(name, now_ms)]
        case A.ResumeSchedule(rid=rid, name=name):
            schedule = _known(state, name)
            if not schedule.paused:
                return M.Ok(rid), []
            after_ms = max(now_ms, schedule.last_tick_ms)
            next_ms = cron.following(schedule.spec, schedule.next_ms, after_ms)
            return M.Ok(rid), [R.ScheduleResumed(name, next_ms, now_ms)]
        case A.ListSchedules(rid=rid):
            return A.Schedules(rid, [view(s) for _, s in sorted(state.schedules.items())]), []


def config_records(state: State, requests: Sequence[A.AddSchedule], now_ms: int) -> list[R.Record]:
    """At start, the broker's config file's schedules (each ``from_config``,
    checked when the file was read): each added as ``add_schedule`` adds
    it (unchanged: no record), and those the file made before and no longer
    names removed. Beyond the schedule limit: ``Rejected``."""
    named = {request.name for request in requests}
    records: list[R.Record] = [
        R.ScheduleRemoved(name, now_ms)
        for name, schedule in sorted(state.schedules.items())
        if schedule.spec.from_config and name not in named
    ]
    room = len(state.schedules) - len(records)
    for request in requests:
        if request.name not in state.schedules and room >= SCHEDULES_MAX:
            message = f"the broker holds {SCHEDULES_MAX} schedules, its limit"
            raise Rejected(ErrorCode.TOO_LARGE, message, "$.name")
        room += request.name not in state.schedules
        records += _add(state, request, now_ms, check_room=False)
    return records


def spec_of(request: A.AddSchedule) -> R.ScheduleSpec:
    """The schedule a request registers; ``Rejected`` if it cannot be one."""
    job = request.job
    if (request.cron is None) == (request.every_ms is None):
        raise Rejected(ErrorCode.BAD_REQUEST, "give cron or every_ms, one of them", "$.cron")
    refused = [
        field
        for field, given in (
            ("id", job.id is not None),
            ("batch", job.batch is not None),
            ("run_at_ms", job.run_at_ms is not None),
            ("delay_ms", job.delay_ms is not None),
            ("unique_key", job.unique_key is not None or job.unique),
            ("expires_at_ms", job.expires_at_ms is not None),
            ("ttl_ms", job.ttl_ms is not None),
        )
        if given
    ]
    if refused:
        message = f"a schedule's job takes no {refused[0]}: each tick's job gets its own"
        raise Rejected(ErrorCode.BAD_REQUEST, message, f"$.job.{refused[0]}")
    if request.cron is not None:
        cron.check_cron(request.cron, request.tz)
    else:
        cron.zone(request.tz)
    return R.ScheduleSpec(
        name=request.name,
        cron=request.cron or "",
        tz=request.tz,
        every_ms=request.every_ms or 0,
        missed=request.missed,
        queue=job.queue,
        type=job.type,
        args=Raw(bytes(job.args)),  # not a view of the request frame
        priority=job.priority,
        max_attempts=job.max_attempts,
        lease_ttl_ms=job.lease_ttl_ms,
        retry_base_ms=job.retry_base_ms,
        from_config=request.from_config,
    )


def _add(
    state: State, request: A.AddSchedule, now_ms: int, *, check_room: bool = True
) -> list[R.Record]:
    spec = spec_of(request)
    known = state.schedules.get(spec.name)
    if check_room and known is None and len(state.schedules) >= SCHEDULES_MAX:
        message = f"the broker holds {SCHEDULES_MAX} schedules, its limit"
        raise Rejected(ErrorCode.TOO_LARGE, message, "$.name")
    if known is not None and _same(known.spec, spec):
        return []
    after_ms = max(now_ms, known.last_tick_ms if known is not None else 0)
    # An interval's first tick is one interval from now.
    next_ms = cron.following(spec, after_ms, after_ms)
    return [R.ScheduleAdded(spec, next_ms, now_ms)]


def _same(a: R.ScheduleSpec, b: R.ScheduleSpec) -> bool:
    return bytes(a.args) == bytes(b.args) and _fields(a) == _fields(b)


def _fields(spec: R.ScheduleSpec) -> tuple[object, ...]:
    return tuple(getattr(spec, f) for f in spec.__struct_fields__ if f != "args")


def _known(state: State, name: str) -> Schedule:
    schedule = state.schedules.get(name)
    if schedule is None:
        raise Rejected(ErrorCode.NOT_FOUND, f"no schedule {name!r}", "$.name")
    return schedule


def view(schedule: Schedule) -> A.ScheduleView:
    spec = schedule.spec
    return A.ScheduleView(
        name=spec.name,
        queue=spec.queue,
        type=spec.type,
        args=spec.args,
        missed=spec.missed,
        next_ms=0 if schedule.paused else schedule.next_ms,
        added_ms=schedule.added_ms,
        cron=spec.cron or None,
        tz=spec.tz if spec.cron else None,
        every_ms=spec.every_ms or None,
        paused=schedule.paused,
        from_config=spec.from_config,
        last_tick_ms=schedule.last_tick_ms or None,
        fires=schedule.fires,
        skips=schedule.skips,
    )
