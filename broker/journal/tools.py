"""Offline journal tools: ``python -m leash.broker journal verify|dump|compact DIR``
(also ``leash journal ...``).

- ``verify`` reads the newest valid snapshot and every record after it,
  checking each (checksum, sequence, decoding, and that it applies to the
  state before it), changes nothing, prints counts by record type and the
  first problem; exit status 0 if all is well, 1 on a problem (a torn tail
  too: start-up would cut it).
- ``dump`` prints every record after the newest snapshot as one JSON object
  per line, ``{"seq": N, "record": {...}}`` (job args decoded from msgpack
  as ``leash job --json`` shows them: times in RFC 3339, Decimals and UUIDs
  as text, bytes in base64; args that do not decode, such as a map with an
  array for a key, as ``{"msgpack": BASE64}`` of their bytes),
  then one line naming the snapshot the records follow,
  ``{"snapshot": PATH, "through": S, "state_jobs": J}`` (``null`` when
  none; J counts the jobs after the records).
- ``compact`` writes a snapshot of the whole journal and removes what it
  covers, as a running broker does (recovery first, so a torn tail is cut
  as at start-up). It takes the data-directory lock: not while a broker runs.
"""

import contextlib
import os
import sys
from collections import Counter
from typing import Any, TextIO

import msgspec

from leash.broker.core import CoreConfig
from leash.broker.core.records import Record
from leash.broker.journal import datadir, snapshot
from leash.broker.journal.compaction import Compactor
from leash.broker.journal.disk import Disk, OsDisk
from leash.broker.journal.log import Journal, JournalFailure
from leash.broker.journal.recovery import JournalCorrupt, Recovered, recover
from leash.protocol import argtypes

EXIT_OK, EXIT_PROBLEM = 0, 1


def verify(directory: str, out: TextIO = sys.stdout, disk: Disk | None = None) -> int:
    counts: Counter[str] = Counter()
    try:
        recovered = recover(
            directory,
            disk or OsDisk(),
            CoreConfig(),
            read_only=True,
            on_record=lambda _seq, record: counts.update([_tag(record)]),
        )
    except (JournalCorrupt, snapshot.SnapshotCorrupt, OSError) as error:
        _print_counts(counts, out)
        print(f"problem: {error}", file=out)
        return EXIT_PROBLEM
    _print_summary(recovered, out)
    _print_counts(counts, out)
    print(f"ok: {sum(counts.values())} records checked, no problem", file=out)
    return EXIT_OK


def dump(directory: str, out: TextIO = sys.stdout, disk: Disk | None = None) -> int:
    def emit(seq: int, record: Record) -> None:
        out.write(_json({"seq": seq, "record": _plain(record)}) + "\n")

    try:
        recovered = recover(
            directory, disk or OsDisk(), CoreConfig(), read_only=True, on_record=emit
        )
    except BrokenPipeError:
        raise  # the reader of the dump went away: not a problem of the journal
    except (JournalCorrupt, snapshot.SnapshotCorrupt, OSError) as error:
        print(f"leash journal dump: {error}", file=sys.stderr)
        return EXIT_PROBLEM
    base = recovered.snapshot
    line = {
        "snapshot": base.path if base else None,
        "through": base.seq if base else 0,
        "state_jobs": len(recovered.state.jobs),
    }
    out.write(_json(line) + "\n")
    return EXIT_OK


def compact(directory: str, out: TextIO = sys.stdout, disk: Disk | None = None) -> int:
    disk = disk or OsDisk()
    if not os.path.isdir(directory):
        print(f"leash journal compact: {directory} is not a directory", file=out)
        return EXIT_PROBLEM
    try:
        lock_fd = datadir.lock(directory)
    except (datadir.Locked, OSError) as error:
        print(f"leash journal compact: {error}", file=out)
        return EXIT_PROBLEM
    try:
        recovered = recover(directory, disk, CoreConfig())
        for note in recovered.notes:
            print(note, file=out)
        journal = Journal(directory, disk)
        last = recovered.segments[-1] if recovered.segments else None
        journal.open(recovered.next_seq, last, recovered.state.epoch)
        compactor = Compactor(directory, disk, journal, recovered)
        compactor.snapshot_now(recovered.state)
        journal.close()
        for path in recovered.obsolete:
            with contextlib.suppress(FileNotFoundError):
                disk.remove(path)
    except (JournalCorrupt, snapshot.SnapshotCorrupt, JournalFailure, OSError) as error:
        print(f"leash journal compact: {error}", file=out)
        return EXIT_PROBLEM
    finally:
        os.close(lock_fd)
    print(
        f"snapshot through seq {compactor.snapshot_seq}: {compactor.snapshot_bytes} bytes, "
        f"{len(recovered.state.jobs)} jobs",
        file=out,
    )
    return EXIT_OK


def _print_summary(recovered: Recovered, out: TextIO) -> None:
    if recovered.snapshot is None:
        print("snapshot: none (the journal starts at seq 1)", file=out)
    else:
        print(
            f"snapshot: {recovered.snapshot.path}, through seq {recovered.snapshot.seq}, "
            f"{recovered.snapshot_bytes} bytes",
            file=out,
        )
    for segment in recovered.segments:
        print(
            f"segment: {segment.path}, seq {segment.first_seq}..{segment.last_seq}, "
            f"{segment.size_bytes} bytes",
            file=out,
        )
    print(f"state: {len(recovered.state.jobs)} jobs, epoch {recovered.state.epoch}", file=out)


def _print_counts(counts: Counter[str], out: TextIO) -> None:
    for tag, count in sorted(counts.items()):
        print(f"  {tag}: {count}", file=out)


def _tag(record: Record) -> str:
    return str(type(record).__struct_config__.tag)


def _plain(value: Any) -> Any:
    """Structs as maps (array-like ones too), args decoded: for reading."""
    if isinstance(value, msgspec.Raw):
        return _args(value)
    if isinstance(value, msgspec.Struct):
        config = value.__struct_config__
        plain = {config.tag_field: config.tag} if config.tag is not None else {}
        for name in value.__struct_fields__:
            plain[name] = _plain(getattr(value, name))
        return plain
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _args(raw: msgspec.Raw) -> Any:
    """Job args as JSON shows them (``argtypes.readable``), or their msgpack
    bytes when it cannot."""
    try:
        decoded = argtypes.readable(argtypes.unpack(raw))
        msgspec.json.encode(decoded)
    except (msgspec.DecodeError, TypeError, ValueError, RecursionError):
        return {"msgpack": bytes(raw)}  # base64 in JSON
    return decoded


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()
