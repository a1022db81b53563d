"""The values the client API takes and returns: Job, JobSpec building, failures.

Rules: nothing here does I/O. ``job_spec`` sets only the fields its caller
gave, so every unset option is left out of the encoded JobSpec and the broker
applies its own default. Job arguments are msgpack: encoded once by
``job_spec``, decoded at most once by ``Job.args``, both by
``leash.protocol.argtypes`` (datetimes, dates, Decimals, UUIDs and bytes keep
their types; any other type is refused at push time, naming the field).
"""

import itertools
import os
import secrets
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias, TypedDict, Unpack, cast

import msgspec

from leash.protocol import argtypes, limits
from leash.protocol.messages import Delivery, ErrorInfo, JobSpec, LeaseRef

_UNDECODED: Any = object()  # Job.args not decoded yet


class Job:
    """One delivered job: a lease on it until ack, fail, release or the deadline.

    ``args`` is decoded from msgpack on first access, so a worker decodes in
    the thread that runs the handler. ``deadline_ms`` is updated by ``extend``.
    """

    __slots__ = (
        "_args",
        "attempt",
        "batch",
        "created_ms",
        "deadline_ms",
        "id",
        "keep_result",
        "lease_ttl_ms",
        "max_attempts",
        "priority",
        "queue",
        "raw_args",
        "result",
        "time_limit_ms",
        "token",
        "type",
    )

    def __init__(self, delivery: Delivery) -> None:
        self.id: str = delivery.id
        self.queue: str = delivery.queue
        self.type: str = delivery.type
        self.raw_args: msgspec.Raw = delivery.args  # the msgpack bytes, undecoded
        self.token: int = delivery.token
        self.deadline_ms: int = delivery.deadline_ms
        self.attempt: int = delivery.attempt
        self.max_attempts: int = delivery.max_attempts
        self.lease_ttl_ms: int = delivery.lease_ttl_ms
        self.priority: int = delivery.priority
        self.created_ms: int = delivery.created_ms
        self.batch: str | None = delivery.batch  # the batch the job is a member of
        self.time_limit_ms: int | None = delivery.time_limit_ms  # the attempt's limit
        self.keep_result: bool = delivery.keep_result  # its ack's result is kept
        self.result: bytes | None = None  # its handler's result, packed, to send with its ack
        self._args: Any = _UNDECODED

    @property
    def args(self) -> Any:
        """The job's arguments as the producer gave them, with their types
        (``leash.protocol.argtypes``: tuples come back as lists)."""
        if self._args is _UNDECODED:
            self._args = argtypes.unpack(self.raw_args)
        return self._args

    def __repr__(self) -> str:
        return (
            f"Job(id={self.id!r}, type={self.type!r}, queue={self.queue!r}, "
            f"attempt={self.attempt}/{self.max_attempts}, token={self.token})"
        )


NO_RESULT: Any = object()  # ack's default: no result sent (None is a result)

Lease: TypeAlias = Job | tuple[str, int]
"""Wherever a lease is taken: a delivered ``Job`` or an ``(id, token)`` pair."""

JobSpecLike: TypeAlias = JobSpec | Mapping[str, Any]
"""For ``push_many``: a ``JobSpec`` from ``job_spec`` or a dict of ``push``'s parameters."""


def lease_ref(lease: Lease) -> tuple[str, int]:
    if isinstance(lease, Job):
        return lease.id, lease.token
    job_id, token = lease
    return job_id, token


def lease_or_none(lease: Lease | None) -> LeaseRef | None:
    return None if lease is None else LeaseRef(*lease_ref(lease))


@dataclass(frozen=True, slots=True)
class FailResult:
    """What became of a failed job: retried at ``retry_at_ms``, or dead."""

    state: str  # "retrying" or "dead"
    retry_at_ms: int | None = None


ID_PREFIX_CHARS = 20  # 80 random bits a process
ID_COUNTER_CHARS = 12  # then a counter: 2^48 ids before the prefix is drawn again


class _Ids:
    """Client-made ids: a random prefix drawn once per process (again in a
    forked child, and after 2^48 ids) and a counter, 32 hex characters in all,
    like a uuid4's hex. Unique across processes and restarts as long as two
    processes never draw the same 80 random bits; no system call per id."""

    def __init__(self) -> None:
        self._draw()
        os.register_at_fork(after_in_child=self._draw)

    def _draw(self) -> None:
        self._prefix = secrets.token_hex(ID_PREFIX_CHARS // 2)
        self._counter = itertools.count()  # next() is atomic: threads may share it

    def next(self) -> str:
        number = next(self._counter)
        if number >> (4 * ID_COUNTER_CHARS):
            self._draw()
            return self.next()
        return f"{self._prefix}{number:012x}"  # ID_COUNTER_CHARS hex digits


_ids = _Ids()


def new_job_id() -> str:
    """A client-made id, so a push that is sent again is not a second job."""
    return _ids.next()


class JobOptions(TypedDict, total=False):
    """The options of a job, for ``push``, a pipeline's ``push`` and ``job_spec``.

    Every one may be left out (or given as None): the broker applies its
    default. ``queue`` (``"default"``). ``id``: made by the client when not
    given, so a push sent again is one job. ``priority``: higher is leased
    first. ``run_at_ms`` (unix ms) or ``delay_ms`` (from now): not leased
    before then. ``max_attempts``, ``lease_ttl_ms``, ``retry_base_ms``: how
    often it is tried, how long a lease lasts, the first retry's backoff.
    ``batch``: the job joins that batch; a committed batch takes jobs only
    from a running member of it, which presents its ``lease`` (a ``Job``).
    ``unique_key`` (or ``unique=True``, a key derived from queue, type and
    args): while a job with the key waits or runs, and ``unique_for_ms``
    after it succeeds, the push adds nothing and returns that job's id
    (``push_many`` says ``duplicate=True``). ``ttl_ms`` (from now) or
    ``expires_at_ms`` (unix ms): a job not leased by then never runs.
    ``time_limit_ms``: each attempt runs at most this long; the broker and
    the ``Worker`` fail it with ``TimeLimitExceeded`` then.
    ``concurrency_key`` (a customer id, say): the queue's per-key limit
    counts the job's leases under it (``leash limit QUEUE --per-key N``).
    ``keep_result_ms``: its handler's return value is kept that long after
    it succeeds, for ``result``.
    """

    queue: str | None
    id: str | None
    priority: int | None
    run_at_ms: int | None
    delay_ms: int | None
    max_attempts: int | None
    lease_ttl_ms: int | None
    retry_base_ms: int | None
    batch: str | None
    unique_key: str | None
    unique: bool
    unique_for_ms: int | None
    ttl_ms: int | None
    expires_at_ms: int | None
    time_limit_ms: int | None
    concurrency_key: str | None
    keep_result_ms: int | None


JOB_OPTIONS = frozenset(JobOptions.__annotations__)  # every JobSpec field but type and args
_Fields: TypeAlias = dict[str, Any]  # JobSpec's keyword arguments


def job_spec(type: str, args: Any = None, **options: Unpack[JobOptions]) -> JobSpec:
    """A JobSpec with only the given options (``JobOptions``) set;
    ``args=None`` means no arguments.

    The id is made here when not given, so pushing the same JobSpec twice
    (for example after a lost connection) creates one job. ``args`` of a type
    that would not come back as itself raise ``UnsupportedArgType`` here,
    naming the field; an unknown option raises ``TypeError`` naming it;
    options that exclude each other raise ``ValueError``. Bounds are checked
    by the broker, which answers ``BadRequest`` naming the field.
    """
    return spec_from_options(type, args, options)


def spec_from_options(type: str, args: Any, options: JobOptions) -> JobSpec:
    """``job_spec``, from the ``**options`` dict of a push, which it may change
    (each call has its own)."""
    fields = cast(_Fields, options)
    if None in fields.values():
        fields = {name: value for name, value in fields.items() if value is not None}
    if "id" not in fields:
        fields["id"] = new_job_id()
    if args is not None:
        fields["args"] = msgspec.Raw(argtypes.pack(args))
    try:
        return JobSpec(type=type, **fields)  # its __post_init__ refuses excluded pairs
    except TypeError:
        unknown = ", ".join(sorted(fields.keys() - JOB_OPTIONS - {"args"}))
        if unknown:
            raise TypeError(f"unknown job option: {unknown}") from None
        raise


def with_id(spec: JobSpec) -> JobSpec:
    """The spec with a client-made id if it has none (a copy), so that a
    push sent again is one job."""
    return spec if spec.id is not None else msgspec.structs.replace(spec, id=new_job_id())


def as_job_spec(job: JobSpecLike) -> JobSpec:
    if isinstance(job, JobSpec):
        return job
    return job_spec(**job)


def callback_spec(job: JobSpecLike | None) -> JobSpec | None:
    """A batch callback: like a job spec, but the broker makes its id."""
    if job is None or isinstance(job, JobSpec):
        return job
    spec = job_spec(**job)
    spec.id = job.get("id")
    return spec


def new_batch_id() -> str:
    """A client-made batch id, so that a create sent again makes one batch."""
    return _ids.next()


def error_info(error: BaseException | str | ErrorInfo) -> ErrorInfo:
    """What ``fail`` sends: type, message and traceback, cut to the wire limits."""
    if isinstance(error, ErrorInfo):
        return ErrorInfo(
            type=_head(error.type, limits.ERROR_TYPE_MAX_CHARS),
            message=_head(error.message, limits.ERROR_MESSAGE_MAX_CHARS),
            backtrace=_tail(error.backtrace, limits.ERROR_BACKTRACE_MAX_CHARS),
        )
    if isinstance(error, str):
        return ErrorInfo(message=_head(error, limits.ERROR_MESSAGE_MAX_CHARS))
    cls = type(error)
    name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    backtrace = "".join(traceback.format_exception(error))
    return ErrorInfo(
        type=_head(name, limits.ERROR_TYPE_MAX_CHARS),
        message=_head(str(error), limits.ERROR_MESSAGE_MAX_CHARS),
        # The end of a traceback names the failing line and the exception: keep it.
        backtrace=_tail(backtrace, limits.ERROR_BACKTRACE_MAX_CHARS),
    )


_CUT_MARK = "…[truncated]"


def _head(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return text[: max_chars - len(_CUT_MARK)] + _CUT_MARK


def _tail(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return _CUT_MARK + "\n" + text[len(text) - max_chars + len(_CUT_MARK) + 1 :]
