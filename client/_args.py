"""Checked numbers for the ``leash`` command's flags: a value out of range is
refused with the range (``--port: must be between 1 and 65535, not 99999``),
never clamped."""

import argparse
from collections.abc import Callable
from typing import TypeVar

from leash.protocol import limits as L

N = TypeVar("N", int, float)


def whole(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
        return _within(value, low, high)

    return parse


def seconds(low: float, high: float) -> Callable[[str], float]:
    """An argparse type: a number of seconds from ``low`` to ``high``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
        if value != value:  # NaN compares false with everything
            raise argparse.ArgumentTypeError("expected a number, not NaN")
        return _within(value, low, high)

    return parse


def _within(value: N, low: N, high: N) -> N:
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, not {value:g}")
    return value


_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


def rate(text: str) -> tuple[int, int]:
    """An argparse type: a rate limit, "N/INTERVAL" (10/1s, 600/1m, 5/500ms):
    (N, the interval in ms)."""
    count, _, interval = text.partition("/")
    number = interval.rstrip("mhs")
    unit = interval[len(number) :]
    if not (count.isdigit() and number.isdigit() and unit in _UNITS_MS):
        message = f"expected N/INTERVAL such as 10/1s, 600/1m or 5/500ms, not {text!r}"
        raise argparse.ArgumentTypeError(message)
    interval_ms = int(number) * _UNITS_MS[unit]
    _within(int(count), 1, L.RATE_LIMIT_MAX)
    _within(interval_ms, 1, L.RATE_INTERVAL_MAX_MS)
    return int(count), interval_ms
