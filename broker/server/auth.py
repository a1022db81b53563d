"""The broker's side of the handshake: hello, then (with keys) challenge and auth.

A broker without a key file answers a valid ``hello`` with ``welcome``, as it
always has (protected mode keeps such a broker on loopback, see
``security``). A broker with keys answers a ``hello`` that names a live key
with a ``challenge`` (its own fresh nonce and its proof), and welcomes the
connection only once the client's ``auth`` carries the right proof
(protocol.auth has the proofs). Every refusal is one ``error``, then close.

Failed authentication makes guessing slow without holding a place of the
broker's: the ``auth_failed`` is sent at once and the connection closed,
and the failure is remembered by *source* — the address
(``limits.source_address``) and the key id named, every unknown key id
counting as one — so that the next attempt from that source is refused at
once, before any check, until ``auth_fail_delay_ms`` has passed, doubled
for each recent failure there (at most 2**4 times). A success clears its
own source only: a guesser at an address does not slow the other keys
used from it, and a client that gets in does not speed the guesser up.
The failure table is bounded: at most ``FAILURES_MAX_SOURCES`` sources,
each forgotten ``FAILURE_MEMORY_MS`` after its last failure. Keys are never
logged; key ids may be.
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

FAILURES_MAX_SOURCES = 4096
FAILURE_MEMORY_MS = 60_000
Source = tuple[str, str]  # the source address, and the key id named ("": an unknown one)


def read_private_file(path: str, what: str, error: type[ValueError], max_bytes: int = -1) -> bytes:
    """What a file of secrets holds (at most ``max_bytes``): only its owner
    may read or write it (mode 0600 or stricter, checked on the open file).
    ``error`` says why it cannot be used, naming it as ``what``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as file:
        problem = A.mode_problem(path, os.fstat(fd).st_mode)
        if problem is not None:
            raise error(problem.replace("key file", what))
        return file.read(max_bytes)


def read_key_file(path: str) -> list[A.Key]:
    """The keys of ``path``; ``KeyFileError`` if unreadable, too open or malformed."""
    return A.parse_key_file(read_private_file(path, "key file", A.KeyFileError), path)


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
    """Recent authentication failures by source: when the next attempt
    from there may be checked."""

    def __init__(self, base_delay_ms: int) -> None:
        self.base_delay_ms = base_delay_ms
        self._failures: OrderedDict[Source, tuple[int, int]] = OrderedDict()  # count, last ms

    def __len__(self) -> int:
        return len(self._failures)

    def _recent(self, source: Source, now_ms: int) -> tuple[int, int]:
        count, last_ms = self._failures.get(source, (0, 0))
        return (count, last_ms) if now_ms - last_ms < FAILURE_MEMORY_MS else (0, 0)

    def delay_ms(self, count: int) -> int:
        """The wait after the ``count``-th recent failure of a source."""
        return int(self.base_delay_ms * 2 ** min(count - 1, L.AUTH_FAIL_DELAY_STEPS))

    def wait_ms(self, source: Source, now_ms: int) -> int:
        """How long before an attempt from ``source`` is checked (0: now)."""
        count, last_ms = self._recent(source, now_ms)
        return max(0, last_ms + self.delay_ms(count) - now_ms) if count else 0

    def failed(self, source: Source, now_ms: int) -> int:
        """Count a failure: the wait it puts on the source's next attempt."""
        count = self._recent(source, now_ms)[0] + 1
        self._failures.pop(source, None)
        self._failures[source] = (count, now_ms)  # the newest last
        while self._failures:
            oldest, (_, oldest_ms) = next(iter(self._failures.items()))
            if len(self._failures) <= FAILURES_MAX_SOURCES and (
                now_ms - oldest_ms < FAILURE_MEMORY_MS
            ):
                break
            del self._failures[oldest]
        return self.delay_ms(count)

    def succeeded(self, source: Source) -> None:
        self._failures.pop(source, None)


class PendingAuth(NamedTuple):
    """A challenged connection: its hello, the key it named, the transcript."""

    hello: M.Hello
    key: A.Key
    transcript: bytes


OpenSession = Callable[["Connection", M.Hello, int], None]


class Handshake:
    def __init__(
        self,
        keyring: Keyring | None,
        failures: FailureTable,
        refusals: "RefusalLog",
        open_session: OpenSession,
        clock_ms: Callable[[], int],
    ) -> None:
        self.keyring = keyring
        self.failures = failures
        self.refusals = refusals
        self.open_session = open_session  # sends the welcome
        self.clock_ms = clock_ms

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
        source = (connection.source, key.id if key is not None else "")
        wait_ms = self.failures.wait_ms(source, self.clock_ms())
        if wait_ms:
            message = f"too many failed authentications from here: try again in {wait_ms} ms"
            self.refuse(connection, hello.rid, ErrorCode.AUTH_FAILED, message)
            return
        if key is None:
            self._fail(connection, hello.rid, source, f"no live key {hello.key_id!r}")
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
        source = (connection.source, pending.key.id)
        if not A.proof_matches(expected, request.proof):
            self._fail(connection, request.rid, source, f"wrong proof for key {pending.key.id!r}")
            return
        connection.pending_auth = None
        self.failures.succeeded(source)
        self.open_session(connection, pending.hello, request.rid)

    def _fail(self, connection: "Connection", rid: int, source: Source, reason: str) -> None:
        """Answer ``auth_failed`` and close at once; the source waits before its next try."""
        wait_ms = self.failures.failed(source, self.clock_ms())
        self.refusals.refused(connection.peer, ErrorCode.AUTH_FAILED, reason)
        message = f"{_AUTH_FAILED}; the next attempt from here is checked after {wait_ms} ms"
        connection.close_with(M.Error(rid, ErrorCode.AUTH_FAILED, message))

    def refuse(self, connection: "Connection", rid: int, code: ErrorCode, message: str) -> None:
        self.refusals.refused(connection.peer, code, message)
        connection.close_with(M.Error(rid, code, message))


_FIRST_HELLO = "the first frame must be hello"
_AUTH_FAILED = "authentication failed: an unknown or expired key id, or the wrong secret"
