"""Every Python example of README.md runs as written, against a real broker.

The examples are read from the README itself, so they cannot drift from
what this test runs: each ```python block (and the ``leash worker`` command
that runs the worker module) is matched to one of the cases below by a line
of its own, written to a file in a fresh directory and run as a real
process. The only changes made to an example are where it is: the port
7420 becomes the test broker's port and the host ``broker.internal``
becomes 127.0.0.1 (files such as ``keys.toml`` and ``ca.pem`` are made in
the directory it runs in). A block that no case knows fails the test: add
a case for it.
"""

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from leash.client import AdminClient, Client
from tests.integration.broker_proc import BrokerProcess
from tests.integration.net_helpers import key_file, new_key
from tests.integration.test_processes import gone, wait_until
from tests.integration.tls_certs import TlsFiles

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
RUN_TIMEOUT_S = 60.0


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.MULTILINE | re.DOTALL)


def example(marker: str) -> str:
    """The one Python block that holds ``marker``."""
    (found,) = [block for block in blocks("python") if marker in block]
    return found


def worker_command() -> list[str]:
    """The README's ``leash worker`` command, as words."""
    (line,) = [
        line
        for block in blocks("sh")
        for line in block.splitlines()
        if re.match(r"^\S*leash worker ", line)
    ]
    return shlex.split(line.split("#")[0])


def placed(source: str, port: int) -> str:
    return source.replace("7420", str(port)).replace("broker.internal", "127.0.0.1")


def leash_command(words: list[str], port: int) -> list[str]:
    """A README ``leash ...`` command run with this interpreter, at the test broker."""
    assert words[0].endswith("leash"), words
    cli = [sys.executable, "-c", "from leash.client.cli import main; main()"]
    return [*cli, *words[1:], "--port", str(port)]


def run(source: str, directory: Path, port: int) -> None:
    script = directory / "example.py"
    script.write_text(placed(source, port))
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert done.returncode == 0, f"{source}\n---\n{done.stderr}"


@pytest.fixture
def workers() -> Iterator[Callable[[list[str], Path], "subprocess.Popen[bytes]"]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(command: list[str], directory: Path) -> "subprocess.Popen[bytes]":
        process = subprocess.Popen(
            command, cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=30)


def stop(worker: "subprocess.Popen[bytes]") -> None:
    """SIGTERM twice: the second releases at once, not after the held fetch."""
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    worker.send_signal(signal.SIGTERM)
    _, stderr = worker.communicate(timeout=RUN_TIMEOUT_S)
    assert worker.returncode == 0, stderr.decode()


# --- the cases ------------------------------------------------------------------------

QUICK_START = 'client.push("send_email"'
WORKER_MODULE = "worker = Worker("
BATCH = "client.create_batch("
ADD_TO_BATCH = "add_to_batch("
KEYS = 'key=load_key("keys.toml"'
TLS = "tls=tls_context("
PIPELINE = "client.pipeline()"
CASES = (QUICK_START, WORKER_MODULE, BATCH, ADD_TO_BATCH, KEYS, TLS, PIPELINE)


def test_every_python_example_of_the_readme_is_one_of_the_cases_run_here() -> None:
    for block in blocks("python"):
        known = [case for case in CASES if case in block]
        assert len(known) == 1, f"a README example no test runs (add a case):\n{block}"
    assert len(blocks("python")) == len(CASES)


def test_the_quick_start_pushes_fetches_and_acks(
    launch_broker: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    broker = launch_broker()
    run(example(QUICK_START), tmp_path, broker.port)  # it fails if the fetch finds nothing
    with AdminClient.for_data_dir(broker.data_dir) as admin:
        assert admin.stats().totals["pushed"] == admin.stats().totals["acked"] == 1


def test_the_pipeline_example_pushes_its_jobs_and_has_their_ids(
    launch_broker: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    broker = launch_broker()
    source = example(PIPELINE) + "\nprint(*ids)\n"
    script = tmp_path / "example.py"
    script.write_text(placed(source, broker.port))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    assert done.returncode == 0, done.stderr
    ids = done.stdout.split()
    with Client("127.0.0.1", broker.port) as client:
        jobs = client.fetch_many("images", 10)
    assert sorted(job.id for job in jobs) == sorted(ids)
    assert sorted(job.args[0] for job in jobs) == ["a.jpg", "b.jpg"]


def test_the_worker_module_runs_with_the_readme_command(
    launch_broker: Callable[..., BrokerProcess],
    workers: Callable[[list[str], Path], "subprocess.Popen[bytes]"],
    tmp_path: Path,
) -> None:
    broker = launch_broker()
    (tmp_path / "tasks.py").write_text(placed(example(WORKER_MODULE), broker.port))
    command = worker_command()
    assert command[1:3] == ["worker", "tasks"], command
    worker = workers(leash_command(command, broker.port), tmp_path)
    with Client("127.0.0.1", broker.port) as client:
        job_id = client.push("send_email", {"to": "ada@example.com"}, queue="mail")
        assert wait_until(lambda: gone(client, job_id), 20), "the worker did not ack it"
    stop(worker)


def test_the_batch_example_creates_and_commits_its_batch(
    launch_broker: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    broker = launch_broker()
    run(example(BATCH), tmp_path, broker.port)
    with AdminClient.for_data_dir(broker.data_dir) as admin:
        (batch,) = admin.batches()
        assert (batch.description, batch.state, batch.total) == ("gallery 42", "committed", 3)


def test_a_handler_adds_to_its_own_batch_as_the_readme_shows(
    launch_broker: Callable[..., BrokerProcess],
    workers: Callable[[list[str], Path], "subprocess.Popen[bytes]"],
    tmp_path: Path,
) -> None:
    broker = launch_broker()
    (tmp_path / "split_tasks.py").write_text(placed(example(ADD_TO_BATCH), broker.port))
    command = ["leash", "worker", "split_tasks"]
    worker = workers(leash_command(command, broker.port), tmp_path)
    with Client("127.0.0.1", broker.port) as client:
        created = client.create_batch([{"type": "split", "args": [3]}], commit=True)
        assert wait_until(lambda: client.batch_status(created.id).total == 4, 20)
        pages = client.fetch_many("pages", 10)
        assert sorted(job.args for job in pages) == [[0], [1], [2]]
        assert {job.type for job in pages} == {"render"}
    stop(worker)


def test_the_key_examples_authenticate(
    launch_broker: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    keys = key_file(tmp_path / "keys.toml", new_key("key-2027"), new_key("key-now"))
    broker = launch_broker("--key-file", keys)
    run(example(KEYS), tmp_path, broker.port)


def test_the_tls_examples_verify_the_broker_and_authenticate(
    launch_broker: Callable[..., BrokerProcess], tmp_path: Path, tls_files: TlsFiles
) -> None:
    keys = key_file(tmp_path / "keys.toml", new_key("key-now"))
    (tmp_path / "ca.pem").write_bytes(Path(tls_files.ca).read_bytes())
    tls = ("--tls-cert", tls_files.server_cert, "--tls-key", tls_files.server_key)
    broker = launch_broker("--key-file", keys, *tls)
    run(example(TLS), tmp_path, broker.port)
