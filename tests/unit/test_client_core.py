"""The sans-IO client core: requests out, replies matched by rid, results and errors in."""

import os
import re
from typing import Any

import msgspec
import pytest

from leash.client import _identity
from leash.client._core import Call, ClientCore, Completion
from leash.client._exceptions import (
    ERROR_CLASSES,
    ConnectionLost,
    ProtocolViolation,
    ServerError,
    StaleLease,
    TooLarge,
    error_from_reply,
)
from leash.client._identity import Identity, process_worker_id
from leash.client._types import JOB_OPTIONS, FailResult, Job, error_info, job_spec
from leash.protocol import PROTOCOL_VERSION, limits
from leash.protocol.errors import ErrorCode
from leash.protocol.frames import encode_frame
from leash.protocol.messages import (
    AckedMany,
    Delivery,
    Error,
    ErrorInfo,
    Extended,
    Failed,
    Hello,
    ItemResult,
    Jobs,
    JobSpec,
    Ok,
    Pushed,
    Reply,
    Welcome,
    encoder,
    request_decoder,
)

Core = ClientCore[str]


def frame(reply: Reply) -> bytes:
    return encode_frame(encoder.encode(reply))


def sent(call: Call[Any]) -> dict[str, Any]:
    """The request a call would send, as plain msgpack (what is on the wire)."""
    body: dict[str, Any] = msgspec.msgpack.decode(call.frame[limits.FRAME_HEADER_BYTES :])
    return body


def delivery(job_id: str = "j1", args: Any = (1, 2), token: int = 7) -> Delivery:
    return Delivery(
        id=job_id,
        queue="default",
        type="t",
        args=msgspec.Raw(msgspec.msgpack.encode(args)),
        token=token,
        deadline_ms=1000,
        attempt=1,
        max_attempts=25,
        lease_ttl_ms=30_000,
        priority=5,
        created_ms=1,
    )


def completions(core: Core, data: bytes) -> list[Completion[str]]:
    core.receive_data(data)
    done = []
    while (completion := core.next_completion()) is not None:
        done.append(completion)
    return done


def welcomed_core() -> Core:
    core: Core = ClientCore()
    call = core.hello(Identity(worker_id="w-1"))
    core.start(call, "hello")
    welcome = Welcome(
        rid=call.rid, version=1, server="s", epoch=3, max_frame_bytes=limits.FRAME_MAX_BYTES
    )
    [done] = completions(core, frame(welcome))
    assert done.value == welcome
    return core


# --- requests --------------------------------------------------------------


def test_hello_is_the_first_rid_and_carries_the_identity() -> None:
    core: Core = ClientCore()
    call = core.hello(Identity(worker_id="w-1", hostname="h", labels=("gpu",), concurrency=4))
    hello = request_decoder.decode(call.frame[4:])
    assert isinstance(hello, Hello)
    assert (hello.rid, hello.version, hello.worker_id) == (1, PROTOCOL_VERSION, "w-1")
    assert (hello.hostname, hello.labels, hello.concurrency) == ("h", ["gpu"], 4)
    assert hello.client.startswith("leash-py/")
    assert hello.pid > 0


def test_hello_defaults_to_this_process_worker_id() -> None:
    hello = request_decoder.decode(ClientCore().hello(Identity()).frame[4:])
    assert isinstance(hello, Hello)
    assert hello.worker_id == process_worker_id()


def test_the_welcome_raises_the_frame_limit_for_what_we_send() -> None:
    core: Core = ClientCore()
    assert core.max_frame_bytes == limits.HANDSHAKE_FRAME_MAX_BYTES
    core = welcomed_core()
    assert core.welcome is not None and core.welcome.epoch == 3
    assert core.max_frame_bytes == limits.FRAME_MAX_BYTES


def test_rids_increase_and_are_never_zero() -> None:
    core = welcomed_core()  # the hello had rid 1
    rids = [core.release(("q", 1)).rid, core.ack(("j", 1)).rid, core.get_job("j").rid]
    assert rids == [2, 3, 4]


def test_push_leaves_every_unset_option_to_the_broker() -> None:
    call = welcomed_core().push(job_spec("email"))
    job = sent(call)["job"]
    assert set(job) == {"type", "id"}
    assert job["type"] == "email"


def test_push_sends_exactly_the_options_given() -> None:
    spec = job_spec("email", ["a"], queue="mail", priority=9, delay_ms=50, lease_ttl_ms=5000)
    job = sent(welcomed_core().push(spec))["job"]
    assert set(job) == {"type", "id", "args", "queue", "priority", "delay_ms", "lease_ttl_ms"}
    assert (job["queue"], job["priority"], job["delay_ms"]) == ("mail", 9, 50)


def test_push_sends_the_uniqueness_options_given_and_refuses_a_contradiction() -> None:
    keyed = sent(welcomed_core().push(job_spec("t", unique_key="k", unique_for_ms=60_000)))["job"]
    assert (keyed["unique_key"], keyed["unique_for_ms"]) == ("k", 60_000)
    assert "unique" not in keyed
    derived = sent(welcomed_core().push(job_spec("t", unique=True)))["job"]
    assert derived["unique"] is True and "unique_key" not in derived
    with pytest.raises(ValueError, match="not both"):
        job_spec("t", unique_key="k", unique=True)
    with pytest.raises(ValueError, match="needs unique_key or unique"):
        job_spec("t", unique_for_ms=5)


def test_push_makes_a_fresh_id_unless_given_one() -> None:
    first, second = job_spec("t").id, job_spec("t").id
    assert first and second and first != second
    assert job_spec("t", id="mine").id == "mine"


def test_client_made_ids_fit_the_client_id_pattern_and_differ_in_a_forked_child() -> None:
    ids = {job_spec("t").id for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.match(limits.CLIENT_ID_PATTERN, job_id) and len(job_id) == 32 for job_id in ids)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the child draws its own prefix: its ids are not the parent's next ones
        os.write(write_end, "\n".join(job_spec("t").id for _ in range(1000)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child_ids = set(pipe.read().split("\n"))
    os.waitpid(child, 0)
    parent_next = {job_spec("t").id for _ in range(1000)}
    assert len(child_ids) == 1000 and not child_ids & (ids | parent_next)


@pytest.mark.parametrize("args", [[1, "two", None], {"a": [1, 2]}, "text", 3.5, [], {}])
def test_args_round_trip_through_a_delivery(args: Any) -> None:
    spec = job_spec("t", args)
    assert sent(welcomed_core().push(spec))["job"]["args"] == args  # inline msgpack on the wire
    assert Job(msgspec.structs.replace(delivery(), args=spec.args)).args == args


def test_job_args_are_decoded_once() -> None:
    job = Job(delivery(args=[1, 2]))
    assert job.args is job.args


def test_fetch_takes_one_queue_name_or_several() -> None:
    core = welcomed_core()
    assert sent(core.fetch("a", 1, 0))["queues"] == ["a"]
    request = sent(core.fetch(["a", "b"], 5, 2000))
    assert (request["queues"], request["count"], request["wait_ms"]) == (["a", "b"], 5, 2000)
    assert core.fetch("a", 1, 2000).wait_ms == 2000


def test_a_lease_is_a_job_or_an_id_token_pair() -> None:
    core = welcomed_core()
    from_job = sent(core.ack(Job(delivery("j9", token=42))))
    from_pair = sent(core.ack(("j9", 42)))
    assert (
        (from_job["id"], from_job["token"]) == (from_pair["id"], from_pair["token"]) == ("j9", 42)
    )


def test_a_request_over_the_broker_limit_is_refused_before_sending() -> None:
    core = welcomed_core()
    with pytest.raises(TooLarge):
        core.push(job_spec("t", "x" * limits.FRAME_MAX_BYTES))
    assert core.in_flight == 0


# --- replies ---------------------------------------------------------------


def test_replies_are_matched_by_rid_in_any_order() -> None:
    core = welcomed_core()
    fetch, push, ack = core.fetch("q", 1, 5000), core.push(job_spec("t")), core.ack(("j", 1))
    for call, name in ((fetch, "fetch"), (push, "push"), (ack, "ack")):
        core.start(call, name)
    data = frame(Ok(rid=ack.rid)) + frame(Pushed(rid=push.rid, id="p", created=True, state="ready"))
    data += frame(Jobs(rid=fetch.rid, jobs=[delivery("j1")]))
    done = completions(core, data)
    assert [(c.waiter, c.rid) for c in done] == [
        ("ack", ack.rid),
        ("push", push.rid),
        ("fetch", fetch.rid),
    ]
    assert done[1].value == "p"
    assert [job.id for job in done[2].value] == ["j1"]
    assert core.in_flight == 0


def test_replies_split_across_reads_are_reassembled() -> None:
    core = welcomed_core()
    call = core.push(job_spec("t"))
    core.start(call, "push")
    data = frame(Pushed(rid=call.rid, id="p", created=False, state="leased"))
    done = [c for i in range(len(data)) for c in completions(core, data[i : i + 1])]
    assert [c.value for c in done] == ["p"]


def test_a_reply_nobody_waits_for_is_dropped() -> None:
    core = welcomed_core()
    gone, kept = core.ack(("a", 1)), core.ack(("b", 1))
    core.start(gone, "gone")
    core.start(kept, "kept")
    core.abandon(gone.rid)
    done = completions(core, frame(Ok(rid=gone.rid)) + frame(Ok(rid=kept.rid)))
    assert [c.waiter for c in done] == ["kept"]
    assert core.abandon(gone.rid) is None and core.take_releases() == b""


def sent_frames(data: bytes) -> list[dict[str, Any]]:
    """The requests in frames sent without a waiter (cancels, releases)."""
    header = limits.FRAME_HEADER_BYTES
    bodies = []
    while data:
        size = int.from_bytes(data[:header], "big")
        bodies.append(msgspec.msgpack.decode(data[header : header + size]))
        data = data[header + size :]
    return bodies


def test_a_fetch_given_up_is_cancelled_and_the_jobs_its_late_reply_leased_go_back() -> None:
    core = welcomed_core()
    fetch = core.fetch("default", 2, 5_000)
    core.start(fetch, "fetch")
    cancel = core.abandon(fetch.rid)
    assert cancel is not None and sent(cancel) == {
        "op": "cancel",
        "rid": cancel.rid,
        "of": fetch.rid,
    }
    late = Jobs(rid=fetch.rid, jobs=[delivery("j1", token=7), delivery("j2", token=9)])
    assert completions(core, frame(late) + frame(Ok(rid=cancel.rid))) == []
    releases = sent_frames(core.take_releases())
    assert [(r["op"], r["id"], r["token"]) for r in releases] == [
        ("release", "j1", 7),
        ("release", "j2", 9),
    ]
    assert len({r["rid"] for r in releases} | {fetch.rid, cancel.rid}) == 4
    assert core.take_releases() == b"", "released twice"
    assert completions(core, frame(late)) == [] and core.take_releases() == b""


def test_a_fetch_given_up_whose_late_reply_is_empty_or_an_error_releases_nothing() -> None:
    core = welcomed_core()
    empty, refused = core.fetch("default", 1, 5_000), core.fetch("default", 1, 0)
    for call in (empty, refused):
        core.start(call, "fetch")
        assert core.abandon(call.rid) is not None
    error = Error(rid=refused.rid, code=ErrorCode.BAD_REQUEST, message="no")
    assert completions(core, frame(Jobs(rid=empty.rid, jobs=[])) + frame(error)) == []
    assert core.take_releases() == b""


def test_a_get_result_given_up_is_cancelled_and_other_calls_are_not() -> None:
    core = welcomed_core()
    result, push = core.get_result("j1", wait_ms=5_000), core.push("t")
    core.start(result, "result")
    core.start(push, "push")
    cancel = core.abandon(result.rid)
    assert cancel is not None and sent(cancel)["of"] == result.rid
    assert core.abandon(push.rid) is None


def test_a_completion_its_waiter_no_longer_takes_gives_back_its_jobs() -> None:
    """A fetch cancelled as its reply came (the shell finds its waiter done)."""
    core = welcomed_core()
    fetch = core.fetch("default", 1, 5_000)
    core.start(fetch, "fetch")
    (done,) = completions(core, frame(Jobs(rid=fetch.rid, jobs=[delivery("j3", token=4)])))
    core.unclaimed(done.value)
    (release,) = sent_frames(core.take_releases())
    assert (release["op"], release["id"], release["token"]) == ("release", "j3", 4)
    push = core.push("t")
    core.start(push, "push")
    (pushed,) = completions(core, frame(Pushed(rid=push.rid, id="j4", created=True, state="ready")))
    core.unclaimed(pushed.value)
    assert core.take_releases() == b""


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_error_code_maps_to_its_own_exception(code: ErrorCode) -> None:
    core = welcomed_core()
    call = core.ack(("j", 1))
    core.start(call, "ack")
    reply = Error(rid=call.rid, code=code, message="why", path="$.id")
    [done] = completions(core, frame(reply))
    assert type(done.error) is ERROR_CLASSES[code]
    assert isinstance(done.error, ServerError)
    assert (done.error.code, done.error.message, done.error.path) == (code, "why", "$.id")
    assert str(done.error) == f"{code}: why (at $.id)"


def test_every_error_class_is_distinct() -> None:
    assert len(set(ERROR_CLASSES.values())) == len(ErrorCode)
    assert set(ERROR_CLASSES) == set(ErrorCode)


def test_an_error_code_newer_than_the_client_is_a_plain_server_error() -> None:
    core = welcomed_core()
    call = core.ack(("q", 1))
    core.start(call, "ack")
    body = msgspec.msgpack.encode(
        {"t": "error", "rid": call.rid, "code": "new_code", "message": "m"}
    )
    [done] = completions(core, encode_frame(body))
    assert type(done.error) is ServerError
    assert done.error.code == "new_code"


def test_a_reply_of_the_wrong_type_is_a_protocol_violation() -> None:
    core = welcomed_core()
    call = core.push(job_spec("t"))
    core.start(call, "push")
    [done] = completions(core, frame(Ok(rid=call.rid)))
    assert isinstance(done.error, ProtocolViolation)


def test_an_undecodable_reply_with_a_rid_fails_only_its_call() -> None:
    core = welcomed_core()
    bad, good = core.ack(("a", 1)), core.ack(("b", 1))
    core.start(bad, "bad")
    core.start(good, "good")
    body = msgspec.msgpack.encode({"t": "brand_new", "rid": bad.rid})
    done = completions(core, encode_frame(body) + frame(Ok(rid=good.rid)))
    assert [(c.waiter, type(c.error)) for c in done] == [
        ("bad", ProtocolViolation),
        ("good", type(None)),
    ]


def test_garbage_ends_the_connection() -> None:
    core = welcomed_core()
    core.receive_data(encode_frame(b"\xc1"))  # a byte msgpack never uses
    with pytest.raises(ProtocolViolation):
        core.next_completion()


def test_a_frame_over_the_ceiling_ends_the_connection() -> None:
    core = welcomed_core()
    core.receive_data((limits.FRAME_CEILING_BYTES + 1).to_bytes(4, "big"))
    with pytest.raises(ProtocolViolation, match="over the limit"):
        core.next_completion()


def test_an_error_with_rid_zero_after_the_handshake_ends_the_connection() -> None:
    core = welcomed_core()
    reply = Error(rid=0, code=ErrorCode.TOO_LARGE, message="frame too big")
    core.receive_data(frame(reply))
    with pytest.raises(ConnectionLost, match="frame too big") as caught:
        core.next_completion()
    assert isinstance(caught.value.__cause__, ServerError)


def test_an_error_during_the_handshake_is_the_hello_reply() -> None:
    core: Core = ClientCore()
    call = core.hello(Identity())
    core.start(call, "hello")
    reply = Error(rid=call.rid, code=ErrorCode.UNSUPPORTED_VERSION, message="v9 only")
    [done] = completions(core, frame(reply))
    assert type(done.error) is ERROR_CLASSES[ErrorCode.UNSUPPORTED_VERSION]


def test_an_error_with_rid_zero_during_the_handshake_answers_the_hello() -> None:
    core: Core = ClientCore()
    core.start(core.hello(Identity()), "hello")
    [done] = completions(core, frame(Error(rid=0, code=ErrorCode.TOO_LARGE, message="big")))
    assert (done.waiter, type(done.error)) == ("hello", TooLarge)


def test_run_at_and_delay_together_are_refused_before_sending() -> None:
    with pytest.raises(ValueError, match="not both"):
        job_spec("t", run_at_ms=1, delay_ms=1)


def test_an_unknown_option_is_refused_naming_it() -> None:
    options: dict[str, Any] = {"priority": 1, "prority": 2}
    with pytest.raises(TypeError, match="unknown job option: prority"):
        job_spec("t", **options)


def test_the_job_options_are_the_job_spec_fields_but_type_and_args() -> None:
    assert set(JobSpec.__struct_fields__) - {"type", "args"} == JOB_OPTIONS


def test_an_option_given_as_none_is_left_to_the_broker() -> None:
    job = sent(welcomed_core().push(job_spec("t", queue=None, priority=None, id=None)))["job"]
    assert set(job) == {"type", "id"}


def test_fail_pending_hands_back_every_waiter() -> None:
    core = welcomed_core()
    for name in ("a", "b"):
        core.start(core.ack((name, 1)), name)
    assert sorted(core.fail_pending()) == ["a", "b"]
    assert core.in_flight == 0


# --- results ---------------------------------------------------------------


def test_ack_many_gives_none_or_the_error_per_job() -> None:
    core = welcomed_core()
    call = core.ack_many([("a", 1), ("b", 2)])
    core.start(call, "acks")
    items = [ItemResult("a"), ItemResult("b", ErrorCode.STALE_LEASE, "re-leased")]
    [done] = completions(core, frame(AckedMany(rid=call.rid, results=items)))
    first, second = done.value
    assert first is None
    assert isinstance(second, StaleLease) and second.message == "re-leased"


def test_a_result_count_that_does_not_match_is_a_protocol_violation() -> None:
    core = welcomed_core()
    call = core.ack_many([("a", 1), ("b", 2)])
    core.start(call, "acks")
    [done] = completions(core, frame(AckedMany(rid=call.rid, results=[ItemResult("a")])))
    assert isinstance(done.error, ProtocolViolation)


def test_extend_moves_the_job_deadline() -> None:
    core = welcomed_core()
    job = Job(delivery())
    call = core.extend(job, 60_000)
    assert sent(call)["lease_ttl_ms"] == 60_000
    assert "lease_ttl_ms" not in sent(core.extend(job, None))
    core.start(call, "extend")
    [done] = completions(core, frame(Extended(rid=call.rid, deadline_ms=99_000)))
    assert done.value == job.deadline_ms == 99_000


def test_fail_reports_what_became_of_the_job() -> None:
    core = welcomed_core()
    call = core.fail(("j", 1), "went wrong")
    assert sent(call)["error"] == {"message": "went wrong"}
    core.start(call, "fail")
    [done] = completions(core, frame(Failed(rid=call.rid, state="dead")))
    assert done.value == FailResult("dead", None)


# --- errors reported by fail -----------------------------------------------


class CustomError(Exception):
    pass


def raise_it(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_an_exception_becomes_type_message_and_traceback() -> None:
    info = error_info(raise_it(ValueError("bad value")))
    assert (info.type, info.message) == ("ValueError", "bad value")
    assert info.backtrace.startswith("Traceback")
    assert "in raise_it" in info.backtrace
    assert info.backtrace.rstrip().endswith("ValueError: bad value")


def test_a_non_builtin_exception_is_named_with_its_module() -> None:
    assert error_info(CustomError("x")).type == f"{__name__}.CustomError"


def test_a_huge_message_is_cut_to_the_limit() -> None:
    info = error_info(raise_it(ValueError("m" * 100_000)))
    assert len(info.message) == limits.ERROR_MESSAGE_MAX_CHARS
    assert info.message.endswith("[truncated]")


def test_a_huge_traceback_keeps_its_end() -> None:
    exc = raise_it(RuntimeError("the cause"))
    exc.__notes__ = ["n" * (limits.ERROR_BACKTRACE_MAX_CHARS * 2)]
    info = error_info(exc)
    assert len(info.backtrace) <= limits.ERROR_BACKTRACE_MAX_CHARS
    assert info.backtrace.startswith("…[truncated]")
    assert info.backtrace.endswith("n\n")


def test_an_error_info_is_cut_to_the_limits_too() -> None:
    info = error_info(ErrorInfo(type="T" * 1000, message="m", backtrace="b" * 10**6))
    assert len(info.type) == limits.ERROR_TYPE_MAX_CHARS
    assert len(info.backtrace) == limits.ERROR_BACKTRACE_MAX_CHARS
    assert info.message == "m"
    # and what comes out is accepted by the wire bounds
    msgspec.msgpack.decode(encoder.encode(info), type=ErrorInfo)


def test_error_from_reply_keeps_the_path() -> None:
    error = error_from_reply(Error(rid=1, code=ErrorCode.BAD_REQUEST, message="m", path="$.x"))
    assert error.path == "$.x"


# --- identity --------------------------------------------------------------


def test_the_worker_id_is_one_per_process_and_new_after_fork(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_identity, "_worker_id", _identity._worker_id)
    monkeypatch.setattr(_identity, "_worker_id_pid", _identity._worker_id_pid)
    first = process_worker_id()
    assert process_worker_id() == first
    assert len(first) <= limits.NAME_MAX_CHARS
    monkeypatch.setattr(os, "getpid", lambda: 4_000_000)
    child = process_worker_id()
    assert child != first
    assert "-4000000-" in child
