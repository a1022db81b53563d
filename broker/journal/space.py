"""Free space on the journal's disk, checked every ``period_ms``.

Below ``low_bytes`` the broker refuses requests that grow its state
(``core.grows_state``) with the retryable ``disk_full``; requests that
shrink it (ack, fail, extend, beat, release) go on. Once the space is back
above the watermark, so are pushes. The check (statvfs) runs off the event
loop. Default watermark: max(256 MiB, 4 segments).
"""

import asyncio
import logging
from collections.abc import Callable

from leash.broker.journal.disk import Disk

log = logging.getLogger("leash.journal")
LOW_MIN_BYTES = 256 * 1024 * 1024
LOW_SEGMENTS = 4
CHECK_PERIOD_MS = 1000


def default_low_bytes(segment_bytes: int) -> int:
    return max(LOW_MIN_BYTES, LOW_SEGMENTS * segment_bytes)


class SpaceWatch:
    def __init__(
        self,
        disk: Disk,
        directory: str,
        low_bytes: int,
        on_change: Callable[[bool], None],
        period_ms: int = CHECK_PERIOD_MS,
    ) -> None:
        self.disk = disk
        self.directory = directory
        self.low_bytes = low_bytes
        self.on_change = on_change
        self.period_ms = period_ms
        self.low = False
        self.free_bytes: int | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def check(self) -> None:
        try:
            free_bytes = await asyncio.to_thread(self.disk.free_bytes, self.directory)
        except OSError as error:
            log.warning("cannot read the free space of %s: %s", self.directory, error)
            return
        self.free_bytes = free_bytes
        low = free_bytes < self.low_bytes
        if low != self.low:
            self.low = low
            if low:
                log.warning(
                    "disk low: %d bytes free under %s (watermark %d): refusing pushes",
                    free_bytes,
                    self.directory,
                    self.low_bytes,
                )
            else:
                log.info("disk space back: %d bytes free: accepting pushes again", free_bytes)
            self.on_change(low)

    async def _run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.period_ms / 1000)
