"""The records: every state change, as written to the journal.

Records are past tense and carry results (deadlines, retry times, tokens),
never "now": applying one means the same thing live and on replay. The
records of one command are applied and journalled together. Schema
evolution: new fields go last with defaults; bump the journal format
version on any other change.
"""

from typing import Literal

import msgspec
from msgspec import Raw, Struct

from leash.protocol.admin import ProcessControl
from leash.protocol.messages import ErrorInfo, LeaseRef

# A batch callback's kind: when it fires (batches/transitions.py)
CallbackKind = Literal["success", "complete", "death"]


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
    batch: str | None = None  # the batch the job is a member of


class JobExtras(Struct, array_like=True, gc=False):
    """What a job created by a push record carries besides its ``NewJob``:
    a uniqueness key (unique.py), an expiry (expiry.py), a time limit
    (timelimit.py). Beside the jobs,
    not in ``NewJob``, so that a record whose jobs carry none encodes as
    before them; the place for what later jobs carry too."""

    id: str
    unique_key: str | None = None  # a derived key already derived
    unique_for_ms: int = 0  # the key stays taken this long after the job succeeds
    expires_ms: int = 0  # not leased by then: removed (0: never)
    time_limit_ms: int = 0  # an attempt runs at most this long from its lease (0: no limit)
    concurrency_key: str | None = None  # its queue's per-key limit counts it (limits.py)
    keep_result_ms: int = 0  # its ack's result is kept this long (results.py)


class Grant(Struct, array_like=True):
    id: str
    token: int
    deadline_ms: int


class Failure(Struct, array_like=True):
    """An attempt that ended without success: its handler failed, or its
    lease was lost (it expired, or its owner died)."""

    id: str
    token: int
    error: ErrorInfo
    # None: the job is dead. at_ms: a lost lease, ready again at once (its
    # leases lost in a row count one more). Later: a failure its handler
    # reported, retrying until then (its leases lost in a row are 0 again).
    # Journals before format version 3 never hold at_ms here.
    retry_at_ms: int | None
    at_ms: int  # when the attempt ended (the death time if dead)


class Booted(Struct, tag="booted", tag_field="r"):
    epoch: int
    at_ms: int
    process_deadline_ms: int = 0  # every known process has until then to show life


class EpochRolled(Struct, tag="rolled", tag_field="r"):
    """The epoch's counter is near its end (state.COUNTER_ROLL_AT): the
    broker moves to a new epoch while it runs. Synced before any number of
    the new epoch leaves, as a boot is, so no token is ever issued twice."""

    epoch: int
    at_ms: int


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
    state: ProcessControl
    terminate_deadline_ms: int  # 0 unless terminate


class ProcessDied(Struct, tag="died", tag_field="r"):
    """The process is removed and every lease it held ends, in one step:
    failed (an attempt counts) or, after a terminate grace, released."""

    worker_id: str
    reason: str
    failures: list[Failure]
    released: list[LeaseRef]
    at_ms: int = 0  # when it died (0 in old journals)


class JobsPushed(Struct, tag="pushed", tag_field="r", omit_defaults=True):
    jobs: list[NewJob]
    counter_after: int  # broker-made ids used the epoch counter up to here
    extras: list[JobExtras] = []  # of the jobs that carry any, in push order


class Kept(Struct, array_like=True):
    """What a front end for another protocol keeps on a job it pushed."""

    extra: bytes | None  # stored and returned to that front end, never read by the core
    discard_dead: bool  # the job is forgotten, not kept dead, when its attempts run out


class KeptJobsPushed(Struct, tag="pushed_kept", tag_field="r", omit_defaults=True):
    """Jobs pushed as ``JobsPushed`` does, each with what its front end keeps
    on it (one ``Kept`` a job; the Faktory front end's pushes)."""

    jobs: list[NewJob]
    kept: list[Kept]
    counter_after: int
    extras: list[JobExtras] = []  # as in JobsPushed (Faktory Enterprise's unique and expiring jobs)


class JobsLeased(Struct, tag="leased", tag_field="r"):
    owner: str
    grants: list[Grant]
    counter_after: int
    at_ms: int = 0


class JobsAcked(Struct, tag="acked", tag_field="r"):
    leases: list[LeaseRef]
    at_ms: int = 0  # when: the finish time of a batch the acks finish


class AttemptsFailed(Struct, tag="failed", tag_field="r"):
    failures: list[Failure]


class LeaseExtended(Struct, tag="extended", tag_field="r"):
    id: str
    token: int
    deadline_ms: int


class LeaseReleased(Struct, tag="released", tag_field="r", omit_defaults=True):
    id: str
    token: int
    at_ms: int = 0  # the job waits in its queue from then (0 in old journals: since leased)
    run_at_ms: int = 0  # later than at_ms: scheduled until then (a snooze); 0: ready at once


class JobsPromoted(Struct, tag="promoted", tag_field="r"):
    ids: list[str]  # scheduled or retrying jobs whose time came, in order


class QueuePaused(Struct, tag="paused", tag_field="r"):
    queue: str


class QueueResumed(Struct, tag="resumed", tag_field="r"):
    queue: str


class DeadTrimmed(Struct, tag="trimmed", tag_field="r"):
    ids: list[str]  # dead jobs dropped for the dead set's count or age bound


class CallbackSpec(Struct, array_like=True):
    """The job a batch enqueues when a callback fires; its id is made from
    the batch's serial, its times from the firing time."""

    kind: CallbackKind
    queue: str
    type: str
    args: Raw
    priority: int
    max_attempts: int
    lease_ttl_ms: int
    retry_base_ms: int | None
    delay_ms: int | None  # counted from the firing time
    run_at_ms: int | None


class NewBatch(Struct, array_like=True):
    id: str
    serial: int  # unique for ever (like a token): callback job ids are made from it
    description: str
    parent: str | None
    callbacks: list[CallbackSpec]
    created_ms: int
    open_deadline_ms: int  # abandoned then unless committed
    expires_ms: int  # removed then unless it finishes first
    finished_retention_ms: int  # once finished or abandoned, kept this long
    committed: bool  # committed at once, after its jobs


class BatchOpened(Struct, tag="batch_opened", tag_field="r", omit_defaults=True):
    """A batch is created with its first jobs (members from this record on)."""

    batch: NewBatch
    jobs: list[NewJob]
    counter_after: int
    extras: list[JobExtras] = []  # as in JobsPushed


class BatchCommitted(Struct, tag="batch_committed", tag_field="r"):
    id: str
    at_ms: int


class BatchDeleted(Struct, tag="batch_deleted", tag_field="r"):
    """An operator removed the batch and all its bookkeeping; its live
    member jobs stay as ordinary jobs."""

    id: str
    at_ms: int


class BatchesAbandoned(Struct, tag="batches_abandoned", tag_field="r"):
    ids: list[str]  # open batches whose open deadline passed, ancestors first
    at_ms: int


class BatchesExpired(Struct, tag="batches_expired", tag_field="r"):
    ids: list[str]  # batches past their retention, ancestors first
    at_ms: int


class JobDeleted(Struct, tag="job_deleted", tag_field="r"):
    id: str
    at_ms: int


class JobKilled(Struct, tag="job_killed", tag_field="r"):
    id: str
    error: ErrorInfo  # becomes the job's last error
    at_ms: int


class JobRequeued(Struct, tag="job_requeued", tag_field="r"):
    id: str  # a dead, retrying or scheduled job, ready now
    at_ms: int


class JobsExpired(Struct, tag="expired", tag_field="r"):
    """Waiting jobs whose expiry passed before any lease: removed (expiry.py)."""

    ids: list[str]
    at_ms: int


class UniqueWindowsEnded(Struct, tag="unique_ended", tag_field="r"):
    """Uniqueness keys whose window after their job's success passed: free."""

    keys: list[str]
    at_ms: int


class ProgressReported(Struct, tag="progress", tag_field="r"):
    """A running job's handler said how far it is (progress.py); its lease
    is extended to ``deadline_ms`` as by ``LeaseExtended``."""

    id: str
    token: int
    deadline_ms: int
    percent: int
    message: str
    at_ms: int


class QueueLimitsSet(Struct, tag="limits", tag_field="r", omit_defaults=True):
    """A queue's concurrency and rate limits from now on (limits.py); 0: none.
    Replaces every limit the queue had."""

    queue: str
    concurrency: int = 0  # jobs of the queue leased at once
    per_key: int = 0  # jobs of one concurrency key of the queue leased at once
    rate: int = 0  # jobs the queue starts (leases) in any rate_interval_ms
    rate_interval_ms: int = 0


class ScheduleSpec(Struct, array_like=True, omit_defaults=True):
    """A schedule as registered (cron.py): when it ticks and the job each
    tick pushes. ``cron`` with ``tz``, or ``every_ms``."""

    name: str
    cron: str  # "": an interval schedule
    tz: str  # the IANA zone the cron expression is read in
    every_ms: int  # 0: a cron schedule
    missed: str  # "skip" or "last": the ticks that came while the broker was down
    queue: str
    type: str
    args: Raw
    priority: int
    max_attempts: int
    lease_ttl_ms: int
    retry_base_ms: int | None
    from_config: bool = False  # made from the --config file's [schedules.NAME] table


class ScheduleAdded(Struct, tag="schedule_added", tag_field="r"):
    """A schedule registered, or one of that name replaced (its fires kept)."""

    schedule: ScheduleSpec
    next_ms: int  # its first tick (0: none ever)
    at_ms: int


class ScheduleRemoved(Struct, tag="schedule_removed", tag_field="r"):
    name: str
    at_ms: int


class SchedulePaused(Struct, tag="schedule_paused", tag_field="r"):
    name: str
    at_ms: int


class ScheduleResumed(Struct, tag="schedule_resumed", tag_field="r"):
    """A paused schedule ticks again from ``next_ms``: the ticks while it
    was paused are skipped."""

    name: str
    next_ms: int
    at_ms: int


class ScheduleFired(Struct, tag="schedule_fired", tag_field="r"):
    """One tick of a schedule: its job pushed (``job``; None: the ticks
    missed while the broker was down are skipped, the last being
    ``tick_ms``) and its next tick set, in one record, so no crash can
    separate them and no tick fires twice (cron.py)."""

    name: str
    tick_ms: int
    next_ms: int  # 0: none ever
    job: NewJob | None
    at_ms: int


class HistoryTrimmed(Struct, tag="history_trimmed", tag_field="r"):
    """The oldest entries of the finished-job history dropped, for its count
    or age bound (history.py)."""

    count: int
    at_ms: int


class ResultsDropped(Struct, tag="results_dropped", tag_field="r"):
    """Kept results dropped: their time passed, or the results kept passed
    their bound in bytes (those nearest their end first: results.py)."""

    ids: list[str]
    at_ms: int


class ResultsAcked(Struct, tag="acked_results", tag_field="r"):
    """Jobs acked, as ``JobsAcked``, each with the result it keeps (results.py)."""

    leases: list[LeaseRef]
    results: list[bytes]  # one a lease: the value, msgpack-encoded
    at_ms: int


Record = (
    Booted
    | EpochRolled
    | JobsPushed
    | KeptJobsPushed
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
    | BatchOpened
    | BatchCommitted
    | BatchDeleted
    | BatchesAbandoned
    | BatchesExpired
    | JobDeleted
    | JobKilled
    | JobRequeued
    | UniqueWindowsEnded
    | JobsExpired
    | ProgressReported
    | QueueLimitsSet
    | ScheduleAdded
    | ScheduleRemoved
    | SchedulePaused
    | ScheduleResumed
    | ScheduleFired
    | HistoryTrimmed
    | ResultsDropped
    | ResultsAcked
)

record_encoder = msgspec.msgpack.Encoder()
record_decoder = msgspec.msgpack.Decoder(Record)
frame_decoder = msgspec.msgpack.Decoder(list[Record])  # a journal frame's records (format v2)
