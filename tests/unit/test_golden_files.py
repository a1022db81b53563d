"""Golden files (tests/fixtures/journal-v1 and journal-v2, made once by
tests/fixtures/make_journal_v1.py and make_journal_v2.py): a segment pair
and a snapshot of each journal format version must stay readable by every
later version, a data directory of an older version goes on in today's,
and today's writer writes v2 frames (and snapshot chunks in v1 framing)
byte for byte. The same for version 2 of the state image
(tests/fixtures/image-v2, made by tests/fixtures/make_image_v2.py). If this
fails, the on-disk format changed: bump the version and keep a reader for
the old one."""

import itertools
import os
import shutil
from pathlib import Path
from typing import Any

import msgspec
import pytest

from leash.broker.core import CoreConfig, canonical, check_invariants, image
from leash.broker.core.records import Record, frame_decoder, record_decoder, record_encoder
from leash.broker.journal import format as F
from leash.broker.journal import snapshot
from leash.broker.journal.compaction import Compactor
from leash.broker.journal.disk import OsDisk
from leash.broker.journal.log import Journal
from leash.broker.journal.recovery import frame_reader, recover
from leash.broker.journal.tools import _plain
from leash.broker.server.main import open_epoch
from tests.journal_kit import read_file, record_offsets, replayed

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "journal-v1"
SEGMENTS = ["journal-00000000000000000001.log", "journal-00000000000000000012.log"]
SNAPSHOT = "snapshot-00000000000000000011.snap"
JOURNAL_V2 = FIXTURES.parent / "journal-v2"
SEGMENTS_V2 = ["journal-00000000000000000001.log", "journal-00000000000000000019.log"]
IMAGE_V2 = FIXTURES.parent / "image-v2"
IMAGE_V2_SNAPSHOT = str(IMAGE_V2 / "snapshot-00000000000000000035.snap")
IMAGE_V3 = FIXTURES.parent / "image-v3"
IMAGE_V3_SNAPSHOT = str(IMAGE_V3 / "snapshot-00000000000000000035.snap")


def _records() -> list[tuple[int, bytes]]:
    found = []
    for name in SEGMENTS:
        data = read_file(str(FIXTURES / name))
        offsets = record_offsets(data)
        for start, end in itertools.pairwise(offsets):
            scanned = F.scan_record(memoryview(data), start)
            assert isinstance(scanned, F.Scanned) and scanned.end == end
            found.append((scanned.seq, bytes(scanned.payload)))
    return found


def test_the_v1_segment_headers_read_as_written() -> None:
    headers = [F.decode_header(read_file(str(FIXTURES / name))) for name in SEGMENTS]
    assert headers == [F.FileHeader(1, 1, 1), F.FileHeader(1, 1, 12)]


def test_the_v1_records_decode_to_what_was_written() -> None:
    lines = (FIXTURES / "records.jsonl").read_text().splitlines()
    expected = [msgspec.json.decode(line) for line in lines]
    decoded = [
        {
            "seq": seq,
            "record": msgspec.json.decode(
                msgspec.json.encode(_plain(record_decoder.decode(payload)))
            ),
        }
        for seq, payload in _records()
    ]
    assert len(decoded) == len(expected)
    for now, then in zip(decoded, expected, strict=True):
        assert_same_or_newer(now, then)
    assert [item["seq"] for item in decoded] == list(range(1, len(lines) + 1))


def assert_same_or_newer(now: object, then: object) -> None:
    """``now`` is ``then`` as decoded today: the same values, plus any field
    added since (at the end of a struct, with a default), at its default."""
    if isinstance(then, dict):
        assert isinstance(now, dict), (now, then)
        for key, value in then.items():
            assert key in now, (key, now)
            assert_same_or_newer(now[key], value)
        for key in now.keys() - then.keys():
            assert now[key] in (None, 0, "", [], {}), (key, now[key])
    elif isinstance(then, list):
        assert isinstance(now, list) and len(now) == len(then), (now, then)
        for item_now, item_then in zip(now, then, strict=True):
            assert_same_or_newer(item_now, item_then)
    else:
        assert now == then


def test_the_v1_snapshot_loads_to_the_state_of_the_records_it_covers() -> None:
    path = str(FIXTURES / SNAPSHOT)
    header = snapshot.read_header(OsDisk(), path)
    assert (header.epoch, header.through_seq) == (1, 11)
    loaded = image.load(snapshot.read(OsDisk(), path), CoreConfig())
    covered = [record_decoder.decode(payload) for seq, payload in _records() if seq <= 11]
    assert canonical(loaded) == canonical(replayed(covered))
    assert len(loaded.jobs) > 0


@pytest.mark.parametrize(
    ("source", "snapshot_seq"),
    [(FIXTURES, 11), (IMAGE_V2, 35), (JOURNAL_V2, 18), (IMAGE_V3, 35)],
)
def test_a_data_directory_recovers_to_the_state_of_all_its_records(
    tmp_path: os.PathLike[str], source: Path, snapshot_seq: int
) -> None:
    directory = os.path.join(tmp_path, "data")
    shutil.copytree(source, directory)
    recovered = recover(directory, OsDisk(), CoreConfig())
    assert recovered.snapshot is not None and recovered.snapshot.seq == snapshot_seq
    every = [record for _, records in _frames_of(source) for record in records]
    if source == IMAGE_V3:
        assert canonical(recovered.state) == canonical(replayed(every))
    else:  # an image older than version 3 has no attempt histories; the records give them
        assert without_attempts(canonical(recovered.state)) == without_attempts(
            canonical(replayed(every))
        )
    assert recovered.notes == []


def without_attempts(plain: dict[str, Any]) -> dict[str, Any]:
    jobs = {job_id: {**job, "attempts": None} for job_id, job in plain["jobs"].items()}
    return {**plain, "jobs": jobs}


def test_the_v1_framing_is_written_byte_for_byte_as_snapshot_chunks_still_use_it() -> None:
    for name in SEGMENTS:
        data = read_file(str(FIXTURES / name))
        header = F.decode_header(data)
        assert F.encode_header(header.epoch, header.first_seq, version=1) == data[: F.HEADER_BYTES]
        offsets = record_offsets(data)
        for start, end in itertools.pairwise(offsets):
            scanned = F.scan_record(memoryview(data), start)
            assert isinstance(scanned, F.Scanned)
            assert F.encode_record(scanned.seq, bytes(scanned.payload)) == data[start:end]


# --- version 2 of the state image (tests/fixtures/image-v2, made once by
# tests/fixtures/make_image_v2.py): packed jobs and their names -------------------


@pytest.mark.parametrize("version", [2, 3])
def test_the_v2_and_v3_snapshots_load_to_the_state_of_the_records_they_cover(version: int) -> None:
    directory = IMAGE_V2 if version == 2 else IMAGE_V3
    path = IMAGE_V2_SNAPSHOT if version == 2 else IMAGE_V3_SNAPSHOT
    header = snapshot.read_header(OsDisk(), path)
    loaded = image.load(snapshot.read(OsDisk(), path), CoreConfig())
    every = [record for _, records in _frames_of(directory) for record in records]
    assert header.through_seq == len(every) == 35
    if version == 3:
        assert canonical(loaded) == canonical(replayed(every))
        assert sum(1 for job in loaded.jobs.values() if job.attempts) == 5
    else:
        assert without_attempts(canonical(loaded)) == without_attempts(canonical(replayed(every)))
    assert check_invariants(loaded) == []
    states = {job.state for job in loaded.jobs.values()}
    assert states == {"ready", "scheduled", "leased", "retrying", "dead"}
    assert any(job.batch for job in loaded.jobs.values()), "a packed job names its batch"


def test_a_loaded_v3_image_dumps_to_the_same_chunks_byte_for_byte() -> None:
    written = [image.chunk_encoder.encode(c) for c in snapshot.read(OsDisk(), IMAGE_V3_SNAPSHOT)]
    loaded = image.load(snapshot.read(OsDisk(), IMAGE_V3_SNAPSHOT), CoreConfig())
    assert [image.chunk_encoder.encode(chunk) for chunk in image.dump(loaded)] == written
    data = read_file(IMAGE_V3_SNAPSHOT)
    offsets = record_offsets(data)
    chunks = [F.scan_record(memoryview(data), offset) for offset in offsets[:-2]]  # not the end
    payloads = [bytes(chunk.payload) for chunk in chunks if isinstance(chunk, F.Scanned)]
    assert payloads == written, "today's encoder writes the chunks as they were written"


def _frames_of(directory: Path) -> list[tuple[int, list[Record]]]:
    """Each frame of a data directory's segments: its seq and its records,
    decoded as its format version says."""
    found = []
    for path in sorted(directory.glob("journal-*.log")):
        data = read_file(str(path))
        decode = frame_reader(F.decode_header(data).version)
        for start, _ in itertools.pairwise(record_offsets(data)):
            scanned = F.scan_record(memoryview(data), start)
            assert isinstance(scanned, F.Scanned)
            found.append((scanned.seq, decode(bytes(scanned.payload))))
    return found


# --- version 2 of the journal (tests/fixtures/journal-v2): frames of records ------


def test_the_v2_segment_headers_read_as_written() -> None:
    headers = [F.decode_header(read_file(str(JOURNAL_V2 / name))) for name in SEGMENTS_V2]
    assert headers == [F.FileHeader(2, 1, 1), F.FileHeader(2, 1, 19)]


def test_the_v2_frames_decode_to_the_records_written_in_order() -> None:
    lines = (JOURNAL_V2 / "records.jsonl").read_text().splitlines()
    expected = [msgspec.json.decode(line) for line in lines]
    frames = _frames_of(JOURNAL_V2)
    assert [len(records) for _, records in frames] == [4, 4, 4, 4, 2, 4, 4, 4, 4, 1]
    decoded, seq = [], 1
    for first, records in frames:
        assert first == seq, "a frame's seq is its first record's"
        for record in records:
            plain = msgspec.json.decode(msgspec.json.encode(_plain(record)))
            decoded.append({"seq": seq, "record": plain})
            seq += 1
    assert len(decoded) == len(expected) == 35
    for now, then in zip(decoded, expected, strict=True):
        assert_same_or_newer(now, then)


def test_todays_writer_frames_v2_byte_for_byte() -> None:
    for name in SEGMENTS_V2:
        data = read_file(str(JOURNAL_V2 / name))
        header = F.decode_header(data)
        assert F.encode_header(header.epoch, header.first_seq) == data[: F.HEADER_BYTES]
        for start, end in itertools.pairwise(record_offsets(data)):
            scanned = F.scan_record(memoryview(data), start)
            assert isinstance(scanned, F.Scanned)
            records = frame_decoder.decode(scanned.payload)
            journal = Journal("/nonexistent", OsDisk())  # encoding touches no file
            journal.next_seq = scanned.seq
            assert journal.encode(records) == data[start:end]
            encoded = [record_encoder.encode(record) for record in records]
            assert F.encode_frame(scanned.seq, encoded) == data[start:end]


def test_a_v1_data_directory_goes_on_in_a_new_v2_segment_and_keeps_its_v1_files(
    tmp_path: os.PathLike[str],
) -> None:
    directory = os.path.join(tmp_path, "data")
    shutil.copytree(FIXTURES, directory)
    recovered = recover(directory, OsDisk(), CoreConfig())
    assert [segment.version for segment in recovered.segments] == [1]
    journal = Journal(directory, OsDisk())
    open_epoch(recovered, journal)  # the boot record, as start-up writes it
    journal.close()
    assert journal.path == os.path.join(directory, "journal-00000000000000000023.log")
    assert F.decode_header(read_file(journal.path)).version == 2
    sealed = Compactor(directory, OsDisk(), journal, None, recovered).sealed
    assert [segment.path for segment in sealed] == [recovered.segments[0].path], (
        "the v1 segment counts as sealed: a snapshot can cover it"
    )
    for name in SEGMENTS:  # never written to again
        assert read_file(os.path.join(directory, name)) == read_file(str(FIXTURES / name))
    again = recover(directory, OsDisk(), CoreConfig())
    assert [segment.version for segment in again.segments] == [1, 2]
    assert again.next_seq == 24 and again.notes == []
    assert canonical(again.state) == canonical(recovered.state)
