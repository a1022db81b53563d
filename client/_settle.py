"""The outcomes of a worker's finished jobs: acks and fails, sent together.

A job whose handler returned is acked, one that raised is failed. Neither
goes out on its own at once: the outcomes wait here for the worker's next
fetch and go in the same write, before it (one ``ack_many`` for the acks, a
``fail`` each). So under load a write carries the outcomes of every job
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
from typing import Any

from leash.protocol import limits
from leash.protocol.messages import ErrorInfo

from ._calls import Call
from ._exceptions import (
    ConnectionLost,
    JournalFailed,
    NotFound,
    RequestTimeout,
    ServerError,
    StaleLease,
)
from ._keepalive import lease_lost_message
from ._link import Link
from ._types import FailResult, Job
from .aio import AsyncClient

log = logging.getLogger("leash.worker")

SETTLE_WAIT_MAX_MS = 5  # an outcome waits at most this long to share a write with a fetch
LINK_ERRORS = (ConnectionLost, RequestTimeout, JournalFailed)  # sent again on a new connection

Outcome = tuple[Job, ErrorInfo | None]  # None: acked


class Settler:
    """Outcomes waiting to be sent, and the answers being waited for."""

    def __init__(self, link: Link) -> None:
        self._link = link
        self._waiting: list[Outcome] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.urgent = False  # stopping: send at once, share nothing

    @property
    def idle(self) -> bool:
        """Nothing waits to be sent or answered."""
        return not self._waiting and not self._tasks

    def add(self, job: Job, error: ErrorInfo | None) -> None:
        self._waiting.append((job, error))
        if self.urgent:
            self._send_alone_soon(0.0)
        elif self._timer is None:
            self._send_alone_soon(SETTLE_WAIT_MAX_MS / 1000)

    def take(self, client: AsyncClient) -> tuple[list[Outcome], list[Call[Any]]]:
        """What waits, as the requests to put before a fetch in its write."""
        outcomes, self._waiting = self._waiting, []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return outcomes, _calls(client, outcomes)

    def put_back(self, outcomes: Sequence[Outcome]) -> None:
        """Not sent after all (the connection was lost first)."""
        for job, error in outcomes:
            self.add(job, error)

    def watch(
        self,
        client: AsyncClient,
        outcomes: list[Outcome],
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
        self, client: AsyncClient, outcomes: list[Outcome], replies: Sequence["asyncio.Future[Any]"]
    ) -> None:
        chunks, failed = _split(outcomes)
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
                _log_outcome(job, None, result)
        for (job, error), reply in zip(failed, replies[len(chunks) :], strict=True):
            try:
                result = await reply
            except LINK_ERRORS as exc:
                await self._lost(client, exc, [(job, error)])
                continue
            except ServerError as exc:
                _log_outcome(job, error, exc)
                continue
            _log_outcome(job, error, result)

    async def _lost(self, client: AsyncClient, exc: Exception, outcomes: list[Outcome]) -> None:
        await self._link.lost(client, exc)
        self.put_back(outcomes)


def _split(outcomes: list[Outcome]) -> tuple[list[list[Job]], list[tuple[Job, ErrorInfo]]]:
    """The acks in chunks of at most ``ACK_MANY_MAX``, and the failures."""
    acked = [job for job, error in outcomes if error is None]
    chunks = [acked[i : i + limits.ACK_MANY_MAX] for i in range(0, len(acked), limits.ACK_MANY_MAX)]
    return chunks, [(job, error) for job, error in outcomes if error is not None]


def _calls(client: AsyncClient, outcomes: list[Outcome]) -> list[Call[Any]]:
    """One ack_many a chunk of acks, then a fail for each failure."""
    chunks, failed = _split(outcomes)
    calls: list[Call[Any]] = [client._core.ack_many(chunk) for chunk in chunks]
    return calls + [client._core.fail(job, error) for job, error in failed]


def _log_outcome(job: Job, error: ErrorInfo | None, result: object) -> None:
    verb = "ack" if error is None else "fail"
    if isinstance(result, StaleLease | NotFound):
        log.warning("%s (%s refused: %s)", lease_lost_message(job), verb, result.code)
    elif isinstance(result, ServerError):
        log.error("could not %s job %s: %s", verb, job.id, result)
    elif isinstance(result, FailResult):
        assert error is not None
        level = logging.WARNING if result.state == "dead" else logging.INFO
        log.log(level, "job %s failed (%s): %s", job.id, result.state, error.type)
    else:
        log.debug("job %s acked", job.id)
