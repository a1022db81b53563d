"""The jobs table: every job the broker knows, by id, each in one of two forms.

Theory of operation. A broker holds few leased jobs (the workers'
concurrency bounds them) and may hold millions of waiting ones, so the two
are stored differently:

- a LEASED job is a ``Job`` object: its lease fields change while it runs;
- a job that waits (ready, scheduled, retrying, dead) is one ``bytes``
  object, a ``Packed`` record in msgpack: the fields a waiting job needs,
  its queue and type as numbers in the table's ``names``, its arguments
  inline, and the fields most jobs leave at their defaults (failures, death
  time, last error, batch, what a front end keeps, discard when dead, leases
  lost in a row) in one optional ``Cold`` part. ~160 B for a
  100-byte payload where a ``Job`` with its strings and args took ~560
  (bench/PROFILE.md).

A job created or changed recently stays a ``Job`` until ``recent_jobs``
(CoreConfig) later changes have passed, then it is packed: a job that is
leased soon after its push (the common case when workers keep up) is never
packed and unpacked, and the ``Job`` objects are bounded by the leases plus
``recent_jobs``.

A ``Job`` is frozen: writing one of its fields raises AttributeError.
Reading gives a ``Job`` either way (``[]``, ``get``, ``values()``,
``leased``): for a packed job a fresh copy, for a recent or leased one the
object in the table (which apply may change later: a reader that must keep
what it read copies it). Either way a write through a read is an error,
never a change that silently does nothing (a copy) or bypasses apply (the
object). Changing is apply's (and replay's, core/replay.py): ``create``
adds a job (``create_ready_packed``: ready jobs in bulk, packed at once,
what a replay does for the jobs that wait), ``thaw`` gives the job as the
``Job`` object in the table (the same object while it is recent or leased,
so every part of apply that looks at it sees one object), ``change``
writes fields of that object (and refuses any other: a copy from a read),
``lease_ended`` makes a leased job recent, ``pack_overdue`` (at the end of
each record) packs the jobs that are no longer recent, ``pop`` forgets a job.
The fields the indexes key a job by (its state, ready since, run at, its
lease) are written by indexes.py alone, directly (``write``: those paths
run for every job). A packed job keeps only the fields its state uses:
ready since (READY), run at (SCHEDULED, RETRYING); lease fields are zero.

Names (names.py): each packed job counts once for its queue's name and
once for its type's name (a Job object holds the strings themselves).
"""

import sys
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from operator import attrgetter
from typing import Final, Literal, TypedDict, Unpack

import msgspec
from msgspec import Raw, Struct

from leash.broker.core.names import Names
from leash.broker.core.records import NewJob
from leash.protocol.messages import ErrorInfo, JobState

READY: Final = "ready"
SCHEDULED: Final = "scheduled"
LEASED: Final = "leased"
RETRYING: Final = "retrying"
DEAD: Final = "dead"
JOB_STATES: Final[tuple[JobState, ...]] = (READY, SCHEDULED, LEASED, RETRYING, DEAD)
PackedState = Literal["ready", "scheduled", "retrying", "dead"]  # the states a job is packed in


class Attempt(Struct, array_like=True, gc=False):
    """An attempt that ended (a job keeps its last ``ATTEMPTS_KEPT``)."""

    attempt: int  # 1-based, as delivered
    leased_ms: int
    ended_ms: int
    worker_id: str
    hostname: str
    pid: int
    outcome: str  # "failed", "expired", "lost", "released" or "killed"
    error: ErrorInfo | None = None


class Progress(Struct, array_like=True, gc=False):
    """What a leased job's handler last reported of its progress (progress.py)."""

    percent: int
    message: str
    at_ms: int


class Job(Struct, frozen=True, array_like=True, gc=False):
    id: str
    queue: str
    type: str
    args: Raw
    priority: int
    max_attempts: int
    lease_ttl_ms: int
    retry_base_ms: int | None
    created_ms: int
    state: JobState
    run_at_ms: int = 0  # SCHEDULED / RETRYING: when it becomes ready
    failures: int = 0
    last_error: ErrorInfo | None = None
    owner: str = ""  # LEASED: the worker id holding it
    token: int = 0  # LEASED: the current fencing token
    deadline_ms: int = 0  # LEASED
    died_ms: int = 0  # DEAD: when (kept after a requeue: a later death is later still)
    leased_ms: int = 0  # LEASED: when the lease was granted
    batch: str | None = None  # a member of this unfinished batch
    ready_ms: int = 0  # READY: since when it waits (its queue's latency)
    extra: bytes | None = None  # kept for another protocol's front end (records.NewJob)
    discard_dead: bool = False  # forgotten when it dies, not kept dead
    lost_leases: int = 0  # leases lost in a row (expired, owner died); 0 after a reported outcome
    attempts: list[Attempt] | None = None  # the last ended attempts, oldest first
    unique_key: str | None = None  # the uniqueness key it holds (None once dead: unique.py)
    unique_for_ms: int = 0  # the key stays taken this long after it succeeds
    expires_ms: int = 0  # not leased by then: removed (expiry.py); 0: never
    time_limit_ms: int = 0  # an attempt runs at most this long (timelimit.py); 0: no limit
    concurrency_key: str | None = None  # its queue's per-key limit counts it (limits.py)
    keep_result_ms: int = 0  # its ack's result is kept this long (results.py); 0: not kept
    progress: Progress | None = None  # LEASED: its handler's last report (progress.py)


class JobChanges(TypedDict, total=False):
    """The fields ``JobTable.change`` writes (its keyword arguments, typed)."""

    run_at_ms: int
    failures: int
    last_error: ErrorInfo | None
    died_ms: int
    batch: str | None
    extra: bytes | None
    discard_dead: bool
    lost_leases: int
    attempts: list[Attempt] | None
    unique_key: str | None
    unique_for_ms: int
    expires_ms: int
    time_limit_ms: int
    concurrency_key: str | None
    keep_result_ms: int
    progress: Progress | None


# Writes a field of a frozen Job: JobTable.change's, and indexes.py's (only
# there, on the objects thaw gave).
write: Final = msgspec.structs.force_setattr


class Cold(Struct, array_like=True, gc=False):
    """The fields of a packed job that a job fresh from its push leaves at
    their defaults; None in ``Packed`` when they all are."""

    failures: int = 0
    died_ms: int = 0
    last_error: ErrorInfo | None = None
    batch: str | None = None
    extra: bytes | None = None
    discard_dead: bool = False
    lost_leases: int = 0
    attempts: list[Attempt] | None = None
    unique_key: str | None = None
    unique_for_ms: int = 0
    expires_ms: int = 0
    time_limit_ms: int = 0
    concurrency_key: str | None = None
    keep_result_ms: int = 0


class Packed(Struct, array_like=True, gc=False):
    state: int  # an index into PACKED_STATES
    queue: int  # a number in the table's names
    type: int  # a number in the table's names
    priority: int
    max_attempts: int
    lease_ttl_ms: int
    retry_base_ms: int | None
    created_ms: int
    # READY: ready_ms, SCHEDULED / RETRYING: run_at_ms, as an offset from
    # created_ms (one byte for a job ready since its push); DEAD: 0
    after_created_ms: int
    args: Raw
    cold: Cold | None = None


PACKED_STATES: Final[tuple[PackedState, ...]] = (READY, SCHEDULED, RETRYING, DEAD)
_CODES: Final = {state: code for code, state in enumerate(PACKED_STATES)}
_READY_CODE: Final = _CODES[READY]
_RUN_AT_CODES: Final = frozenset((_CODES[SCHEDULED], _CODES[RETRYING]))
_NO_COLD: Final = Cold()
_encoder = msgspec.msgpack.Encoder()
_QUEUE_OF, _TYPE_OF = attrgetter("queue"), attrgetter("type")
_decode = msgspec.msgpack.Decoder(Packed).decode


class JobTable(Mapping[str, Job]):
    __slots__ = ("_recent", "_recent_max", "_scratch", "_table", "ids", "names", "overdue")

    def __init__(self, recent_jobs: int) -> None:
        self._table: dict[str, Job | bytes] = {}
        self.ids = self._table.keys()  # the ids, a live view (``in`` without a call)
        self._recent: deque[str] = deque()  # jobs made Job objects, oldest first
        self._recent_max = recent_jobs
        self.overdue = -recent_jobs  # entries of _recent past the window (pack_overdue packs them)
        self._scratch = bytearray(256)
        self.names = Names()

    # --- reading -----------------------------------------------------------

    def __getitem__(self, job_id: str) -> Job:
        stored = self._table[job_id]
        return self._unpack(job_id, stored) if isinstance(stored, bytes) else stored

    def get(self, job_id: str, default: None = None) -> Job | None:  # type: ignore[override]
        stored = self._table.get(job_id)
        return self._unpack(job_id, stored) if isinstance(stored, bytes) else stored

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._table

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def __sizeof__(self) -> int:
        """The table with its dict, not the jobs in it (to measure them apart)."""
        return object.__sizeof__(self) + sys.getsizeof(self._table)

    def leased(self, job_id: str) -> Job | None:
        """The job if it is leased (no unpacking: a leased job is a Job)."""
        stored = self._table.get(job_id)
        if type(stored) is Job and stored.state == LEASED:
            return stored
        return None

    def keyed_at(self, job_id: str) -> tuple[JobState, int] | None:
        """The job's state and the time its state's index is keyed by (run
        at, died, deadline, ready since), without building a Job."""
        stored = self._table.get(job_id)
        if stored is None:
            return None
        if isinstance(stored, bytes):
            return packed_key(_decode(stored))
        return stored.state, key_ms(stored)

    def stored(self, job_id: str) -> Job | bytes:
        """The job as the table holds it (to measure it)."""
        return self._table[job_id]

    def for_image(self) -> tuple[list[str], Callable[[str], tuple[bytes, int, int]]]:
        """What a state image writes: the names by number — the table's,
        extended (the table unchanged) by those only recent jobs use — and,
        for any job that is not leased, its packed form in that numbering
        with its queue's and type's numbers."""
        names, numbers, table = list(self.names.names), dict(self.names.numbers), self._table
        for job_id in self._recent:
            job = table.get(job_id)
            if isinstance(job, Job):
                for name in (job.queue, job.type):
                    if name not in numbers:
                        numbers[name] = len(names)
                        names.append(name)

        def packed(job_id: str) -> tuple[bytes, int, int]:
            stored = table[job_id]
            if isinstance(stored, bytes):
                record = _decode(stored)
                return stored, record.queue, record.type
            number = numbers.__getitem__
            return self._pack(stored, number), number(stored.queue), number(stored.type)

        return names, packed

    # --- changing: apply's, and the image loader's --------------------------

    def create(self, new: NewJob) -> None:
        """A new job: READY unless it has a run_at_ms (then SCHEDULED)."""
        job_id = new.id
        assert job_id not in self._table, job_id
        run_at_ms: int | None = new.run_at_ms
        if run_at_ms is None:
            state: JobState = READY
            run_at_ms, ready_ms = 0, new.created_ms
        else:
            state, ready_ms = SCHEDULED, 0
        self._table[job_id] = Job(
            job_id,
            new.queue,
            new.type,
            new.args.copy(),  # a record replayed from the journal: do not keep the file alive
            new.priority,
            new.max_attempts,
            new.lease_ttl_ms,
            new.retry_base_ms,
            new.created_ms,
            state,
            run_at_ms,
            0,
            None,
            "",
            0,
            0,
            0,
            0,
            new.batch,
            ready_ms,
        )
        self._recent.append(job_id)
        self.overdue += 1

    def create_ready_packed(self, news: list[NewJob]) -> None:
        """New ready jobs (no run_at_ms), each as ``create`` makes it, packed
        at once and in bulk: no ``Job`` is built, each name is numbered
        once (in the order one by one would number them) and its uses are
        counted at the end (a replay builds the jobs that wait this way)."""
        table, encoded = self._table, self._encoded
        names = self.names
        numbers, take = names.numbers, names.take
        fresh: list[str] = []  # names numbered here: take counted one use of each
        before = len(table)
        for new in news:
            queue, kind = new.queue, new.type
            queue_number = numbers.get(queue)
            if queue_number is None:
                queue_number = take(queue)
                fresh.append(queue)
            type_number = numbers.get(kind)
            if type_number is None:
                type_number = take(kind)
                fresh.append(kind)
            packed = Packed(
                _READY_CODE,
                queue_number,
                type_number,
                new.priority,
                new.max_attempts,
                new.lease_ttl_ms,
                new.retry_base_ms,
                new.created_ms,
                0,  # ready since its creation
                new.args,
                None if new.batch is None else Cold(batch=new.batch),
            )
            table[new.id] = encoded(packed)
        assert len(table) - before == len(news), "a job is here already, or pushed twice"
        used = Counter(map(_QUEUE_OF, news))
        used.update(map(_TYPE_OF, news))
        used.subtract(fresh)
        uses = names.uses
        for name, count in used.items():
            uses[numbers[name]] += count

    def thaw(self, job_id: str) -> Job:
        """The job as the Job object in the table, to change."""
        stored = self._table[job_id]
        if isinstance(stored, bytes):
            stored = self._table[job_id] = self._unpack(job_id, stored)
            self._forget_names(stored)
            self._recent.append(job_id)
            self.overdue += 1
        return stored

    def change(self, job: Job, **changes: Unpack[JobChanges]) -> None:
        """Write fields of a thawed job: the object in the table (a copy
        from a read is refused)."""
        assert self._table.get(job.id) is job, f"job {job.id} is not the table's: thaw it"
        for field, value in changes.items():
            write(job, field, value)

    def lease_ended(self, job_id: str) -> None:
        """A thawed job's lease ended: it is recent from now on."""
        self._recent.append(job_id)
        self.overdue += 1

    def pack_overdue(self) -> None:
        """Pack the jobs that are no longer recent, unless they are leased
        (apply calls it after a record when ``overdue`` is above 0)."""
        if self.overdue <= 0:
            return
        recent, table, take = self._recent, self._table, self.names.take
        for _ in range(self.overdue):
            job_id = recent.popleft()
            job = table.get(job_id)
            if type(job) is Job and job.state != LEASED:  # (maybe recent again: harmless)
                table[job_id] = self._pack(job, take)
        self.overdue = 0

    def pop(self, job_id: str) -> Job:
        """Forget a job; the job as it was."""
        stored = self._table.pop(job_id)
        if not isinstance(stored, bytes):
            return stored
        job = self._unpack(job_id, stored)
        self._forget_names(job)
        return job

    def pop_leased(self, job_id: str, token: int) -> Job:
        """Forget a job leased with ``token`` (an ack); the job as it was.
        Asserts, before changing anything, that it is."""
        stored = self._table.get(job_id)
        assert type(stored) is Job and stored.state == LEASED and stored.token == token, (
            job_id,
            token,
            stored,
        )
        del self._table[job_id]
        return stored

    def load_job(self, job: Job) -> None:
        """A job from a state image, in the full form."""
        self._table[job.id] = job if job.state == LEASED else self._pack(job, self.names.take)

    def load_packed(
        self, ids: list[str], records: list[bytes], queues: list[int], types: list[int]
    ) -> None:
        """Packed jobs from a state image whose names are loaded, with the
        numbers of their queues and types (what the records say: the image
        writes both). In bulk, not one by one: a million jobs load in a
        fraction of a second. Raises ValueError for a job already here or a
        number that names nothing."""
        if not len(ids) == len(records) == len(queues) == len(types):
            raise ValueError(f"{len(ids)} ids for {len(records)} packed jobs")
        names, uses = self.names.names, self.names.uses
        for number, count in (Counter(queues) + Counter(types)).items():
            if not (0 <= number < len(names) and names[number]):
                raise ValueError(f"packed jobs name number {number}, which names nothing")
            uses[number] += count
        table = self._table
        before = len(table)
        table.update(zip(ids, records, strict=True))
        if len(table) - before != len(ids):
            raise ValueError("a job appears twice")

    # --- the forms ------------------------------------------------------------

    def _pack(self, job: Job, number: Callable[[str], int]) -> bytes:
        """The job packed, its names numbered by ``number`` (the table's
        ``take``, which counts the use)."""
        state = job.state
        assert state != LEASED and not (job.owner or job.token or job.deadline_ms), job
        if state == READY:
            after_ms = job.ready_ms - job.created_ms
        elif state == DEAD:
            after_ms = 0
        else:
            after_ms = job.run_at_ms - job.created_ms
        cold = None
        if (
            job.failures
            or job.died_ms
            or job.last_error is not None
            or job.batch is not None
            or job.extra is not None
            or job.discard_dead
            or job.lost_leases
            or job.attempts
            or job.unique_key is not None
            or job.expires_ms
            or job.time_limit_ms
            or job.concurrency_key is not None
            or job.keep_result_ms
        ):
            cold = Cold(
                job.failures,
                job.died_ms,
                job.last_error,
                job.batch,
                job.extra,
                job.discard_dead,
                job.lost_leases,
                job.attempts or None,
                job.unique_key,
                job.unique_for_ms,
                job.expires_ms,
                job.time_limit_ms,
                job.concurrency_key,
                job.keep_result_ms,
            )
        packed = Packed(
            _CODES[state],
            number(job.queue),
            number(job.type),
            job.priority,
            job.max_attempts,
            job.lease_ttl_ms,
            job.retry_base_ms,
            job.created_ms,
            after_ms,
            job.args,
            cold,
        )
        return self._encoded(packed)

    def _encoded(self, packed: Packed) -> bytes:
        # Through a scratch buffer, then copied: the bytes an encoder returns
        # sit in a block sized for its growing buffer (~70 B more for a job).
        _encoder.encode_into(packed, self._scratch)
        return bytes(self._scratch)

    def _forget_names(self, job: Job) -> None:
        """A packed job is no more: its names have one use fewer."""
        self.names.drop_name(job.queue)
        self.names.drop_name(job.type)

    def _unpack(self, job_id: str, record: bytes) -> Job:
        packed = _decode(record)
        names = self.names.names
        code = packed.state
        at_ms = packed.created_ms + packed.after_created_ms
        cold = packed.cold or _NO_COLD
        return Job(
            job_id,
            names[packed.queue],
            names[packed.type],
            packed.args,
            packed.priority,
            packed.max_attempts,
            packed.lease_ttl_ms,
            packed.retry_base_ms,
            packed.created_ms,
            PACKED_STATES[code],
            at_ms if code in _RUN_AT_CODES else 0,
            cold.failures,
            cold.last_error,
            "",
            0,
            0,
            cold.died_ms,
            0,
            cold.batch,
            at_ms if code == _READY_CODE else 0,
            cold.extra,
            cold.discard_dead,
            cold.lost_leases,
            cold.attempts,
            cold.unique_key,
            cold.unique_for_ms,
            cold.expires_ms,
            cold.time_limit_ms,
            cold.concurrency_key,
            cold.keep_result_ms,
        )

    def problems(self) -> list[str]:
        """Cross-checks of the forms and the names against the jobs; [] when consistent."""
        problems = []
        recent = set(self._recent)
        uses = [0] * len(self.names.names)
        for job_id, stored in self._table.items():
            job = self[job_id]
            if isinstance(stored, Job):
                if not (job.state == LEASED or job_id in recent):
                    problems.append(f"job {job_id} is {job.state}, not recent, and not packed")
                continue
            if job.state == LEASED:
                problems.append(f"job {job_id} is leased but packed")
            for name in (job.queue, job.type):
                number = self.names.numbers.get(name)
                if number is None or self.names.names[number] != name:
                    problems.append(f"job {job_id} names {name!r}, which has no number")
                else:
                    uses[number] += 1
        if uses != self.names.uses:
            problems.append(f"the names count {self.names.uses} uses, the jobs make {uses}")
        numbered = {n: name for n, name in enumerate(self.names.names) if name}
        if {name: n for n, name in numbered.items()} != self.names.numbers:
            problems.append("the names and their numbers disagree")
        if len(self._recent) - self._recent_max != self.overdue:
            problems.append(f"{len(self._recent)} jobs are recent, {self.overdue} overdue")
        if self.overdue > 0:
            problems.append(f"{self.overdue} jobs are past the window, not packed")
        return problems


def packed_key(packed: Packed) -> tuple[JobState, int]:
    """A packed job's state and the time its state's index is keyed by."""
    state = PACKED_STATES[packed.state]
    if state == DEAD:
        return state, (packed.cold or _NO_COLD).died_ms
    return state, packed.created_ms + packed.after_created_ms


def key_ms(job: Job) -> int:
    """The time the index of the job's state keys it by."""
    match job.state:
        case "leased":
            return job.deadline_ms
        case "scheduled" | "retrying":
            return job.run_at_ms
        case "dead":
            return job.died_ms
        case _:
            return job.ready_ms
