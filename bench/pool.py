"""Worker processes for the concurrent workloads, started once per bench run.

Each process waits for a task: the name of a generator function in
``bench.workloads.TASKS`` and its arguments. The generator connects and
yields once (ready); the process reports ready and waits for "go"; then it
runs the generator to its end and sends back what it returned. So every
worker is connected before the clock starts, and all start together.
Processes are started with "spawn" (no state shared with the parent's
threads) and stopped by their own pid. A task that fails kills the pool;
the next task starts a fresh one.
"""

import contextlib
import multiprocessing
import traceback
from multiprocessing.connection import Connection
from typing import Any

from bench.servers import BenchError

READY_TIMEOUT_S = 60.0
RESULT_TIMEOUT_S = 600.0


def _child(conn: Connection) -> None:
    from bench.workloads import TASKS

    while True:
        message = conn.recv()
        if message is None:
            return
        name, kwargs = message
        try:
            task = TASKS[name](**kwargs)
            next(task)
            conn.send(("ready", None))
            if conn.recv() != "go":
                return
            try:
                next(task)
            except StopIteration as stop:
                conn.send(("done", stop.value))
            else:
                raise RuntimeError(f"task {name} yielded twice")
        except Exception:
            conn.send(("error", traceback.format_exc()))


class Pool:
    def __init__(self, size: int) -> None:
        self.size = size
        self._procs: list[Any] = []
        self._conns: list[Connection] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def _ensure(self) -> None:
        if self._procs:
            return
        context = multiprocessing.get_context("spawn")
        for _ in range(self.size):
            parent, child = context.Pipe()
            process = context.Process(target=_child, args=(child,), daemon=True)
            process.start()
            child.close()
            self._procs.append(process)
            self._conns.append(parent)

    def start(self, name: str, kwargs_list: list[dict[str, Any]]) -> None:
        """Hand each worker its task (one kwargs per worker) and wait until all are ready."""
        self._ensure()
        assert len(kwargs_list) <= self.size
        self._active = self._conns[: len(kwargs_list)]
        for conn, kwargs in zip(self._active, kwargs_list, strict=True):
            conn.send((name, kwargs))
        for conn in self._active:
            self._receive(conn, "ready", READY_TIMEOUT_S)

    def go(self) -> None:
        for conn in self._active:
            conn.send("go")

    def results(self) -> list[Any]:
        return [self._receive(conn, "done", RESULT_TIMEOUT_S) for conn in self._active]

    def _receive(self, conn: Connection, expected: str, timeout_s: float) -> Any:
        if not conn.poll(timeout_s):
            self.close(kill=True)
            raise BenchError(f"a worker process sent no {expected!r} within {timeout_s} s")
        kind, value = conn.recv()
        if kind != expected:
            self.close(kill=True)
            raise BenchError(f"a worker process failed:\n{value}")
        return value

    def close(self, *, kill: bool = False) -> None:
        for conn in self._conns:
            if not kill:
                with contextlib.suppress(OSError):
                    conn.send(None)
        for process in self._procs:
            process.join(0 if kill else 10)
            if process.is_alive():
                process.kill()  # by its own pid
                process.join(10)
        for conn in self._conns:
            conn.close()
        self._procs, self._conns = [], []
