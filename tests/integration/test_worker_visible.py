"""Visible work against a real broker: the worker's Prometheus endpoint, read
after it ran jobs of each outcome, the same counts in the broker's processes
view (told by the worker's beats), and ``leash worker --log-format json``."""

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from argparse import Namespace
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from leash import Client, Worker, current_job
from leash.client._admin_runs import processes as processes_table
from leash.client._metrics import REQUEST_HEAD_MAX_BYTES
from leash.client.cli import main
from leash.protocol.messages import JobsRun
from tests.integration.broker_proc import BrokerProcess
from tests.integration.worker_thread import WAIT_S, running, settled
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]
OK_SLEEP_S = 0.03  # each "ok" job sleeps this long: never in the 0.025 s bucket


def scrape(address: tuple[str, int], path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://{address[0]}:{address[1]}{path}", timeout=WAIT_S) as got:
        assert got.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text: str = got.read().decode()
        return text


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition text, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def raw_request(address: tuple[str, int], data: bytes) -> str:
    """What the endpoint answers to ``data``: its status line."""
    with socket.create_connection(address, timeout=WAIT_S) as conn:
        conn.sendall(data)
        answer = b""
        while chunk := conn.recv(65_536):
            answer += chunk
    return answer.split(b"\r\n", 1)[0].decode()


EXPECTED_COUNTS = {
    "ok": {"done": 3},
    "flaky": {"retrying": 1, "done": 1},
    "broken": {"dead": 1},
    "nobody": {"unknown": 1},
}


def make_worker(port: int) -> Worker:
    worker = Worker(["visible"], concurrency=3, port=port, wait_ms=200, grace_s=2, metrics_port=0)

    @worker.handler("ok")
    def ok() -> None:
        time.sleep(OK_SLEEP_S)

    @worker.handler("flaky")
    def flaky() -> None:
        job = current_job()
        if job is not None and job.attempt == 1:
            raise KeyError("first attempt")

    @worker.handler("broken")
    def broken() -> None:
        raise RuntimeError("always")

    return worker


BEAT_MS = 100  # the broker's heartbeat_ms: the worker tells its counts this often


@pytest.fixture
def broker(launch_broker: Callable[..., BrokerProcess]) -> BrokerProcess:
    return launch_broker("--heartbeat-ms", str(BEAT_MS))


@pytest.fixture
def client(broker: BrokerProcess) -> Iterator[Client]:
    with Client(port=broker.port) as client:
        yield client


def test_the_metrics_endpoint_counts_runs_per_type_and_outcome_with_their_durations(
    broker: BrokerProcess, client: Client
) -> None:
    worker = make_worker(broker.port)
    told = {name: JobsRun(**outcomes) for name, outcomes in EXPECTED_COUNTS.items()}
    with running(worker), broker.admin() as admin:
        assert wait_until(lambda: worker.metrics_address is not None)
        address = worker.metrics_address
        assert address is not None and address[0] == "127.0.0.1"
        for _ in range(3):
            client.push("ok", queue="visible")
        client.push("flaky", queue="visible", retry_base_ms=10)
        client.push("broken", queue="visible", max_attempts=1)
        nobody = client.push("nobody", queue="visible")
        assert wait_until(lambda: worker.figures.counts() == EXPECTED_COUNTS)
        settled(client, nobody, "dead")  # the last outcome sent is answered
        got = samples(scrape(address))
        assert raw_request(address, b"POST /metrics HTTP/1.1\r\n\r\n").startswith("HTTP/1.1 405")
        assert raw_request(address, b"GET /other HTTP/1.1\r\n\r\n").startswith("HTTP/1.1 404")
        assert raw_request(address, b"hello\r\n\r\n").startswith("HTTP/1.1 400")
        huge = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * REQUEST_HEAD_MAX_BYTES + b"\r\n\r\n"
        assert raw_request(address, huge).startswith("HTTP/1.1 431")
        assert "leash_worker_jobs_total" in scrape(address, "/metrics?x=1")  # still serving
        # The broker's processes view: the same counts, from the worker's next beat.
        assert wait_until(lambda: [p.ran for p in admin.processes()] == [told])
        table = processes_table(admin, Namespace()).text()
        assert table.splitlines()[0].endswith("  RAN")
        assert table.splitlines()[1].endswith("  4 done, 1 retrying, 1 dead, 1 unknown")
    counts = {
        (dict(labels)["type"], dict(labels)["outcome"]): value
        for (name, labels), value in got.items()
        if name == "leash_worker_jobs_total"
    }
    assert counts == {
        (job_type, outcome): count
        for job_type, outcomes in EXPECTED_COUNTS.items()
        for outcome, count in outcomes.items()
    }
    histogram = "leash_worker_job_duration_seconds"
    assert got[(f"{histogram}_count", (("type", "ok"),))] == 3
    assert got[(f"{histogram}_count", (("type", "flaky"),))] == 2
    assert got[(f"{histogram}_count", (("type", "broken"),))] == 1
    assert (f"{histogram}_count", (("type", "nobody"),)) not in got  # never ran
    assert got[(f"{histogram}_sum", (("type", "ok"),))] >= 3 * OK_SLEEP_S
    assert got[(f"{histogram}_bucket", (("le", "0.025"), ("type", "ok")))] == 0  # slept longer
    assert got[(f"{histogram}_bucket", (("le", "+Inf"), ("type", "ok")))] == 3
    assert got[("leash_worker_jobs_running", ())] == 0
    assert got[("leash_worker_slots", ())] == 3
    assert got[("leash_worker_stuck_threads", ())] == 0
    with pytest.raises(urllib.error.URLError):  # the endpoint closed with the worker
        scrape(address)


def test_no_metrics_endpoint_unless_asked_and_bad_ports_are_refused() -> None:
    assert Worker().metrics_port is None
    with pytest.raises(ValueError, match="metrics_port must be from 0 to 65535, not 70000"):
        Worker(metrics_port=70_000)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = Worker(port=1, metrics_port=port, handlers={"t": print})
        with pytest.raises(OSError, match=f"cannot serve metrics on 127.0.0.1:{port}: "):
            asyncio.run(worker.run_async())  # before it connects to any broker


def test_leash_worker_logs_json_lines_with_the_job_fields(broker: BrokerProcess) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-m", "leash", "worker", "tests.integration.apps.tasks",
         "--port", str(broker.port), "--wait-ms", "200", "--log-format", "json",
         "--metrics-port", "0"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(worker.stderr or ()), daemon=True)
    reader.start()
    try:
        with Client(port=broker.port) as client:
            done = client.push("double", [21])
            dead = client.push("explode", max_attempts=1)
            settled(client, dead, "dead")
            assert wait_until(
                lambda: any(f'"{done}"' in line and "done in" in line for line in lines)
            )
        worker.terminate()
        worker.wait(WAIT_S)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(WAIT_S)
        reader.join(WAIT_S)
        if worker.stderr is not None:
            worker.stderr.close()
    assert worker.returncode == 0, lines
    parsed = [json.loads(line) for line in lines]  # every line is one JSON object
    by_job = {
        (line["job_id"], line["message"].split(" ")[-1]): line
        for line in parsed
        if "job_id" in line
    }
    started = by_job[(done, "started")]
    assert (started["job_type"], started["job_attempt"], started["level"]) == ("double", 1, "info")
    assert "duration_s" not in started
    ended = next(line for line in parsed if line.get("job_id") == done and "duration_s" in line)
    assert ended["level"] == "info" and " done in " in ended["message"]
    assert ended["duration_s"] >= 0
    failed = next(line for line in parsed if line.get("job_id") == dead and "duration_s" in line)
    assert failed["level"] == "error" and failed["job_type"] == "explode"
    assert "RuntimeError: exploded on purpose" in failed["error"]  # the traceback
    assert any("metrics on http://127.0.0.1:" in line["message"] for line in parsed)


def test_a_bad_log_format_variable_is_an_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LEASH_LOG_FORMAT", "xml")
    assert main(["worker", "tests.integration.apps.tasks"]) == 1
    error = "leash: error: LEASH_LOG_FORMAT must be one of text, json, not 'xml'\n"
    assert capsys.readouterr().err == error
