"""The client's batch and operator calls: what they send, what they return,
and ``add_to_batch`` from a handler (sans-IO core; no broker)."""

from typing import Any

import pytest

from leash.client import add_to_batch, current_job
from leash.client._control import Failure
from leash.client._handlers import invoke
from leash.client._types import Job, job_spec
from leash.protocol.messages import (
    BatchCreated,
    BatchInfo,
    BatchView,
    JobSpec,
    Ok,
    PushResult,
)
from tests.unit.test_client_core import completions, delivery, frame, sent, welcomed_core


def create(core: Any, id: str | None) -> Any:
    """A create_batch call with nothing but the id."""
    return core.create_batch(
        [],
        id=id,
        description="",
        parent=None,
        on_success=None,
        on_complete=None,
        on_death=None,
        commit=False,
        lease=None,
    )


def test_create_batch_sends_its_jobs_callbacks_and_a_fresh_id() -> None:
    core = welcomed_core()
    call = core.create_batch(
        [job_spec("part", [1]), {"type": "part", "args": [2]}],
        id=None,
        description="import",
        parent="top",
        on_success={"type": "done", "queue": "cb"},
        on_complete=None,
        on_death=JobSpec(type="alert"),
        commit=True,
        lease=("split-1", 9),
    )
    body = sent(call)
    assert body["op"] == "create_batch" and len(body["id"]) == 32
    assert (body["description"], body["parent"], body["commit"]) == ("import", "top", True)
    assert [job["type"] for job in body["jobs"]] == ["part", "part"]
    assert all("id" in job for job in body["jobs"])  # so a repeated create is one batch
    assert body["callbacks"] == {
        "success": {"type": "done", "queue": "cb"},
        "death": {"type": "alert"},
    }
    assert body["lease"] == ["split-1", 9]
    second = create(core, id=None)
    assert sent(second)["id"] != body["id"]
    assert set(sent(second)) == {"op", "rid", "id"}


def test_create_batch_returns_the_brokers_reply() -> None:
    core = welcomed_core()
    call = create(core, id="b")
    core.start(call, "create")
    reply = BatchCreated(call.rid, "b", True, "open", [PushResult("a", True, "ready")])
    [done] = completions(core, frame(reply))
    assert done.value == reply


def test_a_push_into_a_committed_batch_presents_the_running_jobs_lease() -> None:
    core = welcomed_core()
    job = Job(delivery("split-1", token=41))
    body = sent(core.push(job_spec("part", batch="b"), job))
    assert body["job"]["batch"] == "b" and body["lease"] == ["split-1", 41]
    assert "lease" not in sent(core.push(job_spec("part")))
    assert sent(core.push_many([job_spec("p")], job))["lease"] == ["split-1", 41]


@pytest.mark.parametrize(
    ("method", "args", "op"),
    [
        ("commit_batch", ("b",), "commit_batch"),
    ],
)
def test_the_operations_that_answer_ok_send_their_id(method: str, args: Any, op: str) -> None:
    core = welcomed_core()
    call = getattr(core, method)(*args)
    assert sent(call) == {"op": op, "rid": call.rid, "id": args[0]}
    core.start(call, op)
    [done] = completions(core, frame(Ok(call.rid)))
    assert done.value is None and done.error is None


def test_batch_status_returns_its_view() -> None:
    core = welcomed_core()
    status = core.batch_status("b", 7)
    assert sent(status)["limit"] == 7
    view = BatchView("b", "open", "", 1, 2, 0, 0, 0, 0, 0, 0, 0, False, [], [], [], False, [])
    core.start(status, "status")
    [done] = completions(core, frame(BatchInfo(status.rid, view)))
    assert done.value == view


def test_a_delivery_tells_the_job_its_batch() -> None:
    member = delivery("m")
    member.batch = "b"
    assert Job(member).batch == "b"
    assert Job(delivery()).batch is None


def test_add_to_batch_pushes_into_the_running_jobs_batch_with_its_lease() -> None:
    member = delivery("m", token=5)
    member.batch = "b"
    job = Job(member)
    pushed: list[tuple[JobSpec, Job]] = []
    seen: list[Job | None] = []

    def push(spec: JobSpec, holder: Job) -> str:
        pushed.append((spec, holder))
        return "new-id"

    def handler(*_: Any) -> None:
        seen.append(current_job())
        assert add_to_batch("part", [3], queue="q") == "new-id"

    assert invoke(handler, job, push) is None
    ((spec, holder),) = pushed
    assert (spec.type, spec.batch, spec.queue, holder) == ("part", "b", "q", job)
    assert seen == [job] and current_job() is None


def test_add_to_batch_outside_a_batch_or_a_handler_is_refused() -> None:
    with pytest.raises(RuntimeError):
        add_to_batch("part")

    def handler(*_: Any) -> None:
        add_to_batch("part")

    failed = invoke(handler, Job(delivery()), lambda spec, job: "x")
    assert isinstance(failed, Failure) and failed.error.type == "ValueError"
