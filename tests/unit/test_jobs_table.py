"""The jobs table on its own (core/jobs.py): the two forms of a job, the
recent window, the names, and what a state image reads and writes. The
core tests drive it through apply and compare the forms on every record."""

import sys

import msgspec
import pytest

from leash.broker.core import records as R
from leash.broker.core.jobs import (
    DEAD,
    LEASED,
    READY,
    RETRYING,
    SCHEDULED,
    Job,
    JobTable,
    write,
)
from leash.protocol.messages import ErrorInfo

START_MS = 1_700_000_000_000
PAYLOAD = msgspec.Raw(msgspec.msgpack.encode(b"x" * 100))  # the benchmark's 100 bytes


def new(job_id: str, **fields: object) -> R.NewJob:
    values: dict[str, object] = {
        "queue": "mail",
        "type": "send",
        "args": PAYLOAD,
        "priority": 5,
        "max_attempts": 25,
        "lease_ttl_ms": 1_800_000,
        "retry_base_ms": None,
        "created_ms": START_MS,
        "run_at_ms": None,
        **fields,
    }
    return R.NewJob(id=job_id, **values)  # type: ignore[arg-type]


def packed_table(*news: R.NewJob) -> JobTable:
    """A table that packs every job at once (no recent window)."""
    table = JobTable(recent_jobs=0)
    for job in news:
        table.create(job)
    table.pack_overdue()
    return table


def test_a_job_fresh_from_its_push_packs_into_one_small_bytes_object() -> None:
    table = packed_table(new("9f1c2a3b4c5d6e7f8091a2b3c4d5e6f7"))
    stored = table.stored("9f1c2a3b4c5d6e7f8091a2b3c4d5e6f7")
    assert isinstance(stored, bytes)
    # The memory goal rests on this: a 160-byte block for the job, not
    # ~560 B of objects (bench/PROFILE.md). A new field in Packed shows here.
    assert sys.getsizeof(stored) <= 160


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"state": SCHEDULED, "run_at_ms": START_MS + 60_000, "ready_ms": 0},
        {
            "state": RETRYING,
            "run_at_ms": START_MS + 5_000,
            "ready_ms": 0,
            "failures": 2,
            "last_error": ErrorInfo(type="ValueError", message="boom", backtrace="Traceback"),
            "batch": "b1",
            "retry_base_ms": 250,
        },
        {"state": DEAD, "ready_ms": 0, "failures": 1, "died_ms": START_MS + 9, "batch": "b2"},
        {"ready_ms": START_MS + 77, "died_ms": START_MS + 3, "failures": 0},  # requeued
    ],
)
def test_a_packed_job_reads_back_as_the_job_it_was(changes: dict[str, object]) -> None:
    table = JobTable(recent_jobs=0)
    table.create(new("a", priority=9, max_attempts=3, lease_ttl_ms=1000))
    job = table.thaw("a")
    for field, value in changes.items():
        write(job, field, value)
    expected = msgspec.structs.replace(job)
    table.pack_overdue()
    assert isinstance(table.stored("a"), bytes)
    assert table["a"] == expected
    assert table.problems() == []


def test_reading_a_packed_job_gives_a_copy_and_thawing_gives_the_job() -> None:
    table = packed_table(new("a"))
    copy = table["a"]
    with pytest.raises(AttributeError):
        copy.priority = 0  # type: ignore[misc]
    assert table["a"].priority == 5
    thawed = table.thaw("a")
    assert table.thaw("a") is thawed and table.get("a") is thawed
    write(thawed, "priority", 0)
    table.pack_overdue()
    assert table["a"].priority == 0


def test_recent_jobs_stay_objects_until_enough_later_changes_pass() -> None:
    table = JobTable(recent_jobs=2)
    for job_id in ("a", "b", "c"):
        table.create(new(job_id))
        table.pack_overdue()
    assert not isinstance(table.stored("a"), Job)
    assert isinstance(table.get("b"), Job) and table.get("b") is table.get("b")
    assert table.problems() == []


def leased_job(table: JobTable, job_id: str) -> Job:
    """The job thawed and given a lease, as indexes.py does (fields only)."""
    job = table.thaw(job_id)
    for field, value in (("state", LEASED), ("owner", "w"), ("token", 7), ("deadline_ms", 9)):
        write(job, field, value)
    write(job, "ready_ms", 0)
    return job


def test_a_leased_job_is_never_packed_and_is_recent_once_its_lease_ends() -> None:
    table = JobTable(recent_jobs=0)
    table.create(new("a"))
    job = leased_job(table, "a")
    table.pack_overdue()
    assert table.leased("a") is job
    for field, value in (("state", READY), ("owner", ""), ("token", 0), ("deadline_ms", 0)):
        write(job, field, value)
    write(job, "ready_ms", 5)
    table.lease_ended("a")
    table.pack_overdue()
    assert table.leased("a") is None and table["a"].ready_ms == 5
    assert table.problems() == []


def test_a_name_is_numbered_while_a_packed_job_uses_it_and_its_number_is_reused() -> None:
    table = packed_table(new("a", queue="q1", type="t"), new("b", queue="q2", type="t"))
    names = table.names
    assert sorted(filter(None, names.names)) == ["q1", "q2", "t"]
    assert names.uses[names.numbers["t"]] == 2
    table.pop("a")
    assert "q1" not in names.numbers and names.uses[names.numbers["t"]] == 1
    table.create(new("c", queue="q3", type="t"))
    table.pack_overdue()
    assert len(names.names) == 3, "the free number is taken again"
    table.thaw("b")
    assert "q2" not in names.numbers, "an unpacked job holds its own strings"
    table.pack_overdue()
    assert "q2" in names.numbers and table.problems() == []


def test_ready_jobs_built_in_bulk_are_packed_and_numbered_as_one_by_one() -> None:
    queues, kinds = ("mail", "sms", "q-new"), ("send", "mail", "t-new")  # "mail" names both
    news = [
        new(f"j{i}", queue=queues[i % 3], type=kinds[i % 2 + (i > 30)], priority=i % 4)
        for i in range(40)
    ]
    tables = []
    for bulk in (False, True):
        table = packed_table(new("old", queue="sms", type="gone"), new("older", type="send"))
        table.pop("old")  # "gone" and "sms" leave free numbers to be taken again
        if bulk:
            table.create_ready_packed(news)
        else:
            for job in news:
                table.create(job)
            table.pack_overdue()
        tables.append(table)
    one_by_one, bulk = tables
    ids = ["older", *(job.id for job in news)]
    assert [bulk.stored(i) for i in ids] == [one_by_one.stored(i) for i in ids]
    assert all(isinstance(bulk.stored(i), bytes) for i in ids)
    names = [(t.names.names, t.names.numbers, t.names.uses, t.names.free) for t in tables]
    assert names[0] == names[1]
    assert bulk.problems() == []
    with pytest.raises(AssertionError, match="pushed twice"):
        bulk.create_ready_packed([new("j3")])


def load_image(source: JobTable, *job_ids: str, into: JobTable | None = None) -> JobTable:
    """The jobs of ``source`` loaded the way a state image loads them."""
    names, packed_form = source.for_image()
    table = into or JobTable(recent_jobs=0)
    if into is None:
        table.names.load(names)
    forms = [packed_form(job_id) for job_id in job_ids]
    records, queues, types = ([form[n] for form in forms] for n in range(3))
    table.load_packed(list(job_ids), records, queues, types)  # type: ignore[arg-type]
    return table


def test_an_image_numbers_the_names_of_recent_jobs_without_changing_the_table() -> None:
    table = JobTable(recent_jobs=10)
    table.create(new("old", queue="kept"))
    table.create(new("young", queue="fresh"))
    before = (list(table.names.names), dict(table.names.numbers), list(table.names.uses))
    names, _ = table.for_image()
    assert {"kept", "fresh", "send"} <= set(names)
    loaded = load_image(table, "old", "young")
    loaded.names.prune()
    assert (list(table.names.names), dict(table.names.numbers), list(table.names.uses)) == before
    assert loaded["young"] == table["young"] and loaded.problems() == []
    assert loaded.names.uses[loaded.names.numbers["send"]] == 2


@pytest.mark.parametrize(
    ("queues", "types", "why"),
    [([0, 0], [0], "ids for"), ([0], [3], "names nothing"), ([-1], [0], "names nothing")],
)
def test_image_jobs_that_name_nothing_or_do_not_add_up_are_refused(
    queues: list[int], types: list[int], why: str
) -> None:
    table = JobTable(recent_jobs=0)
    table.names.load(["q", "", "t"])
    with pytest.raises(ValueError, match=why):
        table.load_packed(["x"], [b"\x90"], queues, types)


def test_an_image_job_already_in_the_table_is_refused() -> None:
    source = packed_table(new("a"))
    table = load_image(source, "a")
    with pytest.raises(ValueError, match="twice"):
        load_image(source, "a", into=table)


def test_the_checks_find_a_wrong_form_and_wrong_name_counts() -> None:
    table = packed_table(new("a"), new("b"))
    table.names.uses[table.names.numbers["send"]] += 1
    assert any("uses" in problem for problem in table.problems())
    unpacked = packed_table(new("a"))
    unpacked._table["a"] = unpacked["a"]  # an object nobody will pack
    assert any("not packed" in problem for problem in unpacked.problems())


@pytest.mark.parametrize("recent_jobs", [0, 4], ids=["packed", "recent"])
def test_a_write_through_a_read_is_an_error_whether_the_job_is_packed_or_recent(
    recent_jobs: int,
) -> None:
    table = JobTable(recent_jobs=recent_jobs)
    table.create(new("a"))
    table.pack_overdue()
    assert isinstance(table.stored("a"), bytes) == (recent_jobs == 0)
    for read in (table["a"], table.get("a"), next(iter(table.values()))):
        assert read is not None
        with pytest.raises(AttributeError):
            read.priority = 0  # type: ignore[misc]
    if recent_jobs == 0:  # a read of a packed job is a copy: change refuses it
        with pytest.raises(AssertionError, match="thaw it"):
            table.change(table["a"], failures=1)
    assert table["a"].priority == 5 and table["a"].failures == 0
    table.change(table.thaw("a"), failures=1)
    assert table["a"].failures == 1


def test_a_leased_job_read_cannot_be_written_and_change_writes_the_thawed_job() -> None:
    table = JobTable(recent_jobs=0)
    table.create(new("a"))
    job = leased_job(table, "a")
    table.pack_overdue()
    leased = table.leased("a")
    assert leased is job
    with pytest.raises(AttributeError):
        leased.token = 8  # type: ignore[misc]
    table.change(job, lost_leases=2)
    assert table["a"].lost_leases == 2 and table["a"].token == 7
