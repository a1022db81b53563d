"""The append-only journal: recovery at start, then appends.

Files are ``journal-<first seq, 20 digits>.log`` in the data directory,
read in order; sequence numbers must be contiguous across them. Recovery
never guesses: a torn tail (a bad record in the last file with no valid
record after it: cut short, zero-filled or garbled) is copied to
``<file>.broken``, cut off, and
reported; any other bad record stops start-up with a ``JournalCorrupt``
naming the file, offset and sequence number. Segment rotation and
snapshots build on this layout.

Threading: ``append`` and ``sync`` are called from the one writer thread
only; recovery runs before that thread starts.
"""

import contextlib
import logging
import os
from collections.abc import Callable, Iterable
from typing import NamedTuple

from broker.core.records import Record, record_decoder, record_encoder
from broker.journal import format as F
from broker.journal.disk import Disk

log = logging.getLogger("leash.journal")
FILE_PREFIX, FILE_SUFFIX = "journal-", ".log"


class JournalCorrupt(Exception):
    """A bad record that is not a torn tail: refuse to start."""


class Recovered(NamedTuple):
    records: int
    last_seq: int
    dropped: str  # "" or a description of the torn tail that was cut


def file_name(first_seq: int) -> str:
    return f"{FILE_PREFIX}{first_seq:020d}{FILE_SUFFIX}"


def journal_files(directory: str) -> list[str]:
    names = sorted(
        n for n in os.listdir(directory) if n.startswith(FILE_PREFIX) and n.endswith(FILE_SUFFIX)
    )
    return [os.path.join(directory, n) for n in names]


class Journal:
    def __init__(self, directory: str, disk: Disk) -> None:
        self.directory = directory
        self.disk = disk
        self.next_seq = 1
        self._fd: int | None = None

    def recover(self, apply: Callable[[Record], None]) -> Recovered:
        """Feed every record on disk to ``apply``, in order."""
        files = journal_files(self.directory)
        count, dropped = 0, ""
        for index, path in enumerate(files):
            last_file = index == len(files) - 1
            n, cut = self._replay_file(path, last_file, apply)
            count += n
            dropped = dropped or cut
        return Recovered(count, self.next_seq - 1, dropped)

    def _replay_file(
        self, path: str, last_file: bool, apply: Callable[[Record], None]
    ) -> tuple[int, str]:
        data = memoryview(self.disk.read(path))
        try:
            header = F.decode_header(bytes(data[: F.HEADER_BYTES]))
        except F.BadHeader as exc:
            if last_file and _all_zero(data):
                return 0, self._cut(path, data, 0, "empty or zero-filled file")
            raise JournalCorrupt(f"{path}: offset 0: {exc}") from None
        if self.next_seq != 1 and header.first_seq != self.next_seq:
            raise JournalCorrupt(
                f"{path}: starts at seq {header.first_seq}, expected {self.next_seq} (a gap)"
            )
        self.next_seq = header.first_seq
        offset, count = F.HEADER_BYTES, 0
        while offset < len(data):
            scanned = F.scan_record(data, offset)
            if isinstance(scanned, F.BadRecord):
                torn = last_file and F.valid_record_after(data, offset, self.next_seq - 1) is None
                if not torn:
                    raise JournalCorrupt(
                        f"{path}: offset {offset}, seq {self.next_seq}: {scanned.reason}; "
                        f"start with --repair-truncate to cut the journal there"
                    )
                return count, self._cut(path, data, offset, scanned.reason)
            if scanned.seq != self.next_seq:
                raise JournalCorrupt(
                    f"{path}: offset {offset}: seq {scanned.seq}, expected {self.next_seq}"
                )
            apply(record_decoder.decode(scanned.payload))
            self.next_seq += 1
            count += 1
            offset = scanned.end
        return count, ""

    def _cut(self, path: str, data: memoryview, offset: int, reason: str) -> str:
        broken = f"{path}.broken"
        with open(broken, "wb") as file:
            file.write(data[offset:])
        self.disk.truncate(path, offset)
        message = (
            f"torn tail in {path} at offset {offset} ({reason}): "
            f"{len(data) - offset} bytes from seq {self.next_seq} cut, kept in {broken}"
        )
        log.warning(message)
        return message

    def open_for_append(self, epoch: int) -> None:
        files = journal_files(self.directory)
        if files and os.path.getsize(files[-1]) >= F.HEADER_BYTES:
            self._fd = self.disk.open_append(files[-1])
            return
        path = files[-1] if files else os.path.join(self.directory, file_name(self.next_seq))
        if files:
            self.disk.remove(path)
        self._fd = self.disk.open_append(path)
        self.disk.write(self._fd, F.encode_header(epoch, self.next_seq))
        self.disk.sync(self._fd)
        self.disk.sync_dir(self.directory)

    def disk_bytes(self) -> int:
        """What the journal's files take on disk now."""
        total = 0
        for path in journal_files(self.directory):
            with contextlib.suppress(FileNotFoundError):
                total += os.path.getsize(path)
        return total

    def segment_count(self) -> int:
        return len(journal_files(self.directory))

    def encode(self, records: Iterable[Record]) -> bytes:
        """Frame records with the next sequence numbers (event-loop thread)."""
        parts = []
        for record in records:
            parts.append(F.encode_record(self.next_seq, record_encoder.encode(record)))
            self.next_seq += 1
        return b"".join(parts)

    def append(self, data: bytes) -> None:
        assert self._fd is not None, "journal not open"
        self.disk.write(self._fd, data)

    def sync(self) -> None:
        assert self._fd is not None, "journal not open"
        self.disk.sync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            self.disk.close(self._fd)
            self._fd = None


def _all_zero(data: memoryview) -> bool:
    return not any(data)
