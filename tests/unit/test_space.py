"""The free-space watch (broker/journal/space.py) counts what the journal
appends between two readings of the disk, so the watermark holds however
fast the journal grows: growth is refused before it would be crossed,
with no reading of the disk per request."""

import asyncio

import pytest

from leash.broker.journal.space import SpaceWatch

MIB = 1 << 20


class Disk:
    """Reports a free space the test sets, and counts the readings."""

    def __init__(self, free_bytes: int) -> None:
        self.free = free_bytes
        self.readings = 0

    def free_bytes(self, path: str) -> int:
        self.readings += 1
        return self.free


class Journal:
    appended_bytes = 0


async def watch(free_bytes: int, low_bytes: int) -> tuple[SpaceWatch, Disk, Journal]:
    disk, journal = Disk(free_bytes), Journal()
    space = SpaceWatch(disk, "/d", low_bytes, lambda: journal.appended_bytes)  # type: ignore[arg-type]
    await space.check()
    return space, disk, journal


async def settle() -> None:
    for _ in range(5):  # a reading started now runs on a thread; let it finish
        await asyncio.sleep(0.01)


async def test_growth_is_refused_before_the_watermark_on_the_count_alone() -> None:
    """No reading of the disk happens between these calls (the early one
    they ask for runs only once the loop gets to it): the count decides."""
    space, disk, journal = await watch(free_bytes=100 * MIB, low_bytes=10 * MIB)
    assert not space.refuses_growth(MIB)
    journal.appended_bytes = 90 * MIB - 1
    assert not space.refuses_growth(1)
    assert space.refuses_growth(2)  # 1 byte under 10 MiB would be left
    journal.appended_bytes = 95 * MIB
    assert space.refuses_growth(0) and space.low
    assert disk.readings == 1


async def test_a_reading_is_taken_early_once_half_the_room_is_used() -> None:
    space, disk, journal = await watch(free_bytes=100 * MIB, low_bytes=10 * MIB)
    journal.appended_bytes = 44 * MIB  # under half of the 90 MiB of room
    assert not space.refuses_growth(0)
    await settle()
    assert disk.readings == 1
    journal.appended_bytes = 45 * MIB
    disk.free = 30 * MIB  # another writer took 25 MiB meanwhile
    assert not space.refuses_growth(0)  # counted from the old reading: 55 MiB left
    await settle()
    assert disk.readings == 2
    assert space.refuses_growth(20 * MIB + 1)  # the new reading: 30 MiB, 20 above the mark
    assert not space.refuses_growth(20 * MIB)


async def test_what_a_snapshot_may_take_is_kept_from_pushes_until_it_ends() -> None:
    space, disk, _ = await watch(free_bytes=100 * MIB, low_bytes=10 * MIB)
    space.reserve(85 * MIB)
    assert space.refuses_growth(5 * MIB + 1) and not space.refuses_growth(5 * MIB)
    disk.free = 120 * MIB  # the snapshot ended and removed what it covers
    space.reserve(0)
    await settle()
    assert disk.readings == 2 and not space.refuses_growth(100 * MIB)


@pytest.mark.parametrize("free_mib", [5, 10])
async def test_a_disk_already_low_refuses_growth_and_is_read_again_by_the_period(
    free_mib: int,
) -> None:
    space, disk, _ = await watch(free_bytes=free_mib * MIB, low_bytes=10 * MIB)
    assert space.refuses_growth(1) and space.low  # refusing: reported once
    assert space.refuses_growth(1)
    await settle()
    assert disk.readings == 1  # no room: no early readings, the period reads again
    disk.free = 50 * MIB
    await space.check()
    assert not space.refuses_growth(MIB) and not space.low
