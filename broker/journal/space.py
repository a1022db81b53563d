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

The period is a timer of the ``Scheduler`` and the readings are jobs of a
``Writer`` (scheduler.py; its own thread by default), whose answers come
back on the loop: a test drives both on a virtual clock.
"""

import functools
import logging
from collections.abc import Callable

from leash.broker.journal.disk import Disk
from leash.broker.journal.scheduler import Scheduler, Timer, Writer, WriterThread

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
        *,
        scheduler: Scheduler,
        reader: Writer | None = None,
    ) -> None:
        """``scheduler`` arms the period; ``reader`` runs the readings off
        the loop (a thread of its own by default, made at ``start``)."""
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
        self._scheduler = scheduler
        self._reader = reader
        self._checking = False  # a reading is under way
        self._timer: Timer | None = None
        self._first_read: Callable[[], None] | None = None
        self._stopped = False

    def start(self, first_read: Callable[[], None] = lambda: None) -> None:
        """Read now, then every ``period_ms``; ``first_read`` is told once
        the first reading ended (read, or failed and logged)."""
        if self._reader is None:
            self._reader = WriterThread(self._scheduler, name="leash-space")
        self._first_read = first_read
        self._period()

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._reader is not None:
            self._reader.stop(wait=False)  # a reading may hang on a failed disk

    def _period(self) -> None:
        self.check_soon()
        self._timer = self._scheduler.call_later(self.period_ms / 1000, self._period)

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
        """Read the free space now, off the loop, unless a reading is under
        way (or the watch is not running)."""
        if self._checking or self._stopped or self._reader is None:
            return
        self._checking = True
        written = self.written_bytes()  # before the reading: what comes after is counted
        reading = functools.partial(self.disk.free_bytes, self.directory)
        self._reader.run(reading, functools.partial(self._read, written))

    def _read(self, written: int, free_bytes: int | None, error: BaseException | None) -> None:
        """A reading's answer, on the loop."""
        self._checking = False
        first_read, self._first_read = self._first_read, None
        try:
            if self._stopped:
                return
            if isinstance(error, OSError):
                log.warning("cannot read the free space of %s: %s", self.directory, error)
            elif error is not None:
                raise error  # a bug: the loop's handler logs it
            else:
                assert free_bytes is not None
                self._took(written, free_bytes)
        finally:
            if first_read is not None:
                first_read()

    def _took(self, written: int, free_bytes: int) -> None:
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
