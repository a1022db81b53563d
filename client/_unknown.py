"""Jobs of a type that no handler of this worker knows.

A job whose type has no handler here used to fail like any other attempt,
and was retried with backoff for days (25 attempts over about three
weeks): noise in the retries, a worker that never learns the type, and a
producer's mistake (a typo, a job pushed before any worker knows it) seen
only when someone reads the retries. What the Worker does instead, by its
``unknown`` setting:

- ``"dead"`` (the default): the job goes to the dead set at once (``fail``
  with ``dead``), with an error that names its type and the types this
  worker knows. An operator sees it in ``leash dead`` and brings the jobs
  back (``leash requeue --dead --type T``) once a worker that knows the
  type runs. Why the default: releasing for others loops for ever when no
  worker knows the type, and a queue is the unit of routing in Leash: every
  worker of a queue should know every type pushed to it.
- ``"release"``: for a rolling deploy, where the workers that know a new
  type and the ones that do not yet share a queue. The job is given back
  to its queue without counting an attempt, for another worker; it is held
  ``RELEASE_AFTER_S`` first, in the slot it took, so that this worker
  leases it again at most once a second a slot and a worker that knows the
  type has the time to take it. A job no worker knows goes round for ever
  (a release is a journal record): use it while a deploy rolls, not as a
  way to route jobs.

``run`` is called in a slot's thread instead of a handler; ``takes`` and
``settle_soon`` on the loop, with the outcome it returned.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import TypeGuard

from leash.protocol.messages import ErrorInfo

from ._exceptions import NotFound, ServerError, StaleLease
from ._handlers import unknown_type_error
from ._keepalive import lease_lost_message
from ._link import Link
from ._settle import LINK_ERRORS
from ._types import Job

log = logging.getLogger("leash.worker")

POLICIES = ("dead", "release")
ERROR_TYPE = "leash.UnknownJobType"  # the type of unknown_type_error's errors
RELEASE_AFTER_S = 1.0  # how long a job is held before it is released ("release")
SEND_ATTEMPTS = 3  # connections a fail or release is tried on before the lease is left to expire


def checked_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"unknown must be one of {', '.join(POLICIES)}, not {policy!r}")
    return policy


class UnknownTypes:
    def __init__(self, policy: str, known: Callable[[], Iterable[str]]) -> None:
        self.policy = checked_policy(policy)
        self._known = known

    def run(self, job: Job) -> ErrorInfo:
        """In a slot's thread, for a job no handler takes: the error that says so."""
        if self.policy == "release":
            time.sleep(RELEASE_AFTER_S)
        return unknown_type_error(job, list(self._known()))

    @staticmethod
    def takes(error: ErrorInfo | None) -> TypeGuard[ErrorInfo]:
        """Whether a finished job's outcome is ``run``'s (settled here)."""
        return error is not None and error.type == ERROR_TYPE

    def settle_soon(
        self, link: Link, job: Job, error: ErrorInfo, tasks: set["asyncio.Task[None]"]
    ) -> None:
        """On the loop: ``settle`` in a task of ``tasks`` (the worker's, which
        a stop waits for)."""
        task = asyncio.get_running_loop().create_task(self.settle(link, job, error))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def settle(self, link: Link, job: Job, error: ErrorInfo) -> None:
        """On the loop: the job dead at once, or released, on the link's connection."""
        for _ in range(SEND_ATTEMPTS):
            client = await link.client()
            try:
                if self.policy == "release":
                    await client.release(job)
                    log.info("released job %s: %s", job.id, error.message)
                else:
                    await client.fail(job, error, dead=True)
                    log.warning("job %s is dead: %s", job.id, error.message)
                return
            except LINK_ERRORS as exc:
                await link.lost(client, exc)
            except (StaleLease, NotFound) as exc:
                log.warning("%s (%s refused: %s)", lease_lost_message(job), self.policy, exc.code)
                return
            except ServerError as exc:
                log.error("could not settle job %s of an unknown type: %s", job.id, exc)
                return
        log.error("job %s of an unknown type not settled: its lease will expire", job.id)
