"""The Leash Python client: producers, workers, and the ``leash`` command.

    from leash.client import Client, AsyncClient, Worker, handler

- ``Client`` (blocking) and ``AsyncClient`` (asyncio) speak the same API:
  push, push_many, fetch, fetch_many, ack, ack_many, fail, extend, release,
  get_job, and beat for worker processes; batches: create_batch,
  commit_batch, batch_status; ``pipeline()`` sends many pushes together.
  Threads sharing a Client (tasks sharing an AsyncClient) share its
  connection: what they ask for while a write is in flight goes in the next.
- ``AdminClient`` (blocking) speaks to the broker's admin socket: the views
  and operations an operator uses (``leash stats``, ``leash queues`` ...).
- ``Worker`` leases jobs (a few ahead of its free slots), runs registered
  handlers in threads, sends the acks of finished jobs with its next fetch,
  beats and keeps running jobs' leases extended.
- ``handler`` registers a function for ``leash worker MODULE`` (which also
  runs a ``Worker`` object the module defines); inside a handler,
  ``current_job()`` is the running job, ``add_to_batch(...)`` adds a job
  to its batch and ``report_progress(percent, message)`` says how far it is.
  A job pushed with ``time_limit_ms`` is failed with ``TimeLimitExceeded``
  at its limit and its slot freed. A handler steers its job by raising ``Retry(delay_s)``,
  ``Discard(reason)`` or ``Snooze(delay_s)`` (``leash.client._control``),
  and classifies its exceptions with ``retry_on`` / ``give_up_on``.
- A client reconnects on its next call after a lost connection, sends a
  push again with the same ids until it is answered (or ``timeout_s``), and
  opens a connection of its own in a forked child.
- Security: ``key=`` (a ``Key``, or a key file's path; ``load_key`` picks one
  from a file) and ``tls=`` (True or an ``ssl.SSLContext``; ``tls_context``
  makes one) on every client and the Worker; or the URL form
  ``leashs://host:port?ca=...&key_file=...``; or ``Client.from_env()``, which
  takes the broker from ``LEASH_URL`` and the key and TLS files from
  ``LEASH_KEY_FILE``, ``LEASH_TLS_CA`` ... (``leash.client._env``).
- Job args keep their types: datetime, date, Decimal, UUID and bytes come
  back as themselves; a push whose args hold any other type raises
  ``UnsupportedArgType`` (a ``TypeError``) naming the field
  (``leash.protocol.argtypes``).
- Exceptions: ``LeashError`` and its tree (see ``leash.client._exceptions``).
"""

from leash.protocol.admin import BusyJob, BusyProcess, FsckReport, ProcessView, QueueView, Stats
from leash.protocol.argtypes import UnsupportedArgType
from leash.protocol.auth import Key, KeyFileError
from leash.protocol.messages import BatchCreated, BatchView, ErrorInfo, JobSpec, JobView, PushResult

from ._control import Discard, Retry, Snooze
from ._exceptions import (
    AdminOnly,
    AuthFailed,
    AuthRequired,
    BadRequest,
    BrokerNotVerified,
    ConnectFailed,
    ConnectionLost,
    DiskFull,
    FrameTimeout,
    HandshakeRequired,
    HandshakeTimeout,
    IdleTimeout,
    Internal,
    InvalidState,
    JobFailed,
    JournalFailed,
    LeashError,
    NotFound,
    PermissionDenied,
    ProtocolViolation,
    QueuePaused,
    RequestTimeout,
    ResultNotReady,
    ServerError,
    SlowReader,
    StaleLease,
    TooLarge,
    TooManyConnections,
    UnknownOp,
    UnsupportedVersion,
)
from ._handlers import add_to_batch, current_job, handler, report_progress
from ._identity import process_worker_id
from ._security import load_key, tls_context
from ._types import FailResult, Job, JobOptions, Lease, job_spec
from .admin import AdminClient
from .aio import AsyncClient
from .blocking import Client
from .worker import Worker

__all__ = [
    "AdminClient",
    "AdminOnly",
    "AsyncClient",
    "AuthFailed",
    "AuthRequired",
    "BadRequest",
    "BatchCreated",
    "BatchView",
    "BrokerNotVerified",
    "BusyJob",
    "BusyProcess",
    "Client",
    "ConnectFailed",
    "ConnectionLost",
    "Discard",
    "DiskFull",
    "ErrorInfo",
    "FailResult",
    "FrameTimeout",
    "FsckReport",
    "HandshakeRequired",
    "HandshakeTimeout",
    "IdleTimeout",
    "Internal",
    "InvalidState",
    "Job",
    "JobFailed",
    "JobOptions",
    "JobSpec",
    "JobView",
    "JournalFailed",
    "Key",
    "KeyFileError",
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
    "ResultNotReady",
    "Retry",
    "ServerError",
    "SlowReader",
    "Snooze",
    "StaleLease",
    "Stats",
    "TooLarge",
    "TooManyConnections",
    "UnknownOp",
    "UnsupportedArgType",
    "UnsupportedVersion",
    "Worker",
    "add_to_batch",
    "current_job",
    "handler",
    "job_spec",
    "load_key",
    "process_worker_id",
    "report_progress",
    "tls_context",
]
