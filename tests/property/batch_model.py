"""A second, plain implementation of the batch rules, fed the records.

``BatchModel.observe(record, now_ms)`` follows what every record means for
batches, written straight from the rules (docs/protocol.md section 8.13)
rather than like broker/core/batches/transitions.py: no tallies, no cascade — after
every record each committed batch is judged again from its member and child
states until nothing changes. The stateful tests compare it with the core
after every record. It knows nothing of jobs beyond which batch each names.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field

from leash.broker.core import records as R
from leash.broker.core.config import CoreConfig

UNFINISHED_MEMBER = ("pending", "retrying")


@dataclass
class ModelBatch:
    id: str
    serial: int
    parent: str | None
    kinds: set[str]
    created_ms: int
    state: str = "open"
    members: dict[str, str] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)  # live children, in order
    gone_children: list[str] = field(default_factory=list)  # final states of removed ones
    fired: set[str] = field(default_factory=set)
    died: bool = False
    complete: bool = False
    succeeded: bool = False
    finished_ms: int = 0

    def callback_id(self, kind: str) -> str:
        return f"_cb:{self.id}:{self.serial:x}:{kind}"


class BatchModel:
    def __init__(self, config: CoreConfig) -> None:
        self.config = config
        self.batches: dict[str, ModelBatch] = {}
        self.job_batch: dict[str, str] = {}  # job id -> the unfinished batch it is a member of
        self.callbacks: set[str] = set()  # every callback job id the rules enqueued
        self.removed: list[str] = []  # batch ids removed (deleted or expired), in order

    # --- records ------------------------------------------------------------------

    def observe(self, record: R.Record, now_ms: int) -> None:
        match record:
            case R.BatchOpened(batch=new, jobs=jobs):
                self._open(new)
                self._join(jobs)
                if new.committed:
                    self.batches[new.id].state = "committed"
            case R.JobsPushed(jobs=jobs):
                self._join(jobs)
            case R.JobsAcked(leases=leases):
                for lease in leases:
                    self._outcome(lease.id, "succeeded")
            case R.AttemptsFailed(failures=failures) | R.ProcessDied(failures=failures):
                for failure in failures:
                    self._outcome(failure.id, "dead" if failure.retry_at_ms is None else "retrying")
            case R.JobKilled(id=job_id):
                self._outcome(job_id, "dead")
            case R.JobDeleted(id=job_id):
                self._outcome(job_id, "deleted")
            case R.JobRequeued(id=job_id):
                batch = self._batch_of(job_id)
                if batch is not None and batch.members[job_id] == "dead":
                    batch.members[job_id] = "retrying"
            case R.DeadTrimmed(ids=ids):
                for job_id in ids:
                    self.job_batch.pop(job_id, None)
            case R.BatchCommitted(id=batch_id):
                self.batches[batch_id].state = "committed"
            case R.BatchesAbandoned(ids=ids):
                for batch_id in ids:
                    self._abandon(self.batches[batch_id], now_ms)
            case R.BatchDeleted(id=batch_id):
                self._remove(batch_id)
            case R.BatchesExpired(ids=ids):
                for batch_id in ids:
                    self._remove(batch_id)
            case _:
                pass
        self._judge(now_ms)

    def _open(self, new: R.NewBatch) -> None:
        kinds = {spec.kind for spec in new.callbacks}
        batch = ModelBatch(new.id, new.serial, new.parent, kinds, new.created_ms)
        self.batches[new.id] = batch
        if new.parent is not None:
            self.batches[new.parent].children.append(new.id)

    def _join(self, jobs: list[R.NewJob]) -> None:
        for new in jobs:
            if new.batch is not None:
                self.batches[new.batch].members[new.id] = "pending"
                self.job_batch[new.id] = new.batch

    def _batch_of(self, job_id: str) -> ModelBatch | None:
        batch_id = self.job_batch.get(job_id)
        return None if batch_id is None else self.batches[batch_id]

    def _outcome(self, job_id: str, outcome: str) -> None:
        batch = self._batch_of(job_id)
        if batch is None:
            return
        batch.members[job_id] = outcome
        if outcome in ("succeeded", "deleted"):
            del self.job_batch[job_id]
        if outcome == "dead":
            for node in self._lineage(batch):
                node.died = True

    def _lineage(self, batch: ModelBatch) -> Iterator[ModelBatch]:
        node: ModelBatch | None = batch
        while node is not None:
            yield node
            node = self.batches[node.parent] if node.parent is not None else None

    def _abandon(self, batch: ModelBatch, now_ms: int) -> None:
        batch.state, batch.finished_ms = "abandoned", now_ms
        for job_id, member in list(batch.members.items()):
            if member in UNFINISHED_MEMBER:
                del batch.members[job_id]
        self._detach_jobs(batch.id)
        for child_id in list(batch.children):
            if self.child_state(child_id) in ("running", "complete"):
                batch.children.remove(child_id)
                self.batches[child_id].parent = None

    def _remove(self, batch_id: str) -> None:
        batch = self.batches[batch_id]
        if batch.parent is not None:
            parent = self.batches[batch.parent]
            final = self.child_state(batch_id)
            parent.gone_children.append("deleted" if final in ("running", "complete") else final)
            parent.children.remove(batch_id)
        for child_id in batch.children:
            self.batches[child_id].parent = None
        self._detach_jobs(batch_id)
        del self.batches[batch_id]
        self.removed.append(batch_id)

    def _detach_jobs(self, batch_id: str) -> None:
        for job_id in [j for j, b in self.job_batch.items() if b == batch_id]:
            del self.job_batch[job_id]

    # --- judging -------------------------------------------------------------------

    def child_state(self, child_id: str) -> str:
        child = self.batches[child_id]
        if child.state == "finished":
            return "succeeded" if child.succeeded else "failed"
        if child.state == "abandoned":
            return "failed"
        return "complete" if child.complete else "running"

    def _judge(self, now_ms: int) -> None:
        changed = True
        while changed:
            changed = False
            for batch in list(self.batches.values()):
                if batch.state == "committed":
                    changed |= self._judge_one(batch, now_ms)

    def _judge_one(self, batch: ModelBatch, now_ms: int) -> bool:
        items = list(batch.members.values())
        items += [self.child_state(c) for c in batch.children] + batch.gone_children
        changed = batch.died and self._fire(batch, "death")
        if not batch.complete and not {"pending", "running"} & set(items):
            batch.complete = True
            self._fire(batch, "complete")
            changed = True
        if not {"pending", "running", "retrying", "complete"} & set(items):
            batch.state, batch.finished_ms = "finished", now_ms
            batch.succeeded = not {"dead", "failed"} & set(items)
            if batch.succeeded:
                self._fire(batch, "success")
            for job_id, member in batch.members.items():
                if member == "dead" and self.job_batch.get(job_id) == batch.id:
                    del self.job_batch[job_id]
            changed = True
        return changed

    def _fire(self, batch: ModelBatch, kind: str) -> bool:
        if kind not in batch.kinds or kind in batch.fired:
            return False
        batch.fired.add(kind)
        job_id = batch.callback_id(kind)
        self.callbacks.add(job_id)
        if batch.parent is not None:
            self.batches[batch.parent].members[job_id] = "pending"
            self.job_batch[job_id] = batch.parent
        return True

    def expires_ms(self, batch: ModelBatch) -> int:
        if batch.state in ("finished", "abandoned"):
            return batch.finished_ms + self.config.batch_finished_retention_ms
        return batch.created_ms + self.config.batch_unfinished_retention_ms
