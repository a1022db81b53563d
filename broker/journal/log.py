"""The append side of the journal: numbering, segments, rotation, sticky failure.

Records are appended to the open segment; when it passes ``segment_bytes``
the writer seals it (fsync, even under ``--fsync never``, so a sealed
segment is whole on disk) and starts the next one, whose header carries
the epoch and the first seq: sequence numbers run on across files.

A failed write, fsync or rotation is sticky: ``failure`` is set, the
error is raised again by every later call, and the disk is never touched
again by this journal (fsync is never retried: after a failed fsync the
kernel may have dropped the dirty pages, and a later "successful" fsync
would prove nothing).

Threading: ``encode`` and ``append`` run on the event loop (``encode``
numbers records); ``sync`` and ``rotate`` on the one writer thread, a sync
while the loop appends (it covers what was appended before it started), a
rotation never while the loop appends (the group committer holds writes
meanwhile); ``open`` before that thread starts, ``close`` after it stopped.
"""

import contextlib
import os
import struct
import zlib
from collections.abc import Callable, Iterable
from typing import NamedTuple, TypeVar

from leash.broker.core.records import Record, record_encoder
from leash.broker.errors import BrokerError
from leash.broker.journal import format as F
from leash.broker.journal import layout
from leash.broker.journal.disk import Disk
from leash.broker.journal.recovery import Segment

DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
T = TypeVar("T")
_CRC = struct.Struct(">I")  # a frame's header: crc, then length and seq (format.py)
_LENGTH_SEQ = struct.Struct(">IQ")
_FRAME_FULL = F.FRAME_TARGET_BYTES + F.RECORD_HEADER_BYTES
_encode_into, _crc32 = record_encoder.encode_into, zlib.crc32


class WriteBuffer:
    """Records framed for one write (format version 2 and on). The records of
    consecutive ``Journal.encode_into`` calls share the open frame until its
    payload passes ``FRAME_TARGET_BYTES``; ``close`` fills in the open
    frame's header (length, seq, count, checksum) and returns the bytes."""

    __slots__ = ("data", "frame_records", "frame_seq", "frame_start")

    def __init__(self) -> None:
        self.data = bytearray()
        self.frame_start = -1  # the open frame's offset in data, or -1: none open
        self.frame_seq = 0  # its first record's seq
        self.frame_records = 0

    def __len__(self) -> int:
        return len(self.data)

    def open_frame(self, seq: int) -> None:
        self.close()
        self.frame_start, self.frame_seq, self.frame_records = len(self.data), seq, 0
        self.data += bytes(F.FRAME_PREFIX_BYTES)  # filled in by close

    def extend(self, framed: bytes) -> None:
        """Append frames encoded elsewhere (after the open frame, closed)."""
        self.close()
        self.data += framed

    def close(self) -> bytearray:
        start, data = self.frame_start, self.data
        if start >= 0:
            self.frame_start = -1
            head = start + 4
            _LENGTH_SEQ.pack_into(
                data, head, len(data) - start - F.RECORD_HEADER_BYTES, self.frame_seq
            )
            F.FRAME_COUNT.pack_into(
                data, start + F.RECORD_HEADER_BYTES, F.ARRAY32, self.frame_records
            )
            _CRC.pack_into(data, start, _crc32(memoryview(data)[head:]))
        return data


class JournalFailure(BrokerError):
    """A write, fsync or rotation failed; the journal is closed for good."""

    def __init__(self, op: str, path: str, error: OSError, durable_seq: int) -> None:
        self.op, self.path, self.errno, self.durable_seq = op, path, error.errno, durable_seq
        reason = error.strerror or str(error)
        super().__init__(
            f"{op} failed on {path}: errno {error.errno} ({reason}); last durable seq {durable_seq}"
        )


class Sealed(NamedTuple):
    """A segment that is complete and synced: what a snapshot can cover."""

    first_seq: int
    last_seq: int
    path: str
    size_bytes: int


class Journal:
    def __init__(
        self, directory: str, disk: Disk, segment_bytes: int = DEFAULT_SEGMENT_BYTES
    ) -> None:
        self.directory = directory
        self.disk = disk
        self.segment_bytes = segment_bytes
        self.next_seq = 1  # the seq the next encoded record gets (event loop)
        self.written_seq = 0  # the last seq written to the file (writer thread)
        self.durable_seq = 0  # the last seq fsynced (writer thread)
        self.epoch = 0
        self.failure: JournalFailure | None = None
        self.appended_bytes = 0  # by append since start (the free-space watch counts on it)
        self._fd: int | None = None
        self._path = ""
        self._first_seq = 1
        self._size_bytes = 0

    def open(self, next_seq: int, last: Segment | None, epoch: int) -> None:
        """Go on appending after recovery: to the last segment, or to a new
        one (also when the last is of an older format version: it is synced,
        so it is as whole on disk as a sealed segment, and left as it is)."""
        self.next_seq = next_seq
        self.written_seq = self.durable_seq = next_seq - 1
        self.epoch = epoch
        if last is not None and last.version != F.FORMAT_VERSION:
            older = self._path = last.path
            self._guard("fsync", lambda: self._sync_file(older))
            last = None
        if last is not None and last.last_seq == next_seq - 1:
            self._path, self._first_seq, self._size_bytes = (
                last.path,
                last.first_seq,
                last.size_bytes,
            )
            self._fd = self._guard("open", lambda: self.disk.open_append(last.path))
        else:
            self._guard("create", lambda: self._create(next_seq))

    @property
    def path(self) -> str:
        """The segment appended to."""
        return self._path

    def _sync_file(self, path: str) -> None:
        fd = self.disk.open_append(path)
        try:
            self.disk.sync(fd)
        finally:
            self.disk.close(fd)

    def _create(self, first_seq: int) -> None:
        path = os.path.join(self.directory, layout.segment_name(first_seq))
        self._path = path
        fd = self.disk.create(path)
        self._fd, self._first_seq = fd, first_seq
        header = F.encode_header(self.epoch, first_seq)
        self.disk.write(fd, header)
        self.disk.sync(fd)
        self.disk.sync_dir(self.directory)
        self._size_bytes = len(header)

    def disk_usage(self) -> tuple[int, int, int]:
        """Bytes on disk, segments and snapshots of the data directory now (for stats)."""
        found = layout.scan(self.disk, self.directory)
        total = 0
        for _, path in (*found.segments, *found.snapshots):
            with contextlib.suppress(FileNotFoundError):
                total += os.path.getsize(path)
        return total, len(found.segments), len(found.snapshots)

    def encode(self, records: Iterable[Record]) -> bytes:
        """Frame records with the next sequence numbers (event-loop thread)."""
        buffer = WriteBuffer()
        self.encode_into(records, buffer)
        return bytes(buffer.close())

    def encode_into(self, records: Iterable[Record], buffer: "WriteBuffer") -> None:
        """Append records to ``buffer``, numbered with the next sequence
        numbers, in its open frame while that is under FRAME_TARGET_BYTES.
        All or nothing: a record that does not encode leaves ``buffer`` and
        the numbering as they were."""
        seq, data = self.next_seq, buffer.data
        before = (len(data), buffer.frame_start, buffer.frame_seq, buffer.frame_records)
        if buffer.frame_seq + buffer.frame_records != seq:  # numbers taken elsewhere meanwhile
            buffer.close()  # a frame holds consecutive records only
        try:
            for record in records:
                if buffer.frame_start < 0 or len(data) - buffer.frame_start > _FRAME_FULL:
                    buffer.open_frame(seq)
                _encode_into(record, data, -1)
                buffer.frame_records += 1
                seq += 1
        except BaseException:
            del data[before[0] :]
            buffer.frame_start, buffer.frame_seq, buffer.frame_records = before[1:]
            raise
        self.next_seq = seq

    def append(self, data: bytes | bytearray, through_seq: int) -> None:
        """Write ``data``, whose last record has seq ``through_seq``."""
        fd = self._open_fd()
        try:  # _guard without its closure: this runs once a loop turn
            self.disk.write(fd, data)
        except OSError as error:
            self.failure = JournalFailure("write", self._path, error, self.durable_seq)
            raise self.failure from error
        self._size_bytes += len(data)
        self.appended_bytes += len(data)
        self.written_seq = through_seq

    def sync(self) -> None:
        fd = self._open_fd()
        written = self.written_seq
        self._guard("fsync", lambda: self.disk.sync(fd))
        self.durable_seq = written

    def write_now(self, records: list[Record]) -> None:
        """Append and fsync at once (the boot record, before serving)."""
        data = self.encode(records)
        self.append(data, self.next_seq - 1)
        self.sync()

    @property
    def full(self) -> bool:
        return self._size_bytes >= self.segment_bytes

    def rotate(self) -> Sealed | None:
        """Seal the open segment (fsync, close) and start the next one; None
        when it holds no record yet (nothing to seal)."""
        if self.written_seq < self._first_seq:
            return None
        self.sync()
        fd = self._open_fd()
        sealed = Sealed(self._first_seq, self.written_seq, self._path, self._size_bytes)
        self._fd = None
        self._guard("close", lambda: self.disk.close(fd))
        self._guard("create", lambda: self._create(sealed.last_seq + 1))
        return sealed

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            if self.failure is None:
                self._guard("close", lambda: self.disk.close(fd))
            else:
                with contextlib.suppress(OSError):  # closing does not sync
                    self.disk.close(fd)

    def _open_fd(self) -> int:
        if self.failure is not None:
            raise self.failure
        assert self._fd is not None, "journal not open"
        return self._fd

    def _guard(self, op: str, call: Callable[[], T]) -> T:
        if self.failure is not None:
            raise self.failure
        try:
            return call()
        except OSError as error:
            self.failure = JournalFailure(op, self._path, error, self.durable_seq)
            raise self.failure from error
