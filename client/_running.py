"""A running Worker: lease jobs, hand them to the slots, settle them, keep
their leases, and stop.

``Running`` is the half of ``Worker`` (``leash.client.worker``) that works
while ``run`` does: the fetch loop, the clock over held jobs and the
shutdown. ``Worker`` holds the settings and the handlers and wires the
parts for each run (``Worker._begin``); the attributes both use are declared
here.

Theory of operation. One asyncio loop owns one ``AsyncClient``. A fetch loop
keeps one long-poll ``fetch_many`` in flight, asking for as many jobs as
there are free slots (``concurrency`` minus handlers running) plus
``prefetch`` more, less those already held; the jobs beyond the free slots
wait for one (``leash.client._prefetch``: at most half their lease's ttl
and at most 1 s, then they are released for another worker, and no more
are leased ahead until a handler returns), so a handler that returns
starts the next job at once. The acks and fails of finished jobs go in the
same write as the next fetch, before it (``leash.client._settle``: an
outcome waits at most 5 ms for one). A lost connection is reopened with
capped exponential backoff; outcomes not yet answered are then sent on the
new connection, since a lease belongs to this process's worker id, not to
a connection. One timer (``_sweep``) serves every held job: it releases
the ones that waited too long and starts extending the leases of the ones
that have run for half their ttl. A stop ends the fetch in flight at the
broker at once (``cancel``), before the jobs leased ahead are released, so
those, and jobs pushed while it drains, go to other workers.

Jobs run in threads so that the loop stays free: ``concurrency`` threads of
the worker's own (``leash.client._slots``), each taking the next held job
as soon as it is free, never on the loop: while a CPU-bound or
blocking handler runs, the loop goes on serving the connection, the
heartbeats and other jobs' acks, so one slow handler never delays another
job's bookkeeping nor makes the broker think this process is dead. The limit:
a handler that holds the GIL in C code (a long call into an extension that
does not release it) for longer than the broker's ``process_ttl_ms`` starves
the loop, the beats stop, and the broker fails this process's leases. Such
work belongs in child processes: a handler with ``pool="processes"`` (or
every plain one, with ``Worker(pool="processes")``) runs in a child of its
slot (``leash.client._procs``), its slot's thread waiting for it. An
``async def`` handler runs on the loop itself, its slot's thread waiting for
it the same way, so ``concurrency`` bounds every kind of job at once.

Liveness (``leash.client._keepalive``): a heartbeat beats every ``heartbeat_ms``
of the welcome until the end of shutdown. Its reply is what the broker wants:
``quiet`` stops fetching (its held fetch is ended at the broker; running
jobs go on and settle), ``ok`` resumes it,
``terminate`` is a graceful stop like SIGTERM. With ``auto_extend`` (the
default) a running job's lease is extended every half ``lease_ttl_ms``. An
ack or fail refused with ``StaleLease``/``NotFound`` means the lease was lost
(the broker declared this process dead, or the lease expired) and another
worker may run the job: logged as a warning, and the worker goes on.

Time limits: a job delivered with ``time_limit_ms`` is stopped when that
long has passed since its lease arrived (the broker caps the lease there
too, and fails the attempt if the worker does not). The worker stops
extending its lease, fails the attempt with ``TimeLimitExceeded`` itself
and frees its slot at once: a new thread takes the slot (``_slots``). The
handler is stopped as far as its kind allows: an async handler's task is
cancelled, a child process (``pool="processes"``) is killed; a thread
cannot be, so it is abandoned, runs on until its handler returns (its
outcome dropped) and is counted in ``stuck_threads``. A handler that
sleeps for ever thus costs a thread, never a slot.
"""

import asyncio
import logging
import math
import signal
from dataclasses import dataclass
from typing import Any

from leash.protocol import limits
from leash.protocol.messages import TIME_LIMIT_EXCEEDED, ErrorInfo

from ._backoff import backoff_s
from ._control import Failure
from ._exceptions import Internal, QueuePaused
from ._keepalive import keep_extended
from ._link import Link
from ._runs import Runs
from ._settle import LINK_ERRORS, Settler
from ._slots import Slots
from ._types import Job
from .aio import AsyncClient

log = logging.getLogger("leash.worker")

_RETRYABLE_FETCH_ERRORS = (Internal, QueuePaused)  # the other refusals stop the worker


class Running:
    """The fetch loop, the clock over held jobs, and the shutdown of a Worker."""

    # The settings (Worker.__init__)
    queues: list[str]
    concurrency: int
    wait_ms: int
    grace_s: float
    timeout_s: float
    auto_extend: bool
    prefetch: int
    process_state: str
    unfinished: int
    # The parts of one run (Worker._begin)
    _loop: asyncio.AbstractEventLoop | None
    _link: Link
    _stopping: asyncio.Event
    _hard: asyncio.Event  # stop now: the grace is skipped
    _wake: asyncio.Event  # the fetch loop may want more jobs
    _collected: asyncio.Event  # set when finished jobs were collected
    _may_fetch: asyncio.Event  # cleared while the broker wants this process quiet
    _held: "dict[int, _Held]"  # by token: leased, not finished (waiting or running)
    _runs: Runs
    _slots: Slots
    _prefetching: bool  # off after jobs waited too long, until a handler returns
    _sweep_timer: asyncio.TimerHandle | None
    _settler: Settler
    _tasks: set[asyncio.Task[None]]  # releases
    _held_fetch: "tuple[AsyncClient, int] | None"  # the fetch in flight: its client and rid
    _releasing_fetched: bool  # the fetch loop is releasing what a fetch brought in a stop
    _fatal: BaseException | None
    _fetcher: asyncio.Task[None]
    _heartbeat: asyncio.Task[None]

    # --- stopping, and what the broker asks of this process -------------------

    def _begin_stop(self, now: bool) -> None:
        if not self._stopping.is_set():
            log.info(
                "stopping: %d jobs running, grace %g s", self._running(), 0 if now else self.grace_s
            )
        self._stopping.set()
        self._link.quiet = True
        self._settler.urgent = True
        self._wake.set()
        if now:
            self._hard.set()
        if not self._fetching:
            self._fetcher.cancel()  # connecting or waiting: nothing to collect
        else:
            self._end_held_fetch()  # before the releases below: they go to other workers
        prefetched = self._slots.clear()
        for job in prefetched:
            del self._held[job.token]
        self._give_back(prefetched, "prefetched, not started before the stop")

    def _on_process_state(self, state: str) -> None:
        """A beat's reply: what the broker wants of this process now."""
        if state == self.process_state:
            return
        if state not in ("ok", "quiet", "terminate"):
            log.warning("the broker asked for process state %r, unknown here: ignored", state)
            return
        self.process_state = state
        if state == "terminate":
            log.warning("the broker asked this worker to terminate: finishing running jobs")
            self._begin_stop(now=False)
        elif state == "quiet":
            log.warning("the broker asked this worker to be quiet: fetching no new jobs")
            self._may_fetch.clear()
            self._end_held_fetch()  # the fetch loop then waits for "ok"
        else:
            log.info("the broker lets this worker fetch again")
            self._may_fetch.set()

    @property
    def _fetching(self) -> bool:
        return self._held_fetch is not None

    def _end_held_fetch(self) -> None:
        """The fetch in flight is answered now, with what the broker has
        (``cancel``): it no longer waits at the broker for jobs this worker
        will not take."""
        if self._held_fetch is not None:
            client, rid = self._held_fetch
            client._post(client._core.cancel(rid).frame)

    def _fetcher_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        self._fatal = task.exception()
        log.error("the fetch loop failed, stopping: %r", self._fatal)
        self._begin_stop(now=False)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._hard.is_set():
            return  # a third one, or more: already releasing
        if self._stopping.is_set():
            log.warning("%s again: releasing %d running jobs now", name, self._running())
            self._begin_stop(now=True)
        else:
            log.warning("%s: finishing running jobs (send it again to release them now)", name)
            self._begin_stop(now=False)

    # --- fetching --------------------------------------------------------------

    def _running(self) -> int:
        return len(self._held) - self._slots.waiting

    def _wanted(self) -> int:
        """Jobs to ask for: the free slots, and the prefetch, less what waits."""
        extra = self.prefetch if self._prefetching else 0
        return min(self.concurrency + extra - len(self._held), limits.FETCH_COUNT_MAX)

    async def _fetch_loop(self) -> None:
        refusals = 0
        while not self._stopping.is_set():
            if self._wanted() <= 0:
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self._may_fetch.is_set():
                await self._may_fetch.wait()
                continue
            client = await self._link.client()
            if self._stopping.is_set():
                break
            jobs = await self._fetch(client, self._wanted())
            if jobs is None:
                await asyncio.sleep(backoff_s(refusals))
                refusals += 1
                continue
            refusals = 0
            if self._stopping.is_set():
                self._releasing_fetched = True  # the end waits for it before closing
                await self._release(jobs, "fetched during shutdown")
                return
            if jobs:
                self._take(jobs)

    async def _fetch(self, client: AsyncClient, count: int) -> list[Job] | None:
        """One long-poll fetch, in one write with the outcomes waiting to be
        sent; None when refused for a while. Other refusals raise."""
        try:
            outcomes, calls = self._settler.take(client)
            fetch = client._core.fetch(self.queues, count, self.wait_ms)
            calls.append(fetch)
            self._held_fetch = (client, fetch.rid)  # from here on, a stop waits for the reply
            try:
                replies = await client._together(calls)
            except LINK_ERRORS as exc:
                self._settler.put_back(outcomes)
                await self._link.lost(client, exc)
                return []
            self._settler.watch(client, outcomes, replies[:-1])
            jobs: list[Job] = await replies[-1]
            return jobs
        except LINK_ERRORS as exc:
            await self._link.lost(client, exc)
            return []
        except _RETRYABLE_FETCH_ERRORS as exc:
            log.warning("fetch refused, retrying: %s", exc)
            return None
        finally:
            self._held_fetch = None

    def _take(self, jobs: list[Job]) -> None:
        """Jobs for the slots: a free thread takes one at once, the rest wait."""
        now_s = asyncio.get_running_loop().time()
        extend = self.auto_extend
        for job in jobs:
            half_ttl_s = job.lease_ttl_ms / 2000
            extend_s = now_s + half_ttl_s if extend and half_ttl_s > 0 else math.inf
            limit_s = now_s + job.time_limit_ms / 1000 if job.time_limit_ms else math.inf
            self._held[job.token] = _Held(job, extend_s, limit_s)
        self._slots.add(jobs, now_s)
        self._arm_sweep()

    def _collect(self) -> None:
        """On the loop: the jobs the slots finished go to the settler."""
        finished = self._slots.take_finished()
        for job, outcome in finished:
            held = self._held.pop(job.token, None)
            if held is None:
                continue  # released meanwhile (a stop that did not wait)
            if held.extending is not None:
                held.extending.cancel()
            self._settler.add(job, outcome)
        if finished:
            self._prefetching = True
            self._wake.set()
            self._collected.set()

    # --- the clock: prefetched jobs that waited too long, leases to extend,
    # --- jobs past their time limit --------------------------------------------

    def _arm_sweep(self) -> None:
        """A timer for the first job that must be released, extended or stopped."""
        due_s = min(
            (
                min(h.extend_s if h.extending is None else math.inf, h.limit_s)
                for h in self._held.values()
            ),
            default=math.inf,
        )
        release_s = self._slots.next_release_s()
        if release_s is not None:
            due_s = min(due_s, release_s)
        timer = self._sweep_timer
        if timer is not None and (due_s == math.inf or timer.when() > due_s):
            timer.cancel()
            self._sweep_timer = timer = None
        if due_s != math.inf and timer is None:
            self._sweep_timer = asyncio.get_running_loop().call_at(due_s, self._sweep)

    def _sweep(self) -> None:
        """Release what waited for a slot as long as its lease allows (no more
        is leased ahead until a slot frees); extend, from now on, the lease of
        a job running for half its ttl (one still waiting was released first)."""
        self._sweep_timer = None
        now_s = asyncio.get_running_loop().time()
        due = self._slots.due(now_s)
        for job in due:
            del self._held[job.token]
        if due:
            self._prefetching = False
            self._give_back(due, "waited for a free slot as long as its lease allows")
        for held in list(self._held.values()):
            if held.limit_s <= now_s:
                self._time_out(held)
            elif held.extending is None and held.extend_s <= now_s:
                extending = keep_extended(self._link, held.job, first_delay_s=0.0)
                held.extending = asyncio.get_running_loop().create_task(extending)
        self._arm_sweep()

    def _time_out(self, held: "_Held") -> None:
        """The job ran to its time limit: no more extending, its attempt
        failed with ``TimeLimitExceeded`` (the broker fails it too, at the
        same limit; whichever comes first counts), its slot given to a new
        thread, its run stopped as far as its kind allows (``_runs``)."""
        job = held.job
        del self._held[job.token]
        if held.extending is not None:
            held.extending.cancel()
        thread_id = self._slots.abandon(job.token)
        self._runs.interrupt(job, thread_id)
        limit_s = (job.time_limit_ms or 0) / 1000
        message = f"the attempt ran past its time limit of {limit_s:g} s"
        self._settler.add(job, Failure(ErrorInfo(type=TIME_LIMIT_EXCEEDED, message=message)))
        log.warning(
            "job %s (type %s) ran past its time limit of %g s: failed, its slot freed "
            "(%d handler threads still running past their limit)",
            job.id,
            job.type,
            limit_s,
            self._slots.stuck,
        )
        self._prefetching = True
        self._wake.set()

    def _stuck(self) -> int:
        return self.stuck_threads

    @property
    def stuck_threads(self) -> int:
        """Threads still running a handler past its job's time limit: their
        slots were given to new threads (a thread cannot be stopped)."""
        return self._slots.stuck if hasattr(self, "_slots") else 0

    def _give_back(self, jobs: list[Job], why: str) -> None:
        if jobs:
            task = asyncio.get_running_loop().create_task(self._release(jobs, why))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # --- shutting down ---------------------------------------------------------

    async def _drain(self) -> None:
        """Wait for the running jobs, then for their outcomes to be answered,
        until done, the grace ends or ``now``. A fetch in flight is waited
        for alongside them (what it brings is released), never on its own:
        the stop's ``cancel`` ends it, and so does the connection's close
        (a broker that predates ``cancel``), so a stop never waits out a
        long poll."""
        loop = asyncio.get_running_loop()
        deadline_s = loop.time() + self.grace_s
        hard = asyncio.ensure_future(self._hard.wait())
        flushing: asyncio.Future[None] | None = None
        try:
            while not self._hard.is_set():
                remaining_s = deadline_s - loop.time()
                if not self._held and not self._tasks and self._settler.idle:
                    return
                awaited: set[asyncio.Future[Any]] = set()
                if not self._fetcher.done():
                    awaited.add(self._fetcher)
                if self._held:
                    self._collected.clear()
                    awaited.add(asyncio.ensure_future(self._collected.wait()))
                elif self._tasks:
                    awaited.update(self._tasks)
                else:
                    if flushing is None or flushing.done():
                        flushing = asyncio.ensure_future(self._settler.flush())
                    awaited.add(flushing)
                if remaining_s <= 0:
                    return
                await asyncio.wait(
                    {*awaited, hard}, timeout=remaining_s, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            hard.cancel()
            if flushing is not None:
                flushing.cancel()

    async def _finish(self) -> None:
        """Release what is still running, then close the connection and the threads."""
        self._slots.close()
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
        unfinished = [held.job for held in self._held.values()]
        for held in self._held.values():
            if held.extending is not None:
                held.extending.cancel()
        self._runs.cancel()  # async handlers still running: their jobs are released below
        self._held.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        unsettled = self._settler.unanswered
        self._settler.cancel()
        if unsettled:
            log.warning("%d job outcomes not answered by the broker before the end", unsettled)
        if unfinished:
            await self._release(unfinished, "still running at shutdown")
        self.unfinished = len(unfinished)
        await asyncio.to_thread(self._runs.children.close, kill=True)  # their jobs are released
        self._heartbeat.cancel()  # beats went on while draining: the leases stayed ours
        await asyncio.gather(self._heartbeat, return_exceptions=True)
        if self._releasing_fetched:  # what a fetch brought during the stop goes back first
            await asyncio.wait({self._fetcher}, timeout=self.timeout_s)
        # Closing ends a held fetch, which then leases nothing. Jobs in a reply that
        # crossed the close are logged; the broker frees them once this process is gone.
        await self._link.close()
        await asyncio.wait({self._fetcher}, timeout=self.timeout_s)
        self._fetcher.cancel()
        self._loop = None

    async def _release(self, jobs: list[Job], why: str) -> None:
        if not jobs:
            return
        client = self._link.current
        if client is None:
            log.warning(
                "%d jobs %s not released: no connection (the broker frees them)", len(jobs), why
            )
            return
        results = await asyncio.gather(
            *(client.release(job) for job in jobs), return_exceptions=True
        )
        for job, result in zip(jobs, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("could not release job %s (%s): %s", job.id, why, result)
            else:
                log.info("released job %s (%s)", job.id, why)


@dataclass(slots=True)
class _Held:
    """A job this worker holds: waiting in a slot's queue or running."""

    job: Job
    extend_s: float  # when its lease is first extended, if still running (loop time)
    limit_s: float = math.inf  # when it reaches its time limit (loop time)
    extending: "asyncio.Task[None] | None" = None
