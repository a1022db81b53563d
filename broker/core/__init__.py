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
from leash.broker.core.faktory import Outcome as FaktoryOutcome
from leash.broker.core.faktory import decide_faktory
from leash.broker.core.faktory_mutate import Round, flush_round, mutate_round
from leash.broker.core.growth import grows_state
from leash.broker.core.limits import next_start_ms
from leash.broker.core.processes import detach, hold_ms, info_of, touch
from leash.broker.core.records import ProcessInfo, Record, record_decoder, record_encoder
from leash.broker.core.replay import Replay
from leash.broker.core.state import State, canonical
from leash.broker.core.tally import TOTALS, duplicates, enqueued, expired_jobs, tally
from leash.broker.core.tick import next_due_ms, tick
from leash.broker.core.views import list_jobs, queue_views

__all__ = [
    "TOTALS",
    "CoreConfig",
    "FaktoryOutcome",
    "Outcome",
    "ProcessInfo",
    "Record",
    "Rejected",
    "Replay",
    "Round",
    "State",
    "apply",
    "boot",
    "canonical",
    "check_invariants",
    "decide",
    "decide_admin",
    "decide_faktory",
    "detach",
    "duplicates",
    "enqueued",
    "expired_jobs",
    "flush_round",
    "grows_state",
    "has_ready",
    "hold_ms",
    "info_of",
    "job_view",
    "list_jobs",
    "mutate_round",
    "next_due_ms",
    "next_start_ms",
    "queue_views",
    "record_decoder",
    "record_encoder",
    "roll_due",
    "tally",
    "tick",
    "touch",
]
