"""Every job created and every job that dies is counted, whatever made it.

One test per kind of record that creates or kills a job: the harness's core
applies each record through the shell's counting apply (server/totals.py,
``Totals.apply``), and the totals, the Prometheus counters rendered from
them (server/metrics.py) and the dashboard's history (server/history.py)
must say how many jobs were pushed and how many died, by queue. A last
test checks that the cases cover every kind of record that can create or
kill one.
"""

from collections.abc import Callable
from typing import Any, get_args

import pytest
from prometheus_client.core import Metric

from leash.broker.core import records as R
from leash.broker.server.history import TOTALS as HISTORY_TOTALS
from leash.broker.server.metrics import QueueFigures, Snapshot, _queue_metrics
from leash.broker.server.totals import Totals
from leash.protocol import admin as A
from leash.protocol import faktory as F
from leash.protocol import messages as M
from leash.protocol.limits import HISTORY_MAX_S
from tests.unit.test_core_harness import SECOND_MS, START_MS, Core

CALLBACK = M.JobSpec(type="cb", queue="callbacks")


class Counted(Core):
    """The harness's core, its live state applying records as the shell does."""

    def __init__(self, **config: Any) -> None:
        self.totals = Totals(START_MS)
        super().__init__(**config)
        self.apply_live = lambda state, record: self.totals.apply(state, record, self.now_ms)
        self.kinds: set[type] = set()  # every kind of record applied

    def apply(self, record: R.Record) -> None:
        super().apply(record)
        if hasattr(self, "kinds"):
            self.kinds.add(type(record))

    def operate(self, request: A.AdminRequest) -> None:
        assert isinstance(self.send(request).reply, M.Ok)

    def counter(self, total: str, queue: str) -> float:
        """The Prometheus counter ``leash_queue_<total>_total{queue=...}``."""
        figures = {
            name: QueueFigures(dict(counts), 0, 0, 0, 0, 0, False)
            for name, counts in self.totals.by_queue.items()
        }
        snapshot = Snapshot(figures, {}, 0, 0, 0, 0, 0, 0)
        families: list[Metric] = list(_queue_metrics(snapshot))
        samples = {
            (sample.name, sample.labels["queue"]): sample.value
            for family in families
            for sample in family.samples
        }
        return samples.get((f"leash_queue_{total}_total", queue), 0.0)

    def total(self, total: str, queue: str, count: int) -> None:
        """The total and its counter are ``count``; the history of the
        graphs (the last hour, a slot a second) counts as the totals do."""
        assert self.totals.by_queue.get(queue, {}).get(total, 0) == count, (total, queue)
        assert self.counter(total, queue) == count, (total, queue)
        if total in HISTORY_TOTALS:
            series = self.totals.history.series(self.now_ms, HISTORY_MAX_S)
            assert sum(series[total]) == self.totals.all[total], (total, series[total][-5:])


def member(core: Counted, job_id: str, **callbacks: M.JobSpec) -> None:
    """A job in a committed batch with these callbacks."""
    spec = M.JobSpec(type="t", queue="q", id=job_id, max_attempts=1)
    core.create_batch(spec, callbacks=M.BatchCallbacks(**callbacks), commit=True)


def pushed_by_push(core: Counted) -> type:
    core.push(queue="q")
    core.push_many(M.JobSpec(type="t", queue="q"), M.JobSpec(type="t", queue="q", delay_ms=5))
    core.total("pushed", "q", 3)
    return R.JobsPushed


def pushed_by_create_batch(core: Counted) -> type:
    core.create_batch(M.JobSpec(type="t", queue="q"), M.JobSpec(type="t", queue="q"))
    core.total("pushed", "q", 2)
    return R.BatchOpened


def faktory(core: Counted, line: bytes, worker: str = "") -> None:
    """A Faktory command, as the Faktory front end decides it: taken whole."""
    command = F.parse_line(line, 1 << 20)
    assert isinstance(command, F.Push | F.PushBulk | F.Fetch | F.Fail), command
    reply = core.faktory(command, worker).reply
    assert not isinstance(reply, M.Error), reply
    if isinstance(command, F.PushBulk):
        assert reply == F.Bulk(b"{}"), reply  # no unit refused


def pushed_by_faktory_units_that_keep_fields(core: Counted) -> type:
    faktory(core, b'PUSH {"jid":"fk-00001","jobtype":"t","args":[],"queue":"q","custom":{"a":1}}')
    faktory(
        core,
        b'PUSHB [{"jid":"fk-00002","jobtype":"t","args":[],"queue":"q","retry":0},'
        b'{"jid":"fk-00003","jobtype":"t","args":[],"queue":"q","at":"2024-01-01T00:00:00Z"}]',
    )
    core.total("pushed", "q", 3)
    return R.KeptJobsPushed


def dead_and_forgotten_by_a_faktory_fail_with_retry_0(core: Counted) -> type:
    faktory(core, b'PUSH {"jid":"fk-00001","jobtype":"t","args":[],"queue":"q","retry":0}')
    faktory(core, b"FETCH q", "fk-worker")
    faktory(core, b'FAIL {"jid":"fk-00001","errtype":"E","message":"m"}', "fk-worker")
    assert "fk-00001" not in core.state.jobs, "retry 0: forgotten, not kept dead"
    core.total("dead", "q", 1)
    core.total("failed", "q", 1)
    return R.AttemptsFailed


def callback_on_an_empty_batch_created_committed(core: Counted) -> type:
    core.create_batch(callbacks=M.BatchCallbacks(success=CALLBACK), commit=True)
    core.total("pushed", "callbacks", 1)
    return R.BatchOpened


def callback_on_commit(core: Counted) -> type:
    created = core.create_batch(callbacks=M.BatchCallbacks(success=CALLBACK, complete=CALLBACK))
    core.commit_batch(created.id)
    core.total("pushed", "callbacks", 2)
    return R.BatchCommitted


def callback_on_ack(core: Counted) -> type:
    member(core, "m", success=CALLBACK)
    core.ack(core.lease("q"))
    core.total("pushed", "callbacks", 1)
    core.total("acked", "q", 1)
    return R.JobsAcked


def dead_by_failure_with_callback(core: Counted) -> type:
    member(core, "m", death=CALLBACK)
    core.fail(core.lease("q"))
    core.total("dead", "q", 1)
    core.total("failed", "q", 1)
    core.total("pushed", "callbacks", 1)
    return R.AttemptsFailed


def dead_by_lost_leases(core: Counted) -> type:
    core.push(queue="q", lease_ttl_ms=SECOND_MS)
    for _ in range(3):
        core.lease("q")
        core.advance(SECOND_MS)
    core.total("dead", "q", 1)
    core.total("expired", "q", 3)
    return R.AttemptsFailed


def dead_with_the_process_that_held_it(core: Counted) -> type:
    member(core, "m", death=CALLBACK)
    core.lease("q", worker="doomed")
    core.advance(core.config.process_ttl_ms)
    core.total("dead", "q", 1)
    core.total("pushed", "callbacks", 1)
    return R.ProcessDied


def killed_by_an_operator(core: Counted) -> type:
    member(core, "k", death=CALLBACK)
    core.operate(A.KillJob(core.next_rid(), "k"))
    core.total("dead", "q", 1)
    core.total("pushed", "callbacks", 1)
    return R.JobKilled


def callback_when_a_member_is_deleted(core: Counted) -> type:
    member(core, "d", success=CALLBACK)
    core.operate(A.DeleteJob(core.next_rid(), "d"))
    core.total("pushed", "callbacks", 1)
    return R.JobDeleted


def callback_of_a_parent_when_its_child_is_deleted(core: Counted) -> type:
    parent = core.create_batch(callbacks=M.BatchCallbacks(success=CALLBACK), id="parent")
    core.create_batch(M.JobSpec(type="t", queue="q"), id="child", parent=parent.id)
    core.commit_batch("parent")
    core.operate(A.DeleteBatch(core.next_rid(), "child"))
    core.total("pushed", "callbacks", 1)
    return R.BatchDeleted


def callback_of_a_parent_when_its_child_is_abandoned(core: Counted) -> type:
    core.create_batch(callbacks=M.BatchCallbacks(complete=CALLBACK), id="parent")
    core.create_batch(id="child", parent="parent")
    core.commit_batch("parent")
    core.advance(core.config.batch_open_timeout_ms)  # the child was never committed
    core.total("pushed", "callbacks", 1)
    return R.BatchesAbandoned


def expired_unstarted_with_a_callback_and_listed(core: Counted) -> type:
    spec = M.JobSpec(type="t", queue="q", id="lapsing", ttl_ms=SECOND_MS)
    core.create_batch(spec, callbacks=M.BatchCallbacks(death=CALLBACK), commit=True)
    core.advance(SECOND_MS)
    core.total("ttl_expired", "q", 1)
    core.total("pushed", "callbacks", 1)  # the member counts dead for its batch: its death fires
    (listed,) = core.totals.expired
    assert (listed.id, listed.queue, listed.expires_ms) == ("lapsing", "q", START_MS + SECOND_MS)
    return R.JobsExpired


CASES: list[Callable[[Counted], type]] = [
    pushed_by_push,
    pushed_by_create_batch,
    pushed_by_faktory_units_that_keep_fields,
    callback_on_an_empty_batch_created_committed,
    callback_on_commit,
    callback_on_ack,
    dead_by_failure_with_callback,
    dead_by_lost_leases,
    dead_and_forgotten_by_a_faktory_fail_with_retry_0,
    dead_with_the_process_that_held_it,
    killed_by_an_operator,
    callback_when_a_member_is_deleted,
    callback_of_a_parent_when_its_child_is_deleted,
    callback_of_a_parent_when_its_child_is_abandoned,
    expired_unstarted_with_a_callback_and_listed,
]


def counted_core() -> Counted:
    core = Counted(
        process_ttl_ms=15 * SECOND_MS,
        batch_open_timeout_ms=60 * SECOND_MS,
    )
    return core


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__)
def test_every_job_created_or_killed_is_counted(case: Callable[[Counted], type]) -> None:
    core = counted_core()
    kind = case(core)
    assert kind in core.kinds, f"{case.__name__} made no {kind.__name__} record"
    made = {job.queue for job in core.state.jobs.values()}
    created = sum(counts["pushed"] for counts in core.totals.by_queue.values())
    assert created >= len(core.state.jobs), f"jobs in {made} that no push counted"


def test_the_cases_cover_every_kind_of_record_that_creates_or_kills_a_job() -> None:
    creates_or_kills = {
        R.JobsPushed,
        R.KeptJobsPushed,  # the Faktory front end's pushes
        R.BatchOpened,  # its jobs, and its callbacks when created committed
        R.BatchCommitted,
        R.JobsAcked,
        R.AttemptsFailed,
        R.ProcessDied,
        R.JobKilled,
        R.JobDeleted,
        R.BatchDeleted,
        R.BatchesAbandoned,
        R.JobsExpired,
    }  # not BatchesExpired: a child never outlives its parent's retention, so no callback
    assert creates_or_kills <= set(get_args(R.Record))
    covered = set()
    for case in CASES:
        covered.add(case(counted_core()))
    assert covered == creates_or_kills


def test_a_queues_rates_count_its_callback_jobs_in_and_its_killed_jobs_out() -> None:
    core = counted_core()
    member(core, "k", death=CALLBACK)
    core.operate(A.KillJob(core.next_rid(), "k"))
    history = core.totals.history
    assert history.rates_per_s(core.now_ms, "callbacks") == (1 / 60, 0.0)
    assert history.rates_per_s(core.now_ms, "q") == (1 / 60, 1 / 60)
