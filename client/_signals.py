"""SIGINT and SIGTERM for ``Worker.run``: handled on the loop, and only from the main thread.

Python delivers signals to the main thread only, so a worker run elsewhere
leaves them alone (and says so). Handlers go on the running loop, so they may
touch the worker's asyncio state directly.
"""

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable

log = logging.getLogger("leash.worker")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def install(on_signal: Callable[[int], None]) -> None:
    """Call ``on_signal(signum)`` on the running loop for each stop signal."""
    if threading.current_thread() is not threading.main_thread():
        log.warning("not in the main thread: SIGINT and SIGTERM are left alone")
        return
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, on_signal, signum)


def remove() -> None:
    """Undo ``install``."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        with contextlib.suppress(NotImplementedError):
            loop.remove_signal_handler(signum)
