"""When a failed attempt runs again: exponential backoff with a jitter that
is derived from the job id and attempt (no random source), so replaying a
record or recomputing a delay gives the same answer."""

import zlib

SECOND_MS = 1000


def retry_delay_ms(job_id: str, attempt: int, retry_base_ms: int | None, cap_ms: int) -> int:
    """Delay after the ``attempt``-th failure (1 on the first failure).

    Without a base: attempt⁴ + 15 s plus up to 10·(attempt+1) s of jitter,
    as Sidekiq and Faktory do. With a base: base·2^(attempt-1) plus up to
    10 % of jitter. Capped at ``cap_ms``, and at least 1 ms: a failure its
    handler reported always waits (a lost lease is ready at once, and a
    record tells the two apart by that: records.Failure)."""
    spread = zlib.crc32(f"{job_id}:{attempt}".encode())
    if retry_base_ms is None:
        delay_ms = (attempt**4 + 15) * SECOND_MS
        jitter_ms = spread % (10 * (attempt + 1) * SECOND_MS)
    else:
        delay_ms = retry_base_ms << min(attempt - 1, 62)
        jitter_ms = spread % (delay_ms // 10 + 1)
    return max(min(delay_ms + jitter_ms, cap_ms), 1)
