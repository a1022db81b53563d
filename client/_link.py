"""The worker's link to the broker: one live AsyncClient, reopened with backoff.

Every user of the link asks for ``await link.client()`` and, when a call on
it raises ``ConnectionLost`` or ``RequestTimeout``, hands it back with
``await link.lost(client, exc)``. Reconnecting happens once, under a lock,
however many tasks noticed the loss; the backoff is capped exponential with
jitter so that a fleet of workers does not reconnect in step, and capped at
a third of the broker's restart grace so that a live worker is back in time
to keep its leases after a broker restart (``leash.client._backoff``). A refused
handshake (a ``ServerError``) is not retried: it raises, except for the
refusals that say "later" (``too_many_connections``, ``handshake_timeout``)
and ``journal_failed``, which means the broker is stopping to be restarted.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ._backoff import backoff_s
from ._exceptions import (
    ConnectionLost,
    HandshakeTimeout,
    JournalFailed,
    RequestTimeout,
    TooManyConnections,
)
from .aio import AsyncClient

log = logging.getLogger("leash.worker")

RETRYABLE = (ConnectionLost, RequestTimeout, TooManyConnections, HandshakeTimeout, JournalFailed)


class Link:
    def __init__(self, connect: Callable[[], Awaitable[AsyncClient]]) -> None:
        self._connect = connect
        self._client: AsyncClient | None = None
        self._lock = asyncio.Lock()
        self.quiet = False  # True while shutting down: a loss is expected, not worth a warning

    @property
    def current(self) -> AsyncClient | None:
        """The connection if it is open, without connecting."""
        client = self._client
        return client if client is not None and not client.closed else None

    async def client(self) -> AsyncClient:
        """The live connection; (re)connect with backoff while there is none."""
        client = self.current
        if client is not None:  # the usual case: no lock to take
            return client
        async with self._lock:
            attempt = 0
            while (client := self.current) is None:
                try:
                    self._client = await self._connect()
                except RETRYABLE as exc:
                    delay_s = backoff_s(attempt)
                    attempt += 1
                    log.warning("cannot reach the broker (%s); retrying in %.2f s", exc, delay_s)
                    await asyncio.sleep(delay_s)
                    continue
                log.info("connected to %s", self._client.welcome.server)
            return client

    async def lost(self, client: AsyncClient, exc: Exception) -> None:
        """``client`` failed with ``exc``: close it; the next ``client()`` reconnects."""
        if self._client is client:
            self._client = None
            if not self.quiet:
                log.warning("connection lost (%s); reconnecting", exc)
        await client.close()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
