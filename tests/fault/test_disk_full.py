"""Disk full, through the disk seam's free-space figure: below the low
watermark a push is refused with ``disk_full`` and changes nothing, while
fetch, ack, fail, extend, release and beat keep working; pushes come back
when the space does, and nothing acknowledged is lost across a restart.
Then on a real small file system (a tmpfs the test mounts; skipped where
that is not allowed), filled faster than any poll of the free space."""

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator

import pytest

from leash.broker.core import CoreConfig
from leash.broker.journal.disk import OsDisk
from leash.broker.journal.recovery import recover
from leash.client import AsyncClient, Client, DiskFull
from tests.fault.disks import FaultyDisk
from tests.fault.inprocess import Served, config, served
from tests.integration.broker_proc import BrokerProcess

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


# --- a real small file system, filled as fast as a client can ----------------------

MIB = 1 << 20
FS_BYTES = 48 * MIB
LOW_BYTES = 12 * MIB
SMALL_FS_FLAGS = [
    *("--segment-bytes", str(MIB), "--snapshot-min-bytes", str(4 * MIB)),
    *("--disk-low-bytes", str(LOW_BYTES), "--fsync", "always"),
]
SAMPLE_EVERY_S = 0.002
PUSHERS = 3
FILL_TIMEOUT_S = 90.0


@contextlib.contextmanager
def small_filesystem(size_bytes: int) -> Iterator[str]:
    """A tmpfs of ``size_bytes`` mounted for the test (root only), unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    directory = tempfile.mkdtemp(prefix="leash-smallfs-")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0700", "tmpfs", directory],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if mounted.returncode != 0:
        os.rmdir(directory)
        pytest.skip(f"mounting a tmpfs is not permitted here: {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", directory], timeout=30, check=False)
        os.rmdir(directory)


def _push_until_refused(port: int, prefix: str, pushed: set[str], lock: threading.Lock) -> int:
    """Push batches of 1 000 jobs of 1 KiB as fast as one connection can,
    until three are refused with disk_full: how many were."""
    refusals, batch = 0, 0
    deadline = time.monotonic() + FILL_TIMEOUT_S
    with Client("127.0.0.1", port, timeout_s=30.0) as client:
        while refusals < 3 and time.monotonic() < deadline:
            ids = [f"{prefix}-{batch}-{n}" for n in range(1000)]
            batch += 1
            try:
                client.push_many([{"type": "t", "id": i, "args": "x" * 1000} for i in ids])
            except DiskFull:
                refusals += 1
                continue
            with lock:
                pushed.update(ids)
    return refusals


class FreeSpace:
    """The least free space seen on a file system, sampled in a thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.least_bytes = shutil.disk_usage(path).free
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            self.least_bytes = min(self.least_bytes, shutil.disk_usage(self.path).free)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(10)
        return self.least_bytes


def test_a_client_filling_a_small_disk_as_fast_as_it_can_meets_disk_full_never_a_stop(
    tmp_path: os.PathLike[str],
) -> None:
    """Only what a full disk must do: pushes refused with disk_full before
    the watermark is crossed (a snapshot being written may use half the room
    under it, the journal's records of acks a little more), fetch and ack
    still served, the broker up (never exit 75), a clean stop, and
    everything acknowledged there after a restart."""
    with small_filesystem(FS_BYTES) as mount:
        data = os.path.join(mount, "data")
        broker = BrokerProcess(data, SMALL_FS_FLAGS).start()
        pushed: set[str] = set()
        lock = threading.Lock()
        refusals: list[int] = []
        free = FreeSpace(mount)
        try:
            pushers = [
                threading.Thread(
                    target=lambda p=p: refusals.append(  # type: ignore[misc]
                        _push_until_refused(broker.port, f"p{p}", pushed, lock)
                    )
                )
                for p in range(PUSHERS)
            ]
            for pusher in pushers:
                pusher.start()
            for pusher in pushers:
                pusher.join(FILL_TIMEOUT_S + 30)
            assert refusals == [3] * PUSHERS, "the pushes were not refused with disk_full"
            acked: set[str] = set()
            with Client("127.0.0.1", broker.port, timeout_s=30.0) as client:
                for _ in range(20):
                    jobs = client.fetch_many("default", 100)
                    for job in jobs:
                        client.ack(job)
                        acked.add(job.id)
            assert len(acked) == 2000
            assert broker.alive()
        finally:
            least_bytes = free.stop()
            status = broker.stop()
        log = "".join(broker.log)
        print(
            f"{len(pushed)} jobs pushed ({len(pushed) // 1000} MiB of args) on a "
            f"{FS_BYTES // MIB} MiB file system before disk_full; the least free space seen: "
            f"{least_bytes / MIB:.1f} MiB (watermark {LOW_BYTES // MIB} MiB); "
            f"{len(acked)} acked after"
        )
        assert status == 0, log
        assert "disk low" in log and "status 75" not in log
        assert least_bytes >= LOW_BYTES // 2 - MIB // 2
        state = recover(data, OsDisk(), CoreConfig(), read_only=True).state
        assert not acked & set(state.jobs), "an acknowledged ack was lost"
        assert pushed - acked <= set(state.jobs), "an acknowledged push was lost"
        restarted = BrokerProcess(data, SMALL_FS_FLAGS).start()
        assert restarted.stop() == 0
