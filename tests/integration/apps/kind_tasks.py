"""Handlers run in child processes by the handler-kind tests: importable by module path."""

import os
import time
from pathlib import Path


def square(n: int) -> int:
    return n * n


def burn(seconds: float) -> int:
    """Hold a CPU for ``seconds`` (no sleeping: the GIL of this child stays busy)."""
    deadline = time.monotonic() + seconds
    spins = 0
    while time.monotonic() < deadline:
        spins += 1
    return spins


def wait_for_file(pid_file: str, stop_file: str) -> int:
    """Say which process runs this job, then spin until ``stop_file`` exists (at most 30 s)."""
    Path(pid_file).write_text(str(os.getpid()))
    deadline = time.monotonic() + 30
    while not os.path.exists(stop_file) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getpid()
