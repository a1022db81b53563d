"""The Leash Python client: producers, workers, and the ``leash`` command.

    from client import Client, AsyncClient, Worker, handler

- ``Client`` (blocking) and ``AsyncClient`` (asyncio) speak the same API:
  push, push_many, fetch, fetch_many, ack, ack_many, fail, extend, release,
  pause, resume, get_job; and for worker processes beat, control,
  processes, busy.
- ``Worker`` leases jobs, runs registered handlers in threads, beats and
  keeps running jobs' leases extended.
- ``handler`` registers a function for ``leash worker MODULE``.
- Exceptions: ``LeashError`` and its tree (see ``client._exceptions``).
"""

from protocol.messages import (
    BusyJob,
    BusyProcess,
    ErrorInfo,
    JobSpec,
    JobView,
    ProcessView,
    PushResult,
)

from ._exceptions import (
    BadRequest,
    ConnectFailed,
    ConnectionLost,
    DiskFull,
    HandshakeRequired,
    Internal,
    JournalFailed,
    LeashError,
    NotFound,
    ProtocolViolation,
    QueuePaused,
    RequestTimeout,
    ServerError,
    StaleLease,
    TooLarge,
    UnknownOp,
    UnsupportedVersion,
)
from ._handlers import handler
from ._identity import process_worker_id
from ._types import FailResult, Job, Lease, job_spec
from .aio import AsyncClient
from .blocking import Client
from .worker import Worker

__all__ = [
    "AsyncClient",
    "BadRequest",
    "BusyJob",
    "BusyProcess",
    "Client",
    "ConnectFailed",
    "ConnectionLost",
    "DiskFull",
    "ErrorInfo",
    "FailResult",
    "HandshakeRequired",
    "Internal",
    "Job",
    "JobSpec",
    "JobView",
    "JournalFailed",
    "Lease",
    "LeashError",
    "NotFound",
    "ProcessView",
    "ProtocolViolation",
    "PushResult",
    "QueuePaused",
    "RequestTimeout",
    "ServerError",
    "StaleLease",
    "TooLarge",
    "UnknownOp",
    "UnsupportedVersion",
    "Worker",
    "handler",
    "job_spec",
    "process_worker_id",
]
