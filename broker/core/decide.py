"""decide(state, request, worker_id, now_ms): the reply and the records.

Pure: reads the state, never changes it. Expected refusals raise
``Rejected`` inside the handlers and become an ``Error`` reply in one place
(``decide``). A command's records are applied by the caller with no await
in between, so what decide saw is what apply changes.
"""

from typing import NamedTuple, assert_never

from leash.broker.core import history, limits, progress, results, timelimit
from leash.broker.core import processes as P
from leash.broker.core import records as R
from leash.broker.core.attempts import attempt_views
from leash.broker.core.batches.decide import decide_batch
from leash.broker.core.common import Rejected, failure_for, lease_of
from leash.broker.core.expiry import expired
from leash.broker.core.pushes import Pushes, push_specs
from leash.broker.core.state import COUNTER_ROLL_AT, DEAD, LEASED, PRIORITIES, Job, Queue, State
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from leash.protocol.limits import FETCH_REPLY_ARGS_MAX_BYTES


class Outcome(NamedTuple):
    reply: M.Reply
    records: list[R.Record]
    may_wait: bool = False  # a fetch found nothing and asked to wait for jobs
    # The reply may leave once its records are written, before an fsync
    # (a fetch: a lease lost to a power loss only runs its job again, as an
    # expired lease does; the epoch synced at boot keeps fencing).
    written_enough: bool = False


def decide(state: State, request: M.Request, worker_id: str, now_ms: int) -> Outcome:
    try:
        return _decide(state, request, worker_id, now_ms)
    except Rejected as rejected:
        error = M.Error(request.rid, rejected.code, rejected.message, rejected.path)
        return Outcome(error, [])


def _decide(state: State, request: M.Request, worker_id: str, now_ms: int) -> Outcome:
    match request:
        case M.Fetch():
            return fetch(state, request, worker_id, now_ms)
        case M.Ack(rid=rid, id=job_id, token=token, result=value):
            job = lease_of(state, job_id, token)
            ref = M.LeaseRef(job_id, token)
            kept = results.to_keep(state, job, value, "$.result")
            if kept is not None:
                return Outcome(M.Ok(rid), [R.ResultsAcked([ref], [kept], now_ms)])
            return Outcome(M.Ok(rid), [R.JobsAcked([ref], now_ms)])
        case M.AckMany():
            return _ack_many(state, request, now_ms)
        case M.Push(rid=rid, job=spec, lease=lease):
            pushes = push_specs(state, [spec], now_ms, lease, ["$.job"])
            (result,) = pushes.results
            pushed = M.Pushed(rid, result.id, result.created, result.state, result.duplicate)
            return Outcome(pushed, _pushed(pushes))
        case M.PushMany(rid=rid, jobs=specs, lease=lease):
            paths = [f"$.jobs[{index}]" for index in range(len(specs))]
            pushes = push_specs(state, specs, now_ms, lease, paths)
            return Outcome(M.PushedMany(rid, pushes.results), _pushed(pushes))
        case M.Fail(rid=rid, id=job_id, token=token, error=error):
            job = lease_of(state, job_id, token)
            failure = failure_for(state, job, error, now_ms, request.dead, request.retry_in_ms)
            dead = failure.retry_at_ms is None
            reply = M.Failed(rid, "dead" if dead else "retrying", failure.retry_at_ms)
            return Outcome(reply, [R.AttemptsFailed([failure])])
        case M.Extend(rid=rid, id=job_id, token=token, lease_ttl_ms=ttl_ms):
            job = lease_of(state, job_id, token)
            deadline_ms = timelimit.capped_ms(job, now_ms + (ttl_ms or job.lease_ttl_ms))
            return Outcome(
                M.Extended(rid, deadline_ms), [R.LeaseExtended(job_id, token, deadline_ms)]
            )
        case M.Release(rid=rid, id=job_id, token=token, delay_ms=delay_ms):
            lease_of(state, job_id, token)
            run_at_ms = now_ms + delay_ms if delay_ms else 0  # 0: ready at once
            return Outcome(M.Ok(rid), [R.LeaseReleased(job_id, token, now_ms, run_at_ms)])
        case M.GetResult():
            return Outcome(*results.answer(state, request))
        case M.GetJob(rid=rid, id=job_id):
            found = state.jobs.get(job_id)
            if found is not None:
                return Outcome(M.JobInfo(rid, job_view(found, detail=True)), [])
            finished = state.history.get(job_id)
            if finished is None:
                raise Rejected(ErrorCode.NOT_FOUND, f"no job {job_id!r}", "$.id")
            return Outcome(M.JobInfo(rid, history.view(finished)), [])
        case M.Beat(rid=rid):
            if worker_id not in state.processes:
                raise Rejected(ErrorCode.NOT_FOUND, f"no process {worker_id!r}")
            return Outcome(*P.beat(state, rid, worker_id, now_ms))
        case M.CreateBatch() | M.CommitBatch() | M.GetBatchStatus():
            return Outcome(*decide_batch(state, request, now_ms))
        case M.Progress():
            return Outcome(*progress.report(state, request, now_ms))
        case M.Cancel(rid=rid):  # the shell has ended the held request, if it was held
            return Outcome(M.Ok(rid), [])
        case M.Hello() | M.Auth():
            message = "hello and auth are only valid in the handshake"
            raise Rejected(ErrorCode.BAD_REQUEST, message, "$.op")
        case _:
            assert_never(request)


def _pushed(pushes: Pushes) -> list[R.Record]:
    return [R.JobsPushed(pushes.jobs, pushes.counter_after, pushes.extras)] if pushes.jobs else []


def has_ready(state: State, name: str, now_ms: int) -> bool:
    """Whether a fetch could take a job from this queue now."""
    queue = state.queues.get(name)
    if queue is None or queue.paused or not queue.ready:
        return False
    return not state.limits or (limits.room(state, queue, now_ms) > 0 and limits.servable(queue))


def fetch(state: State, request: M.Fetch, worker_id: str, now_ms: int) -> Outcome:
    grants: list[R.Grant] = []
    deliveries: list[M.Delivery] = []
    want = request.count
    if not P.can_fetch(state, worker_id):  # unknown, quiet or terminating: nothing
        return Outcome(M.Jobs(request.rid, []), [], request.wait_ms > 0, written_enough=True)
    budget_bytes = FETCH_REPLY_ARGS_MAX_BYTES  # keeps the reply within any frame limit
    for name in dict.fromkeys(request.queues):  # a queue named twice is taken once
        queue = state.queues.get(name)
        if queue is None or queue.paused or not queue.ready:
            continue
        if state.limits or queue.lanes:  # limits or keyed jobs (limits.py): a walk of its own
            taking = _Taking(state, grants, deliveries, want, budget_bytes, now_ms)
            room = limits.room(state, queue, now_ms)
            done = room > 0 and taking.take(queue, room)
            want, budget_bytes = taking.want, taking.budget_bytes
            if done:
                break
            continue
        # The common queue, written out: a fetch's cost is mostly this loop.
        for priority in PRIORITIES:
            bucket = queue.buckets.get(priority)
            if not bucket:
                continue
            for job_id in bucket:
                job = state.jobs[job_id]
                if job.expires_ms and expired(job, now_ms):  # never leased; the tick removes it
                    continue
                budget_bytes -= len(job.args)
                if grants and budget_bytes < 0:
                    want = len(grants)
                    break
                token = state.next_token(len(grants))
                deadline_ms = timelimit.granted_ms(job, now_ms)
                grants.append(R.Grant(job.id, token, deadline_ms))
                deliveries.append(_delivery(job, token, deadline_ms))
                if len(grants) == want:
                    break
            if len(grants) == want:
                break
        if len(grants) == want:
            break
    reply = M.Jobs(request.rid, deliveries)
    if not grants:
        return Outcome(reply, [], request.wait_ms > 0, written_enough=True)
    counter = state.counter + len(grants)
    records: list[R.Record] = [R.JobsLeased(worker_id, grants, counter, now_ms)]
    return Outcome(reply, records, written_enough=True)


class _Taking:
    """What one fetch takes of a queue with limits or keyed jobs, in the
    order it meets them: bucket by bucket, a token's lane (limits.py) as
    far as its key's room allows, up to the queue's room."""

    __slots__ = ("budget_bytes", "deliveries", "grants", "keys_taken", "now_ms", "state", "want")

    def __init__(
        self,
        state: State,
        grants: list[R.Grant],
        deliveries: list[M.Delivery],
        want: int,
        budget_bytes: int,
        now_ms: int,
    ) -> None:
        self.state, self.want, self.now_ms = state, want, now_ms
        self.grants, self.deliveries = grants, deliveries  # the fetch's, added to
        self.budget_bytes = budget_bytes
        self.keys_taken: dict[str, int] | None = None  # jobs of each key taken

    def take(self, queue: Queue, room: int) -> bool:
        """Take up to ``room`` jobs of the queue; whether the fetch is done."""
        grants, buckets, lanes, one = self.grants, queue.buckets, queue.lanes, self._one
        stop = min(self.want, len(grants) + room)
        for priority in PRIORITIES:
            bucket = buckets.get(priority)
            if not bucket:
                continue
            for job_id in bucket:
                if lanes and job_id[0] == limits.TOKEN_PREFIX:
                    if self._lane(queue, job_id[1:], priority, stop):
                        return True
                elif one(job_id):
                    return True
                if len(grants) >= stop:
                    return len(grants) >= self.want
        return False

    def _lane(self, queue: Queue, key: str, priority: int, stop: int) -> bool:
        """Take from a key's lane until ``stop`` grants or the key's room
        (less what this fetch took of the key at other priorities) is used;
        whether the fetch is done."""
        keys_taken = self.keys_taken
        if keys_taken is None:
            keys_taken = self.keys_taken = {}
        taken = keys_taken.get(key, 0)
        before = len(self.grants)
        stop = min(stop, before + limits.key_room(self.state, queue, key, taken))
        done = False
        for job_id in queue.lanes[key][priority]:
            if len(self.grants) >= stop:
                break
            if self._one(job_id):
                done = True
                break
        keys_taken[key] = taken + len(self.grants) - before
        return done

    def _one(self, job_id: str) -> bool:
        """Take one job unless it expired; whether the fetch is done (its
        count reached, or the reply's bytes used up)."""
        state, grants, now_ms = self.state, self.grants, self.now_ms
        job = state.jobs[job_id]
        if job.expires_ms and expired(job, now_ms):  # never leased; the tick removes it
            return False
        self.budget_bytes -= len(job.args)
        if grants and self.budget_bytes < 0:
            self.want = len(grants)
            return True
        token = state.next_token(len(grants))
        deadline_ms = timelimit.granted_ms(job, now_ms)
        grants.append(R.Grant(job.id, token, deadline_ms))
        self.deliveries.append(_delivery(job, token, deadline_ms))
        return len(grants) == self.want


def _delivery(job: Job, token: int, deadline_ms: int) -> M.Delivery:
    return M.Delivery(
        id=job.id,
        queue=job.queue,
        type=job.type,
        args=job.args,
        token=token,
        deadline_ms=deadline_ms,
        attempt=job.failures + 1,
        max_attempts=job.max_attempts,
        lease_ttl_ms=job.lease_ttl_ms,
        priority=job.priority,
        created_ms=job.created_ms,
        batch=job.batch,
        time_limit_ms=job.time_limit_ms or None,
        keep_result=job.keep_result_ms > 0,
    )


def _ack_many(state: State, request: M.AckMany, now_ms: int) -> Outcome:
    acked: list[M.LeaseRef] = []
    keeping: list[M.LeaseRef] = []  # the acks whose results are kept
    values: list[bytes] = []
    sent = request.results
    seen: set[str] = set()
    answers: list[M.ItemResult] = []
    for index, lease in enumerate(request.leases):
        try:
            if lease.id in seen:
                raise Rejected(ErrorCode.STALE_LEASE, f"job {lease.id!r} is acked twice")
            job = lease_of(state, lease.id, lease.token)
            kept = None
            if sent is not None and sent[index] is not None:
                kept = results.to_keep(state, job, sent[index], f"$.results[{index}]")
        except Rejected as rejected:
            answers.append(M.ItemResult(lease.id, rejected.code, rejected.message))
            continue
        seen.add(lease.id)
        if kept is None:
            acked.append(lease)
        else:
            keeping.append(lease)
            values.append(kept)
        answers.append(M.ItemResult(lease.id))
    records: list[R.Record] = [R.JobsAcked(acked, now_ms)] if acked else []
    if keeping:
        records.append(R.ResultsAcked(keeping, values, now_ms))
    return Outcome(M.AckedMany(request.rid, answers), records)


def job_view(job: Job, *, detail: bool = False) -> M.JobView:
    """The job as the wire shows it; ``detail``: with its attempts."""
    leased = job.state == LEASED
    report = job.progress  # only a leased job has one (progress.py)
    return M.JobView(
        id=job.id,
        queue=job.queue,
        type=job.type,
        args=job.args,
        state=job.state,
        priority=job.priority,
        attempt=job.failures,
        max_attempts=job.max_attempts,
        lease_ttl_ms=job.lease_ttl_ms,
        created_ms=job.created_ms,
        run_at_ms=job.run_at_ms or None,
        retry_base_ms=job.retry_base_ms,
        last_error=job.last_error,
        owner=job.owner if leased else None,
        token=job.token if leased else None,
        deadline_ms=job.deadline_ms if leased else None,
        died_ms=job.died_ms if job.state == DEAD else None,
        batch=job.batch,
        leased_ms=job.leased_ms if leased else None,
        attempts=attempt_views(job) if detail else [],
        unique_key=job.unique_key,
        unique_for_ms=job.unique_for_ms or None,
        expires_ms=job.expires_ms or None,
        time_limit_ms=job.time_limit_ms or None,
        progress=report.percent if report is not None else None,
        progress_message=report.message if report is not None else None,
        progress_ms=report.at_ms if report is not None else None,
        concurrency_key=job.concurrency_key,
    )


def roll_due(state: State, now_ms: int) -> list[R.Record]:
    """Before a decision: the record that moves to a new epoch once this
    one's counter nears its end, so tokens never overflow into the epoch
    bits. The shell makes it durable before any reply, as a boot record."""
    if state.counter < COUNTER_ROLL_AT:
        return []
    return [R.EpochRolled(epoch=state.epoch + 1, at_ms=now_ms)]


def boot(state: State, now_ms: int) -> R.Booted:
    """The record that opens an epoch: written and synced before serving.
    Every known process, whatever protocol it speaks (a Faktory consumer
    too, whose TTL is longer), gets the restart grace from now to come back
    (no connection survived the restart): a live worker reconnects within
    it and keeps its leases, so they do not run twice, and has its own TTL
    again from then on; the leases of one that died meanwhile are lost at
    its end, and their jobs run again."""
    deadline_ms = now_ms + state.config.restart_grace_ms
    return R.Booted(epoch=state.epoch + 1, at_ms=now_ms, process_deadline_ms=deadline_ms)
