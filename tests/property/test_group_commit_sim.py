"""A seeded simulation of the group committer (broker/journal/group_commit.py)
in virtual time (tests/commit_rig.py): random interleavings of submits
(leases or not), replies of both kinds, holds, loop turns ending, the
writer's jobs finishing, timers firing, and a disk that turns slow, fast,
or fails an fsync or a write. After every step the durability rules are
checked; at the end, with a healed disk, every reply must have been
answered exactly once. A failure names its seed: rerun it with
``LEASH_SIM_SEED=<seed>``."""

import os
import random
from dataclasses import dataclass, field

import pytest

from leash.broker.journal import group_commit
from leash.broker.journal.group_commit import WRITER_BUSY, Done, Phase
from tests.commit_rig import Rig, rig
from tests.journal_kit import paused

SEEDS_PER_POLICY = int(os.environ.get("LEASH_SIM_SEEDS", "700"))
STEPS_PER_SEED = 60
SEGMENT_BYTES = 2048  # small: rotations happen in most runs
SLOW_S = 2 * group_commit.INLINE_FSYNC_MAX_S
SETTLE_STEPS_MAX = 10_000


@dataclass
class Sim:
    r: Rig
    rng: random.Random
    always: bool
    wrong: list[str] = field(default_factory=list)
    answered: dict[int, bool] = field(default_factory=dict)
    replies: int = 0
    records: int = 0
    seen: set[Phase] = field(default_factory=set)  # the phases the run went through

    def reply(self, *, written: bool) -> None:
        """A reply after everything submitted so far, with what it needs."""
        committer, disk = self.r.committer, self.r.disk
        number, needed = self.replies, self.r.journal.next_seq - 1
        synced = committer.holding or (self.always and not written)
        self.replies += 1

        def done(ok: bool) -> None:
            if number in self.answered:
                self.wrong.append(f"reply {number} answered twice")
            self.answered[number] = ok
            if not ok:
                return
            if committer.failed is not None:
                self.wrong.append(f"reply {number} acknowledged after the journal failed")
            seen = disk.synced_seq if synced else disk.written_seq
            if seen < needed:
                kind = "fsynced" if synced else "written"
                self.wrong.append(f"reply {number} released with seq {needed} not {kind} ({seen})")

        callback: Done = done
        if written:
            committer.after_written(callback)
        else:
            committer.after(callback)

    def submit(self) -> None:
        count = self.rng.randrange(1, 4)
        chars = self.rng.choice([0, 0, 200])
        records = paused(count, start=self.records, name_chars=chars)
        self.records += count
        lease = self.rng.random() < 0.4
        self.r.committer.submit_records(records, sync=not lease)
        if self.rng.random() < 0.9:
            self.reply(written=lease)

    def step(self) -> None:
        rng, r = self.rng, self.r
        roll = rng.random()
        if roll < 0.35:
            self.submit()
        elif roll < 0.40:
            self.reply(written=rng.random() < 0.5)
        elif roll < 0.42:
            r.committer.hold_until_synced()
        elif roll < 0.62:
            r.clock.step()  # one callback: a loop turn's end, or a job's answer
        elif roll < 0.77:
            r.writer.complete()
        elif roll < 0.87:
            r.clock.advance(rng.choice([0.001, 0.005, 0.02]))
        elif roll < 0.95:
            r.disk.sync_s = rng.choice([0.0, 0.0, SLOW_S])
        elif roll < 0.975:
            r.disk.fail_syncs = rng.random() < 0.3
        else:
            r.disk.fail_writes = rng.random() < 0.1

    def check(self) -> None:
        """The rules that hold after every step."""
        committer, disk, writer = self.r.committer, self.r.disk, self.r.writer
        phase = committer.phase
        self.seen.add(phase)
        if writer.in_flight > 1:
            self.wrong.append(f"{writer.in_flight} jobs given to the writer at once")
        if (committer.failed is not None) != (phase is Phase.FAILED):
            self.wrong.append(f"phase {phase.value} with failed={committer.failed!r}")
        if phase in WRITER_BUSY and writer.in_flight != 1:
            self.wrong.append(f"phase {phase.value} with no job on the writer")
        if phase in (Phase.IDLE, Phase.WRITTEN) and writer.in_flight:
            self.wrong.append(f"phase {phase.value} while the writer runs a job")
        if phase is Phase.IDLE and disk.synced_seq < disk.written_seq and not self.r.failures:
            self.wrong.append(f"idle with seq {disk.written_seq} written, {disk.synced_seq} synced")
        if disk.synced_seq > disk.written_seq or disk.written_seq >= self.r.journal.next_seq:
            self.wrong.append("the disk's figures are impossible")

    def settle(self) -> None:
        """Heal the disk and let everything finish: every reply is answered."""
        r = self.r
        r.disk.sync_s, r.disk.fail_syncs, r.disk.fail_writes = 0.0, False, False
        for _ in range(SETTLE_STEPS_MAX):
            if r.clock.run_ready() or r.writer.complete():
                continue
            if len(self.answered) == self.replies:
                break
            r.clock.advance(0.01)
        if len(self.answered) != self.replies:
            missing = sorted(set(range(self.replies)) - set(self.answered))
            self.wrong.append(f"replies never answered: {missing[:10]}")
        if r.committer.failed is None and not all(self.answered.values()):
            self.wrong.append("a reply failed while the journal did not")


def run_seed(mode: str, seed: int, seen: set[Phase]) -> list[str]:
    rng = random.Random(seed)
    sim = Sim(rig(mode, SEGMENT_BYTES), rng, mode == "always", seen=seen)
    for step in range(STEPS_PER_SEED):
        try:
            sim.step()
        except AssertionError as error:  # an illegal phase move
            return [f"step {step}: {error}"]
        sim.check()
        if sim.wrong:
            return [f"step {step}: {wrong}" for wrong in sim.wrong]
    sim.settle()
    sim.check()
    return sim.wrong


# The phases a policy's runs must go through between them (SYNCING_LOOP
# lasts one call, inside a step): a simulation that stopped reaching them
# would pass without testing them.
MUST_SEE = {
    "always": set(Phase) - {Phase.SYNCING_LOOP},
    "interval:5": set(Phase) - {Phase.SYNCING_LOOP},
    "never": {Phase.IDLE, Phase.WRITTEN, Phase.ROTATING, Phase.FAILED},
}


@pytest.mark.parametrize("mode", ["always", "interval:5", "never"])
def test_no_reply_leaves_before_what_it_waits_for_in_thousands_of_seeded_runs(mode: str) -> None:
    fixed = os.environ.get("LEASH_SIM_SEED")
    base = random.randrange(2**32)
    seeds = [int(fixed)] if fixed else [base + n for n in range(SEEDS_PER_POLICY)]
    print(f"seeds {seeds[0]}..{seeds[-1]} (rerun one: LEASH_SIM_SEED=<seed>)")
    seen: set[Phase] = set()
    for seed in seeds:
        wrong = run_seed(mode, seed, seen)
        assert not wrong, f"seed={seed} ({mode}): {wrong[:5]}"
    if not fixed:
        assert MUST_SEE[mode] <= seen, f"never reached: {MUST_SEE[mode] - seen}"
