"""The ``leash`` command answers like a tool: versions, ping, pause of an unknown
queue, ranges, help, a closed pipe, Ctrl-C on an idle worker, completion.

Commands run in this process (tests/cli_run.py) against a real broker; the
installed console script runs as a process of its own where that is what is
tested: its version and exit status, a closed pipe, signals, completion, and
``serve``, which replaces the process with the broker's.
"""

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leash import __version__
from leash._pipes import EXIT_BROKEN_PIPE
from leash.client import AsyncClient, Client, cli
from tests.cli_run import clean_env
from tests.cli_run import run_cli as leash
from tests.integration.broker_proc import BrokerProcess

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 30
PING_BOUND_S = 5.0  # ping gives up after 0.5 s; the rest is a busy machine
IDLE_STOP_BOUND_S = 1.0
CONSOLE_SCRIPT = Path(sys.executable).parent / "leash"


def leash_process(
    *args: str, env: dict[str, str] | None = None
) -> "subprocess.CompletedProcess[str]":
    """The installed console script, in a process of its own."""
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=ROOT,
        env=env if env is not None else clean_env(),
    )


def test_both_commands_say_their_version() -> None:
    assert leash("--version") == (0, f"leash {__version__}\n", "")
    installed = leash_process("--version")
    assert (installed.returncode, installed.stdout) == (0, f"leash {__version__}\n")
    broker = subprocess.run(
        [sys.executable, "-m", "leash.broker", "--version"], capture_output=True, text=True
    )
    assert broker.stdout == f"leash {__version__}\n"


def test_ping_answers_and_names_the_version(broker: BrokerProcess) -> None:
    done = leash("ping", "--data-dir", broker.data_dir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"pong: leash/{__version__}, up ")
    from_env = leash("ping", env=clean_env(LEASH_DATA_DIR=broker.data_dir))
    assert from_env.returncode == 0, from_env.stderr


def test_ping_of_no_broker_or_a_stopped_one_exits_69_within_its_timeout(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    assert leash("ping", "--data-dir", str(tmp_path)).returncode == 69
    os.kill(broker.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        done = leash("ping", "--data-dir", broker.data_dir, "--timeout-s", "0.5")
        elapsed_s = time.monotonic() - started
    finally:
        os.kill(broker.pid, signal.SIGCONT)
    assert done.returncode == 69, done.stderr
    assert "no answer" in done.stderr
    assert elapsed_s < PING_BOUND_S


def test_pause_of_an_unknown_queue_says_so_and_create_pauses_it_ahead(
    broker: BrokerProcess,
) -> None:
    refused = leash("pause", "nightly", "--data-dir", broker.data_dir)
    assert refused.returncode == 3
    assert "no queue 'nightly'" in refused.stderr and "--create" in refused.stderr
    created = leash("pause", "nightly", "--create", "--data-dir", broker.data_dir)
    assert (created.returncode, created.stdout) == (0, "nightly: paused\n")
    again = leash("pause", "nightly", "--data-dir", broker.data_dir)  # it exists now
    assert again.returncode == 0, again.stderr
    with broker.admin() as admin:
        assert [(q.name, q.paused) for q in admin.queues()] == [("nightly", True)]


def test_stop_says_what_it_does_and_what_it_does_not() -> None:
    text = " ".join(leash("stop", "--help").stdout.split()).lower()
    assert "ask a worker process to exit" in text
    assert "the broker keeps running" in text
    assert "(not the broker)" in leash("--help").stdout


@pytest.mark.parametrize(
    "args",
    [
        ["worker", "tasks", "--port", "99999"],
        ["worker", "tasks", "--concurrency", "0"],
        ["worker", "tasks", "--grace-s", "-1"],
        ["worker", "tasks", "--wait-ms", "20001"],
        ["push", "t", "--priority", "10"],
        ["push", "t", "--max-attempts", "0"],
        ["push", "t", "--delay-ms", "-5"],
        ["dead", "--limit", "0"],
        ["batch", "b", "--limit", "1001"],
        ["ping", "--timeout-s", "0"],
    ],
)
def test_a_number_out_of_range_is_refused_with_the_range(args: list[str]) -> None:
    done = leash(*args)
    assert done.returncode == 2
    assert "must be between" in done.stderr and "Traceback" not in done.stderr


def test_every_numeric_flag_of_the_command_has_a_checked_type() -> None:
    unchecked = []
    subparsers = cli._parser()._subparsers
    assert subparsers is not None
    for name, command in subparsers._group_actions[0].choices.items():  # type: ignore[attr-defined]
        for action in command._actions:
            if action.type in (int, float):
                unchecked.append(f"leash {name} {action.option_strings or action.dest}")
    assert unchecked == []


def test_the_console_script_exits_2_on_a_usage_error_and_0_on_help() -> None:
    refused = leash_process("push", "t", "--priority", "10")
    assert refused.returncode == 2
    assert "must be between" in refused.stderr and "Traceback" not in refused.stderr
    helped = leash_process("--help")
    assert (helped.returncode, helped.stderr) == (0, "")
    assert "(not the broker)" in helped.stdout


@pytest.mark.parametrize(
    ("args", "fixed"),
    [
        (["--port", "7431", "push", "t", "[1]"], "leash push --port 7431 t '[1]'"),
        (["--host", "h", "--port", "1", "stats"], "leash stats --host h --port 1"),
        (["-q", "a b", "ready"], "leash ready -q 'a b'"),
    ],
)
def test_options_before_the_command_are_refused_with_the_line_put_right(
    args: list[str], fixed: str
) -> None:
    done = leash(*args)
    assert done.returncode == 2 and done.stdout == ""
    assert f"goes after the command: {fixed} (see leash" in done.stderr


def test_serve_refuses_a_port_out_of_range_as_a_configuration_error() -> None:
    done = leash_process("serve", "--port", "99999")
    assert done.returncode == 78
    assert "--port: must be between 0 and 65535, not 99999" in done.stderr


@pytest.mark.parametrize("command", [["completion", "bash"], ["journal", "dump", "DATA"]])
def test_output_cut_short_by_its_reader_ends_quietly(
    command: list[str], broker: BrokerProcess
) -> None:
    args = [broker.data_dir if arg == "DATA" else arg for arg in command]
    process = subprocess.Popen(
        [sys.executable, "-m", "leash", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdout is not None
    process.stdout.close()  # before it writes: the reader is gone, as after `head` exits
    _, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
    assert (process.returncode, stderr) == (EXIT_BROKEN_PIPE, b"")


def test_completion_scripts_are_printed_and_complete_the_commands(tmp_path: Path) -> None:
    for shell in cli.SHELLS:
        script = leash("completion", shell)
        assert script.returncode == 0 and "leash" in script.stdout
    out = tmp_path / "completions"
    asked = clean_env(
        _ARGCOMPLETE="1",
        COMP_LINE="leash pa",
        COMP_POINT="8",
        _ARGCOMPLETE_IFS="\n",
        _ARGCOMPLETE_STDOUT_FILENAME=str(out),
    )
    leash_process(env=asked)  # argcomplete answers and ends the process: os._exit
    assert out.read_text().split() == ["pause"]


def _idle_worker(broker: BrokerProcess) -> "subprocess.Popen[str]":
    """``leash worker`` connected, its first fetch held (it waits 20 s)."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "leash", "worker", "tests.integration.apps.tasks",
         "--port", str(broker.port), "--wait-ms", "20000"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert worker.stderr is not None
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        if "connected to" in (line := worker.stderr.readline()) or not line:
            break
    with broker.admin() as admin:
        while not admin.processes() and time.monotonic() < deadline:
            time.sleep(0.05)
    time.sleep(0.2)  # the first fetch is on its way and held
    return worker


def _reap(worker: "subprocess.Popen[str]") -> None:
    if worker.poll() is None:
        worker.kill()
    worker.communicate(timeout=RUN_TIMEOUT_S)


def test_ctrl_c_stops_an_idle_worker_within_a_second(broker: BrokerProcess) -> None:
    worker = _idle_worker(broker)
    try:
        started = time.monotonic()
        worker.send_signal(signal.SIGINT)
        worker.wait(RUN_TIMEOUT_S)
        elapsed_s = time.monotonic() - started
    finally:
        _reap(worker)
    assert worker.returncode == 0
    assert elapsed_s < IDLE_STOP_BOUND_S, f"{elapsed_s:.2f} s"


def test_sigterm_again_and_again_while_the_worker_stops_never_kills_it(
    broker: BrokerProcess,
) -> None:
    """Signals that come while the run ends, or after it, while the process
    exits, are handled (a stop, already under way), never the default
    action that would end the process by the signal."""
    worker = _idle_worker(broker)
    sent = 0
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while worker.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(ProcessLookupError):
                worker.send_signal(signal.SIGTERM)
                sent += 1
            time.sleep(0.002)
    finally:
        _reap(worker)
    assert sent >= 2, "the worker exited before a second signal: nothing was tried"
    assert worker.returncode == 0, f"exit {worker.returncode} after {sent} SIGTERMs"


def test_keygen_needs_no_broker_code() -> None:
    """The client package never imports broker; keygen runs in a process without it."""
    code = "import sys; from leash.client.cli import main; main(['keygen'])"
    code += "; sys.exit('leash.broker' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "[[keys]]" in done.stdout


def test_the_range_checked_types_say_the_range() -> None:
    from leash.client._args import seconds, whole

    with pytest.raises(argparse.ArgumentTypeError, match="between 1 and 9, not 10"):
        whole(1, 9)("10")
    with pytest.raises(argparse.ArgumentTypeError, match="expected a number, not NaN"):
        seconds(0, 1)("nan")
    assert whole(1, 9)("9") == 9 and seconds(0, 1)("0.5") == 0.5


def test_client_from_env_and_leash_push_find_the_broker_by_leash_url(
    broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"leash://127.0.0.1:{broker.port}"
    monkeypatch.setenv("LEASH_URL", url)
    with Client.from_env() as client:
        job_id = client.push("t", [1])
        assert client.welcome.server == f"leash/{__version__}"
    pushed = leash("push", "t", "[2]", env=clean_env(LEASH_URL=url))
    assert pushed.returncode == 0, pushed.stderr
    with Client("127.0.0.1", broker.port) as client:
        assert client.get_job(job_id).type == "t"
        assert client.get_job(pushed.stdout.strip()).type == "t"


async def test_the_async_client_from_env_too(
    broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEASH_URL", f"leash://127.0.0.1:{broker.port}")
    async with await AsyncClient.from_env() as client:
        assert await client.push("t") != ""


def test_leash_push_with_a_uniqueness_key_names_the_holder_and_leash_job_shows_the_key(
    broker: BrokerProcess,
) -> None:
    at = ["--port", str(broker.port)]
    first = leash("push", "t", "--unique-key", "k1", "--unique-for-ms", "60000", *at)
    again = leash("push", "t", "[5]", "--unique-key", "k1", *at)
    assert first.returncode == again.returncode == 0, (first.stderr, again.stderr)
    job_id = first.stdout.strip()
    assert again.stdout.strip() == job_id
    assert f"a duplicate: job {job_id} (ready) holds the key" in again.stderr
    assert "duplicate" not in first.stderr
    shown = leash("job", job_id, "--data-dir", broker.data_dir)
    assert "unique key: k1 (kept 60.0 s after success)" in shown.stdout, shown.stdout
    lapsing = leash("push", "t", "--ttl-ms", "600000", *at)
    shown = leash("job", lapsing.stdout.strip(), "--data-dir", broker.data_dir)
    assert "expires:" in shown.stdout, shown.stdout
    both = leash("push", "t", "--unique-key", "k2", "--unique", *at)
    assert both.returncode != 0 and "not both" in both.stderr and "Traceback" not in both.stderr


def test_leash_push_with_a_time_limit_and_leash_job_shows_it(broker: BrokerProcess) -> None:
    at = ["--port", str(broker.port)]
    pushed = leash("push", "t", "--time-limit-ms", "90000", *at)
    assert pushed.returncode == 0, pushed.stderr
    shown = leash("job", pushed.stdout.strip(), "--data-dir", broker.data_dir)
    assert "time limit: 90.0 s" in shown.stdout, shown.stdout
    short = leash("push", "t", "--time-limit-ms", "99", *at)
    assert short.returncode != 0 and "--time-limit-ms" in short.stderr
    assert "Traceback" not in short.stderr


async def test_the_async_client_pushes_unique_jobs(broker: BrokerProcess) -> None:
    async with await AsyncClient.connect("127.0.0.1", broker.port) as client:
        first = await client.push("t", [1], queue="uq", unique=True)
        assert await client.push("t", [1], queue="uq", unique=True) == first
        results = await client.push_many(
            [
                {"type": "t", "args": [1], "queue": "uq", "unique": True},
                {"type": "t", "queue": "uq"},
            ]
        )
        assert [(r.id == first, r.created, r.duplicate) for r in results] == [
            (True, False, True),
            (False, True, False),
        ]


def test_a_broker_takes_its_settings_from_file_and_environment_and_logs_json(
    tmp_path: Path,
) -> None:
    config = tmp_path / "leash.toml"
    config.write_text(
        'max-connections = 77\nlog-format = "json"\nfsync = "never"\nlost-leases-max = 5\n'
    )
    env = clean_env(
        LEASH_CONFIG=str(config),
        LEASH_MAX_IN_FLIGHT="33",
        LEASH_FSYNC="interval:40",
        LEASH_RESTART_GRACE_MS="1234",
    )
    broker = BrokerProcess(str(tmp_path / "data"), env=env).start()
    try:
        with broker.admin() as admin:
            limits = admin.stats().limits
        assert (limits["max_connections"], limits["max_in_flight"]) == (77, 33)
        assert (limits["lost_leases_max"], limits["restart_grace_ms"]) == (5, 1234)
    finally:
        assert broker.stop() == 0
    lines = [json.loads(line) for line in broker.log]
    assert lines[0]["message"].startswith(f"leash {__version__}; settings: ")
    assert "max-connections (file " in lines[0]["message"]
    assert "max-in-flight (env LEASH_MAX_IN_FLIGHT)" in lines[0]["message"]
    assert any("fsync interval:40" in line["message"] for line in lines)  # env over file
    assert {line["level"] for line in lines} <= {"info", "warning"}
