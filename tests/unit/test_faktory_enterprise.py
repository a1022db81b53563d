"""Faktory Enterprise's unique and expiring jobs (``custom.unique_for``,
``custom.expires_at``, ``custom.expires_in``) mapped onto Leash's unique
jobs and expiry: the core, through the harness (replay, image and
invariants after every record), and the unit parser's refusals."""

from typing import Any

import msgspec
import pytest

from leash.broker.core import records as R
from leash.protocol import faktory as F
from leash.protocol import faktory_units as U
from leash.protocol import messages as M
from leash.protocol.faktory import error_line
from tests.unit.test_core_faktory import PRODUCER, command, fetched, push
from tests.unit.test_core_harness import SECOND_MS, START_MS, Core

LIMIT_BYTES = 1 << 20


def parse(unit: dict[str, Any]) -> U.Unit:
    return U.parse_unit(
        msgspec.json.encode({"jid": "job-00001", "jobtype": "t", "args": [], **unit}), LIMIT_BYTES
    )


def test_unique_for_makes_a_unit_unique_by_type_args_and_queue_until_it_succeeds() -> None:
    core = Core()
    first = push(core, {"jid": "job-00001", "args": [7], "custom": {"unique_for": 600}})
    assert isinstance(first.reply, M.Ok)
    assert core.job("job-00001").unique_key is not None
    again = push(core, {"jid": "job-00002", "args": [7], "custom": {"unique_for": 600}})
    assert isinstance(again.reply, M.Error) and again.records == []
    assert error_line(again.reply.code, again.reply.message).startswith(
        b"-NOTUNIQUE Job not unique"
    )
    other = push(core, {"jid": "job-00003", "args": [7], "queue": "q", "custom": {"unique_for": 1}})
    assert isinstance(other.reply, M.Ok), "another queue: another key"
    unit = fetched(core)
    assert unit is not None and unit["custom"] == {"unique_for": 600}, "custom is kept as sent"
    core.faktory(F.Ack("job-00001"), "w1")
    assert isinstance(
        push(core, {"jid": "job-00004", "args": [7], "custom": {"unique_for": 600}}).reply, M.Ok
    )


def test_pushb_answers_a_duplicate_unique_unit_notunique_by_jid() -> None:
    core = Core()
    units = [
        {"jid": "job-00001", "jobtype": "t", "args": [1], "custom": {"unique_for": 60}},
        {"jid": "job-00002", "jobtype": "t", "args": [1], "custom": {"unique_for": 60}},
    ]
    outcome = core.faktory(command(b"PUSHB " + msgspec.json.encode(units)), PRODUCER)
    assert isinstance(outcome.reply, F.Bulk) and outcome.reply.data is not None
    answer = msgspec.json.decode(outcome.reply.data)
    assert list(answer) == ["job-00002"] and answer["job-00002"].startswith("NOTUNIQUE")
    assert core.ready_ids() == ["job-00001"]


def test_expires_at_and_expires_in_remove_a_unit_not_fetched_in_time() -> None:
    core = Core()
    push(core, {"jid": "job-00001", "custom": {"expires_in": 2}})
    push(
        core, {"jid": "job-00002", "custom": {"expires_at": "2023-11-14T22:13:25Z"}}
    )  # START + 5 s
    assert core.job("job-00001").expires_ms == START_MS + 2 * SECOND_MS
    assert core.job("job-00002").expires_ms == START_MS + 5 * SECOND_MS
    assert core.advance(2 * SECOND_MS) == [R.JobsExpired(["job-00001"], core.now_ms)]
    assert core.advance(3 * SECOND_MS) == [R.JobsExpired(["job-00002"], core.now_ms)]
    assert fetched(core) is None
    assert core.job("job-00001").state == "expired"  # in the finished-job history


def test_a_unit_with_both_expiry_and_uniqueness_carries_both_through_a_restart() -> None:
    core = Core()
    push(core, {"jid": "job-00001", "custom": {"unique_for": 60, "expires_in": 60}})
    core.restart()
    job = core.job("job-00001")
    assert job.unique_key is not None and job.expires_ms == START_MS + 60 * SECOND_MS


@pytest.mark.parametrize(
    ("custom", "message"),
    [
        ({"unique_for": "600"}, "unique_for must be a number"),
        ({"unique_for": 0}, "unique_for must be above 0"),
        ({"unique_for": 60, "unique_until": "start"}, "unique_until must be success"),
        ({"expires_at": "tomorrow"}, "expires_at must be an RFC 3339 time"),
        ({"expires_in": -1}, "expires_in must be above 0"),
        ({"expires_in": True}, "expires_in must be a number"),
        ({"expires_at": "2040-01-01T00:00:00Z", "expires_in": 5}, "not both"),
    ],
)
def test_enterprise_options_that_do_not_fit_are_refused_naming_the_field(
    custom: dict[str, Any], message: str
) -> None:
    with pytest.raises(U.UnitError, match=message):
        parse({"custom": custom})


def test_a_past_expires_at_is_refused_clearly() -> None:
    core = Core()
    outcome = push(core, {"jid": "job-00001", "custom": {"expires_at": "2001-01-01T00:00:00Z"}})
    assert isinstance(outcome.reply, M.Error) and outcome.records == []
    assert "expires_at" in outcome.reply.message
