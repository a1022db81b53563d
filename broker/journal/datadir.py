"""The data directory: created 0700, locked by one process, files 0600.

The lock is an flock on ``lock`` holding the holder's pid; a second broker
(or an offline tool) on the same directory stops at once with "locked by
pid N", and the first is unaffected. The lock goes with the process, so a
crash never leaves it held.
"""

import fcntl
import logging
import os
import stat

from leash.broker.errors import BrokerError
from leash.broker.journal.layout import LOCK_NAME

log = logging.getLogger("leash.journal")
DIR_MODE, FILE_MODE = 0o700, 0o600


class Locked(BrokerError):
    pass


def lock(data_dir: str) -> int:
    """Create (0700) and lock the directory: the lock's descriptor."""
    os.makedirs(data_dir, mode=DIR_MODE, exist_ok=True)
    os.chmod(data_dir, DIR_MODE)
    fd = os.open(
        os.path.join(data_dir, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise Locked(f"data directory {data_dir} is locked by pid {holder}") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    keep_private(data_dir)
    return fd


def keep_private(data_dir: str) -> None:
    """Every file of the data directory is 0600 (ours are created so; this
    mends files that an older version or an operator left wider)."""
    for entry in os.scandir(data_dir):
        mode = entry.stat(follow_symlinks=False).st_mode
        if stat.S_ISREG(mode) and stat.S_IMODE(mode) & ~FILE_MODE:
            os.chmod(entry.path, FILE_MODE)
            log.warning("%s was mode %o; made 0600", entry.path, stat.S_IMODE(mode))
