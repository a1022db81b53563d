"""Snapshot files: the state image (core/image.py) through a sequence number.

Format, version 1: the journal's file header with magic b"LEASHSNP" and the
seq the snapshot covers through in place of a first seq; then the image's
chunks, framed like records (crc32 | length | chunk number | payload, the
crc over length, number and payload; numbers count from 1); last an end
chunk that counts the chunks and jobs before it. A file that lacks its end
chunk, or has anything after it, is damaged: a cut-short snapshot is never
taken for a small state.

Writing: a ``.tmp`` file is written, fsynced, renamed to its final name and
the directory fsynced; only then is the snapshot durable, and only then may
the files it covers be removed (``obsolete``). A ``.tmp`` file is never read;
one whose writing fails (a full disk) is removed at once, so that it gives
back the space it took.
"""

import contextlib
import errno
import os
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import msgspec
from msgspec import Struct

from leash.broker.core import image
from leash.broker.errors import BrokerError
from leash.broker.journal import format as F
from leash.broker.journal import layout, reading
from leash.broker.journal.disk import Disk

MAGIC = b"LEASHSNP"
SNAPSHOT_VERSION = 1
WRITE_BYTES = 1 << 20  # chunks are gathered into writes of about this size


class SnapshotEnd(Struct, tag="end", array_like=True):
    chunks: int  # image chunks before this one
    jobs: int  # jobs in them


_decoder = msgspec.msgpack.Decoder(image.Chunk | SnapshotEnd)


class SnapshotCorrupt(BrokerError):
    """A snapshot file that fails its checks."""


class SnapshotTooNew(BrokerError):
    """A whole snapshot header of a format version this build cannot read."""


class NoRoom(BrokerError, OSError):
    """Writing on would leave less free space than the writer was told to keep."""


class Written(NamedTuple):
    path: str
    size_bytes: int
    jobs: int


def write(
    disk: Disk,
    directory: str,
    chunks: Iterable[image.Chunk],
    epoch: int,
    through_seq: int,
    keep_free_bytes: int = 0,
) -> Written:
    """Write the snapshot through ``through_seq``. With ``keep_free_bytes``,
    stop (``NoRoom``, the temp file removed) rather than leave less free
    space than that on the disk: the snapshotter keeps half the broker's
    watermark for the journal's own records."""
    final = os.path.join(directory, layout.snapshot_name(through_seq))
    temp = final + layout.TEMP_SUFFIX
    with contextlib.suppress(FileNotFoundError):  # a stopped snapshot's; never read
        disk.remove(temp)
    fd = disk.create(temp)
    try:
        room = _Room(disk, directory, keep_free_bytes)
        size_bytes, jobs = _write_chunks(disk, fd, chunks, epoch, through_seq, room)
    except BaseException:  # a full disk, a stopped snapshotter: give the space back
        disk.close(fd)
        with contextlib.suppress(OSError):
            disk.remove(temp)
        raise
    disk.close(fd)
    disk.rename(temp, final)
    disk.sync_dir(directory)
    return Written(final, size_bytes, jobs)


class _Room:
    """Checks, before each write, that it leaves ``keep_bytes`` free (one
    statvfs a write of about WRITE_BYTES)."""

    def __init__(self, disk: Disk, directory: str, keep_bytes: int) -> None:
        self.disk, self.directory, self.keep_bytes = disk, directory, keep_bytes

    def check(self, write_bytes: int) -> None:
        if not self.keep_bytes:
            return
        free_bytes = self.disk.free_bytes(self.directory)
        if free_bytes - write_bytes < self.keep_bytes:
            raise NoRoom(
                errno.ENOSPC,
                f"{free_bytes} bytes free: writing {write_bytes} more would leave less than "
                f"the {self.keep_bytes} kept for the journal",
            )


def _write_chunks(
    disk: Disk,
    fd: int,
    chunks: Iterable[image.Chunk],
    epoch: int,
    through_seq: int,
    room: _Room,
) -> tuple[int, int]:
    """Write the header, the chunks and the end chunk, and sync: (bytes, jobs)."""
    size_bytes, jobs = 0, 0
    pending = [F.encode_header(epoch, through_seq, MAGIC, SNAPSHOT_VERSION)]
    pending_bytes, number = len(pending[0]), 0
    for chunk in chunks:
        number += 1
        jobs += image.jobs_in(chunk)
        framed = F.encode_record(number, image.chunk_encoder.encode(chunk))
        pending.append(framed)
        pending_bytes += len(framed)
        if pending_bytes >= WRITE_BYTES:
            room.check(pending_bytes)
            disk.write(fd, b"".join(pending))
            size_bytes += pending_bytes
            pending, pending_bytes = [], 0
    end = F.encode_record(number + 1, image.chunk_encoder.encode(SnapshotEnd(number, jobs)))
    room.check(pending_bytes + len(end))
    disk.write(fd, b"".join([*pending, end]))
    size_bytes += pending_bytes + len(end)
    disk.sync(fd)
    return size_bytes, jobs


class Header(NamedTuple):
    epoch: int
    through_seq: int


def read_header(disk: Disk, path: str) -> Header:
    fd = disk.open_read(path)
    try:
        head = disk.read_at(fd, 0, F.HEADER_BYTES)
    finally:
        disk.close(fd)
    return _header(path, head)


def _header(path: str, head: bytes) -> Header:
    try:
        header = F.decode_header(head, MAGIC, (SNAPSHOT_VERSION,))
    except F.UnknownVersion as unknown:
        raise SnapshotTooNew(f"{path}: {unknown}") from None
    except F.BadHeader as bad:
        raise SnapshotCorrupt(f"{path}: offset 0: {bad}") from None
    return Header(header.epoch, header.first_seq)


def read(disk: Disk, path: str) -> Iterator[image.Chunk]:
    """The image chunks of a snapshot, each checked before it is yielded;
    raises SnapshotCorrupt (after the chunks before the damage) if the file
    fails any check, including a missing end chunk."""
    fd = disk.open_read(path)
    try:
        _header(path, disk.read_at(fd, 0, F.HEADER_BYTES))
        offset, number, jobs = F.HEADER_BYTES, 0, 0
        size_bytes = disk.size(path)
        while True:
            chunk = _read_chunk(disk, fd, path, offset, number + 1, size_bytes)
            offset += F.RECORD_HEADER_BYTES + chunk[1]
            if isinstance(chunk[0], SnapshotEnd):
                _check_end(disk, fd, path, offset, chunk[0], number, jobs)
                return
            number += 1
            jobs += image.jobs_in(chunk[0])
            yield chunk[0]
    finally:
        disk.close(fd)


def _read_chunk(
    disk: Disk, fd: int, path: str, offset: int, number: int, size_bytes: int
) -> tuple[image.Chunk | SnapshotEnd, int]:
    where = f"{path}: offset {offset}, chunk {number}"
    head = disk.read_at(fd, offset, F.RECORD_HEADER_BYTES)
    if len(head) < F.RECORD_HEADER_BYTES:
        raise SnapshotCorrupt(f"{where}: the file ends before its end chunk")
    crc, length, found = F.decode_frame_header(head)
    if length > F.RECORD_MAX_BYTES:
        raise SnapshotCorrupt(f"{where}: chunk length {length} is over the limit")
    if offset + F.RECORD_HEADER_BYTES + length > size_bytes:  # checked before it is allocated
        raise SnapshotCorrupt(f"{where}: chunk of {length} bytes runs past the end")
    payload = disk.read_at(fd, offset + F.RECORD_HEADER_BYTES, length)
    if len(payload) < length:
        raise SnapshotCorrupt(f"{where}: chunk of {length} bytes runs past the end")
    if F.frame_crc(head, payload) != crc:
        raise SnapshotCorrupt(f"{where}: chunk checksum mismatch")
    if found != number:
        raise SnapshotCorrupt(f"{where}: chunk number {found}, expected {number}")
    try:
        return reading.decode(_decoder, payload), length
    except msgspec.DecodeError as error:  # ValidationError is a DecodeError
        raise SnapshotCorrupt(f"{where}: chunk does not decode: {error}") from None


def _check_end(
    disk: Disk, fd: int, path: str, offset: int, end: SnapshotEnd, chunks: int, jobs: int
) -> None:
    if (end.chunks, end.jobs) != (chunks, jobs):
        raise SnapshotCorrupt(
            f"{path}: the end chunk counts {end.chunks} chunks and {end.jobs} jobs, "
            f"the file holds {chunks} and {jobs}"
        )
    if disk.read_at(fd, offset, 1):
        raise SnapshotCorrupt(f"{path}: offset {offset}: bytes after the end chunk")
