"""The broker's settings, with their defaults and bounds."""

import msgspec

from broker.core.config import CoreConfig
from broker.journal.compaction import DEFAULT_SNAPSHOT_MIN_BYTES
from broker.journal.group_commit import FsyncPolicy
from broker.journal.log import DEFAULT_SEGMENT_BYTES
from broker.journal.space import CHECK_PERIOD_MS, default_low_bytes
from broker.server.limits import Limits
from protocol.limits import FRAME_MAX_BYTES

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

    @property
    def low_watermark_bytes(self) -> int:
        return self.disk_low_bytes or default_low_bytes(self.segment_bytes)
