"""The tick timer: one timer, armed for the core's next deadline.

``core.next_due_ms`` says when the next lease expires, process dies,
scheduled job comes due (and so on); while fetches are held on a
rate-limited queue, the next start the limit allows counts too. The timer
is re-armed at the end of a turn that applied a record (the ledger's
``stale``), only when the deadline came closer; it never waits longer than
``TICK_MAX_DELAY_S``, so a wall clock that jumps is read again soon. When
it fires, ``run`` ticks the core (in rounds of at most ``TICK_ROUNDS_MAX``),
wakes the held fetches and get_results the tick may answer, and re-arms.
The timer is the ``Scheduler``'s and the time ``clock_ms``'s.
"""

from collections.abc import Callable

from leash.broker import core
from leash.broker.journal.scheduler import Scheduler, Timer
from leash.broker.server.ledger import Ledger
from leash.broker.server.longpoll import LongPoll

TICK_MAX_DELAY_S = 1.0  # re-read the wall clock at least this often
TICK_ROUNDS_MAX = 100  # ticks in one timer run (each touches at most tick_max_items jobs)


class TickTimer:
    __slots__ = (
        "_due_ms",
        "_ledger",
        "_longpoll",
        "_timer",
        "clock_ms",
        "scheduler",
        "state",
        "stopped",
    )

    def __init__(
        self,
        state: core.State,
        ledger: Ledger,
        longpoll: LongPoll,
        scheduler: Scheduler,
        clock_ms: Callable[[], int],
    ) -> None:
        self.state = state
        self._ledger = ledger
        self._longpoll = longpoll
        self.scheduler = scheduler
        self.clock_ms = clock_ms
        self._timer: Timer | None = None
        self._due_ms: int | None = None  # what the armed timer is for
        self.stopped = False

    def arm(self) -> None:
        """Arm the timer for the next deadline, if it is closer than the armed one's."""
        self._ledger.stale = False
        if self.stopped or self._ledger.failed:  # after a journal failure nothing applies:
            return  # a deadline past would fire again at once, forever
        state = self.state
        due_ms = core.next_due_ms(state)
        if self._longpoll.waiters.count and state.starts:  # held fetches wait for a rate limit
            start_ms = core.next_start_ms(state, self.clock_ms())
            if start_ms is not None:
                due_ms = start_ms if due_ms is None else min(due_ms, start_ms)
        if due_ms is None or (self._due_ms is not None and self._due_ms <= due_ms):
            return
        if self._timer is not None:
            self._timer.cancel()
        delay_s = min(max(due_ms - self.clock_ms(), 0) / 1000, TICK_MAX_DELAY_S)
        self._timer = self.scheduler.call_later(delay_s, self._fired)
        self._due_ms = due_ms

    def _fired(self) -> None:
        self._timer, self._due_ms = None, None
        self.run()

    def run(self) -> None:
        """Tick the core now, answer what the tick allows, arm again."""
        state, longpoll = self.state, self._longpoll
        now_ms = self.clock_ms()
        for _ in range(TICK_ROUNDS_MAX):
            records = core.tick(state, now_ms)
            if not records:
                break
            self._ledger.commit(records)
        if state.starts and longpoll.waiters.count:  # a rate window may have moved on
            state.readied.update(state.starts)
        longpoll.wake()
        if longpoll.results:
            longpoll.wake_results()
        self.arm()

    def stop(self) -> None:
        self.stopped = True
        if self._timer is not None:
            self._timer.cancel()
