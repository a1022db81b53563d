"""Held long-poll fetches (broker/server/waiters.py): removal is exact, so
no entry outlives its waiter however fetches of either protocol come and
go (a seeded walk)."""

import random
from typing import Any, cast

from leash.broker import core
from leash.broker.server.waiters import Waiter, Waiters
from leash.protocol import faktory as F
from leash.protocol import messages as M

QUEUES = ("a", "b", "c", "d")


def test_waiters_added_and_removed_in_any_order_leave_nothing_behind() -> None:
    seed = 20261206
    print(f"waiters walk seed={seed}")
    rng = random.Random(seed)
    waiters, live = Waiters(), list[Waiter]()
    connection = cast(Any, object())
    for step in range(5000):
        if live and rng.random() < 0.5:
            waiters.remove(live.pop(rng.randrange(len(live))))
        else:
            queues = [rng.choice(QUEUES) for _ in range(rng.randint(1, 3))]  # repeats too
            if rng.random() < 0.5:
                waiter = Waiter(connection, M.Fetch(step, queues, 1, 1000), core.decide)
            else:
                waiter = Waiter(connection, F.Fetch(queues), core.decide_faktory)
            waiters.add(waiter)
            live.append(waiter)
        assert waiters.problems() == [], step
        assert waiters.count == len(live)
        for queue in QUEUES:
            assert waiters.in_order(queue) == [w for w in live if queue in w.request.queues]
    for waiter in live:
        waiters.remove(waiter)
    assert waiters.count == 0 and waiters.all() == [] and waiters.problems() == []
