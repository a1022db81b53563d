"""Authentication, pure parts: proofs, key files, the failure table, both handshakes.

docs/protocol.md §4.5. The broker's handshake runs here against fake
connections with an injected clock and timer; the client's against the
sans-IO core.
"""

import hashlib
import hmac
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from leash.broker.server.auth import (
    FAILURE_MEMORY_MS,
    FAILURES_MAX_SOURCES,
    FailureTable,
    Handshake,
    Keyring,
)
from leash.broker.server.limits import RefusalLog
from leash.client._core import ClientCore
from leash.client._exceptions import BrokerNotVerified, ProtocolViolation
from leash.client._identity import Identity
from leash.protocol import auth as A
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from leash.protocol.frames import FrameDecoder, encode_frame

NOW = datetime(2026, 6, 1, tzinfo=UTC)
KEY = A.Key("k-1", bytes(range(32)))


def key_text(*keys: A.Key) -> bytes:
    return "\n".join(A.key_file_text(key) for key in keys).encode()


# --- proofs ----------------------------------------------------------------------


def test_the_transcript_is_six_length_prefixed_fields_in_order() -> None:
    transcript = A.transcript(1, "k-1", "w-9", b"\x11" * 16, b"\x22" * 32)
    expected = b""
    for part in (
        b"leash-auth-v1",
        struct.pack(">I", 1),
        b"k-1",
        b"w-9",
        b"\x11" * 16,
        b"\x22" * 32,
    ):
        expected += struct.pack(">I", len(part)) + part
    assert transcript == expected


def test_the_proofs_are_hmac_sha256_over_a_label_and_the_transcript() -> None:
    transcript = A.transcript(1, KEY.id, "w", b"a" * 32, b"b" * 32)
    server = hmac.new(KEY.secret, b"leash-server" + transcript, hashlib.sha256).digest()
    client = hmac.new(KEY.secret, b"leash-client" + transcript, hashlib.sha256).digest()
    assert A.server_proof(KEY.secret, transcript) == server
    assert A.client_proof(KEY.secret, transcript) == client
    assert server != client  # a broker's proof is never a valid client proof
    assert A.proof_matches(client, client) and not A.proof_matches(client, server)
    assert not A.proof_matches(client, client[:16])


def test_any_change_to_the_transcript_changes_the_proof() -> None:
    base = (1, "k", "w", b"n" * 32, b"s" * 32)
    proofs = {A.client_proof(KEY.secret, A.transcript(*base))}
    for index, changed in enumerate([2, "k2", "w2", b"m" * 32, b"t" * 32]):
        fields = list(base)
        fields[index] = changed
        proofs.add(A.client_proof(KEY.secret, A.transcript(*fields)))  # type: ignore[arg-type]
    assert len(proofs) == 6


def test_a_key_never_shows_its_secret_in_its_repr() -> None:
    assert KEY.secret.hex() not in repr(KEY) and "k-1" in repr(KEY)


# --- key files -----------------------------------------------------------------


def test_a_key_file_round_trips_through_the_keygen_format() -> None:
    expiring = A.Key("k-2", bytes(range(1, 33)), not_after=NOW)
    assert A.parse_key_file(key_text(KEY, expiring), "f") == [KEY, expiring]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (b"", "holds no [[keys]]"),
        (b'[[keys]]\nid = "a"\nsecret = "zz"\n', "hexadecimal"),
        (b'[[keys]]\nid = "a"\nsecret = "' + b"ab" * 31 + b'"\n', "at least 32 random bytes"),
        (b'[[keys]]\nid = "a b"\nsecret = "' + b"ab" * 32 + b'"\n', "$.keys[0].id"),
        (b'[[keys]]\nid = "a"\nsecret = "' + b"ab" * 32 + b'"\nextra = 1\n', "unknown field"),
        (
            b'[[keys]]\nid = "a"\nsecret = "'
            + b"ab" * 32
            + b'"\nnot_after = 2026-01-01T00:00:00\n',
            "timezone",
        ),
        (key_text(KEY, KEY), "used twice"),
        (b"[[keys", "key file f"),
    ],
)
def test_a_bad_key_file_says_what_is_wrong(text: bytes, says: str) -> None:
    with pytest.raises(A.KeyFileError) as refused:
        A.parse_key_file(text, "f")
    assert says in str(refused.value)


def test_a_key_file_open_to_others_is_refused_with_the_fix() -> None:
    assert A.mode_problem("/k", 0o100600) is None
    assert A.mode_problem("/k", 0o100400) is None
    for mode in (0o100640, 0o100604, 0o100660, 0o100644):
        problem = A.mode_problem("/k", mode)
        assert problem is not None and "chmod 600 /k" in problem


def test_a_client_takes_the_named_key_else_the_last_live_one() -> None:
    old = A.Key("old", b"o" * 32, not_after=NOW - timedelta(days=1))
    a, b = A.Key("a", b"a" * 32), A.Key("b", b"b" * 32, not_after=NOW + timedelta(days=1))
    assert A.choose_key([a, b, old], None, NOW, "f") == b
    assert A.choose_key([a, b, old], "a", NOW, "f") == a
    with pytest.raises(A.KeyFileError, match="expired"):
        A.choose_key([a, old], "old", NOW, "f")
    with pytest.raises(A.KeyFileError, match="no key 'c'"):
        A.choose_key([a], "c", NOW, "f")
    with pytest.raises(A.KeyFileError, match="every key"):
        A.choose_key([old], None, NOW, "f")


def test_a_key_is_live_up_to_and_including_its_not_after() -> None:
    key = A.Key("k", b"k" * 32, not_after=NOW)
    assert key.live(NOW) and not key.live(NOW + timedelta(microseconds=1))


def test_the_keyring_keeps_its_keys_when_a_reload_fails(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_bytes(key_text(KEY))
    path.chmod(0o600)
    ring = Keyring(str(path))
    path.write_bytes(b"broken")
    ring.reload()
    assert ring.find("k-1", NOW) == KEY
    other = A.Key("k-2", b"2" * 32)
    path.write_bytes(key_text(other))
    ring.reload()
    assert ring.find("k-1", NOW) is None and ring.find("k-2", NOW) == other
    path.chmod(0o644)
    ring.reload()  # refused: too open
    assert ring.find("k-2", NOW) == other


# --- the failure table ---------------------------------------------------------


GUESSER = ("1.2.3.4", "k-1")


def test_repeated_failures_from_one_source_double_the_wait_up_to_16_times() -> None:
    table = FailureTable(base_delay_ms=100)
    waits = [table.failed(GUESSER, now_ms) for now_ms in range(0, 7000, 1000)]
    assert waits == [100, 200, 400, 800, 1600, 1600, 1600]
    assert table.wait_ms(GUESSER, 6000) == 1600 and table.wait_ms(GUESSER, 7599) == 1
    assert table.wait_ms(GUESSER, 7600) == 0
    assert table.wait_ms(("5.6.7.8", "k-1"), 6000) == 0  # another address is not slowed


def test_a_success_clears_its_own_source_only() -> None:
    """One client getting in neither lifts the wait of a guesser at its
    address (another key, or unknown keys) nor its own key's elsewhere."""
    table = FailureTable(base_delay_ms=100)
    for source in [("1.2.3.4", ""), ("1.2.3.4", "k-2"), ("9.9.9.9", "k-1"), GUESSER]:
        table.failed(source, 0)
    table.succeeded(GUESSER)
    assert table.wait_ms(GUESSER, 0) == 0
    assert [table.wait_ms(s, 0) for s in [("1.2.3.4", ""), ("1.2.3.4", "k-2")]] == [100, 100]
    assert table.wait_ms(("9.9.9.9", "k-1"), 0) == 100


def test_a_failure_is_forgotten_after_a_minute() -> None:
    table = FailureTable(base_delay_ms=100)
    table.failed(("a", ""), 0)
    table.failed(("a", ""), 0)
    assert table.failed(("a", ""), FAILURE_MEMORY_MS - 1) == 400
    assert table.failed(("a", ""), 2 * FAILURE_MEMORY_MS) == 100  # counted from 1 again
    table.failed(("b", ""), 3 * FAILURE_MEMORY_MS)
    assert len(table) == 1  # "a" expired and was dropped


def test_the_failure_table_is_bounded() -> None:
    table = FailureTable(base_delay_ms=100)
    for index in range(FAILURES_MAX_SOURCES + 500):
        table.failed((f"10.0.{index // 256}.{index % 256}", ""), now_ms=index)
    assert len(table) == FAILURES_MAX_SOURCES
    assert table.wait_ms(("10.0.0.0", ""), 10_000) == 0  # the oldest went first


# --- the broker's handshake ------------------------------------------------------


@dataclass
class FakeConnection:
    """What the handshake reads of a connection and does to it (also used by
    tests/property/test_handshake_fuzz.py)."""

    host: str = "127.0.0.1"
    source: str = "127.0.0.1"
    peer: str = "127.0.0.1:5000"
    pending_auth: Any = None
    sent: list[M.Reply] = field(default_factory=list)
    last: M.Reply | None = None  # the reply it was closed with
    closed: bool = False
    reading: bool = True

    def send(self, reply: M.Reply) -> None:
        self.sent.append(reply)

    def close_with(self, reply: M.Reply) -> None:
        self.last, self.closed = reply, True

    def stop_reading(self) -> None:
        self.reading = False


class Broker:
    def __init__(self, keyring: Keyring | None, delay_ms: int = 500) -> None:
        self.opened: list[tuple[M.Hello, int]] = []
        self.now_ms = 0
        self.handshake = Handshake(
            keyring,
            FailureTable(delay_ms),
            RefusalLog(__import__("logging").getLogger("test")),
            lambda connection, hello, rid: self.opened.append((hello, rid)),
            lambda: self.now_ms,
        )

    def step(self, connection: FakeConnection, request: M.Request) -> None:
        self.handshake.step(connection, request)  # type: ignore[arg-type]


@pytest.fixture
def keyring(tmp_path: Path) -> Keyring:
    path = tmp_path / "keys.toml"
    expired = A.Key("k-old", b"o" * 32, not_after=datetime.now(UTC) - timedelta(seconds=1))
    path.write_bytes(key_text(KEY, expired))
    path.chmod(0o600)
    return Keyring(str(path))


def hello(**fields: Any) -> M.Hello:
    return M.Hello(rid=1, version=1, worker_id="w", **fields)


def test_a_broker_without_keys_welcomes_a_hello_at_once() -> None:
    broker, connection = Broker(None), FakeConnection()
    broker.step(connection, hello(key_id="k-1", nonce=b"n" * 32))  # the key is ignored
    assert broker.opened == [(hello(key_id="k-1", nonce=b"n" * 32), 1)]


def test_the_authenticated_handshake_ends_in_a_session(keyring: Keyring) -> None:
    broker, connection = Broker(keyring), FakeConnection()
    nonce = b"c" * 32
    broker.step(connection, hello(key_id="k-1", nonce=nonce))
    [challenge] = connection.sent
    assert isinstance(challenge, M.Challenge) and len(challenge.nonce) == 32
    transcript = A.transcript(1, "k-1", "w", nonce, challenge.nonce)
    assert challenge.proof == A.server_proof(KEY.secret, transcript)
    assert broker.opened == []
    broker.step(connection, M.Auth(rid=2, proof=A.client_proof(KEY.secret, transcript)))
    assert [rid for _, rid in broker.opened] == [2]
    assert connection.pending_auth is None and connection.last is None


def test_two_challenges_never_share_a_nonce(keyring: Keyring) -> None:
    broker, first, second = Broker(keyring), FakeConnection(), FakeConnection()
    broker.step(first, hello(key_id="k-1", nonce=b"c" * 32))
    broker.step(second, hello(key_id="k-1", nonce=b"c" * 32))
    assert first.sent[0].nonce != second.sent[0].nonce  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (hello(), ErrorCode.AUTH_REQUIRED),
        (hello(key_id="k-1", nonce=b"short"), ErrorCode.BAD_REQUEST),
        (M.Beat(rid=1), ErrorCode.HANDSHAKE_REQUIRED),
        (M.Hello(rid=1, version=2, worker_id="w"), ErrorCode.UNSUPPORTED_VERSION),
    ],
)
def test_a_bad_first_frame_is_refused_at_once(
    keyring: Keyring, request_: M.Request, code: ErrorCode
) -> None:
    broker, connection = Broker(keyring), FakeConnection()
    broker.step(connection, request_)
    assert isinstance(connection.last, M.Error) and connection.last.code == code
    assert broker.opened == []


def failed_at_once(connection: FakeConnection, rid: int) -> str:
    """The connection was answered auth_failed and closed: the message."""
    assert connection.closed and isinstance(connection.last, M.Error)
    assert (connection.last.code, connection.last.rid) == (ErrorCode.AUTH_FAILED, rid)
    return connection.last.message


@pytest.mark.parametrize("key_id", ["k-unknown", "k-old"])
def test_an_unknown_or_expired_key_fails_at_once_and_the_next_try_waits(
    keyring: Keyring, key_id: str
) -> None:
    broker, connection = Broker(keyring, delay_ms=500), FakeConnection()
    broker.step(connection, hello(key_id=key_id, nonce=b"c" * 32))
    assert connection.sent == []
    assert "checked after 500 ms" in failed_at_once(connection, 1)
    broker.now_ms = 499  # any unknown key id from here waits, not only this one
    again = FakeConnection()
    broker.step(again, hello(key_id="k-other-unknown", nonce=b"c" * 32))
    assert "try again in 1 ms" in failed_at_once(again, 1)
    known = FakeConnection()  # a key the broker holds, from the same address, is not slowed
    broker.step(known, hello(key_id="k-1", nonce=b"c" * 32))
    assert isinstance(known.sent[0], M.Challenge) and not known.closed


def test_a_wrong_proof_fails_at_once_and_each_failure_doubles_the_wait(keyring: Keyring) -> None:
    broker = Broker(keyring, delay_ms=500)
    waits = []
    for _ in range(3):
        connection = FakeConnection()
        broker.step(connection, hello(key_id="k-1", nonce=b"c" * 32))
        broker.step(connection, M.Auth(rid=2, proof=b"\x00" * 32))
        message = failed_at_once(connection, 2)
        waits.append(int(message.rsplit("after ", 1)[1].split()[0]))
        early = FakeConnection()
        broker.now_ms += waits[-1] - 1
        broker.step(early, hello(key_id="k-1", nonce=b"c" * 32))
        assert early.sent == [] and "try again in 1 ms" in failed_at_once(early, 1)
        broker.now_ms += 1
    assert waits == [500, 1000, 2000] and broker.opened == []
    elsewhere = FakeConnection(source="10.9.9.9")  # another address is not slowed
    broker.step(elsewhere, hello(key_id="k-1", nonce=b"c" * 32))
    assert isinstance(elsewhere.sent[0], M.Challenge)


def test_a_client_that_gets_in_clears_only_its_own_wait(keyring: Keyring) -> None:
    broker = Broker(keyring, delay_ms=500)
    guesser = FakeConnection()
    broker.step(guesser, hello(key_id="k-nope", nonce=b"c" * 32))  # unknown keys: one source
    failed_at_once(guesser, 1)
    client = FakeConnection()
    nonce = b"d" * 32
    broker.step(client, hello(key_id="k-1", nonce=nonce))
    challenge = client.sent[0]
    assert isinstance(challenge, M.Challenge)
    transcript = A.transcript(1, "k-1", "w", nonce, challenge.nonce)
    broker.step(client, M.Auth(rid=2, proof=A.client_proof(KEY.secret, transcript)))
    assert [rid for _, rid in broker.opened] == [2]
    again = FakeConnection()
    broker.step(again, hello(key_id="k-nope", nonce=b"c" * 32))
    assert "try again in 500 ms" in failed_at_once(again, 1)


def test_anything_but_auth_after_the_challenge_ends_the_handshake(keyring: Keyring) -> None:
    broker, connection = Broker(keyring), FakeConnection()
    broker.step(connection, hello(key_id="k-1", nonce=b"c" * 32))
    broker.step(connection, hello(key_id="k-1", nonce=b"c" * 32))
    assert isinstance(connection.last, M.Error)
    assert connection.last.code == ErrorCode.HANDSHAKE_REQUIRED


# --- the client's handshake (sans-IO) ------------------------------------------


def complete(core: ClientCore[str], call: Any, reply: M.Reply) -> Any:
    core.start(call, "waiter")
    core.receive_data(encode_frame(M.encoder.encode(reply)))
    completion = core.next_completion()
    assert completion is not None
    if completion.error is not None:
        raise completion.error
    return completion.value


def sent(call: Any) -> M.Request:
    decoder = FrameDecoder()
    decoder.feed(call.frame)
    body = decoder.next_frame()
    assert body is not None
    return M.decode_request(body)


def welcome(rid: int) -> M.Welcome:
    return M.Welcome(rid=rid, version=1, server="s", epoch=1, max_frame_bytes=1 << 20)


def test_the_client_checks_the_brokers_proof_then_proves_itself() -> None:
    core: ClientCore[str] = ClientCore()
    nonce = b"c" * 32
    call = core.hello(Identity("w"), KEY, nonce)
    request = sent(call)
    assert isinstance(request, M.Hello) and (request.key_id, request.nonce) == ("k-1", nonce)
    server_nonce = b"s" * 32
    transcript = A.transcript(1, "k-1", "w", nonce, server_nonce)
    challenge = M.Challenge(call.rid, server_nonce, A.server_proof(KEY.secret, transcript))
    assert complete(core, call, challenge) == challenge
    auth = core.authenticate()
    assert sent(auth) == M.Auth(rid=auth.rid, proof=A.client_proof(KEY.secret, transcript))
    assert complete(core, auth, welcome(auth.rid)).epoch == 1
    assert core.welcome is not None


def test_the_client_refuses_a_challenge_with_a_wrong_proof() -> None:
    core: ClientCore[str] = ClientCore()
    call = core.hello(Identity("w"), KEY, b"c" * 32)
    with pytest.raises(BrokerNotVerified, match="could not prove"):
        complete(core, call, M.Challenge(call.rid, b"s" * 32, b"\x00" * 32))


def test_a_client_with_a_key_refuses_a_welcome_without_a_challenge() -> None:
    core: ClientCore[str] = ClientCore()
    call = core.hello(Identity("w"), KEY, b"c" * 32)
    with pytest.raises(BrokerNotVerified, match="without checking"):
        complete(core, call, welcome(call.rid))
    assert core.welcome is None


def test_a_client_without_a_key_refuses_a_challenge() -> None:
    core: ClientCore[str] = ClientCore()
    call = core.hello(Identity("w"))
    with pytest.raises(ProtocolViolation):
        complete(core, call, M.Challenge(call.rid, b"s" * 32, b"p" * 32))


def test_an_error_with_rid_0_during_authentication_is_the_handshakes() -> None:
    core: ClientCore[str] = ClientCore()
    call = core.hello(Identity("w"), KEY, b"c" * 32)
    transcript = A.transcript(1, "k-1", "w", b"c" * 32, b"s" * 32)
    complete(core, call, M.Challenge(call.rid, b"s" * 32, A.server_proof(KEY.secret, transcript)))
    auth = core.authenticate()
    with pytest.raises(Exception) as refused:
        complete(core, auth, M.Error(0, ErrorCode.HANDSHAKE_TIMEOUT, "too slow"))
    assert getattr(refused.value, "code", None) == ErrorCode.HANDSHAKE_TIMEOUT
