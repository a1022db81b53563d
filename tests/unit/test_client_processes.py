"""The client core's beat, and the pure parts of the worker's liveness."""

from typing import Any

import msgspec

from leash.client._core import Call, ClientCore, Completion
from leash.client._identity import Identity
from leash.client._keepalive import HEARTBEAT_FALLBACK_MS, heartbeat_period_s, lease_lost_message
from leash.client._types import Job
from leash.protocol import limits
from leash.protocol.errors import ErrorCode
from leash.protocol.frames import encode_frame
from leash.protocol.messages import (
    Delivery,
    Error,
    ProcessState,
    Reply,
    Welcome,
    encoder,
)

Core = ClientCore[str]


def welcomed_core() -> Core:
    core: Core = ClientCore()
    call = core.hello(Identity(worker_id="w-1"))
    core.start(call, "hello")
    core.receive_data(frame(welcome()))
    assert core.next_completion() is not None
    return core


def welcome(**fields: Any) -> Welcome:
    return Welcome(
        rid=1, version=1, server="s", epoch=1, max_frame_bytes=limits.FRAME_MAX_BYTES, **fields
    )


def frame(reply: Reply) -> bytes:
    return encode_frame(encoder.encode(reply))


def sent(call: Call[Any]) -> dict[str, Any]:
    body: dict[str, Any] = msgspec.msgpack.decode(call.frame[limits.FRAME_HEADER_BYTES :])
    return body


def answer(core: Core, call: Call[Any], reply: Reply) -> Completion[str]:
    core.start(call, "waiter")
    core.receive_data(frame(reply))
    completion = core.next_completion()
    assert completion is not None and completion.rid == call.rid
    return completion


def test_beat_returns_the_state_the_broker_wants() -> None:
    core = welcomed_core()
    call = core.beat()
    assert sent(call) == {"op": "beat", "rid": call.rid}
    assert answer(core, call, ProcessState(rid=call.rid, state="quiet")).value == "quiet"


def test_a_beat_for_an_unknown_process_is_not_found() -> None:
    core = welcomed_core()
    call = core.beat()
    reply = Error(rid=call.rid, code=ErrorCode.NOT_FOUND, message="no process")
    assert answer(core, call, reply).error is not None


def test_the_heartbeat_follows_the_welcome() -> None:
    assert heartbeat_period_s(welcome(heartbeat_ms=50)) == 0.05
    assert heartbeat_period_s(welcome()) == limits.HEARTBEAT_DEFAULT_MS / 1000


def test_a_welcome_without_a_usable_heartbeat_falls_back() -> None:
    assert heartbeat_period_s(welcome(heartbeat_ms=0)) == HEARTBEAT_FALLBACK_MS / 1000 == 5.0


def test_the_lost_lease_warning_says_what_happened() -> None:
    delivery = Delivery(
        id="j1",
        queue="q",
        type="send",
        args=msgspec.Raw(b"\x90"),
        token=3,
        deadline_ms=1,
        attempt=1,
        max_attempts=2,
        lease_ttl_ms=1000,
        priority=5,
        created_ms=1,
    )
    message = lease_lost_message(Job(delivery))
    assert message.startswith("lease lost for job j1 (type send): the broker declared this")
    assert message.endswith("another worker may run it")
