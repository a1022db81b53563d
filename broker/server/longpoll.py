"""Long-poll holds: fetches that found nothing, and get_results whose job
has not finished, held until they can be answered or their wait ends.

A held fetch (``hold``) is served by ``wake`` (once a turn, and before a
fetch decided later in the turn) with the jobs the turn made ready, in
arrival order per queue, or answered with no jobs when its wait ends
(``core.hold_ms``). A held get_result (``hold_result``) is answered by
``wake_results`` once its job finished, or with its job as it is when its
wait ends. The timers are the ``Scheduler``'s and the time ``clock_ms``'s,
so tests run the waits on a virtual clock. Shell state, never journalled
(waiters.py).
"""

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from leash.broker import core
from leash.broker.journal.scheduler import Scheduler
from leash.broker.server.ledger import Ledger
from leash.broker.server.waiters import ResultWaiter, Waiter, Waiters
from leash.protocol import messages as M

if TYPE_CHECKING:
    from leash.broker.server.connection import Connection
    from leash.broker.server.pipeline import Decide


class LongPoll:
    __slots__ = ("_ledger", "clock_ms", "results", "scheduler", "state", "waiters")

    def __init__(
        self,
        state: core.State,
        ledger: Ledger,
        scheduler: Scheduler,
        clock_ms: Callable[[], int],
    ) -> None:
        self.state = state
        self._ledger = ledger
        self.scheduler = scheduler
        self.clock_ms = clock_ms
        self.waiters = Waiters()
        # get_result requests held until their job finishes (a few; each
        # looked at again after every turn that applied records)
        self.results: dict[ResultWaiter, None] = {}

    def hold(self, connection: "Connection", request: Any, decide: "Decide") -> None:
        """Hold a fetch until a job is ready or its wait ends (core.hold_ms)."""
        waiter = Waiter(connection, request, decide)
        wait_ms = core.hold_ms(self.state, request.wait_ms)
        waiter.timer = self.scheduler.call_later(wait_ms / 1000, self._expire, waiter)
        self.waiters.add(waiter)
        connection.waiters.add(waiter)
        if self.state.starts:  # it may wait for a rate limit's next start
            self._ledger.stale = True

    def hold_result(self, connection: "Connection", request: M.GetResult) -> None:
        """Hold a get_result until its job finishes or its wait ends."""
        waiter = ResultWaiter(connection, request)
        waiter.timer = self.scheduler.call_later(request.wait_ms / 1000, self.answer_result, waiter)
        self.results[waiter] = None
        connection.waiters.add(waiter)

    def answer_result(self, waiter: ResultWaiter) -> None:
        """A held get_result's wait ended: its job's state as it is now."""
        waiter.timer = None
        self.drop(waiter)
        request = msgspec.structs.replace(waiter.request, wait_ms=0)
        outcome = core.decide(self.state, request, waiter.connection.worker_id, self.clock_ms())
        self._ledger.reply(waiter.connection, outcome.reply)

    def wake_results(self) -> None:
        """Answer the held get_results whose job finished."""
        now_ms = self.clock_ms()
        for waiter in list(self.results):
            outcome = core.decide(self.state, waiter.request, waiter.connection.worker_id, now_ms)
            if not outcome.may_wait:
                self.drop(waiter)
                self._ledger.reply(waiter.connection, outcome.reply)

    def _expire(self, waiter: Waiter) -> None:
        waiter.timer = None
        self.drop(waiter)
        self._nothing(waiter)

    def _nothing(self, waiter: Waiter) -> None:
        self._ledger.reply(
            waiter.connection, waiter.connection.nothing(waiter.request), written=True
        )

    def drop(self, waiter: Waiter | ResultWaiter) -> None:
        if isinstance(waiter, ResultWaiter):
            if waiter.timer is not None:
                waiter.timer.cancel()
                waiter.timer = None
            del self.results[waiter]
        else:
            self.waiters.remove(waiter)
        waiter.connection.waiters.discard(waiter)

    def cancel(self, connection: "Connection", rid: int) -> None:
        """End what ``connection`` holds under ``rid`` now, as its wait's end
        would: a fetch gets no jobs, a get_result its job as it is."""
        for waiter in list(connection.waiters):
            if waiter.request.rid != rid:
                continue
            if isinstance(waiter, ResultWaiter):
                self.answer_result(waiter)
            else:
                self.drop(waiter)
                self._nothing(waiter)

    def release(self, connection: "Connection") -> None:
        """``connection`` closed: drop what it holds, unanswered."""
        for waiter in list(connection.waiters):
            self.drop(waiter)

    def wake(self) -> None:
        """Serve the held fetches with the jobs made ready since the last wake."""
        state = self.state
        if not state.readied:  # the usual case: nothing new is ready
            return
        readied = state.take_readied()
        if not self.waiters.count:
            return
        ledger = self._ledger
        for queue in readied:
            for waiter in self.waiters.in_order(queue):
                now_ms = self.clock_ms()
                if not core.has_ready(state, queue, now_ms):
                    break
                if waiter.timer is None:  # served through another of its queues
                    continue
                ledger.roll_if_due(now_ms)
                worker_id = waiter.connection.worker_id
                outcome = waiter.decide(state, waiter.request, worker_id, now_ms)
                if outcome.may_wait:  # its process may not fetch now (quiet, terminate)
                    continue
                self.drop(waiter)
                written = outcome.written_enough
                if outcome.records:
                    ledger.commit(outcome.records, sync=not written)
                ledger.reply(waiter.connection, outcome.reply, written=written)

    def answer_all(self) -> None:
        """The broker stops: every held fetch gets no jobs, every held
        get_result its job as it is."""
        for waiter in self.waiters.all():
            self.drop(waiter)
            self._nothing(waiter)
        for held in list(self.results):
            self.answer_result(held)
