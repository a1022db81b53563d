"""What keeps a worker process and its leases alive at the broker.

Two loops, both on the worker's event loop and both independent of the
handlers, which run in threads:

- ``Heartbeat.run`` sends ``beat`` every ``heartbeat_ms`` the broker's
  welcome names, with the jobs the worker ran so far by type (for the
  broker's processes views), and hands each reply's desired state (``ok``, ``quiet``,
  ``terminate``) to the worker. It beats from the start to the very end of a
  run, draining included: a process that stops beating is declared dead after
  ``process_ttl_ms`` and every lease it holds fails. When the connection
  drops it beats at once, which reconnects (with backoff): after a broker
  restart a worker must be back within the restart grace, however idle it
  is, or its leases are lost.
- ``keep_extended`` extends one job's lease every half of its
  ``lease_ttl_ms`` while its handler runs, so a long job keeps its lease.
  The worker starts it once the job's lease has run for half its ttl (one
  timer for all the jobs until then: most jobs end first, and a task or a
  timer per job would cost more).

Both go through the worker's ``Link``: a lost connection is handed back to
it, the next call reconnects, and the loop goes on on the new connection.
Every failure is handled here; neither loop raises, except when cancelled.
"""

import asyncio
import logging
from collections.abc import Callable, Mapping

from leash.protocol import limits
from leash.protocol.messages import JobsRun, Welcome

from ._backoff import backoff_s
from ._exceptions import (
    ConnectionLost,
    NotFound,
    RequestTimeout,
    ServerError,
    StaleLease,
    UnknownOp,
)
from ._link import Link
from ._types import Job
from .aio import AsyncClient

log = logging.getLogger("leash.worker")

HEARTBEAT_FALLBACK_MS = limits.HEARTBEAT_DEFAULT_MS  # when the welcome names no usable period


def heartbeat_period_s(welcome: Welcome) -> float:
    """How often to beat on a connection with this welcome."""
    period_ms = welcome.heartbeat_ms if welcome.heartbeat_ms > 0 else HEARTBEAT_FALLBACK_MS
    return period_ms / 1000


def lease_lost_message(job: Job) -> str:
    """The warning for a lease the broker no longer counts as this worker's."""
    return (
        f"lease lost for job {job.id} (type {job.type}): the broker declared this worker "
        "dead or the lease expired; another worker may run it"
    )


class Heartbeat:
    """Beats on ``link`` until cancelled, each beat telling ``ran()``;
    ``on_state`` gets each reply's state."""

    def __init__(
        self,
        link: Link,
        on_state: Callable[[str], None],
        ran: Callable[[], Mapping[str, JobsRun] | None] = lambda: None,
    ) -> None:
        self._link = link
        self._on_state = on_state
        self._ran = ran

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            client = await self._connected()
            if client is None:
                return
            started_s = loop.time()
            try:
                state = await client.beat(self._ran())
            except (ConnectionLost, RequestTimeout) as exc:
                await self._link.lost(client, exc)
                await asyncio.sleep(backoff_s(failures))  # a broker that drops us at once
                failures += 1
                continue
            except UnknownOp:
                log.warning("the broker does not know beat: this worker sends no heartbeats")
                return
            except ServerError as exc:
                log.warning("beat refused: %s", exc)
            else:
                failures = 0
                self._on_state(state)
            next_s = started_s + heartbeat_period_s(client.welcome)
            await client._until_lost(max(0.0, next_s - loop.time()))

    async def _connected(self) -> AsyncClient | None:
        try:
            return await self._link.client()
        except ServerError as exc:  # a refused handshake; the fetch loop stops the worker
            log.error("heartbeat stopped: %s", exc)
            return None


async def keep_extended(link: Link, job: Job, first_delay_s: float | None = None) -> None:
    """Extend ``job``'s lease every half ``lease_ttl_ms`` until cancelled or
    refused; the first time after ``first_delay_s`` (default: half the ttl)."""
    if job.lease_ttl_ms <= 0:
        return
    period_s = job.lease_ttl_ms / 2 / 1000
    delay_s, failures = period_s if first_delay_s is None else first_delay_s, 0
    while True:
        await asyncio.sleep(delay_s)
        client: AsyncClient | None = None
        try:
            client = await link.client()
            await client.extend(job)
        except (StaleLease, NotFound) as exc:
            log.warning("%s; no longer extending it (%s)", lease_lost_message(job), exc.code)
            return
        except (ConnectionLost, RequestTimeout) as exc:
            if client is not None:
                await link.lost(client, exc)
            delay_s, failures = backoff_s(failures), failures + 1  # retry soon: the clock runs
            continue
        except ServerError as exc:
            log.error("could not extend job %s, no longer extending it: %s", job.id, exc)
            return
        delay_s, failures = period_s, 0
