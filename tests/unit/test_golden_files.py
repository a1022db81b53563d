"""Golden files (tests/fixtures/journal-v1, journal-v2 and v3, made once by
tests/fixtures/make_journal_v1.py, make_journal_v2.py and make_v3.py): a
segment pair and a snapshot of each journal format version must stay
readable by every later version, a data directory of an older version goes
on in today's, and today's writer writes v3 frames (as v2 framed them, and
snapshot chunks in v1 framing) byte for byte. The same for the versions of
the state image (tests/fixtures/image-v2, made by
tests/fixtures/make_image_v2.py, and the v3 snapshot): each loads, and
today's writer writes version 3 byte for byte. If this fails, the on-disk
format changed: bump the version and keep a reader for the old one."""

import itertools
import os
import shutil
from pathlib import Path
from typing import Any

import msgspec
import pytest

from leash.broker.core import CoreConfig, canonical, check_invariants, image
from leash.broker.core import records as R
from leash.broker.core.apply import apply
from leash.broker.core.records import Record, frame_decoder, record_decoder, record_encoder
from leash.broker.core.state import State
from leash.broker.journal import format as F
from leash.broker.journal import snapshot
from leash.broker.journal.compaction import Compactor
from leash.broker.journal.disk import OsDisk
from leash.broker.journal.log import Journal
from leash.broker.journal.recovery import frame_reader, recover
from leash.broker.journal.tools import _plain
from leash.broker.server.main import open_epoch
from leash.protocol import limits as L
from tests.journal_kit import read_file, record_offsets, replayed

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "journal-v1"
SEGMENTS = ["journal-00000000000000000001.log", "journal-00000000000000000012.log"]
SNAPSHOT = "snapshot-00000000000000000011.snap"
JOURNAL_V2 = FIXTURES.parent / "journal-v2"
SEGMENTS_V2 = ["journal-00000000000000000001.log", "journal-00000000000000000019.log"]
IMAGE_V2 = FIXTURES.parent / "image-v2"
IMAGE_V2_SNAPSHOT = str(IMAGE_V2 / "snapshot-00000000000000000035.snap")
V3 = FIXTURES.parent / "v3"
SEGMENTS_V3 = ["journal-00000000000000000001.log", "journal-00000000000000000119.log"]
V3_COVERED = 118  # the records the v3 snapshot covers
V3_SNAPSHOT = str(V3 / f"snapshot-{V3_COVERED:020d}.snap")
V3_RECORDS = 151  # in its two segments


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
    ("source", "snapshot_seq"), [(FIXTURES, 11), (IMAGE_V2, 35), (JOURNAL_V2, 18), (V3, V3_COVERED)]
)
def test_a_data_directory_recovers_to_the_state_of_all_its_records(
    tmp_path: os.PathLike[str], source: Path, snapshot_seq: int
) -> None:
    directory = os.path.join(tmp_path, "data")
    shutil.copytree(source, directory)
    recovered = recover(directory, OsDisk(), CoreConfig())
    assert recovered.snapshot is not None and recovered.snapshot.seq == snapshot_seq
    every = [record for _, records in _frames_of(source) for record in records]
    if source == V3:
        assert canonical(recovered.state) == canonical(replayed(every))
    else:  # an image older than version 3 has no attempt histories; the records give them
        assert without_attempts(canonical(recovered.state)) == without_attempts(
            canonical(replayed(every))
        )
    assert recovered.notes == []


def without_attempts(plain: dict[str, Any]) -> dict[str, Any]:
    """A canonical state with no job's attempt history and no finished-job
    history (older images have neither)."""
    jobs = {job_id: {**job, "attempts": None} for job_id, job in plain["jobs"].items()}
    return {**plain, "jobs": jobs, "history": []}


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


def test_the_v2_snapshot_loads_to_the_state_of_the_records_it_covers() -> None:
    header = snapshot.read_header(OsDisk(), IMAGE_V2_SNAPSHOT)
    loaded = image.load(snapshot.read(OsDisk(), IMAGE_V2_SNAPSHOT), CoreConfig())
    every = [record for _, records in _frames_of(IMAGE_V2) for record in records]
    assert header.through_seq == len(every) == 35
    assert without_attempts(canonical(loaded)) == without_attempts(canonical(replayed(every)))
    assert not any(job.attempts for job in loaded.jobs.values()), "version 2 kept none"
    assert check_invariants(loaded) == []
    states = {job.state for job in loaded.jobs.values()}
    assert states == {"ready", "scheduled", "leased", "retrying", "dead"}
    assert any(job.batch for job in loaded.jobs.values()), "a packed job names its batch"


def test_a_loaded_v2_image_dumps_to_the_same_chunks_but_the_v3_head_and_leased_jobs() -> None:
    """Version 3 adds four fields to a Job (and to a packed job's cold
    part, which a v2 job has only with a failure, a death or a batch: those
    in this image end as they did); a v2 image dumps as it was written but
    for its head's version, its leased jobs, which carry the new fields at
    their defaults, and its dead jobs, which go in the dead set's order
    (when they died, then by id: version 2 kept the order they died in)."""
    written = list(snapshot.read(OsDisk(), IMAGE_V2_SNAPSHOT))
    loaded = image.load(iter(written), CoreConfig())
    dumped = list(image.dump(loaded))
    assert len(dumped) == len(written)
    assert any(isinstance(chunk, image.JobsImage) and chunk.jobs for chunk in written)
    for now, then in zip(dumped, written, strict=True):
        if isinstance(now, image.ImageHead):
            assert now == msgspec.structs.replace(then, version=3)
        elif isinstance(now, image.JobsImage):
            assert now == then
            assert all(
                (job.extra, job.discard_dead, job.lost_leases, job.attempts)
                == (None, False, 0, None)
                for job in now.jobs
            )
        else:
            if isinstance(then, image.PackedJobsImage) and then.state == "dead":
                then = in_dead_set_order(then)
            assert image.chunk_encoder.encode(now) == image.chunk_encoder.encode(then)


def in_dead_set_order(chunk: image.PackedJobsImage) -> image.PackedJobsImage:
    order = sorted(range(len(chunk.ids)), key=lambda i: (chunk.keys_ms[i], chunk.ids[i]))
    assert order != list(range(len(chunk.ids))), "two jobs of this image died in one ms"
    fields = ("ids", "jobs", "queues", "types", "keys_ms")
    moved = {name: [getattr(chunk, name)[i] for i in order] for name in fields}
    return msgspec.structs.replace(chunk, **moved)


def test_a_loaded_v2_image_dumps_as_version_3_and_loads_back_the_same() -> None:
    loaded = image.load(snapshot.read(OsDisk(), IMAGE_V2_SNAPSHOT), CoreConfig())
    dumped = list(image.dump(loaded))
    assert isinstance(dumped[0], image.ImageHead) and dumped[0].version == 3
    assert canonical(image.load(dumped, CoreConfig())) == canonical(loaded)


# --- version 3 of the state image (tests/fixtures/v3, made once by
# tests/fixtures/make_v3.py): leases lost in a row, what a front end keeps, the
# attempts a job keeps -------------------------------------------------------------


def test_the_v3_snapshot_loads_to_the_state_of_the_records_it_covers() -> None:
    header = snapshot.read_header(OsDisk(), V3_SNAPSHOT)
    loaded = image.load(snapshot.read(OsDisk(), V3_SNAPSHOT), CoreConfig())
    every = [record for _, records in _frames_of(V3) for record in records]
    assert header.through_seq == V3_COVERED and len(every) == V3_RECORDS
    assert canonical(loaded) == canonical(replayed(every[:V3_COVERED]))
    assert check_invariants(loaded) == []
    states = {job.state for job in loaded.jobs.values()}
    assert states == {"ready", "scheduled", "leased", "retrying", "dead"}
    assert any(job.batch for job in loaded.jobs.values()), "a packed job names its batch"


def test_the_v3_snapshot_holds_the_leases_jobs_lost_in_a_row() -> None:
    loaded = image.load(snapshot.read(OsDisk(), V3_SNAPSHOT), CoreConfig())
    lost = {job.id: (job.state, job.lost_leases) for job in loaded.jobs.values()}
    assert lost["lost-once"] == ("ready", 1), "a packed job's cold part"
    assert lost["lost-twice"] == ("leased", 2), "a leased Job"
    assert lost["fk-lost-1"] == ("ready", 1), "beside what its front end keeps"
    poison = loaded.jobs["poison"]
    assert (poison.state, poison.failures, poison.lost_leases) == ("dead", 3, 0)
    assert poison.last_error is not None and "3 times in a row" in poison.last_error.message


def test_the_v3_snapshot_holds_what_a_front_end_keeps_on_a_job() -> None:
    loaded = image.load(snapshot.read(OsDisk(), V3_SNAPSHOT), CoreConfig())
    kept = {job.id: job for job in loaded.jobs.values() if job.extra or job.discard_dead}
    assert {job_id: job.state for job_id, job in kept.items()} == {
        "fk-ready-1": "ready",
        "fk-later-1": "scheduled",
        "fk-held-1": "leased",
        "fk-fail-1": "dead",
        "fk-lost-1": "ready",
    }
    assert kept["fk-ready-1"].extra == (
        b'{"custom":{"k":[1,2]},"created_at":"2024-01-01T00:00:00Z","zz":true}'
    )
    assert kept["fk-held-1"].discard_dead and kept["fk-later-1"].discard_dead
    assert not kept["fk-fail-1"].discard_dead and kept["fk-fail-1"].extra == b'{"backtrace":5}'
    assert kept["fk-lost-1"].extra == b'{"custom":{"n":1}}' and not kept["fk-lost-1"].discard_dead


def test_the_v3_snapshot_holds_the_attempts_of_packed_and_leased_jobs() -> None:
    loaded = image.load(snapshot.read(OsDisk(), V3_SNAPSHOT), CoreConfig())
    jobs = loaded.jobs
    ended = {
        job_id: (jobs[job_id].state, [a.outcome for a in jobs[job_id].attempts or ()])
        for job_id in ("tries", "held-tries", "killed-held", "poison", "lost-twice")
    }
    assert ended == {
        "tries": ("ready", ["released", "expired", "failed"]),  # packed
        "held-tries": ("leased", ["lost", "failed"]),  # a Job
        "killed-held": ("dead", ["killed"]),
        "poison": ("dead", ["expired"] * 3),
        "lost-twice": ("leased", ["expired"] * 2),
    }
    failed = (jobs["tries"].attempts or [])[-1]
    assert (failed.attempt, failed.worker_id, failed.ended_ms - failed.leased_ms) == (2, "w-a", 0)
    assert failed.error is not None and len(failed.error.message) == L.ATTEMPT_MESSAGE_MAX_CHARS
    assert len(failed.error.backtrace) == L.ATTEMPT_BACKTRACE_MAX_CHARS
    last_error = jobs["tries"].last_error
    assert last_error is not None and len(last_error.message) == 600, "the job keeps it whole"
    assert sum(1 for job in jobs.values() if job.attempts) > len(ended)  # make_image_v2's too


def test_the_v3_snapshot_holds_the_uniqueness_keys_of_packed_leased_and_acked_jobs() -> None:
    loaded = image.load(snapshot.read(OsDisk(), V3_SNAPSHOT), CoreConfig())
    held = {key: (lock.job_id, lock.until_ms > 0) for key, lock in loaded.unique.items()}
    derived = loaded.jobs["uniq-derived"].unique_key
    assert held == {
        "report:1": ("uniq-ready", False),  # packed: in its Cold part
        derived: ("uniq-derived", False),
        "sync:7": ("uniq-leased", False),  # a Job
        "member:1": ("uniq-member", False),  # joined with its batch
        "mail:9": ("uniq-day", True),  # acked: the window after its success
        "mail:10": ("uniq-short", True),
    }
    leased = loaded.jobs["uniq-leased"]
    assert (leased.state, leased.unique_key, leased.unique_for_ms) == ("leased", "sync:7", 1)
    assert derived is not None and derived.startswith("auto:")
    assert check_invariants(loaded) == []
    every = [record for _, records in _frames_of(V3) for record in records]
    freed = [r for r in every[V3_COVERED:] if isinstance(r, R.UniqueWindowsEnded)]
    assert [r.keys for r in freed] == [["mail:10"]]
    assert "mail:10" not in replayed(every).unique


def test_the_v3_snapshot_holds_the_expiries_and_the_tail_expires_a_job() -> None:
    loaded = image.load(snapshot.read(OsDisk(), V3_SNAPSHOT), CoreConfig())
    expiring = {job_id: ms - loaded.jobs[job_id].created_ms for ms, job_id in loaded.expiries}
    assert expiring == {"exp-later": 24 * 3600 * 1000, "exp-soon": 2000}
    every = [record for _, records in _frames_of(V3) for record in records]
    expired = [r for r in every[V3_COVERED:] if isinstance(r, R.JobsExpired)]
    assert [r.ids for r in expired] == [["exp-soon"]]
    assert "exp-soon" not in replayed(every).jobs


def test_the_v3_snapshot_holds_time_limits_and_progress_and_the_tail_times_a_job_out() -> None:
    loaded = image.load(snapshot.read(OsDisk(), V3_SNAPSHOT), CoreConfig())
    ready, leased = loaded.jobs["tl-ready"], loaded.jobs["tl-leased"]
    assert (ready.state, ready.time_limit_ms) == ("ready", 3600 * 1000), "a packed job's cold part"
    assert (leased.state, leased.time_limit_ms) == ("leased", 7200 * 1000), "a Job"
    assert leased.progress is not None and (leased.progress.percent, leased.progress.message) == (
        30,
        "3 of 10 parts",
    )
    every = [record for _, records in _frames_of(V3) for record in records]
    failures = [
        f for r in every[V3_COVERED:] if isinstance(r, R.AttemptsFailed) for f in r.failures
    ]
    assert [(f.id, f.error.type) for f in failures if f.id == "tl-hung"] == [
        ("tl-hung", "TimeLimitExceeded")
    ]
    hung = replayed(every).jobs["tl-hung"]
    assert hung.state == "retrying" and hung.progress is None


def test_the_v3_snapshot_holds_the_limits_the_keys_lanes_and_the_rate_window() -> None:
    loaded = image.load(snapshot.read(OsDisk(), V3_SNAPSHOT), CoreConfig())
    assert (loaded.limits["lim"].per_key, loaded.limits["lim-r"].rate) == (1, 2)
    assert len(loaded.starts["lim"]) == 1 and loaded.starts["lim-r"] == []
    queue = loaded.queues["lim"]
    assert queue.key_leased == {"a": 1}, "derived from the leased jobs"
    assert {key: [list(lane) for lane in lanes.values()] for key, lanes in queue.lanes.items()} == {
        "a": [["lim-a2"]],
        "b": [["lim-b1"]],
    }
    assert loaded.jobs["lim-b1"].concurrency_key == "b", "a packed job's cold part"
    every = [record for _, records in _frames_of(V3) for record in records]
    set_later = [r for r in every[V3_COVERED:] if isinstance(r, R.QueueLimitsSet)]
    assert [(r.queue, r.per_key) for r in set_later] == [("lim", 2), ("lim-r", 0)]
    assert replayed(every).queues["lim"].key_leased == {}


def test_the_v3_snapshot_holds_the_schedules_and_the_tail_fires_one() -> None:
    loaded = image.load(snapshot.read(OsDisk(), V3_SNAPSHOT), CoreConfig())
    assert sorted(loaded.schedules) == ["beat", "nightly"]
    assert loaded.schedules["nightly"].paused and loaded.schedules["nightly"].spec.tz
    assert [entry[1] for entry in loaded.schedule_ticks] == ["beat"]
    every = [record for _, records in _frames_of(V3) for record in records]
    fired = [r for r in every[V3_COVERED:] if isinstance(r, R.ScheduleFired)]
    assert [(r.name, r.tick_ms - fired[0].tick_ms) for r in fired] == [
        ("beat", 0),
        ("beat", 1000),
        ("beat", 2000),
    ]
    assert all(r.job is not None and r.job.id == f"_sch:beat:{r.tick_ms}" for r in fired)
    assert replayed(every).schedules["beat"].fires == 3


def test_a_loaded_v3_image_dumps_to_the_same_chunks_byte_for_byte() -> None:
    written = [image.chunk_encoder.encode(c) for c in snapshot.read(OsDisk(), V3_SNAPSHOT)]
    loaded = image.load(snapshot.read(OsDisk(), V3_SNAPSHOT), CoreConfig())
    assert [image.chunk_encoder.encode(chunk) for chunk in image.dump(loaded)] == written
    data = read_file(V3_SNAPSHOT)
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


@pytest.mark.parametrize(("source", "segments"), [(JOURNAL_V2, SEGMENTS_V2), (V3, SEGMENTS_V3)])
def test_todays_writer_frames_v2_and_v3_byte_for_byte(source: Path, segments: list[str]) -> None:
    """Version 3 frames records as version 2 did, and the records of v2 encode as they did."""
    for name in segments:
        data = read_file(str(source / name))
        header = F.decode_header(data)
        assert header.version == (2 if source == JOURNAL_V2 else 3)
        again = F.encode_header(header.epoch, header.first_seq, version=header.version)
        assert again == data[: F.HEADER_BYTES]
        for start, end in itertools.pairwise(record_offsets(data)):
            scanned = F.scan_record(memoryview(data), start)
            assert isinstance(scanned, F.Scanned)
            records = frame_decoder.decode(scanned.payload)
            journal = Journal("/nonexistent", OsDisk())  # encoding touches no file
            journal.next_seq = scanned.seq
            assert journal.encode(records) == data[start:end]
            encoded = [record_encoder.encode(record) for record in records]
            assert F.encode_frame(scanned.seq, encoded) == data[start:end]


@pytest.mark.parametrize(
    ("source", "segments", "next_seq"), [(FIXTURES, SEGMENTS, 23), (JOURNAL_V2, SEGMENTS_V2, 36)]
)
def test_an_older_data_directory_goes_on_in_a_new_v3_segment_and_keeps_its_files(
    tmp_path: os.PathLike[str], source: Path, segments: list[str], next_seq: int
) -> None:
    directory = os.path.join(tmp_path, "data")
    shutil.copytree(source, directory)
    recovered = recover(directory, OsDisk(), CoreConfig())
    old = F.decode_header(read_file(str(source / segments[-1]))).version
    assert [segment.version for segment in recovered.segments] == [old]
    journal = Journal(directory, OsDisk())
    open_epoch(recovered, journal)  # the boot record, as start-up writes it
    journal.close()
    assert journal.path == os.path.join(directory, f"journal-{next_seq:020d}.log")
    assert F.decode_header(read_file(journal.path)).version == F.FORMAT_VERSION == 3
    sealed = Compactor(directory, OsDisk(), journal, recovered).sealed
    assert [segment.path for segment in sealed] == [recovered.segments[0].path], (
        "the older segment counts as sealed: a snapshot can cover it"
    )
    for name in segments:  # never written to again
        assert read_file(os.path.join(directory, name)) == read_file(str(source / name))
    again = recover(directory, OsDisk(), CoreConfig())
    assert [segment.version for segment in again.segments] == [old, 3]
    assert again.next_seq == next_seq + 1 and again.notes == []
    assert canonical(again.state) == canonical(recovered.state)


# --- version 3 of the journal (tests/fixtures/v3): lost leases ready at once, deaths by
# their count, pushes that keep a front end's fields ---------------------------------


def test_the_v3_segment_headers_read_as_written() -> None:
    headers = [F.decode_header(read_file(str(V3 / name))) for name in SEGMENTS_V3]
    assert headers == [F.FileHeader(3, 1, 1), F.FileHeader(3, 1, V3_COVERED + 1)]


def test_the_v3_records_decode_to_what_was_written_and_say_what_a_lost_lease_did() -> None:
    lines = (V3 / "records.jsonl").read_text().splitlines()
    expected = [msgspec.json.decode(line) for line in lines]
    decoded = [
        {"seq": seq, "record": msgspec.json.decode(msgspec.json.encode(_plain(record)))}
        for seq, (_, record) in enumerate(_records_of(V3), start=1)
    ]
    assert len(decoded) == len(expected) == V3_RECORDS
    for now, then in zip(decoded, expected, strict=True):
        assert_same_or_newer(now, then)
    failures = [
        failure
        for _, record in _records_of(V3)
        if isinstance(record, R.AttemptsFailed | R.ProcessDied)
        for failure in record.failures
    ]
    at_once = [f.id for f in failures if f.retry_at_ms == f.at_ms]
    assert sorted(set(at_once)) == [
        "fk-lost-1", "held-tries", "lost-once", "lost-twice", "orphan", "poison", "tries"
    ]  # fmt: skip
    (dead,) = [f for f in failures if f.retry_at_ms is None and f.error.type == "LeaseExpired"]
    assert dead.id == "poison" and "3 times in a row" in dead.error.message


def test_the_v3_records_push_what_a_front_end_keeps_before_and_after_the_snapshot() -> None:
    records = _records_of(V3)
    kept = [
        (seq, new.id, kept)
        for seq, record in records
        if isinstance(record, R.KeptJobsPushed)
        for new, kept in zip(record.jobs, record.kept, strict=True)
    ]
    ids = [job_id for _, job_id, _ in kept]
    assert ids == ["fk-ready-1", "fk-later-1", "fk-held-1", "fk-fail-1", "fk-lost-1", "fk-once-1"]
    assert [seq > V3_COVERED for seq, _, _ in kept] == [False] * 5 + [True]
    assert kept[-1][2] == R.Kept(None, True), "retry 0: forgotten when it dies"
    recovered_ids = set(replayed([record for _, record in records]).jobs.ids)
    assert "fk-once-1" not in recovered_ids and "fk-fail-1" in recovered_ids


def _records_of(directory: Path) -> list[tuple[int, Record]]:
    return [(seq, record) for seq, records in _frames_of(directory) for record in records]


@pytest.mark.parametrize("shrink", [lambda value: 1, lambda value: value // 3 + 1])
def test_a_record_means_the_same_under_any_configuration(shrink: Any) -> None:
    """Applying a record reads no configuration: the snapshotter replays
    with the defaults whatever the broker runs with, so a record that
    applied differently under another configuration would make its
    snapshots differ from the live state. Bounds and retentions are
    decided (tick, decide) and carried in records instead."""
    every = [record for _, records in _frames_of(V3) for record in records]
    defaults = msgspec.structs.asdict(CoreConfig())
    other = CoreConfig(
        **{name: shrink(value) if type(value) is int else value for name, value in defaults.items()}
    )
    live, replayer = State(other), State(CoreConfig())
    for record in every:
        apply(live, record)
        apply(replayer, record)
    assert canonical(live) == canonical(replayer)
