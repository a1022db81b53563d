"""Epoch rolls: a token is (epoch << 32) | counter, so before the counter of
an epoch could reach 2**32 the broker moves to a new epoch while it runs.
No token is issued twice, the counter never spills into the epoch bits, the
roll replays, and the shell makes it durable before any reply under every
fsync policy (the broker itself, in process, on a real journal)."""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from leash.broker import core
from leash.broker.core import CoreConfig, State, apply, canonical
from leash.broker.core import records as R
from leash.broker.core.state import COUNTER_LIMIT, COUNTER_ROLL_AT
from leash.broker.journal.disk import OsDisk
from leash.broker.journal.group_commit import FsyncPolicy
from leash.broker.journal.log import Journal
from leash.broker.journal.recovery import recover
from leash.broker.server.broker import Broker
from leash.broker.server.config import ServerConfig
from leash.protocol import messages as M
from tests.journal_kit import replayed
from tests.unit.test_group_commit import EventDisk, _until

NOW_MS = 1_700_000_000_000
INFO = R.ProcessInfo("host", 1, [], 1, "test")


def near_the_end(left: int) -> list[R.Record]:
    """A boot and a push of broker-named jobs that leave ``left`` numbers
    before the roll point (the counter reached by ids, as a long run would)."""
    return [R.Booted(1, NOW_MS), R.JobsPushed([], counter_after=COUNTER_ROLL_AT - left)]


def decided(state: State, request: M.Request, records: list[R.Record]) -> M.Reply:
    """What the shell does for one request: roll if due, decide, apply."""
    for record in core.roll_due(state, NOW_MS):
        apply(state, record)
        records.append(record)
    outcome = core.decide(state, request, "w", NOW_MS)
    for record in outcome.records:
        apply(state, record)
        records.append(record)
    return outcome.reply


def test_no_roll_is_due_before_the_roll_point_and_one_is_due_at_it() -> None:
    state = replayed(near_the_end(1))
    assert core.roll_due(state, NOW_MS) == []
    apply(state, R.JobsPushed([], counter_after=COUNTER_ROLL_AT))
    assert core.roll_due(state, NOW_MS) == [R.EpochRolled(epoch=2, at_ms=NOW_MS)]


def test_fetches_across_the_roll_get_tokens_never_seen_before_within_the_token_range() -> None:
    records = near_the_end(6_500)  # the pushes take 5,000, the fetches cross the end
    state = replayed(records)
    records.append(R.ProcessSeen("w", INFO, NOW_MS, NOW_MS + 60_000))
    apply(state, records[-1])
    specs = [M.JobSpec(type="t", queue="q") for _ in range(1_000)]
    for rid in range(1, 6):  # 5,000 jobs in, broker-named: the counter moves by push too
        decided(state, M.PushMany(rid=rid, jobs=specs), records)
    tokens: list[int] = []
    for rid in range(10, 15):
        reply = decided(state, M.Fetch(rid=rid, queues=["q"], count=1_000), records)
        assert isinstance(reply, M.Jobs)
        tokens += [job.token for job in reply.jobs]
    assert len(tokens) == 5_000 and len(set(tokens)) == 5_000
    assert all(0 < token < (1 << 63) and token & (COUNTER_LIMIT - 1) > 0 for token in tokens)
    rolls = [record for record in records if isinstance(record, R.EpochRolled)]
    assert [roll.epoch for roll in rolls] == [2]
    assert {token >> 32 for token in tokens} == {1, 2}
    assert state.epoch == 2 and state.counter < COUNTER_ROLL_AT
    assert canonical(replayed(records)) == canonical(state)


def test_a_roll_that_came_too_late_stops_apply_rather_than_spill_into_the_epoch() -> None:
    state = replayed(near_the_end(0))
    with pytest.raises(AssertionError):
        apply(state, R.JobsPushed([], counter_after=COUNTER_LIMIT + 1))
    with pytest.raises(AssertionError):
        state.next_token(COUNTER_LIMIT)


def test_an_epoch_never_rolls_backwards() -> None:
    state = replayed(near_the_end(0))
    with pytest.raises(AssertionError):
        apply(state, R.EpochRolled(epoch=1, at_ms=NOW_MS))


# --- the shell ------------------------------------------------------------------


@dataclass
class Peer:
    """What the shell's request path reads of a greeted connection."""

    worker_id: str = "w"
    info: R.ProcessInfo = INFO
    peer: str = "127.0.0.1:5000"
    greeted: bool = True
    waiters: set[Any] = field(default_factory=set)
    sent: list[M.Reply] = field(default_factory=list)

    def send(self, reply: M.Reply) -> None:
        self.sent.append(reply)


def request(message: Any) -> bytes:
    return M.encoder.encode(message)


@asynccontextmanager
async def broker_on(directory: str, disk: EventDisk, mode: str) -> AsyncIterator[Broker]:
    """The broker's shell on a fresh journal that holds ``near_the_end(2)``."""
    journal = Journal(directory, disk)
    journal.open(recover(directory, OsDisk(), CoreConfig()).next_seq, None, 1)
    failures: list[BaseException] = []
    config = ServerConfig(data_dir=directory, fsync=FsyncPolicy.parse(mode))
    records = near_the_end(2)
    broker = Broker(config, replayed(records), journal, on_journal_failed=failures.append)
    committer = broker.committer
    committer.submit_records(records)
    await committer.drain()
    disk.events.clear()  # the segment's creation and the setup
    try:
        yield broker
    finally:
        broker.guard.stop()
        await committer.close()
        journal.close()
    assert failures == []


@pytest.mark.parametrize("mode", ["never", "interval:60000", "always"])
async def test_the_broker_syncs_a_roll_before_the_reply_that_follows_it(
    tmp_path: os.PathLike[str], mode: str
) -> None:
    directory, disk, peer = str(tmp_path), EventDisk(), Peer()
    async with broker_on(directory, disk, mode) as broker:
        state = broker.state
        broker.ledger.commit(core.touch(state, "w", INFO, broker.clock_ms(), hello=True))
        for rid in range(1, 4):  # each push takes a number; the third one rolls first
            before = len(disk.events)
            job = M.JobSpec(type="t", queue="q")
            broker.handle(peer, request(M.Push(rid=rid, job=job)))  # type: ignore[arg-type]
            await _until(lambda rid=rid: len(peer.sent) == rid)
            if rid < 3 and mode != "always":
                assert "sync" not in disk.events[before:], "an fsync before the roll"
        assert state.epoch == 2 and broker.journal.epoch == 2
        rolled = disk.events[before:]
        assert "sync" in rolled, f"the reply after the roll left before an fsync: {rolled}"
        broker.handle(peer, request(M.Fetch(rid=9, queues=["q"], count=3)))  # type: ignore[arg-type]
        await _until(lambda: len(peer.sent) == 4)
        jobs = peer.sent[-1]
        assert isinstance(jobs, M.Jobs) and len(jobs.jobs) == 3
        assert {job.token >> 32 for job in jobs.jobs} == {2}
        if mode != "always":
            assert disk.events.count("sync") == 1, "not back to the policy's pace after the roll"
    recovered = recover(directory, OsDisk(), CoreConfig())
    assert recovered.state.epoch == 2
    assert canonical(recovered.state) == canonical(state)
