"""What the broker keeps for the dashboard's graphs: totals a second over
the last hour, and each queue's rates over the last minute.

In memory, bounded, not journalled (like the totals since start): a ring of
``HISTORY_MAX_S`` one-second slots of pushed, acked, failed and dead
counts, and for each queue (at most as many as the broker counts totals
for) the counts of the current and the last minute, from which its rate in
(pushed) and out (acked or dead) is read. The time is passed in.
"""

from typing import Final

from leash.protocol.limits import HISTORY_MAX_S

TOTALS: Final = ("pushed", "acked", "failed", "dead")
_INDEX: Final = {name: index for index, name in enumerate(TOTALS)}
MINUTE_S: Final = 60


class History:
    __slots__ = ("_minutes", "_second", "_slots")

    def __init__(self, now_ms: int) -> None:
        self._slots = [[0] * HISTORY_MAX_S for _ in TOTALS]
        self._second = now_ms // 1000  # the second the newest slot counts
        # queue -> [minute, in, out, last minute's in, last minute's out]
        self._minutes: dict[str, list[int]] = {}

    def count(self, now_ms: int, queue: str, total: str) -> None:
        """One more of ``total`` (a name of core.TOTALS) for ``queue``, now."""
        index = _INDEX.get(total)
        if index is None:
            return
        self._advance(now_ms // 1000)
        self._slots[index][self._second % HISTORY_MAX_S] += 1
        minutes = self._minute(queue, now_ms)
        if total == "pushed":
            minutes[1] += 1
        elif total in ("acked", "dead"):
            minutes[2] += 1

    def series(self, now_ms: int, seconds: int) -> dict[str, list[int]]:
        """Each total's counts of the last ``seconds`` seconds, oldest first,
        the current second last."""
        self._advance(now_ms // 1000)
        seconds = min(seconds, HISTORY_MAX_S)
        first = self._second - seconds + 1
        positions = [second % HISTORY_MAX_S for second in range(first, self._second + 1)]
        return {name: [self._slots[i][p] for p in positions] for i, name in enumerate(TOTALS)}

    def rates_per_s(self, now_ms: int, queue: str) -> tuple[float, float]:
        """The queue's rate in and out over the last minute (the last
        minute's counts weighed by how much of it the last 60 s still hold)."""
        minutes = self._minutes.get(queue)
        if minutes is None:
            return 0.0, 0.0
        minutes = self._minute(queue, now_ms)
        left = 1.0 - (now_ms / 1000 % MINUTE_S) / MINUTE_S
        rate_in = (minutes[1] + minutes[3] * left) / MINUTE_S
        rate_out = (minutes[2] + minutes[4] * left) / MINUTE_S
        return rate_in, rate_out

    def _minute(self, queue: str, now_ms: int) -> list[int]:
        minute = now_ms // 1000 // MINUTE_S
        counts = self._minutes.get(queue)
        if counts is None:
            counts = self._minutes[queue] = [minute, 0, 0, 0, 0]
        elif counts[0] != minute:
            last = counts[0] == minute - 1
            counts[:] = [minute, 0, 0, counts[1] if last else 0, counts[2] if last else 0]
        return counts

    def _advance(self, second: int) -> None:
        """Clear the slots of the seconds since the newest one (a clock that
        went back counts into the newest slot)."""
        if second <= self._second:
            return
        for passed in range(self._second + 1, min(second, self._second + HISTORY_MAX_S) + 1):
            for slots in self._slots:
                slots[passed % HISTORY_MAX_S] = 0
        self._second = second
