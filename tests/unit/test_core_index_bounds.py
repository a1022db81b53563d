"""No index outlives what it tracks: each lazy index holds at most twice the
entries its live objects can have, plus ``index_slack_entries``, whatever
sits at its front (state.py). The cases the front purge alone never
cleaned: one long lease beside many short ones, one batch that lives for a
month beside many that expire, one job scheduled later beside many
scheduled and deleted, an old dead job beside many requeued, one process
beside many that beat; and the Faktory front end's paths: jobs that die
and are forgotten (retry 0) beside an old dead one, scheduled jobs
requeued by MUTATE beside one due in an hour. Each is run with the default
slack and with none (the harness's); check_invariants checks every bound
after every record, and these tests look at the sizes themselves too."""

import pytest

from leash.broker.core import check_invariants, mutate_round
from leash.broker.core.config import CoreConfig
from leash.broker.core.ready import COMPACT_MIN_STALE, ReadyBucket
from leash.broker.core.state import index_sizes
from leash.protocol import admin as A
from leash.protocol import faktory as F
from leash.protocol import messages as M
from tests.unit.test_core_harness import SECOND_MS, Core

MINUTE_MS = 60 * SECOND_MS
DAY_MS = 24 * 60 * MINUTE_MS
DEFAULT_SLACK = CoreConfig().index_slack_entries
SLACKS = [0, DEFAULT_SLACK]
ROUNDS = 3 * DEFAULT_SLACK  # enough churn to pass the default slack several times


def size(core: Core, name: str) -> int:
    (found,) = [s for s in index_sizes(core.state) if s.name == name]
    assert found.entries <= found.bound(core.config.index_slack_entries), found
    return found.entries


@pytest.mark.parametrize("slack", SLACKS)
def test_leases_acked_beside_one_long_lease_leave_no_entries_behind(slack: int) -> None:
    core = Core(index_slack_entries=slack)
    core.push(id="long", lease_ttl_ms=DAY_MS)
    core.lease()  # its deadline is the front of the heap all along
    for n in range(ROUNDS):
        core.push(id=f"j{n}", lease_ttl_ms=MINUTE_MS)
        core.ack(core.lease())
    assert size(core, "lease deadlines") <= 2 * 1 + slack
    assert core.state.deadlines[0][2] == "long"


@pytest.mark.parametrize("slack", SLACKS)
def test_leases_extended_again_and_again_keep_their_heap_bounded(slack: int) -> None:
    core = Core(index_slack_entries=slack)
    core.push(id="a", lease_ttl_ms=MINUTE_MS)
    delivery = core.lease()
    for _ in range(ROUNDS):
        core.now_ms += SECOND_MS
        core.extend(delivery)
    assert size(core, "lease deadlines") <= 2 + slack


@pytest.mark.parametrize("slack", SLACKS)
def test_batches_that_finish_and_expire_beside_one_unfinished_batch_leave_nothing(
    slack: int,
) -> None:
    core = Core(index_slack_entries=slack, batch_finished_retention_ms=MINUTE_MS)
    core.create_batch(M.JobSpec(type="t", queue="held"), id="month", commit=True)
    for n in range(ROUNDS):
        core.create_batch(M.JobSpec(type="t", id=f"m{n}"), id=f"b{n}", commit=True)
        core.ack(core.lease())  # the batch finishes: its expiry moves to a minute from now
        core.advance(MINUTE_MS)  # and passes
    assert set(core.state.batches) == {"month"}
    assert size(core, "batch deadlines") <= 2 * 2 + slack


@pytest.mark.parametrize("slack", SLACKS)
def test_batches_deleted_beside_one_open_batch_leave_nothing(slack: int) -> None:
    core = Core(index_slack_entries=slack)
    core.create_batch(id="open")
    for n in range(ROUNDS):
        core.create_batch(id=f"b{n}")
        core.expect(A.DeleteBatch(core.next_rid(), f"b{n}"), M.Ok)
    assert size(core, "batch deadlines") <= 2 * 2 + slack


@pytest.mark.parametrize("slack", SLACKS)
def test_jobs_scheduled_and_deleted_beside_one_due_in_an_hour_leave_nothing(slack: int) -> None:
    core = Core(index_slack_entries=slack)
    core.push(id="soon", delay_ms=60 * MINUTE_MS)
    for n in range(ROUNDS):
        core.push(id=f"year-{n}", delay_ms=365 * DAY_MS)
        core.expect(A.DeleteJob(core.next_rid(), f"year-{n}"), M.Ok)
    assert size(core, "scheduled") <= 2 * 1 + slack
    assert core.state.scheduled[0][1] == "soon"


@pytest.mark.parametrize("slack", SLACKS)
def test_dead_jobs_requeued_and_acked_beside_an_old_dead_one_leave_nothing(slack: int) -> None:
    core = Core(index_slack_entries=slack)
    core.push(id="old", max_attempts=1)
    core.fail(core.lease())
    for n in range(ROUNDS):
        core.push(id=f"d{n}", max_attempts=1)
        core.fail(core.lease())
        core.expect(A.RequeueJob(core.next_rid(), f"d{n}"), M.Ok)
        core.ack(core.lease())
    assert size(core, "dead") <= 2 * 1 + slack
    assert core.state.dead[0][1] == "old"


@pytest.mark.parametrize("slack", SLACKS)
def test_processes_that_beat_beside_one_with_an_earlier_deadline_leave_nothing(
    slack: int,
) -> None:
    core = Core(index_slack_entries=slack, process_ttl_ms=MINUTE_MS, heartbeat_ms=SECOND_MS)
    core.touch("early")
    for _ in range(ROUNDS):
        core.now_ms += SECOND_MS // 10
        core.expect(M.Beat(core.next_rid()), M.ProcessState, worker="busy")
    assert size(core, "process deadlines") <= 2 * 3 * 2 + slack


def faktory_push(core: Core, unit: bytes) -> None:
    command = F.parse_line(b"PUSH " + unit, 1 << 20)
    assert isinstance(command, F.Push), command
    assert isinstance(core.faktory(command, "").reply, M.Ok)


@pytest.mark.parametrize("slack", SLACKS)
def test_faktory_jobs_forgotten_when_they_die_beside_an_old_dead_one_leave_nothing(
    slack: int,
) -> None:
    core = Core(index_slack_entries=slack)
    core.push(id="old", max_attempts=1)
    core.fail(core.lease())
    for n in range(ROUNDS):
        jid = f"fk-{n:06d}"
        faktory_push(core, b'{"jid":"%s","jobtype":"t","args":[],"retry":0}' % jid.encode())
        core.faktory(F.Fetch(["default"]), "fk-worker")
        assert isinstance(core.faktory(F.Fail(jid, M.ErrorInfo()), "fk-worker").reply, M.Ok)
        assert jid not in core.state.jobs  # its dead entry is stale at once
    assert size(core, "dead") <= 2 * 1 + slack
    assert core.state.dead[0][1] == "old"


@pytest.mark.parametrize("slack", SLACKS)
def test_scheduled_jobs_requeued_by_mutate_beside_one_due_in_an_hour_leave_nothing(
    slack: int,
) -> None:
    core = Core(index_slack_entries=slack)
    core.push(id="soon", delay_ms=60 * MINUTE_MS)
    for n in range(ROUNDS):
        core.push(id=f"year-{n}", delay_ms=365 * DAY_MS)
        op = F.Mutate("requeue", "scheduled", [f"year-{n}"], None, None)
        for record in mutate_round(core.state, op, None, core.now_ms).records:
            core.apply(record)
        core.ack(core.lease())
    assert size(core, "scheduled") <= 2 * 1 + slack
    assert core.state.scheduled[0][1] == "soon"


def test_a_ready_bucket_leased_from_the_front_keeps_its_stale_entries_bounded() -> None:
    """Stale entries at the back, live ones leased from the front: the
    bucket rebuilds once its stale entries outnumber the live ones."""
    bucket = ReadyBucket()
    live = [f"live-{n}" for n in range(4 * COMPACT_MIN_STALE)]
    stale = [f"stale-{n}" for n in range(2 * COMPACT_MIN_STALE)]
    for job_id in live + stale:
        bucket.append(job_id)
    for job_id in stale:
        bucket.discard(job_id)  # from the middle: counted stale
    left = set(live)
    for job_id in live:
        assert bucket.first() == job_id
        bucket.discard(job_id)  # from the front
        left.discard(job_id)
        assert bucket.problems(left) == []
        assert bucket.stale_count <= len(left) + COMPACT_MIN_STALE
    assert len(bucket.ids) == 0


def test_check_invariants_names_an_index_over_its_bound() -> None:
    core = Core()
    core.push(id="a", delay_ms=MINUTE_MS)
    assert check_invariants(core.state) == []
    core.state.scheduled.extend([(core.now_ms + DAY_MS, "gone")] * 3)  # stale, behind a live front
    (problem,) = check_invariants(core.state)
    assert "the scheduled index holds 4 entries, over its bound 2 for 1 live" in problem
