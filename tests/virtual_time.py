"""Virtual time for the shell's parts that take a Scheduler (scheduler.py).

- ``VirtualClock``: a Scheduler whose time moves only when the test says
  (``advance``), or jumps to the next timer (``jump``) — trio's MockClock
  idea. Callbacks given to ``call_soon`` wait in order until the test runs
  them (``run_ready``, or ``step`` for one), so a test chooses how a loop
  turn interleaves with everything else.
- ``ManualWriter``: the committer's writer, whose jobs run when the test
  says (``complete``) and answer through the clock, as the writer thread
  answers through the loop.
"""

import heapq
import itertools
from collections import deque
from collections.abc import Callable
from typing import Any

from leash.broker.journal.scheduler import Then

READY_RUNS_MAX = 100_000  # callbacks in one run_ready: more is a loop that never settles


class VirtualTimer:
    __slots__ = ("args", "callback", "cancelled", "when_s")

    def __init__(self, when_s: float, callback: Callable[..., object], args: tuple[Any, ...]):
        self.when_s, self.callback, self.args = when_s, callback, args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock:
    def __init__(self) -> None:
        self.now_s = 0.0
        self._ready: deque[VirtualTimer] = deque()
        self._timers: list[tuple[float, int, VirtualTimer]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self.now_s

    def call_soon(self, callback: Callable[..., object], *args: Any) -> VirtualTimer:
        handle = VirtualTimer(self.now_s, callback, args)
        self._ready.append(handle)
        return handle

    call_soon_threadsafe = call_soon

    def call_later(
        self, delay_s: float, callback: Callable[..., object], *args: Any
    ) -> VirtualTimer:
        timer = VirtualTimer(self.now_s + max(delay_s, 0.0), callback, args)
        heapq.heappush(self._timers, (timer.when_s, next(self._order), timer))
        return timer

    @property
    def ready(self) -> int:
        """Callbacks waiting to run now."""
        return len(self._ready)

    def next_timer_s(self) -> float | None:
        """When the next live timer is due, or None."""
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def step(self) -> bool:
        """Run the oldest ready callback; False if there was none."""
        while self._ready:
            handle = self._ready.popleft()
            if not handle.cancelled:
                handle.callback(*handle.args)
                return True
        return False

    def run_ready(self) -> int:
        """Run ready callbacks (and those they make ready) until none is left."""
        runs = 0
        while self.step():
            runs += 1
            assert runs < READY_RUNS_MAX, "call_soon callbacks never settle"
        return runs

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, firing each timer due on the way
        at its own time, with the ready callbacks run between."""
        target = self.now_s + seconds
        self.run_ready()
        while (due := self.next_timer_s()) is not None and due <= target:
            _, _, timer = heapq.heappop(self._timers)
            self.now_s = max(self.now_s, due)
            timer.callback(*timer.args)
            self.run_ready()
        self.now_s = max(self.now_s, target)

    def jump(self) -> bool:
        """Nothing ready: jump to the next timer and fire it; False if none."""
        self.run_ready()
        due = self.next_timer_s()
        if due is None:
            return False
        self.advance(max(due - self.now_s, 0.0))
        return True


class ManualWriter:
    """A Writer whose jobs run, oldest first, when the test calls ``complete``."""

    def __init__(
        self,
        clock: VirtualClock,
        started: Callable[[], None] | None = None,
        finished: Callable[[], None] | None = None,
    ) -> None:
        """``started``, ``finished``: told when a job would start on a real
        writer, and when it ran (when given)."""
        self.clock = clock
        self.started, self.finished = started, finished
        self.jobs: deque[tuple[Callable[[], Any], Then]] = deque()
        self.answering = 0  # jobs done whose answer waits on the clock
        self.stopped = False

    def run(self, work: Callable[[], Any], then: Then) -> None:
        assert not self.stopped, "a job after stop"
        self.jobs.append((work, then))
        if self.started is not None and len(self.jobs) == 1:
            self.started()

    def stop(self, *, wait: bool) -> None:
        self.stopped = True

    @property
    def in_flight(self) -> int:
        """Jobs given and not yet answered on the loop."""
        return len(self.jobs) + self.answering

    def complete(self) -> bool:
        """Run the oldest job now; its answer waits on the clock. False if none."""
        if not self.jobs:
            return False
        work, then = self.jobs.popleft()
        result, error = None, None
        try:
            result = work()
        except Exception as failure:
            error = failure
        if self.finished is not None:
            self.finished()
        if self.started is not None and self.jobs:
            self.started()
        self.answering += 1

        def answer() -> None:
            self.answering -= 1
            then(result, error)

        self.clock.call_soon_threadsafe(answer)
        return True
