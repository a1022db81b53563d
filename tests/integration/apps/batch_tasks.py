"""Handlers for the batch integration tests: each run appends a line to a file.

A line is written with one ``write`` on a file opened for appending, so
lines of processes killed at any moment never interleave.
"""

import os
import time

from leash.client import add_to_batch, current_job, handler


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


@handler("member")
def member(index: int, path: str, sleep_s: float) -> None:
    if sleep_s:
        _append(path, f"start {index}")
        time.sleep(sleep_s)
    _append(path, str(index))


@handler("fan_out")
def fan_out(count: int, path: str) -> None:
    """Adds ``count`` members to its own (committed) batch, then finishes."""
    for index in range(count):
        add_to_batch("member", {"index": index, "path": path, "sleep_s": 0.0}, queue="work")
    _append(path, "fan_out")


@handler("on_success")
def on_success(path: str) -> None:
    job = current_job()
    assert job is not None
    _append(path, f"success {job.id}")
