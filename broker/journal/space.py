"""Free space on the journal's disk, and whether a request may grow the state.

Below ``low_bytes`` the broker refuses requests that grow its state
(``core.grows_state``) with the retryable ``disk_full``; requests that
shrink it (ack, fail, extend, beat, release) go on. Default watermark:
max(256 MiB, 4 segments).

The watermark holds at any write rate without a statvfs per write. The
free space is read (statvfs, off the event loop) every ``period_ms``, and
between two readings the broker counts down from the last one:

    left = free at the last reading
           - what the journal appended since that reading began
           - what a snapshot being written may take (``reserve``)
           - what the request would append (about its own size)

and refuses growth once ``left`` would fall below the watermark. So a
client pushing faster than any poll is refused before the watermark is
crossed, not after the disk is full. A reading is taken early, off the
loop, once half of the room above the watermark seen at the last one has
been used (so that other writers of the disk are noticed), and once a
snapshot ends (it frees what it covers); at most one is in flight.
"""

import asyncio
import logging
from collections.abc import Callable

from leash.broker.journal.disk import Disk

log = logging.getLogger("leash.journal")
LOW_MIN_BYTES = 256 * 1024 * 1024
LOW_SEGMENTS = 4
CHECK_PERIOD_MS = 1000
_NEVER = 1 << 62


def default_low_bytes(segment_bytes: int) -> int:
    return max(LOW_MIN_BYTES, LOW_SEGMENTS * segment_bytes)


class SpaceWatch:
    def __init__(
        self,
        disk: Disk,
        directory: str,
        low_bytes: int,
        written_bytes: Callable[[], int],
        period_ms: int = CHECK_PERIOD_MS,
    ) -> None:
        self.disk = disk
        self.directory = directory
        self.low_bytes = low_bytes
        self.written_bytes = written_bytes  # all the journal appended since start
        self.period_ms = period_ms
        self.low = False  # refusing growth, as last reported
        self._refused_bytes = 0  # the size of the last request refused
        self.free_bytes: int | None = None  # at the last reading
        self.reserved_bytes = 0  # what a snapshot being written may take
        self._written_at_reading = 0
        self._recheck_after_bytes = 0  # appended since the reading: read again early
        self._checking: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        self._stopped = True
        for task in (self._task, self._checking):
            if task is not None:
                task.cancel()
        self._task = self._checking = None

    def refuses_growth(self, request_bytes: int) -> bool:
        """Whether a request that grows the state, and would append about
        ``request_bytes``, must be refused now (on the loop; no system call)."""
        if self.free_bytes is None:
            return False
        if self.written_bytes() - self._written_at_reading >= self._recheck_after_bytes:
            self.check_soon()
        left = self.free_bytes - self._counted_bytes()
        if left - request_bytes >= self.low_bytes:
            return False
        self._refused_bytes = request_bytes
        self._report(True, left)
        return True

    def left_bytes(self) -> int | None:
        """About what is free now: the last reading less what the journal
        appended since and what a snapshot being written may take (None
        before the first reading). For the stats; no system call."""
        return None if self.free_bytes is None else self.free_bytes - self._counted_bytes()

    def _counted_bytes(self) -> int:
        return self.written_bytes() - self._written_at_reading + self.reserved_bytes

    def reserve(self, snapshot_bytes: int) -> None:
        """A snapshot that may take ``snapshot_bytes`` is being written (0:
        it ended, and freed what it covered: read the space again)."""
        self.reserved_bytes = snapshot_bytes
        if not snapshot_bytes:
            self.check_soon()

    def check_soon(self) -> None:
        """Read the free space now, off the loop, unless a reading is under way."""
        if self._checking is None and not self._stopped:
            self._checking = asyncio.get_running_loop().create_task(self.check())
            self._checking.add_done_callback(self._checked)

    def _checked(self, task: "asyncio.Task[None]") -> None:
        if self._checking is task:
            self._checking = None

    async def check(self) -> None:
        written = self.written_bytes()  # before the reading: what comes after is counted
        try:
            free_bytes = await asyncio.to_thread(self.disk.free_bytes, self.directory)
        except OSError as error:
            log.warning("cannot read the free space of %s: %s", self.directory, error)
            return
        self.free_bytes, self._written_at_reading = free_bytes, written
        room = free_bytes - self.low_bytes
        # Read early once half the room is used; when there is none, the
        # period (or a snapshot's end) will tell when it comes back.
        self._recheck_after_bytes = room // 2 if room > 0 else _NEVER
        left = free_bytes - (self.written_bytes() - written) - self.reserved_bytes
        # Back once the last request refused would fit: no report per request.
        self._report(left < self.low_bytes + self._refused_bytes, left)

    def _report(self, low: bool, left_bytes: int) -> None:
        if low == self.low:
            return
        self.low = low
        if low:
            log.warning(
                "disk low: about %d bytes left under %s (watermark %d%s): refusing pushes",
                left_bytes,
                self.directory,
                self.low_bytes,
                f", {self.reserved_bytes} kept for a snapshot" if self.reserved_bytes else "",
            )
        else:
            log.info("disk space back: about %d bytes free: accepting pushes again", left_bytes)

    async def _run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.period_ms / 1000)
