"""How a client waits before it tries the broker again, and what is worth a retry.

A lost connection is tried again after ``backoff_s(attempt)``: doubling
from ``RECONNECT_FIRST_S``, capped at ``RECONNECT_MAX_S``, with jitter so
that a fleet of clients does not reconnect in step. The cap matches the
broker's restart grace (``RESTART_GRACE_DEFAULT_MS``): after a broker
restart, a process known from before is declared dead unless it shows
life within that grace, so a client tries at least three times within
it and a live worker is back in time to keep its leases.

``PUSH_RETRYABLE`` are the errors after which a push is sent again, with
the same job ids, on a new connection: the connection was lost (or could
not be opened again yet), or the broker could not journal it and is
stopping (``journal_failed``: the push may or may not have been applied,
and a push of a known id adds nothing).
"""

import random

from leash.protocol.limits import RESTART_GRACE_DEFAULT_MS

from ._exceptions import (
    ConnectionLost,
    HandshakeTimeout,
    JournalFailed,
    TooManyConnections,
)

RECONNECT_FIRST_S = 0.05
RECONNECT_MAX_S = RESTART_GRACE_DEFAULT_MS / 3 / 1000  # 1 s: three tries within the grace
PUSH_RETRYABLE = (ConnectionLost, JournalFailed, TooManyConnections, HandshakeTimeout)


def backoff_s(attempt: int) -> float:
    """How long to wait before try ``attempt`` (0, 1, ...): doubling, capped, jittered."""
    capped_s = min(RECONNECT_MAX_S, RECONNECT_FIRST_S * 2.0 ** min(attempt, 30))
    return capped_s * random.uniform(0.5, 1.0)
