"""The admin client: an operator's blocking connection to the admin socket.

``AdminClient(path)`` connects to the broker's Unix admin socket (by
default ``./leash-data/admin.sock``; ``AdminClient.for_data_dir(DIR)``
finds it in a data directory). It speaks the admin requests of
protocol.admin, one at a time, and raises the client's exception tree:
``ConnectFailed`` when there is no socket or no permission to open it,
``ServerError`` subclasses for refusals (``PermissionDenied`` when the
broker does not allow this user, ``NotFound`` for a job or process that is
not there). The ``leash`` command line is built on it.
"""

import os
import socket
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import msgspec

from leash.protocol import admin as A
from leash.protocol import limits
from leash.protocol import messages as M
from leash.protocol.errors import ProtocolError
from leash.protocol.frames import FrameDecoder, encode_frame

from ._exceptions import ConnectFailed, ConnectionLost, ProtocolViolation, error_from_reply

DEFAULT_DATA_DIR = "./leash-data"
SOCKET_FILE = "admin.sock"
_RECV_BYTES = 256 * 1024
PACE_MAX_S = 0.1  # a paced bulk operation waits at most this long between two requests
R = TypeVar("R", bound=msgspec.Struct)
Filter = str | int | None  # a JobFilter field: queue, type, error, min_age_ms, max_age_ms
T = TypeVar("T")


class AdminClient:
    """A blocking connection to a broker's admin socket. See the module docstring."""

    def __init__(
        self, path: str = os.path.join(DEFAULT_DATA_DIR, SOCKET_FILE), *, timeout_s: float = 30.0
    ) -> None:
        self.path = path
        self._rid = 0
        self._decoder = FrameDecoder(limits.FRAME_CEILING_BYTES)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout_s)
        try:
            sock.connect(path)
        except FileNotFoundError:
            sock.close()
            raise ConnectFailed(f"no admin socket at {path}: is the broker running?") from None
        except PermissionError:
            sock.close()
            raise ConnectFailed(f"permission denied: {path}") from None
        except OSError as exc:
            sock.close()
            raise ConnectFailed(f"cannot connect to the admin socket {path}: {exc}") from None
        self._sock: socket.socket | None = sock

    @classmethod
    def for_data_dir(cls, data_dir: str, *, timeout_s: float = 30.0) -> Self:
        return cls(os.path.join(data_dir, SOCKET_FILE), timeout_s=timeout_s)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- views -----------------------------------------------------------------

    def stats(self) -> A.Stats:
        return self._call(A.GetStats(self._next()), A.Stats)

    def queues(self) -> list[A.QueueView]:
        return self._call(A.ListQueues(self._next()), A.Queues).queues

    def busy(self) -> list[A.BusyProcess]:
        return self._call(A.GetBusy(self._next()), A.Busy).processes

    def processes(self) -> list[A.ProcessView]:
        return self._call(A.ListProcesses(self._next()), A.Processes).processes

    def job(self, job_id: str) -> M.JobView:
        return self._call(M.GetJob(self._next(), job_id), M.JobInfo).job

    def jobs_page(
        self, kind: A.ListKind, cursor: str = "", limit: int = 50, **filter: Filter
    ) -> A.JobPage:
        request = A.ListJobs(self._next(), kind, _filter(filter), cursor, limit)
        return self._call(request, A.JobPage)

    def jobs(
        self, kind: A.ListKind, *, most: int | None = None, **filter: Filter
    ) -> Iterator[M.JobView]:
        """Every job of the listing (or the first ``most``), page by page."""

        def page(cursor: str, limit: int) -> tuple[list[M.JobView], str]:
            found = self.jobs_page(kind, cursor, limit, **filter)
            return found.jobs, found.next

        return _paged(page, most)

    def batches_page(
        self, state: A.BatchState | None = None, cursor: str = "", limit: int = 50
    ) -> A.BatchPage:
        return self._call(A.ListBatches(self._next(), state, cursor, limit), A.BatchPage)

    def batches(
        self, state: A.BatchState | None = None, *, most: int | None = None
    ) -> Iterator[M.BatchView]:
        """Batches newest first (without member lists), page by page."""

        def page(cursor: str, limit: int) -> tuple[list[M.BatchView], str]:
            found = self.batches_page(state, cursor, limit)
            return found.batches, found.next

        return _paged(page, most)

    def batch(
        self, batch_id: str, *, limit: int = limits.BATCH_STATUS_MEMBERS_DEFAULT
    ) -> M.BatchView:
        """One batch's status, with up to ``limit`` of its unfinished members."""
        return self._call(M.GetBatchStatus(self._next(), batch_id, limit), M.BatchInfo).batch

    def fsck(self) -> A.FsckReport:
        """Cross-check the broker's whole state; ``problems`` should be empty."""
        return self._call(A.Fsck(self._next()), A.FsckReport)

    # --- operations ------------------------------------------------------------

    def pause(self, queue: str, *, create: bool = True) -> None:
        """Stop handing out ``queue``'s jobs; ``create=False``: NotFound if there is none."""
        self._call(A.Pause(self._next(), queue, create), M.Ok)

    def resume(self, queue: str) -> None:
        self._call(A.Resume(self._next(), queue), M.Ok)

    def set_queue_limits(
        self,
        queue: str,
        *,
        concurrency: int = 0,
        per_key: int = 0,
        rate: int = 0,
        rate_interval_ms: int = 0,
    ) -> None:
        """Set ``queue``'s limits, replacing its old ones (0: no such limit):
        jobs leased at once, at once per concurrency key, and started per
        ``rate_interval_ms``."""
        request = A.SetQueueLimits(
            self._next(), queue, concurrency, per_key, rate, rate_interval_ms
        )
        self._call(request, M.Ok)

    def control(self, worker_id: str, state: A.ProcessControl) -> None:
        """Quiet a process (stop fetching), let it go on (``ok``), or stop it (``terminate``)."""
        self._call(A.Control(self._next(), worker_id, state), M.Ok)

    def delete_job(self, job_id: str) -> None:
        """Forget a job in any state; for its batch it is ``deleted`` (never blocking)."""
        self._call(A.DeleteJob(self._next(), job_id), M.Ok)

    def kill_job(self, job_id: str) -> None:
        """Move a job to the dead set now; for its batch that is a death."""
        self._call(A.KillJob(self._next(), job_id), M.Ok)

    def requeue_job(self, job_id: str) -> None:
        """Make a dead or retrying job ready again."""
        self._call(A.RequeueJob(self._next(), job_id), M.Ok)

    def requeue_jobs(
        self,
        kind: Literal["retrying", "dead"],
        *,
        most: int | None = None,
        chunk: int = limits.REQUEUE_MANY_MAX,
        pace: bool = False,
        **filter: Filter,
    ) -> list[str]:
        """Requeue every retrying or dead job that matches (or the first
        ``most``), ``chunk`` a request (``pace``: see ``_bulk_pages``): their ids."""

        def request(cursor: str, limit: int) -> A.RequeueJobs:
            return A.RequeueJobs(self._next(), kind, _filter(filter), cursor, limit)

        return self._bulk(request, A.Requeued, most, chunk, pace)

    def delete_jobs(
        self,
        kind: A.ListKind,
        *,
        most: int | None = None,
        chunk: int = limits.BULK_MAX,
        pace: bool = False,
        **filter: Filter,
    ) -> list[str]:
        """Delete every job of ``kind`` that matches (or the first ``most``),
        ``chunk`` a request: their ids."""

        def request(cursor: str, limit: int) -> A.DeleteJobs:
            return A.DeleteJobs(self._next(), kind, _filter(filter), cursor, limit)

        return self._bulk(request, A.JobsChanged, most, chunk, pace)

    def kill_jobs(
        self,
        kind: A.KillKind,
        *,
        most: int | None = None,
        chunk: int = limits.BULK_MAX,
        pace: bool = False,
        **filter: Filter,
    ) -> list[str]:
        """Move every job of ``kind`` that matches to the dead set (or the
        first ``most``), ``chunk`` a request: their ids."""

        def request(cursor: str, limit: int) -> A.KillJobs:
            return A.KillJobs(self._next(), kind, _filter(filter), cursor, limit)

        return self._bulk(request, A.JobsChanged, most, chunk, pace)

    def purge(self, queue: str, *, chunk: int = limits.BULK_MAX, pace: bool = False) -> int:
        """Delete every ready job of ``queue``: how many."""
        return len(self.delete_jobs("ready", chunk=chunk, pace=pace, queue=queue))

    def history(self, seconds: int = limits.HISTORY_MAX_S) -> A.History:
        """Totals a second over the last ``seconds`` (at most an hour)."""
        return self._call(A.GetHistory(self._next(), seconds), A.History)

    def delete_batch(self, batch_id: str) -> None:
        """Remove the batch and all its bookkeeping; its live jobs go on as ordinary jobs."""
        self._call(A.DeleteBatch(self._next(), batch_id), M.Ok)

    def schedules(self) -> list[A.ScheduleView]:
        """Every schedule, by name, with its fires and its next tick."""
        return self._call(A.ListSchedules(self._next()), A.Schedules).schedules

    def add_schedule(
        self,
        name: str,
        job: M.JobSpec | dict[str, Any],
        *,
        cron: str | None = None,
        tz: str = "UTC",
        every_ms: int | None = None,
        missed: A.MissedPolicy = "skip",
    ) -> None:
        """Register a schedule (``cron`` read in ``tz``, or ``every_ms``) that
        pushes ``job`` at each tick, or replace the one of that name."""
        spec = job if isinstance(job, M.JobSpec) else _job_spec(job)
        request = A.AddSchedule(self._next(), name, spec, cron, tz, every_ms, missed)
        self._call(request, M.Ok)

    def remove_schedule(self, name: str) -> None:
        self._call(A.RemoveSchedule(self._next(), name), M.Ok)

    def pause_schedule(self, name: str) -> None:
        self._call(A.PauseSchedule(self._next(), name), M.Ok)

    def resume_schedule(self, name: str) -> None:
        """Tick again from the first tick after now (those while paused are skipped)."""
        self._call(A.ResumeSchedule(self._next(), name), M.Ok)

    def compact(self) -> A.Compacted:
        """Seal the journal's open segment and snapshot through it now."""
        return self._call(A.Compact(self._next()), A.Compacted)

    # --- the connection --------------------------------------------------------

    def _bulk(
        self,
        request: Callable[[str, int], Any],
        reply: type[A.Requeued] | type[A.JobsChanged],
        most: int | None,
        chunk: int,
        pace: bool,
    ) -> list[str]:
        def call(cursor: str, limit: int) -> tuple[list[str], str]:
            done = self._call(request(cursor, limit), reply)
            return done.ids, done.next

        return _bulk_pages(call, most, chunk, pace)

    def _next(self) -> int:
        self._rid += 1
        return self._rid

    def _call(self, request: Any, expected: type[R]) -> R:
        sock = self._sock
        if sock is None:
            raise ConnectionLost("the admin connection is closed")
        try:
            sock.sendall(encode_frame(M.encoder.encode(request)))
            reply = self._receive(sock)
        except OSError as exc:
            self.close()
            raise ConnectionLost(f"the admin connection broke: {exc}") from exc
        if isinstance(reply, M.Error):
            if reply.rid == 0:
                self.close()
            raise error_from_reply(reply)
        if not isinstance(reply, expected) or reply.rid != request.rid:
            self.close()
            raise ProtocolViolation(f"unexpected {type(reply).__name__} reply")
        return reply

    def _receive(self, sock: socket.socket) -> A.AdminReply:
        while True:
            try:
                body = self._decoder.next_frame()
            except ProtocolError as exc:
                raise ProtocolViolation(f"bad frame from the broker: {exc}") from None
            if body is not None:
                try:
                    reply: A.AdminReply = A.admin_reply_decoder.decode(body)
                except msgspec.DecodeError as exc:
                    raise ProtocolViolation(f"undecodable admin reply: {exc}") from None
                return reply
            data = sock.recv(_RECV_BYTES)
            if not data:
                self.close()
                raise ConnectionLost("the broker closed the admin connection")
            self._decoder.feed(data)


def _job_spec(fields: dict[str, Any]) -> M.JobSpec:
    """A job spec from plain fields, ``args`` as plain data."""
    plain = dict(fields)
    plain["args"] = msgspec.Raw(msgspec.msgpack.encode(plain.get("args", [])))
    try:
        return msgspec.convert(plain, M.JobSpec)
    except msgspec.ValidationError as exc:
        raise ValueError(f"bad job: {exc}") from None


def _filter(fields: dict[str, Filter]) -> A.JobFilter:
    """The filter of a listing or a bulk operation, checked as the broker checks it."""
    try:
        return msgspec.convert(fields, A.JobFilter)
    except msgspec.ValidationError as exc:
        raise ValueError(f"bad job filter: {exc}") from None


def _bulk_pages(
    call: Callable[[str, int], tuple[list[str], str]], most: int | None, chunk: int, pace: bool
) -> list[str]:
    """Every id a bulk operation changes, request after request, following the
    cursors; with ``pace``, waiting as long as each request took before the
    next, so that the operation holds the broker's loop at most half the time."""
    cursor, ids = "", list[str]()
    while most is None or len(ids) < most:
        limit = chunk if most is None else min(chunk, most - len(ids))
        started = time.monotonic()
        changed, cursor = call(cursor, limit)
        ids += changed
        if not cursor:
            break
        if pace:
            time.sleep(min(time.monotonic() - started, PACE_MAX_S))
    return ids


def _paged(page: Callable[[str, int], tuple[list[T], str]], most: int | None) -> Iterator[T]:
    """The items of every page (or the first ``most``), following the cursors."""
    cursor, given = "", 0
    while most is None or given < most:
        limit = limits.ADMIN_PAGE_MAX if most is None else min(limits.ADMIN_PAGE_MAX, most - given)
        items, cursor = page(cursor, limit)
        yield from items
        given += len(items)
        if not cursor:
            return
