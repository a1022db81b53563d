"""The ready jobs of one queue at one priority, in the order a fetch takes them.

A deque of job ids (8 bytes an entry) with lazy deletion: a job that leaves
the front is popped; a job that leaves from the middle (a delete or kill
of a waiting job, a lease that is not the first) stays in the deque and is
counted in ``stale`` until it reaches the front, where it is dropped. So
the front is always live, taking from the front is O(1), and so is leaving
from anywhere.

Telling a stale entry from a live one: a job has at most one live entry in
its bucket, and its stale entries, if any, come before it — ``stale[id]``
counts the FIRST entries of that id that are stale. That holds because a
job can only come back behind its stale entries: pushed again, promoted or
requeued, it is appended at the back; released, it goes to the front, but
only after a lease, and a lease from the front has dropped every entry
before it. The one exception (a job leased from the middle, then released)
drops that job's stale entries first, in O(n); a broker's own fetches never
lease from the middle. When stale entries outnumber the live ones (and
are at least ``COMPACT_MIN_STALE``) the deque is rebuilt without them, so
they never hold more than half of it plus that many: checked whenever an
entry goes stale or a live one leaves the front (``problems`` asserts the
bound); rebuilt by a filter in C when no id has a live entry behind stale
ones (``revived``).
"""

from collections import deque
from collections.abc import Iterable, Iterator
from itertools import filterfalse, islice

COMPACT_MIN_STALE = 64  # below this many stale entries a bucket is never rebuilt


class ReadyBucket:
    __slots__ = ("ids", "revived", "stale", "stale_count")

    def __init__(self) -> None:
        self.ids: deque[str] = deque()
        self.stale: dict[str, int] = {}  # id -> how many of its first entries are stale
        self.stale_count = 0
        self.revived = False  # an id came back behind its stale entries since the last rebuild

    def __len__(self) -> int:
        return len(self.ids) - self.stale_count

    def __bool__(self) -> bool:
        return len(self.ids) > self.stale_count

    def __iter__(self) -> Iterator[str]:
        """The live entries, front first."""
        if not self.stale_count:
            yield from self.ids
            return
        yield from self._live(self.ids, {})

    def position_after(self, job_id: str) -> int:
        """Where the entries after ``job_id``'s first entry begin; 0 when the
        bucket holds no entry of it (a search in C: a listing's cursor)."""
        try:
            return self.ids.index(job_id) + 1
        except ValueError:
            return 0

    def live_from(self, start: int) -> Iterator[str]:
        """The live entries from position ``start`` of the deque on."""
        if not self.stale_count:
            yield from islice(self.ids, start, None)
            return
        skipped: dict[str, int] = {}  # the stale ids' entries before ``start``
        for job_id in islice(self.ids, start):
            if job_id in self.stale:
                skipped[job_id] = skipped.get(job_id, 0) + 1
        yield from self._live(islice(self.ids, start, None), skipped)

    def _live(self, entries: Iterable[str], skipped: dict[str, int]) -> Iterator[str]:
        stale = self.stale
        for job_id in entries:
            due = stale.get(job_id)
            if due is not None:
                seen = skipped.get(job_id, 0)
                if seen < due:
                    skipped[job_id] = seen + 1
                    continue
            yield job_id

    def first(self) -> str:
        """The front entry: live, because stale ones are dropped there."""
        return self.ids[0]

    def append(self, job_id: str) -> None:
        if self.stale and job_id in self.stale:
            self.revived = True
        self.ids.append(job_id)

    def extend(self, job_ids: list[str]) -> None:
        """Append each, in order (a state image's bucket)."""
        if self.stale:
            for job_id in job_ids:
                self.append(job_id)
        else:
            self.ids.extend(job_ids)

    def appendleft(self, job_id: str) -> None:
        if job_id in self.stale:  # only after a lease from the middle: see above
            self._rebuild()
        self.ids.appendleft(job_id)

    def discard(self, job_id: str) -> None:
        """The job's live entry is no longer live."""
        ids = self.ids
        if ids[0] == job_id:
            ids.popleft()
            if self.stale_count:
                self._drop_stale_front()
        else:
            stale = self.stale
            stale[job_id] = stale.get(job_id, 0) + 1
            self.stale_count += 1
        if self.stale_count >= COMPACT_MIN_STALE and self.stale_count * 2 > len(ids):
            self._rebuild()

    def _drop_stale_front(self) -> None:
        ids, stale = self.ids, self.stale
        while ids and ids[0] in stale:
            job_id = ids.popleft()
            left = stale[job_id] - 1
            if left:
                stale[job_id] = left
            else:
                del stale[job_id]
            self.stale_count -= 1

    def _rebuild(self) -> None:
        if self.revived:
            self.ids = deque(self)
        else:  # every entry of a stale id is stale
            self.ids = deque(filterfalse(self.stale.__contains__, self.ids))
        self.stale.clear()
        self.stale_count = 0
        self.revived = False

    def problems(self, live: set[str]) -> list[str]:
        """Cross-checks against the ids that should be live here; [] when consistent."""
        problems = []
        if self.ids and self.ids[0] in self.stale:
            problems.append(f"the front entry {self.ids[0]} is stale")
        if sum(self.stale.values()) != self.stale_count or not all(self.stale.values()):
            problems.append(f"stale counts {self.stale} do not sum to {self.stale_count}")
        entries: dict[str, int] = {}
        for job_id in self.ids:
            entries[job_id] = entries.get(job_id, 0) + 1
        for job_id, count in entries.items():
            if count - self.stale.get(job_id, 0) != (job_id in live):
                problems.append(f"ready entry {job_id} is duplicated, unknown or lost")
        problems.extend(
            f"job {job_id} is ready but not in its bucket" for job_id in live - entries.keys()
        )
        if self.stale.keys() - entries.keys():
            problems.append("stale counts name ids the bucket does not hold")
        if self.stale_count > len(live) + COMPACT_MIN_STALE:
            problems.append(f"{self.stale_count} stale entries beside {len(live)} live ones")
        return problems
