"""Listings of every job state (ready, leased, scheduled, retrying, dead),
their filters (age too) and cursors, and the bulk operations that take what
a listing finds: delete (a purge of a queue), kill, requeue."""

import random

import pytest

from leash.broker.core.state import READY
from leash.protocol import admin as A
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from tests.unit.test_core_harness import SECOND_MS, Core


def listing(core: Core, kind: A.ListKind, limit: int = 3, **filter: object) -> list[str]:
    ids, cursor = [], ""
    while True:
        request = A.ListJobs(core.next_rid(), kind, A.JobFilter(**filter), cursor, limit)  # type: ignore[arg-type]
        found = core.expect(request, A.JobPage)
        ids += [job.id for job in found.jobs]
        if not found.next:
            return ids
        cursor = found.next


def test_ready_jobs_are_listed_queue_by_queue_in_fetch_order() -> None:
    core = Core()
    for name in ("b1", "b2", "b3"):
        core.push(id=name, queue="b")
    core.push(id="a-low", queue="a", priority=1)
    core.push(id="a-urgent", queue="a", priority=9)
    core.push(id="a-mid", queue="a")
    assert listing(core, "ready", limit=2) == ["a-urgent", "a-mid", "a-low", "b1", "b2", "b3"]
    assert listing(core, "ready", queue="b") == ["b1", "b2", "b3"]


def test_a_ready_page_resumes_after_its_last_job_while_jobs_come_and_go() -> None:
    core = Core()
    for index in range(8):
        core.push(id=f"j{index}")
    first = core.expect(A.ListJobs(core.next_rid(), "ready", limit=3), A.JobPage)
    assert [job.id for job in first.jobs] == ["j0", "j1", "j2"]
    core.fetch(count=2)  # j0 and j1 leave from the front
    core.push(id="j8")
    second = core.expect(A.ListJobs(core.next_rid(), "ready", cursor=first.next), A.JobPage)
    assert [job.id for job in second.jobs] == ["j3", "j4", "j5", "j6", "j7", "j8"]
    core.expect(A.DeleteJob(core.next_rid(), "j2"), M.Ok)  # the cursor's job leaves
    again = core.expect(A.ListJobs(core.next_rid(), "ready", cursor=first.next), A.JobPage)
    assert [job.id for job in again.jobs][:2] == ["j3", "j4"], "from the front: none missed"


def test_leased_jobs_are_listed_by_deadline_and_filters_take_age() -> None:
    core = Core()
    core.push(id="old", lease_ttl_ms=60 * SECOND_MS)
    core.advance(30 * SECOND_MS)
    core.push(id="new", lease_ttl_ms=10 * SECOND_MS)
    core.fetch(count=2)
    assert listing(core, "leased", limit=1) == ["new", "old"]
    assert listing(core, "leased", min_age_ms=20 * SECOND_MS) == ["old"]
    assert listing(core, "leased", max_age_ms=20 * SECOND_MS) == ["new"]


def test_dead_jobs_killed_at_one_instant_page_newest_first_each_once() -> None:
    core = Core()
    for index in range(25):
        core.push(id=f"d{index:02}", type="report" if index % 2 else "mail")
    done = core.expect(A.KillJobs(core.next_rid(), "ready", limit=10), A.JobsChanged)
    assert len(done.ids) == 10 and done.next
    rest = core.expect(A.KillJobs(core.next_rid(), "ready", cursor=done.next), A.JobsChanged)
    assert len(rest.ids) == 15 and rest.next == ""
    dead = listing(core, "dead", limit=4)
    assert dead == [f"d{index:02}" for index in reversed(range(25))]
    assert listing(core, "dead", limit=4, type="report") == [d for d in dead if int(d[1:]) % 2]


def test_a_dead_cursor_survives_the_front_of_the_dead_set_leaving() -> None:
    core = Core()
    for index in range(6):
        core.push(id=f"d{index}")
    core.expect(A.KillJobs(core.next_rid(), "ready"), A.JobsChanged)
    page = core.expect(A.ListJobs(core.next_rid(), "dead", limit=2), A.JobPage)
    assert [job.id for job in page.jobs] == ["d5", "d4"]
    core.expect(A.DeleteJob(core.next_rid(), "d0"), M.Ok)  # the oldest leaves the front
    core.expect(A.RequeueJob(core.next_rid(), "d2"), M.Ok)
    after = core.expect(A.ListJobs(core.next_rid(), "dead", cursor=page.next), A.JobPage)
    assert [job.id for job in after.jobs] == ["d3", "d1"]


def test_delete_jobs_purges_a_queues_ready_jobs_a_chunk_a_request() -> None:
    core = Core()
    for index in range(7):
        core.push(id=f"p{index}", queue="q", type="keep" if index == 3 else "drop")
    core.push(id="other", queue="r")
    deleted, cursor = [], ""
    while True:
        request = A.DeleteJobs(core.next_rid(), "ready", A.JobFilter("q", "drop"), cursor, 2)
        done = core.expect(request, A.JobsChanged)
        deleted += done.ids
        if not done.next:
            break
        cursor = done.next
    assert deleted == ["p0", "p1", "p2", "p4", "p5", "p6"]
    assert listing(core, "ready") == ["p3", "other"]
    assert core.state.counts[READY] == 2


def test_bulk_operations_refuse_a_cursor_they_did_not_make() -> None:
    core = Core()
    core.refused(A.ListJobs(core.next_rid(), "ready", cursor="nope"), ErrorCode.BAD_REQUEST)
    core.refused(A.ListJobs(core.next_rid(), "dead", cursor="x:1:a"), ErrorCode.BAD_REQUEST)
    core.refused(A.KillJobs(core.next_rid(), "leased", cursor="1:a"), ErrorCode.BAD_REQUEST)


@pytest.mark.parametrize("kind", ["scheduled", "retrying", "leased", "ready"])
def test_kill_jobs_moves_the_matches_of_a_state_to_the_dead_set(kind: A.KillKind) -> None:
    core = Core()
    core.push(id="s", delay_ms=60 * SECOND_MS)
    core.push(id="t", max_attempts=3)
    core.fail(core.lease())
    core.push(id="l")
    core.lease()
    core.push(id="r")
    done = core.expect(A.KillJobs(core.next_rid(), kind), A.JobsChanged)
    assert done.ids == [{"scheduled": "s", "retrying": "t", "leased": "l", "ready": "r"}[kind]]
    assert listing(core, "dead") == done.ids


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_paging_ready_jobs_while_others_leave_shows_every_staying_job(seed: int) -> None:
    print(f"seed {seed}")
    rng = random.Random(seed)
    core = Core()
    for n in range(90):
        core.push(id=f"j{n:02}", queue=rng.choice("abc"), priority=rng.choice((1, 5, 9)))
    staying = {f"j{n:02}" for n in range(0, 90, 3)}
    seen: list[str] = []
    cursor = ""
    while True:
        found = core.expect(A.ListJobs(core.next_rid(), "ready", cursor=cursor, limit=4), A.JobPage)
        seen += [job.id for job in found.jobs]
        leaving = [job_id for job_id in core.state.jobs if job_id not in staying]
        for victim in rng.sample(leaving, min(2, len(leaving))):  # even the cursor's job
            core.expect(A.DeleteJob(core.next_rid(), victim), M.Ok)
        core.push(id=f"new-{len(seen)}", queue=rng.choice("abc"))  # may or may not be shown
        if not found.next:
            break
        cursor = found.next
    assert staying <= set(seen), sorted(staying - set(seen))


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_paging_dead_jobs_while_others_leave_shows_every_staying_job_once(seed: int) -> None:
    print(f"seed {seed}")
    rng = random.Random(seed)
    core = Core()
    for n in range(90):
        core.push(id=f"d{n:02}")
        if rng.random() < 0.3:
            core.advance(SECOND_MS)  # some die in the same millisecond, some not
    core.expect(A.KillJobs(core.next_rid(), "ready"), A.JobsChanged)
    staying = {f"d{n:02}" for n in range(0, 90, 3)}
    seen: list[str] = []
    cursor = ""
    while True:
        found = core.expect(A.ListJobs(core.next_rid(), "dead", cursor=cursor, limit=4), A.JobPage)
        seen += [job.id for job in found.jobs]
        leaving = [
            job_id
            for job_id, job in core.state.jobs.items()
            if job_id not in staying and job.state == "dead"
        ]
        for victim in rng.sample(leaving, min(2, len(leaving))):
            operation = rng.choice((A.DeleteJob, A.RequeueJob))
            core.expect(operation(core.next_rid(), victim), M.Ok)
        core.push(id=f"new-{len(seen)}")  # dies behind the cursor: not shown
        core.expect(A.KillJob(core.next_rid(), f"new-{len(seen)}"), M.Ok)
        if not found.next:
            break
        cursor = found.next
    shown = [job_id for job_id in seen if not job_id.startswith("new-")]
    assert len(shown) == len(set(shown)), "no job twice"
    assert staying <= set(shown), sorted(staying - set(shown))


@pytest.mark.parametrize("seed", [5, 6])
def test_deleting_dead_jobs_killed_at_one_instant_a_few_a_request_takes_each_once(
    seed: int,
) -> None:
    """The dead set's index is rebuilt without its stale entries while the
    requests go on (the cursor's own job among them): each request still
    resumes exactly where the last one stopped."""
    print(f"seed {seed}")
    rng = random.Random(seed)
    core = Core()
    names = [f"d{n:03}" for n in range(150)]
    rng.shuffle(names)  # killed out of id order, in one millisecond
    for name in names:
        core.push(id=name)
    core.expect(A.KillJobs(core.next_rid(), "ready"), A.JobsChanged)
    assert list(core.state.dead) == sorted(core.state.dead)
    deleted: list[str] = []
    cursor, rebuilt = "", False
    while True:
        request = A.DeleteJobs(core.next_rid(), "dead", cursor=cursor, limit=rng.randint(1, 9))
        done = core.expect(request, A.JobsChanged)
        deleted += done.ids
        if core.state.counts["dead"] and len(core.state.dead) < len(names):
            rebuilt = True  # its front is live: stale entries left from the middle
        if not done.next:
            break
        cursor = done.next
    assert deleted == sorted(names, reverse=True), "newest first: by id in one millisecond"
    assert core.state.counts["dead"] == 0 and rebuilt
