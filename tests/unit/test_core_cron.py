"""Schedules: each tick pushes its job once, in one record with the next
tick; ticks missed while the broker was down follow the schedule's policy;
cron expressions follow their zone's daylight-saving rules. Every step of
the harness checks the invariants, the replay and the state image too."""

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from leash.broker.core import records as R
from leash.broker.core.cron import following, tick_job_id
from leash.broker.core.tally import tally
from leash.broker.core.tick import next_due_ms
from leash.protocol import admin as A
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from leash.protocol.limits import SCHEDULES_MAX
from tests.unit.test_core_harness import SECOND_MS, START_MS, Core

MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS


def add(core: Core, name: str = "s", **fields: Any) -> A.AddSchedule:
    job = fields.pop("job", None) or M.JobSpec(type="report", queue="cron")
    if "cron" not in fields:
        fields.setdefault("every_ms", SECOND_MS)
    request = A.AddSchedule(core.next_rid(), name, job, **fields)
    core.expect(request, M.Ok)
    return request


def restart_at(core: Core, at_ms: int) -> None:
    """The broker was down until ``at_ms``: it replays its journal and boots."""
    core.now_ms = at_ms
    core.restart()


def fired_ticks(records: list[R.Record]) -> list[int]:
    return [r.tick_ms for r in records if isinstance(r, R.ScheduleFired) and r.job is not None]


def ms(text: str) -> int:
    """A UTC time ("2026-03-29 01:00") in unix ms."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 1000


def test_an_interval_schedule_pushes_one_job_a_tick_named_for_its_tick() -> None:
    core = Core()
    add(core, "beat")
    assert next_due_ms(core.state) == START_MS + SECOND_MS
    assert core.advance(SECOND_MS - 1) == []
    (record,) = core.advance(1)
    tick_ms = START_MS + SECOND_MS
    assert isinstance(record, R.ScheduleFired) and record.tick_ms == tick_ms
    assert record.next_ms == tick_ms + SECOND_MS
    assert record.job is not None and record.job.id == tick_job_id("beat", tick_ms)
    job = core.job(f"_sch:beat:{tick_ms}")
    assert (job.queue, job.type, job.state) == ("cron", "report", "ready")
    assert next_due_ms(core.state) == tick_ms + SECOND_MS


def test_ticks_that_come_while_the_broker_is_busy_each_fire_once_late() -> None:
    core = Core()
    add(core)
    records = core.advance(3 * SECOND_MS + 500)
    assert fired_ticks(records) == [START_MS + k * SECOND_MS for k in (1, 2, 3)]
    assert core.advance(400) == []


def test_ticks_passed_over_by_a_jump_of_the_clock_follow_the_missed_policy() -> None:
    core = Core(schedule_late_max_ms=MINUTE_MS)
    add(core, every_ms=10 * SECOND_MS, missed="last")
    records = core.advance(HOUR_MS)  # the machine slept for an hour
    late_floor_ms = core.now_ms - MINUTE_MS
    assert isinstance(records[0], R.ScheduleFired) and records[0].tick_ms < late_floor_ms
    assert records[0].tick_ms == late_floor_ms - 10 * SECOND_MS  # the last one passed over
    assert fired_ticks(records[1:]) == [late_floor_ms + k * 10 * SECOND_MS for k in range(7)]


def test_the_tally_counts_a_fired_job_as_pushed_to_its_queue() -> None:
    core = Core()
    add(core)
    record = R.ScheduleFired("s", START_MS + SECOND_MS, START_MS + 2 * SECOND_MS, None, START_MS)
    assert tally(core.state, record) == []
    (fired,) = core.advance(SECOND_MS)
    assert tally(core.state, fired) == [("cron", "pushed")]


def test_ticks_missed_while_down_are_skipped_by_default_and_the_next_is_after_the_boot() -> None:
    core = Core()
    add(core)
    core.advance(SECOND_MS)
    restart_at(core, START_MS + 10 * SECOND_MS + 300)  # down from 1 s to 10.3 s
    boot_ms = core.now_ms
    (record,) = core.tick()
    assert isinstance(record, R.ScheduleFired) and record.job is None
    assert record.tick_ms == START_MS + 10 * SECOND_MS  # the last one missed
    assert record.next_ms == START_MS + 11 * SECOND_MS > boot_ms
    assert core.state.schedules["s"].skips == 1
    assert fired_ticks(core.advance(SECOND_MS)) == [START_MS + 11 * SECOND_MS]


def test_the_last_policy_runs_the_most_recent_missed_tick_once() -> None:
    core = Core()
    add(core, missed="last")
    restart_at(core, START_MS + 5 * SECOND_MS + 1)
    assert fired_ticks(core.tick()) == [START_MS + 5 * SECOND_MS]
    assert core.tick() == []
    assert core.state.schedules["s"].fires == 1


def test_a_tick_journalled_before_a_crash_never_fires_again() -> None:
    core = Core()
    add(core, missed="last")
    core.advance(2 * SECOND_MS)
    restart_at(core, core.now_ms)  # back at once: nothing was missed
    assert core.tick() == []
    assert fired_ticks(core.advance(SECOND_MS)) == [START_MS + 3 * SECOND_MS]
    assert core.state.schedules["s"].fires == 3


def test_a_paused_schedule_skips_its_ticks_and_resumes_from_the_next() -> None:
    core = Core()
    add(core)
    core.expect(A.PauseSchedule(core.next_rid(), "s"), M.Ok)
    assert next_due_ms(core.state) is None
    assert core.advance(5 * SECOND_MS + 500) == []
    core.expect(A.ResumeSchedule(core.next_rid(), "s"), M.Ok)
    assert fired_ticks(core.advance(500)) == [START_MS + 6 * SECOND_MS]


def test_a_removed_schedule_fires_no_more_and_its_jobs_stay() -> None:
    core = Core()
    add(core)
    core.advance(SECOND_MS)
    core.expect(A.RemoveSchedule(core.next_rid(), "s"), M.Ok)
    assert core.advance(5 * SECOND_MS) == []
    assert core.job(tick_job_id("s", START_MS + SECOND_MS)).state == "ready"
    core.refused(A.RemoveSchedule(core.next_rid(), "s"), ErrorCode.NOT_FOUND)
    core.refused(A.PauseSchedule(core.next_rid(), "s"), ErrorCode.NOT_FOUND)


def test_an_unchanged_add_is_no_record_and_a_changed_one_keeps_the_fires() -> None:
    core = Core()
    request = add(core)
    core.advance(SECOND_MS)
    assert core.send(msgspec.structs.replace(request, rid=core.next_rid())).records == []
    add(core, every_ms=10 * SECOND_MS)
    schedule = core.state.schedules["s"]
    assert (schedule.fires, schedule.next_ms) == (1, core.now_ms + 10 * SECOND_MS)


def test_the_schedules_view_shows_each_schedule_its_fires_and_next_tick() -> None:
    core = Core()
    add(core, "b", cron="*/5 * * * *", tz="Europe/Berlin", missed="last")
    add(core, "a")
    core.advance(SECOND_MS)
    reply = core.expect(A.ListSchedules(core.next_rid()), A.Schedules)
    a, b = reply.schedules
    assert (a.name, a.every_ms, a.fires, a.last_tick_ms) == (
        "a",
        SECOND_MS,
        1,
        START_MS + SECOND_MS,
    )
    assert a.next_ms == START_MS + 2 * SECOND_MS and a.cron is None
    assert (b.name, b.cron, b.tz, b.missed, b.fires) == (
        "b",
        "*/5 * * * *",
        "Europe/Berlin",
        "last",
        0,
    )
    assert b.next_ms == START_MS + 100 * SECOND_MS  # 22:15 UTC, the next multiple of 5 minutes


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"cron": "61 * * * *"}, "$.cron"),
        ({"cron": "* * *"}, "$.cron"),
        ({"cron": "0 3 * * *", "tz": "Mars/Olympus"}, "$.tz"),
        ({"cron": "0 3 * * *", "tz": "../../etc/passwd"}, "$.tz"),
        ({"cron": "0 3 * * *", "every_ms": SECOND_MS}, "$.cron"),
        ({"job": M.JobSpec(type="t", id="mine")}, "$.job.id"),
        ({"job": M.JobSpec(type="t", delay_ms=5)}, "$.job.delay_ms"),
        ({"job": M.JobSpec(type="t", unique=True)}, "$.job.unique_key"),
        ({"job": M.JobSpec(type="t", ttl_ms=5)}, "$.job.ttl_ms"),
    ],
)
def test_a_schedule_that_cannot_be_is_refused_saying_where(
    fields: dict[str, Any], path: str
) -> None:
    core = Core()
    job = fields.pop("job", M.JobSpec(type="t"))
    if "cron" not in fields:
        fields["every_ms"] = SECOND_MS
    error = core.refused(A.AddSchedule(core.next_rid(), "s", job, **fields), ErrorCode.BAD_REQUEST)
    assert error.path == path
    assert core.state.schedules == {}


def test_neither_cron_nor_interval_is_refused() -> None:
    core = Core()
    request = A.AddSchedule(core.next_rid(), "s", M.JobSpec(type="t"))
    assert core.refused(request, ErrorCode.BAD_REQUEST).path == "$.cron"


def test_the_admin_decoder_bounds_names_intervals_and_expressions() -> None:
    def decode(**fields: Any) -> None:
        body = {"op": "add_schedule", "rid": 1, "name": "s", "job": {"type": "t"}, **fields}
        A.admin_request_decoder.decode(msgspec.msgpack.encode(body))

    decode(every_ms=1000)
    for bad in (
        {"every_ms": 999},
        {"name": "x" * 65, "every_ms": 1000},
        {"name": "a/b", "every_ms": 1000},
        {"cron": "*" * 129},
        {"cron": "* * * * *", "tz": "x" * 65},
        {"cron": "* * * * *", "missed": "all"},
    ):
        with pytest.raises(msgspec.ValidationError):
            decode(**bad)


def test_no_more_than_the_schedule_limit_is_registered() -> None:
    core = Core()
    for index in range(SCHEDULES_MAX):
        core.apply(R.ScheduleAdded(_spec(f"s{index}"), START_MS + HOUR_MS, core.now_ms))
    error = core.refused(
        A.AddSchedule(core.next_rid(), "one-more", M.JobSpec(type="t"), every_ms=SECOND_MS),
        ErrorCode.TOO_LARGE,
    )
    assert "1000 schedules" in error.message
    add(core, "s7", every_ms=2 * SECOND_MS)  # replacing one is not one more


def _spec(name: str) -> R.ScheduleSpec:
    return R.ScheduleSpec(
        name, "", "UTC", SECOND_MS, "skip", "q", "t", msgspec.Raw(b"\x90"), 5, 25, 60_000, None
    )


# --- daylight saving, in real zones ------------------------------------------


def _ticks(cron: str, tz: str, start_ms: int, count: int) -> list[int]:
    spec = msgspec.structs.replace(_spec("z"), cron=cron, tz=tz, every_ms=0)
    found, at_ms = [], start_ms
    for _ in range(count):
        at_ms = following(spec, at_ms, at_ms)
        found.append(at_ms)
    return found


def test_a_daily_tick_in_the_spring_forward_gap_runs_once_just_after_it() -> None:
    # Europe/Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist.
    ticks = _ticks("30 2 * * *", "Europe/Berlin", ms("2026-03-27 12:00"), 3)
    assert ticks == [ms("2026-03-28 01:30"), ms("2026-03-29 01:00"), ms("2026-03-30 00:30")]


def test_a_daily_tick_in_the_fall_back_hour_runs_once_at_its_first_occurrence() -> None:
    # America/New_York, 2026-11-01: 02:00 EDT becomes 01:00 EST; 01:30 comes twice.
    ticks = _ticks("30 1 * * *", "America/New_York", ms("2026-10-30 12:00"), 3)
    assert ticks == [ms("2026-10-31 05:30"), ms("2026-11-01 05:30"), ms("2026-11-02 06:30")]


def test_an_hourly_schedule_ticks_every_real_hour_across_both_transitions() -> None:
    spring = _ticks("0 * * * *", "Europe/Berlin", ms("2026-03-29 00:30"), 3)
    assert spring == [ms("2026-03-29 01:00"), ms("2026-03-29 02:00"), ms("2026-03-29 03:00")]
    fall = _ticks("0 * * * *", "Europe/Berlin", ms("2026-10-25 00:30"), 3)
    assert fall == [ms("2026-10-25 01:00"), ms("2026-10-25 02:00"), ms("2026-10-25 03:00")]


def test_a_broker_up_across_the_fall_back_fires_the_daily_tick_once() -> None:
    core = Core(now_ms=ms("2026-10-31 12:00"))
    add(core, cron="30 1 * * *", tz="America/New_York")
    records: list[R.Record] = []
    while core.now_ms < ms("2026-11-02 06:00"):  # 01:00 EST, before the next
        records += core.advance(MINUTE_MS)
    assert fired_ticks(records) == [ms("2026-11-01 05:30")]


def test_a_restart_inside_the_repeated_hour_does_not_fire_its_tick_again() -> None:
    core = Core(now_ms=ms("2026-11-01 05:00"))  # 01:00 EDT
    add(core, cron="30 1 * * *", tz="America/New_York", missed="last")
    assert fired_ticks(core.advance_to(ms("2026-11-01 05:31"))) == [ms("2026-11-01 05:30")]
    restart_at(core, ms("2026-11-01 06:10"))  # 01:10 EST: 01:30 comes again on the wall
    assert core.advance_to(ms("2026-11-01 07:00")) == []
    assert core.state.schedules["s"].next_ms == ms("2026-11-02 06:30")
