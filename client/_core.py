"""The sans-IO client core: builds requests, matches replies, makes results.

Theory of operation. Every client method is split in two halves that share
this module. The first half, ``ClientCore.<op>(...)``, builds the request with
the next rid, encodes it as one frame and returns a ``Call``: the frame and the
function that turns the matching reply into the method's result. The shell
(``blocking.Client`` or ``aio.AsyncClient``) registers the call with
``start(call, waiter)``, writes ``call.frame``, feeds whatever bytes arrive to
``receive_data`` and pulls ``next_completion()`` until it returns None. Each
``Completion`` carries the shell's waiter and either the result or the
exception to raise. The batch and operator requests are built the same way
in ``leash.client._batch_calls``, which ``ClientCore`` mixes in. Replies are
matched by rid, so they may arrive in any order (a long-poll fetch is
answered after later requests); a reply for a rid nobody waits for any more
(its caller timed out) is dropped.

Errors: an ``error`` reply becomes the mapped ``ServerError`` on its own
completion, and so does a reply that does not decode (``ProtocolViolation``)
when its rid can still be read. A framing error, a body without a readable
rid, or an ``error`` with rid 0 after the handshake (the broker's last word
before it closes) raise from ``next_completion``: the connection is finished
and the shell fails every waiter. No sockets, no clock, no threads here.

The handshake: ``hello`` returns the ``Welcome``, or, when the client has a
key, the broker's ``Challenge``, whose proof it has checked; the shell then
sends ``authenticate()``, whose result is the ``Welcome``. A client with a
key refuses a broker that welcomes it without a challenge, or whose proof is
wrong (``BrokerNotVerified``): such a peer does not hold the key. The nonce
comes from the shell, so this module stays free of randomness.
"""

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

import msgspec
from msgspec import Struct

from leash.protocol import PROTOCOL_VERSION, argtypes, limits
from leash.protocol import auth as A
from leash.protocol.errors import ErrorCode, ProtocolError
from leash.protocol.frames import FrameDecoder, encode_frame
from leash.protocol.messages import (
    Ack,
    AckedMany,
    AckMany,
    Auth,
    Beat,
    Cancel,
    Challenge,
    Error,
    ErrorInfo,
    Extend,
    Extended,
    Fail,
    Failed,
    Fetch,
    GetJob,
    GetResult,
    Hello,
    JobInfo,
    JobResult,
    Jobs,
    JobSpec,
    JobsRun,
    JobView,
    LeaseRef,
    ProcessState,
    Progress,
    Push,
    Pushed,
    PushedMany,
    PushMany,
    PushResult,
    Release,
    Reply,
    Request,
    Welcome,
    encoder,
    reply_decoder,
)

from ._batch_calls import BatchCalls
from ._calls import Call
from ._calls import expect_reply as _expect
from ._calls import ok_reply as _ok
from ._exceptions import (
    BrokerNotVerified,
    ConnectionLost,
    JobFailed,
    LeashError,
    ProtocolViolation,
    ResultNotReady,
    ServerError,
    TooLarge,
    error_for,
    error_from_reply,
)
from ._identity import Identity
from ._types import (
    NO_RESULT,
    FailResult,
    Job,
    Lease,
    error_info,
    lease_or_none,
    lease_ref,
)

T = TypeVar("T")
W = TypeVar("W")
R = TypeVar("R", bound=Struct)


class Completion(NamedTuple, Generic[W]):
    """A reply matched to its call: the result, or the exception to raise (a
    tuple: one is made per reply)."""

    rid: int
    waiter: W
    value: Any
    error: LeashError | None


class _LooseReply(Struct):
    """The least of a reply, read when the typed decoder refuses a body."""

    t: str = ""
    rid: int = -1
    code: str = ""
    message: str = ""
    path: str = ""


_loose_decoder = msgspec.msgpack.Decoder(_LooseReply)


class ClientCore(BatchCalls, Generic[W]):
    """Request building and reply matching for one connection."""

    def __init__(self) -> None:
        # Never 0 (the broker answers an unreadable request with rid 0); next()
        # is atomic, so threads building requests at once never share a rid.
        self._rids = itertools.count(1)
        self._pending: dict[int, tuple[Callable[[Reply], Any], W]] = {}
        # Fetches whose callers stopped waiting: the jobs a late reply leases
        # go back at once (``take_releases``), never left leased to nobody.
        self._unclaimed: set[int] = set()
        self._releases: list[bytes] = []
        self.reset()

    def reset(self) -> None:
        """Start over on a new connection. Rids go on counting, so a call made
        for the old connection can still be sent on the new one."""
        assert not self._pending, "calls are in flight"
        self._unclaimed.clear()  # their replies were for the old connection
        self._decoder = FrameDecoder(limits.FRAME_CEILING_BYTES)  # replies may be large
        self._handshake_rid = -1  # the hello's, then the auth's
        self._key: A.Key | None = None
        self._hello: Hello | None = None
        self._transcript = b""
        self.welcome: Welcome | None = None
        # The broker's limit for what we send: the handshake's until the welcome says more.
        self.max_frame_bytes = limits.HANDSHAKE_FRAME_MAX_BYTES

    # --- requests ----------------------------------------------------------

    def hello(
        self, identity: Identity, key: A.Key | None = None, nonce: bytes = b""
    ) -> Call[Welcome | Challenge]:
        """The first request; with a ``key``, ``nonce`` must be fresh random bytes."""
        hello = identity.hello()
        hello.rid = self._handshake_rid = self._take_rid()
        if key is not None:
            assert len(nonce) >= limits.AUTH_NONCE_MIN_BYTES, "a fresh random nonce is needed"
            hello.key_id, hello.nonce = key.id, nonce
        self._key, self._hello = key, hello
        return Call(hello.rid, self._encode(hello), self._greeted)

    def authenticate(self) -> Call[Welcome]:
        """The answer to the broker's challenge: this client's proof."""
        assert self._key is not None and self._transcript, "no challenge to answer"
        rid = self._handshake_rid = self._take_rid()
        proof = A.client_proof(self._key.secret, self._transcript)
        return Call(rid, self._encode(Auth(rid=rid, proof=proof)), self._welcomed)

    def push(self, spec: JobSpec, lease: Lease | None = None) -> Call[str]:
        rid = self._take_rid()
        request = Push(rid=rid, job=spec, lease=lease_or_none(lease))
        return Call(rid, self._encode(request), _pushed_id)

    def push_many(
        self, specs: Sequence[JobSpec], lease: Lease | None = None
    ) -> Call[list[PushResult]]:
        rid, count = self._take_rid(), len(specs)

        def finish(reply: Reply) -> list[PushResult]:
            return _same_length(_expect(reply, PushedMany).results, count)

        request = PushMany(rid=rid, jobs=list(specs), lease=lease_or_none(lease))
        return Call(rid, self._encode(request), finish)

    def fetch(self, queues: str | Sequence[str], count: int, wait_ms: int) -> Call[list[Job]]:
        rid = self._take_rid()
        names = [queues] if isinstance(queues, str) else list(queues)
        request = Fetch(rid=rid, queues=names, count=count, wait_ms=wait_ms)
        return Call(rid, self._encode(request), _delivered_jobs, wait_ms)

    def ack(self, lease: Lease, result: Any = NO_RESULT) -> Call[None]:
        rid = self._take_rid()
        job_id, token = lease_ref(lease)
        value = None if result is NO_RESULT else argtypes.pack(result)
        return Call(rid, self._encode(Ack(rid=rid, id=job_id, token=token, result=value)), _ok)

    def ack_many(
        self, leases: Sequence[Lease], results: Sequence[bytes | None] = ()
    ) -> Call[list[ServerError | None]]:
        """``results``: each lease's packed result (None: none), if given."""
        rid = self._take_rid()
        refs = [LeaseRef(*lease_ref(lease)) for lease in leases]
        values = list(results) if any(value is not None for value in results) else None
        count = len(refs)

        def finish(reply: Reply) -> list[ServerError | None]:
            results = _same_length(_expect(reply, AckedMany).results, count)
            return [None if r.code is None else error_for(r.code, r.message) for r in results]

        return Call(rid, self._encode(AckMany(rid=rid, leases=refs, results=values)), finish)

    def fail(
        self,
        lease: Lease,
        error: BaseException | str | ErrorInfo,
        dead: bool = False,
        retry_in_ms: int | None = None,
    ) -> Call[FailResult]:
        rid = self._take_rid()
        job_id, token = lease_ref(lease)
        request = Fail(
            rid=rid,
            id=job_id,
            token=token,
            error=error_info(error),
            dead=dead,
            retry_in_ms=retry_in_ms,
        )
        return Call(rid, self._encode(request), _fail_result)

    def extend(self, lease: Lease, lease_ttl_ms: int | None) -> Call[int]:
        rid = self._take_rid()
        job_id, token = lease_ref(lease)
        request = Extend(rid=rid, id=job_id, token=token, lease_ttl_ms=lease_ttl_ms)
        return Call(rid, self._encode(request), _extended(lease))

    def progress(
        self, lease: Lease, percent: int, message: str, lease_ttl_ms: int | None
    ) -> Call[int]:
        rid = self._take_rid()
        job_id, token = lease_ref(lease)
        request = Progress(
            rid=rid,
            id=job_id,
            token=token,
            percent=percent,
            message=message,
            lease_ttl_ms=lease_ttl_ms,
        )
        return Call(rid, self._encode(request), _extended(lease))

    def release(self, lease: Lease, delay_ms: int | None = None) -> Call[None]:
        rid = self._take_rid()
        job_id, token = lease_ref(lease)
        request = Release(rid=rid, id=job_id, token=token, delay_ms=delay_ms)
        return Call(rid, self._encode(request), _ok)

    def get_result(self, id: str, wait_ms: int = 0) -> Call[Any]:
        rid = self._take_rid()
        request = GetResult(rid=rid, id=id, wait_ms=wait_ms)
        return Call(rid, self._encode(request), _result_value, wait_ms)

    def get_job(self, id: str) -> Call[JobView]:
        rid = self._take_rid()
        return Call(rid, self._encode(GetJob(rid=rid, id=id)), _job_view)

    def beat(self, ran: Mapping[str, JobsRun] | None = None) -> Call[str]:
        rid = self._take_rid()
        told = dict(ran) if ran is not None else None
        return Call(rid, self._encode(Beat(rid=rid, ran=told)), _process_state)

    # --- waiting -----------------------------------------------------------

    def start(self, call: Call[Any], waiter: W) -> None:
        """Expect the reply to ``call``; its completion will carry ``waiter``."""
        assert call.rid not in self._pending, f"rid {call.rid} is already in flight"
        self._pending[call.rid] = (call.finish, waiter)

    def abandon(self, rid: int) -> Call[None] | None:
        """Stop waiting for ``rid`` (its caller gave up); a late reply is
        dropped. For a long poll still unanswered (a fetch or a get_result),
        the ``cancel`` to send, unanswered, so that the broker ends it now;
        the jobs a fetch's late reply leases all the same go back
        (``take_releases``)."""
        entry = self._pending.pop(rid, None)
        if entry is None:
            return None
        finish = entry[0]
        if finish is _delivered_jobs:
            self._unclaimed.add(rid)
        elif finish is not _result_value:
            return None
        return self.cancel(rid)

    def cancel(self, of: int) -> Call[None]:
        """End the long poll of rid ``of`` at the broker (answered before this)."""
        rid = self._take_rid()
        return Call(rid, self._encode(Cancel(rid=rid, of=of)), _ok)

    def unclaimed(self, value: Any) -> None:
        """A completion's value its waiter no longer takes (it gave up as the
        reply came): the jobs a fetch's reply leased go back (``take_releases``)."""
        if isinstance(value, list):
            for job in value:
                if isinstance(job, Job):
                    self._give_back(job.id, job.token)

    def take_releases(self) -> bytes:
        """The releases of jobs leased to fetches nobody waits for any more,
        to send unanswered (their lease ends now, no attempt counted); b""
        when there are none."""
        if not self._releases:
            return b""
        releases, self._releases = self._releases, []
        return b"".join(releases)

    def _give_back(self, job_id: str, token: int) -> None:
        rid = self._take_rid()
        self._releases.append(self._encode(Release(rid=rid, id=job_id, token=token)))

    def fail_pending(self) -> list[W]:
        """Forget every call in flight; return their waiters for the shell to fail."""
        waiters = [waiter for _, waiter in self._pending.values()]
        self._pending.clear()
        return waiters

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    # --- replies -----------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        self._decoder.feed(data)

    def next_completion(self) -> Completion[W] | None:
        """The next matched reply, or None until more bytes arrive.

        Raises ``ProtocolViolation`` or ``ConnectionLost`` when the connection
        can no longer be used.
        """
        while True:
            try:
                body = self._decoder.next_frame()
            except ProtocolError as exc:
                raise ProtocolViolation(f"bad frame from the broker: {exc}") from None
            if body is None:
                return None
            completion = self._complete(body)
            if completion is not None:
                return completion

    def _complete(self, body: bytes) -> Completion[W] | None:
        try:
            reply: Reply = reply_decoder.decode(body)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return self._complete_undecodable(body, exc)
        rid = reply.rid
        if rid == 0 and isinstance(reply, Error):
            rid = self._unreadable_request_rid(error_from_reply(reply))
        entry = self._pending.pop(rid, None)
        if entry is None:  # its caller stopped waiting
            if rid in self._unclaimed:
                self._unclaimed.discard(rid)
                if isinstance(reply, Jobs):
                    for delivery in reply.jobs:
                        self._give_back(delivery.id, delivery.token)
            return None
        finish, waiter = entry
        try:
            return Completion(rid, waiter, finish(reply), None)
        except LeashError as exc:
            return Completion(rid, waiter, None, exc)

    def _complete_undecodable(self, body: bytes, exc: Exception) -> Completion[W] | None:
        try:
            loose = _loose_decoder.decode(body)
        except (msgspec.ValidationError, msgspec.DecodeError):
            raise ProtocolViolation(f"undecodable reply from the broker: {exc}") from None
        error: LeashError
        if loose.t == "error":  # an error code newer than this client
            error = error_for(loose.code, loose.message, loose.path)
        else:
            error = ProtocolViolation(f"undecodable {loose.t!r} reply from the broker: {exc}")
        rid = loose.rid
        if rid == 0 and loose.t == "error":
            rid = self._unreadable_request_rid(error)
        entry = self._pending.pop(rid, None)
        if entry is None:
            self._unclaimed.discard(rid)
            return None
        return Completion(rid, entry[1], None, error)

    def _unreadable_request_rid(self, error: LeashError) -> int:
        """Whose is an error with rid 0: the handshake's during it, else nobody's.

        After the handshake it answers a frame or body the broker could not
        read, which this client does not send, and may be followed by a close:
        no call can be told its outcome, so the connection is given up.
        """
        if self.welcome is None and self._handshake_rid in self._pending:
            return self._handshake_rid
        raise _closing(error)

    # --- helpers -----------------------------------------------------------

    def _take_rid(self) -> int:
        return next(self._rids)

    def _encode(self, request: Request) -> bytes:
        body = encoder.encode(request)
        if len(body) > self.max_frame_bytes:
            raise TooLarge(
                ErrorCode.TOO_LARGE,
                f"a {type(request).__name__.lower()} request of {len(body)} bytes is over "
                f"the broker's frame limit of {self.max_frame_bytes}",
            )
        return encode_frame(body)

    def _greeted(self, reply: Reply) -> Welcome | Challenge:
        key, hello = self._key, self._hello
        assert hello is not None
        if not isinstance(reply, Challenge):
            if key is not None and isinstance(reply, Welcome):
                raise BrokerNotVerified(
                    f"the broker welcomed this client without checking its key {key.id!r}: "
                    "it does not hold the key, so it may not be the broker meant"
                )
            return self._welcomed(reply)
        if key is None:
            raise ProtocolViolation("the broker sent a challenge to a hello without a key")
        transcript = A.transcript(
            PROTOCOL_VERSION, key.id, hello.worker_id, hello.nonce, reply.nonce
        )
        if not A.proof_matches(A.server_proof(key.secret, transcript), reply.proof):
            raise BrokerNotVerified(
                f"the broker could not prove it holds key {key.id!r}: the secrets differ, "
                "or this is not the broker meant"
            )
        self._transcript = transcript
        return reply

    def _welcomed(self, reply: Reply) -> Welcome:
        welcome = _expect(reply, Welcome)
        self.welcome = welcome
        self.max_frame_bytes = welcome.max_frame_bytes
        return welcome


def _closing(error: LeashError) -> ConnectionLost:
    lost = ConnectionLost(f"the broker is closing the connection: {error}")
    lost.__cause__ = error
    return lost


def _same_length(results: list[T], count: int) -> list[T]:
    if len(results) != count:
        raise ProtocolViolation(f"{len(results)} results for {count} items")
    return results


def _pushed_id(reply: Reply) -> str:
    return _expect(reply, Pushed).id


def _delivered_jobs(reply: Reply) -> list[Job]:
    return [Job(delivery) for delivery in _expect(reply, Jobs).jobs]


def _extended(lease: Lease) -> Callable[[Reply], int]:
    """An extend's or a progress report's reply: the new deadline, set on a ``Job``."""

    def finish(reply: Reply) -> int:
        deadline_ms = _expect(reply, Extended).deadline_ms
        if isinstance(lease, Job):
            lease.deadline_ms = deadline_ms
        return deadline_ms

    return finish


def _fail_result(reply: Reply) -> FailResult:
    failed = _expect(reply, Failed)
    return FailResult(failed.state, failed.retry_at_ms)


def _result_value(reply: Reply) -> Any:
    answer = _expect(reply, JobResult)
    if answer.state == "succeeded" and answer.value is not None:
        return argtypes.unpack(answer.value)
    if answer.error is not None:
        raise JobFailed(answer.id, answer.state, answer.error)
    raise ResultNotReady(answer.id, answer.state)


def _job_view(reply: Reply) -> JobView:
    return _expect(reply, JobInfo).job


def _process_state(reply: Reply) -> str:
    return _expect(reply, ProcessState).state
