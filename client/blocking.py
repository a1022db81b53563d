"""The blocking client: one TCP connection, one request at a time.

``Client(host, port)`` opens the connection and completes the handshake
before it returns (``Client.connect`` and ``Client.from_url`` do the same), so
a constructed Client is ready to use; close it with ``close()`` or a ``with``
block. It raises ``ConnectFailed`` when the broker cannot be reached.

Threads may share a Client: a lock makes each call hold the connection for
its whole round trip, a long-poll fetch for up to its ``wait_ms``. For many
requests in flight on one connection use ``leash.client.aio.AsyncClient``.

Time limits: a call waits at most ``timeout_s`` for its reply, plus
``wait_ms`` for a fetch, then raises ``RequestTimeout``; the connection stays
usable (a late reply is dropped), unless the request could not be sent whole,
in which case the connection is closed. The request logic is shared with the
async client in ``leash.client._core``; this module only moves bytes.

Security: ``key`` (a ``Key`` or a key file's path) authenticates every
connection, ``tls`` (True or an ``ssl.SSLContext``) makes it TLS; see
``leash.client._security``. ``Client.from_url`` takes both from the URL.

Idle connections: a broker closes a connection that carried no frame for the
``idle_timeout_ms`` its welcome names. Before each call the client opens a
new connection (same worker id, so the process keeps its leases) when the
last one has been idle for three quarters of that time or the broker has
already closed it; the request had not been sent, so nothing is lost or
applied twice.

Lost connections: a call whose connection breaks raises ``ConnectionLost``
(its outcome is unknown) and the next call opens a new connection (same
worker id). Pushes are the exception: ``push``, ``push_many`` and
``create_batch`` are sent again on a new connection, with the same job and
batch ids (a push of a known id adds nothing), until they are answered or
``timeout_s`` has passed (``leash.client._backoff``): a producer never
creates a job twice, and a push that returned was applied. Only ``close()``
closes a client for good.

Forks: a Client used in a process forked after it connected opens a
connection of its own there (``leash.client._fork``), as a process of its
own (a new worker id, unless one was given); the parent's connection is
left alone.
"""

import contextlib
import dataclasses
import os
import secrets
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

from leash.protocol.limits import AUTH_NONCE_BYTES, BATCH_STATUS_MEMBERS_DEFAULT
from leash.protocol.messages import (
    BatchCreated,
    BatchView,
    Challenge,
    ErrorInfo,
    JobView,
    PushResult,
    Welcome,
)

from . import _fork
from ._backoff import PUSH_RETRYABLE, backoff_s
from ._calls import Call
from ._core import ClientCore, Completion
from ._env import Options, endpoint
from ._exceptions import ConnectFailed, ConnectionLost, LeashError, RequestTimeout, ServerError
from ._identity import Identity, process_worker_id
from ._security import KeyOption, TlsOption, as_key, as_tls
from ._types import FailResult, Job, JobSpecLike, Lease, as_job_spec, job_spec, with_id
from ._url import DEFAULT_HOST, DEFAULT_PORT, parse_url

T = TypeVar("T")

_RECV_BYTES = 256 * 1024
IDLE_REOPEN_FRACTION = 0.75  # of the broker's idle timeout: reconnect before it closes
_TIMEVAL = struct.Struct("@ll")  # SO_RCVTIMEO / SO_SNDTIMEO: seconds, microseconds


class Client:
    """A blocking connection to a Leash broker. See the module docstring."""

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        worker_id: str | None = None,
        timeout_s: float = 30.0,
        hostname: str | None = None,
        labels: Iterable[str] = (),
        concurrency: int = 0,
        key: KeyOption = None,
        tls: TlsOption = None,
    ) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._own_worker_id = worker_id is None  # this process's id: a forked child takes its own
        self.worker_id = worker_id if worker_id is not None else process_worker_id()
        self._identity = Identity(self.worker_id, hostname, tuple(labels), concurrency)
        self._key, self._tls = as_key(key), as_tls(tls)
        self._core: ClientCore[None] = ClientCore()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._sock: socket.socket | None = None
        # A plain TCP socket is blocking, with the time limits in the kernel
        # (SO_RCVTIMEO, SO_SNDTIMEO): a call costs one send and one recv. A TLS
        # socket keeps Python's timeouts (a poll before each read and write).
        self._recv_limit_s = 0.0  # SO_RCVTIMEO as last set
        self._poll: select.poll | None = None  # readiness of the plain socket
        self._buffer = bytearray(_RECV_BYTES)
        self._last_io_s = 0.0
        self._reopen = False  # the connection was lost: reconnect on the next call
        _fork.track(self)
        self._open()

    @classmethod
    def connect(
        cls,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        worker_id: str | None = None,
        timeout_s: float = 30.0,
        hostname: str | None = None,
        labels: Iterable[str] = (),
        concurrency: int = 0,
        key: KeyOption = None,
        tls: TlsOption = None,
    ) -> Self:
        """The same as the constructor: a connected client."""
        return cls(
            host,
            port,
            worker_id=worker_id,
            timeout_s=timeout_s,
            hostname=hostname,
            labels=labels,
            concurrency=concurrency,
            key=key,
            tls=tls,
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        worker_id: str | None = None,
        timeout_s: float = 30.0,
        hostname: str | None = None,
        labels: Iterable[str] = (),
        concurrency: int = 0,
    ) -> Self:
        """A connected client for ``leash[s]://host:port[?options]`` (see ``leash.client._url``)."""
        endpoint = parse_url(url)
        return cls(
            endpoint.host,
            endpoint.port,
            worker_id=worker_id,
            timeout_s=timeout_s,
            hostname=hostname,
            labels=labels,
            concurrency=concurrency,
            key=endpoint.key,
            tls=endpoint.tls,
        )

    @classmethod
    def from_env(
        cls,
        *,
        worker_id: str | None = None,
        timeout_s: float = 30.0,
        hostname: str | None = None,
        labels: Iterable[str] = (),
        concurrency: int = 0,
    ) -> Self:
        """A connected client for the broker the environment names: ``LEASH_URL``,
        ``LEASH_KEY_FILE``, ``LEASH_TLS_CA`` ... (``leash.client._env``); unset, 127.0.0.1:7420."""
        found = endpoint(Options())
        return cls(
            found.host,
            found.port,
            worker_id=worker_id,
            timeout_s=timeout_s,
            hostname=hostname,
            labels=labels,
            concurrency=concurrency,
            key=found.key,
            tls=found.tls,
        )

    @property
    def welcome(self) -> Welcome:
        """The broker's handshake reply: ``server``, ``epoch``, ``max_frame_bytes``."""
        if self._core.welcome is None:
            raise RuntimeError("not connected yet")
        return self._core.welcome

    @property
    def closed(self) -> bool:
        return self._sock is None and not self._reopen

    def close(self) -> None:
        """Close the connection; a call in progress in another thread gets ConnectionLost."""
        self._reopen = False
        self._drop_socket()

    def _drop_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):  # already reset by the peer
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- producer ------------------------------------------------------------

    def push(
        self,
        type: str,
        args: Any = None,
        *,
        queue: str = "default",
        id: str | None = None,
        priority: int | None = None,
        run_at_ms: int | None = None,
        delay_ms: int | None = None,
        max_attempts: int | None = None,
        lease_ttl_ms: int | None = None,
        retry_base_ms: int | None = None,
        batch: str | None = None,
        lease: Lease | None = None,
    ) -> str:
        """Add a job; return its id. Unset options take the broker's defaults.

        ``batch``: the job joins that batch. A committed batch takes jobs only
        from a running member of it, which presents its ``lease`` (a ``Job``).
        """
        spec = job_spec(
            type,
            args,
            queue=queue,
            id=id,
            priority=priority,
            run_at_ms=run_at_ms,
            delay_ms=delay_ms,
            max_attempts=max_attempts,
            lease_ttl_ms=lease_ttl_ms,
            retry_base_ms=retry_base_ms,
            batch=batch,
        )
        return self._call_again(self._core.push(spec, lease))

    def push_many(
        self, jobs: Iterable[JobSpecLike], *, lease: Lease | None = None
    ) -> list[PushResult]:
        """Add several jobs in one request; one ``PushResult`` per job, in order.

        A spec without an id gets one here, so that sending it again adds
        nothing; a job that an attempt lost on the way had created is
        ``created=False`` in the answer to the next."""
        specs = [with_id(as_job_spec(job)) for job in jobs]
        return self._call_again(self._core.push_many(specs, lease)) if specs else []

    def get_job(self, id: str) -> JobView:
        return self._call(self._core.get_job(id))

    # --- worker ----------------------------------------------------------------

    def fetch(self, queues: str | Sequence[str], *, wait_ms: int = 0) -> Job | None:
        """Lease one job from the first of ``queues`` that has one, waiting up to ``wait_ms``."""
        jobs = self._call(self._core.fetch(queues, 1, wait_ms))
        return jobs[0] if jobs else None

    def fetch_many(self, queues: str | Sequence[str], count: int, *, wait_ms: int = 0) -> list[Job]:
        """Lease up to ``count`` jobs; wait up to ``wait_ms`` for the first one."""
        return self._call(self._core.fetch(queues, count, wait_ms))

    def ack(self, job: Lease) -> None:
        """The job is done. ``StaleLease``/``NotFound`` if the lease was lost."""
        self._call(self._core.ack(job))

    def ack_many(self, jobs: Sequence[Lease]) -> list[ServerError | None]:
        """Ack several jobs; per job, None if acked or the error that refused it."""
        return self._call(self._core.ack_many(jobs)) if jobs else []

    def fail(self, job: Lease, error: BaseException | str | ErrorInfo) -> FailResult:
        """The attempt failed: the job is retried later or, out of attempts, dead."""
        return self._call(self._core.fail(job, error))

    def extend(self, job: Lease, lease_ttl_ms: int | None = None) -> int:
        """Push the lease deadline out; return it (and set ``job.deadline_ms``)."""
        return self._call(self._core.extend(job, lease_ttl_ms))

    def release(self, job: Lease) -> None:
        """Give the job back to its queue without counting an attempt."""
        self._call(self._core.release(job))

    # --- worker processes ------------------------------------------------------

    def beat(self) -> str:
        """Say this process is alive; return what the broker wants of it.

        ``"ok"`` (carry on), ``"quiet"`` (fetch nothing new) or ``"terminate"``
        (finish running jobs and exit). ``Worker`` beats by itself.
        """
        return self._call(self._core.beat())

    # --- batches ---------------------------------------------------------------

    def create_batch(
        self,
        jobs: Iterable[JobSpecLike] = (),
        *,
        id: str | None = None,
        description: str = "",
        parent: str | None = None,
        on_success: JobSpecLike | None = None,
        on_complete: JobSpecLike | None = None,
        on_death: JobSpecLike | None = None,
        commit: bool = False,
        lease: Lease | None = None,
    ) -> BatchCreated:
        """Create a batch with its first ``jobs``; ``commit`` judges it at once.

        Callbacks are job specs (a ``JobSpec`` or a dict of ``push``'s
        parameters). Without ``id`` the client makes a random one, so a
        create sent again makes one batch. A child of a committed ``parent``
        is created by a running member of it, which presents its ``lease``.
        """
        call = self._core.create_batch(
            list(jobs),
            id=id,
            description=description,
            parent=parent,
            on_success=on_success,
            on_complete=on_complete,
            on_death=on_death,
            commit=commit,
            lease=lease,
        )
        return self._call_again(call)

    def commit_batch(self, id: str) -> None:
        """No more jobs from producers: the batch is judged from now on."""
        self._call(self._core.commit_batch(id))

    def batch_status(self, id: str, *, limit: int = BATCH_STATUS_MEMBERS_DEFAULT) -> BatchView:
        """Counts, state, callbacks fired, and up to ``limit`` unfinished members."""
        return self._call(self._core.batch_status(id, limit))

    # --- the connection --------------------------------------------------------

    def _open(self) -> None:
        """Connect, and complete the handshake (authenticating, with a key)."""
        where = f"{self.host}:{self.port}"
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to the broker at {where}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls is None:
            sock.settimeout(None)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(self.timeout_s))
            self._recv_limit_s, self._poll = 0.0, None
        else:
            try:
                sock = self._tls.wrap_socket(sock, server_hostname=self.host)
            except OSError as exc:  # ssl.SSLError is an OSError
                sock.close()
                raise ConnectFailed(f"TLS with the broker at {where} failed: {exc}") from exc
        self._sock = sock
        self._core.reset()
        try:
            nonce = secrets.token_bytes(AUTH_NONCE_BYTES) if self._key is not None else b""
            greeted = self._exchange(sock, self._core.hello(self._identity, self._key, nonce))
            if isinstance(greeted, Challenge):
                self._exchange(sock, self._core.authenticate())
        except BaseException:
            self._drop_socket()
            raise

    def _call(self, call: Call[T]) -> T:
        if self._pid != os.getpid():  # forked, and the fork hook did not run
            self._after_fork()
        with self._lock:
            if self._sock is not None and self._went_idle(self._sock):
                self._drop_socket()
                self._reopen = True
            if self._sock is None:
                if not self._reopen:
                    raise ConnectionLost("the connection is closed")
                try:
                    self._open()
                finally:
                    self._reopen = self._sock is None  # failed: the next call tries again
            assert self._sock is not None
            return self._exchange(self._sock, call)

    def _call_again(self, call: Call[T]) -> T:
        """A push (or batch creation), sent again on a new connection while
        the connection is lost, until answered or ``timeout_s`` has passed;
        its ids make every try after the first add nothing."""
        deadline_s = time.monotonic() + self.timeout_s
        attempt = 0
        while True:
            try:
                return self._call(call)
            except PUSH_RETRYABLE:
                delay_s = backoff_s(attempt)
                if self.closed or time.monotonic() + delay_s > deadline_s:
                    raise
            time.sleep(delay_s)
            attempt += 1

    def _after_fork(self) -> None:
        """In a forked child: forget the parent's connection without touching
        it and open one of this process's own on the next call."""
        self._pid = os.getpid()
        self._lock = threading.Lock()  # another thread of the parent may have held it
        if self._own_worker_id:
            self.worker_id = process_worker_id()
            self._identity = dataclasses.replace(self._identity, worker_id=self.worker_id)
        sock, self._sock, self._poll = self._sock, None, None
        if sock is not None:
            sock.close()  # this process's descriptor: no shutdown, the parent's connection lives
            self._reopen = True
        self._core.fail_pending()

    def _lost(self) -> None:
        """The connection broke: the next call opens a new one."""
        self._drop_socket()
        self._reopen = True

    def _exchange(self, sock: socket.socket, call: Call[T]) -> T:
        self._core.start(call, None)
        try:
            self._send(sock, call.frame)
            completion = self._wait(sock, self.timeout_s + call.wait_ms / 1000)
        finally:
            self._core.abandon(call.rid)
            self._last_io_s = time.monotonic()
        if completion.error is not None:
            raise completion.error
        result: T = completion.value
        return result

    def _went_idle(self, sock: socket.socket) -> bool:
        """Whether to open a new connection first: the broker closed this one while
        it sat idle, or is about to. Reads (and drops) what is waiting."""
        welcome = self._core.welcome
        idle_ms = welcome.idle_timeout_ms if welcome is not None else 0
        if idle_ms and time.monotonic() - self._last_io_s >= idle_ms * IDLE_REOPEN_FRACTION / 1000:
            return True
        try:
            while data := self._read_now(sock):
                self._core.receive_data(data)
                while self._core.next_completion() is not None:
                    pass  # late replies to calls that timed out
            return True  # end of stream: the broker closed it
        except (BlockingIOError, ssl.SSLWantReadError):
            return False  # open, nothing more to read
        except (OSError, LeashError):  # reset, or the broker's last word before closing
            return True

    def _read_now(self, sock: socket.socket) -> bytes | memoryview:
        """What has arrived, without waiting (BlockingIOError: nothing)."""
        if self._tls is not None:
            sock.setblocking(False)
            return sock.recv(_RECV_BYTES)
        if self._poll is None:
            self._poll = select.poll()
            self._poll.register(sock, select.POLLIN)
        if not self._poll.poll(0):  # the usual case, and cheaper than an EAGAIN exception
            raise BlockingIOError
        return memoryview(self._buffer)[: sock.recv_into(self._buffer, 0, socket.MSG_DONTWAIT)]

    def _send(self, sock: socket.socket, frame: bytes) -> None:
        try:
            if self._tls is not None:
                sock.settimeout(self.timeout_s)
            sock.sendall(frame)
        except OSError as exc:
            self._lost()  # part of the frame may have gone: the stream is unusable
            if isinstance(exc, TimeoutError | BlockingIOError):  # the kernel's limit: EAGAIN
                raise RequestTimeout(f"sending took over {self.timeout_s} s") from None
            raise ConnectionLost(f"the connection broke: {exc}") from exc

    def _wait(self, sock: socket.socket, limit_s: float) -> Completion[None]:
        # Only one call is in flight (the lock), so the first completion is ours.
        deadline_s = time.monotonic() + limit_s
        remaining_s = limit_s
        while True:
            try:
                completion = self._core.next_completion()
            except LeashError:
                self._lost()
                raise
            if completion is not None:
                return completion
            if remaining_s <= 0:
                raise RequestTimeout(f"no reply within {limit_s:g} s")
            try:
                data = self._read(sock, remaining_s)
            except (TimeoutError, BlockingIOError):  # BlockingIOError: SO_RCVTIMEO passed
                remaining_s = deadline_s - time.monotonic()
                continue
            except OSError as exc:
                self._lost()
                raise ConnectionLost(f"the connection broke: {exc}") from exc
            if not data:
                self._lost()
                raise ConnectionLost("the broker closed the connection")
            self._core.receive_data(data)
            remaining_s = deadline_s - time.monotonic()

    def _read(self, sock: socket.socket, limit_s: float) -> bytes | memoryview:
        """Wait at most ``limit_s`` for bytes (b"": the broker closed the connection)."""
        if self._tls is not None:
            sock.settimeout(limit_s)
            return sock.recv(_RECV_BYTES)
        if limit_s != self._recv_limit_s:  # one setsockopt when the limit changes
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(limit_s))
            self._recv_limit_s = limit_s
        return memoryview(self._buffer)[: sock.recv_into(self._buffer)]


def _timeval(seconds: float) -> bytes:
    """A socket time limit; at least 1 µs (0 would mean none)."""
    micros = max(1, int(seconds * 1_000_000))
    return _TIMEVAL.pack(micros // 1_000_000, micros % 1_000_000)
