"""A seeded simulation of the whole broker shell (tests/shell_rig.py): the
real Broker and its parts, the real core, the group committer on a disk
that turns slow or fails, and connections without sockets of producers and
workers that push, fetch (held or not), cancel their last fetch, ack,
fail, extend, beat, go away and come back, all on one virtual clock, with
loop turns, the writer's jobs and timers interleaved at random.

Checked as it runs: a push's or an ack's reply leaves only once its
records are durable under the policy (written; fsynced under ``always``);
no request is answered twice (a cancelled fetch neither); no push is
acknowledged twice with one id and no job is acked twice;
``core.check_invariants``; every acknowledged push is in the state (or was
acked). At the end: the journal written, replayed, gives the same state
(when it did not fail), and what survives a crash (a power loss under
``always``) holds every acknowledged push. A failure names its seed:
rerun one with ``LEASH_SHELL_SEED=<seed>``, or without pytest:
``python -m tests.property.test_shell_sim <policy> <seed>``.
"""

import os
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from leash.broker import core
from leash.broker.core import CoreConfig, canonical
from leash.broker.journal import group_commit, reading
from leash.broker.journal.recovery import recover
from leash.broker.server.limits import Limits
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from tests.commit_rig import DIRECTORY
from tests.shell_rig import Peer, Shell, shell

SEEDS_PER_POLICY = int(os.environ.get("LEASH_SHELL_SEEDS", "500"))
STEPS_PER_SEED = 80
SEGMENT_BYTES = 4096  # small: rotations happen in many runs
SLOW_S = 2 * group_commit.INLINE_FSYNC_MAX_S
CORE = CoreConfig(process_ttl_ms=1_500)
LIMITS = Limits(idle_timeout_ms=0)  # the workers beat when the dice say so
QUEUES = ("a", "b")
WORKERS = ("w0", "w1", "w2")
SETTLE_ROUNDS_MAX = 2_000
CHECK_EVERY_STEPS = 10  # core.check_invariants walks the whole state: not after every step


@dataclass
class Request:
    kind: str  # push, ack, other
    needed_seq: int  # the last record submitted when it was decided
    job_id: str = ""


@dataclass
class Sim:
    rig: Shell
    rng: random.Random
    always: bool
    wrong: list[str] = field(default_factory=list)
    sent: dict[tuple[int, int], Request] = field(default_factory=dict)  # (peer, rid)
    producers: list[Peer] = field(default_factory=list)
    workers: dict[str, Peer] = field(default_factory=dict)
    leases: dict[str, list[M.Delivery]] = field(default_factory=dict)  # by worker
    pushed: set[str] = field(default_factory=set)  # pushes acknowledged
    acked: set[str] = field(default_factory=set)  # acks acknowledged
    ack_sent: set[str] = field(default_factory=set)
    fetched: dict[str, int] = field(default_factory=dict)  # each worker's last fetch's rid

    # --- the clients --------------------------------------------------------

    def connect(self, worker_id: str) -> Peer:
        peer = Peer(self.rig, on_reply=self.on_reply)
        self.send(peer, M.Hello(rid=peer.rid(), version=1, worker_id=worker_id), "other")
        return peer

    def send(self, peer: Peer, message: Any, kind: str, job_id: str = "") -> None:
        peer.send(message)
        needed = self.rig.journal.next_seq - 1  # decided and applied in send
        self.sent[(id(peer), message.rid)] = Request(kind, needed, job_id)

    def on_reply(self, peer: Peer, reply: Any) -> None:
        """A reply as the broker writes it: durable enough for what it says?"""
        request = self.sent.pop((id(peer), reply.rid), None)
        if request is None:
            if reply.rid != 0:  # else an error about the connection
                self.wrong.append(f"a second reply to rid {reply.rid}: {reply}")
            return
        if isinstance(reply, M.Error):
            if reply.code == ErrorCode.JOURNAL_FAILED and self.rig.broker.committer.failed is None:
                self.wrong.append(f"journal_failed while the journal has not failed: {reply}")
            return
        if request.kind in ("push", "ack"):
            disk = self.rig.disk
            seen = disk.synced_seq if self.always else disk.written_seq
            if seen < request.needed_seq:
                what = "fsynced" if self.always else "written"
                self.wrong.append(
                    f"{request.kind} replied with seq {request.needed_seq} not {what} ({seen})"
                )
        if isinstance(reply, M.Pushed):
            if reply.id in self.pushed:
                self.wrong.append(f"push acknowledged twice with id {reply.id}")
            self.pushed.add(reply.id)
        elif isinstance(reply, M.Ok) and request.kind == "ack":
            if request.job_id in self.acked:
                self.wrong.append(f"job {request.job_id} acked twice")
            self.acked.add(request.job_id)
        elif isinstance(reply, M.Jobs):
            worker = next(w for w, p in self.workers.items() if p is peer)
            self.leases.setdefault(worker, []).extend(reply.jobs)

    # --- one step -------------------------------------------------------------

    def act(self) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.3:
            producer = rng.choice(self.producers)
            spec = M.JobSpec(
                type="t",
                queue=rng.choice(QUEUES),
                lease_ttl_ms=rng.choice([1_000, 2_000, 30_000]),
                max_attempts=rng.randint(1, 3),
            )
            self.send(producer, M.Push(rid=producer.rid(), job=spec), "push")
            return
        worker_id = rng.choice(WORKERS)
        peer = self.workers.get(worker_id)
        if peer is None or peer.closed:
            self.leases.pop(worker_id, None)
            self.fetched.pop(worker_id, None)
            self.workers[worker_id] = self.connect(worker_id)
            return
        held = self.leases.get(worker_id, [])
        if roll < 0.55 or not held:
            queues = rng.sample(QUEUES, rng.randint(1, 2))
            wait_ms = rng.choice([0, 0, 200, 2_000])
            fetch = M.Fetch(rid=peer.rid(), queues=queues, count=rng.randint(1, 3), wait_ms=wait_ms)
            self.fetched[worker_id] = fetch.rid
            self.send(peer, fetch, "other")
        elif roll < 0.75:
            job = held.pop(rng.randrange(len(held)))
            self.ack_sent.add(job.id)
            self.send(peer, M.Ack(rid=peer.rid(), id=job.id, token=job.token), "ack", job.id)
        elif roll < 0.83:
            job = held.pop(rng.randrange(len(held)))
            fail = M.Fail(rid=peer.rid(), id=job.id, token=job.token, dead=rng.random() < 0.3)
            self.send(peer, fail, "other")
        elif roll < 0.9:
            job = rng.choice(held)
            self.send(peer, M.Extend(rid=peer.rid(), id=job.id, token=job.token), "other")
        elif roll < 0.93 and worker_id in self.fetched:  # held, or answered already
            self.send(peer, M.Cancel(rid=peer.rid(), of=self.fetched[worker_id]), "other")
        elif roll < 0.96:
            self.send(peer, M.Beat(rid=peer.rid()), "other")
        else:
            peer.close()

    def step(self) -> None:
        rng, rig = self.rng, self.rig
        roll = rng.random()
        if roll < 0.45:
            self.act()
        elif roll < 0.65:
            rig.clock.step()  # one callback: a turn's end, a job's answer, a close
        elif roll < 0.8:
            rig.writer.complete()
        elif roll < 0.93:
            rig.clock.advance(rng.choice([0.001, 0.05, 0.5]))
        elif roll < 0.98:
            rig.disk.sync_s = rng.choice([0.0, 0.0, SLOW_S])
        elif rng.random() < 0.1:  # a journal failure in about one run in seven
            if rng.random() < 0.5:
                rig.disk.fail_syncs = True
            else:
                rig.disk.fail_writes = True

    def check(self, *, walk: bool) -> None:
        state = self.rig.state
        if walk:
            self.wrong += core.check_invariants(state)
        lost = [job for job in self.pushed - self.ack_sent if job not in state.jobs]
        if lost:
            self.wrong.append(f"acknowledged pushes not in the state: {lost[:3]}")
        if walk:
            self.wrong += self.rig.broker.longpoll.waiters.problems()

    def finish(self) -> None:
        """Let every turn and job finish, then replay what the journal holds."""
        rig = self.rig
        rig.disk.sync_s = 0.0
        for _ in range(SETTLE_ROUNDS_MAX):
            rig.settle()
            if rig.writer.in_flight == 0 and rig.clock.ready == 0:
                break
            rig.clock.advance(0.01)
        failed = rig.broker.committer.failed is not None
        crashed = rig.disk.after_power_loss() if self.always else rig.disk.after_process_crash()
        replayed = recover(DIRECTORY, crashed, CORE).state
        lost = [job for job in self.pushed - self.ack_sent if job not in replayed.jobs]
        if lost:
            self.wrong.append(f"acknowledged pushes the journal lost: {lost[:3]}")
        if not failed:
            whole = recover(DIRECTORY, rig.disk.after_process_crash(), CORE).state
            if canonical(whole) != canonical(rig.state):
                self.wrong.append("the journal replayed is not the state")


def run_seed(mode: str, seed: int) -> list[str]:
    """What went wrong in the run of ``seed`` ([] when nothing did)."""
    rng = random.Random(seed)
    rig = shell(mode, limits=LIMITS, core_config=CORE, segment_bytes=SEGMENT_BYTES)
    sim = Sim(rig, rng, mode == "always")
    where = "start"
    try:
        sim.producers = [sim.connect(f"p{n}") for n in range(2)]
        for step in range(STEPS_PER_SEED):
            where = f"step {step}"
            sim.step()
            sim.check(walk=step % CHECK_EVERY_STEPS == 0)
            if sim.wrong:
                return [f"{where}: {wrong}" for wrong in sim.wrong]
        where = "the end"
        sim.finish()
        sim.check(walk=True)
    except Exception as error:  # a broken assert in the shell, a journal that does not replay
        return [f"{where}: {type(error).__name__}: {error}"]
    return [f"{where}: {wrong}" for wrong in sim.wrong]


@pytest.mark.parametrize("mode", ["always", "interval:20", "never"])
def test_the_shell_keeps_its_promises_in_thousands_of_seeded_runs(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Recovery reads on a thread with a deep stack (for values nested to the
    # limit); these journals nest nothing, and a thread a seed is most of a run.
    monkeypatch.setattr(reading, "on_own_stack", lambda read: read())
    fixed = os.environ.get("LEASH_SHELL_SEED")
    base = random.randrange(2**32)
    seeds = [int(fixed)] if fixed else [base + n for n in range(SEEDS_PER_POLICY)]
    print(f"seeds {seeds[0]}..{seeds[-1]} (rerun one: LEASH_SHELL_SEED=<seed>)")
    for seed in seeds:
        wrong = run_seed(mode, seed)
        assert not wrong, f"seed={seed} ({mode}): {wrong[:5]}"


if __name__ == "__main__":  # python -m tests.property.test_shell_sim <policy> <seed>
    import sys

    reading.on_own_stack = lambda read: read()
    found = run_seed(sys.argv[1], int(sys.argv[2]))
    print("\n".join(found) or "ok")
    sys.exit(1 if found else 0)
