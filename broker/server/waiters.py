"""Long-poll fetches that found nothing: held until a job is ready in one of
their queues or their wait ends (and get_results held until their job
finishes: ``ResultWaiter``). Shell state (tied to connections), never
journalled. Waiters are served in arrival order per queue. Removal is exact,
not lazy: a waiter served, expired or whose connection closed leaves no
entry behind (``problems`` checks it)."""

from collections import OrderedDict
from typing import TYPE_CHECKING

from leash.broker.journal.scheduler import Timer
from leash.protocol import faktory as F
from leash.protocol import messages as M

if TYPE_CHECKING:
    from leash.broker.server.connection import Connection
    from leash.broker.server.pipeline import Decide

Fetch = M.Fetch | F.Fetch


class Waiter:
    __slots__ = ("connection", "decide", "request", "timer")

    def __init__(self, connection: "Connection", request: "Fetch", decide: "Decide") -> None:
        self.connection = connection
        self.request = request  # a fetch of either protocol: it has its queues
        self.decide = decide  # the core's decision for its protocol
        self.timer: Timer | None = None


class ResultWaiter:
    """A get_result held until its job finishes or its wait ends (the broker
    keeps them in its ``result_waiters``; removal is exact too)."""

    __slots__ = ("connection", "request", "timer")

    def __init__(self, connection: "Connection", request: M.GetResult) -> None:
        self.connection = connection
        self.request = request
        self.timer: Timer | None = None


class Waiters:
    def __init__(self) -> None:
        self._by_queue: dict[str, OrderedDict[Waiter, None]] = {}
        self.count = 0

    def add(self, waiter: Waiter) -> None:
        for queue in waiter.request.queues:
            self._by_queue.setdefault(queue, OrderedDict())[waiter] = None
        self.count += 1

    def remove(self, waiter: Waiter) -> None:
        if waiter.timer is not None:
            waiter.timer.cancel()
            waiter.timer = None
        for queue in waiter.request.queues:
            held = self._by_queue.get(queue)
            if held is not None:
                held.pop(waiter, None)
                if not held:
                    del self._by_queue[queue]
        self.count -= 1

    def held(self, queue: str) -> int:
        """How many fetches are held for a job of ``queue``."""
        return len(self._by_queue.get(queue, ()))

    def in_order(self, queue: str) -> list[Waiter]:
        return list(self._by_queue.get(queue, ()))

    def all(self) -> list[Waiter]:
        return list({w for held in self._by_queue.values() for w in held})

    def problems(self) -> list[str]:
        """What would be an entry that outlived its waiter; [] when exact."""
        problems = [
            f"queue {q} keeps an empty table" for q, held in self._by_queue.items() if not held
        ]
        live = {waiter for held in self._by_queue.values() for waiter in held}
        if len(live) != self.count:
            problems.append(f"{len(live)} waiters held, {self.count} counted")
        for waiter in live:
            for queue in set(waiter.request.queues):
                if waiter not in self._by_queue.get(queue, ()):
                    problems.append(f"a waiter is missing from queue {queue}")
        expected = sum(len(set(waiter.request.queues)) for waiter in live)
        if sum(len(held) for held in self._by_queue.values()) != expected:
            problems.append("an entry names a waiter of another queue")
        return problems
