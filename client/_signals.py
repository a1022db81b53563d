"""SIGINT and SIGTERM for ``Worker.run``: handled on the loop, and only from the main thread.

Python delivers signals to the main thread only, so a worker run elsewhere
leaves them alone (and says so). Handlers go on the running loop, so they may
touch the worker's asyncio state directly. When the run ends, the handlers
that were there before come back (the loop alone would put the defaults
back, and a second SIGTERM arriving then would kill the process).
"""

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

Previous = dict[int, Any]  # a signal's handler before ``install``

log = logging.getLogger("leash.worker")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def install(on_signal: Callable[[int], None]) -> Previous:
    """Call ``on_signal(signum)`` on the running loop for each stop signal;
    the handlers it replaced, for ``remove``."""
    previous: Previous = {}
    if threading.current_thread() is not threading.main_thread():
        log.warning("not in the main thread: SIGINT and SIGTERM are left alone")
        return previous
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        handler = signal.getsignal(signum)
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, on_signal, signum)
            previous[signum] = handler
    return previous


def remove(previous: Previous) -> None:
    """Undo ``install``: the handlers it replaced are back."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for signum, handler in previous.items():
        loop.remove_signal_handler(signum)
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def stop_outside_the_run(stop: Callable[[bool], None]) -> None:
    """Before ``Worker.run`` handles the stop signals and after it has
    finished, have them call ``stop(now)`` too (``now`` from the second on)
    instead of killing the process: ``leash worker`` keeps this for its
    whole life, so a signal during start-up or exit is never fatal."""
    seen: list[int] = []

    def handle(signum: int, _frame: object) -> None:
        stop(bool(seen))
        seen.append(signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, handle)


def ignore() -> None:
    """Ignore the stop signals from now on: the process is on its way out.
    (Python's exit puts the default action back for any handler of its own,
    and the default action of SIGTERM would end it by the signal.)"""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
