"""The outcomes of a worker's finished jobs: acks, fails and snoozes, sent together.

A job whose handler returned is acked, one that raised is failed (after a
delay of its own, or dead at once, as ``leash.client._control`` says), one
that snoozed is released with a delay. None goes out on its own at once:
the outcomes wait here for the worker's next fetch and go in the same
write, before it (one ``ack_many`` for the acks, a ``fail`` or a
``release`` each). So under load a write carries the outcomes of every job
finished since the last one and the next fetch, where it cost a write a
request. The wait is bounded: an outcome waits at most
``SETTLE_WAIT_MAX_MS`` (a fetch may be held at the broker, or no slot may
be free), then whatever waits goes out alone; a stopping worker sends at
once. The broker's answers are per job, as for separate requests: a
refused ack (``stale_lease``, ``not_found``: the lease was lost) is logged
and the worker goes on; an outcome whose connection was lost before its
answer is sent again on the next connection (a lease belongs to the
process, not to a connection), until the broker has answered it.
"""

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, assert_never

from leash.protocol import limits
from leash.protocol.messages import ErrorInfo

from ._calls import Call
from ._control import Failure, Outcome, Snoozed
from ._exceptions import (
    ConnectionLost,
    JournalFailed,
    NotFound,
    RequestTimeout,
    ServerError,
    StaleLease,
    TooLarge,
)
from ._keepalive import lease_lost_message
from ._link import Link
from ._types import FailResult, Job
from .aio import AsyncClient

log = logging.getLogger("leash.worker")

SETTLE_WAIT_MAX_MS = 5  # an outcome waits at most this long to share a write with a fetch
LINK_ERRORS = (ConnectionLost, RequestTimeout, JournalFailed)  # sent again on a new connection

Finished = tuple[Job, Outcome]  # a job and how its run ended (None: acked)


class Settler:
    """Outcomes waiting to be sent, and the answers being waited for."""

    def __init__(self, link: Link) -> None:
        self._link = link
        self._waiting: list[Finished] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.urgent = False  # stopping: send at once, share nothing

    @property
    def idle(self) -> bool:
        """Nothing waits to be sent or answered."""
        return not self._waiting and not self._tasks

    def add(self, job: Job, outcome: Outcome) -> None:
        self._waiting.append((job, outcome))
        if self.urgent:
            self._send_alone_soon(0.0)
        elif self._timer is None:
            self._send_alone_soon(SETTLE_WAIT_MAX_MS / 1000)

    def take(self, client: AsyncClient) -> tuple[list[Finished], list[Call[Any]]]:
        """What waits, as the requests to put before a fetch in its write."""
        outcomes, self._waiting = self._waiting, []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return outcomes, _calls(client, outcomes)

    def put_back(self, outcomes: Sequence[Finished]) -> None:
        """Not sent after all (the connection was lost first)."""
        for job, outcome in outcomes:
            self.add(job, outcome)

    def watch(
        self,
        client: AsyncClient,
        outcomes: list[Finished],
        replies: Sequence["asyncio.Future[Any]"],
    ) -> None:
        """Wait for the answers to outcomes sent (in a task of their own)."""
        if outcomes:
            self._spawn(self._answers(client, outcomes, replies))

    async def flush(self) -> None:
        """Send what waits now and wait until every outcome is answered (the
        caller bounds the time: a broker that is gone answers nothing)."""
        self.urgent = True
        while self._waiting or self._tasks:
            if self._waiting:
                await self._send_alone()
            else:
                await asyncio.wait(set(self._tasks))

    @property
    def unanswered(self) -> int:
        return len(self._waiting) + len(self._tasks)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in self._tasks:
            task.cancel()

    # --- sending ---------------------------------------------------------------

    def _send_alone_soon(self, delay_s: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(delay_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._waiting:
            self._spawn(self._send_alone())

    async def _send_alone(self) -> None:
        try:
            client = await self._link.client()
        except ServerError as exc:  # a refused handshake; the fetch loop stops the worker
            log.error("could not send %d outcomes: %s", len(self._waiting), exc)
            return
        outcomes, calls = self.take(client)
        if not outcomes:
            return
        try:
            replies = await client._together(calls)
        except LINK_ERRORS as exc:
            await self._link.lost(client, exc)
            self.put_back(outcomes)
            return
        await self._answers(client, outcomes, replies)

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work, name="leash-settle")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- answers ---------------------------------------------------------------

    async def _answers(
        self,
        client: AsyncClient,
        outcomes: list[Finished],
        replies: Sequence["asyncio.Future[Any]"],
    ) -> None:
        chunks, others = _split(outcomes)
        replies = list(replies)
        for chunk, reply in zip(chunks, replies, strict=False):
            try:
                results = await reply
            except LINK_ERRORS as exc:
                await self._lost(client, exc, [(job, None) for job in chunk])
                continue
            except ServerError as exc:
                log.error("could not ack %d jobs: %s", len(chunk), exc)
                continue
            for job, result in zip(chunk, results, strict=True):
                if isinstance(result, TooLarge) and job.result is not None:
                    self.add(job, result_too_large(job, result))  # still leased: fail it
                    continue
                _log_outcome(job, None, result)
        for (job, outcome), reply in zip(others, replies[len(chunks) :], strict=True):
            try:
                result = await reply
            except LINK_ERRORS as exc:
                await self._lost(client, exc, [(job, outcome)])
                continue
            except ServerError as exc:
                _log_outcome(job, outcome, exc)
                continue
            _log_outcome(job, outcome, result)

    async def _lost(self, client: AsyncClient, exc: Exception, outcomes: list[Finished]) -> None:
        await self._link.lost(client, exc)
        self.put_back(outcomes)


def result_too_large(job: Job, refused: TooLarge) -> Failure:
    """The broker refused a job's result as too large (the job is still
    leased): it fails dead, with ``ResultTooLarge``; running it again
    would give the same result."""
    log.error("the result of job %s (%s) is too large: %s", job.id, job.type, refused.message)
    job.result = None
    error = ErrorInfo(type="ResultTooLarge", message=refused.message)
    return Failure(error, dead=True)


def _split(outcomes: list[Finished]) -> tuple[list[list[Job]], list[Finished]]:
    """The acks in chunks of at most ``ACK_MANY_MAX``, and the others."""
    acked = [job for job, outcome in outcomes if outcome is None]
    chunks = [acked[i : i + limits.ACK_MANY_MAX] for i in range(0, len(acked), limits.ACK_MANY_MAX)]
    return chunks, [(job, outcome) for job, outcome in outcomes if outcome is not None]


def _calls(client: AsyncClient, outcomes: list[Finished]) -> list[Call[Any]]:
    """One ack_many a chunk of acks, then a fail or release for each other outcome."""
    chunks, others = _split(outcomes)
    calls: list[Call[Any]] = [
        client._core.ack_many(chunk, [job.result for job in chunk]) for chunk in chunks
    ]
    for job, outcome in others:
        match outcome:
            case Failure(error=error, retry_in_ms=retry_in_ms, dead=dead):
                calls.append(client._core.fail(job, error, dead, retry_in_ms))
            case Snoozed(delay_ms=delay_ms):
                calls.append(client._core.release(job, delay_ms))
            case None:
                raise AssertionError("acks go in ack_many")
            case _:
                assert_never(outcome)
    return calls


def _log_outcome(job: Job, outcome: Outcome, result: object) -> None:
    verb = "ack" if outcome is None else "release" if isinstance(outcome, Snoozed) else "fail"
    if isinstance(result, StaleLease | NotFound):
        log.warning("%s (%s refused: %s)", lease_lost_message(job), verb, result.code)
    elif isinstance(result, ServerError):
        log.error("could not %s job %s: %s", verb, job.id, result)
    elif isinstance(result, FailResult):
        if result.state == "dead":
            log.warning("job %s (%s) is dead", job.id, job.type)
        else:
            log.debug("job %s (%s) is retrying at %s ms", job.id, job.type, result.retry_at_ms)
    elif outcome is None:
        log.debug("job %s acked", job.id)
    else:
        log.debug("job %s released for later", job.id)
