"""`leash push` and `leash worker` against a broker with keys and TLS, as real processes."""

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from leash.client import Client, tls_context
from tests.integration.broker_proc import BrokerProcess
from tests.integration.net_helpers import key_file, new_key
from tests.integration.test_worker_real import ROOT, gone, wait_until
from tests.integration.tls_certs import TlsFiles

Launch = Callable[..., BrokerProcess]


def leash(*args: str) -> "subprocess.CompletedProcess[str]":
    code = "import sys; from leash.client.cli import main; sys.exit(main())"
    command = [sys.executable, "-c", code, *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_leash_push_and_worker_use_the_key_and_tls_flags(
    launch_broker: Launch, tls_files: TlsFiles, tmp_path: Path
) -> None:
    key = new_key("k-cli")
    keys = key_file(tmp_path / "keys.toml", key)
    broker = launch_broker(
        "--key-file", keys, "--tls-cert", tls_files.server_cert, "--tls-key", tls_files.server_key
    )
    security = ["--key-file", keys, "--tls-ca", tls_files.ca, "--port", str(broker.port)]
    pushed = leash("push", "double", "[21]", *security)
    assert pushed.returncode == 0, pushed.stderr
    job_id = pushed.stdout.strip()
    refused = leash("push", "double", "[1]", "--port", str(broker.port), "--tls-ca", tls_files.ca)
    assert refused.returncode == 1 and "auth_required" in refused.stderr
    url = f"leashs://127.0.0.1:{broker.port}?ca={tls_files.ca}&key_file={keys}"
    command = [
        sys.executable, "-c", "from leash.client.cli import main; main()", "worker",
        "tests.integration.apps.tasks", "--url", url, "--concurrency", "2",
    ]  # fmt: skip
    worker = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with Client("127.0.0.1", broker.port, key=key, tls=tls_context(tls_files.ca)) as client:
            assert wait_until(lambda: gone(client, job_id), 20)  # the worker ran and acked it
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    assert worker.returncode == 0, stderr.decode()
