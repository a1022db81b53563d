"""The ready bucket on its own (core/ready.py): lazy deletion, the order a
fetch takes, rebuilding, and its own cross-checks. The core tests drive it
through apply; these reach the cases a broker's fetches rarely make."""

import random

import pytest

from leash.broker.core import ready
from leash.broker.core.ready import ReadyBucket


def bucket_of(*ids: str) -> ReadyBucket:
    bucket = ReadyBucket()
    for job_id in ids:
        bucket.append(job_id)
    return bucket


def test_a_job_leaving_the_front_is_popped_and_one_leaving_the_middle_is_counted_stale() -> None:
    bucket = bucket_of("a", "b", "c", "d")
    bucket.discard("a")
    bucket.discard("c")
    assert list(bucket) == ["b", "d"] and len(bucket) == 2
    assert list(bucket.ids) == ["b", "c", "d"] and bucket.stale == {"c": 1}
    assert bucket.problems({"b", "d"}) == []


def test_stale_entries_are_dropped_when_they_reach_the_front() -> None:
    bucket = bucket_of("a", "b", "c", "d")
    bucket.discard("b")
    bucket.discard("c")
    bucket.discard("a")
    assert bucket.first() == "d" and list(bucket.ids) == ["d"]
    assert bucket.stale == {} and bucket.stale_count == 0


def test_a_job_back_behind_its_stale_entry_is_live_only_there() -> None:
    bucket = bucket_of("a", "x", "b")
    bucket.discard("x")  # deleted from the middle
    bucket.append("x")  # pushed again with the same id
    assert list(bucket) == ["a", "b", "x"]
    assert bucket.problems({"a", "b", "x"}) == []
    bucket.discard("a")
    bucket.discard("b")
    assert bucket.first() == "x" and list(bucket) == ["x"]  # the stale x went at the front


def test_a_job_leased_from_the_middle_and_released_goes_to_the_front_once() -> None:
    bucket = bucket_of("a", "x", "b")
    bucket.discard("x")  # a lease that did not take the first job
    bucket.appendleft("x")  # its release
    assert list(bucket) == ["x", "a", "b"] and bucket.stale == {}
    assert bucket.problems({"a", "b", "x"}) == []


def test_an_empty_bucket_is_false_and_a_bucket_of_stale_entries_too() -> None:
    bucket = bucket_of("a", "b")
    assert bucket
    bucket.discard("b")
    assert bucket and len(bucket) == 1
    bucket.discard("a")
    assert not bucket and len(bucket) == 0


@pytest.mark.parametrize("revive", [False, True])
def test_stale_entries_never_outnumber_the_live_ones_for_long(revive: bool) -> None:
    bucket = bucket_of("front", *(f"j{n}" for n in range(4 * ready.COMPACT_MIN_STALE)))
    live = {"front"} | {f"j{n}" for n in range(4 * ready.COMPACT_MIN_STALE)}
    for n in range(0, 4 * ready.COMPACT_MIN_STALE, 4):
        for gone in (f"j{n}", f"j{n + 1}", f"j{n + 2}"):
            bucket.discard(gone)
            live.discard(gone)
        if revive:
            bucket.append(f"j{n}")
            live.add(f"j{n}")
        assert bucket.stale_count <= max(ready.COMPACT_MIN_STALE, len(bucket.ids) // 2)
        assert bucket.problems(live) == []
    assert bucket.first() == "front"
    assert set(bucket) == live and len(bucket) == len(live)


def test_the_checks_find_a_stale_front_a_lost_job_a_duplicate_and_a_wrong_count() -> None:
    stale_front = bucket_of("a", "b")
    stale_front.stale["a"], stale_front.stale_count = 1, 1
    assert any("front" in problem for problem in stale_front.problems({"b"}))
    assert any("not in its bucket" in p for p in bucket_of("a").problems({"a", "z"}))
    assert any("duplicated" in p for p in bucket_of("a", "a").problems({"a"}))
    miscounted = bucket_of("a", "b")
    miscounted.stale_count = 1
    assert any("sum" in p for p in miscounted.problems({"a", "b"}))


def test_random_moves_keep_the_bucket_equal_to_a_plain_list() -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    bucket, model = ReadyBucket(), []
    for step in range(3000):
        move = rng.random()
        if model and move < 0.35:
            job_id = model[0] if rng.random() < 0.5 else rng.choice(model)
            bucket.discard(job_id)
            model.remove(job_id)
        elif move < 0.45:
            job_id = f"r{rng.randrange(60)}"  # ids come back after they leave
            if job_id not in model:
                bucket.appendleft(job_id)
                model.insert(0, job_id)
        else:
            job_id = f"r{rng.randrange(60)}"
            if job_id not in model:
                bucket.append(job_id)
                model.append(job_id)
        assert list(bucket) == model, (seed, step)
        assert bucket.problems(set(model)) == [], (seed, step)
        assert not model or bucket.first() == model[0], (seed, step)
