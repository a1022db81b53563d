"""The broker's settings, with their defaults and bounds."""

import os

import msgspec

from leash.broker.core.config import CoreConfig
from leash.broker.core.records import QueueLimitsSet
from leash.broker.journal.compaction import DEFAULT_SNAPSHOT_MIN_BYTES
from leash.broker.journal.group_commit import FsyncPolicy
from leash.broker.journal.log import DEFAULT_SEGMENT_BYTES
from leash.broker.journal.space import CHECK_PERIOD_MS, default_low_bytes
from leash.broker.server.limits import Limits
from leash.protocol.admin import AddSchedule
from leash.protocol.limits import FRAME_MAX_BYTES, HANDSHAKE_FRAME_MAX_BYTES

DEFAULT_PORT = 7420


class ServerConfig(msgspec.Struct, frozen=True):
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data_dir: str = "./leash-data"
    fsync: FsyncPolicy = FsyncPolicy("always")
    max_frame_bytes: int = FRAME_MAX_BYTES
    core: CoreConfig = CoreConfig()
    limits: Limits = Limits()
    key_file: str | None = None  # None: no authentication (loopback only, see security)
    insecure_no_auth: bool = False  # allow a non-loopback bind without keys
    tls_cert: str | None = None  # PEM certificate chain; with tls_key, the listener speaks TLS
    tls_key: str | None = None
    tls_client_ca: str | None = None  # PEM CAs; given, clients must present a certificate
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    snapshot_min_bytes: int = DEFAULT_SNAPSHOT_MIN_BYTES
    disk_low_bytes: int = 0  # 0: max(256 MiB, 4 segments)
    repair_truncate: bool = False
    space_check_ms: int = CHECK_PERIOD_MS
    admin_socket: str = ""  # "": <data_dir>/admin.sock
    admin_uids: tuple[int, ...] = ()  # besides the broker's own uid and root
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None  # None: no metrics endpoint
    faktory_port: int | None = None  # None: no Faktory listener (docs/faktory.md)
    faktory_password_file: str | None = None  # the Faktory port's password (besides the keys)
    faktory_allow_mutate: bool = False  # MUTATE and FLUSH for every Faktory client
    # The config file's [queues.NAME] limits, given to the queues at each start (core/limits.py)
    queue_limits: tuple[QueueLimitsSet, ...] = ()
    schedules: tuple[AddSchedule, ...] = ()  # the config file's, applied at start

    @property
    def low_watermark_bytes(self) -> int:
        return self.disk_low_bytes or default_low_bytes(self.segment_bytes)

    def admin_socket_path(self) -> str:
        return self.admin_socket or os.path.join(self.data_dir, "admin.sock")

    def limits_in_force(self) -> dict[str, int]:
        """Every limit in force, by name with its unit last, for stats."""
        return {
            **msgspec.structs.asdict(self.limits),
            "max_frame_bytes": self.max_frame_bytes,
            "handshake_frame_max_bytes": HANDSHAKE_FRAME_MAX_BYTES,
            "dead_max_jobs": self.core.dead_max_jobs,
            "dead_max_age_ms": self.core.dead_max_age_ms,
            "lost_leases_max": self.core.lost_leases_max,
            "unique_keys_max": self.core.unique_keys_max,
            "restart_grace_ms": self.core.restart_grace_ms,
            "segment_bytes": self.segment_bytes,
            "snapshot_min_bytes": self.snapshot_min_bytes,
            "disk_low_bytes": self.low_watermark_bytes,
        }
