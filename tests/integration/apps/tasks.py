"""Handlers for the `leash worker` integration test."""

import time

from leash.client import handler


@handler("double")
def double(n: int) -> int:
    return n * 2


@handler("explode")
def explode() -> None:
    raise RuntimeError("exploded on purpose")


@handler("slow")
def slow(seconds: float) -> None:
    time.sleep(seconds)
