"""MUTATE and FLUSH (core/faktory_mutate.py), run in rounds as the shell
runs them, on the core harness (every record replays and survives an image).
Rounds are made small here so that every command takes several."""

from collections.abc import Callable

import msgspec
import pytest

from leash.broker.core import faktory_mutate as FM
from leash.protocol import faktory as F
from leash.protocol import messages as M
from tests.unit.test_core_harness import SECOND_MS, Core

HOUR_MS = 3600 * SECOND_MS


@pytest.fixture(autouse=True)
def small_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FM, "ROUND_MAX", 3)
    monkeypatch.setattr(FM, "ROUND_SCAN_MAX", 5)


def rounds(core: Core, step: Callable[[object], FM.Round]) -> tuple[int, int]:
    """Run rounds until done: (jobs changed, rounds)."""
    start: object = None
    changed = count = 0
    while True:
        done = step(start)
        for record in done.records:
            core.apply(record)
        changed, count = changed + done.changed, count + 1
        if done.next is None:
            return changed, count
        start = done.next


def mutate(core: Core, cmd: str, target: str, **filters: object) -> int:
    op = F.Mutate(cmd, target, filters.get("jids"), filters.get("pattern"), filters.get("jobtype"))  # type: ignore[arg-type]
    return rounds(core, lambda start: FM.mutate_round(core.state, op, start, core.now_ms))[0]


def sets(core: Core) -> Core:
    """Four jobs of each kind, types a and b: scheduled s0-s3, retrying r0-r3, dead d0-d3."""
    for n in range(4):
        kind = "ab"[n % 2]
        core.push(id=f"s{n}", type=kind, delay_ms=HOUR_MS, args=msgspec.Raw(b"\x91\xa3tag"))
        core.push(id=f"r{n}", type=kind, queue="r")
        core.push(id=f"d{n}", type=kind, queue="d", max_attempts=1)
    for delivery in core.fetch("r", "d", count=8):
        core.fail(delivery)
    return core


def ids(core: Core, state: str) -> set[str]:
    return {job.id for job in core.state.jobs.values() if job.state == state}


def test_clear_empties_the_target_whatever_the_filter() -> None:
    core = sets(Core())
    assert mutate(core, "clear", "retries", jobtype="a") == 4
    assert ids(core, "retrying") == set() and len(ids(core, "scheduled")) == 4


def test_discard_kill_and_requeue_take_the_matches_only() -> None:
    core = sets(Core())
    assert mutate(core, "discard", "scheduled", jobtype="a") == 2
    assert ids(core, "scheduled") == {"s1", "s3"}
    assert mutate(core, "kill", "retries", jids=["r0", "r3", "nope", "s1"]) == 2
    assert ids(core, "dead") == {"d0", "d1", "d2", "d3", "r0", "r3"}
    assert core.job("r0").last_error == M.ErrorInfo("Killed", "killed by an operator")
    assert mutate(core, "requeue", "dead", jobtype="b") == 3  # d1, d3 and r3
    assert ids(core, "ready") == {"d1", "d3", "r3"}
    assert core.job("d1").attempt == 0, "a requeued dead job has a fresh set of attempts"
    assert mutate(core, "requeue", "scheduled") == 2
    assert ids(core, "ready") == {"d1", "d3", "r3", "s1", "s3"}
    assert mutate(core, "kill", "dead") == 0


def test_a_pattern_matches_the_unit_as_fetch_gives_it() -> None:
    core = sets(Core())
    assert mutate(core, "discard", "scheduled", pattern='*"args":?"tag"?*') == 4
    assert mutate(core, "discard", "retries", pattern='*"jid":"r[12]"*') == 2
    assert ids(core, "retrying") == {"r0", "r3"}
    assert mutate(core, "discard", "dead", pattern="*nothing like it*") == 0


def test_a_command_over_many_rounds_takes_every_match_once() -> None:
    core = Core()
    for n in range(20):
        core.push(id=f"s{n:02}", delay_ms=HOUR_MS + n)
    op = F.Mutate("requeue", "scheduled", None, None, None)
    changed, count = rounds(core, lambda start: FM.mutate_round(core.state, op, start, core.now_ms))
    assert changed == 20 and count >= 7
    assert core.ready_ids() == [f"s{n:02}" for n in range(20)], "in the order they were due"


def test_flush_deletes_every_batch_and_job_and_fires_no_callback() -> None:
    core = sets(Core())
    callback = M.JobSpec(type="cb", queue="cb")
    callbacks = M.BatchCallbacks(success=callback, complete=callback, death=callback)
    core.create_batch(M.JobSpec(type="t", id="p1"), id="parent", callbacks=callbacks)
    core.create_batch(
        M.JobSpec(type="t", id="c1"), id="child", parent="parent", commit=True, callbacks=callbacks
    )
    core.commit_batch("parent")
    core.push(id="held")
    core.lease("default")
    changed, count = rounds(core, lambda start: FM.flush_round(core.state, core.now_ms))
    assert len(core.state.jobs) == 0 and len(core.state.batches) == 0
    assert changed == 2 + 12 + 3 and count >= 6
