"""The real program (``python -m leash.broker serve``) and its journal: snapshots
taken while it serves, the data directory's modes, a real write error (the
file-size limit of the process, RLIMIT_FSIZE, makes write() fail with
EFBIG), and the offline journal tools."""

import contextlib
import os
import resource
import stat
import subprocess
import sys
import time

import msgspec
import pytest

from leash.client import Client, ConnectionLost, JournalFailed
from tests.fault.once import push_once
from tests.integration.broker_proc import BrokerProcess
from tests.journal_kit import read_file, record_offsets, write_file

SMALL = ["--segment-bytes", "4096", "--snapshot-min-bytes", "8192"]
# One snapshot in 300 pushes (about 200 bytes of journal each): taken at
# about 200, and the journal after it stays under the threshold, so a tail of
# about 100 records is left however the snapshotter's timing falls.
ONE_SNAPSHOT = ["--segment-bytes", "4096", "--snapshot-min-bytes", "40000"]
TOOL_TIMEOUT_S = 60


def _connect(broker: BrokerProcess) -> Client:
    return Client("127.0.0.1", broker.port, timeout_s=10.0)


def _push(broker: BrokerProcess, count: int, prefix: str = "job") -> list[str]:
    with _connect(broker) as client:
        return [
            client.push("t", {"n": n, "pad": "x" * 100}, id=f"{prefix}-{n}") for n in range(count)
        ]


def _tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "leash.broker", "journal", *args],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )


def test_snapshots_are_taken_while_serving_and_a_restart_starts_from_one(
    tmp_path: os.PathLike[str],
) -> None:
    data = os.path.join(tmp_path, "data")
    broker = BrokerProcess(data, SMALL).start()
    try:
        ids = _push(broker, 400)
        assert broker.wait_for_log("snapshot through seq", timeout_s=20)
        with _connect(broker) as client:  # still serving
            assert client.get_job(ids[0]).state == "ready"
    finally:
        assert broker.stop() == 0
    names = os.listdir(data)
    assert sum(name.endswith(".snap") for name in names) == 1
    assert sum(name.endswith(".log") for name in names) == 1, "the shutdown snapshot covers all"
    restarted = BrokerProcess(data, SMALL).start()
    try:
        assert restarted.wait_for_log("recovered 400 jobs")
        assert any("snapshot " + data in line for line in restarted.log)
        with _connect(restarted) as client:
            assert {client.get_job(job_id).id for job_id in ids} == set(ids)
    finally:
        restarted.kill()


def _disk_bytes(directory: str) -> int:
    total = 0
    for name in os.listdir(directory):
        with contextlib.suppress(FileNotFoundError):  # a segment removed while we looked
            total += os.path.getsize(os.path.join(directory, name))
    return total


def test_old_jobs_never_pin_the_journal_disk_use_stays_bounded_while_it_churns(
    tmp_path: os.PathLike[str],
) -> None:
    segment_bytes, snapshot_min_bytes = 16_384, 32_768
    flags = ["--segment-bytes", str(segment_bytes), "--snapshot-min-bytes", str(snapshot_min_bytes)]
    flags += [
        "--history-max-jobs",
        "0",
    ]  # the acked jobs' history is state of its own, bounded apart
    data = os.path.join(tmp_path, "data")
    broker = BrokerProcess(data, flags).start()
    written, peak, rounds = 0, 0, 60
    try:
        with _connect(broker) as client:
            old = [
                client.push("t", id="old-ready"),
                client.push("t", id="old-later", delay_ms=10**9),
            ]
            for _ in range(rounds):  # each round journals ~11 KiB and leaves no new job behind
                jobs = client.push_many([{"type": "t", "args": "x" * 100} for _ in range(25)])
                leases = client.fetch_many("default", 26)
                client.release(next(job for job in leases if job.id == "old-ready"))
                client.ack_many([job for job in leases if job.id != "old-ready"])
                written += len(jobs) * 3 * 150
                peak = max(peak, _disk_bytes(data))
                time.sleep(0.15)  # a steady ~70 KiB/s, which the snapshotter keeps up with
            assert {client.get_job(job_id).state for job_id in old} == {"ready", "scheduled"}
    finally:
        assert broker.stop() == 0
    # Live state is two jobs, so the snapshot threshold dominates: the tail up
    # to it, what is journalled while a snapshot is taken, the open segment.
    bound = 3 * snapshot_min_bytes + 2 * segment_bytes
    print(f"journalled about {written} bytes; peak disk use {peak} bytes (bound {bound})")
    assert written > 4 * bound
    assert peak <= bound


def test_the_data_directory_is_0700_and_every_file_in_it_0600(
    tmp_path: os.PathLike[str],
) -> None:
    data = os.path.join(tmp_path, "data")
    broker = BrokerProcess(data, SMALL).start()
    _push(broker, 200)
    assert broker.wait_for_log("snapshot through seq", timeout_s=20)
    broker.kill()
    last = sorted(name for name in os.listdir(data) if name.endswith(".log"))[-1]
    with open(os.path.join(data, last), "ab") as file:
        file.write(b"\x00\x00\x01torn")  # a torn tail: start-up keeps it in a .broken file
    wide = os.path.join(data, "notes.txt")
    write_file(wide, b"left by an operator")
    os.chmod(wide, 0o644)
    os.chmod(data, 0o755)
    restarted = BrokerProcess(data, SMALL).start()
    try:
        _push(restarted, 50, prefix="more")
        modes = {
            name: stat.S_IMODE(os.stat(os.path.join(data, name)).st_mode)
            for name in os.listdir(data)
        }
        assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
        kinds = {name.rsplit(".", 1)[-1] for name in modes}
        assert {"log", "snap", "broken", "txt"} <= kinds and "lock" in modes
        assert set(modes.values()) == {0o600}, modes
    finally:
        restarted.kill()


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


def test_a_real_write_error_exits_75_at_once_and_a_restart_keeps_every_acknowledged_push(
    tmp_path: os.PathLike[str],
) -> None:
    data = os.path.join(tmp_path, "data")
    args = ["--segment-bytes", str(64 << 20), "--snapshot-min-bytes", str(1 << 40)]
    broker = BrokerProcess(data, args, preexec_fn=_limit_file_size).start()
    acked: list[str] = []
    refused_s = 0.0
    try:
        with _connect(broker) as client:
            for n in range(100_000):
                try:
                    acked.append(push_once(client, f"job-{n}", {"pad": "x" * 500}))
                except (JournalFailed, ConnectionLost) as refusal:
                    refused_s = time.monotonic()
                    assert isinstance(refusal, JournalFailed) or acked, refusal
                    break
        assert refused_s, "the file-size limit was never reached"
        assert broker.process is not None
        assert broker.process.wait(timeout=10) == 75
        assert time.monotonic() - refused_s < 3.0  # 2 s, and a little for the reaping
        assert broker.wait_for_log("errno 27")  # EFBIG, with the path and last durable seq
        assert any("last durable seq" in line and data in line for line in broker.log)
    finally:
        broker.kill()
    restarted = BrokerProcess(data).start()
    try:
        with _connect(restarted) as client:
            for job_id in acked:
                assert client.get_job(job_id).state == "ready"
    finally:
        restarted.kill()
    assert len(acked) > 100


def test_the_journal_tools_verify_dump_and_compact(tmp_path: os.PathLike[str]) -> None:
    data = os.path.join(tmp_path, "data")
    broker = BrokerProcess(data, ONE_SNAPSHOT).start()
    _push(broker, 300)
    assert broker.wait_for_log("snapshot through seq", timeout_s=20)
    broker.kill()  # no shutdown snapshot: a tail of records stays
    verified = _tool("verify", data)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "pushed:" in verified.stdout and "no problem" in verified.stdout
    dumped = _tool("dump", data)
    assert dumped.returncode == 0, dumped.stderr
    lines = [msgspec.json.decode(line) for line in dumped.stdout.splitlines()]
    seqs = [line["seq"] for line in lines[:-1]]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) and len(seqs) > 10
    assert lines[-1]["state_jobs"] == 300 and lines[-1]["through"] == seqs[0] - 1
    leash = os.path.join(os.path.dirname(sys.executable), "leash")
    via_leash = subprocess.run(
        [leash, "journal", "verify", data], capture_output=True, text=True, timeout=60, check=False
    )
    assert via_leash.returncode == 0 and via_leash.stdout == verified.stdout
    segment = sorted(os.path.join(data, n) for n in os.listdir(data) if n.endswith(".log"))[-1]
    original = read_file(segment)
    middle = record_offsets(original)[1] + 10
    write_file(segment, original[:middle] + bytes([original[middle] ^ 1]) + original[middle + 1 :])
    damaged = _tool("verify", data)
    assert damaged.returncode == 1 and "problem:" in damaged.stdout and segment in damaged.stdout
    write_file(segment, original)
    compacted = _tool("compact", data)
    assert compacted.returncode == 0, compacted.stdout
    assert [n for n in os.listdir(data) if n.endswith(".log")] != [os.path.basename(segment)]
    after = _tool("dump", data)
    assert msgspec.json.decode(after.stdout.splitlines()[-1])["state_jobs"] == 300
    assert len(after.stdout.splitlines()) == 1, "every record is in the snapshot now"
    running = BrokerProcess(data).start()
    try:
        refused = _tool("compact", data)
        assert refused.returncode == 1 and "locked by pid" in refused.stdout
        with _connect(running) as client:
            assert client.get_job("job-299").state == "ready"
    finally:
        running.kill()


@pytest.mark.parametrize("tool", ["verify", "dump", "compact"])
def test_a_journal_tool_on_a_directory_that_does_not_exist_fails_clearly(
    tmp_path: os.PathLike[str], tool: str
) -> None:
    result = _tool(tool, os.path.join(tmp_path, "missing"))
    assert result.returncode == 1 and "missing" in result.stdout + result.stderr
