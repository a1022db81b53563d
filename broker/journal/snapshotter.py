"""``python -m leash.broker.journal.snapshotter DIR THROUGH_SEQ [PARENT_PID [KEEP_FREE_BYTES]]``:
write a snapshot in a process of its own, so the broker's event loop never
serializes the state.

The broker seals its open segment at THROUGH_SEQ and starts this. It loads
the newest snapshot before that seq, replays the sealed segments after it
with the same ``core.apply`` the broker uses (the core is a pure, replayable
state machine, so the result is the broker's state at that seq), and writes
``snapshot-<THROUGH_SEQ>.snap`` (temp file, fsync, rename, fsync of the
directory), giving up (the temp file removed) rather than leave less than
KEEP_FREE_BYTES free on the disk, which the broker's journal needs. It
reads nothing the broker is writing, changes nothing else, and runs at a
lower CPU priority; on Linux it dies with the broker
(PR_SET_PDEATHSIG), so a killed broker leaves no snapshotter behind. The
broker removes what the snapshot covers once this exits 0. Exit status: 0
written (or already there), 1 on any problem (logged on stderr; the broker
carries on and tries again later).
"""

import contextlib
import ctypes
import gc
import logging
import os
import signal
import sys
import time

from leash.broker.core import CoreConfig, image
from leash.broker.journal import reading, snapshot
from leash.broker.journal.disk import Disk, OsDisk
from leash.broker.journal.recovery import JournalCorrupt, recover

log = logging.getLogger("leash.snapshotter")
NICE_INCREMENT = 10
PR_SET_PDEATHSIG = 1


def _die_with(parent_pid: int) -> bool:
    """Ask to be killed when the broker dies; False if it is already gone."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: best effort
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    return parent_pid == 0 or os.getppid() == parent_pid


def take(
    directory: str, disk: Disk, through_seq: int, keep_free_bytes: int = 0
) -> snapshot.Written | None:
    """The snapshot through ``through_seq``, written; None if it exists. On
    a stack of its own, as every reader (reading.py): writing the image
    reads the packed jobs back."""
    return reading.on_own_stack(lambda: _take(directory, disk, through_seq, keep_free_bytes))


def _take(
    directory: str, disk: Disk, through_seq: int, keep_free_bytes: int
) -> snapshot.Written | None:
    gc.disable()  # replay allocates millions of objects that all stay alive
    try:
        recovered = recover(directory, disk, CoreConfig(), read_only=True, through_seq=through_seq)
        if recovered.snapshot is not None and recovered.snapshot.seq == through_seq:
            return None
        state = recovered.state
        chunks = image.dump(state)
        return snapshot.write(disk, directory, chunks, state.epoch, through_seq, keep_free_bytes)
    finally:
        gc.enable()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(
        level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if len(args) not in (2, 3, 4) or not all(arg.isdigit() for arg in args[1:]):
        log.error(
            "usage: python -m leash.broker.journal.snapshotter DIR THROUGH_SEQ "
            "[PARENT_PID [KEEP_FREE_BYTES]]"
        )
        return 1
    directory, through_seq = args[0], int(args[1])
    keep_free_bytes = int(args[3]) if len(args) == 4 else 0
    if not _die_with(int(args[2]) if len(args) == 3 else 0):
        log.error("the broker that asked for this snapshot is gone")
        return 1
    with contextlib.suppress(OSError):  # lowering one's own priority is always allowed
        os.nice(NICE_INCREMENT)
    started = time.perf_counter()
    try:
        written = take(directory, OsDisk(), through_seq, keep_free_bytes)
    except (JournalCorrupt, snapshot.SnapshotCorrupt, OSError) as error:
        log.error("snapshot through seq %d failed: %s", through_seq, error)
        return 1
    if written is not None:
        log.info(
            "snapshot through seq %d written: %d jobs, %d bytes in %.3f s",
            through_seq,
            written.jobs,
            written.size_bytes,
            time.perf_counter() - started,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
