"""Handlers that run in child processes (``pool="processes"``): CPU-bound work off the GIL.

Each job slot (a thread of the worker, ``leash.client._slots``) that runs
such a handler has one child process of its own, started on first use
from a ``forkserver`` (a clean, single-threaded process that forks the
children: nothing of the worker's threads or connection is inherited). The
slot's thread sends the handler and the job's args to its child and waits
for the answer, so the worker's loop goes on beating and extending the
job's lease as for a thread handler: the parent holds the lease, the child
only runs the function.

The function is pickled by reference: it must be importable by its module
path (a module-level function of an importable module, not a lambda nor a
function defined inside another), and so must its args and its return
value. A script that makes its Worker at the top level must guard it with
``if __name__ == "__main__":``, as for any ``multiprocessing`` program: the
child imports the main module. Inside the child, ``current_job()`` is None
and ``add_to_batch`` is not available.

A child that dies (killed, out of memory, a crash in C) fails only the job
it was running: its attempt fails with a ``BrokenProcessPool`` error and
the slot starts a new child for its next job. ``close`` ends the children:
the idle ones at once; with ``kill``, the busy ones too (the end of a
shutdown's grace: their jobs are released by the worker).

A child ignores SIGINT and SIGTERM: stopping is the worker's to decide. A
terminal's Ctrl-C reaches every process of its group, and a supervisor may
signal a whole group too; the worker stops gracefully, and its children
finish their jobs within the grace (or are killed at its end) instead of
failing them with ``KeyboardInterrupt`` or dying mid-job.
"""

import multiprocessing
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ._handlers import Handler, call

START_METHOD = "forkserver"


class Children:
    """One child process per slot thread that asks for one."""

    def __init__(self) -> None:
        self._context = multiprocessing.get_context(START_METHOD)
        self._local = threading.local()  # .executor: this slot's child
        self._lock = threading.Lock()
        self._executors: set[ProcessPoolExecutor] = set()
        self._by_thread: dict[int, ProcessPoolExecutor] = {}  # each slot thread's child
        self._closed = False

    def run(self, fn: Handler, args: Any) -> Any:
        """``fn`` called with ``args`` in this thread's child; its result, or
        what it raised (``BrokenProcessPool`` if the child died)."""
        executor = self._executor()
        try:
            return executor.submit(call, fn, args).result()
        except BrokenProcessPool:
            self._drop(executor)  # the next job of this slot gets a new child
            raise

    def kill(self, thread_id: int) -> None:
        """Kill the child of slot thread ``thread_id`` (its job ran past its
        time limit): the thread's run fails with ``BrokenProcessPool``."""
        with self._lock:
            executor = self._by_thread.get(thread_id)
        if executor is not None:
            _kill_processes(executor)

    def close(self, *, kill: bool = False) -> None:
        """End the children (``kill``: the busy ones too), and wait for them."""
        with self._lock:
            self._closed = True
            executors, self._executors = self._executors, set()
        for executor in executors:
            if kill:
                _kill_processes(executor)
            executor.shutdown(wait=True, cancel_futures=True)

    def _executor(self) -> ProcessPoolExecutor:
        executor: ProcessPoolExecutor | None = getattr(self._local, "executor", None)
        if executor is not None:
            return executor
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker is stopping: no new child processes")
            executor = ProcessPoolExecutor(
                max_workers=1, mp_context=self._context, initializer=_leave_stop_signals
            )
            self._executors.add(executor)
            self._by_thread[threading.get_ident()] = executor
        self._local.executor = executor
        return executor

    def _drop(self, executor: ProcessPoolExecutor) -> None:
        self._local.executor = None
        with self._lock:
            self._executors.discard(executor)
            self._by_thread.pop(threading.get_ident(), None)
        executor.shutdown(wait=False)


def _leave_stop_signals() -> None:
    """In a new child: the stop signals are the worker's (see the module's notes)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _kill_processes(executor: ProcessPoolExecutor) -> None:
    for process in list(getattr(executor, "_processes", {}).values()):
        process.kill()
