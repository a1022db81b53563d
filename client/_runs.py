"""Running one leased job, in a worker's slot thread, by its handler's kind.

- a plain handler runs in the slot's thread (``leash.client._handlers.invoke``);
- with ``pool="processes"`` (its own, or the worker's), in the slot's child
  process (``leash.client._procs``), the thread waiting for it;
- an ``async def`` handler runs on the worker's loop as a task, the thread
  waiting for it, so ``concurrency`` bounds every kind of job at once; a
  stop that outlasts its grace cancels the tasks still running (``cancel``)
  and the worker releases their jobs;
- a job of a type with no handler is dead at once, with an
  ``UnknownJobType`` error, or released for another worker
  (``leash.client._unknown``).

Every kind goes through the middleware chain and is logged and counted the
same way (``leash.client._joblog.Watch``); a job of a type with no handler is
counted with the outcome ``unknown``.
``add_to_batch`` from a plain handler in a thread pushes on the loop, through
the worker's connection, presenting the running job's lease;
``report_progress`` sends the report the same way (from an async handler,
in a task of its own, so the handler does not wait for it).

A job whose time limit passed is interrupted as far as its kind allows
(``interrupt``): an async handler's task is cancelled, a child process is
killed; a thread cannot be stopped (the worker abandons it: ``_slots``).
"""

import asyncio
import concurrent.futures
import logging
from collections.abc import Awaitable, Callable, Mapping

from leash.protocol.messages import JobSpec

from . import _unknown as unknown
from ._control import Failure, Outcome
from ._handlers import Pool, Registered, invoke, invoke_async
from ._joblog import Watch
from ._link import Link
from ._middleware import Chain
from ._procs import Children
from ._types import Job, error_info

log = logging.getLogger("leash.worker")


class Runs:
    """How a worker's slots run jobs; made when the worker starts, on its loop."""

    def __init__(
        self,
        handlers: Mapping[str, Registered],
        pool: Pool,
        unknown: str,
        chain: Chain,
        link: Link,
        push_timeout_s: float,
        watch: Watch,
    ) -> None:
        self._handlers, self._pool, self._unknown, self._chain = handlers, pool, unknown, chain
        self._watch = watch
        self._link, self._push_timeout_s = link, push_timeout_s
        self._loop = asyncio.get_running_loop()
        self.children = Children()  # started by the first job run in a process
        self._tasks: dict[int, asyncio.Task[Outcome]] = {}  # async handlers running, by token
        self._reports: set[asyncio.Task[None]] = set()  # progress reports of async handlers

    def run(self, job: Job) -> Outcome:
        """Run ``job`` (in a slot's thread); what it comes to."""
        entry = self._handlers.get(job.type)
        if entry is None:
            settled = unknown.outcome(job, self._unknown, list(self._handlers))
            self._watch.unknown_type(job)
            if isinstance(settled, Failure):
                log.warning("job %s is dead: %s", job.id, settled.error.message)
            else:
                log.info("job %s released: no handler for its type %r here", job.id, job.type)
            return settled
        if entry.is_async:
            return self._on_loop(lambda: self._coroutine(entry, job))
        if (entry.pool or self._pool) == "processes":
            return invoke(entry, job, None, self.children.run, self._chain, self._watch)
        return invoke(
            entry, job, self._push_for_handler, None, self._chain, self._watch, self._report_from
        )

    def cancel(self) -> None:
        """On the loop: cancel the async handlers still running (their jobs are released)."""
        for task in self._tasks.values():
            task.cancel()

    def interrupt(self, job: Job, thread_id: int | None) -> None:
        """On the loop: stop the run of ``job``, past its time limit, as far as
        its kind allows: its task cancelled (async), the child process of the
        slot thread ``thread_id`` killed (processes); a thread runs on."""
        task = self._tasks.get(job.token)
        if task is not None:
            task.cancel()
        elif thread_id is not None:
            self.children.kill(thread_id)

    def _on_loop(self, make: Callable[[], Awaitable[Outcome]]) -> Outcome:
        try:
            return asyncio.run_coroutine_threadsafe(_awaited(make), self._loop).result()
        except concurrent.futures.CancelledError:  # the grace ended: the job is released
            return Failure(error_info("cancelled at shutdown"))
        except BaseException as exc:  # the loop has closed; a SystemExit in the handler
            return Failure(error_info(exc))

    async def _coroutine(self, entry: Registered, job: Job) -> Outcome:
        task = asyncio.current_task()
        assert task is not None
        self._tasks[job.token] = task
        try:
            return await invoke_async(entry, job, self._chain, self._watch, self._report_async)
        finally:
            del self._tasks[job.token]

    def _push_for_handler(self, spec: JobSpec, job: Job) -> str:
        """``add_to_batch`` from a handler thread: push on the loop, with the job's lease."""
        pushed = asyncio.run_coroutine_threadsafe(self._push_with_lease(spec, job), self._loop)
        return pushed.result(self._push_timeout_s)

    def _report_from(self, job: Job, percent: int, message: str) -> None:
        """``report_progress`` from a handler thread: sent on the loop, waited for."""
        sent = asyncio.run_coroutine_threadsafe(self._report(job, percent, message), self._loop)
        sent.result(self._push_timeout_s)

    def _report_async(self, job: Job, percent: int, message: str) -> None:
        """``report_progress`` from an async handler: sent in a task of its own."""
        task = self._loop.create_task(self._report_logged(job, percent, message))
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _report(self, job: Job, percent: int, message: str) -> None:
        client = await self._link.client()
        await client.progress(job, percent, message)

    async def _report_logged(self, job: Job, percent: int, message: str) -> None:
        try:
            await self._report(job, percent, message)
        except Exception as exc:  # the handler goes on; its lease may be lost
            log.warning("progress of job %s not reported: %s", job.id, exc)

    async def _push_with_lease(self, spec: JobSpec, job: Job) -> str:
        client = await self._link.client()
        (result,) = await client.push_many([spec], lease=job)
        return result.id


async def _awaited(make: Callable[[], Awaitable[Outcome]]) -> Outcome:
    return await make()
