"""Disks for the journal's seam (broker/journal/disk.py), written by hand.

- ``SimDisk``: an in-memory file system that models what survives a crash.
  Every call that changes something is a numbered step; ``crash_at = k``
  makes step k raise ``Crash`` before it happens. ``after_power_loss()``
  is the disk as a machine that lost power then would find it: a file's
  bytes as of its last ``sync``, a directory's names as of its last
  ``sync_dir`` (the weakest guarantee POSIX gives); ``after_process_crash()``
  keeps everything (the page cache survives a kill -9). It records every
  path it reads, so a test can check that a temp file is never read.
- ``FaultyDisk``: the real ``OsDisk`` on a real directory, failing the Nth
  fsync (``sync`` or ``sync_dir``) or the Nth write with EIO, counting the
  fsyncs tried after the failure, remembering how much of each file was
  synced, and reporting whatever free space the test sets.
"""

import errno
import os
import time
from dataclasses import dataclass, field

from leash.broker.journal.disk import OsDisk


class Crash(Exception):
    """The simulated machine stopped at this step."""


@dataclass
class Inode:
    data: bytearray = field(default_factory=bytearray)
    synced: bytes = b""


class SimDisk:
    def __init__(self) -> None:
        self.names: dict[str, Inode] = {}  # what a process sees now
        self.durable_names: dict[str, Inode] = {}  # what a power loss keeps
        self.fds: dict[int, Inode] = {}
        self.next_fd = 3
        self.steps: list[str] = []
        self.crash_at: int | None = None
        self.reads: list[str] = []
        self.free = 1 << 40

    # --- crashes ----------------------------------------------------------

    def _step(self, what: str) -> None:
        if self.crash_at is not None and len(self.steps) >= self.crash_at:
            raise Crash(what)
        self.steps.append(what)

    def after_power_loss(self) -> "SimDisk":
        disk = SimDisk()
        for name, inode in self.durable_names.items():
            disk.names[name] = Inode(bytearray(inode.synced), inode.synced)
        disk.durable_names = dict(disk.names)
        return disk

    def after_process_crash(self) -> "SimDisk":
        disk = SimDisk()
        copies: dict[int, Inode] = {}

        def copy(inode: Inode) -> Inode:
            if id(inode) not in copies:
                copies[id(inode)] = Inode(bytearray(inode.data), inode.synced)
            return copies[id(inode)]

        disk.names = {name: copy(inode) for name, inode in self.names.items()}
        disk.durable_names = {name: copy(inode) for name, inode in self.durable_names.items()}
        return disk

    def contents(self) -> dict[str, bytes]:
        return {name: bytes(inode.data) for name, inode in sorted(self.names.items())}

    # --- the Disk protocol ------------------------------------------------

    def create(self, path: str) -> int:
        if path in self.names:
            raise FileExistsError(errno.EEXIST, "exists", path)
        self._step(f"create {path}")
        self.names[path] = Inode()
        return self._fd(self.names[path])

    def open_append(self, path: str) -> int:
        return self._fd(self._inode(path))

    def open_read(self, path: str) -> int:
        self.reads.append(path)
        return self._fd(self._inode(path))

    def write(self, fd: int, data: bytes | bytearray) -> None:
        self._step(f"write {len(data)} bytes")
        self.fds[fd].data += data

    def read_at(self, fd: int, offset: int, size: int) -> bytes:
        return bytes(self.fds[fd].data[offset : offset + size])

    def sync(self, fd: int) -> None:
        self._step("sync")
        inode = self.fds[fd]
        inode.synced = bytes(inode.data)

    def close(self, fd: int) -> None:
        del self.fds[fd]

    def sync_dir(self, path: str) -> None:
        self._step(f"sync_dir {path}")
        prefix = path.rstrip("/") + "/"
        kept = {n: i for n, i in self.durable_names.items() if not n.startswith(prefix)}
        kept.update({n: i for n, i in self.names.items() if n.startswith(prefix)})
        self.durable_names = kept

    def read(self, path: str) -> bytes:
        self.reads.append(path)
        return bytes(self._inode(path).data)

    def size(self, path: str) -> int:
        return len(self._inode(path).data)

    def list_dir(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        return [n[len(prefix) :] for n in self.names if n.startswith(prefix)]

    def truncate(self, path: str, size: int) -> None:
        self._step(f"truncate {path} {size}")
        del self._inode(path).data[size:]

    def rename(self, src: str, dst: str) -> None:
        inode = self._inode(src)
        self._step(f"rename {src} {dst}")
        del self.names[src]
        self.names[dst] = inode

    def remove(self, path: str) -> None:
        self._inode(path)
        self._step(f"remove {path}")
        del self.names[path]

    def free_bytes(self, path: str) -> int:
        return self.free

    def _inode(self, path: str) -> Inode:
        try:
            return self.names[path]
        except KeyError:
            raise FileNotFoundError(errno.ENOENT, "no such file", path) from None

    def _fd(self, inode: Inode) -> int:
        fd, self.next_fd = self.next_fd, self.next_fd + 1
        self.fds[fd] = inode
        return fd


class FaultyDisk(OsDisk):
    def __init__(self, fail_sync_at: int = 0, fail_write_at: int = 0) -> None:
        self.fail_sync_at = fail_sync_at  # 0: never
        self.fail_write_at = fail_write_at
        self.syncs = 0
        self.writes = 0
        self.failed_at_s: float | None = None  # time.monotonic() of the failure
        self.syncs_after_failure = 0
        self.synced_bytes: dict[str, int] = {}  # per path: the size at its last good fsync
        self._paths: dict[int, str] = {}
        self.free: int | None = None  # None: the real free space

    def create(self, path: str) -> int:
        fd = super().create(path)
        self._paths[fd] = path
        return fd

    def open_append(self, path: str) -> int:
        fd = super().open_append(path)
        self._paths[fd] = path
        return fd

    def write(self, fd: int, data: bytes | bytearray) -> None:
        self.writes += 1
        if self.writes == self.fail_write_at:
            self._fail()
        super().write(fd, data)

    def sync(self, fd: int) -> None:
        self._count_sync()
        super().sync(fd)
        path = self._paths.get(fd)
        if path is not None:
            self.synced_bytes[path] = os.fstat(fd).st_size

    def sync_dir(self, path: str) -> None:
        self._count_sync()
        super().sync_dir(path)

    def free_bytes(self, path: str) -> int:
        return super().free_bytes(path) if self.free is None else self.free

    def _count_sync(self) -> None:
        if self.failed_at_s is not None:
            self.syncs_after_failure += 1
        self.syncs += 1
        if self.syncs == self.fail_sync_at:
            self._fail()

    def _fail(self) -> None:
        self.failed_at_s = time.monotonic()
        raise OSError(errno.EIO, "Input/output error (injected)")
