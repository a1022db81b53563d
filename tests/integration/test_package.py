"""Leash as a team installs it: a wheel, built from an sdist, in a fresh venv
beside an application that has its own ``client.py`` and ``protocol.py``.

The build and the install are offline: the sdist and the wheel are built by
the dev venv's setuptools (the ``test`` extra), the wheel is installed with
``--no-deps --no-index``, and the dependencies (msgspec, uvloop,
prometheus-client, argcomplete) are made visible through a ``.pth`` line that
names the dev venv's site-packages. A ``.pth`` line only adds a directory:
the dev venv's editable finder (its own ``.pth``) is not run, which the test
checks, so ``leash`` is the wheel's.
"""

import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import msgspec
import pytest

from leash.client import Client
from tests.integration.broker_proc import BrokerProcess

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ["pyproject.toml", "README.md", "LICENSE", "leash", "protocol", "broker", "client", "web"]
BUILD_TIMEOUT_S = 120
RUN_TIMEOUT_S = 60
DONE_TIMEOUT_S = 20

APP_PROTOCOL = """GREETING = "hello from the app's own protocol module"
"""
APP_CLIENT = '''"""The application's own client module: the name Leash must leave free."""
import os

import protocol  # the application's, not Leash's
from leash import handler


@handler("greet")
def greet(name):
    with open(os.environ["APP_OUT"], "a") as out:
        out.write(f"{protocol.GREETING}, {name}\\n")
'''
APP_PRODUCE = """import sys

import client  # the application's own modules
import protocol
from leash import Client

app = sys.argv[2]
assert client.__file__.startswith(app) and protocol.__file__.startswith(app)
with Client("127.0.0.1", int(sys.argv[1])) as leash_client:
    leash_client.push("check", [1, 2], queue="roundtrip")
    job = leash_client.fetch("roundtrip", wait_ms=5000)
    assert job is not None and job.args == [1, 2], job
    leash_client.ack(job)
    print(leash_client.push("greet", ["ada"], queue="app"))
"""


def run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S
    )
    assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEASH_", "PYTHON"))}
    return {**env, **extra}


def build_wheel(tmp: Path) -> Path:
    """sdist from a copy of the source, then the wheel from the unpacked sdist."""
    source = tmp / "source"
    source.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            ignore = shutil.ignore_patterns("__pycache__")
            shutil.copytree(path, source / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy(path, source / name)
    backend = "import setuptools.build_meta as b, sys; print(b.{}(sys.argv[1]))"
    env = clean_env()
    sdist = run(
        [sys.executable, "-c", backend.format("build_sdist"), str(tmp / "dist")], source, env
    )
    with tarfile.open(tmp / "dist" / sdist.split()[-1]) as archive:
        archive.extractall(tmp / "unpacked", filter="data")
    (unpacked,) = (tmp / "unpacked").iterdir()
    wheel = run(
        [sys.executable, "-c", backend.format("build_wheel"), str(tmp / "dist")], unpacked, env
    )
    return tmp / "dist" / wheel.split()[-1]


def make_venv(tmp: Path, wheel: Path) -> tuple[Path, Path]:
    """A fresh venv with only the wheel installed: its bin and its site-packages."""
    venv = tmp / "venv"
    env = clean_env()
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, env)
    python = venv / "bin" / "python"
    run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", "--no-index", str(wheel)],
        tmp,
        env,
    )  # fmt: skip
    purelib = Path(
        run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            tmp, env).strip()
    )  # fmt: skip
    dev_site = Path(msgspec.__file__).resolve().parents[1]
    (purelib / "dev-dependencies.pth").write_text(f"{dev_site}\n")
    return venv / "bin", purelib


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("package")
    return make_venv(tmp, build_wheel(tmp))


def test_the_wheel_holds_the_leash_package_its_licence_and_types_and_nothing_else(
    installed: tuple[Path, Path],
) -> None:
    _, purelib = installed
    top = {path.name for path in purelib.iterdir()} - {"dev-dependencies.pth", "__pycache__"}
    dist_info = {name for name in top if name.endswith(".dist-info")}
    assert top - dist_info == {"leash"}
    assert not {"client", "protocol", "broker", "client.py", "protocol.py"} & top
    package = purelib / "leash"
    assert (package / "py.typed").is_file()
    for part in ("client", "protocol", "broker", "web"):
        assert (package / part).is_dir() and not (package / part).is_symlink()
        assert (package / part / "__init__.py").is_file()
    for data in ("templates/base.html", "templates/overview.html", "static/app.js"):
        assert (package / "web" / data).is_file(), data
    (info,) = dist_info
    assert "Apache License" in (purelib / info / "licenses" / "LICENSE").read_text()


def test_leash_there_is_the_wheel_not_the_checkout(
    installed: tuple[Path, Path], tmp_path: Path
) -> None:
    bin_dir, purelib = installed
    probe = (
        "import importlib.util, leash, leash.client;"
        "print(leash.__file__, leash.client.__file__, leash.__version__,"
        " [importlib.util.find_spec(n) is None for n in ('client', 'protocol', 'broker')])"
    )
    out = run([str(bin_dir / "python"), "-c", probe], tmp_path, clean_env()).split()
    assert out[0].startswith(str(purelib)) and out[1].startswith(str(purelib)), out
    import leash

    assert out[2] == leash.__version__
    assert out[3:] == ["[True,", "True,", "True]"]
    version = run([str(bin_dir / "leash"), "--version"], tmp_path, clean_env())
    assert version.strip() == f"leash {leash.__version__}"


def test_an_app_with_its_own_client_and_protocol_pushes_fetches_acks_and_runs_leash_worker(
    installed: tuple[Path, Path], tmp_path: Path
) -> None:
    bin_dir, _ = installed
    app = tmp_path / "app"
    app.mkdir()
    (app / "protocol.py").write_text(APP_PROTOCOL)
    (app / "client.py").write_text(APP_CLIENT)
    (app / "produce.py").write_text(APP_PRODUCE)
    out = tmp_path / "greetings.txt"
    env = clean_env(APP_OUT=str(out))
    broker = BrokerProcess(str(tmp_path / "data"), python=str(bin_dir / "python"), env=env)
    broker.start()
    worker = None
    try:
        produced = run(
            [str(bin_dir / "python"), "produce.py", str(broker.port), str(app)], app, env
        )
        job_id = produced.strip()
        worker = subprocess.Popen(
            [str(bin_dir / "leash"), "worker", "client", "--queues", "app",
             "--port", str(broker.port)],
            cwd=app, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + DONE_TIMEOUT_S
        while not out.exists() and time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.05)
        assert out.read_text() == "hello from the app's own protocol module, ada\n"
        with Client("127.0.0.1", broker.port) as check:
            for _ in range(100):  # acked a moment after the handler wrote
                if check.get_job(job_id).state == "succeeded":  # in the finished-job history
                    break
                time.sleep(0.05)
            assert check.get_job(job_id).state == "succeeded"
    finally:
        if worker is not None:
            if worker.poll() is None:
                os.kill(worker.pid, signal.SIGTERM)
            _, stderr = worker.communicate(timeout=RUN_TIMEOUT_S)
            assert worker.returncode == 0, stderr
        assert broker.stop() == 0
