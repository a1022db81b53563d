"""The Leash Python client: producers, workers, and the ``leash`` command.

    from client import Client, AsyncClient, Worker, handler

- ``Client`` (blocking) and ``AsyncClient`` (asyncio) speak the same API:
  push, push_many, fetch, fetch_many, ack, ack_many, fail, extend, release,
  get_job, and beat for worker processes; batches: create_batch,
  commit_batch, batch_status.
- ``AdminClient`` (blocking) speaks to the broker's admin socket: the views
  and operations an operator uses (``leash stats``, ``leash queues`` ...).
- ``Worker`` leases jobs, runs registered handlers in threads, beats and
  keeps running jobs' leases extended.
- ``handler`` registers a function for ``leash worker MODULE``; inside a
  handler, ``current_job()`` is the running job and ``add_to_batch(...)``
  adds a job to its batch.
- Exceptions: ``LeashError`` and its tree (see ``client._exceptions``).
"""

from protocol.admin import BusyJob, BusyProcess, FsckReport, ProcessView, QueueView, Stats
from protocol.messages import BatchCreated, BatchView, ErrorInfo, JobSpec, JobView, PushResult

from ._exceptions import (
    AdminOnly,
    BadRequest,
    ConnectFailed,
    ConnectionLost,
    HandshakeRequired,
    Internal,
    InvalidState,
    LeashError,
    NotFound,
    PermissionDenied,
    ProtocolViolation,
    QueuePaused,
    RequestTimeout,
    ServerError,
    StaleLease,
    TooLarge,
    UnknownOp,
    UnsupportedVersion,
)
from ._handlers import add_to_batch, current_job, handler
from ._identity import process_worker_id
from ._types import FailResult, Job, Lease, job_spec
from .admin import AdminClient
from .aio import AsyncClient
from .blocking import Client
from .worker import Worker

__all__ = [
    "AdminClient",
    "AdminOnly",
    "AsyncClient",
    "BadRequest",
    "BatchCreated",
    "BatchView",
    "BusyJob",
    "BusyProcess",
    "Client",
    "ConnectFailed",
    "ConnectionLost",
    "ErrorInfo",
    "FailResult",
    "FsckReport",
    "HandshakeRequired",
    "Internal",
    "InvalidState",
    "Job",
    "JobSpec",
    "JobView",
    "Lease",
    "LeashError",
    "NotFound",
    "PermissionDenied",
    "ProcessView",
    "ProtocolViolation",
    "PushResult",
    "QueuePaused",
    "QueueView",
    "RequestTimeout",
    "ServerError",
    "StaleLease",
    "Stats",
    "TooLarge",
    "UnknownOp",
    "UnsupportedVersion",
    "Worker",
    "add_to_batch",
    "current_job",
    "handler",
    "job_spec",
    "process_worker_id",
]
