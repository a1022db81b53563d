"""Handlers for tests/integration/test_recovery_defaults.py."""

import os
import signal
import time

from leash.client import handler


@handler("kill_my_worker")
def kill_my_worker() -> None:
    """A job that kills the process running it, every time (kill -9)."""
    os.kill(os.getpid(), signal.SIGKILL)


@handler("hold_until")
def hold_until(path: str, limit_s: float) -> None:
    """A long job: runs until the file at ``path`` exists, at most ``limit_s``."""
    deadline_s = time.monotonic() + limit_s
    while not os.path.exists(path) and time.monotonic() < deadline_s:
        time.sleep(0.05)
