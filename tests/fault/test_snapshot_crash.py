"""A crash before and after every step of taking a snapshot — as the broker's
snapshotter process does it and as the clean shutdown does it — leaves a
directory that recovers to the last durable state, after a process crash
(kill -9: the page cache survives) and after a power loss (only what was
synced survives), and recovery never reads a temp file.

Every step is one call through the disk seam (``SimDisk``): sealing the open
segment (fsync, new segment, header, fsync, directory fsync), writing the
temp file, its fsync, the rename, the directory fsync, removing what the
snapshot covers.
"""

from collections.abc import Callable

import pytest

from leash.broker.core import CoreConfig, canonical, check_invariants
from leash.broker.core import records as R
from leash.broker.journal import snapshotter
from leash.broker.journal.compaction import Compactor
from leash.broker.journal.log import Journal
from leash.broker.journal.recovery import recover
from tests.fault.disks import Crash, SimDisk
from tests.journal_kit import append, busy_records, replayed, seal

DIRECTORY = "/data"
SEGMENT_BYTES = 2048


def _journal(records: list[R.Record]) -> SimDisk:
    """A directory with a snapshot, the segments after it and an open
    segment, everything synced: the state before the procedure."""
    disk = SimDisk()
    half = len(records) // 2
    append(DIRECTORY, records[:half], disk, segment_bytes=SEGMENT_BYTES)
    through = seal(DIRECTORY, disk)
    snapshotter.take(DIRECTORY, disk, through)
    for path in recover(DIRECTORY, disk, CoreConfig()).obsolete:
        disk.remove(path)
    append(DIRECTORY, records[half:], disk, segment_bytes=SEGMENT_BYTES)
    return disk


def by_the_snapshotter(disk: SimDisk) -> None:
    """The broker seals, the snapshotter process writes, the broker removes."""
    through = seal(DIRECTORY, disk)
    snapshotter.take(DIRECTORY, disk, through)
    for path in recover(DIRECTORY, disk, CoreConfig(), read_only=True).obsolete:
        disk.remove(path)


def at_shutdown(disk: SimDisk) -> None:
    """The clean shutdown: a snapshot from the live state, in the broker."""
    recovered = recover(DIRECTORY, disk, CoreConfig())
    journal = Journal(DIRECTORY, disk, SEGMENT_BYTES)
    journal.open(recovered.next_seq, recovered.segments[-1], 1)
    Compactor(DIRECTORY, disk, journal, recovered).snapshot_now(recovered.state)
    journal.close()


@pytest.mark.parametrize("procedure", [by_the_snapshotter, at_shutdown])
def test_a_crash_at_any_step_of_a_snapshot_recovers_the_last_durable_state(
    procedure: Callable[[SimDisk], None],
) -> None:
    records = busy_records()
    expected = canonical(replayed(records))
    template = _journal(records)
    dry_run = template.after_process_crash()
    start = len(dry_run.steps)
    procedure(dry_run)
    steps = dry_run.steps[start:]
    assert any(step.startswith("rename") for step in steps) and len(steps) > 10
    for crash_at in range(len(steps) + 1):
        disk = template.after_process_crash()
        disk.crash_at = len(disk.steps) + crash_at
        if crash_at < len(steps):
            with pytest.raises(Crash):
                procedure(disk)
        else:
            procedure(disk)
        for survivor, crash in (
            (disk.after_process_crash(), "kill"),
            (disk.after_power_loss(), "power"),
        ):
            where = (
                f"{crash} at step {crash_at}: {steps[crash_at] if crash_at < len(steps) else 'end'}"
            )
            recovered = recover(DIRECTORY, survivor, CoreConfig())
            assert canonical(recovered.state) == expected, where
            assert check_invariants(recovered.state) == [], where
            assert not [path for path in survivor.reads if path.endswith(".tmp")], where
            assert not [n for n in survivor.names if n.endswith(".broken")], where
