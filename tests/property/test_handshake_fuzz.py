"""Arbitrary bytes, cut anywhere, into the broker's handshake: only typed errors.

The bytes go through what a connection does before its welcome: the frame
decoder with the 4 KiB handshake limit, the typed request decoder, and the
broker's handshake (with a key file, so the challenge and auth steps are
reached). Expected failures are ``ProtocolError`` (a bad length) and
``BadRequest`` (a body that does not decode); anything else raised is a bug.
After a welcome the same bytes go on through the post-handshake checks.
On failure hypothesis prints the falsifying example and a reproduction blob.
"""

import itertools
import logging
import secrets
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leash.broker.server.auth import FailureTable, Handshake, Keyring
from leash.broker.server.limits import RefusalLog, oversized_args
from leash.protocol import auth as A
from leash.protocol import messages as M
from leash.protocol.errors import ProtocolError
from leash.protocol.frames import FrameDecoder, encode_frame
from leash.protocol.limits import FRAME_MAX_BYTES, HANDSHAKE_FRAME_MAX_BYTES
from tests.tier import scaled
from tests.unit.test_auth import FakeConnection

FUZZ = settings(
    max_examples=scaled(300),
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
KEY = A.Key("k-1", bytes(range(32)))
RIGHT_AUTH = "right auth"  # stands for the auth frame that answers the challenge correctly


class Run:
    """One connection's bytes through the handshake path."""

    def __init__(self, keyring: Keyring) -> None:
        self.peer = FakeConnection()
        self.welcomed = False
        self.decoder = FrameDecoder(HANDSHAKE_FRAME_MAX_BYTES)
        self.handshake = Handshake(
            keyring,
            FailureTable(10),
            RefusalLog(logging.getLogger("fuzz")),
            self._open,
            lambda: 0,
        )

    def _open(self, peer: Any, hello: M.Hello, rid: int) -> None:
        self.welcomed = True
        self.decoder.max_frame_bytes = FRAME_MAX_BYTES

    @property
    def over(self) -> bool:
        return self.peer.closed or not self.peer.reading

    def feed(self, chunk: bytes) -> None:
        """Feed bytes; return quietly when the connection would be closed."""
        if self.over:
            return
        self.decoder.feed(chunk)
        while not self.over:
            try:
                body = self.decoder.next_frame()
            except ProtocolError:
                self.peer.closed = True
                return
            if body is None:
                return
            try:
                request = M.decode_request(body)
            except M.BadRequest:
                if not self.welcomed:
                    self.peer.closed = True
                continue
            if self.welcomed:
                oversized_args(request, 64)
            else:
                self.handshake.step(self.peer, request)  # type: ignore[arg-type]

    def right_auth(self) -> bytes:
        """The auth frame that answers the last challenge (garbage if there was none)."""
        challenges = [r for r in self.peer.sent if isinstance(r, M.Challenge)]
        pending = self.peer.pending_auth
        if not challenges or pending is None:
            return b"\x00\x00\x00\x01\xc1"
        proof = A.client_proof(KEY.secret, pending.transcript)
        return encode_frame(M.encoder.encode(M.Auth(rid=2, proof=proof)))


@pytest.fixture(scope="module")
def keyring(tmp_path_factory: pytest.TempPathFactory) -> Keyring:
    path: Path = tmp_path_factory.mktemp("keys") / "keys.toml"
    path.write_text(A.key_file_text(KEY))
    path.chmod(0o600)
    return Keyring(str(path))


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@FUZZ
@given(data=st.binary(max_size=6000), points=st.lists(st.integers(0, 6000), max_size=20))
def test_arbitrary_bytes_cut_anywhere_raise_only_typed_errors(
    keyring: Keyring, data: bytes, points: list[int]
) -> None:
    run = Run(keyring)
    for chunk in cut(data, points):
        run.feed(chunk)


def encoded(value: Any) -> bytes:
    return encode_frame(msgspec.msgpack.encode(value))


def hello_frame(key_id: str, nonce: bytes, version: int, worker: str) -> bytes:
    fields = {"version": version, "worker_id": worker, "key_id": key_id, "nonce": nonce}
    return encoded({"op": "hello", "rid": 1, **fields})


hellos = st.builds(
    hello_frame,
    st.sampled_from(["k-1", "k-2", "", "x" * 65]),
    st.binary(max_size=70),
    st.sampled_from([1, 1, 1, 2, -1]),
    st.sampled_from(["w", "", "w" * 129]),
)
auths = st.builds(
    lambda proof, rid: encoded({"op": "auth", "rid": rid, "proof": proof}),
    st.binary(max_size=40),
    st.integers(-1, 2**64 - 1),
)
other_frames = st.one_of(
    st.binary(max_size=64).map(encode_frame),
    st.sampled_from(
        [
            encoded({"op": "push", "rid": 3, "job": {"type": "t", "args": b"x" * 100}}),
            encoded({"op": "push_many", "rid": 4, "jobs": [{"type": "t"}]}),
            encoded({"op": "beat", "rid": 5}),
            encoded({"op": "auth", "rid": 6, "proof": "not bytes"}),
            encoded([1, 2, 3]),
            b"\xff\xff\xff\xff",
            b"\x00\x00\x00\x00",
        ]
    ),
)
pieces = st.lists(
    st.one_of(hellos, auths, other_frames, st.just(RIGHT_AUTH), st.binary(max_size=20)),
    max_size=8,
)


@FUZZ
@given(script=pieces, points=st.lists(st.integers(0, 6000), max_size=12))
def test_handshake_frames_in_any_order_and_any_cut_raise_only_typed_errors(
    keyring: Keyring, script: list[bytes | str], points: list[int]
) -> None:
    run = Run(keyring)
    for piece in script:
        data = run.right_auth() if piece == RIGHT_AUTH else piece
        assert isinstance(data, bytes)
        for chunk in cut(data, points):
            run.feed(chunk)


def test_the_right_hello_and_auth_reach_a_welcome(keyring: Keyring) -> None:
    """The structured fuzz does reach the deep end: a welcome after auth."""
    run = Run(keyring)
    nonce = secrets.token_bytes(32)
    run.feed(hello_frame("k-1", nonce, 1, "w"))
    for chunk in cut(run.right_auth(), [1, 3, 7]):
        run.feed(chunk)
    assert run.welcomed
