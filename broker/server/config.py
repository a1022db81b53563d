"""The broker's settings, with their defaults and bounds."""

import msgspec

from broker.core.config import CoreConfig
from broker.journal.group_commit import FsyncPolicy
from protocol.limits import FRAME_MAX_BYTES

DEFAULT_PORT = 7420


class ServerConfig(msgspec.Struct, frozen=True):
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data_dir: str = "./leash-data"
    fsync: FsyncPolicy = FsyncPolicy("always")
    max_frame_bytes: int = FRAME_MAX_BYTES
    core: CoreConfig = CoreConfig()
