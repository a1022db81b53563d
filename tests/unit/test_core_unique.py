"""Unique jobs: a key held by its live job, or for a window after its
success, freed by the record that ends the job. Every step of the harness
checks the invariants, the replay and the state image too."""

import msgspec
import pytest

from leash.broker.core import records as R
from leash.broker.core.unique import derived_key
from leash.protocol import admin as A
from leash.protocol import limits as L
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from tests.unit.test_core_harness import SECOND_MS, Core, args


def test_a_second_push_with_a_held_key_names_the_first_job_and_writes_nothing() -> None:
    core = Core()
    first = core.push(unique_key="report:7")
    records_before = len(core.records)
    second = core.push(unique_key="report:7", args=args([2]))
    assert (first.created, first.duplicate) == (True, False)
    assert (second.id, second.created, second.state, second.duplicate) == (
        first.id,
        False,
        "ready",
        True,
    )
    assert len(core.records) == records_before  # no push recorded
    assert core.ready_ids() == [first.id]


def test_the_key_is_held_while_the_job_is_scheduled_leased_or_retrying() -> None:
    core = Core()
    first = core.push(unique_key="k", delay_ms=10 * SECOND_MS)
    assert core.push(unique_key="k").state == "scheduled"
    core.advance(10 * SECOND_MS)
    delivery = core.lease()
    assert core.push(unique_key="k").state == "leased"
    core.fail(delivery)
    duplicate = core.push(unique_key="k")
    assert (duplicate.id, duplicate.state, duplicate.duplicate) == (first.id, "retrying", True)


def test_an_ack_frees_the_key_at_once_without_a_window() -> None:
    core = Core()
    core.push(unique_key="k")
    core.ack(core.lease())
    again = core.push(unique_key="k")
    assert (again.created, again.duplicate) == (True, False)


def test_after_success_the_window_holds_the_key_then_the_tick_frees_it() -> None:
    core = Core()
    first = core.push(unique_key="k", unique_for_ms=60 * SECOND_MS)
    core.advance(SECOND_MS)
    core.ack(core.lease())
    duplicate = core.push(unique_key="k")
    assert (duplicate.id, duplicate.state, duplicate.duplicate) == (first.id, "succeeded", True)
    assert core.state.unique["k"].until_ms == core.now_ms + 60 * SECOND_MS
    freed = core.advance(60 * SECOND_MS)
    assert freed == [R.UniqueWindowsEnded(["k"], core.now_ms)]
    assert "k" not in core.state.unique
    assert core.push(unique_key="k").created


def test_a_window_that_passed_is_free_even_before_the_tick_frees_it() -> None:
    core = Core()
    core.push(unique_key="k", unique_for_ms=SECOND_MS)
    core.ack(core.lease())
    core.now_ms += 2 * SECOND_MS  # no tick yet
    again = core.push(unique_key="k")
    assert again.created
    assert core.state.unique["k"].job_id == again.id
    assert core.tick() == []  # the window's timer went with it


@pytest.mark.parametrize("ending", ["dead", "deleted", "killed", "lease lost"])
def test_a_job_that_ends_without_success_frees_its_key_even_with_a_window(ending: str) -> None:
    core = Core()
    first = core.push(unique_key="k", unique_for_ms=60 * SECOND_MS, max_attempts=1)
    if ending == "dead":
        core.fail(core.lease())
    elif ending == "deleted":
        core.expect(_admin("delete", first.id, core.next_rid()), M.Ok)
    elif ending == "killed":
        core.expect(_admin("kill", first.id, core.next_rid()), M.Ok)
    else:
        delivery = core.lease()  # its one attempt: a lost lease kills it
        core.advance(delivery.deadline_ms - core.now_ms)
    assert "k" not in core.state.unique
    assert core.state.jobs.get(first.id) is None or core.job(first.id).unique_key is None
    assert core.push(unique_key="k").created


def test_a_requeued_dead_job_runs_without_its_key() -> None:
    core = Core()
    first = core.push(unique_key="k", max_attempts=1)
    core.fail(core.lease())
    second = core.push(unique_key="k")
    core.expect(_admin("requeue", first.id, core.next_rid()), M.Ok)
    assert core.job(first.id).unique_key is None
    assert core.state.unique["k"].job_id == second.id


def test_push_many_resolves_duplicates_within_the_request_to_the_first() -> None:
    core = Core()
    reply = core.push_many(
        M.JobSpec(type="t", unique_key="a"),
        M.JobSpec(type="t", unique_key="b"),
        M.JobSpec(type="t", unique_key="a", queue="other"),
        M.JobSpec(type="t"),
    )
    first, second, third, fourth = reply.results
    assert (third.id, third.created, third.duplicate) == (first.id, False, True)
    assert second.created and fourth.created and not second.duplicate
    assert core.state.queues.keys() == {"default"}


def test_a_derived_key_is_the_same_for_the_same_queue_type_and_args_in_any_key_order() -> None:
    core = Core()
    first = core.push(unique=True, type="mail", args=args({"to": "a", "n": 1}))
    reordered = msgspec.Raw(b"\x82\xa1n\x01\xa2to\xa1a")  # {"n": 1, "to": "a"}
    again = core.push(unique=True, type="mail", args=reordered)
    assert (again.id, again.duplicate) == (first.id, True)
    for other in (
        {"type": "mail", "args": args({"to": "b", "n": 1})},
        {"type": "sms", "args": args({"to": "a", "n": 1})},
        {"type": "mail", "queue": "q2", "args": args({"to": "a", "n": 1})},
    ):
        assert core.push(unique=True, **other).created
    key = core.job(first.id).unique_key
    assert key == derived_key("default", "mail", args({"n": 1, "to": "a"}))
    assert key is not None and key.startswith("auto:") and len(key) == 5 + 32


def test_a_known_id_wins_over_a_held_key() -> None:
    core = Core()
    core.push(id="x", unique_key="k")
    known = core.push(id="x", unique_key="k")
    assert (known.id, known.created, known.duplicate) == ("x", False, False)


def test_a_push_over_the_key_bound_is_refused_and_a_held_key_still_answers() -> None:
    core = Core(unique_keys_max=2)
    first = core.push(unique_key="a")
    core.push(unique_key="b")
    error = core.refused(
        M.Push(core.next_rid(), M.JobSpec(type="t", unique_key="c")), ErrorCode.TOO_LARGE
    )
    assert error.path == "$.job.unique_key"
    assert core.push(unique_key="a").id == first.id
    assert core.push().created  # jobs without a key are not bounded by it
    many = M.PushMany(core.next_rid(), [M.JobSpec(type="t", unique_key=k) for k in "cd"])
    core.ack(core.lease())
    assert core.refused(many, ErrorCode.TOO_LARGE).path == "$.jobs[1].unique_key"


def test_bad_unique_fields_are_refused_when_decoded() -> None:
    decode = msgspec.msgpack.Decoder(M.JobSpec).decode
    encode = msgspec.msgpack.encode
    for bad in (
        {"type": "t", "unique_key": ""},
        {"type": "t", "unique_key": "k" * (L.UNIQUE_KEY_MAX_CHARS + 1)},
        {"type": "t", "unique_key": "k", "unique": True},
        {"type": "t", "unique_for_ms": 5},
        {"type": "t", "unique": True, "unique_for_ms": -1},
        {"type": "t", "unique": True, "unique_for_ms": L.UNIQUE_FOR_MAX_MS + 1},
    ):
        with pytest.raises(msgspec.ValidationError):
            decode(encode(bad))


def test_the_job_view_shows_the_key_and_its_window() -> None:
    core = Core()
    pushed = core.push(unique_key="k", unique_for_ms=5 * SECOND_MS)
    view = core.job(pushed.id)
    assert (view.unique_key, view.unique_for_ms) == ("k", 5 * SECOND_MS)
    assert core.job(core.push().id).unique_key is None


def test_keys_and_windows_survive_a_restart_and_the_state_image() -> None:
    core = Core()
    held = core.push(unique_key="held", delay_ms=SECOND_MS)
    core.push(unique_key="window", unique_for_ms=30 * SECOND_MS)
    core.ack(core.lease())
    for _ in range(8):  # past the harness's image interval
        core.push()
    core.restart()
    assert core.push(unique_key="held").id == held.id
    assert core.push(unique_key="window").state == "succeeded"
    core.advance(30 * SECOND_MS)
    assert core.push(unique_key="window").created


def test_a_batch_member_holds_its_key_and_its_death_frees_it_for_the_batch() -> None:
    core = Core()
    created = core.create_batch(M.JobSpec(type="t", unique_key="m", max_attempts=1))
    assert core.push(unique_key="m").duplicate
    core.fail(core.lease())
    assert core.batch(created.id).dead == 1
    assert core.push(unique_key="m").created


def _admin(verb: str, job_id: str, rid: int) -> A.DeleteJob | A.KillJob | A.RequeueJob:
    request = {"delete": A.DeleteJob, "kill": A.KillJob, "requeue": A.RequeueJob}[verb]
    return request(rid, job_id)
