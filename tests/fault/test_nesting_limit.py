"""Job args at the nesting limit, through the real program: accepted, and
back after kill -9 and a restart, after a restart with --repair-truncate,
after a clean stop (from the snapshot), and in ``leash journal verify``; one
level more is refused with the request's rid and the field's path, and
changes nothing. Once, args about 985 levels deep were accepted and a
kill -9 later the broker could not start again."""

import os
import subprocess
import sys

import msgspec
import pytest

from leash.broker.core import records as R
from leash.client import Client, NotFound
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from leash.protocol.limits import ARGS_DEPTH_MAX
from tests.integration.broker_proc import BrokerProcess
from tests.integration.net_helpers import Raw
from tests.journal_kit import append

TOOL_TIMEOUT_S = 60


def nested(levels: int) -> bytes:
    return b"\x91" * levels + b"\xa4leaf"


def _verify(data: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        [sys.executable, "-m", "leash.broker", "journal", "verify", data],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )


def _args_of(broker: BrokerProcess, job_id: str) -> bytes:
    with Client("127.0.0.1", broker.port, timeout_s=10.0) as client:
        return bytes(client.get_job(job_id).args)


def test_args_at_the_nesting_limit_survive_every_restart_and_one_level_more_is_refused(
    tmp_path: os.PathLike[str],
) -> None:
    data = os.path.join(tmp_path, "data")
    at_limit = nested(ARGS_DEPTH_MAX)
    broker = BrokerProcess(data).start()
    try:
        with Raw(broker.port) as raw:
            raw.hello()
            deep = M.JobSpec(type="t", id="deep", args=msgspec.Raw(at_limit))
            raw.send(M.Push(rid=41, job=deep))
            assert isinstance(raw.reply(), M.Pushed)
            too_deep = M.JobSpec(type="t", id="too-deep", args=msgspec.Raw(nested(65)))
            raw.send(M.Push(rid=42, job=too_deep))
            error = raw.error()
            assert (error.code, error.rid, error.path) == (ErrorCode.BAD_REQUEST, 42, "$.job.args")
            raw.send(M.Push(rid=43, job=M.JobSpec(type="t", id="after")))  # still open
            assert isinstance(raw.reply(), M.Pushed)
        with Client("127.0.0.1", broker.port, timeout_s=10.0) as client, pytest.raises(NotFound):
            client.get_job("too-deep")  # the refused push changed nothing
    finally:
        broker.kill()
    for flags in ([], ["--repair-truncate"]):
        broker = BrokerProcess(data, flags).start()
        try:
            assert _args_of(broker, "deep") == at_limit
        finally:
            broker.kill()
    broker = BrokerProcess(data).start()
    assert broker.stop() == 0  # writes a snapshot
    assert any(name.endswith(".snap") for name in os.listdir(data))
    verified = _verify(data)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    broker = BrokerProcess(data).start()
    try:
        assert _args_of(broker, "deep") == at_limit
    finally:
        broker.kill()


def test_a_record_no_reader_can_read_exits_78_naming_it_and_verify_says_the_same(
    tmp_path: os.PathLike[str],
) -> None:
    """A journal written before the limit, with args nested 5 000 levels."""
    data = os.path.join(tmp_path, "data")
    os.mkdir(data, 0o700)
    job = R.NewJob("deep", "q", "t", msgspec.Raw(nested(5_000)), 5, 25, 60_000, None, 1, None)
    append(data, [R.Booted(1, 1), R.JobsPushed([job], 0)])
    broker = BrokerProcess(data).start(wait=False)
    assert broker.process is not None
    assert broker.process.wait(TOOL_TIMEOUT_S) == 78
    broker.kill()
    log = "".join(broker.log)
    assert "Traceback" not in log
    [line] = [line for line in broker.log if "journal is corrupt" in line]
    problem = line.split("journal is corrupt: ", 1)[1].strip()
    assert "journal-00000000000000000001.log: offset " in problem and ", seq 2: " in problem
    verified = _verify(data)
    assert verified.returncode == 1
    assert f"problem: {problem}" in verified.stdout
