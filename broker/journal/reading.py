"""How stored bytes become records again: the one way every reader of the
journal and the snapshots decodes a payload (start-up, ``leash journal
verify`` and ``dump``, the snapshotter, ``leash journal compact``).

msgspec decodes nested arrays and maps by recursing, so how deeply nested a
value it can read depends on how deep the caller's stack already is. Two
rules make that the same for every reader, and far more than any record
needs:

- ``on_own_stack`` runs the reading (``recovery.recover``, through which
  every reader goes) in a thread of its own, which starts from an empty
  stack: a record is readable by all readers or by none, and each has
  nearly the interpreter's whole recursion limit (1 000) to read with.
- Running out of it is a decode error like any other (``decode`` raises
  ``Unreadable``; recovery's hot loop catches the RecursionError itself):
  recovery then names the file, offset and sequence number (start-up
  exits 78), never a traceback.

What the broker writes nests far less: job args at most ``ARGS_DEPTH_MAX``
(64) levels, checked when a request is decoded, inside records and state
images that add fewer than ten.
"""

import threading
from collections.abc import Callable
from typing import TypeVar

import msgspec

from leash.broker.errors import BrokerError

T = TypeVar("T")
READER_STACK_BYTES = 16 * 1024 * 1024  # room for msgspec to recurse as deep as the limit allows


UNREADABLE = "nested too deeply to read back (written by a broker without the nesting limit?)"


class Unreadable(BrokerError, msgspec.DecodeError):
    """A stored value nested too deeply to be read back."""


def decode(decoder: "msgspec.msgpack.Decoder[T]", payload: bytes | memoryview) -> T:
    """``decoder.decode(payload)``, with nesting too deep to read an error."""
    try:
        return decoder.decode(payload)
    except RecursionError:
        raise Unreadable(UNREADABLE) from None


def on_own_stack(read: Callable[[], T]) -> T:
    """``read()`` in a thread of its own, from an empty stack; its result,
    or its exception raised here."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(read())
        except BaseException as error:  # handed to the caller, whatever it is
            failure.append(error)

    size = threading.stack_size()
    threading.stack_size(max(size, READER_STACK_BYTES))
    try:
        reader = threading.Thread(target=run, name="leash-reader", daemon=True)
        reader.start()
    finally:
        threading.stack_size(size)
    reader.join()
    if failure:
        raise failure[0]
    return outcome[0]
