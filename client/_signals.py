"""SIGINT and SIGTERM for ``Worker.run``: handled on the loop, and only from the main thread.

Python delivers signals to the main thread only, so a worker run elsewhere
leaves them alone (and says so). Handlers go on the running loop, so they may
touch the worker's asyncio state directly. ``remove`` puts back the handlers
that were there before ``install`` (the loop's own removal would leave the
default, which kills the process on a late second signal), with the signals
blocked while it swaps them, so a signal that comes meanwhile goes to the
handler put back, never to the default.
"""

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("leash.worker")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

Previous = dict[signal.Signals, Any]  # what signal.getsignal returned before install


def install(on_signal: Callable[[int], None]) -> Previous:
    """Call ``on_signal(signum)`` on the running loop for each stop signal;
    return the handlers there were, for ``remove``."""
    if threading.current_thread() is not threading.main_thread():
        log.warning("not in the main thread: SIGINT and SIGTERM are left alone")
        return {}
    loop = asyncio.get_running_loop()
    previous: Previous = {}
    for signum in STOP_SIGNALS:
        before = signal.getsignal(signum)
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, on_signal, signum)
            previous[signum] = before
    return previous


def remove(previous: Previous) -> None:
    """Undo ``install``: the handlers there were before it are back."""
    if not previous or threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, previous)
    try:
        for signum, before in previous.items():
            loop.remove_signal_handler(signum)
            signal.signal(signum, before if before is not None else signal.SIG_DFL)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
