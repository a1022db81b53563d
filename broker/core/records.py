"""The records: every state change, as written to the journal.

Records are past tense and carry results (deadlines, retry times, tokens),
never "now": applying one means the same thing live and on replay. The
records of one command are applied and journalled together. Schema
evolution: new fields go last with defaults; bump the journal format
version on any other change.
"""

import msgspec
from msgspec import Raw, Struct

from protocol.messages import ErrorInfo, LeaseRef


class NewJob(Struct, array_like=True, gc=False):
    id: str
    queue: str
    type: str
    args: Raw
    priority: int
    max_attempts: int
    lease_ttl_ms: int
    retry_base_ms: int | None
    created_ms: int
    run_at_ms: int | None  # None: ready at once


class Grant(Struct, array_like=True):
    id: str
    token: int
    deadline_ms: int


class Failure(Struct, array_like=True):
    id: str
    token: int
    error: ErrorInfo
    retry_at_ms: int | None  # None: the job is dead
    at_ms: int  # when the attempt ended (the death time if dead)


class Booted(Struct, tag="booted", tag_field="r"):
    epoch: int
    at_ms: int
    process_deadline_ms: int = 0  # every known process has until then to show life


class ProcessInfo(Struct, array_like=True):
    hostname: str
    pid: int
    labels: list[str]
    concurrency: int
    client: str


class ProcessSeen(Struct, tag="seen", tag_field="r"):
    """A process registered, came back, or showed life: its beat deadline
    moves out and it is attached again. Registers it if it was unknown."""

    worker_id: str
    info: ProcessInfo | None  # None: a known process beat; its identity is unchanged
    at_ms: int
    beat_deadline_ms: int


class ProcessDetached(Struct, tag="detached", tag_field="r"):
    """The process's last connection closed; it is dead at the deadline
    unless it connects again."""

    worker_id: str
    grace_deadline_ms: int


class ProcessControlled(Struct, tag="controlled", tag_field="r"):
    worker_id: str
    state: str  # "ok", "quiet" or "terminate"
    terminate_deadline_ms: int  # 0 unless terminate


class ProcessDied(Struct, tag="died", tag_field="r"):
    """The process is removed and every lease it held ends, in one step:
    failed (an attempt counts) or, after a terminate grace, released."""

    worker_id: str
    reason: str
    failures: list[Failure]
    released: list[LeaseRef]
    at_ms: int = 0  # when it died (0 in old journals)


class JobsPushed(Struct, tag="pushed", tag_field="r"):
    jobs: list[NewJob]
    counter_after: int  # broker-made ids used the epoch counter up to here


class JobsLeased(Struct, tag="leased", tag_field="r"):
    owner: str
    grants: list[Grant]
    counter_after: int
    at_ms: int = 0


class JobsAcked(Struct, tag="acked", tag_field="r"):
    leases: list[LeaseRef]


class AttemptsFailed(Struct, tag="failed", tag_field="r"):
    failures: list[Failure]


class LeaseExtended(Struct, tag="extended", tag_field="r"):
    id: str
    token: int
    deadline_ms: int


class LeaseReleased(Struct, tag="released", tag_field="r"):
    id: str
    token: int
    at_ms: int = 0  # the job waits in its queue from then (0 in old journals: since leased)


class JobsPromoted(Struct, tag="promoted", tag_field="r"):
    ids: list[str]  # scheduled or retrying jobs whose time came, in order


class QueuePaused(Struct, tag="paused", tag_field="r"):
    queue: str


class QueueResumed(Struct, tag="resumed", tag_field="r"):
    queue: str


class DeadTrimmed(Struct, tag="trimmed", tag_field="r"):
    ids: list[str]  # dead jobs dropped for the dead set's count or age bound


Record = (
    Booted
    | JobsPushed
    | JobsLeased
    | JobsAcked
    | AttemptsFailed
    | LeaseExtended
    | LeaseReleased
    | JobsPromoted
    | QueuePaused
    | QueueResumed
    | DeadTrimmed
    | ProcessSeen
    | ProcessDetached
    | ProcessControlled
    | ProcessDied
)

record_encoder = msgspec.msgpack.Encoder()
record_decoder = msgspec.msgpack.Decoder(Record)
