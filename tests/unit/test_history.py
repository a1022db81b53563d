"""The broker's in-memory history for the graphs: totals a second over the
last hour, and each queue's rates over the last minute (time passed in)."""

from leash.broker.server.history import History
from leash.protocol.limits import HISTORY_MAX_S

T0_MS = 1_767_225_600_000  # a minute boundary


def test_each_second_counts_in_its_own_slot_and_old_slots_clear() -> None:
    history = History(T0_MS)
    history.count(T0_MS, "q", "acked")
    history.count(T0_MS + 1_500, "q", "acked")
    history.count(T0_MS + 1_900, "q", "failed")
    history.count(T0_MS + 1_900, "q", "expired")  # not a total the history keeps
    series = history.series(T0_MS + 2_000, 3)
    assert series["acked"] == [1, 1, 0]
    assert series["failed"] == [0, 1, 0]
    later = history.series(T0_MS + (HISTORY_MAX_S + 1) * 1000, HISTORY_MAX_S)
    assert sum(later["acked"]) == 0 and len(later["acked"]) == HISTORY_MAX_S


def test_a_queues_rates_weigh_the_last_minute_by_what_the_last_60_s_hold() -> None:
    history = History(T0_MS)
    for _ in range(60):
        history.count(T0_MS + 10_000, "q", "pushed")
    for _ in range(30):
        history.count(T0_MS + 20_000, "q", "acked")
    assert history.rates_per_s(T0_MS + 30_000, "q") == (1.0, 0.5)
    rate_in, rate_out = history.rates_per_s(T0_MS + 90_000, "q")  # half the last minute left
    assert (rate_in, rate_out) == (0.5, 0.25)
    assert history.rates_per_s(T0_MS + 200_000, "q") == (0.0, 0.0)
    assert history.rates_per_s(T0_MS, "unknown") == (0.0, 0.0)


def test_a_clock_that_goes_back_counts_into_the_newest_second() -> None:
    history = History(T0_MS)
    history.count(T0_MS + 5_000, "q", "pushed")
    history.count(T0_MS + 3_000, "q", "pushed")
    assert history.series(T0_MS + 5_000, 1)["pushed"] == [2]
