"""Journal file format, version 1 (pure: bytes in, bytes out).

A journal file starts with a header:
    magic b"LEASHJNL" | version u16 | reserved u16 | epoch u32 | first_seq u64 | crc32 u32
(big-endian, 28 bytes; the crc covers the 24 bytes before it). Then records:
    crc32 u32 | length u32 | seq u64 | payload (length bytes, msgpack Record)
The crc covers length, seq and payload. Sequence numbers are contiguous.
Any change to this layout bumps FORMAT_VERSION; readers for released
versions are kept.
"""

import struct
import zlib
from typing import NamedTuple

MAGIC = b"LEASHJNL"
FORMAT_VERSION = 1
_HEADER = struct.Struct(">8sHHIQ")
_HEADER_CRC = struct.Struct(">I")
HEADER_BYTES = _HEADER.size + _HEADER_CRC.size
_RECORD = struct.Struct(">IIQ")
RECORD_HEADER_BYTES = _RECORD.size
RECORD_MAX_BYTES = 64 * 1024 * 1024  # a payload over this is corruption, never allocated


class FileHeader(NamedTuple):
    version: int
    epoch: int
    first_seq: int


class BadHeader(Exception):
    pass


def encode_header(epoch: int, first_seq: int) -> bytes:
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, epoch, first_seq)
    return head + _HEADER_CRC.pack(zlib.crc32(head))


def decode_header(data: bytes) -> FileHeader:
    if len(data) < HEADER_BYTES:
        raise BadHeader(f"file header is {len(data)} bytes, expected {HEADER_BYTES}")
    magic, version, _, epoch, first_seq = _HEADER.unpack_from(data)
    (crc,) = _HEADER_CRC.unpack_from(data, _HEADER.size)
    if magic != MAGIC:
        raise BadHeader(f"not a journal file (magic {magic!r})")
    if crc != zlib.crc32(data[: _HEADER.size]):
        raise BadHeader("file header checksum mismatch")
    if version != FORMAT_VERSION:
        raise BadHeader(f"journal format version {version} is not supported")
    return FileHeader(version, epoch, first_seq)


def encode_record(seq: int, payload: bytes) -> bytes:
    tail = _RECORD.pack(0, len(payload), seq)[4:] + payload
    return zlib.crc32(tail).to_bytes(4, "big") + tail


class Scanned(NamedTuple):
    seq: int
    payload: memoryview
    end: int  # offset just past the record


class BadRecord(NamedTuple):
    offset: int
    reason: str


def scan_record(data: memoryview, offset: int) -> Scanned | BadRecord:
    """The record at ``offset``, or why there is no valid one there."""
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


def valid_record_after(data: memoryview, offset: int, seq: int) -> int | None:
    """The offset of a valid record with a sequence number above ``seq``
    anywhere after ``offset``, or None: what tells a torn tail (nothing
    valid after it) from damage in the middle of the log."""
    end = len(data)
    most_records = (end - offset) // RECORD_HEADER_BYTES + 1
    for candidate in range(offset + 1, end - RECORD_HEADER_BYTES + 1):
        _, length, found_seq = _RECORD.unpack_from(data, candidate)
        if not seq < found_seq <= seq + most_records:
            continue
        if candidate + RECORD_HEADER_BYTES + length > end:
            continue
        if isinstance(scan_record(data, candidate), Scanned):
            return candidate
    return None
