"""Disk full, through the disk seam's free-space figure: below the low
watermark a push is refused with ``disk_full`` and changes nothing, while
fetch, ack, fail, extend, release and beat keep working; pushes come back
when the space does, and nothing acknowledged is lost across a restart."""

import asyncio
import os
import time

import pytest

from leash.broker.core import CoreConfig
from leash.broker.journal.disk import OsDisk
from leash.broker.journal.recovery import recover
from leash.client import AsyncClient, DiskFull
from tests.fault.disks import FaultyDisk
from tests.fault.inprocess import Served, config, served

WAIT_S = 5.0  # the broker checks every 20 ms here; this bound is generous


async def _until_push(client: AsyncClient, prefix: str, *, refused: bool) -> str:
    """Push new jobs until one is refused (or accepted): that job's id."""
    deadline = time.monotonic() + WAIT_S
    for number in range(1_000_000):
        job_id = f"{prefix}-{number}"
        try:
            await client.push("t", id=job_id)
            if not refused:
                return job_id
        except DiskFull:
            if refused:
                return job_id
        assert time.monotonic() < deadline, f"pushes {'still' if refused else 'not'} accepted"
        await asyncio.sleep(0.01)
    raise AssertionError("unreachable")


async def test_a_low_disk_refuses_pushes_but_not_what_drains_the_queues(
    tmp_path: os.PathLike[str],
) -> None:
    data = os.path.join(tmp_path, "data")
    disk = FaultyDisk()
    settings = config(data, disk_low_bytes=10_000_000, space_check_ms=20)
    async with served(settings, disk) as broker:
        assert isinstance(broker, Served)
        async with await AsyncClient.connect("127.0.0.1", broker.port) as client:
            for job_id in ("a", "b", "c", "d"):
                await client.push("t", id=job_id)
            acked, failed = await client.fetch("default"), await client.fetch("default")
            assert acked is not None and failed is not None
            disk.free = 1_000
            refused = [await _until_push(client, "low", refused=True)]
            try:
                await client.push_many([{"type": "t", "id": "low-many"}])
            except DiskFull:
                refused.append("low-many")
            assert refused[-1] == "low-many", "push_many is refused too"
            with pytest.raises(DiskFull):
                await client.create_batch([{"type": "t", "id": "low-batch-job"}], id="low-batch")
            await client.ack(acked)
            assert (await client.fail(failed, "boom")).state == "retrying"
            held = await client.fetch("default")
            assert held is not None
            await client.extend(held)
            await client.release(held)
            assert await client.beat() == "ok"
            disk.free = None  # the real free space: plenty
            after = await _until_push(client, "after", refused=False)
        broker.stop.set()
        assert await broker.exit_code() == 0
    state = recover(data, OsDisk(), CoreConfig()).state
    assert set(state.jobs) >= {"b", "c", "d", after}
    assert "a" not in state.jobs, "the ack made while the disk was low was kept"
    assert not set(refused) & set(state.jobs), "a refused push changed something"
