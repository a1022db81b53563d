"""Recovery of the journal on a real directory: what is a torn tail (cut,
kept in .broken, start-up goes on), what is damage (start-up refused,
naming file, offset and seq), and what ``--repair-truncate`` keeps."""

import os
import shutil
import tracemalloc

import msgspec
import pytest

from leash.broker.core import image
from leash.broker.core import records as R
from leash.broker.core.records import record_encoder
from leash.broker.journal import format as F
from leash.broker.journal import snapshot
from leash.broker.journal.disk import OsDisk
from leash.broker.journal.log import Journal
from leash.broker.journal.recovery import REPAIR_FLAG, JournalCorrupt
from leash.broker.server.main import open_epoch
from tests.journal_kit import (
    append,
    names,
    paused,
    read_back,
    read_file,
    record_offsets,
    segments,
    write_file,
)
from tests.unit.test_golden_files import JOURNAL_V2


def _one_segment(directory: str, count: int, name_chars: int = 0) -> tuple[list[R.Record], str]:
    records = paused(count, name_chars=name_chars)
    append(directory, records)
    (path,) = segments(directory)
    return records, path


def test_records_come_back_in_order_after_a_restart(tmp_path: os.PathLike[str]) -> None:
    directory = str(tmp_path)
    records, _ = _one_segment(directory, 20)
    seen, recovered = read_back(directory)
    assert seen == records
    assert recovered.notes == [] and recovered.next_seq == 21


def test_sequence_numbers_run_on_across_segments(tmp_path: os.PathLike[str]) -> None:
    directory = str(tmp_path)
    records = paused(40, name_chars=50)
    append(directory, records, segment_bytes=300)
    files = segments(directory)
    assert len(files) > 5
    seen, recovered = read_back(directory)
    assert seen == records
    firsts = [segment.first_seq for segment in recovered.segments]
    lasts = [segment.last_seq for segment in recovered.segments]
    assert firsts == [1] + [last + 1 for last in lasts[:-1]]


def test_a_cut_anywhere_in_the_last_three_records_keeps_exactly_the_records_before_it(
    tmp_path: os.PathLike[str],
) -> None:
    base = str(tmp_path)
    for cut_record in range(3):
        directory = os.path.join(base, f"d{cut_record}")
        os.makedirs(directory)
        records, path = _one_segment(directory, 10)
        original = read_file(path)
        offsets = record_offsets(original)
        start, end = offsets[-4 + cut_record], offsets[-3 + cut_record]
        kept = 10 - 3 + cut_record
        for cut in range(start + 1, end):
            write_file(path, original[:cut])
            for broken in [n for n in names(directory) if n.endswith(".broken")]:
                os.remove(os.path.join(directory, broken))
            seen, recovered = read_back(directory)
            assert seen == records[:kept], (cut_record, cut)
            (note,) = recovered.notes
            assert "torn tail" in note and f"from seq {kept + 1} on cut" in note
            assert os.path.getsize(path) == start
            assert read_file(path + ".broken") == original[start:cut]
            # a later append survives another restart
            append(directory, [R.QueueResumed(queue="after")], epoch=2)
            again, recovered = read_back(directory)
            assert again == [*records[:kept], R.QueueResumed(queue="after")]
            assert recovered.notes == []


@pytest.mark.parametrize("where", ["one sector inside", "sector to the end", "sector past the end"])
def test_zero_filled_sectors_in_the_last_record_are_a_torn_tail(
    tmp_path: os.PathLike[str], where: str
) -> None:
    directory = str(tmp_path)
    records, path = _one_segment(directory, 5, name_chars=1600)  # records of ~1.6 kB
    data = bytearray(read_file(path))
    start = record_offsets(bytes(data))[-2]
    sector = (start // 512 + 1) * 512  # the first whole sector of the last record
    if where == "one sector inside":
        data[sector : sector + 512] = bytes(512)
        kept = 4
    elif where == "sector to the end":
        data[sector:] = bytes(len(data) - sector)
        kept = 4
    else:  # the file grew by a sector that was never written
        data += bytes(512)
        kept = 5
    write_file(path, bytes(data))
    seen, recovered = read_back(directory)
    assert seen == records[:kept]
    (note,) = recovered.notes
    assert "torn tail" in note


def test_every_single_bit_flip_in_the_whole_last_frame_is_damage_not_a_torn_tail(
    tmp_path: os.PathLike[str],
) -> None:
    """A torn tail is a last frame cut short or zero-filled (what a crash in
    the middle of a write leaves); a flipped bit in one whose bytes are all
    there may be in an acknowledged record, so it refuses to start as
    damage anywhere else does, and only --repair-truncate cuts it."""
    directory = str(tmp_path)
    records, path = _one_segment(directory, 4)
    original = read_file(path)
    last = record_offsets(original)[-2]
    for byte in range(last, len(original)):
        for bit in range(8):
            damaged = bytearray(original)
            damaged[byte] ^= 1 << bit
            write_file(path, bytes(damaged))
            with pytest.raises(JournalCorrupt, match=f"offset {last}, seq 4: "):
                read_back(directory)
            assert names(directory) == [os.path.basename(path)], "a refusal changes nothing"
    seen, recovered = read_back(directory, repair=True)
    assert seen == records[:3] and "seq 4 onwards dropped" in recovered.notes[0]


def test_every_single_bit_flip_before_the_tail_refuses_to_start_and_names_the_place(
    tmp_path: os.PathLike[str],
) -> None:
    directory = str(tmp_path)
    records, path = _one_segment(directory, 6)
    original = read_file(path)
    offsets = record_offsets(original)
    for byte in range(0, offsets[-2]):  # the header and every record but the last
        for bit in range(8):
            damaged = bytearray(original)
            damaged[byte] ^= 1 << bit
            write_file(path, bytes(damaged))
            with pytest.raises(JournalCorrupt) as caught:
                read_back(directory)
            message = str(caught.value)
            assert path in message and "offset" in message and REPAIR_FLAG in message, message
            assert names(directory) == [os.path.basename(path)], "a refusal changes nothing"
    write_file(path, original)
    assert read_back(directory)[0] == records


def test_repair_truncate_keeps_exactly_the_prefix_before_a_flipped_bit(
    tmp_path: os.PathLike[str],
) -> None:
    base = str(tmp_path)
    template = os.path.join(base, "template")
    os.makedirs(template)
    records, path = _one_segment(template, 6)
    original = read_file(path)
    offsets = record_offsets(original)
    for byte in range(0, offsets[-2]):
        directory = os.path.join(base, f"b{byte}")
        os.makedirs(directory)
        target = os.path.join(directory, os.path.basename(path))
        damaged = bytearray(original)
        damaged[byte] ^= 0x10
        write_file(target, bytes(damaged))
        seen, recovered = read_back(directory, repair=True)
        bad_record = sum(1 for offset in offsets[:-1] if offset <= byte) - 1  # -1: the header
        kept = max(bad_record, 0)
        assert seen == records[:kept], byte
        (note,) = recovered.notes
        assert REPAIR_FLAG in note and f"seq {kept + 1} onwards dropped" in note, note
        cut_at = offsets[kept] if byte >= F.HEADER_BYTES else 0
        assert read_file(target + ".broken") == bytes(damaged[cut_at:])
        again, recovered = read_back(directory)  # the next start needs no flag
        assert again == records[:kept] and recovered.notes == []


@pytest.mark.parametrize(
    "length", [0, F.RECORD_MAX_BYTES + 1, 2**32 - 1, 10_000], ids=["0", "limit+1", "2^32-1", "eof"]
)
@pytest.mark.parametrize("position", ["last", "middle"])
def test_a_bad_length_field_allocates_nothing_and_is_classified_like_any_bad_record(
    tmp_path: os.PathLike[str], length: int, position: str
) -> None:
    directory = str(tmp_path)
    _, path = _one_segment(directory, 5)
    data = bytearray(read_file(path))
    offsets = record_offsets(bytes(data))
    target = offsets[-2] if position == "last" else offsets[1]
    data[target + 4 : target + 8] = length.to_bytes(4, "big")
    write_file(path, bytes(data))
    tracemalloc.start()
    try:
        # The last frame too: a frame cut short keeps the length it was
        # written with, so a length that does not fit its bytes is damage.
        seq = 5 if position == "last" else 2
        with pytest.raises(JournalCorrupt, match=f"offset {target}, seq {seq}"):
            read_back(directory)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_bytes < 1 << 20


def test_a_gap_in_sequence_numbers_refuses_to_start(tmp_path: os.PathLike[str]) -> None:
    directory = str(tmp_path)
    _, path = _one_segment(directory, 3)
    with open(path, "ab") as file:
        file.write(F.encode_record(99, b"\x90"))
        file.write(F.encode_record(100, b"\x90"))
    with pytest.raises(JournalCorrupt, match="seq 99, expected 4"):
        read_back(directory)


def test_a_file_that_is_not_a_journal_is_refused(tmp_path: os.PathLike[str]) -> None:
    directory = str(tmp_path)
    _one_segment(directory, 2)
    write_file(os.path.join(directory, "journal-00000000000000000003.log"), b"GARBAGE!" * 8)
    with pytest.raises(JournalCorrupt, match="offset 0, seq 3: not a journal file"):
        read_back(directory)
    write_file(os.path.join(directory, "journal-00000000000000000000.log"), b"")
    with pytest.raises(JournalCorrupt, match=r"starts at seq 0 .*journal-0+\.log"):
        read_back(directory)


def test_a_bad_record_in_an_earlier_segment_is_never_a_torn_tail(
    tmp_path: os.PathLike[str],
) -> None:
    directory = str(tmp_path)
    records = paused(30, name_chars=40)
    append(directory, records, segment_bytes=200)
    files = segments(directory)
    first = read_file(files[0])
    write_file(files[0], first[:-5])  # the end of a sealed segment, cut short
    with pytest.raises(JournalCorrupt) as caught:
        read_back(directory)
    assert files[0] in str(caught.value) and REPAIR_FLAG in str(caught.value)
    kept = len(record_offsets(first)) - 2
    seen, recovered = read_back(directory, repair=True)
    assert seen == records[:kept]
    moved = [n for n in names(directory) if n.endswith(".cut")]
    assert len(moved) == len(files) - 1, "later segments are moved aside, not deleted"
    assert any("onwards dropped" in note for note in recovered.notes)
    assert read_back(directory)[0] == records[:kept]


def test_a_segment_that_does_not_start_where_the_last_one_ended_is_a_gap(
    tmp_path: os.PathLike[str],
) -> None:
    directory = str(tmp_path)
    append(directory, paused(30, name_chars=40), segment_bytes=200)
    files = segments(directory)
    os.remove(files[2])
    with pytest.raises(JournalCorrupt, match="a gap"):
        read_back(directory)


def test_an_empty_last_segment_is_removed_without_a_broken_file(
    tmp_path: os.PathLike[str],
) -> None:
    directory = str(tmp_path)
    records, _ = _one_segment(directory, 3)
    write_file(os.path.join(directory, "journal-00000000000000000004.log"), b"")
    seen, recovered = read_back(directory)
    assert seen == records
    assert not [n for n in names(directory) if n.endswith(".broken")]
    assert "empty" in recovered.notes[0]


def test_a_zero_filled_last_segment_header_is_a_torn_tail(tmp_path: os.PathLike[str]) -> None:
    directory = str(tmp_path)
    records, _ = _one_segment(directory, 3)
    extra = os.path.join(directory, "journal-00000000000000000004.log")
    write_file(extra, bytes(700))
    seen, _recovered = read_back(directory)
    assert seen == records and not os.path.exists(extra)
    assert read_file(extra + ".broken") == bytes(700)


def test_a_temp_file_is_removed_at_start_and_never_read(tmp_path: os.PathLike[str]) -> None:
    directory = str(tmp_path)
    records, _ = _one_segment(directory, 3)
    temp = os.path.join(directory, "snapshot-00000000000000000003.snap.tmp")
    write_file(temp, b"half a snapshot")
    seen, recovered = read_back(directory)
    assert seen == records and not os.path.exists(temp)
    assert "never read" in recovered.notes[0]


def test_a_repair_that_drops_later_boots_opens_an_epoch_above_them(
    tmp_path: os.PathLike[str],
) -> None:
    directory = str(tmp_path)
    boots = [R.Booted(epoch, 1_000 * epoch) for epoch in range(1, 8)]
    records = [record for boot in boots for record in [boot, *paused(5, start=boot.epoch * 10)]]
    append(directory, records, segment_bytes=150)
    files = segments(directory)
    assert len(files) > 3
    first = read_file(files[0])
    write_file(files[0], first[:-3])  # the first sealed segment cut short: a repair drops the rest
    _, recovered = read_back(directory, repair=True)
    assert recovered.state.epoch < 7 and recovered.epoch_floor == 7
    journal = Journal(directory, OsDisk())
    open_epoch(recovered, journal)
    journal.close()
    assert recovered.state.epoch == 8, "no epoch (so no fencing token) is used twice"


# --- frames of several records (format version 2) -----------------------------


def _framed_segment(directory: str, count: int, per_write: int) -> tuple[list[R.Record], str]:
    records = paused(count)
    append(directory, records, per_write=per_write)
    (path,) = segments(directory)
    return records, path


def _frames_template(base: str) -> tuple[list[R.Record], str, bytes, list[int]]:
    template = os.path.join(base, "template")
    os.makedirs(template)
    records, path = _framed_segment(template, 10, per_write=4)
    original = read_file(path)
    offsets = record_offsets(original)
    assert len(offsets) == 4, "frames of 4, 4 and 2 records, then the end"
    return records, os.path.basename(path), original, offsets


def _copy(base: os.PathLike[str], label: str, name: str, data: bytes) -> str:
    """A data directory of its own holding one segment ``name`` of ``data``."""
    directory = os.path.join(base, label)
    os.makedirs(directory)
    write_file(os.path.join(directory, name), data)
    return directory


def test_a_torn_last_frame_loses_all_its_records_and_keeps_every_frame_before_it(
    tmp_path: os.PathLike[str],
) -> None:
    records, name, original, offsets = _frames_template(str(tmp_path))
    start, end = offsets[2], offsets[3]
    for cut in range(start + 1, end):
        directory = _copy(tmp_path, f"cut{cut}", name, original[:cut])
        seen, recovered = read_back(directory)
        assert seen == records[:8], cut
        (note,) = recovered.notes
        assert "torn tail" in note and "from seq 9 on cut" in note
        assert os.path.getsize(os.path.join(directory, name)) == start


def test_a_damaged_frame_before_the_tail_refuses_to_start_at_its_first_seq(
    tmp_path: os.PathLike[str],
) -> None:
    records, name, original, offsets = _frames_template(str(tmp_path))
    start, end = offsets[1], offsets[2]
    for cut in range(start + 1, end, 5):  # the middle frame cut short, the last one whole
        directory = _copy(tmp_path, f"cut{cut}", name, original[:cut] + original[end:])
        with pytest.raises(JournalCorrupt, match=f"offset {start}, seq 5: "):
            read_back(directory)
        seen, recovered = read_back(directory, repair=True)
        assert seen == records[:4], cut
        assert "seq 5 onwards dropped" in recovered.notes[0]


def _append_frame(path: str, frame: bytes) -> int:
    """Append a frame to a segment: the offset it starts at."""
    size = os.path.getsize(path)
    with open(path, "ab") as file:
        file.write(frame)
    return size


def test_a_frame_that_holds_no_record_is_damage_not_a_torn_tail(
    tmp_path: os.PathLike[str],
) -> None:
    directory = str(tmp_path)
    records, path = _framed_segment(directory, 3, per_write=3)
    size = _append_frame(path, F.encode_frame(4, []))
    with pytest.raises(JournalCorrupt, match=f"offset {size}, seq 4: frame holds no record"):
        read_back(directory)
    seen, recovered = read_back(directory, repair=True)
    assert seen == records and "seq 4 onwards dropped" in recovered.notes[0]


def test_a_record_that_does_not_apply_is_named_by_its_own_seq_inside_its_frame(
    tmp_path: os.PathLike[str],
) -> None:
    directory = str(tmp_path)
    _, path = _framed_segment(directory, 2, per_write=2)
    wrong = R.JobsAcked([R.LeaseRef("never-pushed", 1)], at_ms=1)  # acks what is not leased
    encoded = [record_encoder.encode(r) for r in [*paused(1, start=7), wrong]]
    size = _append_frame(path, F.encode_frame(3, encoded))
    with pytest.raises(JournalCorrupt, match=f"offset {size}, seq 4: the record does not apply"):
        read_back(directory)


@pytest.mark.parametrize("repair", [False, True])
def test_a_segment_of_a_newer_format_version_is_refused_and_never_cut(
    tmp_path: os.PathLike[str], repair: bool
) -> None:
    directory = str(tmp_path)
    _one_segment(directory, 2)
    newer = os.path.join(directory, "journal-00000000000000000003.log")
    data = F.encode_header(1, 3, version=F.FORMAT_VERSION + 1) + F.encode_frame(3, [b"\x90"])
    write_file(newer, data)
    with pytest.raises(
        JournalCorrupt, match=rf"version {F.FORMAT_VERSION + 1} is not supported.*newer version"
    ) as caught:
        read_back(directory, repair=repair)
    assert REPAIR_FLAG not in str(caught.value)
    assert read_file(newer) == data and len(names(directory)) == 2, "nothing was changed"


@pytest.mark.parametrize("repair", [False, True])
@pytest.mark.parametrize("newer", ["file", "image"])
def test_a_snapshot_of_a_newer_version_is_refused_never_set_aside(
    tmp_path: os.PathLike[str], repair: bool, newer: str
) -> None:
    directory = os.path.join(tmp_path, "data")
    shutil.copytree(JOURNAL_V2, directory)
    (path,) = [os.path.join(directory, n) for n in names(directory) if n.endswith(".snap")]
    header = snapshot.read_header(OsDisk(), path)
    if newer == "file":  # the file's header says a later snapshot format
        data = bytearray(read_file(path))
        version = snapshot.SNAPSHOT_VERSION + 1
        data[: F.HEADER_BYTES] = F.encode_header(
            header.epoch, header.through_seq, snapshot.MAGIC, version
        )
        write_file(path, bytes(data))
    else:  # a well-formed file whose image head says a later image version
        chunks = list(snapshot.read(OsDisk(), path))
        chunks[0] = msgspec.structs.replace(chunks[0], version=image.IMAGE_VERSION + 1)
        os.remove(path)
        snapshot.write(OsDisk(), directory, chunks, header.epoch, header.through_seq)
    data = bytearray(read_file(path))
    before = names(directory)
    with pytest.raises(JournalCorrupt, match=r"is not supported.*newer version") as caught:
        read_back(directory, repair=repair)
    assert REPAIR_FLAG not in str(caught.value)
    assert names(directory) == before and read_file(path) == bytes(data), "nothing was changed"
