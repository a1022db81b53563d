"""The prefetch rule (client/_prefetch.py) with a clock the test moves: a
job leased ahead of a free slot is given back once it has waited half its
lease's ttl (1 s at most), never later, and the oldest runs first."""

import random

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from leash.client._prefetch import PREFETCH_WAIT_MAX_S, Prefetched, hold_s
from leash.client._types import Job
from leash.protocol.messages import Delivery


def job(number: int, lease_ttl_ms: int) -> Job:
    return Job(
        Delivery(
            id=f"j{number}",
            queue="q",
            type="t",
            args=msgspec.Raw(b"\x90"),
            token=number + 1,
            deadline_ms=0,
            attempt=1,
            max_attempts=25,
            lease_ttl_ms=lease_ttl_ms,
            priority=5,
            created_ms=0,
        )
    )


@given(st.integers(min_value=1_000, max_value=86_400_000))
def test_a_job_waits_at_most_half_its_lease_and_at_most_the_cap(lease_ttl_ms: int) -> None:
    held = hold_s(job(0, lease_ttl_ms))
    assert held <= lease_ttl_ms / 2 / 1000
    assert held == min(lease_ttl_ms / 2000, PREFETCH_WAIT_MAX_S)


def test_random_arrivals_and_takes_never_hold_a_job_past_its_release() -> None:
    seed = random.randrange(2**32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    waiting = Prefetched()
    now_s, number = 0.0, 0
    held: dict[str, tuple[float, float]] = {}  # id -> (leased, ttl s)
    for _ in range(2_000):
        now_s += rng.choice([0.0, 0.001, 0.05, 0.2, 0.6])
        for released in waiting.due(now_s):
            leased_s, ttl_s = held.pop(released.id)
            assert now_s >= leased_s + min(ttl_s / 2, PREFETCH_WAIT_MAX_S), f"seed={seed}: early"
        for leased_s, ttl_s in held.values():  # what is still here is within its time
            assert now_s < leased_s + min(ttl_s / 2, PREFETCH_WAIT_MAX_S), f"seed={seed}: late"
        due = waiting.next_due_s()
        assert due is None or due > now_s
        action = rng.random()
        if action < 0.5:
            ttl_ms = rng.choice([1_000, 1_500, 30_000])
            waiting.add(job(number, ttl_ms), now_s)
            held[f"j{number}"] = (now_s, ttl_ms / 1000)
            number += 1
        elif action < 0.8:
            taken = waiting.take()
            if taken is not None:
                oldest = min(held.values(), key=lambda v: v[0])[0]
                assert taken.leased_s == oldest, f"seed={seed}: not the oldest"
                held.pop(taken.job.id)
        assert len(waiting) == len(held)
    assert sorted(j.id for j in waiting.clear()) == sorted(held)
