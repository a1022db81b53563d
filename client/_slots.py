"""A worker's job slots: ``concurrency`` threads that take leased jobs and run them.

The worker's loop puts the jobs a fetch delivered here (``add``); a thread
that is free takes the oldest one and runs its handler, and when it
returns puts the outcome on ``finished`` and takes the next job at once,
without a round trip through the loop. The loop is told of finished jobs
by one ``call_soon_threadsafe`` for however many finish before it runs
(``collect``), so a busy worker pays no thread wake-up and no loop wake-up
a job. An idle thread sleeps reading a byte from a pipe, and ``add``
writes a byte for each thread it wakes (one a job, as long as threads are
idle): a write lets go of the GIL while the kernel wakes the threads, so
a woken thread can run at once, where one woken by a lock's release
(which keeps the GIL) could only wait for it: this halved the worker
process's system time a job with short jobs (bench/PROFILE.md). The pipe
is closed once the slots are closed and no thread reads it. A job that
waits here for a free thread waits as the prefetch rule says
(``leash.client._prefetch``): the loop takes it back (``due``) when it has
waited as long as its lease allows, to release it.

The threads are daemons: a handler that never returns does not keep the
process alive; ``close`` lets idle threads end and busy ones end after
their job.

A job that runs past its time limit gives up its slot (``abandon``): a new
thread takes the slot's place at once, and the old one, which Python
cannot stop, ends when its handler returns, its outcome dropped (the worker
has failed the job already). ``stuck`` counts the abandoned threads still
running: a handler that never returns costs a thread, never a slot.
"""

import asyncio
import os
import threading
from collections import deque
from collections.abc import Callable

from ._control import Failure, Outcome
from ._prefetch import Prefetched, Waiting
from ._types import Job, error_info

Run = Callable[[Job], Outcome]  # a job's handler, called in a slot's thread
Finished = tuple[Job, Outcome]


class Slots:
    def __init__(
        self,
        concurrency: int,
        run: Run,
        loop: asyncio.AbstractEventLoop,
        collect: Callable[[], None],
    ) -> None:
        self._run = run
        self._loop = loop
        self._collect = collect  # called on the loop when jobs have finished
        self._lock = threading.Lock()
        self._waiting = Prefetched()  # jobs no thread has taken yet
        # Idle threads sleep reading a byte each from a pipe: the loop wakes
        # them by writing, which it does with the GIL let go (a lock's
        # release keeps it: the woken thread could only wait for it).
        self._wake_r, self._wake_w = os.pipe()
        self._idle = 0  # threads asleep (or about to be) that no byte was written for
        self._readers = 0  # threads that will read a byte, or are reading one
        self._pipe_open = True
        self._closing = False
        self._told = False  # a collect is scheduled and has not started yet
        self.finished: deque[Finished] = deque()
        self._running: dict[int, int] = {}  # token -> the id of the thread running its job
        self._abandoned: set[int] = set()  # threads whose slot a new thread took
        self._started = 0  # threads started, for their names
        self.threads: list[threading.Thread] = []
        for _ in range(concurrency):
            self._start_thread()

    def _start_thread(self) -> None:
        thread = threading.Thread(target=self._slot, name=f"leash-job-{self._started}", daemon=True)
        self._started += 1
        self.threads.append(thread)
        thread.start()

    # --- the loop's side -------------------------------------------------------

    def add(self, jobs: list[Job], leased_s: float) -> None:
        """Jobs to run, in order, their leases arrived at ``leased_s``."""
        with self._lock:
            for job in jobs:
                self._waiting.add(job, leased_s)
            wake = min(self._idle, len(jobs))
            self._idle -= wake
        if wake:
            os.write(self._wake_w, bytes(wake))  # fits the pipe: at most a byte a thread

    def take_finished(self) -> list[Finished]:
        """The outcomes of the jobs finished since the last call (on the loop)."""
        self._told = False  # first: a job finishing from now on schedules another collect
        finished, popleft = [], self.finished.popleft
        while self.finished:
            finished.append(popleft())
        return finished

    def due(self, now_s: float) -> list[Job]:
        """Jobs not taken that have waited as long as they may: removed."""
        with self._lock:
            return self._waiting.due(now_s)

    def next_release_s(self) -> float | None:
        with self._lock:
            return self._waiting.next_due_s()

    def clear(self) -> list[Job]:
        """Every job not taken yet, removed (shutting down)."""
        with self._lock:
            return self._waiting.clear()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def stuck(self) -> int:
        """Abandoned threads whose handler has not returned yet."""
        with self._lock:
            return len(self._abandoned)

    def abandon(self, token: int) -> int | None:
        """The job of ``token`` ran past its time limit: a new thread takes
        its slot now, and its outcome will be dropped. The id of the thread
        running it (None if no thread runs it)."""
        with self._lock:
            thread_id = self._running.pop(token, None)
            if thread_id is None or self._closing:
                return thread_id
            self._abandoned.add(thread_id)
            self._start_thread()
            return thread_id

    def close(self) -> None:
        """Threads end once their job (if any) is done; jobs not taken are not run."""
        with self._lock:
            self._closing = True
            self._waiting.clear()
            wake, self._idle = self._idle, 0
            if wake:
                os.write(self._wake_w, bytes(wake))
            if not self._readers:
                self._close_pipe()

    def _close_pipe(self) -> None:
        """Under the lock, closing, once no thread reads the pipe any more."""
        if self._pipe_open:
            self._pipe_open = False
            os.close(self._wake_r)
            os.close(self._wake_w)

    # --- a slot's thread ---------------------------------------------------------

    def _slot(self) -> None:
        while True:
            waiting = self._next()
            if waiting is None:
                return
            job = waiting.job
            try:
                outcome = self._run(job)
            except BaseException as exc:  # a fault of the worker's own: the job fails, not the slot
                outcome = Failure(error_info(exc))
            with self._lock:
                self._running.pop(job.token, None)
                if threading.get_ident() in self._abandoned:
                    self._abandoned.discard(threading.get_ident())
                    self.threads.remove(threading.current_thread())
                    return  # its slot has a new thread; the job was settled at its limit
            self.finished.append((job, outcome))
            if not self._told:
                self._told = True
                try:
                    self._loop.call_soon_threadsafe(self._collect)
                except RuntimeError:  # the loop has closed: nobody collects any more
                    return

    def _next(self) -> Waiting | None:
        """The oldest job waiting; when none, sleep until ``add`` or
        ``close`` writes a byte for this thread."""
        woken = False
        while True:
            with self._lock:
                if woken:
                    self._readers -= 1
                if self._closing:
                    if not self._readers:
                        self._close_pipe()
                    return None
                waiting = self._waiting.take()
                if waiting is not None:
                    self._running[waiting.job.token] = threading.get_ident()
                    return waiting
                self._idle += 1
                self._readers += 1
            os.read(self._wake_r, 1)
            woken = True
