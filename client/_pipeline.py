"""Pushes sent together: ``Client.pipeline()`` and ``AsyncClient.pipeline()``.

A producer that has many jobs to push one by one (each its own request,
refused or accepted on its own, unlike ``push_many``) queues them in a
pipeline: ``push`` returns a future at once and builds the request (with a
client-made id); the requests go out in chunks of ``CHUNK_REQUESTS`` (or
``CHUNK_BYTES``), one write a chunk, with at most ``CHUNKS_IN_FLIGHT``
chunks unanswered, so the replies waiting to be read stay few (the broker
stops reading a connection whose replies are not read). The end of the
``with`` block sends what is left and waits for every reply; it raises the
first error, after every future has its outcome. (``push`` of an async
pipeline cannot wait, so its chunks all go when the block ends.)

A push whose connection is lost is sent again, with its id, as ``push``
is (``leash.client._backoff``): a job is never created twice, and a future
that holds an id is a job the broker has journalled.
"""

import contextlib
from collections import deque
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Unpack

from ._backoff import PUSH_RETRYABLE
from ._calls import Call
from ._exceptions import ConnectionLost, LeashError
from ._types import JobOptions, Lease, spec_from_options

if TYPE_CHECKING:
    import asyncio

    from ._pipe import Slot
    from .aio import AsyncClient
    from .blocking import Client

CHUNK_REQUESTS = 128  # pushes a write at most
CHUNK_BYTES = 256 * 1024  # or this many bytes of requests
CHUNKS_IN_FLIGHT = 2  # a chunk waits for the replies of the one sent two before it

F = TypeVar("F")


class _Pushes(Generic[F]):
    """``push`` with the parameters of ``Client.push``; what it returns is
    the subclass's future."""

    _chunk_bytes = 0

    def push(
        self,
        type: str,
        args: Any = None,
        *,
        lease: Lease | None = None,
        **options: Unpack[JobOptions],
    ) -> F:
        """Queue a push (see ``Client.push``); its future holds the job's id."""
        spec = spec_from_options(type, args, options)
        return self._queue(self._core().push(spec, lease))

    def _core(self) -> Any:
        raise NotImplementedError

    def _queue(self, call: Call[str]) -> F:
        raise NotImplementedError

    def _chunk_full(self, unsent: list[Any], call: Call[str]) -> bool:
        self._chunk_bytes += len(call.frame)
        if len(unsent) >= CHUNK_REQUESTS or self._chunk_bytes >= CHUNK_BYTES:
            self._chunk_bytes = 0
            return True
        return False


class Pipeline(_Pushes["Future[str]"]):
    """A blocking client's pipeline; see ``Client.pipeline``."""

    def __init__(self, client: "Client") -> None:
        self._client = client
        self._unsent: list[tuple[Call[str], Future[str]]] = []
        self._sent: deque[tuple[list[tuple[Call[str], Future[str]]], Any, list[Slot]]] = deque()
        self._futures: list[Future[str]] = []

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is not None:  # what was not sent is not sent; what was is left to the broker
            for _call, future in self._unsent:
                future.cancel()
            return
        self._send()
        while self._sent:
            self._collect()
        _raise_first(self._futures)

    def _core(self) -> Any:
        return self._client._core

    def _queue(self, call: Call[str]) -> "Future[str]":
        future: Future[str] = Future()
        self._futures.append(future)
        self._unsent.append((call, future))
        if self._chunk_full(self._unsent, call):
            self._send()
        return future

    def _send(self) -> None:
        chunk, self._unsent = self._unsent, []
        if not chunk:
            return
        while len(self._sent) >= CHUNKS_IN_FLIGHT:
            self._collect()
        pipe, slots = None, []
        try:
            pipe = self._client._connection()
            slots = pipe.submit([call for call, _ in chunk])
        except PUSH_RETRYABLE:
            pass  # each push is sent again on its own when collected
        self._sent.append((chunk, pipe, slots))

    def _collect(self) -> None:
        chunk, pipe, slots = self._sent.popleft()
        client = self._client
        for index, (call, future) in enumerate(chunk):
            try:
                try:
                    if not slots:
                        raise ConnectionLost("the chunk could not be sent")
                    limit_s = client.timeout_s + call.wait_ms / 1000
                    value = pipe.wait(slots[index], call.rid, limit_s)
                except PUSH_RETRYABLE:
                    value = client._call_again(call)
            except LeashError as error:
                future.set_exception(error)
            else:
                future.set_result(value)


class AsyncPipeline(_Pushes["asyncio.Future[str]"]):
    """An async client's pipeline; see ``AsyncClient.pipeline``."""

    def __init__(self, client: "AsyncClient") -> None:
        self._client = client
        self._unsent: list[tuple[Call[str], asyncio.Future[str]]] = []
        self._sent: deque[
            tuple[list[tuple[Call[str], asyncio.Future[str]]], list[asyncio.Future[str]]]
        ] = deque()
        self._futures: list[asyncio.Future[str]] = []

    async def __aenter__(self) -> "AsyncPipeline":
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is not None:
            for _call, future in self._unsent:
                future.cancel()
            return
        await self._send()
        while self._sent:
            await self._collect()
        _raise_first(self._futures)

    def _core(self) -> Any:
        return self._client._core

    def _queue(self, call: Call[str]) -> "asyncio.Future[str]":
        import asyncio

        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._futures.append(future)
        self._unsent.append((call, future))
        return future

    async def _send(self) -> None:
        """At the end of the block (push() cannot await): every chunk."""
        unsent, self._unsent = self._unsent, []
        chunk: list[tuple[Call[str], asyncio.Future[str]]] = []
        for index, (call, future) in enumerate(unsent):
            chunk.append((call, future))
            if self._chunk_full(chunk, call) or index == len(unsent) - 1:
                await self._send_chunk(chunk)
                chunk = []

    async def _send_chunk(self, chunk: list[tuple[Call[str], "asyncio.Future[str]"]]) -> None:
        while len(self._sent) >= CHUNKS_IN_FLIGHT:
            await self._collect()
        replies: list[asyncio.Future[str]] = []
        with contextlib.suppress(*PUSH_RETRYABLE):  # each is sent again on its own when collected
            replies = await self._client._together([call for call, _ in chunk])
        self._sent.append((chunk, replies))

    async def _collect(self) -> None:
        chunk, replies = self._sent.popleft()
        client = self._client
        for index, (call, future) in enumerate(chunk):
            try:
                try:
                    if not replies:
                        raise ConnectionLost("the chunk could not be sent")
                    value = await replies[index]
                except PUSH_RETRYABLE:
                    value = await client._call_again(call)
            except LeashError as error:
                future.set_exception(error)
            else:
                future.set_result(value)


def _raise_first(futures: "list[Future[str]] | list[asyncio.Future[str]]") -> None:
    """Every future's error is looked at (an asyncio one would be logged as
    never retrieved otherwise); the first is raised."""
    errors = [f.exception() for f in futures if not f.cancelled()]
    first = next((error for error in errors if error is not None), None)
    if first is not None:
        raise first
