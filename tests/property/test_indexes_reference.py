"""The core's index functions (indexes.py) against their obvious twins
(indexes_reference.py): random sequences of the same calls, made to both,
and after every call everything each holds compared.

A ``World`` is one side: the index module, what it changes (a State, or a
Reference) and how a job is had to change it (the jobs table's ``thaw``, or
the reference's own dict). A step picks an operation the jobs' states
allow (a push, a bulk push as replay builds, a lease from anywhere in a
bucket, an ack, a release to the front, a retry, an extension, a
promotion, a kill, a requeue, a delete) and makes the same calls of the
index API on both sides; the State's overdue jobs are packed after each step as
apply does, so jobs are packed and thawed along the way. Compared after
each step: the jobs' states and index keys, the counts (global and by
queue), the queues, every ready bucket in fetch order, each owner's leases
in order, the live entries of the deadlines and run-at heaps and the dead
set, and the queues readied. Each random walk prints its seed on failure.
"""

import random
from collections.abc import Callable
from types import ModuleType
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leash.broker.core import indexes, indexes_reference
from leash.broker.core import records as R
from leash.broker.core.config import CoreConfig
from leash.broker.core.indexes_reference import Reference
from leash.broker.core.jobs import Job
from leash.broker.core.state import (
    DEAD,
    LEASED,
    READY,
    RETRYING,
    SCHEDULED,
    State,
    live_dead_entries,
    live_deadline,
    live_scheduled,
    purge_dead,
    purge_deadlines,
    purge_scheduled,
)

QUEUES = ("a", "b", "c")
OWNERS = ("w1", "w2", "w3")
STEPS = 120
ARGS = msgspec.Raw(msgspec.msgpack.encode([1]))


class World:
    """One side of the comparison: an index module and what it changes."""

    def __init__(self, module: ModuleType, target: Any, job: Callable[[str], Job]) -> None:
        self.m, self.target, self.job = module, target, job


def hot_world() -> tuple[World, State]:
    state = State(CoreConfig(recent_jobs=4))  # a small window: jobs are packed and thawed
    return World(indexes, state, state.jobs.thaw), state


def reference_world() -> tuple[World, Reference]:
    ref = Reference()
    return World(indexes_reference, ref, ref.jobs.__getitem__), ref


# --- what each side holds, in one form -------------------------------------------


def held_by_state(state: State) -> dict[str, Any]:
    purge_deadlines(state)
    purge_scheduled(state)
    purge_dead(state)
    fronts_live = (not state.deadlines or live_deadline(state, state.deadlines[0])) and (
        not state.scheduled or live_scheduled(state, state.scheduled[0])
    )
    return {
        "jobs": {job_id: _keys(job) for job_id, job in sorted(state.jobs.items())},
        "counts": dict(state.counts),
        "queue counts": {name: dict(q.counts) for name, q in state.queues.items()},
        "ready": {
            (name, priority): list(bucket)
            for name, q in state.queues.items()
            for priority, bucket in q.buckets.items()
            if bucket
        },
        "ready counts": {name: q.ready for name, q in state.queues.items()},
        "leases": {owner: list(ids) for owner, ids in state.leases_by_owner.items()},
        "deadlines": {e for e in state.deadlines if live_deadline(state, e)},
        "scheduled": {e for e in state.scheduled if live_scheduled(state, e)},
        "dead": live_dead_entries(state),
        "fronts live": fronts_live,
        "readied": state.take_readied(),
    }


def held_by_reference(ref: Reference) -> dict[str, Any]:
    readied, ref.readied = ref.readied, set()
    return {
        "jobs": {job_id: _keys(job) for job_id, job in sorted(ref.jobs.items())},
        "counts": ref.counts(),
        "queue counts": ref.queue_counts(),
        "ready": {key: list(ids) for key, ids in ref.ready.items() if ids},
        "ready counts": {
            name: sum(len(ids) for (q, _), ids in ref.ready.items() if q == name)
            for name in ref.queue_counts()
        },
        "leases": {owner: list(ids) for owner, ids in ref.leases.items()},
        "deadlines": ref.deadlines(),
        "scheduled": ref.scheduled(),
        "dead": ref.dead(),
        "fronts live": True,
        "readied": readied,
    }


def _keys(job: Job) -> tuple[Any, ...]:
    return (
        job.queue,
        job.priority,
        job.state,
        job.ready_ms,
        job.run_at_ms,
        job.owner,
        job.token,
        job.deadline_ms,
        job.leased_ms,
        job.died_ms,
    )


# --- the operations: the same calls on either side --------------------------------


class Walk:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.now_ms = 1_000
        self.pushed = 0
        self.token = 0

    def new_job(self, ready: bool) -> R.NewJob:
        self.pushed += 1
        run_at_ms = None if ready else self.now_ms + self.rng.randrange(1, 500)
        return R.NewJob(
            f"j{self.pushed}",
            self.rng.choice(QUEUES),
            "t",
            ARGS,
            self.rng.randrange(0, 3),
            3,
            30_000,
            None,
            self.now_ms,
            run_at_ms,
        )

    def step(self, ref: Reference) -> Callable[[World], None]:
        """The next operation, chosen from what the jobs allow (read from
        the reference), as a function of a side."""
        rng, by_state = self.rng, _by_state(ref)
        self.now_ms += rng.randrange(0, 20)
        at_ms = self.now_ms
        choices: list[Callable[[], Callable[[World], None]]] = [self.push, self.bulk_push]
        if by_state[READY]:
            choices += [self.lease, self.lease_by_steps]
        if by_state[LEASED]:
            choices += [self.ack, self.release, self.retry, self.extend]
        if by_state[SCHEDULED] or by_state[RETRYING]:
            choices.append(self.promote)
        if ref.jobs:
            choices += [self.kill, self.delete]
        if by_state[DEAD]:
            choices.append(self.requeue)
        self.by_state, self.at_ms = by_state, at_ms
        return rng.choice(choices)()

    def push(self) -> Callable[[World], None]:
        news = [self.new_job(self.rng.random() < 0.7) for _ in range(self.rng.randrange(1, 4))]
        return lambda w: w.m.jobs_add(w.target, news)

    def bulk_push(self) -> Callable[[World], None]:
        news = [self.new_job(True) for _ in range(self.rng.randrange(1, 6))]
        return lambda w: w.m.ready_jobs_add(w.target, news)

    def _grants(self) -> tuple[str, list[tuple[str, int, int]]]:
        owner = self.rng.choice(OWNERS)
        ready = self.by_state[READY]
        ids = self.rng.sample(ready, min(len(ready), self.rng.randrange(1, 3)))
        grants = []
        for job_id in ids:  # from anywhere in their buckets, not only the front
            self.token += 1
            grants.append((job_id, self.token, self.at_ms + self.rng.randrange(100, 1_000)))
        return owner, grants

    def lease(self) -> Callable[[World], None]:
        owner, grants, at_ms = *self._grants(), self.at_ms
        records = [R.Grant(job_id, token, deadline_ms) for job_id, token, deadline_ms in grants]
        return lambda w: w.m.lease_grants(w.target, owner, records, at_ms)

    def lease_by_steps(self) -> Callable[[World], None]:
        owner, grants, at_ms = *self._grants(), self.at_ms

        def run(w: World) -> None:
            owned = w.m.leases_of(w.target, owner)
            for job_id, token, deadline_ms in grants:
                job = w.job(job_id)
                w.m.ready_remove(w.target, job)
                w.m.job_move(w.target, job, LEASED)
                w.m.lease_add(w.target, owned, owner, job, token, deadline_ms, at_ms)

        return run

    def ack(self) -> Callable[[World], None]:
        job_id = self.rng.choice(self.by_state[LEASED])
        return lambda w: w.m.ack_gone(w.target, job_id, w.job(job_id).token)

    def release(self) -> Callable[[World], None]:
        job_id, at_ms = self.rng.choice(self.by_state[LEASED]), self.at_ms

        def run(w: World) -> None:
            job = w.job(job_id)
            w.m.lease_remove(w.target, job)
            w.m.job_move(w.target, job, READY)
            w.m.ready_add(w.target, job, at_ms, front=True)

        return run

    def retry(self) -> Callable[[World], None]:
        job_id = self.rng.choice(self.by_state[LEASED])
        run_at_ms = self.at_ms + self.rng.randrange(1, 500)

        def run(w: World) -> None:
            job = w.job(job_id)
            w.m.lease_remove(w.target, job)
            w.m.job_move(w.target, job, RETRYING)
            w.m.scheduled_add(w.target, job, run_at_ms)

        return run

    def extend(self) -> Callable[[World], None]:
        job_id = self.rng.choice(self.by_state[LEASED])
        deadline_ms = self.at_ms + self.rng.randrange(100, 1_000)
        return lambda w: w.m.deadline_move(w.target, w.job(job_id), deadline_ms)

    def promote(self) -> Callable[[World], None]:
        job_id = self.rng.choice(self.by_state[SCHEDULED] + self.by_state[RETRYING])
        at_ms = self.at_ms

        def run(w: World) -> None:
            job = w.job(job_id)
            due_ms = job.run_at_ms
            w.m.scheduled_remove(w.target, job)
            w.m.job_move(w.target, job, READY)
            w.m.ready_add(w.target, job, max(due_ms, at_ms))

        return run

    def _leave(self, w: World, job: Job) -> None:
        """Out of the index of its state (the lazy ones need nothing)."""
        if job.state == READY:
            w.m.ready_remove(w.target, job)
        elif job.state == LEASED:
            w.m.lease_remove(w.target, job)
        w.m.scheduled_remove(w.target, job)

    def kill(self) -> Callable[[World], None]:
        alive = [j for s in (READY, SCHEDULED, RETRYING, LEASED) for j in self.by_state[s]]
        if not alive:
            return self.push()
        job_id, at_ms = self.rng.choice(alive), self.at_ms

        def run(w: World) -> None:
            job = w.job(job_id)
            self._leave(w, job)
            w.m.job_move(w.target, job, DEAD)
            w.m.dead_add(w.target, job, at_ms)

        return run

    def requeue(self) -> Callable[[World], None]:
        job_id, at_ms = self.rng.choice(self.by_state[DEAD]), self.at_ms

        def run(w: World) -> None:
            job = w.job(job_id)
            w.m.job_move(w.target, job, READY)
            w.m.ready_add(w.target, job, at_ms)

        return run

    def delete(self) -> Callable[[World], None]:
        job_id = self.rng.choice([j for ids in self.by_state.values() for j in ids])

        def run(w: World) -> None:
            job = w.job(job_id)
            self._leave(w, job)
            w.m.job_gone(w.target, job)

        return run


def _by_state(ref: Reference) -> dict[str, list[str]]:
    by_state: dict[str, list[str]] = {s: [] for s in (READY, SCHEDULED, LEASED, RETRYING, DEAD)}
    for job_id, job in sorted(ref.jobs.items()):
        by_state[job.state].append(job_id)
    return by_state


def run_walk(seed: int, steps: int = STEPS) -> None:
    rng = random.Random(seed)
    walk = Walk(rng)
    hot, state = hot_world()
    slow, ref = reference_world()
    for number in range(steps):
        operation = walk.step(ref)
        operation(hot)
        operation(slow)
        if state.jobs.overdue > 0:
            state.jobs.pack_overdue()
        assert state.jobs.problems() == [], (seed, number)
        held, expected = held_by_state(state), held_by_reference(ref)
        for part, value in expected.items():
            assert held[part] == value, f"seed {seed}, step {number}: {part} differ"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_the_hot_indexes_hold_what_the_reference_holds_after_every_step(seed: int) -> None:
    print(f"seed {seed}")
    run_walk(seed)


def test_a_long_walk_of_the_hot_indexes_matches_the_reference() -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    run_walk(seed, steps=800)
