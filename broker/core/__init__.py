"""The pure state machine of the broker: no asyncio, no clock, no files, no
randomness. ``decide`` turns a request into a reply and records, ``apply``
is the only code that changes state (live and on replay), ``tick`` returns
the records that the passage of time implies."""

from leash.broker.core.admin import decide_admin
from leash.broker.core.apply import apply
from leash.broker.core.checks import check_invariants
from leash.broker.core.common import Rejected
from leash.broker.core.config import CoreConfig
from leash.broker.core.decide import Outcome, boot, decide, has_ready, job_view, roll_due
from leash.broker.core.growth import grows_state
from leash.broker.core.processes import detach, hold_ms, info_of, touch
from leash.broker.core.records import Record, record_decoder, record_encoder
from leash.broker.core.replay import Replay
from leash.broker.core.state import State, canonical
from leash.broker.core.tally import TOTALS, enqueued, tally
from leash.broker.core.tick import next_due_ms, tick
from leash.broker.core.views import list_jobs, queue_views

__all__ = [
    "TOTALS",
    "CoreConfig",
    "Outcome",
    "Record",
    "Rejected",
    "Replay",
    "State",
    "apply",
    "boot",
    "canonical",
    "check_invariants",
    "decide",
    "decide_admin",
    "detach",
    "enqueued",
    "grows_state",
    "has_ready",
    "hold_ms",
    "info_of",
    "job_view",
    "list_jobs",
    "next_due_ms",
    "queue_views",
    "record_decoder",
    "record_encoder",
    "roll_due",
    "tally",
    "tick",
    "touch",
]
