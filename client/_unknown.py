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
  to its queue without counting an attempt, for another worker, after
  ``RELEASE_AFTER_MS`` (a release with a delay, as ``Snooze`` does), so
  that no worker leases it again more than once a second and one that
  knows the type has the time to take it. A job no worker knows goes round for ever
  (a release is a journal record): use it while a deploy rolls, not as a
  way to route jobs.

``outcome`` is called in a slot's thread instead of a handler; the worker
settles what it returns like any handler's outcome (a ``fail`` with
``dead``, or a ``release`` with a delay), sent again on a new connection
after a lost one.
"""

from ._control import Failure, Snoozed
from ._handlers import unknown_type_error
from ._types import Job

POLICIES = ("dead", "release")
RELEASE_AFTER_MS = 1_000  # how long a released job waits before it is ready again ("release")


def checked_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"unknown must be one of {', '.join(POLICIES)}, not {policy!r}")
    return policy


def outcome(job: Job, policy: str, known: list[str]) -> Failure | Snoozed:
    """What becomes of a job no handler takes, by the worker's ``unknown`` policy."""
    if policy == "release":
        return Snoozed(RELEASE_AFTER_MS)
    return Failure(unknown_type_error(job, known), dead=True)
