"""Authentication against the real broker: the right keys get in, nothing else does.

docs/protocol.md §4.1 and §4.5. Each refusal is one error, then the
connection is closed. Brokers run as subprocesses on 127.0.0.1; their
failure delay is shortened where a test does not measure it.
"""

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from leash.client import (
    AsyncClient,
    AuthFailed,
    AuthRequired,
    BrokerNotVerified,
    Client,
    Key,
)
from leash.protocol import PROTOCOL_VERSION
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from tests.integration.broker_proc import BrokerProcess
from tests.integration.net_helpers import Raw, frame, key_file, new_key

pytestmark = pytest.mark.timeout(60)
FAST_FAIL = ("--auth-fail-delay-ms", "50")
TIMER_SLACK_S = 0.002  # the event loop schedules timers to the millisecond

Launch = Callable[..., BrokerProcess]


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Key, Key, str]:
    """Two live keys (a rotation under way) in a key file."""
    old, new = new_key("k-old"), new_key("k-new")
    return old, new, key_file(tmp_path / "keys.toml", old, new)


def test_the_right_key_and_a_rotated_key_are_both_accepted(
    launch_broker: Launch, keys: tuple[Key, Key, str]
) -> None:
    old, new, path = keys
    broker = launch_broker("--key-file", path)
    for key in (old, new):
        with Client("127.0.0.1", broker.port, key=key) as client:
            job_id = client.push("t", [key.id])
            assert client.get_job(job_id).queue == "default"
    assert broker.wait_for_log("authentication on: key ids k-new, k-old")


async def test_the_async_client_authenticates_too(
    launch_broker: Launch, keys: tuple[Key, Key, str]
) -> None:
    _, new, path = keys
    broker = launch_broker("--key-file", path)
    async with AsyncClient("127.0.0.1", broker.port, key=path) as client:  # the file's last key
        assert await client.push("t") != ""
    with pytest.raises(BrokerNotVerified):
        await AsyncClient.connect("127.0.0.1", broker.port, key=Key(new.id, b"x" * 32))


def test_a_wrong_proof_is_refused_at_once_and_the_next_try_waits_out_a_doubling_delay(
    launch_broker: Launch, keys: tuple[Key, Key, str]
) -> None:
    """The failed connection is closed at once (it holds no place while its
    source waits); a try before the delay is over is refused before any
    check, without a challenge; the next one checked after it doubles it."""
    _, new, path = keys
    broker = launch_broker("--key-file", path, "--auth-fail-delay-ms", "1000")

    def hello(raw: Raw) -> M.Reply:
        raw.send(M.Hello(rid=1, version=1, worker_id="w", key_id=new.id, nonce=os.urandom(32)))
        return raw.reply()

    def wrong_proof() -> tuple[M.Error, float]:
        with Raw(broker.port) as raw:
            assert isinstance(hello(raw), M.Challenge)
            raw.send(M.Auth(rid=2, proof=bytes(32)))
            error = raw.error()
            failed_s = time.monotonic()
            assert (error.code, error.rid) == (ErrorCode.AUTH_FAILED, 2)
            assert raw.closed()
            return error, failed_s

    first, failed_s = wrong_proof()
    assert "checked after 1000 ms" in first.message
    with Raw(broker.port) as early:  # within the delay: refused before any check
        refused = hello(early)
        assert time.monotonic() - failed_s < 1.0, "the machine was too slow to try early"
        assert isinstance(refused, M.Error) and refused.code == ErrorCode.AUTH_FAILED
        assert "try again in" in refused.message and early.closed()
    time.sleep(max(0.0, failed_s + 1.0 + TIMER_SLACK_S - time.monotonic()))
    second, _ = wrong_proof()
    assert "checked after 2000 ms" in second.message
    assert broker.wait_for_log("wrong proof for key 'k-new'")
    assert broker.alive()


def test_a_client_with_the_wrong_secret_stops_at_the_brokers_proof(
    launch_broker: Launch, keys: tuple[Key, Key, str]
) -> None:
    """The broker proves first, so a client whose secret differs finds out from
    the challenge and closes; its own (wrong) proof is never sent."""
    _, new, path = keys
    broker = launch_broker("--key-file", path)
    with pytest.raises(BrokerNotVerified, match="could not prove it holds key 'k-new'"):
        Client("127.0.0.1", broker.port, key=Key(new.id, bytes(32)))


def test_no_secret_reaches_the_log(launch_broker: Launch, keys: tuple[Key, Key, str]) -> None:
    old, new, path = keys
    broker = launch_broker("--key-file", path, *FAST_FAIL)
    with Client("127.0.0.1", broker.port, key=old):
        pass
    with pytest.raises(BrokerNotVerified):
        Client("127.0.0.1", broker.port, key=Key(new.id, old.secret))
    with Raw(broker.port) as raw:  # and one that sends a wrong proof
        raw.send(M.Hello(rid=1, version=1, worker_id="w", key_id=new.id, nonce=os.urandom(32)))
        assert isinstance(raw.reply(), M.Challenge)
        raw.send(M.Auth(rid=2, proof=old.secret))
        assert raw.error().code == ErrorCode.AUTH_FAILED
    broker.stop()
    log = "".join(broker.log)
    assert old.secret.hex() not in log and new.secret.hex() not in log
    assert "k-new" in log  # key ids are not secret


def test_an_unknown_key_id_is_refused(launch_broker: Launch, keys: tuple[Key, Key, str]) -> None:
    _, _, path = keys
    broker = launch_broker("--key-file", path, *FAST_FAIL)
    with pytest.raises(AuthFailed):
        Client("127.0.0.1", broker.port, key=new_key("k-stranger"))


def test_an_expired_key_is_refused_and_a_live_one_still_works(
    launch_broker: Launch, tmp_path: Path
) -> None:
    past, future = datetime.now(UTC) - timedelta(minutes=1), datetime.now(UTC) + timedelta(days=1)
    expired = Key("k-2025", os.urandom(32), not_after=past)
    live = Key("k-2026", os.urandom(32), not_after=future)
    broker = launch_broker("--key-file", key_file(tmp_path / "k.toml", expired, live), *FAST_FAIL)
    with pytest.raises(AuthFailed):
        Client("127.0.0.1", broker.port, key=expired)  # a Key object: the client does not check
    with Client("127.0.0.1", broker.port, key=live) as client:
        assert client.welcome.version == PROTOCOL_VERSION


def test_a_hello_without_a_key_is_refused_with_auth_required(
    launch_broker: Launch, keys: tuple[Key, Key, str]
) -> None:
    broker = launch_broker("--key-file", keys[2])
    with pytest.raises(AuthRequired):
        Client("127.0.0.1", broker.port)


def test_no_handshake_is_refused_and_closed(
    launch_broker: Launch, keys: tuple[Key, Key, str]
) -> None:
    broker = launch_broker("--key-file", keys[2], "--handshake-timeout-ms", "500")
    with Raw(broker.port) as raw:
        raw.send(M.Push(rid=1, job=M.JobSpec(type="t")))
        error = raw.error()
        assert (error.code, error.rid) == (ErrorCode.HANDSHAKE_REQUIRED, 1)
        assert raw.closed()
    started_s = time.monotonic()  # before the broker's clock starts
    with Raw(broker.port) as raw:  # says nothing at all
        assert raw.error().code == ErrorCode.HANDSHAKE_TIMEOUT
        assert raw.closed()
        assert time.monotonic() - started_s >= 0.5 - TIMER_SLACK_S


def test_a_frame_other_than_auth_after_the_challenge_ends_the_handshake(
    launch_broker: Launch, keys: tuple[Key, Key, str]
) -> None:
    _, new, path = keys
    broker = launch_broker("--key-file", path)
    with Raw(broker.port) as raw:
        raw.send(M.Hello(rid=1, version=1, worker_id="w", key_id=new.id, nonce=os.urandom(32)))
        assert isinstance(raw.reply(), M.Challenge)
        raw.send(M.Push(rid=2, job=M.JobSpec(type="t")))
        assert raw.error().code == ErrorCode.HANDSHAKE_REQUIRED
        assert raw.closed()


def test_a_replayed_handshake_is_refused(launch_broker: Launch, keys: tuple[Key, Key, str]) -> None:
    _, new, path = keys
    broker = launch_broker("--key-file", path, *FAST_FAIL)
    recorded: list[bytes] = []
    with Raw(broker.port) as raw:  # an eavesdropper records a good handshake, byte for byte
        real_send = raw.send

        def recording_send(data: bytes | M.Request) -> None:
            recorded.append(data if isinstance(data, bytes) else frame(data))
            real_send(data)

        raw.send = recording_send  # type: ignore[method-assign]
        raw.hello("w-replayed", key=new)
    assert len(recorded) == 2  # hello, auth
    with Raw(broker.port) as replay:
        replay.send(recorded[0])
        challenge = replay.reply()
        assert isinstance(challenge, M.Challenge)  # a fresh nonce: the old proof is worthless
        replay.send(recorded[1])
        assert replay.error().code == ErrorCode.AUTH_FAILED
        assert replay.closed()


def test_the_client_rejects_a_broker_that_cannot_prove_the_key(
    launch_broker: Launch, tmp_path: Path
) -> None:
    mine, theirs = new_key("k-1"), new_key("k-1")  # the same id, another secret
    broker = launch_broker("--key-file", key_file(tmp_path / "theirs.toml", theirs))
    with pytest.raises(BrokerNotVerified, match="could not prove"):
        Client("127.0.0.1", broker.port, key=mine)
    # The client sent no proof, so the broker saw no failed authentication.
    broker.stop()
    assert not any("auth_failed" in line for line in broker.log)


def test_the_client_rejects_a_broker_that_welcomes_it_without_a_challenge(
    launch_broker: Launch,
) -> None:
    broker = launch_broker()  # no keys: a hello with a key is simply welcomed
    with pytest.raises(BrokerNotVerified, match="without checking its key"):
        Client("127.0.0.1", broker.port, key=new_key("k-1"))


def test_a_fake_broker_never_gets_the_clients_proof(tmp_path: Path) -> None:
    """A listener that answers the hello with a made-up challenge: the client
    closes without sending anything more."""
    import socket as sockets

    from leash.protocol.frames import FrameDecoder, encode_frame

    listener = sockets.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    received: list[bytes] = []

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.settimeout(10)
            decoder = FrameDecoder(4096)
            while (body := decoder.next_frame()) is None:
                decoder.feed(connection.recv(4096))
            hello = M.decode_request(body)
            challenge = M.Challenge(hello.rid, os.urandom(32), os.urandom(32))
            connection.sendall(encode_frame(M.encoder.encode(challenge)))
            while data := connection.recv(4096):
                received.append(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with pytest.raises(BrokerNotVerified):
            Client("127.0.0.1", port, key=new_key("k-1"), timeout_s=5)
        thread.join(10)
    finally:
        listener.close()
    assert not thread.is_alive()
    assert received == []  # closed without an auth frame


# --- protected mode and the key file ---------------------------------------------


def serve_exit(tmp_path: Path, *args: str) -> tuple[int, str]:
    """Run ``leash serve`` that is expected to refuse to start: exit code and log."""
    command = [sys.executable, "-m", "leash.broker", "serve", "--port", "0"]
    command += ["--data-dir", str(tmp_path / "data"), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    return done.returncode, done.stderr


def test_binding_beyond_loopback_without_a_key_refuses_to_start(tmp_path: Path) -> None:
    code, log = serve_exit(tmp_path, "--host", "0.0.0.0")  # refused before any bind
    assert code == 78, log
    assert "protected mode" in log and "--key-file" in log and "--insecure-no-auth" in log
    assert "listening" not in log


def test_a_key_file_readable_by_others_refuses_to_start(tmp_path: Path) -> None:
    path = key_file(tmp_path / "keys.toml", new_key("k"))
    os.chmod(path, 0o644)
    code, log = serve_exit(tmp_path, "--key-file", path)
    assert code == 78, log
    assert f"chmod 600 {path}" in log and "0644" in log


def test_a_broken_key_file_refuses_to_start_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text('[[keys]]\nid = "k"\nsecret = "abcd"\n')
    path.chmod(0o600)
    code, log = serve_exit(tmp_path, "--key-file", str(path))
    assert code == 78, log
    assert "at least 32 random bytes" in log
    code, log = serve_exit(tmp_path, "--key-file", str(tmp_path / "missing.toml"))
    assert code == 78 and "cannot read key file" in log, log


def test_sighup_reloads_the_key_file(launch_broker: Launch, tmp_path: Path) -> None:
    first, second = new_key("k-1"), new_key("k-2")
    path = tmp_path / "keys.toml"
    broker = launch_broker("--key-file", key_file(path, first), *FAST_FAIL)
    with pytest.raises(AuthFailed):
        Client("127.0.0.1", broker.port, key=second)
    key_file(path, first, second)
    os.kill(broker.pid, 1)  # SIGHUP
    assert broker.wait_for_log("key file")
    assert broker.wait_for_log("reloaded")
    with Client("127.0.0.1", broker.port, key=second):
        pass
    path.write_text("not toml [")
    os.kill(broker.pid, 1)
    assert broker.wait_for_log("key file not reloaded, the old keys stay in force")
    with Client("127.0.0.1", broker.port, key=first):
        pass
