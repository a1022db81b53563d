"""Schedules: cron expressions and intervals that push a job at each tick.

Theory of operation. A schedule (``state.schedules``, a ``Schedule``) is
registered by an operator (``add_schedule``) or by the broker's config at
boot, with a cron expression read in an IANA time zone (``cron``, ``tz``)
or a fixed interval (``every_ms``), and the job each tick pushes. Its next
tick ``next_ms`` is state, and so is ``up_since_ms``: the broker's last
boot (every ``Booted`` record sets it), before which ticks came while the
broker was down.

- The tick (tick.py) fires each schedule whose ``next_ms`` came with one
  ``ScheduleFired`` record that both pushes the tick's job and sets the
  following tick: no crash can separate them, and a tick whose record is
  journalled never fires again (``next_ms`` is past it), so each tick fires
  at most once. Every tick that comes while the broker is up fires, late
  if the broker was busy (up to ``CoreConfig.schedule_late_max_ms``: a
  tick found later than that was passed over by a jump of the clock, a
  machine asleep, and counts as missed).
- Ticks that came while the broker was down follow the schedule's
  ``missed`` policy, in one record: ``skip`` (the default) pushes nothing,
  ``last`` pushes the most recent missed tick's job once. The next tick is
  then the first at or after the boot.
- Records carry results: the next tick is computed here, when the record
  is decided (``following``, a pure function of the expression, the zone
  and a time), and stored in the record; apply and replay never compute
  one, so a replay on a machine with other time-zone data means what the
  live run meant.
- A tick's job has the id ``_sch:NAME:TICK_MS`` (``tick_job_id``): the
  handler can read which tick it runs for; a client cannot push such an id
  (ids of the broker's start with ``_``).
- Cron expressions are parsed and walked by cronsim (5 fields, or 6 with
  seconds first), in the zone's rules: on a spring-forward day a fixed-time
  tick that falls in the gap runs once, at the first minute after it; on a
  fall-back day it runs once, at its first occurrence (as Debian's cron).
"""

import heapq
from datetime import UTC, datetime, tzinfo
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from leash.broker.core import records as R
from leash.broker.core.common import Rejected
from leash.broker.core.pushes import new_job
from leash.broker.core.state import Schedule, State, due_entries, live_schedule_tick
from leash.protocol.errors import ErrorCode

SKIP: Final = "skip"
LAST: Final = "last"
MISSED_POLICIES: Final = (SKIP, LAST)
NEVER: Final = 0  # a next_ms: the schedule has no tick left
TICK_JOB_PREFIX: Final = "_sch:"


def tick_job_id(name: str, tick_ms: int) -> str:
    return f"{TICK_JOB_PREFIX}{name}:{tick_ms}"


def zone(name: str) -> tzinfo:
    """The IANA zone of this name; ``Rejected`` if there is none."""
    if name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise Rejected(ErrorCode.BAD_REQUEST, f"no time zone {name!r}", "$.tz") from None


def check_cron(expression: str, tz: str) -> None:
    """Refuse an expression cronsim does not take (its message says why)."""
    try:
        CronSim(expression, datetime.fromtimestamp(0, zone(tz)))
    except CronSimError as error:
        message = f"cron expression {expression!r}: {error}"
        raise Rejected(ErrorCode.BAD_REQUEST, message, "$.cron") from None


def following(spec: R.ScheduleSpec, tick_ms: int, after_ms: int) -> int:
    """The schedule's first tick after ``after_ms`` (NEVER: none within
    cronsim's horizon of 50 years). An interval's ticks are ``tick_ms``
    plus whole intervals."""
    if spec.every_ms:
        steps = max(0, (after_ms - tick_ms) // spec.every_ms + 1)
        return tick_ms + steps * spec.every_ms
    start = datetime.fromtimestamp(after_ms // 1000, zone(spec.tz))
    try:
        for found in CronSim(spec.cron, start):
            found_ms = int(found.timestamp()) * 1000
            if found_ms > after_ms:  # a wall time seen again after a fall-back is passed
                return found_ms
    except StopIteration:
        pass
    return NEVER


def latest_before(spec: R.ScheduleSpec, tick_ms: int, before_ms: int) -> int:
    """The schedule's last tick before ``before_ms``, at least ``tick_ms``
    (a tick of the schedule that is before it)."""
    if spec.every_ms:
        return tick_ms + (before_ms - 1 - tick_ms) // spec.every_ms * spec.every_ms
    at = datetime.fromtimestamp(before_ms / 1000, zone(spec.tz))
    try:
        found_ms = int(next(CronSim(spec.cron, at, reverse=True)).timestamp()) * 1000
    except StopIteration:
        return tick_ms
    return found_ms if tick_ms <= found_ms < before_ms else tick_ms


# --- the tick's --------------------------------------------------------------


def due(state: State, now_ms: int, limit: int) -> list[R.ScheduleFired]:
    """One record for each schedule whose next tick came, at most ``limit``."""
    names: dict[str, None] = {}
    for entry in due_entries(state.schedule_ticks, now_ms, limit):
        if len(names) >= limit:
            break
        if live_schedule_tick(state, entry):
            names[entry[1]] = None
    return [fire(state, state.schedules[name], now_ms) for name in names]


def missed_before_ms(state: State, schedule: Schedule, now_ms: int) -> int:
    """Ticks before this came while the broker was down, or were passed
    over by a jump of its clock (found more than ``schedule_late_max_ms``
    late: the machine was asleep, or its clock was set forward)."""
    return max(schedule.up_since_ms, now_ms - state.config.schedule_late_max_ms)


def fire(state: State, schedule: Schedule, now_ms: int) -> R.ScheduleFired:
    """The record of the schedule's due tick: its job and its next tick, or,
    for ticks that came while the broker was down, what its policy says."""
    spec, tick_ms = schedule.spec, schedule.next_ms
    up_ms = missed_before_ms(state, schedule, now_ms)
    if tick_ms >= up_ms:  # the broker was up for it
        job = _job(state, spec, tick_ms, now_ms)
        return R.ScheduleFired(spec.name, tick_ms, following(spec, tick_ms, tick_ms), job, now_ms)
    last_ms = latest_before(spec, tick_ms, up_ms)
    next_ms = following(spec, last_ms, up_ms - 1)
    job = _job(state, spec, last_ms, now_ms) if spec.missed == LAST else None
    return R.ScheduleFired(spec.name, last_ms, next_ms, job, now_ms)


def _job(state: State, spec: R.ScheduleSpec, tick_ms: int, now_ms: int) -> R.NewJob | None:
    job_id = tick_job_id(spec.name, tick_ms)
    if job_id in state.jobs:  # only if a schedule of its name fired there before it was replaced
        return None
    return new_job(spec, job_id, now_ms, None, None)


# --- apply's ----------------------------------------------------------------


def added(state: State, record: R.ScheduleAdded) -> None:
    spec = record.schedule
    known = state.schedules.get(spec.name)
    if known is None:
        schedule = Schedule(spec, record.next_ms, record.at_ms, record.at_ms)
        state.schedules[spec.name] = schedule
    else:
        schedule = known
        schedule.spec, schedule.next_ms = spec, record.next_ms
    _arm(state, schedule)


def removed(state: State, record: R.ScheduleRemoved) -> None:
    del state.schedules[record.name]


def paused(state: State, record: R.SchedulePaused) -> None:
    schedule = state.schedules[record.name]
    assert not schedule.paused, record
    schedule.paused = True


def resumed(state: State, record: R.ScheduleResumed) -> None:
    schedule = state.schedules[record.name]
    assert schedule.paused, record
    schedule.paused, schedule.next_ms = False, record.next_ms
    _arm(state, schedule)


def fired(state: State, record: R.ScheduleFired) -> None:
    schedule = state.schedules[record.name]
    assert not schedule.paused and schedule.next_ms <= record.tick_ms, (schedule, record)
    assert record.next_ms == NEVER or record.next_ms > record.tick_ms, record
    schedule.next_ms = record.next_ms
    if record.job is not None:
        schedule.last_tick_ms = record.tick_ms
        schedule.fires += 1
    else:
        schedule.skips += 1
    _arm(state, schedule)


def booted(state: State, at_ms: int) -> None:
    """The broker started: ticks before now came while it was down."""
    for schedule in state.schedules.values():
        schedule.up_since_ms = at_ms


def _arm(state: State, schedule: Schedule) -> None:
    if schedule.next_ms != NEVER and not schedule.paused:
        heapq.heappush(state.schedule_ticks, (schedule.next_ms, schedule.spec.name))
