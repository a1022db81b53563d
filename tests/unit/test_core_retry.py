"""retry_delay_ms: exponential backoff whose jitter comes from the job id and
attempt, so a replay or a recomputation gives the same delay."""

import pytest

from leash.broker.core.config import DAY_MS
from leash.broker.core.retry import SECOND_MS, retry_delay_ms

NO_CAP_MS = 2**62
IDS = ["a", "_1.2", "order-7", "x" * 128, "job:42"]


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 10, 25, 100])
def test_without_a_base_the_delay_is_attempt_to_the_fourth_plus_15_s_plus_jitter(
    attempt: int,
) -> None:
    floor_ms = (attempt**4 + 15) * SECOND_MS
    jitter_bound_ms = 10 * (attempt + 1) * SECOND_MS
    for job_id in IDS:
        delay_ms = retry_delay_ms(job_id, attempt, None, NO_CAP_MS)
        assert floor_ms <= delay_ms < floor_ms + jitter_bound_ms


@pytest.mark.parametrize("attempt", [1, 2, 3, 8, 20])
@pytest.mark.parametrize("base_ms", [1, 250, 2000, DAY_MS])
def test_with_a_base_the_delay_doubles_per_attempt_plus_up_to_10_percent(
    attempt: int, base_ms: int
) -> None:
    floor_ms = base_ms * 2 ** (attempt - 1)
    for job_id in IDS:
        delay_ms = retry_delay_ms(job_id, attempt, base_ms, NO_CAP_MS)
        assert floor_ms <= delay_ms <= floor_ms + floor_ms // 10


def test_the_delay_is_capped() -> None:
    assert retry_delay_ms("a", 1000, None, 180 * DAY_MS) == 180 * DAY_MS
    assert retry_delay_ms("a", 1000, DAY_MS, 180 * DAY_MS) == 180 * DAY_MS
    assert retry_delay_ms("a", 1, None, 5) == 5


def test_a_huge_attempt_with_a_base_does_not_overflow_the_cap() -> None:
    assert retry_delay_ms("a", 10**6, 1, 180 * DAY_MS) == 180 * DAY_MS


def test_the_delay_is_the_same_for_the_same_job_and_attempt() -> None:
    for job_id in IDS:
        for attempt in (1, 2, 7):
            first = retry_delay_ms(job_id, attempt, None, NO_CAP_MS)
            assert retry_delay_ms(job_id, attempt, None, NO_CAP_MS) == first
            assert retry_delay_ms(job_id, attempt, 300, NO_CAP_MS) == retry_delay_ms(
                job_id, attempt, 300, NO_CAP_MS
            )


def test_the_jitter_spreads_jobs_that_failed_together() -> None:
    delays = {retry_delay_ms(f"job-{n}", 1, None, NO_CAP_MS) for n in range(100)}
    assert len(delays) > 90
    assert max(delays) - min(delays) > 10 * SECOND_MS
