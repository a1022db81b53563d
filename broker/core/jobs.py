"""The jobs table: every job the broker knows, by id, each in one of two forms.

Theory of operation. A broker holds few leased jobs (the workers'
concurrency bounds them) and may hold millions of waiting ones, so the two
are stored differently:

- a LEASED job is a ``Job`` object: its lease fields change while it runs;
- every other job (ready, scheduled, retrying, dead) is one ``bytes``
  object, a ``Packed`` record in msgpack: the fields a waiting job needs,
  its queue and type as numbers in the table's ``names``, its arguments
  inline, and the fields most jobs leave at their defaults (failures, death
  time, last error, batch) in one optional ``Cold`` part. ~160 B for a
  100-byte payload where a ``Job`` with its strings and args took ~560
  (bench/PROFILE.md).

Reading gives a ``Job`` either way (``[]``, ``get``, ``values()``): for a
packed job a fresh copy, so changing it changes nothing. Changing is apply's:
``create`` packs a new job, ``thaw`` makes a job a ``Job`` object in the
table (the same object until ``repack``, so every part of apply that looks
at the job during one record sees one object), ``repack`` — at the end of
each record — packs again every thawed job that is not leased, ``pop``
forgets a job. A packed job keeps only the fields its state uses: ready
since (READY), run at (SCHEDULED, RETRYING); lease fields are zero.

Names: each job counts once for its queue's name and once for its type's
name, from ``create`` to ``pop``; a name no job uses is dropped and its
number reused, so the numbers stay small (one byte each below 128 names).
"""

from collections.abc import Iterator, Mapping
from typing import Final

import msgspec
from msgspec import Raw, Struct

from broker.core.records import NewJob
from protocol.messages import ErrorInfo, JobState

READY: Final = "ready"
SCHEDULED: Final = "scheduled"
LEASED: Final = "leased"
RETRYING: Final = "retrying"
DEAD: Final = "dead"
JOB_STATES: Final = (READY, SCHEDULED, LEASED, RETRYING, DEAD)


class Job(Struct, array_like=True, gc=False):
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


class Cold(Struct, array_like=True, gc=False):
    """The fields of a packed job that a job fresh from its push leaves at
    their defaults; None in ``Packed`` when they all are."""

    failures: int = 0
    died_ms: int = 0
    last_error: ErrorInfo | None = None
    batch: str | None = None


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


PACKED_STATES: Final[tuple[JobState, ...]] = (READY, SCHEDULED, RETRYING, DEAD)
_CODES: Final = {state: code for code, state in enumerate(PACKED_STATES)}
_NO_COLD: Final = Cold()
_encoder = msgspec.msgpack.Encoder()
_decode = msgspec.msgpack.Decoder(Packed).decode


class Names:
    """Queue and type names by number, each kept while a job uses it."""

    __slots__ = ("free", "names", "numbers", "uses")

    def __init__(self) -> None:
        self.names: list[str] = []  # by number; "" (no queue or type is named so): free
        self.numbers: dict[str, int] = {}
        self.uses: list[int] = []
        self.free: list[int] = []

    def take(self, name: str) -> int:
        """The name's number, counting one more use."""
        number = self.numbers.get(name)
        if number is None:
            number = self.free.pop() if self.free else len(self.names)
            if number == len(self.names):
                self.names.append(name)
                self.uses.append(0)
            else:
                self.names[number] = name
            self.numbers[name] = number
        self.uses[number] += 1
        return number

    def drop(self, number: int) -> None:
        """One use fewer; the name goes with its last."""
        self.uses[number] -= 1
        if not self.uses[number]:
            del self.numbers[self.names[number]]
            self.names[number] = ""
            self.free.append(number)

    def name(self, number: int) -> str:
        name = self.names[number] if 0 <= number < len(self.names) else ""
        if not name:
            raise ValueError(f"no name has number {number}")
        return name

    def load(self, names: list[str]) -> None:
        """The numbering of a state image, with no uses yet (the jobs count them)."""
        if self.names or len(set(filter(None, names))) != len(names) - names.count(""):
            raise ValueError("names are loaded once, each name once")
        self.names = list(names)
        self.numbers = {name: n for n, name in enumerate(names) if name}
        self.uses = [0] * len(names)
        self.free = [n for n, name in enumerate(names) if not name]

    def prune(self) -> None:
        """Drop the names no job uses (after loading an image)."""
        for number, name in enumerate(self.names):
            if name and not self.uses[number]:
                self.uses[number] = 1
                self.drop(number)


class JobTable(Mapping[str, Job]):
    __slots__ = ("_scratch", "_table", "_touched", "names")

    def __init__(self) -> None:
        self._table: dict[str, Job | bytes] = {}
        self._touched: list[str] = []  # thawed during this record
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

    def leased(self, job_id: str) -> Job | None:
        """The job if it is leased (no unpacking: a leased job is a Job)."""
        stored = self._table.get(job_id)
        if isinstance(stored, Job) and stored.state == LEASED:
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
        """The job as the table holds it (what a state image writes)."""
        return self._table[job_id]

    # --- changing: apply's, and the image loader's --------------------------

    def create(self, new: NewJob) -> None:
        """A new job: READY unless it has a run_at_ms (then SCHEDULED)."""
        take = self.names.take
        if new.run_at_ms is None:
            code, after_ms = 0, 0
        else:
            code, after_ms = 1, new.run_at_ms - new.created_ms
        cold = None if new.batch is None else Cold(batch=new.batch)
        self._table[new.id] = self._encode(
            Packed(
                code,
                take(new.queue),
                take(new.type),
                new.priority,
                new.max_attempts,
                new.lease_ttl_ms,
                new.retry_base_ms,
                new.created_ms,
                after_ms,
                new.args,
                cold,
            )
        )

    def thaw(self, job_id: str) -> Job:
        """The job as a Job object in the table, to change (until repack)."""
        stored = self._table[job_id]
        if isinstance(stored, bytes):
            stored = self._table[job_id] = self._unpack(job_id, stored)
        self._touched.append(job_id)
        return stored

    def repack(self) -> None:
        """Pack every job thawed since the last repack, unless it is leased."""
        table = self._table
        for job_id in self._touched:
            job = table.get(job_id)
            if isinstance(job, Job) and job.state != LEASED:
                table[job_id] = self._pack(job)
        self._touched.clear()

    def pop(self, job_id: str) -> Job:
        """Forget a job; the job as it was."""
        job = self[job_id]
        del self._table[job_id]
        numbers = self.names.numbers
        self.names.drop(numbers[job.queue])
        self.names.drop(numbers[job.type])
        return job

    def load_job(self, job: Job) -> None:
        """A job from a state image, in the full form."""
        take, names = self.names.take, self.names.names
        job.queue, job.type = names[take(job.queue)], names[take(job.type)]
        self._table[job.id] = job if job.state == LEASED else self._pack(job)

    def load_packed(self, job_id: str, record: bytes) -> Packed:
        """A packed job from a state image whose names are loaded; raises
        ValueError if it is not one this table could have packed."""
        try:
            packed = _decode(record)
        except msgspec.DecodeError as error:
            raise ValueError(f"job {job_id!r} does not decode: {error}") from None
        if not 0 <= packed.state < len(PACKED_STATES):
            raise ValueError(f"job {job_id!r} has no state {packed.state}")
        for number in (packed.queue, packed.type):
            self.names.name(number)  # raises if it names nothing
            self.names.uses[number] += 1
        self._table[job_id] = record
        return packed

    # --- the forms ------------------------------------------------------------

    def _pack(self, job: Job) -> bytes:
        state = job.state
        assert state != LEASED and not (job.owner or job.token or job.deadline_ms), job
        if state == READY:
            after_ms = job.ready_ms - job.created_ms
        elif state == DEAD:
            after_ms = 0
        else:
            after_ms = job.run_at_ms - job.created_ms
        cold = None
        if job.failures or job.died_ms or job.last_error is not None or job.batch is not None:
            cold = Cold(job.failures, job.died_ms, job.last_error, job.batch)
        numbers = self.names.numbers
        return self._encode(
            Packed(
                _CODES[state],
                numbers[job.queue],
                numbers[job.type],
                job.priority,
                job.max_attempts,
                job.lease_ttl_ms,
                job.retry_base_ms,
                job.created_ms,
                after_ms,
                job.args,
                cold,
            )
        )

    def _encode(self, packed: Packed) -> bytes:
        # Through a scratch buffer, then copied: the bytes an encoder returns
        # sit in a block sized for its growing buffer (~70 B more for a job).
        _encoder.encode_into(packed, self._scratch)
        return bytes(self._scratch)

    def _unpack(self, job_id: str, record: bytes) -> Job:
        packed = _decode(record)
        names = self.names.names
        state = PACKED_STATES[packed.state]
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
            state,
            at_ms if state in (SCHEDULED, RETRYING) else 0,
            cold.failures,
            cold.last_error,
            "",
            0,
            0,
            cold.died_ms,
            0,
            cold.batch,
            at_ms if state == READY else 0,
        )

    def problems(self) -> list[str]:
        """Cross-checks of the forms and the names against the jobs; [] when consistent."""
        problems = [f"job {job_id} is still thawed" for job_id in self._touched]
        uses = [0] * len(self.names.names)
        for job_id, stored in self._table.items():
            job = self[job_id]
            if isinstance(stored, Job) != (job.state == LEASED):
                problems.append(f"job {job_id} is {job.state} but stored as {type(stored)}")
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
