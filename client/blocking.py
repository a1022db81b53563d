"""The blocking client: one TCP connection, one request at a time.

``Client(host, port)`` opens the connection and completes the handshake
before it returns (``Client.connect`` and ``Client.from_url`` do the same), so
a constructed Client is ready to use; close it with ``close()`` or a ``with``
block. It raises ``ConnectFailed`` when the broker cannot be reached.

Threads may share a Client, and their calls share the connection: the
first request is sent at once, the requests other threads make while a
write is in flight go together in the next write, and each reply is handed
to the thread that waits for it, whatever the order (a long-poll fetch
holds up no other thread's call). ``pipeline()`` sends many pushes together
and collects their ids. How it works: ``leash.client._pipe``.

Time limits: a call waits at most ``timeout_s`` for its reply, plus
``wait_ms`` for a fetch, then raises ``RequestTimeout``; the connection stays
usable (a late reply is dropped), unless the request could not be sent whole,
in which case the connection is closed. It stays usable after a call is
interrupted too (Ctrl-C during a long poll): the next call is answered. A
fetch given up either way is ended at the broker (``cancel``), and the
jobs a reply that crossed it leased are released at once. The request
logic is shared with the async client in ``leash.client._core``; this
module only moves bytes.

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

import dataclasses
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

from leash.protocol.limits import AUTH_NONCE_BYTES, BATCH_STATUS_MEMBERS_DEFAULT
from leash.protocol.messages import (
    BatchCreated,
    BatchView,
    Challenge,
    ErrorInfo,
    JobsRun,
    JobView,
    PushResult,
    Welcome,
)

from . import _fork
from ._backoff import PUSH_RETRYABLE, backoff_s
from ._calls import Call
from ._core import ClientCore
from ._env import Options, endpoint
from ._exceptions import ConnectFailed, ConnectionLost, ServerError
from ._identity import Identity, process_worker_id
from ._pipe import Pipe, Slot
from ._pipeline import Pipeline
from ._security import KeyOption, TlsOption, as_key, as_tls
from ._types import (
    NO_RESULT,
    FailResult,
    Job,
    JobOptions,
    JobSpecLike,
    Lease,
    as_job_spec,
    spec_from_options,
    with_id,
)
from ._url import DEFAULT_HOST, DEFAULT_PORT, parse_url

T = TypeVar("T")

IDLE_REOPEN_FRACTION = 0.75  # of the broker's idle timeout: reconnect before it closes


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
        self._core: ClientCore[Slot] = ClientCore()
        self._mutex = threading.Lock()  # the core and the connection's queues and roles
        self._connecting = threading.Lock()  # one thread opens a new connection
        self._pid = os.getpid()
        # A plain TCP socket is blocking, with the time limits in the kernel
        # (SO_RCVTIMEO, SO_SNDTIMEO): a call costs one send and one recv. A TLS
        # socket keeps Python's timeouts (a poll before each read and write).
        self._pipe: Pipe | None = None
        self._closed = False  # by close(): no call reconnects
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
        return self._closed

    def close(self) -> None:
        """Close the connection; a call in progress in another thread gets ConnectionLost."""
        self._closed = True
        pipe = self._pipe
        if pipe is not None:
            pipe.shut(ConnectionLost("the connection was closed by the client"))

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
        lease: Lease | None = None,
        **options: Unpack[JobOptions],
    ) -> str:
        """Add a job; return its id. The options (``JobOptions``) left out take
        the broker's defaults; ``lease``: the running member of a committed
        ``batch`` that adds the job to it (a ``Job``)."""
        spec = spec_from_options(type, args, options)
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

    def ack(self, job: Lease, result: Any = NO_RESULT) -> None:
        """The job is done. ``StaleLease``/``NotFound`` if the lease was lost.
        ``result``: its return value, kept if its push asked (``keep_result_ms``);
        ``TooLarge`` (the job stays leased) over the broker's limit."""
        self._call(self._core.ack(job, result))

    def result(self, id: str, wait_ms: int = 0) -> Any:
        """The value job ``id`` returned, waiting up to ``wait_ms`` for it to
        finish. ``JobFailed`` if it died (with its error), was deleted or
        expired; ``ResultNotReady`` if it has not finished; ``NotFound`` if
        the broker knows no such job or kept no result for it."""
        return self._call(self._core.get_result(id, wait_ms))

    def ack_many(self, jobs: Sequence[Lease]) -> list[ServerError | None]:
        """Ack several jobs; per job, None if acked or the error that refused it."""
        return self._call(self._core.ack_many(jobs)) if jobs else []

    def fail(
        self,
        job: Lease,
        error: BaseException | str | ErrorInfo,
        *,
        dead: bool = False,
        retry_in_ms: int | None = None,
    ) -> FailResult:
        """The attempt failed: the job is retried later or, out of attempts, dead.

        ``dead``: no more attempts (running it again cannot help), to the
        dead set now; ``retry_in_ms``: retry after this long instead of the
        job's backoff."""
        return self._call(self._core.fail(job, error, dead, retry_in_ms))

    def extend(self, job: Lease, lease_ttl_ms: int | None = None) -> int:
        """Push the lease deadline out; return it (and set ``job.deadline_ms``)."""
        return self._call(self._core.extend(job, lease_ttl_ms))

    def progress(
        self, job: Lease, percent: int, message: str = "", *, lease_ttl_ms: int | None = None
    ) -> int:
        """Report how far the job is (``percent`` 0-100, a message of at most
        200 characters); extends the lease as ``extend`` does and returns its
        deadline (set on ``job.deadline_ms``)."""
        return self._call(self._core.progress(job, percent, message, lease_ttl_ms))

    def release(self, job: Lease, *, delay_ms: int | None = None) -> None:
        """Give the job back to its queue without counting an attempt
        (``delay_ms``: scheduled for then instead of ready at once, a snooze)."""
        self._call(self._core.release(job, delay_ms))

    # --- worker processes ------------------------------------------------------

    def beat(self, ran: Mapping[str, JobsRun] | None = None) -> str:
        """Say this process is alive; return what the broker wants of it.

        ``"ok"`` (carry on), ``"quiet"`` (fetch nothing new) or ``"terminate"``
        (finish running jobs and exit). ``ran``: the jobs this process ran so
        far, by type, for the broker's processes views (at most
        ``BEAT_TYPES_MAX`` types). ``Worker`` beats by itself.
        """
        return self._call(self._core.beat(ran))

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

    def pipeline(self) -> Pipeline:
        """Pushes sent together: ``with client.pipeline() as p:`` then
        ``p.push(...)`` (the same parameters as ``push``) returns a future at
        once; the pushes go out in few writes, and the end of the block
        waits for every reply. Each future then holds its job's id (or the
        error that refused it; the block raises the first). Every push has
        a client-made id and is sent again on a new connection if the
        connection is lost, as ``push`` is, so a job is never created twice;
        each reply still comes only once its job is journalled (and synced
        under ``--fsync always``)."""
        return Pipeline(self)

    # --- the connection --------------------------------------------------------

    def _open(self) -> None:
        """Connect, and complete the handshake (authenticating, with a key)."""
        where = f"{self.host}:{self.port}"
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to the broker at {where}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls is not None:
            try:
                sock = self._tls.wrap_socket(sock, server_hostname=self.host)
            except OSError as exc:  # ssl.SSLError is an OSError
                sock.close()
                raise ConnectFailed(f"TLS with the broker at {where} failed: {exc}") from exc
        with self._mutex:
            self._core.reset()
        pipe = Pipe(sock, self._core, self._mutex, self.timeout_s, tls=self._tls is not None)
        try:
            nonce = secrets.token_bytes(AUTH_NONCE_BYTES) if self._key is not None else b""
            greeted = self._exchange(pipe, self._core.hello(self._identity, self._key, nonce))
            if isinstance(greeted, Challenge):
                self._exchange(pipe, self._core.authenticate())
        except BaseException:
            pipe.shut(ConnectionLost("the handshake did not complete"))
            raise
        self._pipe = pipe

    def _connection(self) -> Pipe:
        """The open connection, after opening a new one if it was lost or is
        about to be closed as idle (nothing in flight then: nothing is lost)."""
        if self._pid != os.getpid():  # forked, and the fork hook did not run
            self._after_fork()
        pipe = self._pipe
        if pipe is not None and pipe.broken is None and not self._idle(pipe):
            return pipe
        with self._connecting:
            pipe = self._pipe
            if pipe is not None and pipe.broken is None:
                if not self._idle(pipe):
                    return pipe
                pipe.shut(ConnectionLost("the connection sat idle"))
            if self._closed:
                raise ConnectionLost("the connection is closed")
            self._pipe = None
            self._open()
            assert self._pipe is not None
            return self._pipe

    def _idle(self, pipe: Pipe) -> bool:
        welcome = self._core.welcome
        idle_ms = welcome.idle_timeout_ms if welcome is not None else 0
        return pipe.went_idle(idle_ms * IDLE_REOPEN_FRACTION / 1000)

    def _call(self, call: Call[T]) -> T:
        return self._exchange(self._connection(), call)

    def _exchange(self, pipe: Pipe, call: Call[T]) -> T:
        result: T = pipe.call(call, self.timeout_s + call.wait_ms / 1000)
        return result

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
        # Another thread of the parent may have held them.
        self._mutex, self._connecting = threading.Lock(), threading.Lock()
        if self._own_worker_id:
            self.worker_id = process_worker_id()
            self._identity = dataclasses.replace(self._identity, worker_id=self.worker_id)
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            pipe.forget()  # this process's descriptor: no shutdown, the parent's connection lives
        self._core.fail_pending()
