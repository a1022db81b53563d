"""The README's quick start, run as written against a real broker.

The only change made to the snippets: the broker listens on a free port, not
7420, so the port in them is replaced (the test checks that it is there to
replace). The sh lines of the first block are the Makefile's targets, and
CI's script calls the README's test command.
"""

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from leash.client import Client
from leash.client._exceptions import NotFound
from tests.integration.broker_proc import BrokerProcess

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
RUN_TIMEOUT_S = 30
DONE_TIMEOUT_S = 20


def quick_start_blocks() -> list[tuple[str, str]]:
    """(language, code) of each fenced block of the Quick start section, in order."""
    section = re.search(r"^## Quick start\n(.*?)(?=^## )", README, re.MULTILINE | re.DOTALL)
    assert section is not None
    return re.findall(r"^```(\w+)\n(.*?)^```", section.group(1), re.MULTILINE | re.DOTALL)


def test_the_quick_start_commands_are_the_makefiles_and_ci_runs_the_test_one() -> None:
    (lang, commands), *_ = quick_start_blocks()
    assert lang == "sh"
    targets = [line.split("#")[0].split() for line in commands.splitlines()]
    assert targets == [["make", "run"], ["make", "test"]]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run: .*\n\t\$\(VENV\)/bin/leash serve \$\(ARGS\)$", makefile, re.MULTILINE)
    assert re.search(r"^test: ", makefile, re.MULTILINE)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_quick_start_pushes_fetches_acks_and_its_worker_runs_the_job(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    blocks = quick_start_blocks()
    python = [code for lang, code in blocks if lang == "python"]
    shell = [code for lang, code in blocks if lang == "sh"]
    producer, tasks = python
    assert producer.count('Client("127.0.0.1", 7420)') == 1
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEASH_")}
    script = producer.replace("7420", str(broker.port))
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, check=True, timeout=30)
    with Client("127.0.0.1", broker.port) as client:
        assert client.fetch("mail") is None  # the snippet acked what it pushed

    (tmp_path / "tasks.py").write_text(tasks)
    (command,) = shell[1].strip().splitlines()
    argv = shlex.split(command)
    assert argv[0] == ".venv/bin/leash"
    with Client("127.0.0.1", broker.port) as client:
        job_id = client.push("send_email", {"to": "ada@example.com"}, queue="mail")
    worker = subprocess.Popen(
        [sys.executable, "-m", "leash", *argv[1:], "--port", str(broker.port)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        with Client("127.0.0.1", broker.port) as client:
            deadline = time.monotonic() + DONE_TIMEOUT_S
            while time.monotonic() < deadline and worker.poll() is None:
                try:
                    client.get_job(job_id)
                except NotFound:
                    break  # acked by the worker
                time.sleep(0.05)
            else:
                raise AssertionError("the worker did not ack the job")
    finally:
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGTERM)
        _, stderr = worker.communicate(timeout=RUN_TIMEOUT_S)
    assert worker.returncode == 0, stderr
