"""The one seam through which the journal touches the disk.

Tests swap in a disk that fails or crashes at a chosen call; the broker uses
``OsDisk``. Keep it small: every method is one system call's worth of work.
Files are created with mode 0600. ``sync`` and ``sync_dir`` are the only
calls that make anything durable: a file's bytes after ``sync`` of its
descriptor, a directory's names (created, renamed, removed) after
``sync_dir``.
"""

import os
from typing import Protocol

FILE_MODE = 0o600


class Disk(Protocol):
    def create(self, path: str) -> int: ...  # a new file, write-only; it must not exist
    def open_append(self, path: str) -> int: ...
    def open_read(self, path: str) -> int: ...
    def write(self, fd: int, data: bytes | bytearray) -> None: ...
    def read_at(self, fd: int, offset: int, size: int) -> bytes: ...
    def sync(self, fd: int) -> None: ...
    def close(self, fd: int) -> None: ...
    def sync_dir(self, path: str) -> None: ...
    def read(self, path: str) -> bytes: ...
    def size(self, path: str) -> int: ...
    def list_dir(self, path: str) -> list[str]: ...
    def truncate(self, path: str, size: int) -> None: ...
    def rename(self, src: str, dst: str) -> None: ...
    def remove(self, path: str) -> None: ...
    def free_bytes(self, path: str) -> int: ...


class OsDisk:
    def create(self, path: str) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        return os.open(path, flags, FILE_MODE)

    def open_append(self, path: str) -> int:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)

    def open_read(self, path: str) -> int:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def write(self, fd: int, data: bytes | bytearray) -> None:
        written = os.write(fd, data)
        if written == len(data):  # the usual case: the whole batch at once
            return
        view = memoryview(data)[written:]
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def read_at(self, fd: int, offset: int, size: int) -> bytes:
        return os.pread(fd, size, offset)

    def sync(self, fd: int) -> None:
        os.fsync(fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    def sync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self, path: str) -> bytes:
        with open(path, "rb") as file:
            return file.read()

    def size(self, path: str) -> int:
        return os.stat(path).st_size

    def list_dir(self, path: str) -> list[str]:
        return os.listdir(path)

    def truncate(self, path: str, size: int) -> None:
        os.truncate(path, size)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def remove(self, path: str) -> None:
        os.remove(path)

    def free_bytes(self, path: str) -> int:
        stat = os.statvfs(path)
        return stat.f_bavail * stat.f_frsize
