"""The broker's side of the handshake: hello, then (with keys) challenge and auth.

A broker without a key file answers a valid ``hello`` with ``welcome``, as it
always has (protected mode keeps such a broker on loopback, see
``security``). A broker with keys answers a ``hello`` that names a live key
with a ``challenge`` (its own fresh nonce and its proof), and welcomes the
connection only once the client's ``auth`` carries the right proof
(protocol.auth has the proofs). Every refusal is one ``error``, then close.

Failed authentication is answered after a delay: ``auth_fail_delay_ms``,
doubled for each recent failure from the same address (at most 2**4
times), so guessing is slow. The failure table is bounded: at most
``FAILURES_MAX_ADDRESSES`` addresses, each forgotten ``FAILURE_MEMORY_MS``
after its last failure. Keys are never logged; key ids may be.
"""

import logging
import os
import secrets
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple

from leash.protocol import PROTOCOL_VERSION
from leash.protocol import auth as A
from leash.protocol import limits as L
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from leash.broker.server.connection import Connection
    from leash.broker.server.limits import RefusalLog

log = logging.getLogger("leash.server")

FAILURES_MAX_ADDRESSES = 4096
FAILURE_MEMORY_MS = 60_000


def read_key_file(path: str) -> list[A.Key]:
    """The keys of ``path``; ``KeyFileError`` if unreadable, too open or malformed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise A.KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as file:
        problem = A.mode_problem(path, os.fstat(fd).st_mode)
        if problem is not None:
            raise A.KeyFileError(problem)
        return A.parse_key_file(file.read(), path)


class Keyring:
    """The keys the broker accepts, read from a key file; reloaded on SIGHUP."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.keys = {key.id: key for key in read_key_file(path)}

    def reload(self) -> None:
        """Read the file again; keep the keys in force if it cannot be used."""
        try:
            keys = {key.id: key for key in read_key_file(self.path)}
        except A.KeyFileError as error:
            log.error("key file not reloaded, the old keys stay in force: %s", error)
            return
        self.keys = keys
        log.info("key file %s reloaded: key ids %s", self.path, ", ".join(sorted(keys)))

    def find(self, key_id: str, now: datetime) -> A.Key | None:
        key = self.keys.get(key_id)
        return key if key is not None and key.live(now) else None


class FailureTable:
    """Recent authentication failures by address: how long to delay the next answer."""

    def __init__(self, base_delay_ms: int) -> None:
        self.base_delay_ms = base_delay_ms
        self._failures: OrderedDict[str, tuple[int, int]] = OrderedDict()  # count, last ms

    def __len__(self) -> int:
        return len(self._failures)

    def delay_ms(self, address: str, now_ms: int) -> int:
        count, last_ms = self._failures.get(address, (0, 0))
        if now_ms - last_ms >= FAILURE_MEMORY_MS:
            count = 0
        return int(self.base_delay_ms * 2 ** min(count, L.AUTH_FAIL_DELAY_STEPS))

    def failed(self, address: str, now_ms: int) -> None:
        count, last_ms = self._failures.pop(address, (0, 0))
        if now_ms - last_ms >= FAILURE_MEMORY_MS:
            count = 0
        self._failures[address] = (count + 1, now_ms)  # the newest last
        while self._failures:
            oldest, (_, oldest_ms) = next(iter(self._failures.items()))
            if len(self._failures) <= FAILURES_MAX_ADDRESSES and (
                now_ms - oldest_ms < FAILURE_MEMORY_MS
            ):
                break
            del self._failures[oldest]

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)


class PendingAuth(NamedTuple):
    """A challenged connection: its hello, the key it named, the transcript."""

    hello: M.Hello
    key: A.Key
    transcript: bytes


OpenSession = Callable[["Connection", M.Hello, int], None]
CallLater = Callable[[float, Callable[[M.Error], None], M.Error], object]


class Handshake:
    def __init__(
        self,
        keyring: Keyring | None,
        failures: FailureTable,
        refusals: "RefusalLog",
        open_session: OpenSession,
        clock_ms: Callable[[], int],
        call_later: CallLater,
    ) -> None:
        self.keyring = keyring
        self.failures = failures
        self.refusals = refusals
        self.open_session = open_session  # sends the welcome
        self.clock_ms = clock_ms
        self.call_later = call_later  # loop.call_later

    def step(self, connection: "Connection", request: M.Request) -> None:
        """Handle one request of a connection that has not been welcomed."""
        pending = connection.pending_auth
        if pending is not None:
            self._check_proof(connection, pending, request)
        elif not isinstance(request, M.Hello):
            self.refuse(connection, request.rid, ErrorCode.HANDSHAKE_REQUIRED, _FIRST_HELLO)
        elif request.version != PROTOCOL_VERSION:
            message = f"protocol version {request.version} is not supported; use {PROTOCOL_VERSION}"
            self.refuse(connection, request.rid, ErrorCode.UNSUPPORTED_VERSION, message)
        elif self.keyring is None:
            self.open_session(connection, request, request.rid)
        else:
            self._challenge(connection, request, self.keyring)

    def _challenge(self, connection: "Connection", hello: M.Hello, keyring: Keyring) -> None:
        if not hello.key_id:
            message = "this broker takes authenticated connections only: connect with a key"
            self.refuse(connection, hello.rid, ErrorCode.AUTH_REQUIRED, message)
            return
        if len(hello.nonce) < L.AUTH_NONCE_MIN_BYTES:
            message = f"a hello with a key_id needs a nonce of {L.AUTH_NONCE_MIN_BYTES}+ bytes"
            self.refuse(connection, hello.rid, ErrorCode.BAD_REQUEST, message)
            return
        key = keyring.find(hello.key_id, datetime.now(UTC))
        if key is None:
            self._fail(connection, hello.rid, f"no live key {hello.key_id!r}")
            return
        nonce = secrets.token_bytes(L.AUTH_NONCE_BYTES)
        transcript = A.transcript(hello.version, key.id, hello.worker_id, hello.nonce, nonce)
        connection.pending_auth = PendingAuth(hello, key, transcript)
        connection.send(M.Challenge(hello.rid, nonce, A.server_proof(key.secret, transcript)))

    def _check_proof(
        self, connection: "Connection", pending: PendingAuth, request: M.Request
    ) -> None:
        if not isinstance(request, M.Auth):
            message = "the handshake is not finished: the next frame must be auth"
            self.refuse(connection, request.rid, ErrorCode.HANDSHAKE_REQUIRED, message)
            return
        expected = A.client_proof(pending.key.secret, pending.transcript)
        if not A.proof_matches(expected, request.proof):
            self._fail(connection, request.rid, f"wrong proof for key {pending.key.id!r}")
            return
        connection.pending_auth = None
        self.failures.succeeded(connection.host)
        self.open_session(connection, pending.hello, request.rid)

    def _fail(self, connection: "Connection", rid: int, reason: str) -> None:
        """Answer ``auth_failed`` after the delay; read nothing more meanwhile."""
        now_ms = self.clock_ms()
        delay_ms = self.failures.delay_ms(connection.host, now_ms)
        self.failures.failed(connection.host, now_ms)
        self.refusals.refused(connection.peer, ErrorCode.AUTH_FAILED, reason)
        connection.stop_reading()
        error = M.Error(rid, ErrorCode.AUTH_FAILED, _AUTH_FAILED)
        self.call_later(delay_ms / 1000, connection.close_with, error)

    def refuse(self, connection: "Connection", rid: int, code: ErrorCode, message: str) -> None:
        self.refusals.refused(connection.peer, code, message)
        connection.close_with(M.Error(rid, code, message))


_FIRST_HELLO = "the first frame must be hello"
_AUTH_FAILED = "authentication failed: an unknown or expired key id, or the wrong secret"
