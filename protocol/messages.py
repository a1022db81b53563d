"""Every request and reply on the wire, as msgspec Structs in tagged unions.

Requests are tagged by ``op``, replies by ``t``; every request carries a
request id ``rid`` that its reply echoes, so a connection can pipeline and a
long-poll fetch can be answered after later requests. Field bounds are
``Meta`` constraints, so decoding is validation: a body that decodes is in
bounds. Schema evolution: new fields go last with defaults; a field's type
never changes. Job arguments travel as ``msgspec.Raw``: the broker stores and
forwards the client's msgpack bytes without decoding them.
"""

import re
from typing import Annotated, Literal, TypeVar

import msgspec
from msgspec import Meta, Raw, Struct

from leash.protocol import limits as L
from leash.protocol.errors import ErrorCode
from leash.protocol.nesting import envelope, nested_deeper

RequestId = Annotated[int, Meta(ge=0, le=2**63 - 1)]
QueueName = Annotated[str, Meta(min_length=1, max_length=L.NAME_MAX_CHARS, pattern=L.NAME_PATTERN)]
JobType = Annotated[str, Meta(min_length=1, max_length=L.TYPE_MAX_CHARS)]
JobId = Annotated[str, Meta(min_length=1, max_length=L.JOB_ID_MAX_CHARS)]
ClientJobId = Annotated[
    str, Meta(min_length=1, max_length=L.JOB_ID_MAX_CHARS, pattern=L.CLIENT_ID_PATTERN)
]
WorkerId = Annotated[str, Meta(min_length=1, max_length=L.NAME_MAX_CHARS)]
Token = Annotated[int, Meta(ge=1, le=2**63 - 1)]
Priority = Annotated[int, Meta(ge=L.PRIORITY_MIN, le=L.PRIORITY_MAX)]
MaxAttempts = Annotated[int, Meta(ge=L.MAX_ATTEMPTS_MIN, le=L.MAX_ATTEMPTS_MAX)]
LeaseTtlMs = Annotated[int, Meta(ge=L.LEASE_TTL_MIN_MS, le=L.LEASE_TTL_MAX_MS)]
RetryBaseMs = Annotated[int, Meta(ge=L.RETRY_BASE_MIN_MS, le=L.RETRY_BASE_MAX_MS)]
TimeMs = Annotated[int, Meta(ge=0, le=L.TIME_MAX_MS)]
DelayMs = Annotated[int, Meta(ge=0, le=L.SCHEDULE_HORIZON_MS)]
UniqueKey = Annotated[str, Meta(min_length=1, max_length=L.UNIQUE_KEY_MAX_CHARS)]
UniqueForMs = Annotated[int, Meta(ge=0, le=L.UNIQUE_FOR_MAX_MS)]
TtlMs = Annotated[int, Meta(ge=1, le=L.SCHEDULE_HORIZON_MS)]
TimeLimitMs = Annotated[int, Meta(ge=L.TIME_LIMIT_MIN_MS, le=L.TIME_LIMIT_MAX_MS)]
Percent = Annotated[int, Meta(ge=0, le=100)]
ProgressMessage = Annotated[str, Meta(max_length=L.PROGRESS_MESSAGE_MAX_CHARS)]
ConcurrencyKey = Annotated[str, Meta(min_length=1, max_length=L.CONCURRENCY_KEY_MAX_CHARS)]
KeepResultMs = Annotated[int, Meta(ge=0, le=L.KEEP_RESULT_MAX_MS)]
BatchId = Annotated[str, Meta(min_length=1, max_length=L.BATCH_ID_MAX_CHARS)]
ClientBatchId = Annotated[
    str, Meta(min_length=1, max_length=L.BATCH_ID_MAX_CHARS, pattern=L.CLIENT_ID_PATTERN)
]
JobState = Literal["ready", "scheduled", "leased", "retrying", "dead"]

T = TypeVar("T")
EMPTY_ARGS = Raw(b"\x90")  # msgpack for an empty array


class JobSpec(Struct, omit_defaults=True, forbid_unknown_fields=False):
    """What a producer asks for. Unset optional fields take the defaults."""

    type: JobType
    queue: QueueName = "default"
    args: Raw = EMPTY_ARGS
    id: ClientJobId | None = None
    priority: Priority = L.PRIORITY_DEFAULT
    run_at_ms: TimeMs | None = None
    delay_ms: DelayMs | None = None
    max_attempts: MaxAttempts = L.MAX_ATTEMPTS_DEFAULT
    lease_ttl_ms: LeaseTtlMs = L.LEASE_TTL_DEFAULT_MS
    retry_base_ms: RetryBaseMs | None = None
    batch: BatchId | None = None  # the batch the job joins when it is created
    # Uniqueness: while a job with this key is waiting or running (and for
    # unique_for_ms after it succeeds), a push with the key creates nothing
    # and names that job. ``unique``: the key is derived from queue, type
    # and args (core/unique.py).
    unique_key: UniqueKey | None = None
    unique: bool = False
    unique_for_ms: UniqueForMs = 0
    # Expiry: a job not leased by then is never leased; it is removed
    # (core/expiry.py). Absolute (wall clock ms) or relative to the push.
    expires_at_ms: TimeMs | None = None
    ttl_ms: TtlMs | None = None
    # Time limit: one attempt runs at most this long from its lease; the
    # broker never extends the lease past it and fails the attempt with
    # TimeLimitExceeded when it passes (core/timelimit.py).
    time_limit_ms: TimeLimitMs | None = None
    # Concurrency: the queue's per-key limit counts the leased jobs of each
    # key apart (core/limits.py).
    concurrency_key: ConcurrencyKey | None = None
    # Results: the value the job's ack carries is kept this long after it
    # succeeds, for get_result (core/results.py); 0: not kept.
    keep_result_ms: KeepResultMs = 0

    def __post_init__(self) -> None:
        if self.run_at_ms is not None and self.delay_ms is not None:
            raise ValueError("give run_at_ms or delay_ms, not both")
        if self.unique and self.unique_key is not None:
            raise ValueError("give unique_key or unique, not both")
        if self.unique_for_ms and not (self.unique or self.unique_key is not None):
            raise ValueError("unique_for_ms needs unique_key or unique")
        if self.expires_at_ms is not None and self.ttl_ms is not None:
            raise ValueError("give expires_at_ms or ttl_ms, not both")


TIME_LIMIT_EXCEEDED = "TimeLimitExceeded"  # the error type of an attempt past its time limit


class ErrorInfo(Struct, omit_defaults=True, frozen=True):
    """Why an attempt failed, as the worker reports it."""

    type: Annotated[str, Meta(max_length=L.ERROR_TYPE_MAX_CHARS)] = ""
    message: Annotated[str, Meta(max_length=L.ERROR_MESSAGE_MAX_CHARS)] = ""
    backtrace: Annotated[str, Meta(max_length=L.ERROR_BACKTRACE_MAX_CHARS)] = ""


class LeaseRef(Struct, array_like=True):
    """A job id and the lease token that proves the holder owns it."""

    id: JobId
    token: Token


# --- requests --------------------------------------------------------------


class Hello(Struct, tag="hello", tag_field="op", omit_defaults=True):
    rid: RequestId
    version: int
    worker_id: WorkerId
    client: Annotated[str, Meta(max_length=L.CLIENT_NAME_MAX_CHARS)] = ""
    hostname: Annotated[str, Meta(max_length=L.HOSTNAME_MAX_CHARS)] = ""
    pid: Annotated[int, Meta(ge=0, le=2**31)] = 0
    labels: Annotated[
        list[Annotated[str, Meta(max_length=L.NAME_MAX_CHARS)]], Meta(max_length=L.LABELS_MAX)
    ] = []
    concurrency: Annotated[int, Meta(ge=0, le=100_000)] = 0
    key_id: Annotated[str, Meta(max_length=L.KEY_ID_MAX_CHARS)] = ""  # "": no authentication
    nonce: Annotated[bytes, Meta(max_length=L.AUTH_NONCE_MAX_BYTES)] = b""  # the client's


class Push(Struct, tag="push", tag_field="op", omit_defaults=True):
    rid: RequestId
    job: JobSpec
    lease: LeaseRef | None = None  # a running member's lease: adds to its committed batch


class PushMany(Struct, tag="push_many", tag_field="op", omit_defaults=True):
    rid: RequestId
    jobs: Annotated[list[JobSpec], Meta(min_length=1, max_length=L.PUSH_MANY_MAX)]
    lease: LeaseRef | None = None


class Fetch(Struct, tag="fetch", tag_field="op", omit_defaults=True):
    rid: RequestId
    queues: Annotated[list[QueueName], Meta(min_length=1, max_length=L.FETCH_QUEUES_MAX)]
    count: Annotated[int, Meta(ge=1, le=L.FETCH_COUNT_MAX)] = 1
    wait_ms: Annotated[int, Meta(ge=0, le=L.FETCH_WAIT_MAX_MS)] = 0


class Ack(Struct, tag="ack", tag_field="op", omit_defaults=True):
    rid: RequestId
    id: JobId
    token: Token
    result: bytes | None = None  # the job's result, a msgpack value encoded (core/results.py)


class AckMany(Struct, tag="ack_many", tag_field="op", omit_defaults=True):
    rid: RequestId
    leases: Annotated[list[LeaseRef], Meta(min_length=1, max_length=L.ACK_MANY_MAX)]
    # The jobs' results, one a lease (nil: none), msgpack-encoded (see Ack);
    # absent when no lease carries one
    results: Annotated[list[bytes | None], Meta(max_length=L.ACK_MANY_MAX)] | None = None

    def __post_init__(self) -> None:
        if self.results is not None and len(self.results) != len(self.leases):
            raise ValueError("results must have one item a lease")


class Fail(Struct, tag="fail", tag_field="op", omit_defaults=True):
    rid: RequestId
    id: JobId
    token: Token
    error: ErrorInfo = ErrorInfo()
    dead: bool = False  # no more attempts: the job goes to the dead set now
    retry_in_ms: DelayMs | None = None  # retrying after this instead of the backoff

    def __post_init__(self) -> None:
        if self.dead and self.retry_in_ms is not None:
            raise ValueError("give dead or retry_in_ms, not both")


class Extend(Struct, tag="extend", tag_field="op", omit_defaults=True):
    rid: RequestId
    id: JobId
    token: Token
    lease_ttl_ms: LeaseTtlMs | None = None  # None: the job's own lease_ttl_ms


class Progress(Struct, tag="progress", tag_field="op", omit_defaults=True):
    """How far a running job is: kept on the job, and its lease extended
    as ``extend`` does (core/progress.py)."""

    rid: RequestId
    id: JobId
    token: Token
    percent: Percent
    message: ProgressMessage = ""
    lease_ttl_ms: LeaseTtlMs | None = None  # None: the job's own lease_ttl_ms


class Release(Struct, tag="release", tag_field="op", omit_defaults=True):
    rid: RequestId
    id: JobId
    token: Token
    delay_ms: DelayMs | None = None  # scheduled after this instead of ready at once


class GetJob(Struct, tag="get_job", tag_field="op"):
    rid: RequestId
    id: JobId


class GetResult(Struct, tag="get_result", tag_field="op", omit_defaults=True):
    """A job's result once it finished: held (a long poll) up to ``wait_ms``
    while the job has not finished."""

    rid: RequestId
    id: JobId
    wait_ms: Annotated[int, Meta(ge=0, le=L.RESULT_WAIT_MAX_MS)] = 0


class Cancel(Struct, tag="cancel", tag_field="op"):
    """End a long poll of this connection now: the held fetch or get_result
    whose rid is ``of`` is answered as if its wait had ended (a fetch with no
    jobs), before this request's ``ok``. A rid not held (answered already,
    or never sent) changes nothing: ``ok`` all the same."""

    rid: RequestId
    of: RequestId


RunCount = Annotated[int, Meta(ge=0)]


class JobsRun(Struct, omit_defaults=True, frozen=True):
    """A worker process's runs of one job type since it started, by how each
    ended: as the worker reckons it (``dead``: it gave up; the broker has
    the last word), for the processes views."""

    done: RunCount = 0
    retrying: RunCount = 0
    dead: RunCount = 0
    snoozed: RunCount = 0
    unknown: RunCount = 0  # a type it has no handler for


RunsByType = Annotated[dict[JobType, JobsRun], Meta(max_length=L.BEAT_TYPES_MAX)]


class Beat(Struct, tag="beat", tag_field="op", omit_defaults=True):
    """A worker process's heartbeat; any request is a sign of life too."""

    rid: RequestId
    ran: RunsByType | None = None  # the jobs it ran so far, by type (None: not told)


class BatchCallbacks(Struct, omit_defaults=True, frozen=True):
    """The jobs a batch enqueues when it succeeds, completes, or first sees a death."""

    success: JobSpec | None = None
    complete: JobSpec | None = None
    death: JobSpec | None = None


class CreateBatch(Struct, tag="create_batch", tag_field="op", omit_defaults=True):
    rid: RequestId
    id: ClientBatchId | None = None  # None: the broker makes one (starting with "_")
    description: Annotated[str, Meta(max_length=L.BATCH_DESCRIPTION_MAX_CHARS)] = ""
    parent: BatchId | None = None
    callbacks: BatchCallbacks = BatchCallbacks()
    jobs: Annotated[list[JobSpec], Meta(max_length=L.PUSH_MANY_MAX)] = []
    commit: bool = False  # judge the batch at once: no more jobs are added by producers
    lease: LeaseRef | None = None  # a running member's lease: needed if the parent is committed


class CommitBatch(Struct, tag="commit_batch", tag_field="op"):
    rid: RequestId
    id: BatchId


class GetBatchStatus(Struct, tag="batch_status", tag_field="op", omit_defaults=True):
    rid: RequestId
    id: BatchId
    limit: Annotated[int, Meta(ge=0, le=L.BATCH_STATUS_MEMBERS_MAX)] = (
        L.BATCH_STATUS_MEMBERS_DEFAULT
    )


class Auth(Struct, tag="auth", tag_field="op"):
    """The client's proof that it holds the key, after the broker's challenge."""

    rid: RequestId
    proof: Annotated[bytes, Meta(max_length=L.AUTH_PROOF_BYTES)]


Request = (
    Hello
    | Push
    | PushMany
    | Fetch
    | Ack
    | AckMany
    | Fail
    | Extend
    | Release
    | GetJob
    | GetResult
    | Beat
    | CreateBatch
    | CommitBatch
    | GetBatchStatus
    | Auth
    | Progress
    | Cancel
)
REQUEST_OPS = frozenset(t.__struct_config__.tag for t in Request.__args__)


# --- replies ---------------------------------------------------------------


class Welcome(Struct, tag="welcome", tag_field="t"):
    rid: RequestId
    version: int
    server: str
    epoch: int
    max_frame_bytes: int
    heartbeat_ms: int = L.HEARTBEAT_DEFAULT_MS  # beat at least this often
    process_ttl_ms: int = L.PROCESS_TTL_DEFAULT_MS
    idle_timeout_ms: int = 0  # a connection with no frame for this long is closed; 0: never
    max_in_flight: int = 0  # requests read and unanswered before the broker stops reading
    max_args_bytes: int = 0  # the largest job args; 0: bounded by the frame only
    max_result_bytes: int = 0  # the largest result an ack may carry; 0: not told


class PushResult(Struct, omit_defaults=True):
    id: str
    created: bool  # False: a job with this id already existed; nothing was added
    state: str  # a JobState; str so that states added later still decode
    # True: nothing was added because the job ``id`` holds the push's
    # uniqueness key ("succeeded": it finished within its unique_for_ms)
    duplicate: bool = False


class Pushed(Struct, tag="pushed", tag_field="t", omit_defaults=True):
    rid: RequestId
    id: str
    created: bool
    state: str
    duplicate: bool = False


class PushedMany(Struct, tag="pushed_many", tag_field="t"):
    rid: RequestId
    results: list[PushResult]


class Delivery(Struct, omit_defaults=True):
    """One leased job, as a worker receives it."""

    id: str
    queue: str
    type: str
    args: Raw
    token: int
    deadline_ms: int
    attempt: int  # 1 on the first delivery; failed attempts so far + 1
    max_attempts: int
    lease_ttl_ms: int
    priority: int
    created_ms: int
    batch: str | None = None  # the batch the job is a member of
    time_limit_ms: int | None = None  # the attempt may run this long from its lease
    keep_result: bool = False  # send the handler's result with the ack: it is kept


class Jobs(Struct, tag="jobs", tag_field="t"):
    rid: RequestId
    jobs: list[Delivery]


class Ok(Struct, tag="ok", tag_field="t"):
    rid: RequestId


class ItemResult(Struct, omit_defaults=True):
    """The outcome for one item of a many-request: no code means it succeeded."""

    id: str
    code: str | None = None  # an ErrorCode; str so that codes added later still decode
    message: str = ""


class AckedMany(Struct, tag="acked_many", tag_field="t"):
    rid: RequestId
    results: list[ItemResult]


class Failed(Struct, tag="failed", tag_field="t", omit_defaults=True):
    rid: RequestId
    state: str  # "retrying" or "dead"
    retry_at_ms: int | None = None


class Extended(Struct, tag="extended", tag_field="t"):
    rid: RequestId
    deadline_ms: int


class AttemptView(Struct, omit_defaults=True):
    """One ended attempt of a job: when, by which process, how it ended."""

    attempt: int  # 1-based, as delivered
    leased_ms: int
    ended_ms: int
    worker_id: str
    outcome: str  # "failed", "expired", "lost", "released" or "killed"
    hostname: str = ""
    pid: int = 0
    error: ErrorInfo | None = None  # cut to the attempt limits (limits.ATTEMPT_*)


class JobView(Struct, omit_defaults=True):
    """Everything the broker knows about one job."""

    id: str
    queue: str
    type: str
    args: Raw
    state: str  # a JobState
    priority: int
    attempt: int  # failed attempts so far
    max_attempts: int
    lease_ttl_ms: int
    created_ms: int
    run_at_ms: int | None = None  # scheduled / retrying: when it becomes ready
    retry_base_ms: int | None = None
    last_error: ErrorInfo | None = None
    owner: str | None = None  # leased: the holder's worker id
    token: int | None = None
    deadline_ms: int | None = None
    died_ms: int | None = None
    batch: str | None = None  # the batch the job is a member of
    leased_ms: int | None = None  # leased: since when
    attempts: list[AttemptView] = []  # get_job: the last ended attempts, oldest first
    unique_key: str | None = None  # the uniqueness key it holds
    unique_for_ms: int | None = None  # the key stays taken this long after it succeeds
    expires_ms: int | None = None  # not leased by then: removed, never run
    time_limit_ms: int | None = None  # an attempt runs at most this long
    progress: int | None = None  # leased: the percent its handler last reported
    progress_message: str | None = None
    progress_ms: int | None = None  # when it was reported
    concurrency_key: str | None = None  # its queue's per-key limit counts it under this key
    # A finished job (state "succeeded", "deleted" or "expired", from the
    # broker's history of finished jobs): when, and for a success by whom.
    finished_ms: int | None = None
    finished_by: str | None = None  # the worker id of the process that acked it
    finished_host: str | None = None
    finished_pid: int | None = None


class JobInfo(Struct, tag="job", tag_field="t"):
    rid: RequestId
    job: JobView


class JobResult(Struct, tag="result", tag_field="t", omit_defaults=True):
    """The answer to get_result: ``succeeded`` with its ``value`` (msgpack,
    encoded); ``dead``, ``deleted`` or ``expired`` with the ``error`` that
    ended it; or, when the job has not finished, its state (the wait ended)."""

    rid: RequestId
    id: str
    state: str
    value: bytes | None = None
    error: ErrorInfo | None = None


class ProcessState(Struct, tag="state", tag_field="t"):
    """The reply to beat: what the broker wants of the process."""

    rid: RequestId
    state: str  # "ok", "quiet" or "terminate"


class BatchCreated(Struct, tag="batch_created", tag_field="t"):
    rid: RequestId
    id: str
    created: bool  # False: a batch with this id already existed; nothing was added or changed
    state: str  # the batch's state now
    results: list[PushResult]  # one per job of the request (empty when created is False)


class CallbackFired(Struct):
    kind: str  # "success", "complete" or "death"
    at_ms: int
    job_id: str  # the callback job the broker enqueued


class MemberView(Struct, omit_defaults=True):
    """A member job that has not finished."""

    id: str
    state: str  # "pending" (no attempt has ended yet) or "retrying" (it has failed)
    job_state: str  # the job's own state (section 5.6)
    owner: str | None = None  # leased: the holder's worker id


class ChildView(Struct):
    """A child batch that has not finished."""

    id: str
    state: str  # "running", or "complete" (every member has run; some are still retrying)


class BatchView(Struct, omit_defaults=True):
    """Everything the broker knows about one batch (the member list is bounded)."""

    id: str
    state: str  # "open", "committed", "finished" or "abandoned"
    description: str
    created_ms: int
    expires_ms: int  # the batch and all its bookkeeping are removed then
    total: int  # member jobs ever added
    pending: int  # members that have not finished (state pending or retrying)
    failures: int  # members that have failed and not succeeded (retrying or dead)
    dead: int
    deleted: int
    children: int  # child batches ever created
    children_pending: int  # child batches that have not finished
    succeeded: bool
    callbacks: list[str]  # the kinds this batch has a callback for
    fired: list[CallbackFired]
    members: list[MemberView]  # unfinished members, in the order they joined, up to the limit
    more_members: bool  # more unfinished members than listed
    pending_children: list[ChildView]  # unfinished children, up to the limit
    parent: str | None = None
    committed_ms: int | None = None
    open_deadline_ms: int | None = None  # open: abandoned then unless committed
    complete_ms: int | None = None  # when every member had run at least once
    died_ms: int | None = None  # the first death of a member, or below
    finished_ms: int | None = None


class BatchInfo(Struct, tag="batch", tag_field="t"):
    rid: RequestId
    batch: BatchView


class Error(Struct, tag="error", tag_field="t", omit_defaults=True):
    rid: RequestId
    code: str  # an ErrorCode; str so that codes added later still decode
    message: str
    path: str = ""  # where the bad field is, as a msgspec path ("$.job.priority")


class Challenge(Struct, tag="challenge", tag_field="t"):
    """The broker's answer to a hello with a key: its nonce and its proof."""

    rid: RequestId
    nonce: bytes
    proof: bytes


Reply = (
    Welcome
    | Pushed
    | PushedMany
    | Jobs
    | Ok
    | AckedMany
    | Failed
    | Extended
    | JobInfo
    | JobResult
    | ProcessState
    | Error
    | BatchCreated
    | BatchInfo
    | Challenge
)


encoder = msgspec.msgpack.Encoder()
request_decoder = msgspec.msgpack.Decoder(Request)
reply_decoder = msgspec.msgpack.Decoder(Reply)
TOO_DEEP = f"nested more than {L.ARGS_DEPTH_MAX} levels of arrays and maps deep"


def decode_request(body: bytes) -> Request:
    """Decode one request body; raise ``BadRequest`` carrying the code and rid to answer."""
    request: Request = decode_with(request_decoder, REQUEST_OPS, body)
    kind = type(request)
    if kind is Push:  # the hot path: one job
        if nested_deeper(request.job.args):  # type: ignore[union-attr]
            raise _too_deep(request.rid, "$.job")
    elif kind in _CREATE_MANY_JOBS:
        for path, spec in job_specs(request):
            if nested_deeper(spec.args):
                raise _too_deep(request.rid, path)
    return request


def _too_deep(rid: int, path: str) -> "BadRequest":
    return BadRequest(rid, ErrorCode.BAD_REQUEST, f"args {TOO_DEEP}", f"{path}.args")


_CREATE_MANY_JOBS = frozenset({PushMany, CreateBatch})


def job_specs(request: object) -> "list[tuple[str, JobSpec]]":
    """Every job a request would create, with its path in the body."""
    match request:
        case Push(job=spec):
            return [("$.job", spec)]
        case PushMany(jobs=specs):
            return [(f"$.jobs[{index}]", spec) for index, spec in enumerate(specs)]
        case CreateBatch(jobs=specs, callbacks=callbacks):
            named = [
                (f"$.callbacks.{kind}", spec)
                for kind in ("success", "complete", "death")
                if (spec := getattr(callbacks, kind)) is not None
            ]
            return [*((f"$.jobs[{index}]", spec) for index, spec in enumerate(specs)), *named]
    return []


def decode_with(decoder: "msgspec.msgpack.Decoder[T]", ops: frozenset[str], body: bytes) -> T:
    """Decode a request body with ``decoder``, whose union's ops are ``ops``;
    raise ``BadRequest`` carrying the code and rid to answer."""
    try:
        return decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _request_error(body, str(exc), ops) from None
    except RecursionError:  # deeper than the interpreter's stack: far past any limit
        raise _request_error(body, f"the body is {TOO_DEEP}", ops) from None


class BadRequest(Exception):
    """A request body that did not decode, with what to answer."""

    def __init__(self, rid: int, code: ErrorCode, message: str, path: str, op: str = "") -> None:
        super().__init__(message)
        self.rid = rid
        self.code = code
        self.message = bounded(message)
        self.path = bounded(path)
        self.op = op  # the unknown op, for unknown_op

    def reply(self) -> Error:
        return Error(rid=self.rid, code=self.code, message=self.message, path=self.path)


_PATH = re.compile(r" - at (?:`key` in )?`(\$[^`]*)`$")
OP_SHOWN_CHARS = 64  # of an unknown op, in its error message


def bounded(text: str) -> str:
    """``text`` cut to ERROR_TEXT_MAX_CHARS: an error never echoes a large input back."""
    if len(text) <= L.ERROR_TEXT_MAX_CHARS:
        return text
    return f"{text[: L.ERROR_TEXT_MAX_CHARS - 24]}... ({len(text)} characters)"


def _request_error(body: bytes, message: str, ops: frozenset[str]) -> BadRequest:
    op, rid = envelope(body)
    rid = rid if type(rid) is int and 0 <= rid < 2**63 else 0
    match = _PATH.search(message)
    path = match.group(1) if match else ""
    if isinstance(op, str) and op and op not in ops:
        shown = repr(op[:OP_SHOWN_CHARS])
        if len(op) > OP_SHOWN_CHARS:
            shown += f"... ({len(op)} characters)"
        return BadRequest(rid, ErrorCode.UNKNOWN_OP, f"unknown op {shown}", "$.op", op)
    return BadRequest(rid, ErrorCode.BAD_REQUEST, message, path)
