"""The admin protocol: what operators ask of the broker over its admin socket.

Same framing and body rules as the worker protocol (protocol.messages): a
4-byte length, then a msgpack map tagged by ``op`` (requests) or ``t``
(replies), with a ``rid`` the reply echoes. The admin socket is a Unix
socket beside the data; its peer's credentials are its authentication, so
there is no ``hello``. The TCP port refuses every op named here with
``admin_only``. Listings are paged with an opaque ``cursor`` and bounded in
how much of the state one request may scan, so a view of a million jobs
never stalls the broker.
"""

from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Raw, Struct

from leash.protocol import limits as L
from leash.protocol.messages import (
    BatchId,
    BatchInfo,
    BatchView,
    Error,
    GetBatchStatus,
    GetJob,
    JobId,
    JobInfo,
    JobSpec,
    JobsRun,
    JobView,
    Ok,
    QueueName,
    RequestId,
    WorkerId,
)

ListKind = Literal["ready", "leased", "scheduled", "retrying", "dead"]
KillKind = Literal["ready", "leased", "scheduled", "retrying"]
Text = Annotated[str, Meta(max_length=L.NAME_MAX_CHARS * 2)]
Cursor = Annotated[str, Meta(max_length=512)]
PageLimit = Annotated[int, Meta(ge=1, le=L.ADMIN_PAGE_MAX)]
BulkLimit = Annotated[int, Meta(ge=1, le=L.BULK_MAX)]
AgeMs = Annotated[int, Meta(ge=0, le=L.TIME_MAX_MS)]


class JobFilter(Struct, omit_defaults=True, frozen=True, forbid_unknown_fields=True):
    """Which jobs a listing or a bulk operation takes: all that match every
    field given. ``error`` matches a substring of the last error's type or
    message; a job's age is the time since it was created."""

    queue: QueueName | None = None
    type: Annotated[str, Meta(max_length=L.TYPE_MAX_CHARS)] | None = None
    error: Text | None = None
    min_age_ms: AgeMs | None = None
    max_age_ms: AgeMs | None = None


# --- requests --------------------------------------------------------------


class Pause(Struct, tag="pause", tag_field="op"):
    """Stop handing out a queue's jobs. ``create`` false: refuse a queue that
    does not exist (no job in any state, not paused) with ``not_found``."""

    rid: RequestId
    queue: QueueName
    create: bool = True


class Resume(Struct, tag="resume", tag_field="op"):
    rid: RequestId
    queue: QueueName


ProcessControl = Literal["ok", "quiet", "terminate"]


class Control(Struct, tag="control", tag_field="op"):
    """Ask a worker process to stop fetching (quiet), to resume (ok), or to
    exit (terminate, which is final)."""

    rid: RequestId
    worker_id: WorkerId
    state: ProcessControl


class ListProcesses(Struct, tag="processes", tag_field="op"):
    rid: RequestId


class GetBusy(Struct, tag="busy", tag_field="op"):
    rid: RequestId


class GetStats(Struct, tag="stats", tag_field="op"):
    rid: RequestId


class ListQueues(Struct, tag="queues", tag_field="op"):
    rid: RequestId


class ListJobs(Struct, tag="list_jobs", tag_field="op", omit_defaults=True):
    """A page of the jobs in one state: ready in fetch order (queue by
    queue), leased by deadline, scheduled and retrying in the order they
    will run, dead newest first."""

    rid: RequestId
    kind: ListKind
    filter: JobFilter = JobFilter()
    cursor: Cursor = ""  # "" for the first page; else ``next`` of the page before
    limit: PageLimit = L.ADMIN_PAGE_DEFAULT


class DeleteBatch(Struct, tag="delete_batch", tag_field="op"):
    rid: RequestId
    id: BatchId


class DeleteJob(Struct, tag="delete_job", tag_field="op"):
    rid: RequestId
    id: JobId


class KillJob(Struct, tag="kill_job", tag_field="op"):
    rid: RequestId
    id: JobId


class RequeueJob(Struct, tag="requeue_job", tag_field="op"):
    rid: RequestId
    id: JobId


class Fsck(Struct, tag="fsck", tag_field="op"):
    rid: RequestId


class RequeueJobs(Struct, tag="requeue_jobs", tag_field="op", omit_defaults=True):
    """Requeue every retrying or dead job that matches the filter, up to
    ``limit`` of them; ``next`` in the reply goes on from where it stopped."""

    rid: RequestId
    kind: Literal["retrying", "dead"]
    filter: JobFilter = JobFilter()
    cursor: Cursor = ""
    limit: Annotated[int, Meta(ge=1, le=L.REQUEUE_MANY_MAX)] = L.REQUEUE_MANY_MAX


class DeleteJobs(Struct, tag="delete_jobs", tag_field="op", omit_defaults=True):
    """Delete every job of one state that matches the filter, up to
    ``limit`` of them (a purge: the ready jobs of one queue); ``next`` in
    the reply goes on from where it stopped."""

    rid: RequestId
    kind: ListKind
    filter: JobFilter = JobFilter()
    cursor: Cursor = ""
    limit: BulkLimit = L.BULK_MAX


class KillJobs(Struct, tag="kill_jobs", tag_field="op", omit_defaults=True):
    """Move every job of one state that matches the filter to the dead set,
    up to ``limit`` of them."""

    rid: RequestId
    kind: KillKind
    filter: JobFilter = JobFilter()
    cursor: Cursor = ""
    limit: BulkLimit = L.BULK_MAX


class GetHistory(Struct, tag="history", tag_field="op", omit_defaults=True):
    """The totals of the last ``seconds`` seconds, one slot a second."""

    rid: RequestId
    seconds: Annotated[int, Meta(ge=1, le=L.HISTORY_MAX_S)] = L.HISTORY_MAX_S


class Compact(Struct, tag="compact", tag_field="op"):
    """Seal the journal's open segment and snapshot through it now."""

    rid: RequestId


BatchState = Literal["open", "committed", "finished", "abandoned"]


class ListBatches(Struct, tag="batches", tag_field="op", omit_defaults=True):
    """A page of batches, newest first, optionally only those in one state."""

    rid: RequestId
    state: BatchState | None = None
    cursor: Cursor = ""
    limit: PageLimit = L.ADMIN_PAGE_DEFAULT


ConcurrencyLimit = Annotated[int, Meta(ge=0, le=L.CONCURRENCY_LIMIT_MAX)]


class SetQueueLimits(Struct, tag="set_queue_limits", tag_field="op", omit_defaults=True):
    """Set a queue's concurrency and rate limits, replacing the ones it had
    (0: no such limit; every field 0: none at all). ``concurrency``: jobs of
    the queue leased at once; ``per_key``: at once per concurrency key;
    ``rate`` jobs started per ``rate_interval_ms`` (a sliding window). A
    limit lowered below the current use takes no lease away."""

    rid: RequestId
    queue: QueueName
    concurrency: ConcurrencyLimit = 0
    per_key: ConcurrencyLimit = 0
    rate: Annotated[int, Meta(ge=0, le=L.RATE_LIMIT_MAX)] = 0
    rate_interval_ms: Annotated[int, Meta(ge=0, le=L.RATE_INTERVAL_MAX_MS)] = 0

    def __post_init__(self) -> None:
        if bool(self.rate) != bool(self.rate_interval_ms):
            raise ValueError("a rate limit needs both rate and rate_interval_ms")


ScheduleName = Annotated[
    str,
    Meta(min_length=1, max_length=L.SCHEDULE_NAME_MAX_CHARS, pattern=L.SCHEDULE_NAME_PATTERN),
]
CronExpression = Annotated[str, Meta(min_length=1, max_length=L.CRON_EXPRESSION_MAX_CHARS)]
TimeZoneName = Annotated[str, Meta(min_length=1, max_length=L.TIME_ZONE_MAX_CHARS)]
IntervalMs = Annotated[int, Meta(ge=L.SCHEDULE_INTERVAL_MIN_MS, le=L.SCHEDULE_INTERVAL_MAX_MS)]
MissedPolicy = Literal["skip", "last"]


class AddSchedule(Struct, tag="add_schedule", tag_field="op", omit_defaults=True):
    """Register a schedule, or replace the one of that name (its fires and
    pause are kept; an unchanged one changes nothing). Give ``cron`` (read
    in ``tz``) or ``every_ms``. ``job``: the job each tick pushes; its id,
    batch, run_at_ms/delay_ms, uniqueness and expiry are not taken."""

    rid: RequestId
    name: ScheduleName
    job: JobSpec
    cron: CronExpression | None = None
    tz: TimeZoneName = "UTC"
    every_ms: IntervalMs | None = None
    missed: MissedPolicy = "skip"
    from_config: bool = False  # the broker's own, made from its --config file at boot


class RemoveSchedule(Struct, tag="remove_schedule", tag_field="op"):
    rid: RequestId
    name: ScheduleName


class PauseSchedule(Struct, tag="pause_schedule", tag_field="op"):
    """Stop a schedule's ticks; ``resume_schedule`` starts them again from
    the next one after the resume (the ticks in between are skipped)."""

    rid: RequestId
    name: ScheduleName


class ResumeSchedule(Struct, tag="resume_schedule", tag_field="op"):
    rid: RequestId
    name: ScheduleName


class ListSchedules(Struct, tag="schedules", tag_field="op"):
    rid: RequestId


AdminRequest = (
    GetStats
    | ListQueues
    | ListJobs
    | GetBusy
    | ListProcesses
    | GetJob
    | Pause
    | Resume
    | Control
    | DeleteJob
    | KillJob
    | RequeueJob
    | RequeueJobs
    | DeleteJobs
    | KillJobs
    | GetHistory
    | ListBatches
    | GetBatchStatus
    | DeleteBatch
    | Fsck
    | Compact
    | SetQueueLimits
    | AddSchedule
    | RemoveSchedule
    | PauseSchedule
    | ResumeSchedule
    | ListSchedules
)
ADMIN_OPS = frozenset(t.__struct_config__.tag for t in AdminRequest.__args__)


# --- replies ---------------------------------------------------------------


class ProcessView(Struct, omit_defaults=True):
    worker_id: str
    state: str  # "ok", "quiet" or "terminate"
    hostname: str
    pid: int
    labels: list[str]
    concurrency: int
    client: str
    registered_ms: int
    last_seen_ms: int  # the last recorded sign of life
    beat_deadline_ms: int  # dead then without another sign of life
    in_flight: int
    grace_deadline_ms: int | None = None  # all connections gone: dead then unless it comes back
    terminate_deadline_ms: int | None = None
    connections: int = 0  # open connections (in admin views)
    ran: dict[str, JobsRun] | None = None  # by job type, as its last beat told (not journalled)


class Processes(Struct, tag="processes", tag_field="t"):
    rid: RequestId
    processes: list[ProcessView]


class BusyJob(Struct):
    id: str
    type: str
    queue: str
    attempt: int  # 1-based, as delivered
    leased_ms: int
    deadline_ms: int
    time_limit_ms: int | None = None  # the job's time limit, if it has one
    progress: int | None = None  # the percent its handler last reported, if any
    progress_message: str | None = None


class BusyProcess(Struct):
    worker_id: str
    jobs: list[BusyJob]


class Busy(Struct, tag="busy", tag_field="t"):
    rid: RequestId
    processes: list[BusyProcess]


class JournalStats(Struct):
    bytes: int  # on disk: segments and snapshots
    segments: int
    snapshots: int
    last_seq: int
    fsyncs: int
    fsync_p50_ms: float
    fsync_p99_ms: float
    commits: int  # group commits (one write each)
    commit_mean_records: float
    replay_s: float  # the replay at start-up
    replay_records: int
    disk_free_bytes: int = 0  # about what is free on the data directory's file system now
    disk_low: bool = False  # near --disk-low-bytes: pushes are refused


class ExpiredJob(Struct):
    """A job removed unstarted at its expiry (kept in memory: a short history)."""

    id: str
    queue: str
    type: str
    created_ms: int
    expires_ms: int


class Stats(Struct, tag="stats", tag_field="t"):
    rid: RequestId
    version: str
    started_ms: int
    uptime_ms: int
    epoch: int
    jobs: dict[str, int]  # by job state
    totals: dict[str, int]  # since start: pushed, acked, failed, dead, expired, ...
    connections: int  # open TCP connections
    processes: int
    queues: int
    journal: JournalStats
    limits: dict[str, int]
    fsync: str = ""  # the policy: "always", "interval:MS" or "never"
    busy_processes: int = 0  # processes holding a lease
    expired_jobs: list[ExpiredJob] = []  # the last removed at their expiry, oldest first
    schedules: int = 0  # registered (the schedules view lists them)
    finished_jobs: int = 0  # in the finished-job history
    results_kept: int = 0  # job results kept for get_result
    result_bytes: int = 0  # their size
    held_fetches: int = 0  # long-poll fetches held for a job now: idle consumers


class QueueView(Struct):
    name: str
    ready: int
    scheduled: int  # scheduled and retrying
    in_flight: int
    dead: int
    paused: bool
    latency_ms: int  # age of the oldest ready job; 0 when none is ready
    in_per_s: float = 0.0  # pushed a second, over the last minute
    out_per_s: float = 0.0  # acked or dead a second, over the last minute
    concurrency_limit: int = 0  # jobs leased at once (0: no limit)
    per_key_limit: int = 0  # jobs of one concurrency key leased at once (0: no limit)
    rate_limit: int = 0  # jobs started per rate_interval_ms (0: no limit)
    rate_interval_ms: int = 0
    rate_used: int = 0  # jobs started in the rate window that ends now
    keys_leased: int = 0  # concurrency keys with a job leased now
    keys_saturated: int = 0  # of them, those at the per-key limit
    held_fetches: int = 0  # long-poll fetches held for a job of this queue: idle consumers


class Queues(Struct, tag="queues", tag_field="t"):
    rid: RequestId
    queues: list[QueueView]


class JobPage(Struct, tag="job_page", tag_field="t"):
    rid: RequestId
    jobs: list[JobView]
    next: str  # "" at the end; else the cursor of the next page
    scanned: int  # entries this request looked at


class FsckReport(Struct, tag="fsck", tag_field="t"):
    rid: RequestId
    problems: list[str]  # empty: the state is consistent
    more: bool  # more problems than listed
    jobs: int  # how many jobs were checked
    batches: int  # how many batches were checked


class Requeued(Struct, tag="requeued", tag_field="t"):
    rid: RequestId
    ids: list[str]  # the jobs requeued, in listing order
    next: str  # "" when every match was taken; else the cursor to go on from
    scanned: int


class JobsChanged(Struct, tag="jobs_changed", tag_field="t"):
    """The reply to delete_jobs and kill_jobs."""

    rid: RequestId
    ids: list[str]  # the jobs changed, in listing order
    next: str  # "" when every match was taken; else the cursor to go on from
    scanned: int


class History(Struct, tag="history", tag_field="t"):
    """Totals a second, oldest first; the last slot is the second that
    ends at ``end_ms`` (the current one, still counting)."""

    rid: RequestId
    end_ms: int
    pushed: list[int]
    acked: list[int]
    failed: list[int]  # failed attempts (expired and lost ones too)
    dead: list[int]


class Compacted(Struct, tag="compacted", tag_field="t"):
    rid: RequestId
    through_seq: int  # the newest snapshot covers the journal up to here
    journal_bytes: int  # on disk afterwards: segments and snapshots


class BatchPage(Struct, tag="batch_page", tag_field="t"):
    rid: RequestId
    batches: list[BatchView]  # without their member lists
    next: str
    scanned: int


class ScheduleView(Struct, omit_defaults=True):
    name: str
    queue: str
    type: str
    args: Raw
    missed: str  # "skip" or "last"
    next_ms: int  # its next tick; 0: none (paused, or no tick left)
    added_ms: int
    cron: str | None = None
    tz: str | None = None
    every_ms: int | None = None
    paused: bool = False
    from_config: bool = False
    last_tick_ms: int | None = None  # the last tick that pushed its job
    fires: int = 0  # ticks that pushed their job
    skips: int = 0  # times the ticks missed while the broker was down were skipped


class Schedules(Struct, tag="schedules", tag_field="t"):
    rid: RequestId
    schedules: list[ScheduleView]  # by name


AdminReply = (
    Stats
    | Queues
    | JobPage
    | Busy
    | Processes
    | JobInfo
    | Ok
    | Error
    | FsckReport
    | Requeued
    | JobsChanged
    | History
    | BatchPage
    | BatchInfo
    | Compacted
    | Schedules
)

admin_request_decoder = msgspec.msgpack.Decoder(AdminRequest)
admin_reply_decoder = msgspec.msgpack.Decoder(AdminReply)
