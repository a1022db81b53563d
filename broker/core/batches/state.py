"""What the broker keeps about a batch, and the words for its parts.

A batch is ``open`` (producers add jobs), ``committed`` (judged: it
finishes when nothing in it is unfinished), ``finished`` or ``abandoned``
(an open batch that was never committed). The last two are final.

Its *items* are its member jobs and its child batches; each has exactly one
state in the batch's tables, and the tallies count them (cached, and
cross-checked by ``checks.py``):

- a member job is ``pending`` (no attempt has ended yet), ``retrying`` (it
  failed at least once and will run again), ``succeeded``, ``dead`` or
  ``deleted`` (by an operator);
- a child batch is ``running`` (not complete yet), ``complete`` (complete,
  not finished), ``succeeded``, ``failed`` (finished without success, or
  abandoned) or ``deleted`` (deleted or expired before it finished).

The three conditions a batch is judged by, over all its items:

- complete: no item is ``pending`` or ``running``;
- finished: besides, no item is ``retrying`` or ``complete``;
- succeeded: finished, and every item ``succeeded`` or ``deleted``.

Members stay in ``members`` until the batch is removed (so that a push
repeated after its job was acked is known); children stay in ``children``
until either batch is removed, and their tally keeps counting them after.
"""

from typing import Final, Literal, assert_never

import msgspec
from msgspec import Struct

from leash.broker.core.records import CallbackKind, CallbackSpec

# The words are plain strings (what the journal and the images hold); the
# Literal types let the type checker see every case where code branches on them.
BatchState = Literal["open", "committed", "finished", "abandoned"]
MemberState = Literal["pending", "retrying", "succeeded", "dead", "deleted"]
ChildState = Literal["running", "complete", "succeeded", "failed", "deleted"]
BatchDeadline = Literal["open", "expire"]  # abandoned then unless committed; removed then

OPEN: Final = "open"
COMMITTED: Final = "committed"
FINISHED: Final = "finished"
ABANDONED: Final = "abandoned"

PENDING: Final = "pending"
RETRYING: Final = "retrying"
SUCCEEDED: Final = "succeeded"
DEAD: Final = "dead"
DELETED: Final = "deleted"
MEMBER_STATES: Final[tuple[MemberState, ...]] = (PENDING, RETRYING, SUCCEEDED, DEAD, DELETED)

RUNNING: Final = "running"
COMPLETE: Final = "complete"
FAILED: Final = "failed"
CHILD_STATES: Final[tuple[ChildState, ...]] = (RUNNING, COMPLETE, SUCCEEDED, FAILED, DELETED)

SUCCESS: Final = "success"
DEATH: Final = "death"
CALLBACK_KINDS: Final[tuple[CallbackKind, ...]] = (SUCCESS, COMPLETE, DEATH)

UNFINISHED_MEMBER: Final[frozenset[MemberState]] = frozenset({PENDING, RETRYING})
UNFINISHED_CHILD: Final[frozenset[ChildState]] = frozenset({RUNNING, COMPLETE})
CALLBACK_PREFIX: Final = "_cb:"


def _zero_members() -> dict[MemberState, int]:
    return dict.fromkeys(MEMBER_STATES, 0)


def _zero_children() -> dict[ChildState, int]:
    return dict.fromkeys(CHILD_STATES, 0)


class Batch(Struct):
    id: str
    serial: int
    description: str
    parent: str | None
    callbacks: dict[CallbackKind, CallbackSpec]
    created_ms: int
    open_deadline_ms: int
    expires_ms: int
    finished_retention_ms: int
    state: BatchState = OPEN
    committed_ms: int = 0
    complete_ms: int = 0  # committed and complete: when that first held
    died_ms: int = 0  # the first death of a member, or of anything below
    finished_ms: int = 0  # finished or abandoned
    succeeded: bool = False
    fired: dict[CallbackKind, int] = {}  # when each fired callback was enqueued
    members: dict[str, MemberState] = {}  # job id -> its state, in the order they joined
    tally: dict[MemberState, int] = msgspec.field(default_factory=_zero_members)
    children: dict[str, ChildState] = {}  # child batch id -> its state
    child_tally: dict[ChildState, int] = msgspec.field(default_factory=_zero_children)

    @property
    def unfinished(self) -> bool:
        return self.state in (OPEN, COMMITTED)

    def unrun_items(self) -> int:
        return self.tally[PENDING] + self.child_tally[RUNNING]

    def unfinished_items(self) -> int:
        tally, children = self.tally, self.child_tally
        return tally[PENDING] + tally[RETRYING] + children[RUNNING] + children[COMPLETE]

    def as_child(self) -> ChildState:
        """What this batch is in its parent's table."""
        match self.state:
            case "finished":
                return SUCCEEDED if self.succeeded else FAILED
            case "abandoned":
                return FAILED
            case "open" | "committed":
                return COMPLETE if self.complete_ms else RUNNING
            case _:
                assert_never(self.state)


def callback_id(batch: Batch, kind: CallbackKind) -> str:
    """The id of a callback job: unique for ever, because the serial is."""
    return f"{CALLBACK_PREFIX}{batch.id}:{batch.serial:x}:{kind}"


def plain_batch(batch: Batch) -> dict[str, object]:
    """The batch as plain data, in table order (``canonical``)."""
    plain = msgspec.structs.asdict(batch)
    plain["members"] = list(batch.members.items())
    plain["children"] = list(batch.children.items())
    plain["callbacks"] = {
        kind: {**msgspec.structs.asdict(spec), "args": bytes(spec.args)}
        for kind, spec in sorted(batch.callbacks.items())
    }
    return plain
