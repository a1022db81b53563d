"""Waiting for what a real process does (a broker, a worker on a thread or
in a subprocess): poll a condition until it holds or a bound passes. Only
for what no clock can be injected into: the shell's own timing is tested
on a virtual clock (tests/virtual_time.py)."""

import time
from collections.abc import Callable

POLL_S = 0.02
WAIT_S = 15.0  # wait_until's bound when a test gives none
WAIT_FOR_S = 30.0  # wait_for's


def wait_until(predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
    """Whether ``predicate`` became true within ``timeout_s`` (polled every
    ``POLL_S``, and checked once more at the bound)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(POLL_S)
    return predicate()


def wait_for(done: Callable[[], bool], what: str, timeout_s: float = WAIT_FOR_S) -> float:
    """Wait until ``done``: the seconds it took; AssertionError naming
    ``what`` if it did not happen within ``timeout_s``."""
    started_s = time.monotonic()
    assert wait_until(done, timeout_s), f"not within {timeout_s} s: {what}"
    return time.monotonic() - started_s
