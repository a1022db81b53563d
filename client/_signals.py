"""SIGINT and SIGTERM for ``Worker.run``: handled on the loop, and only from the main thread.

Python delivers signals to the main thread only, so a worker run elsewhere
leaves them alone (and says so). ``install`` puts a Python-level handler in
place that hands the signal to the running loop (``call_soon_threadsafe``),
so the worker's asyncio state is touched on the loop only. ``remove`` puts
back the handlers that were there before, each in one swap: the signal's
disposition is never the default for an instant. The loop's own
``add_signal_handler`` is not used: taking it off again sets the default
first, and a signal that came then (the kernel hands it to any thread of
the process that does not block it) killed the process, as a late second
SIGTERM at the end of a graceful stop did now and then.
"""

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
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

    def handler(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: the stop is under way
            loop.call_soon_threadsafe(on_signal, signum)

    return {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}


def remove(previous: Previous) -> None:
    """Undo ``install``: the handlers there were before it are back."""
    if not previous or threading.current_thread() is not threading.main_thread():
        return
    for signum, before in previous.items():
        signal.signal(signum, before if before is not None else signal.SIG_DFL)
