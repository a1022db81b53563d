"""The group committer's phases (broker/journal/group_commit.py) in virtual
time: an in-memory disk, a clock that moves only when the test says, and a
writer whose jobs finish when the test says (tests/commit_rig.py). What each
fsync policy waits for before a reply is released, the interval fsync on
time, a rotation holding writes, a slow disk moving the fsync to the writer
and back, and a failed fsync answering every reply with the error."""

from pathlib import Path

import pytest

from leash.broker.journal import group_commit
from leash.broker.journal.group_commit import TRANSITIONS, Phase
from tests.commit_rig import rig
from tests.journal_kit import paused

SLOW_S = 2 * group_commit.INLINE_FSYNC_MAX_S
ARCHITECTURE = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def test_every_phase_has_its_moves_and_failed_is_the_end() -> None:
    assert set(TRANSITIONS) == set(Phase)
    assert TRANSITIONS[Phase.FAILED] == frozenset()
    for phase in Phase:
        if phase is not Phase.FAILED:
            assert Phase.FAILED in TRANSITIONS[phase], phase


def test_the_architecture_document_draws_every_phase() -> None:
    drawn = ARCHITECTURE.read_text(encoding="utf-8")
    assert [phase.name for phase in Phase if f"| {phase.name} |" not in drawn] == []


def test_an_illegal_move_is_refused_loudly() -> None:
    committer = rig("always").committer
    with pytest.raises(AssertionError, match="idle -> syncing on the thread"):
        committer._to(Phase.SYNCING)  # an fsync of nothing written
    assert committer.phase is Phase.IDLE


@pytest.mark.parametrize("mode", ["never", "interval:100"])
def test_without_always_a_reply_leaves_after_its_write_and_before_any_fsync(mode: str) -> None:
    r = rig(mode)
    r.committer.submit_records(paused(2))
    push = r.reply("push")
    assert push == [] and r.disk.events == []  # not before the end of the loop turn
    r.clock.run_ready()
    assert r.disk.events == ["write 2", "push ok"]
    assert r.committer.phase is Phase.WRITTEN and r.writer.in_flight == 0


def test_under_never_nothing_is_ever_fsynced_however_long_it_waits() -> None:
    r = rig("never")
    r.committer.submit_records(paused(1))
    r.clock.run_ready()
    r.clock.advance(3600.0)
    assert r.writer.in_flight == 0 and r.disk.synced_seq == 0


def test_under_interval_the_fsync_runs_on_time_and_only_when_something_was_written() -> None:
    r = rig("interval:100")
    r.clock.advance(0.05)
    r.committer.submit_records(paused(3))
    r.reply("push")
    r.clock.run_ready()
    r.clock.advance(0.0499)
    assert r.writer.in_flight == 0, "fsynced before its interval"
    r.clock.advance(0.0001)  # t = 100 ms: the timer fires
    assert r.writer.in_flight == 1 and r.committer.phase is Phase.SYNCING
    r.writer.complete()
    r.clock.run_ready()
    assert r.disk.synced_seq == 3 and r.committer.phase is Phase.IDLE
    r.clock.advance(1.0)  # ten intervals with nothing written: no fsync
    assert r.writer.in_flight == 0 and r.disk.events == ["write 3", "push ok", "sync 3"]
    assert r.committer.stats.fsyncs == 1


def test_under_interval_what_is_written_during_an_fsync_waits_for_the_next_interval() -> None:
    r = rig("interval:100")
    r.committer.submit_records(paused(1))
    r.clock.advance(0.1)  # written, then the timer starts an fsync
    r.committer.submit_records(paused(1, start=1))
    r.clock.run_ready()
    assert r.committer.phase is Phase.SYNCING_WRITTEN
    r.writer.complete()
    r.clock.run_ready()
    assert r.committer.phase is Phase.WRITTEN and r.disk.synced_seq == 1
    r.clock.advance(0.1)
    r.writer.complete()
    r.clock.run_ready()
    assert r.disk.synced_seq == 2 and r.committer.phase is Phase.IDLE


def test_under_always_a_reply_waits_for_the_fsync_and_a_fetch_only_for_the_write() -> None:
    r = rig("always")
    r.committer.submit_records(paused(1))  # a push
    r.reply("push")
    r.committer.submit_records(paused(1, start=1), sync=False)  # a lease
    r.reply("fetch", written=True)
    r.clock.run_ready()
    assert r.disk.events == ["write 2", "fetch ok", "sync 2", "push ok"]
    assert r.writer.in_flight == 0, "a fast disk is synced on the loop"


def test_under_always_leases_alone_start_no_fsync_and_the_next_one_covers_them() -> None:
    r = rig("always")
    r.committer.submit_records(paused(2), sync=False)
    r.reply("fetch", written=True)
    r.clock.run_ready()
    r.clock.advance(60.0)
    assert r.disk.events == ["write 2", "fetch ok"] and r.committer.phase is Phase.WRITTEN
    r.committer.submit_records(paused(1, start=2))  # an ack
    r.reply("ack")
    r.clock.run_ready()
    assert r.disk.events[2:] == ["write 3", "sync 3", "ack ok"]


def test_under_always_a_slow_fsync_moves_to_the_writer_and_a_fast_one_brings_it_back() -> None:
    r = rig("always")
    r.disk.sync_s = SLOW_S
    r.committer.submit_records(paused(1))
    r.reply("first")
    r.clock.run_ready()  # on the loop, found slow
    r.committer.submit_records(paused(1, start=1))
    second = r.reply("second")
    r.clock.run_ready()
    assert r.committer.phase is Phase.SYNCING and second == []
    r.committer.submit_records(paused(1, start=2))  # written while that fsync runs
    third = r.reply("third")
    r.clock.run_ready()
    assert r.committer.phase is Phase.SYNCING_WRITTEN and r.committer.busy
    r.writer.complete()
    r.clock.run_ready()  # second released; the next fsync starts at once, on the writer
    assert second == [True] and third == [] and r.committer.phase is Phase.SYNCING
    r.disk.sync_s = 0.0
    r.writer.complete()
    r.clock.run_ready()
    assert third == [True] and r.committer.phase is Phase.IDLE
    r.committer.submit_records(paused(1, start=3))  # fast again: back on the loop
    r.reply("fourth")
    r.clock.run_ready()
    assert r.writer.in_flight == 0 and r.disk.events[-3:] == ["write 4", "sync 4", "fourth ok"]
    assert r.committer.stats.fsyncs == 4


@pytest.mark.parametrize("mode", ["always", "interval:100", "never"])
def test_a_full_segment_holds_the_writes_after_it_until_the_writer_sealed_it(mode: str) -> None:
    r = rig(mode, segment_bytes=512)
    r.committer.submit_records(paused(6, name_chars=100))
    filled = r.reply("filled")
    r.clock.run_ready()
    assert r.committer.phase is Phase.ROTATING and filled == []
    r.committer.submit_records(paused(1, start=6))
    held = r.reply("held")
    fetch = r.reply("fetch", written=True)
    r.clock.run_ready()
    assert r.disk.events == ["write 6"], "written during the rotation"
    assert held == fetch == [] and r.committer.busy and r.committer.busy_written
    r.writer.complete()  # the seal: an fsync under every policy, then the next segment
    r.clock.run_ready()
    assert [s.last_seq for s in r.sealed] == [6] and r.disk.synced_seq >= 6
    assert filled == held == fetch == [True]
    assert r.disk.events[:3] == ["write 6", "sync 6", "filled ok"]
    assert "write 7" in r.disk.events


def test_a_full_segment_while_an_fsync_runs_seals_once_that_fsync_ended() -> None:
    r = rig("always", segment_bytes=512)
    r.disk.sync_s = SLOW_S
    r.committer.submit_records(paused(1))
    r.reply("first")
    r.clock.run_ready()  # slow: the next goes to the writer
    r.committer.submit_records(paused(1, start=1))
    r.reply("second")
    r.clock.run_ready()
    r.committer.submit_records(paused(6, start=2, name_chars=100))
    r.reply("filled")
    r.clock.run_ready()
    assert r.committer.phase is Phase.ROTATE_WANTED and r.writer.in_flight == 1
    r.writer.complete()
    r.clock.run_ready()
    assert r.committer.phase is Phase.ROTATING
    r.writer.complete()
    r.clock.run_ready()
    assert r.committer.phase is Phase.IDLE and [s.last_seq for s in r.sealed] == [8]
    assert r.disk.events[-3:] == ["second ok", "sync 8", "filled ok"]


def test_a_failed_fsync_on_the_loop_fails_the_committer_and_every_reply() -> None:
    r = rig("always")
    r.disk.fail_syncs = True
    r.committer.submit_records(paused(1))
    push = r.reply("push")
    fetch_before = r.reply("fetch", written=True)
    r.clock.run_ready()
    assert r.committer.phase is Phase.FAILED and len(r.failures) == 1
    assert push == [False] and fetch_before == [True]  # the fetch's write was done
    later = r.reply("later")
    r.committer.submit_records(paused(1, start=1))  # refused: nothing more is written
    r.clock.run_ready()
    assert later == [False] and r.disk.written_seq == 1 and len(r.failures) == 1


def test_a_failed_fsync_on_the_writer_fails_the_batch_in_flight_and_the_next() -> None:
    r = rig("always")
    r.disk.sync_s = SLOW_S
    r.committer.submit_records(paused(1))
    r.reply("first")
    r.clock.run_ready()
    r.committer.submit_records(paused(1, start=1))
    in_flight = r.reply("in flight")
    r.clock.run_ready()
    r.committer.submit_records(paused(1, start=2))
    next_batch = r.reply("next batch")
    r.clock.run_ready()
    r.disk.fail_syncs = True
    r.writer.complete()
    r.clock.run_ready()
    assert in_flight == next_batch == [False] and r.committer.phase is Phase.FAILED
    assert r.disk.synced_seq == 1 and r.writer.in_flight == 0, "fsync tried again"


def test_a_failed_interval_fsync_fails_the_replies_after_it() -> None:
    r = rig("interval:100")
    r.committer.submit_records(paused(1))
    before = r.reply("before")
    r.disk.fail_syncs = True
    r.clock.advance(0.1)
    r.writer.complete()
    r.clock.run_ready()
    assert before == [True]  # released after its write, as interval promises
    assert r.committer.phase is Phase.FAILED and r.reply("after") == [False]


def test_a_failed_write_fails_its_batch_and_starts_no_fsync() -> None:
    r = rig("always")
    r.disk.fail_writes = True
    r.committer.submit_records(paused(1))
    fetch = r.reply("fetch", written=True)
    r.clock.run_ready()
    assert fetch == [False] and r.committer.phase is Phase.FAILED
    assert r.writer.in_flight == 0 and r.disk.events == ["fetch failed"]


@pytest.mark.parametrize("mode", ["never", "interval:100"])
def test_a_hold_makes_the_next_replies_wait_for_one_fsync_then_the_policy_resumes(
    mode: str,
) -> None:
    r = rig(mode)
    r.committer.submit_records(paused(1))
    r.reply("before")
    r.clock.run_ready()
    r.committer.submit_records(paused(1, start=1))  # the record that must be durable
    r.committer.hold_until_synced()
    r.reply("held fetch", written=True)
    assert r.committer.holding
    r.clock.run_ready()  # the fsync runs on the loop, the fetch waits for it
    assert r.disk.events == ["write 1", "before ok", "write 2", "sync 2", "held fetch ok"]
    assert not r.committer.holding
    r.committer.submit_records(paused(1, start=2))
    r.reply("after")
    r.clock.run_ready()
    assert r.disk.events[-2:] == ["write 3", "after ok"]
