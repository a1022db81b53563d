"""The clock and the timers of the shell, behind one small protocol.

The parts of the shell that read a clock or arm a timer take a
``Scheduler`` instead of the event loop: the broker gives them
``LoopScheduler`` (the asyncio loop's own clock and callbacks); tests give
them a virtual clock whose time moves only when the test says, so a timer
fires exactly when the test expects it and a test never sleeps.

``WriterThread`` is the other half of running off the loop: one long-lived
thread that runs a job (a call that may block on the disk for long) and
hands its result back through the scheduler (``call_soon_threadsafe``), so
the thread never touches a field of the loop's objects. Tests give the
committer a writer whose jobs finish when the test says instead.
"""

import asyncio
import threading
import time
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, Protocol

# A job's answer, on the loop: its result (None after an error) and the error.
Then = Callable[[Any, BaseException | None], None]


class Timer(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic clock (only differences mean anything)."""
        ...

    def call_soon(self, callback: Callable[..., object], *args: Any) -> object: ...

    def call_later(self, delay_s: float, callback: Callable[..., object], *args: Any) -> Timer: ...

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> object:
        """The one call another thread may make: run ``callback`` on the loop."""
        ...


class LoopScheduler:
    """The asyncio loop as a Scheduler: its callbacks, and a clock any
    thread may read at full resolution (uvloop's ``loop.time`` counts whole
    milliseconds and updates the loop's own field: no use for timing an
    fsync from the writer thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.now = time.perf_counter
        self.call_soon = loop.call_soon
        self.call_later = loop.call_later
        self.call_soon_threadsafe = loop.call_soon_threadsafe


class Writer(Protocol):
    """Runs jobs off the loop, one at a time, in the order given."""

    def run(self, work: Callable[[], Any], then: Then) -> None: ...

    def stop(self, *, wait: bool) -> None: ...


class WriterThread:
    """One daemon thread; each job's answer goes back through the scheduler."""

    def __init__(self, scheduler: Scheduler, name: str = "leash-journal") -> None:
        self._scheduler = scheduler
        self._jobs: SimpleQueue[tuple[Callable[[], Any], Then] | None] = SimpleQueue()
        self._thread = threading.Thread(target=self._run_jobs, name=name, daemon=True)
        self._thread.start()

    def run(self, work: Callable[[], Any], then: Then) -> None:
        self._jobs.put((work, then))

    def stop(self, *, wait: bool) -> None:
        """No more jobs; ``wait``: until the one running ended (after a disk
        failure it may hang in the kernel: do not wait then)."""
        self._jobs.put(None)
        if wait:
            self._thread.join()

    def _run_jobs(self) -> None:
        while (job := self._jobs.get()) is not None:
            work, then = job
            result, error = None, None
            try:
                result = work()
            except Exception as failure:  # a JournalFailure; anything else is a bug, as fatal
                error = failure
            try:
                self._scheduler.call_soon_threadsafe(then, result, error)
            except RuntimeError:  # the loop is closed: nobody waits any more
                return
