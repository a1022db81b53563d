"""What every client request is made of: a ``Call`` (the frame to send and
how its reply becomes the result), and the checks that turn a reply into a
result or the exception to raise (``leash.client._core`` explains the flow)."""

from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

from msgspec import Struct

from leash.protocol.messages import Error, Ok, Reply

from ._exceptions import ProtocolViolation, error_from_reply

T = TypeVar("T")
R = TypeVar("R", bound=Struct)


class Call(NamedTuple, Generic[T]):
    """One request ready to send, and how its reply becomes the result (a
    tuple: one is made per request)."""

    rid: int
    frame: bytes
    finish: Callable[[Reply], T]
    wait_ms: int = 0  # how much longer than usual the reply may take (long-poll)


def expect_reply(reply: Reply, cls: type[R]) -> R:
    """The reply if it is a ``cls``; the server's error raised; else a protocol violation."""
    if isinstance(reply, cls):
        return reply
    if isinstance(reply, Error):
        raise error_from_reply(reply)
    expected = cls.__struct_config__.tag
    got = type(reply).__struct_config__.tag
    raise ProtocolViolation(f"expected a {expected!r} reply, got {got!r}")


def ok_reply(reply: Reply) -> None:
    expect_reply(reply, Ok)
