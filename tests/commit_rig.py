"""The group committer on virtual time: an in-memory disk whose fsyncs take
virtual time and can fail, a journal on it, and a committer driven by a
VirtualClock and a ManualWriter (tests/virtual_time.py). Nothing sleeps and
nothing runs on another thread: a test decides when the loop turn ends,
when the writer's job finishes and when a timer fires."""

import errno
from dataclasses import dataclass, field

from leash.broker.journal.group_commit import FsyncPolicy, GroupCommitter
from leash.broker.journal.log import Journal, Sealed
from tests.fault.disks import SimDisk
from tests.journal_kit import last_seq_in
from tests.virtual_time import ManualWriter, VirtualClock

DIRECTORY = "/data"


class ClockedDisk(SimDisk):
    """SimDisk whose fsync takes ``sync_s`` of virtual time and fails with
    EIO when told; it reads the sequence numbers out of what is written (its
    own parse of the frames, not the journal's bookkeeping): the last seq
    written, and the last one an fsync covered."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self.clock = clock
        self.sync_s = 0.0
        self.fail_syncs = False
        self.fail_writes = False
        self.written_seq = 0
        self.synced_seq = 0
        self.cover_seq: int | None = None  # what the writer's fsync covers (from its start)
        self.events: list[str] = []

    def job_started(self) -> None:
        """The writer took a job: an fsync in it covers what is written now,
        not what the loop writes before the test lets the job finish."""
        self.cover_seq = self.written_seq

    def job_finished(self) -> None:
        self.cover_seq = None

    def write(self, fd: int, data: bytes | bytearray) -> None:
        if self.fail_writes:
            raise OSError(errno.EIO, "Input/output error (injected)")
        super().write(fd, data)
        last = last_seq_in(data)
        if last is not None:  # (a new segment's header holds no record)
            self.written_seq = last
            self.events.append(f"write {last}")

    def sync(self, fd: int) -> None:
        covered = self.written_seq if self.cover_seq is None else self.cover_seq
        self.clock.now_s += self.sync_s
        if self.fail_syncs:
            raise OSError(errno.EIO, "Input/output error (injected)")
        super().sync(fd)
        if covered > self.synced_seq:  # (a new segment's header sync covers no record)
            self.synced_seq = covered
            self.events.append(f"sync {covered}")


@dataclass
class Rig:
    clock: VirtualClock
    disk: ClockedDisk
    writer: ManualWriter
    journal: Journal
    committer: GroupCommitter
    failures: list[BaseException] = field(default_factory=list)
    sealed: list[Sealed] = field(default_factory=list)

    def reply(self, name: str, *, written: bool = False) -> list[bool]:
        """Register a reply (``written``: after_written); its outcomes (also in
        the disk's events)."""
        outcomes: list[bool] = []

        def done(ok: bool) -> None:
            outcomes.append(ok)
            self.disk.events.append(f"{name} {'ok' if ok else 'failed'}")

        if written:
            self.committer.after_written(done)
        else:
            self.committer.after(done)
        return outcomes


def rig(mode: str, segment_bytes: int = 1 << 30) -> Rig:
    clock = VirtualClock()
    disk = ClockedDisk(clock)
    journal = Journal(DIRECTORY, disk, segment_bytes)
    journal.open(1, None, 1)
    disk.events.clear()  # the segment's creation
    writer = ManualWriter(clock, disk.job_started, disk.job_finished)
    failures: list[BaseException] = []
    sealed: list[Sealed] = []
    committer = GroupCommitter(
        clock,
        journal,
        FsyncPolicy.parse(mode),
        on_failure=failures.append,
        on_sealed=sealed.append,
        writer=writer,
    )
    return Rig(clock, disk, writer, journal, committer, failures, sealed)
