"""The framework examples of docs/frameworks.md, run against a real broker:
the Starlette app pushes through the AsyncClient its lifespan opened; the
Django project's ``leashworker`` command works a job and exits 0 on
SIGTERM."""

import datetime
import importlib.util
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from types import ModuleType

import httpx
import pytest

from leash.client import Client
from tests.integration.broker_proc import BrokerProcess
from tests.integration.test_worker_real import gone

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "docs", "examples")
WAIT_S = 20.0


def load(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("starlette_app_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_starlette_app_pushes_with_the_client_of_its_lifespan(
    broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEASH_URL", f"leash://127.0.0.1:{broker.port}")
    app = load(os.path.join(EXAMPLES, "starlette_app.py")).app
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app):  # as a server runs it: startup, then shutdown
        client = app.state.leash
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            answers = [
                await http.post("/orders", json={"order": n, "total": "12.50"}) for n in (1, 2)
            ]
        assert app.state.leash is client  # one client for the app's life
        with broker.admin() as admin:
            assert [process.connections for process in admin.processes()] == [1]
    assert client.closed  # closed when the app stopped
    assert [answer.status_code for answer in answers] == [202, 202]
    with Client("127.0.0.1", broker.port) as leash:
        jobs = leash.fetch_many("mail", 10, wait_ms=5_000)
        assert sorted(job.id for job in jobs) == sorted(answer.json()["job"] for answer in answers)
        args = jobs[0].args
        assert type(args["total"]) is Decimal and str(args["total"]) == "12.50"
        assert isinstance(args["placed_at"], datetime.datetime)


def test_the_django_command_works_a_job_and_stops_on_sigterm(
    broker: BrokerProcess, tmp_path: "os.PathLike[str]"
) -> None:
    env = dict(os.environ)
    env |= {"LEASH_URL": f"leash://127.0.0.1:{broker.port}", "LEASH_CONCURRENCY": "2"}
    env |= {"SHOP_DATABASE": os.path.join(tmp_path, "db.sqlite3"), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "manage.py", "leashworker", "--grace-s", "5"]
    worker = subprocess.Popen(
        command,
        cwd=os.path.join(EXAMPLES, "django"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        with Client("127.0.0.1", broker.port) as client:
            when = datetime.datetime(2026, 1, 1, 9, 30, tzinfo=datetime.UTC)
            job_id = client.push(
                "send_receipt",
                {"order": 7, "total": Decimal("12.50"), "placed_at": when},
                queue="mail",
            )
            deadline = time.monotonic() + WAIT_S
            while not gone(client, job_id) and time.monotonic() < deadline:
                assert worker.poll() is None, worker.communicate()
                time.sleep(0.05)
            assert gone(client, job_id), "the job was not acked"
    finally:
        worker.send_signal(signal.SIGTERM)
        stdout, stderr = worker.communicate(timeout=30)
    assert worker.returncode == 0, stderr.decode()
    assert "receipt for order 7: Decimal 12.50, placed 2026-01-01 09:30:00+00:00" in stderr.decode()
    assert "leash worker stopped (0 jobs unfinished)" in stdout.decode()
