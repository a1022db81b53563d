"""Who this OS process is to the broker: one worker id per process, and the hello.

Every connection of a process presents the same worker id, so every lease it
takes has an owner the broker can track, even for a producer-only ``Client``.
The id is made again in a forked child (its pid differs): a child is another
process with its own leases.
"""

import os
import secrets
import socket
from dataclasses import dataclass
from importlib import metadata

from leash.protocol import PROTOCOL_VERSION, limits
from leash.protocol.messages import Hello

_worker_id = ""
_worker_id_pid = -1


def process_worker_id() -> str:
    """This process's worker id: ``{hostname}-{pid}-{random hex}``."""
    global _worker_id, _worker_id_pid
    pid = os.getpid()
    if pid != _worker_id_pid:
        suffix = f"-{pid}-{secrets.token_hex(12)}"  # 96 random bits
        host = socket.gethostname()[: limits.NAME_MAX_CHARS - len(suffix)]
        _worker_id, _worker_id_pid = host + suffix, pid
    return _worker_id


def _client_name() -> str:
    try:
        version = metadata.version("leash")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    return f"leash-py/{version}"[: limits.CLIENT_NAME_MAX_CHARS]


CLIENT_NAME = _client_name()


@dataclass(frozen=True, slots=True)
class Identity:
    """What a connection says about its process in the hello."""

    worker_id: str | None = None  # None: this process's id
    hostname: str | None = None  # None: socket.gethostname()
    labels: tuple[str, ...] = ()
    concurrency: int = 0

    def hello(self) -> Hello:
        """The hello for a new connection; the core gives it its rid."""
        hostname = self.hostname if self.hostname is not None else socket.gethostname()
        return Hello(
            rid=1,
            version=PROTOCOL_VERSION,
            worker_id=self.worker_id if self.worker_id is not None else process_worker_id(),
            client=CLIENT_NAME,
            hostname=hostname[: limits.HOSTNAME_MAX_CHARS],
            pid=os.getpid(),
            labels=list(self.labels),
            concurrency=self.concurrency,
        )
