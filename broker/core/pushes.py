"""Push (and push_many, and the jobs of create_batch): the jobs to create.

Rules, in the order they are checked for each job spec:
1. An id the broker still knows as a job: nothing is created, the reply
   names the existing job (created = false). So does an id named earlier
   in the same request, and an id that is already a member of the batch the
   spec names (its job may be acked and gone: the batch remembers it), whose
   reply state is then the member state.
2. A spec that names a batch joins it in the record that creates the job.
   An open batch takes jobs from anyone. A committed batch takes them only
   from a running member of it or of a batch below it, proven by that
   member's lease (``lease`` on the request): a batch cannot finish while
   one of its members is still adding to it. A finished or abandoned batch
   takes nothing.
3. A spec with a uniqueness key (unique.py) that a job holds creates
   nothing: the reply names that job, ``duplicate`` true. So does a key
   named earlier in the same request (the first spec with it wins). A new
   key over ``unique_keys_max`` held keys is refused.
4. A job is ready at once unless its run_at_ms / delay_ms is in the future.
Error paths are relative to the spec ("." + field) unless they name
another part of the request ("$.lease[1]"); the caller prefixes them.
"""

from typing import NamedTuple

from leash.broker.core import records as R
from leash.broker.core import unique
from leash.broker.core.batches.state import COMMITTED, OPEN
from leash.broker.core.common import Rejected, lease_of
from leash.broker.core.state import State
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from leash.protocol.limits import SCHEDULE_HORIZON_MS, SERVER_ID_PREFIX


class Pushes(NamedTuple):
    jobs: list[R.NewJob]  # to create, in order
    results: list[M.PushResult]  # one per spec
    counter_after: int
    extras: list[R.JobExtras]  # the keys, expiries and time limits the jobs carry


def push_specs(
    state: State,
    specs: list[M.JobSpec],
    now_ms: int,
    lease: M.LeaseRef | None,
    paths: list[str],
    *,
    into: str | None = None,
    counter: int | None = None,
) -> Pushes:
    """The jobs the specs create; ``into``: they all join this new batch."""
    pending: dict[str, M.PushResult] = {}
    keys: dict[str, M.PushResult] = {}  # the keys of the jobs created so far
    extras: list[R.JobExtras] = []
    jobs: list[R.NewJob] = []
    results: list[M.PushResult] = []
    counter = state.counter if counter is None else counter
    for spec, path in zip(specs, paths, strict=True):
        try:
            new, result, extra = _push_one(state, spec, now_ms, pending, keys, counter, lease, into)
        except Rejected as rejected:
            where = path + rejected.path if rejected.path.startswith(".") else rejected.path
            raise Rejected(rejected.code, rejected.message, where) from None
        if new is not None:
            jobs.append(new)
            pending[new.id] = result
            if extra is not None:
                extras.append(extra)
                if extra.unique_key is not None:
                    keys[extra.unique_key] = M.PushResult(result.id, False, result.state, True)
            counter += spec.id is None  # a number of the epoch's counter made its id
        results.append(result)
    return Pushes(jobs, results, counter, extras)


def _push_one(
    state: State,
    spec: M.JobSpec,
    now_ms: int,
    pending: dict[str, M.PushResult],
    keys: dict[str, M.PushResult],
    counter: int,
    lease: M.LeaseRef | None,
    into: str | None,
) -> tuple[R.NewJob | None, M.PushResult, R.JobExtras | None]:
    """The job to create (None if its id is known or its key held), the
    push's result, and what the job carries beside (None: nothing)."""
    if into is not None and spec.batch not in (None, into):
        raise Rejected(ErrorCode.BAD_REQUEST, f"the jobs of batch {into!r} join it", ".batch")
    batch_id = into if into is not None else spec.batch
    if spec.id is not None:
        known = _known(state, spec.id, pending, None if into is not None else batch_id)
        if known is not None:
            return None, known, None
    # (the common push has no key: no call for it)
    key = unique.key_of(spec) if spec.unique_key is not None or spec.unique else None
    if key is not None:
        held = keys.get(key) or unique.holder(state, key, now_ms)
        if held is not None:
            return None, held, None
        _check_room(state, key, len(keys))
    if batch_id is not None and into is None:
        check_target(state, batch_id, lease)
    run_at_ms = _run_at_ms(spec, now_ms)
    timed = spec.expires_at_ms is not None or spec.ttl_ms is not None
    expires_ms = _expires_ms(spec, now_ms) if timed else 0
    job_id = spec.id or f"{SERVER_ID_PREFIX}{state.epoch:x}.{counter:x}"
    new = new_job(spec, job_id, now_ms, run_at_ms, batch_id)
    extras = None
    concurrency_key = spec.concurrency_key
    if (
        key is not None
        or expires_ms
        or spec.time_limit_ms
        or concurrency_key is not None
        or spec.keep_result_ms
    ):
        extras = R.JobExtras(
            job_id,
            unique_key=key,
            unique_for_ms=spec.unique_for_ms if key else 0,
            expires_ms=expires_ms,
            time_limit_ms=spec.time_limit_ms or 0,
            concurrency_key=concurrency_key,
            keep_result_ms=spec.keep_result_ms,
        )
    return new, M.PushResult(job_id, True, "ready" if run_at_ms is None else "scheduled"), extras


def _expires_ms(spec: M.JobSpec, now_ms: int) -> int:
    """When the job expires unless leased before; it must be in the future."""
    if spec.ttl_ms is not None:
        return now_ms + spec.ttl_ms
    expires_ms = spec.expires_at_ms or 0
    if expires_ms <= now_ms:  # (0 too)
        message = "expires_at_ms has passed: the job could never run"
        raise Rejected(ErrorCode.BAD_REQUEST, message, ".expires_at_ms")
    return expires_ms


def _check_room(state: State, key: str, taking: int) -> None:
    """Whether one more key may be held (a window that passed is replaced, not added)."""
    if key in state.unique or len(state.unique) + taking < state.config.unique_keys_max:
        return
    message = f"the broker holds {state.config.unique_keys_max} uniqueness keys, its limit"
    raise Rejected(ErrorCode.TOO_LARGE, message, ".unique_key")


def new_job(
    spec: M.JobSpec | R.CallbackSpec | R.ScheduleSpec,
    job_id: str,
    created_ms: int,
    run_at_ms: int | None,
    batch_id: str | None,
) -> R.NewJob:
    return R.NewJob(
        id=job_id,
        queue=spec.queue,
        type=spec.type,
        args=spec.args.copy(),  # do not keep the whole request frame alive
        priority=spec.priority,
        max_attempts=spec.max_attempts,
        lease_ttl_ms=spec.lease_ttl_ms,
        retry_base_ms=spec.retry_base_ms,
        created_ms=created_ms,
        run_at_ms=run_at_ms,
        batch=batch_id,
    )


def _known(
    state: State, job_id: str, pending: dict[str, M.PushResult], batch_id: str | None
) -> M.PushResult | None:
    known = state.jobs.get(job_id)
    if known is not None:
        return M.PushResult(known.id, False, known.state)
    if job_id in pending:
        earlier = pending[job_id]
        return M.PushResult(earlier.id, False, earlier.state)
    batch = state.batches.get(batch_id) if batch_id is not None else None
    if batch is not None and job_id in batch.members:
        return M.PushResult(job_id, False, batch.members[job_id])
    return None


def check_target(state: State, batch_id: str, lease: M.LeaseRef | None) -> None:
    """Whether jobs (or a child batch) may join this batch now; raise if not."""
    batch = state.batches.get(batch_id)
    if batch is None:
        raise Rejected(ErrorCode.NOT_FOUND, f"no batch {batch_id!r}", ".batch")
    if batch.state == OPEN:
        return
    if batch.state != COMMITTED:
        message = f"batch {batch_id!r} is {batch.state}: nothing can join it"
        raise Rejected(ErrorCode.INVALID_STATE, message, ".batch")
    if lease is None:
        message = (
            f"batch {batch_id!r} is committed: only a running member of it can add to it, "
            "presenting its lease"
        )
        raise Rejected(ErrorCode.INVALID_STATE, message, ".batch")
    holder = lease_of(state, lease.id, lease.token, "$.lease[0]", "$.lease[1]")
    if not within(state, holder.batch, batch_id):
        message = f"job {lease.id!r} is not a member of batch {batch_id!r} or of one below it"
        raise Rejected(ErrorCode.INVALID_STATE, message, "$.lease[0]")


def within(state: State, batch_id: str | None, ancestor: str) -> bool:
    """Whether ``batch_id`` is ``ancestor`` or a batch below it."""
    while batch_id is not None:
        if batch_id == ancestor:
            return True
        batch_id = state.batches[batch_id].parent
    return False


def _run_at_ms(spec: M.JobSpec, now_ms: int) -> int | None:
    if spec.delay_ms is not None:
        run_at_ms = now_ms + spec.delay_ms
    elif spec.run_at_ms is not None:
        run_at_ms = spec.run_at_ms
    else:
        return None
    if run_at_ms > now_ms + SCHEDULE_HORIZON_MS:
        raise Rejected(ErrorCode.BAD_REQUEST, "run_at_ms is too far in the future", ".run_at_ms")
    return run_at_ms if run_at_ms > now_ms else None
