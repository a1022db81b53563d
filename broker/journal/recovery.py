"""Recovery: the newest valid snapshot, then the segments after it, replayed.

Never guesses. Classification of what it finds (a frame is the records of
one write, format.py; all of them are kept or none):

- A snapshot that fails its checks is reported and set aside; the next
  older valid one is used if the segments after it still exist, else
  start-up is refused.
- A torn tail — a bad frame in the LAST segment that a crash in the middle
  of a write leaves (cut short, or with a zero-filled sector:
  ``format.torn_frame``) with no valid frame after it, or a last segment
  whose header is zero-filled — is copied to ``<segment>.broken``, cut off
  and reported with the sequence number it starts at. A whole last frame
  that fails its checksum (a flipped bit) is damage, as anywhere else. An
  empty last segment (a crash between creating it and writing its header)
  is removed.
- Anything else — a bad frame before the tail, a bad frame in an earlier
  segment, a gap in sequence numbers, a bad header — refuses to start with
  ``JournalCorrupt`` naming the file, offset and seq, and the flag that
  cuts there. With ``repair`` (``--repair-truncate``) the valid prefix is
  kept exactly: the rest of that segment is copied to ``.broken`` and cut
  off, later segments are renamed ``.cut`` (never deleted), and the loss is
  reported. A damaged snapshot with nothing to fall back on leaves an empty
  prefix: with ``repair`` the broker starts empty, the loss reported. A
  repair reports the highest epoch the dropped files announce
  (``epoch_floor``), so the next epoch is above it and fencing tokens never
  repeat.
- A segment or snapshot of a format version this build cannot read (a
  newer one) is not damage: start-up is refused whatever the flags, and
  nothing is changed.

Records are applied through ``core.Replay`` (runs of pushes, leases and
acks without building the jobs they create and finish; the same state as
``core.apply`` one by one), flushed once the last segment is read.

``read_only`` (the snapshotter, ``leash journal verify``) changes nothing on
disk and treats every problem as corruption. ``through_seq`` stops at that
seq, which must end a segment.
"""

import contextlib
import os
import time
import zlib
from collections.abc import Callable
from typing import NamedTuple

import msgspec

from leash.broker import core
from leash.broker.core import image
from leash.broker.core.records import Booted, EpochRolled, Record, frame_decoder, record_decoder
from leash.broker.errors import BrokerError
from leash.broker.journal import format as F
from leash.broker.journal import layout, reading, snapshot
from leash.broker.journal.disk import Disk
from leash.broker.journal.layout import NumberedFile

REPAIR_FLAG = "--repair-truncate"


class JournalCorrupt(BrokerError):
    """Damage that is not a torn tail: refuse to start."""


class Segment(NamedTuple):
    first_seq: int
    last_seq: int  # first_seq - 1 if it holds no record
    path: str
    size_bytes: int
    version: int = F.FORMAT_VERSION  # of its format: appends go only to one of today's


class Recovered(NamedTuple):
    state: core.State
    records: int  # replayed from segments
    next_seq: int
    snapshot: NumberedFile | None
    snapshot_bytes: int
    segments: list[Segment]  # replayed, in order; appends go to the last one
    obsolete: list[str]  # covered by the snapshot: removed once the new epoch is durable
    set_aside: list[str]  # damaged snapshots: renamed .broken once the new epoch is durable
    notes: list[str]  # what was cut, removed or moved, one line each
    epoch_floor: int = 0  # the highest epoch in what a repair dropped: the next is above it
    snapshot_s: float = 0.0  # time spent loading the snapshot
    replay_s: float = 0.0  # time spent replaying records


def recover(
    directory: str,
    disk: Disk,
    config: core.CoreConfig,
    *,
    repair: bool = False,
    read_only: bool = False,
    through_seq: int | None = None,
    on_record: Callable[[int, Record], None] | None = None,
) -> Recovered:
    """Recover the state of ``directory`` (the module docstring says how),
    on a stack of its own (reading.py: every reader reads alike)."""
    return reading.on_own_stack(
        lambda: _recover(directory, disk, config, repair, read_only, through_seq, on_record)
    )


def _recover(
    directory: str,
    disk: Disk,
    config: core.CoreConfig,
    repair: bool,
    read_only: bool,
    through_seq: int | None,
    on_record: Callable[[int, Record], None] | None,
) -> Recovered:
    files = layout.scan(disk, directory)
    notes: list[str] = []
    if not read_only:
        for temp in files.temps:
            disk.remove(temp)
            notes.append(f"removed {temp} (an unfinished write; never read)")
    started = time.perf_counter()
    repair = repair and not read_only
    picked = _pick_snapshot(disk, files, config, through_seq, repair, notes)
    loaded = time.perf_counter()
    base_seq = picked.file.seq if picked.file else 0
    replay = _Replay(disk, picked.state, base_seq + 1, repair, read_only, notes, on_record)
    replay.epoch_floor = picked.epoch_floor
    later = [s for s in files.segments if s.seq > base_seq]
    if through_seq is not None:
        later = [s for s in later if s.seq <= through_seq]
    last_path = files.segments[-1].path if files.segments else ""
    for file in later:
        if replay.stopped:
            replay.move_aside(file)
            continue
        segment = replay.segment(file, last=file.path == last_path)
        if segment is not None:
            replay.segments.append(segment)
    replay.runs.finish()
    if through_seq is not None and replay.next_seq - 1 != through_seq:
        raise JournalCorrupt(f"the journal ends at seq {replay.next_seq - 1}, not {through_seq}")
    return Recovered(
        state=picked.state,
        records=replay.records,
        next_seq=replay.next_seq,
        snapshot=picked.file,
        snapshot_bytes=disk.size(picked.file.path) if picked.file else 0,
        segments=replay.segments,
        obsolete=[s.path for s in files.segments if s.seq <= base_seq]
        + [s.path for s in files.snapshots if s.seq < base_seq],
        set_aside=picked.damaged,
        notes=notes,
        epoch_floor=replay.epoch_floor,
        snapshot_s=loaded - started,
        replay_s=time.perf_counter() - loaded,
    )


class _Picked(NamedTuple):
    state: core.State
    file: NumberedFile | None
    damaged: list[str]
    epoch_floor: int  # the epochs damaged snapshots name


def _pick_snapshot(
    disk: Disk,
    files: layout.Layout,
    config: core.CoreConfig,
    through_seq: int | None,
    repair: bool,
    notes: list[str],
) -> _Picked:
    problems: list[str] = []
    damaged: list[str] = []
    epoch_floor = 0
    starts = {segment.seq for segment in files.segments}
    for file in reversed(files.snapshots):
        if through_seq is not None and file.seq > through_seq:
            continue
        try:
            if snapshot.read_header(disk, file.path).through_seq != file.seq:
                raise snapshot.SnapshotCorrupt(f"{file.path}: its header names another seq")
            state = image.load(snapshot.read(disk, file.path), config)
        except snapshot.SnapshotTooNew as unknown:  # not damage: never set aside
            raise _too_new(str(unknown)) from None
        except image.ImageTooNew as unknown:
            raise _too_new(f"{file.path}: {unknown}") from None
        except (snapshot.SnapshotCorrupt, image.ImageError) as error:
            problems.append(f"damaged snapshot {error}")
            damaged.append(file.path)
            with contextlib.suppress(snapshot.SnapshotCorrupt):
                epoch_floor = max(epoch_floor, snapshot.read_header(disk, file.path).epoch)
            continue
        if file.seq + 1 not in starts and file.seq != through_seq:
            missing = f"no segment starts at seq {file.seq + 1}, after snapshot {file.path}"
            if not repair:
                raise JournalCorrupt(
                    f"{missing}: records after it may be lost; "
                    f"start with {REPAIR_FLAG} to keep the snapshot and go on from there"
                )
            notes.append(f"{missing}: any record after seq {file.seq} is lost ({REPAIR_FLAG})")
        notes.extend(f"{problem}; using {file.path} instead" for problem in problems)
        return _Picked(state, file, damaged, epoch_floor)
    first = files.segments[0] if files.segments else None
    if first is not None and first.seq != 1:
        why = "; ".join(problems) or "no snapshot"
        if not repair:
            raise JournalCorrupt(
                f"{why}: the journal starts at seq {first.seq} ({first.path}) and nothing "
                f"valid covers the records before it; restore the data directory from a "
                f"backup, or start with {REPAIR_FLAG} to start from an empty state"
            )
        notes.append(f"{REPAIR_FLAG}: {why}: nothing valid is left; starting from an empty state")
    else:
        notes.extend(f"{problem}; replaying the journal from seq 1" for problem in problems)
    return _Picked(core.State(config), None, damaged, epoch_floor)


class _Replay:
    def __init__(
        self,
        disk: Disk,
        state: core.State,
        next_seq: int,
        repair: bool,
        read_only: bool,
        notes: list[str],
        on_record: Callable[[int, Record], None] | None,
    ) -> None:
        self.disk = disk
        self.runs = core.Replay(state)
        self.next_seq = next_seq
        self.repair = repair and not read_only
        self.read_only = read_only
        self.notes = notes
        self.on_record = on_record
        self.records = 0
        self.segments: list[Segment] = []
        self.stopped = False  # a repair cut the journal: later segments are moved aside
        self.epoch_floor = 0
        self.version = F.FORMAT_VERSION  # of the segment being read

    def segment(self, file: NumberedFile, *, last: bool) -> Segment | None:
        raw = self.disk.read(file.path)
        data = memoryview(raw)
        if not data and last and not self.read_only:
            self.disk.remove(file.path)
            self.notes.append(f"removed {file.path}: empty (a crash as it was created)")
            return None
        try:
            header = F.decode_header(bytes(data[: F.HEADER_BYTES]))
        except F.UnknownVersion as unknown:  # not damage: no repair may cut it
            raise _too_new(f"{file.path}: {unknown}") from None
        except F.BadHeader as bad:
            if last and F.is_zero(data):
                return self._torn(file, data, 0, "zero-filled header")
            return self._bad(file, data, 0, str(bad))
        if header.first_seq != file.seq:
            return self._bad(file, data, 0, f"its header says first seq {header.first_seq}")
        if header.first_seq != self.next_seq:
            reason = f"starts at seq {header.first_seq}, expected {self.next_seq} (a gap)"
            return self._bad(file, data, 0, reason)
        self.version = header.version
        return self._records(file, raw, last)

    def _records(self, file: NumberedFile, raw: bytes, last: bool) -> Segment | None:
        # The hot loop of start-up: the framing checks of F.scan_record,
        # inlined (F.scan_record says why when one fails). Frames are sliced
        # as bytes, cheaper than views here, and so what a decoded record
        # keeps (a job's args) holds its own frame, never the whole file.
        data = memoryview(raw)
        apply, on_record = self.runs.apply, self.on_record
        decode, unpack, crc32 = frame_reader(self.version), F.RECORD_HEADER.unpack_from, zlib.crc32
        limit, head_bytes, end = F.RECORD_MAX_BYTES, F.RECORD_HEADER_BYTES, len(raw)
        offset, start = F.HEADER_BYTES, self.next_seq
        seq, problem, torn = start, "", False
        while offset < end:
            if end - offset >= head_bytes:
                crc, length, found = unpack(raw, offset)
                stop = offset + head_bytes + length
                framed = length <= limit and stop <= end and crc32(raw[offset + 4 : stop]) == crc
            else:
                framed = False
            if not framed:
                scanned = F.scan_record(data, offset)
                assert isinstance(scanned, F.BadRecord), scanned
                problem = scanned.reason
                torn = last and F.torn_frame(data, offset)
                torn = torn and F.valid_record_after(data, offset, seq - 1) is None
                break
            if found != seq:
                problem = f"seq {found}, expected {seq}"
                break
            try:
                records = decode(raw[offset + head_bytes : stop])
            except msgspec.DecodeError as error:  # ValidationError is a DecodeError
                problem = f"frame does not decode: {error}"
                break
            except RecursionError:
                problem = f"frame does not decode: {reading.UNREADABLE}"
                break
            if not records:
                problem = "frame holds no record"
                break
            for record in records:
                if on_record is not None:
                    on_record(seq, record)
                try:
                    apply(record)
                except AssertionError as error:
                    raise JournalCorrupt(
                        f"{file.path}: offset {offset}, seq {seq}: the record does not apply "
                        f"to the state before it ({error!r}): a bug, not damage; report it"
                    ) from None
                seq += 1
            offset = stop
        self.records += seq - start
        self.next_seq = seq
        if torn:
            return self._torn(file, data, offset, problem)
        if problem:
            return self._bad(file, data, offset, problem)
        return Segment(file.seq, seq - 1, file.path, end, self.version)

    def _where(self, file: NumberedFile, offset: int, reason: str) -> str:
        return f"{file.path}: offset {offset}, seq {self.next_seq}: {reason}"

    def _torn(
        self, file: NumberedFile, data: memoryview, offset: int, reason: str
    ) -> Segment | None:
        if self.read_only:
            raise JournalCorrupt(self._where(file, offset, f"{reason} (a torn tail)"))
        broken = self._keep_broken(file, data, offset)
        self.notes.append(
            f"torn tail in {file.path} at offset {offset} ({reason}): "
            f"{len(data) - offset} bytes from seq {self.next_seq} on cut, kept in {broken}"
        )
        return self._cut_at(file, offset)

    def _bad(
        self, file: NumberedFile, data: memoryview, offset: int, reason: str
    ) -> Segment | None:
        if not self.repair:
            raise JournalCorrupt(
                f"{self._where(file, offset, reason)}; start with {REPAIR_FLAG} to cut the "
                f"journal there (seq {self.next_seq} and everything after it would be dropped)"
            )
        broken = self._keep_broken(file, data, offset)
        self._floor_from(data, offset)
        self.stopped = True
        self.notes.append(
            f"{REPAIR_FLAG}: {self._where(file, offset, reason)}: cut there; seq "
            f"{self.next_seq} onwards dropped: {len(data) - offset} bytes kept in {broken}"
        )
        return self._cut_at(file, offset)

    def _keep_broken(self, file: NumberedFile, data: memoryview, offset: int) -> str:
        broken, number = file.path + layout.BROKEN_SUFFIX, 1
        existing = set(self.disk.list_dir(os.path.dirname(file.path) or "."))
        while os.path.basename(broken) in existing:
            broken, number = f"{file.path}.{number}{layout.BROKEN_SUFFIX}", number + 1
        fd = self.disk.create(broken)
        try:
            self.disk.write(fd, bytes(data[offset:]))
            self.disk.sync(fd)
        finally:
            self.disk.close(fd)
        return broken

    def _cut_at(self, file: NumberedFile, offset: int) -> Segment | None:
        if offset < F.HEADER_BYTES:
            self.disk.remove(file.path)
            return None
        self.disk.truncate(file.path, offset)
        return Segment(file.seq, self.next_seq - 1, file.path, offset, self.version)

    def _floor_from(self, data: memoryview, offset: int) -> None:
        """Raise the epoch floor to the epochs that the data a repair drops
        (from ``offset`` on) announces, in its header and its boot records."""
        if offset >= F.HEADER_BYTES:
            top = _epochs_after(data, offset, self.next_seq, self.version)
        else:
            try:
                header = F.decode_header(bytes(data[: F.HEADER_BYTES]))
            except F.BadHeader:
                return
            top = _epochs_after(data, F.HEADER_BYTES, header.first_seq, header.version)
            top = max(header.epoch, top)
        self.epoch_floor = max(self.epoch_floor, top)

    def move_aside(self, file: NumberedFile) -> None:
        self._floor_from(memoryview(self.disk.read(file.path)), 0)
        moved = file.path + layout.CUT_SUFFIX
        self.disk.rename(file.path, moved)
        self.notes.append(f"{REPAIR_FLAG}: moved {file.path} (from seq {file.seq}) to {moved}")


def _too_new(what: str) -> JournalCorrupt:
    """A file of a format this build cannot read: written by a later Leash,
    not damage, so start-up is refused whatever the flags, nothing changed."""
    return JournalCorrupt(
        f"{what}: it was written by a newer version of Leash; start that version "
        f"(nothing was changed)"
    )


def _epochs_after(data: memoryview, offset: int, seq: int, version: int) -> int:
    """The highest epoch a boot record from ``offset`` on announces, where
    the next record would have ``seq`` (best effort: valid frames only)."""
    top, decode = 0, frame_reader(version)
    while offset < len(data):
        scanned = F.scan_record(data, offset)
        if not isinstance(scanned, F.Scanned):
            found = F.valid_record_after(data, offset, seq - 1)
            if found is None:
                break
            offset = found
            continue
        with contextlib.suppress(msgspec.DecodeError, RecursionError):
            for record in decode(bytes(scanned.payload)):
                if isinstance(record, Booted | EpochRolled):
                    top = max(top, record.epoch)
        seq, offset = scanned.seq + 1, scanned.end
    return top


def frame_reader(version: int) -> Callable[[bytes], list[Record]]:
    """How a frame's payload decodes to its records in a journal of this
    format version (format.py): an array of records, or one record (v1)."""
    if version == 1:
        decode_one = record_decoder.decode
        return lambda payload: [decode_one(payload)]
    return frame_decoder.decode
