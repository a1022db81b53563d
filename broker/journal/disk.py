"""The one seam through which the journal touches the disk.

Tests swap in a disk that fails or crashes at a chosen call; the broker uses
``OsDisk``. Keep it small: every method is one system call's worth of work.
"""

import os
from typing import Protocol


class Disk(Protocol):
    def open_append(self, path: str) -> int: ...
    def write(self, fd: int, data: bytes) -> None: ...
    def sync(self, fd: int) -> None: ...
    def close(self, fd: int) -> None: ...
    def sync_dir(self, path: str) -> None: ...
    def read(self, path: str) -> bytes: ...
    def truncate(self, path: str, size: int) -> None: ...
    def rename(self, src: str, dst: str) -> None: ...
    def remove(self, path: str) -> None: ...
    def free_bytes(self, path: str) -> int: ...


class OsDisk:
    def open_append(self, path: str) -> int:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def write(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def sync(self, fd: int) -> None:
        os.fsync(fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    def sync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self, path: str) -> bytes:
        with open(path, "rb") as file:
            return file.read()

    def truncate(self, path: str, size: int) -> None:
        os.truncate(path, size)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def remove(self, path: str) -> None:
        os.remove(path)

    def free_bytes(self, path: str) -> int:
        stat = os.statvfs(path)
        return stat.f_bavail * stat.f_frsize
