"""The files of a data directory, by name.

    journal-<first seq>.log       a segment: records from first seq on
    snapshot-<through seq>.snap   the state after every record up to that seq
    *.tmp                         a file being written; never read, removed at start
    *.broken                      bytes cut off the journal, kept for inspection
    *.cut                         a segment moved aside by --repair-truncate
    lock                          held by the running broker

Numbers are 20 decimal digits, so names sort in sequence order. A snapshot
through seq S is only ever written after the segment starting at S + 1
exists: every segment that starts at or before S is covered by it.
"""

import os
import re
from typing import NamedTuple

from leash.broker.journal.disk import Disk

SEGMENT_PREFIX, SEGMENT_SUFFIX = "journal-", ".log"
SNAPSHOT_PREFIX, SNAPSHOT_SUFFIX = "snapshot-", ".snap"
TEMP_SUFFIX = ".tmp"
BROKEN_SUFFIX = ".broken"
CUT_SUFFIX = ".cut"
LOCK_NAME = "lock"
_NUMBERED = re.compile(r"(journal|snapshot)-(\d{20})\.(log|snap)")


class NumberedFile(NamedTuple):
    seq: int  # a segment's first seq, a snapshot's through seq
    path: str


class Layout(NamedTuple):
    segments: list[NumberedFile]  # by first seq
    snapshots: list[NumberedFile]  # by through seq
    temps: list[str]


def segment_name(first_seq: int) -> str:
    return f"{SEGMENT_PREFIX}{first_seq:020d}{SEGMENT_SUFFIX}"


def snapshot_name(through_seq: int) -> str:
    return f"{SNAPSHOT_PREFIX}{through_seq:020d}{SNAPSHOT_SUFFIX}"


def scan(disk: Disk, directory: str) -> Layout:
    segments, snapshots, temps = [], [], []
    for name in sorted(disk.list_dir(directory)):
        path = os.path.join(directory, name)
        if name.endswith(TEMP_SUFFIX):
            temps.append(path)
            continue
        match = _NUMBERED.fullmatch(name)
        if match is None:
            continue
        kind, number, suffix = match.groups()
        if (kind, suffix) == ("journal", "log"):
            segments.append(NumberedFile(int(number), path))
        elif (kind, suffix) == ("snapshot", "snap"):
            snapshots.append(NumberedFile(int(number), path))
    return Layout(segments, snapshots, temps)
