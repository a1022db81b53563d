"""fsync fails at the Nth call (N = 1..20) through the disk seam, in a broker
running in this process: the failure is sticky (not one fsync after it),
every waiting and later request gets ``journal_failed``, serve returns 75
within 2 s of the failure, no reply acknowledged a record that was not
durable, and a restart recovers the durable prefix — here taken literally:
every journal file is cut back to what its last good fsync covered, as a
kernel that dropped the dirty pages would leave it."""

import asyncio
import os

import pytest

from leash.broker.core import CoreConfig
from leash.broker.journal.disk import OsDisk
from leash.broker.journal.recovery import recover
from leash.broker.server.main import EXIT_JOURNAL_FAILED
from leash.client import AsyncClient, ConnectionLost, JournalFailed
from tests.fault.disks import FaultyDisk
from tests.fault.inprocess import Served, config, journal_files, served
from tests.fault.once import push_once_async

FAIL_STOP_S = 2.0
PIPELINED = 4  # pushes in flight at once: replies wait in the batch in flight and the next


async def _push_until_refused(broker: Served) -> tuple[set[str], list[BaseException]]:
    acked: set[str] = set()
    refusals: list[BaseException] = []
    try:  # the hello is journalled too (the process registers): it may be refused
        client = await AsyncClient.connect("127.0.0.1", broker.port, timeout_s=5.0)
    except JournalFailed as refused:
        return acked, [refused]
    try:
        number = 0
        while not refusals:
            ids = [f"job-{number + k}" for k in range(PIPELINED)]
            number += PIPELINED
            pushes = (push_once_async(client, job_id, {"pad": "x" * 200}) for job_id in ids)
            results = await asyncio.gather(*pushes, return_exceptions=True)
            for job_id, result in zip(ids, results, strict=True):
                if isinstance(result, str):
                    acked.add(job_id)
                elif isinstance(result, JournalFailed | ConnectionLost):
                    refusals.append(result)
                else:
                    raise AssertionError(f"unexpected {result!r}")
    finally:
        await client.close()
    return acked, refusals


@pytest.mark.parametrize("n", range(1, 21))
async def test_the_nth_fsync_failing_stops_the_broker_and_loses_nothing_acknowledged(
    tmp_path: os.PathLike[str], n: int
) -> None:
    data = os.path.join(tmp_path, "data")
    disk = FaultyDisk(fail_sync_at=n)
    settings = config(data, segment_bytes=2048, snapshot_min_bytes=1 << 40)
    acked: set[str] = set()
    async with served(settings, disk) as broker:
        if isinstance(broker, int):  # failed while writing the boot record
            assert broker == EXIT_JOURNAL_FAILED and n <= 3
        else:
            acked, refusals = await _push_until_refused(broker)
            assert any(isinstance(r, JournalFailed) for r in refusals), refusals
            assert await broker.exit_code() == EXIT_JOURNAL_FAILED
            assert broker.ended_s is not None and disk.failed_at_s is not None
            assert broker.ended_s - disk.failed_at_s < FAIL_STOP_S
    assert disk.failed_at_s is not None
    assert disk.syncs_after_failure == 0, "fsync was tried again after it failed"
    for path in journal_files(data):  # keep only what was durable
        os.truncate(path, min(os.path.getsize(path), disk.synced_bytes.get(path, 0)))
    recovered = recover(data, OsDisk(), CoreConfig())
    assert acked <= set(recovered.state.jobs), "an acknowledged push was not durable"


@pytest.mark.parametrize("policy", ["interval:20", "never"])
async def test_a_failed_fsync_is_sticky_under_the_weaker_policies_too(
    tmp_path: os.PathLike[str], policy: str
) -> None:
    from leash.broker.journal.group_commit import FsyncPolicy

    data = os.path.join(tmp_path, "data")
    disk = FaultyDisk(fail_sync_at=6)  # boot: 3; then the interval's or a rotation's
    settings = config(data, fsync=FsyncPolicy.parse(policy), segment_bytes=2048)
    async with served(settings, disk) as broker:
        assert isinstance(broker, Served)
        _, refusals = await _push_until_refused(broker)
        assert any(isinstance(r, JournalFailed) for r in refusals), refusals
        assert await broker.exit_code() == EXIT_JOURNAL_FAILED
    assert disk.syncs_after_failure == 0
