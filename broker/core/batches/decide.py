"""The batch requests: create (with jobs, maybe committed at once), commit,
status, delete. Pure, like decide: the reply and the records.

Rules:
- A batch id the broker knows: create changes nothing (created = false), so
  a producer may repeat a create whose reply it lost.
- A parent must exist and be unfinished; if it is committed, the create
  presents the lease of a running member of the parent or of a batch below
  it (the same proof as adding jobs, pushes.check_target). Nesting is at
  most ``BATCH_DEPTH_MAX`` levels deep.
- Callback specs are job specs, checked like any; their ids are made by
  the broker (``_cb:<batch>:<serial>:<kind>``) and they join no batch of
  their own choosing (a child's callbacks join its parent).
- Commit of an open batch judges it from then on; of a committed or
  finished one, changes nothing; of an abandoned one, is refused.
"""

from typing import assert_never

from leash.broker.core import records as R
from leash.broker.core.batches.state import ABANDONED, CALLBACK_KINDS, COMMITTED, OPEN, Batch
from leash.broker.core.batches.views import batch_view
from leash.broker.core.common import Rejected
from leash.broker.core.pushes import check_target, push_specs
from leash.broker.core.state import State
from leash.protocol import admin as A
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from leash.protocol.limits import BATCH_DEPTH_MAX, SCHEDULE_HORIZON_MS

BatchRequest = M.CreateBatch | M.CommitBatch | M.GetBatchStatus | A.DeleteBatch
Decided = tuple[M.Reply, list[R.Record]]


def decide_batch(state: State, request: BatchRequest, now_ms: int) -> Decided:
    match request:
        case M.CreateBatch():
            return _create(state, request, now_ms)
        case M.CommitBatch(rid=rid, id=batch_id):
            batch = _batch(state, batch_id)
            if batch.state == ABANDONED:
                message = f"batch {batch_id!r} was abandoned: it was not committed in time"
                raise Rejected(ErrorCode.INVALID_STATE, message, "$.id")
            records: list[R.Record] = []
            if batch.state == OPEN:
                records.append(R.BatchCommitted(batch_id, now_ms))
            return M.Ok(rid), records
        case M.GetBatchStatus(rid=rid, id=batch_id, limit=limit):
            return M.BatchInfo(rid, batch_view(state, _batch(state, batch_id), limit)), []
        case A.DeleteBatch(rid=rid, id=batch_id):
            _batch(state, batch_id)
            return M.Ok(rid), [R.BatchDeleted(batch_id, now_ms)]


def _batch(state: State, batch_id: str) -> Batch:
    batch = state.batches.get(batch_id)
    if batch is None:
        raise Rejected(ErrorCode.NOT_FOUND, f"no batch {batch_id!r}", "$.id")
    return batch


def _create(state: State, request: M.CreateBatch, now_ms: int) -> Decided:
    known = state.batches.get(request.id) if request.id is not None else None
    if known is not None:
        return M.BatchCreated(request.rid, known.id, False, known.state, []), []
    if request.parent is not None:
        _check_parent(state, request.parent, request.lease)
    callbacks = _callbacks(request.callbacks, now_ms)
    counter = state.counter  # the batch's serial (and id, if the broker makes it) ...
    batch_id = request.id or f"_b{state.epoch:x}.{counter:x}"
    paths = [f"$.jobs[{index}]" for index in range(len(request.jobs))]
    pushes = push_specs(  # ... and the jobs' ids after it
        state, request.jobs, now_ms, None, paths, into=batch_id, counter=counter + 1
    )
    config = state.config
    new = R.NewBatch(
        id=batch_id,
        serial=state.next_token(),
        description=request.description,
        parent=request.parent,
        callbacks=callbacks,
        created_ms=now_ms,
        open_deadline_ms=now_ms + config.batch_open_timeout_ms,
        expires_ms=now_ms + config.batch_unfinished_retention_ms,
        finished_retention_ms=config.batch_finished_retention_ms,
        committed=request.commit,
    )
    reply = M.BatchCreated(
        request.rid, batch_id, True, COMMITTED if request.commit else OPEN, pushes.results
    )
    return reply, [R.BatchOpened(new, pushes.jobs, pushes.counter_after, pushes.extras)]


def _check_parent(state: State, parent_id: str, lease: M.LeaseRef | None) -> None:
    try:
        check_target(state, parent_id, lease)
    except Rejected as rejected:
        path = "$.parent" if rejected.path == ".batch" else rejected.path
        raise Rejected(rejected.code, rejected.message, path) from None
    depth, node = 1, state.batches[parent_id]
    while node.parent is not None:
        node, depth = state.batches[node.parent], depth + 1
    if depth >= BATCH_DEPTH_MAX:
        message = f"batches nest at most {BATCH_DEPTH_MAX} levels deep"
        raise Rejected(ErrorCode.BAD_REQUEST, message, "$.parent")


def _callback(callbacks: M.BatchCallbacks, kind: R.CallbackKind) -> M.JobSpec | None:
    match kind:
        case "success":
            return callbacks.success
        case "complete":
            return callbacks.complete
        case "death":
            return callbacks.death
        case _:
            assert_never(kind)


def _callbacks(callbacks: M.BatchCallbacks, now_ms: int) -> list[R.CallbackSpec]:
    specs: list[R.CallbackSpec] = []
    for kind in CALLBACK_KINDS:
        spec = _callback(callbacks, kind)
        if spec is None:
            continue
        path = f"$.callbacks.{kind}"
        if spec.id is not None:
            message = "a callback's id is made by the broker"
            raise Rejected(ErrorCode.BAD_REQUEST, message, f"{path}.id")
        if spec.batch is not None:
            message = "a callback joins no batch of its choosing (a child's joins its parent)"
            raise Rejected(ErrorCode.BAD_REQUEST, message, f"{path}.batch")
        if spec.run_at_ms is not None and spec.run_at_ms > now_ms + SCHEDULE_HORIZON_MS:
            message = "run_at_ms is too far in the future"
            raise Rejected(ErrorCode.BAD_REQUEST, message, f"{path}.run_at_ms")
        specs.append(
            R.CallbackSpec(
                kind=kind,
                queue=spec.queue,
                type=spec.type,
                args=spec.args.copy(),
                priority=spec.priority,
                max_attempts=spec.max_attempts,
                lease_ttl_ms=spec.lease_ttl_ms,
                retry_base_ms=spec.retry_base_ms,
                delay_ms=spec.delay_ms,
                run_at_ms=spec.run_at_ms,
            )
        )
    return specs
