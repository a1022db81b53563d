"""Journal file format, version 3 (pure: bytes in, bytes out).

A journal file (a segment) starts with a header:
    magic b"LEASHJNL" | version u16 | reserved u16 | epoch u32 | first_seq u64 | crc32 u32
(big-endian, 28 bytes; the crc covers the 24 bytes before it). Then frames:
    crc32 u32 | length u32 | seq u64 | payload (length bytes)
The crc covers length, seq and payload. In version 2 the payload is a
msgpack array of one or more records (``Record``), the records of one write
(a loop turn's, split once a frame passes ``FRAME_TARGET_BYTES``), and
``seq`` is the first one's: the next frame's seq is this one's plus its
record count. In version 1 the payload is one record. Version 3 frames
records as version 2 does; what changed is what a record may say: a lost
lease is ready again at once, and a job may die before ``max_attempts``
(records.Failure), which an older broker would take for a broken state;
and a push may keep what another protocol's front end keeps on its jobs
(records.KeptJobsPushed), which an older broker cannot decode. So an older
broker refuses a version 3 segment as too new. A release record may say
when its job runs again (records.LeaseReleased.run_at_ms, a snooze): a
field added last with a default, so journals without it read as before,
and a version 3 broker built before it makes such a job ready at once. Sequence numbers are
contiguous, within a file and across files. A frame is whole or not at all:
a torn or damaged frame loses all its records, and a cut keeps whole frames.

Snapshot files (snapshot.py) use the same header layout with their own
magic and version, and the version 1 framing (one payload a frame) for
their chunks. Any change to this layout bumps FORMAT_VERSION; readers for
released versions are kept (golden files in tests/fixtures pin them).
"""

import struct
import zlib
from typing import NamedTuple

from leash.broker.errors import BrokerError

MAGIC = b"LEASHJNL"
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)  # the journal versions recovery reads
_HEADER = struct.Struct(">8sHHIQ")
_HEADER_CRC = struct.Struct(">I")
HEADER_BYTES = _HEADER.size + _HEADER_CRC.size
RECORD_HEADER = _RECORD = struct.Struct(">IIQ")  # crc, length, seq
RECORD_HEADER_BYTES = _RECORD.size
FRAME_COUNT = struct.Struct(">BI")  # a v2/v3 payload's start: msgpack array32, record count
ARRAY32 = 0xDD  # its first byte (whatever the count, so the prefix has one size)
FRAME_PREFIX_BYTES = RECORD_HEADER_BYTES + FRAME_COUNT.size
# A payload over this is corruption. Far above any the broker writes: a frame
# holds one write's records (a request's are bounded by its frame, at most
# 16 MiB) and a snapshot chunk closes past 1 MiB (but for one large item),
# except for records of unbounded size such as the death of a process that
# held a million leases.
RECORD_MAX_BYTES = 1 << 30
FRAME_TARGET_BYTES = 64 * 1024  # a frame takes no more records once its payload passes this


class FileHeader(NamedTuple):
    version: int
    epoch: int
    first_seq: int


class BadHeader(BrokerError):
    pass


class UnknownVersion(BadHeader):
    """A whole header of a format version this build cannot read (a newer one)."""


def encode_header(
    epoch: int, first_seq: int, magic: bytes = MAGIC, version: int = FORMAT_VERSION
) -> bytes:
    head = _HEADER.pack(magic, version, 0, epoch, first_seq)
    return head + _HEADER_CRC.pack(zlib.crc32(head))


def decode_header(
    data: bytes, magic: bytes = MAGIC, versions: tuple[int, ...] = READABLE_VERSIONS
) -> FileHeader:
    kind = "journal" if magic == MAGIC else "snapshot"
    if len(data) < HEADER_BYTES:
        raise BadHeader(f"file header is {len(data)} bytes, expected {HEADER_BYTES}")
    found, version, _, epoch, first_seq = _HEADER.unpack_from(data)
    (crc,) = _HEADER_CRC.unpack_from(data, _HEADER.size)
    if found != magic:
        raise BadHeader(f"not a {kind} file (magic {found!r})")
    if crc != zlib.crc32(data[: _HEADER.size]):
        raise BadHeader("file header checksum mismatch")
    if version not in versions:
        raise UnknownVersion(f"{kind} format version {version} is not supported")
    return FileHeader(version, epoch, first_seq)


def encode_record(seq: int, payload: bytes) -> bytes:
    tail = _RECORD.pack(0, len(payload), seq)[4:] + payload
    return zlib.crc32(tail).to_bytes(4, "big") + tail


def encode_frame(seq: int, records: list[bytes]) -> bytes:
    """A version 2 (or 3) frame of encoded records, the first numbered ``seq``:
    their msgpack array (array32 header, whatever the count) as one payload."""
    return encode_record(seq, FRAME_COUNT.pack(ARRAY32, len(records)) + b"".join(records))


class Scanned(NamedTuple):
    seq: int
    payload: memoryview
    end: int  # offset just past the record


class BadRecord(NamedTuple):
    offset: int
    reason: str


def decode_frame_header(head: bytes) -> tuple[int, int, int]:
    """(crc, length, seq) of a record's first RECORD_HEADER_BYTES bytes."""
    crc, length, seq = _RECORD.unpack(head)
    return crc, length, seq


def frame_crc(head: bytes, payload: bytes) -> int:
    """The checksum a frame with this header and payload must carry."""
    return zlib.crc32(payload, zlib.crc32(head[4:RECORD_HEADER_BYTES]))


def scan_record(data: memoryview, offset: int) -> Scanned | BadRecord:
    """The record at ``offset``, or why there is no valid one there. A
    length over the limit is refused before anything is sliced or read."""
    available = len(data) - offset
    if available < RECORD_HEADER_BYTES:
        return BadRecord(offset, "truncated record header")
    crc, length, seq = _RECORD.unpack_from(data, offset)
    if length > RECORD_MAX_BYTES:
        return BadRecord(offset, f"record length {length} is over the limit")
    end = offset + RECORD_HEADER_BYTES + length
    if end > len(data):
        return BadRecord(offset, f"record of {length} bytes runs past the end")
    if zlib.crc32(data[offset + 4 : end]) != crc:
        return BadRecord(offset, "record checksum mismatch")
    return Scanned(seq, data[offset + RECORD_HEADER_BYTES : end], end)


SECTOR_BYTES = 512  # what a disk writes whole: an unfinished write leaves whole sectors unwritten
_ZERO_SECTOR = bytes(SECTOR_BYTES)


def torn_frame(data: memoryview, offset: int) -> bool:
    """Whether the bad frame at ``offset`` is one a crash leaves in the
    middle of a write — cut short (its header, or its bytes before its
    length), or with a sector that was never written (zero-filled) — and
    not damage to a whole frame: a flipped bit anywhere in a frame whose
    bytes are all there, length field included, is damage."""
    available = len(data) - offset
    if available < RECORD_HEADER_BYTES:
        return True
    crc, length, seq = decode_frame_header(bytes(data[offset : offset + RECORD_HEADER_BYTES]))
    if length > RECORD_MAX_BYTES:
        return False
    end = offset + RECORD_HEADER_BYTES + length
    if end > len(data):  # cut short, unless it is whole and only its length changed
        whole = _RECORD.pack(0, available - RECORD_HEADER_BYTES, seq)[4:]
        return zlib.crc32(data[offset + RECORD_HEADER_BYTES :], zlib.crc32(whole)) != crc
    start = offset
    while start < end:  # the frame by the sectors it lies in
        stop = min((start // SECTOR_BYTES + 1) * SECTOR_BYTES, end)
        if bytes(data[start:stop]) == _ZERO_SECTOR[: stop - start]:
            return True
        start = stop
    return False


def valid_record_after(data: memoryview, offset: int, seq: int) -> int | None:
    """The offset of a valid record with a sequence number above ``seq``
    anywhere after ``offset``, or None: what tells a torn tail (nothing
    valid after it) from damage in the middle of the log."""
    end = len(data)
    if is_zero(data[offset:]):
        return None
    most_records = end - offset  # a frame's records take a byte each at the least
    for candidate in range(offset + 1, end - RECORD_HEADER_BYTES + 1):
        _, length, found_seq = _RECORD.unpack_from(data, candidate)
        if not seq < found_seq <= seq + most_records:
            continue
        if candidate + RECORD_HEADER_BYTES + length > end:
            continue
        if isinstance(scan_record(data, candidate), Scanned):
            return candidate
    return None


def is_zero(data: memoryview) -> bool:
    """Whether every byte is zero (a zero-filled sector, a hole)."""
    return not bytes(data).strip(b"\0")
