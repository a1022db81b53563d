"""The broker's settings, with their defaults and bounds."""

import os

import msgspec

from broker.core.config import CoreConfig
from broker.journal.group_commit import FsyncPolicy
from protocol.limits import FRAME_MAX_BYTES, HANDSHAKE_FRAME_MAX_BYTES

DEFAULT_PORT = 7420


class ServerConfig(msgspec.Struct, frozen=True):
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data_dir: str = "./leash-data"
    fsync: FsyncPolicy = FsyncPolicy("always")
    max_frame_bytes: int = FRAME_MAX_BYTES
    core: CoreConfig = CoreConfig()
    admin_socket: str = ""  # "": <data_dir>/admin.sock
    admin_uids: tuple[int, ...] = ()  # besides the broker's own uid and root
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None  # None: no metrics endpoint

    def admin_socket_path(self) -> str:
        return self.admin_socket or os.path.join(self.data_dir, "admin.sock")

    def limits(self) -> dict[str, int]:
        """The limits in force, by name with their units, for stats."""
        return {
            "max_frame_bytes": self.max_frame_bytes,
            "handshake_frame_max_bytes": HANDSHAKE_FRAME_MAX_BYTES,
            "dead_max_jobs": self.core.dead_max_jobs,
            "dead_max_age_ms": self.core.dead_max_age_ms,
        }
