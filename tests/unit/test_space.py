"""The free-space watch (broker/journal/space.py) counts what the journal
appends between two readings of the disk, so the watermark holds however
fast the journal grows: growth is refused before it would be crossed,
with no reading of the disk per request. Its period runs on a virtual
clock and its readings finish when the test says (tests/virtual_time.py)."""

import logging

import pytest

from leash.broker.journal.space import SpaceWatch
from tests.virtual_time import ManualWriter, VirtualClock

MIB = 1 << 20
PERIOD_MS = 1000
PERIOD_S = PERIOD_MS / 1000
BEFORE_S = 1 / 1024  # a little before a timer is due (exact in binary: no rounding)


class Disk:
    """Reports a free space the test sets (or fails), and counts the readings."""

    def __init__(self, free_bytes: int) -> None:
        self.free = free_bytes
        self.failing = False
        self.readings = 0

    def free_bytes(self, path: str) -> int:
        self.readings += 1
        if self.failing:
            raise OSError(5, "Input/output error", path)
        return self.free


class Journal:
    appended_bytes = 0


class Rig:
    def __init__(self, free_bytes: int, low_bytes: int) -> None:
        self.disk, self.journal = Disk(free_bytes), Journal()
        self.clock = VirtualClock()
        self.reader = ManualWriter(self.clock)
        self.space = SpaceWatch(
            self.disk,  # type: ignore[arg-type]
            "/d",
            low_bytes,
            lambda: self.journal.appended_bytes,
            PERIOD_MS,
            scheduler=self.clock,
            reader=self.reader,
        )
        self.first_read: list[float] = []

    def start(self) -> None:
        self.space.start(lambda: self.first_read.append(self.clock.now()))
        assert self.reader.in_flight == 1 and self.disk.readings == 0  # off the loop
        assert self.finish_reading()
        assert self.first_read == [0.0] and self.disk.readings == 1

    def finish_reading(self) -> bool:
        """The reading under way ends and its answer reaches the loop."""
        done = self.reader.complete()
        self.clock.run_ready()
        return done


def watch(free_bytes: int, low_bytes: int) -> Rig:
    rig = Rig(free_bytes, low_bytes)
    rig.start()
    return rig


def test_growth_is_refused_before_the_watermark_on_the_count_alone() -> None:
    """No reading of the disk happens between these calls (the early one
    they ask for runs off the loop, later): the count decides."""
    rig = watch(free_bytes=100 * MIB, low_bytes=10 * MIB)
    space = rig.space
    assert not space.refuses_growth(MIB)
    rig.journal.appended_bytes = 90 * MIB - 1
    assert not space.refuses_growth(1)
    assert space.refuses_growth(2)  # 1 byte under 10 MiB would be left
    rig.journal.appended_bytes = 95 * MIB
    assert space.refuses_growth(0) and space.low
    assert rig.disk.readings == 1
    assert rig.reader.in_flight == 1  # one early reading asked for, however many requests


def test_a_reading_is_taken_early_once_half_the_room_is_used() -> None:
    rig = watch(free_bytes=100 * MIB, low_bytes=10 * MIB)
    space = rig.space
    rig.journal.appended_bytes = 44 * MIB  # under half of the 90 MiB of room
    assert not space.refuses_growth(0)
    assert rig.reader.in_flight == 0 and not rig.finish_reading()
    assert rig.disk.readings == 1
    rig.journal.appended_bytes = 45 * MIB
    rig.disk.free = 30 * MIB  # another writer took 25 MiB meanwhile
    assert not space.refuses_growth(0)  # counted from the old reading: 55 MiB left
    assert rig.reader.in_flight == 1
    assert rig.finish_reading()
    assert rig.disk.readings == 2
    assert space.refuses_growth(20 * MIB + 1)  # the new reading: 30 MiB, 20 above the mark
    assert not space.refuses_growth(20 * MIB)


def test_what_a_snapshot_may_take_is_kept_from_pushes_until_it_ends() -> None:
    rig = watch(free_bytes=100 * MIB, low_bytes=10 * MIB)
    space = rig.space
    space.reserve(85 * MIB)
    assert space.refuses_growth(5 * MIB + 1) and not space.refuses_growth(5 * MIB)
    rig.disk.free = 120 * MIB  # the snapshot ended and removed what it covers
    space.reserve(0)
    assert rig.finish_reading()
    assert rig.disk.readings == 2 and not space.refuses_growth(100 * MIB)


@pytest.mark.parametrize("free_mib", [5, 10])
def test_a_disk_already_low_refuses_growth_and_is_read_again_by_the_period(
    free_mib: int,
) -> None:
    rig = watch(free_bytes=free_mib * MIB, low_bytes=10 * MIB)
    space = rig.space
    assert space.refuses_growth(1) and space.low  # refusing: reported once
    assert space.refuses_growth(1)
    assert rig.reader.in_flight == 0  # no room: no early readings, the period reads again
    rig.disk.free = 50 * MIB
    rig.clock.advance(PERIOD_S - BEFORE_S)
    assert rig.reader.in_flight == 0 and space.refuses_growth(MIB)
    rig.clock.advance(BEFORE_S)
    assert rig.finish_reading() and rig.disk.readings == 2
    assert not space.refuses_growth(MIB) and not space.low


def test_readings_come_at_their_period_one_at_a_time() -> None:
    rig = watch(free_bytes=100 * MIB, low_bytes=10 * MIB)
    for reading in range(2, 5):
        rig.clock.advance(PERIOD_S - BEFORE_S)
        assert rig.reader.in_flight == 0
        rig.clock.advance(BEFORE_S)
        assert rig.reader.in_flight == 1
        assert rig.finish_reading() and rig.disk.readings == reading
    rig.clock.advance(PERIOD_S)  # a reading that does not end...
    rig.clock.advance(3 * PERIOD_S)
    assert rig.reader.in_flight == 1  # ...holds the next ones back
    assert rig.finish_reading() and not rig.finish_reading()
    assert rig.disk.readings == 5
    rig.clock.advance(PERIOD_S)
    assert rig.reader.in_flight == 1  # the period goes on


def test_a_failing_reading_is_logged_and_keeps_the_last_figure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = watch(free_bytes=100 * MIB, low_bytes=10 * MIB)
    rig.disk.failing = True
    rig.disk.free = 5 * MIB
    rig.clock.advance(PERIOD_S)
    with caplog.at_level(logging.WARNING, logger="leash.journal"):
        assert rig.finish_reading()
    assert "cannot read the free space of /d" in caplog.text
    assert rig.space.free_bytes == 100 * MIB and not rig.space.refuses_growth(MIB)
    rig.disk.failing = False  # the next period reads again
    rig.clock.advance(PERIOD_S)
    assert rig.finish_reading() and rig.disk.readings == 3
    assert rig.space.refuses_growth(0) and rig.space.low


def test_a_failing_first_reading_still_lets_the_broker_start() -> None:
    rig = Rig(free_bytes=100 * MIB, low_bytes=10 * MIB)
    rig.disk.failing = True
    rig.space.start(lambda: rig.first_read.append(rig.clock.now()))
    assert rig.finish_reading()
    assert rig.first_read == [0.0] and rig.space.free_bytes is None
    assert not rig.space.refuses_growth(MIB)  # nothing known: nothing refused


def test_stopping_ends_the_period_and_ignores_a_reading_under_way() -> None:
    rig = watch(free_bytes=100 * MIB, low_bytes=10 * MIB)
    rig.clock.advance(PERIOD_S)
    assert rig.reader.in_flight == 1
    rig.space.stop()
    rig.disk.free = 5 * MIB
    assert rig.finish_reading()
    assert rig.space.free_bytes == 100 * MIB and rig.reader.stopped
    rig.space.reserve(0)  # would read again if it ran
    rig.clock.advance(10 * PERIOD_S)
    assert rig.reader.in_flight == 0 and rig.clock.next_timer_s() is None
