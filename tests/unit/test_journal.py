"""The journal on a real temporary directory: round trip, torn tails cut and
kept, corruption before the tail refused with file, offset and seq."""

import os

import pytest

from broker.core import records as R
from broker.journal import format as F
from broker.journal.disk import OsDisk
from broker.journal.log import Journal, JournalCorrupt, journal_files


def _read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def _write(directory: str, count: int) -> list[R.Record]:
    journal = Journal(directory, OsDisk())
    journal.recover(lambda record: None)
    journal.open_for_append(epoch=1)
    records: list[R.Record] = [R.QueuePaused(queue=f"q{i}") for i in range(count)]
    for record in records:
        journal.append(journal.encode([record]))
    journal.sync()
    journal.close()
    return records


def _recover(directory: str) -> tuple[list[R.Record], str]:
    seen: list[R.Record] = []
    recovered = Journal(directory, OsDisk()).recover(seen.append)
    assert recovered.records == len(seen)
    return seen, recovered.dropped


def _record_offsets(path: str) -> list[int]:
    data = memoryview(_read(path))
    offsets, offset = [], F.HEADER_BYTES
    while offset < len(data):
        offsets.append(offset)
        scanned = F.scan_record(data, offset)
        assert isinstance(scanned, F.Scanned)
        offset = scanned.end
    return [*offsets, len(data)]


def test_records_come_back_in_order_after_a_restart(tmp_path: os.PathLike[str]) -> None:
    records = _write(str(tmp_path), 20)
    seen, dropped = _recover(str(tmp_path))
    assert seen == records
    assert dropped == ""


def test_a_cut_anywhere_in_the_last_three_records_keeps_exactly_the_records_before_it(
    tmp_path: os.PathLike[str],
) -> None:
    base = str(tmp_path)
    for cut_record in range(3):
        directory = os.path.join(base, f"d{cut_record}")
        os.makedirs(directory)
        records = _write(directory, 10)
        path = journal_files(directory)[0]
        offsets = _record_offsets(path)
        start, end = offsets[-4 + cut_record], offsets[-3 + cut_record]
        original = _read(path)
        for cut in range(start + 1, end):
            with open(path, "wb") as file:
                file.write(original[:cut])
            seen, dropped = _recover(directory)
            kept = 10 - 3 + cut_record
            assert seen == records[:kept], (cut_record, cut)
            assert "torn tail" in dropped
            assert os.path.getsize(path) == start
            assert _read(path + ".broken") == original[start:cut]


def test_an_append_after_a_cut_survives_another_restart(tmp_path: os.PathLike[str]) -> None:
    directory = str(tmp_path)
    records = _write(directory, 5)
    path = journal_files(directory)[0]
    os.truncate(path, os.path.getsize(path) - 3)
    journal = Journal(directory, OsDisk())
    seen: list[R.Record] = []
    journal.recover(seen.append)
    journal.open_for_append(epoch=2)
    journal.append(journal.encode([R.QueueResumed(queue="after")]))
    journal.sync()
    journal.close()
    again, dropped = _recover(directory)
    assert again == [*records[:4], R.QueueResumed(queue="after")]
    assert dropped == ""


def test_zero_filled_sectors_in_the_last_record_are_a_torn_tail(
    tmp_path: os.PathLike[str],
) -> None:
    directory = str(tmp_path)
    records = _write(directory, 5)
    path = journal_files(directory)[0]
    start = _record_offsets(path)[-2]
    with open(path, "r+b") as file:
        file.seek(start)
        file.write(b"\0" * 512)
    seen, dropped = _recover(directory)
    assert seen == records[:4]
    assert "torn tail" in dropped


def test_a_flipped_bit_before_the_tail_refuses_to_start_and_names_the_place(
    tmp_path: os.PathLike[str],
) -> None:
    directory = str(tmp_path)
    _write(directory, 6)
    path = journal_files(directory)[0]
    offsets = _record_offsets(path)
    original = _read(path)
    for byte in range(offsets[0], offsets[-2]):  # every byte of every record but the last
        for bit in (0, 7):
            damaged = bytearray(original)
            damaged[byte] ^= 1 << bit
            with open(path, "wb") as file:
                file.write(damaged)
            with pytest.raises(JournalCorrupt) as caught:
                _recover(directory)
            message = str(caught.value)
            assert path in message and "offset" in message, message
    with open(path, "wb") as file:
        file.write(original)
    assert len(_recover(directory)[0]) == 6


def test_a_huge_length_field_is_refused_without_allocating(tmp_path: os.PathLike[str]) -> None:
    directory = str(tmp_path)
    _write(directory, 3)
    path = journal_files(directory)[0]
    first = _record_offsets(path)[0]
    with open(path, "r+b") as file:
        file.seek(first + 4)
        file.write((2**32 - 1).to_bytes(4, "big"))
    with pytest.raises(JournalCorrupt, match="over the limit"):
        _recover(directory)


def test_a_gap_in_sequence_numbers_refuses_to_start(tmp_path: os.PathLike[str]) -> None:
    directory = str(tmp_path)
    _write(directory, 3)
    path = journal_files(directory)[0]
    with open(path, "ab") as file:
        file.write(F.encode_record(99, b"\x90"))
        file.write(F.encode_record(100, b"\x90"))
    with pytest.raises(JournalCorrupt, match="seq 99, expected 4"):
        _recover(directory)


def test_a_file_that_is_not_a_journal_is_refused(tmp_path: os.PathLike[str]) -> None:
    directory = str(tmp_path)
    _write(directory, 2)
    _write_other = os.path.join(directory, "journal-00000000000000000000.log")
    with open(_write_other, "wb") as file:
        file.write(b"GARBAGE!" * 8)
    with pytest.raises(JournalCorrupt, match="not a journal file"):
        _recover(directory)
