"""The broker's settings, with their defaults and bounds."""

import msgspec

from broker.core.config import CoreConfig
from broker.journal.group_commit import FsyncPolicy
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
