"""Every example of README.md, and of the docs it links to that hold
tested examples (docs/security.md, docs/configuration.md), runs as
written, against a real broker.

The examples are read from the documents themselves, so they cannot drift
from what this test runs: each ```python block (and the ``leash worker``
command that runs a worker module) is matched to one of the cases below by
a line of its own, written to a file in a fresh directory and run as a
real process. The only changes made to an example are where it is: the port
7420 becomes the test broker's port (the test checks that it is there to
replace) and the host ``broker.internal`` becomes 127.0.0.1 (files such as
``keys.toml`` and ``ca.pem`` are made in the directory it runs in). A block
that no case knows fails the test: add a case for it. The sh lines of the
quick start's first block are the Makefile's targets, and CI's script calls
the README's test command; the Dashboard's install the package's web extra
and run ``leash web``, which serves the overview.
"""

import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from leash.client import AdminClient, Client
from leash.web import serve as web_serve
from tests.cli_run import run_cli
from tests.integration.broker_proc import BrokerProcess
from tests.integration.net_helpers import key_file, new_key
from tests.integration.test_processes import gone
from tests.integration.tls_certs import TlsFiles
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SECURITY = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
# The documents whose examples run here: README.md, and the docs its moved examples went to.
DOCUMENTS = (README, SECURITY, CONFIGURATION)
RUN_TIMEOUT_S = 60.0
DONE_TIMEOUT_S = 20.0

Popen = subprocess.Popen[bytes]


def blocks(language: str, text: str = README) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def section(title: str, text: str = README, level: str = "##") -> str:
    """The section ``title`` of ``text``, up to the next heading of its level or
    above (a ``# `` line is a comment in the examples, not a heading)."""
    ends = "|".join(f"^{'#' * n} " for n in range(2, len(level) + 1))
    found = re.search(
        rf"^{level} {re.escape(title)}\n(.*?)(?={ends}|\Z)", text, re.MULTILINE | re.DOTALL
    )
    assert found is not None, title
    return found.group(1)


def python_blocks() -> list[str]:
    """The Python examples of every document run here."""
    return [block for text in DOCUMENTS for block in blocks("python", text)]


def quick_start() -> str:
    return section("Quick start")


def example(marker: str) -> str:
    """The one Python block that holds ``marker``."""
    (found,) = [block for block in python_blocks() if marker in block]
    return found


def worker_commands() -> list[list[str]]:
    """The README's ``leash worker`` commands, as words, in order."""
    return [
        shlex.split(line.split("#")[0])
        for block in blocks("sh")
        for line in block.splitlines()
        if re.match(r"^\S*leash worker ", line)
    ]


def clean_env() -> dict[str, str]:
    """The environment without a developer's LEASH_* settings."""
    return {name: value for name, value in os.environ.items() if not name.startswith("LEASH_")}


def placed(source: str, port: int) -> str:
    return source.replace("7420", str(port)).replace("broker.internal", "127.0.0.1")


def leash_command(words: list[str], port: int) -> list[str]:
    """A README ``leash ...`` command run with this interpreter, at the test broker."""
    assert words[0].endswith("leash"), words
    return [sys.executable, "-m", "leash", *words[1:], "--port", str(port)]


def run(source: str, directory: Path, port: int) -> None:
    script = directory / "example.py"
    script.write_text(placed(source, port))
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=directory,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert done.returncode == 0, f"{source}\n---\n{done.stderr}"


@pytest.fixture
def workers() -> Iterator[Callable[[list[str], Path], Popen]]:
    started: list[Popen] = []

    def start(command: list[str], directory: Path) -> Popen:
        process = subprocess.Popen(
            command,
            cwd=directory,
            env=clean_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=30)


def stop(worker: Popen) -> None:
    """SIGTERM twice: the second releases at once, not after the held fetch."""
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    worker.send_signal(signal.SIGTERM)
    _, stderr = worker.communicate(timeout=RUN_TIMEOUT_S)
    assert worker.returncode == 0, stderr.decode()


def stop_script(worker: Popen) -> None:
    """One SIGTERM for a script's ``Worker.run()``: an idle worker exits at
    once. A second could land after ``run`` returned and gave the signal
    back to its default (``leash worker`` ignores it on its way out; a
    script does not), and kill the process on its way out."""
    worker.send_signal(signal.SIGTERM)
    _, stderr = worker.communicate(timeout=RUN_TIMEOUT_S)
    assert worker.returncode == 0, stderr.decode()


# --- the cases ------------------------------------------------------------------------

QUICK_START = 'client.push("send_email"'
HANDLER_MODULE = '@handler("send_email")'
WORKER_MODULE = "worker = Worker("
BATCH = "client.create_batch("
ADD_TO_BATCH = "add_to_batch("
KEYS = 'key=load_key("keys.toml"'
TLS = "tls=tls_context("
PIPELINE = "client.pipeline()"
WORKERS = "raise Snooze(60)"
UNIQUE = 'client.push("daily_report"'
TIME_LIMITS = "report_progress(100 * done"
LIMITS = "concurrency_key=customer"
SCHEDULES = "admin.add_schedule("
FINISHED = 'client.push("resize"'
CASES = (
    QUICK_START,
    HANDLER_MODULE,
    WORKER_MODULE,
    BATCH,
    ADD_TO_BATCH,
    KEYS,
    TLS,
    PIPELINE,
    WORKERS,
    UNIQUE,
    TIME_LIMITS,
    LIMITS,
    SCHEDULES,
    FINISHED,
)


def test_every_python_example_of_the_readme_is_one_of_the_cases_run_here() -> None:
    for block in python_blocks():
        known = [case for case in CASES if case in block]
        assert len(known) == 1, f"an example no test runs (add a case):\n{block}"
    assert len(python_blocks()) == len(CASES)


def test_the_security_examples_are_in_the_security_doc_the_readme_links() -> None:
    assert "(docs/security.md)" in README
    assert example(KEYS) in section("Keys", SECURITY)
    assert example(TLS) in section("TLS", SECURITY)


def test_the_quick_start_commands_are_the_makefiles_and_ci_runs_the_test_one() -> None:
    commands, *_ = blocks("sh", quick_start())
    targets = [line.split("#")[0].split() for line in commands.splitlines()]
    assert targets == [["make", "run"], ["make", "test"]]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run: .*\n\t\$\(VENV\)/bin/leash serve \$\(ARGS\)$", makefile, re.MULTILINE)
    assert re.search(r"^test: ", makefile, re.MULTILINE)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_dashboards_commands_install_its_extra_and_serve_the_overview(
    launch_broker: Callable[..., BrokerProcess],
) -> None:
    """The Dashboard section's sh block: the extra it installs is the
    package's, and its ``leash web`` command (at a free port, and at the
    test broker's data directory) serves the overview at the URL it names
    but for the port, which is leash web's default."""
    (commands,) = blocks("sh", section("Dashboard"))
    install, serve = [shlex.split(line.split("#")[0]) for line in commands.splitlines()]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert install == ["pip", "install", f"{project['name']}[web]"]
    web_extra = project["optional-dependencies"]["web"]
    assert {"starlette", "uvicorn", "jinja2"} <= {re.split(r"[<>=]", r)[0] for r in web_extra}
    assert serve == ["leash", "web", "--data-dir", "./leash-data"]
    url = re.search(r"open (http://127\.0\.0\.1:(\d+)/)", commands)
    assert url is not None and int(url.group(2)) == web_serve.DEFAULT_PORT
    broker = launch_broker()
    words = [broker.data_dir if word == "./leash-data" else word for word in serve[1:]]
    web = ReadmeWeb(broker.data_dir, [sys.executable, "-m", "leash", *words, "--port", "0"])
    try:
        web.start()
        page = httpx.get(f"http://127.0.0.1:{web.port}/", timeout=RUN_TIMEOUT_S)
        assert page.status_code == 200 and "<h1>Overview</h1>" in page.text
    finally:
        web.kill()


class ReadmeWeb(BrokerProcess):
    """A README ``leash web`` command, read until it says its port."""

    listening = re.compile(r"dashboard on http://127\.0\.0\.1:(\d+)/")

    def __init__(self, data_dir: str, command: list[str]) -> None:
        super().__init__(data_dir)
        self._command = command

    def command(self) -> list[str]:
        return self._command


def test_the_quick_start_pushes_fetches_and_acks(
    launch_broker: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    broker = launch_broker()
    producer = example(QUICK_START)
    assert producer in quick_start()
    assert producer.count('Client("127.0.0.1", 7420)') == 1
    run(producer, tmp_path, broker.port)  # it fails if the fetch finds nothing
    with Client("127.0.0.1", broker.port) as client:
        assert client.fetch("mail") is None  # the example acked what it pushed
    with AdminClient.for_data_dir(broker.data_dir) as admin:
        assert admin.stats().totals["pushed"] == admin.stats().totals["acked"] == 1


def test_the_unique_jobs_example_pushes_one_job_for_two_pushes_of_a_key(
    launch_broker: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    broker = launch_broker()
    run(example(UNIQUE), tmp_path, broker.port)  # its asserts check the duplicate
    with Client("127.0.0.1", broker.port) as client:
        report, sync, reminder = client.fetch_many("default", 10)
        view = client.get_job(report.id)
    assert (report.type, view.unique_for_ms, sync.type) == ("daily_report", 3_600_000, "sync")
    assert reminder.type == "send_reminder"
    assert view.unique_key is not None and view.unique_key.startswith("auto:")
    with AdminClient.for_data_dir(broker.data_dir) as admin:
        totals = admin.stats().totals
    assert (totals["pushed"], totals["duplicate"]) == (3, 1)


def test_the_time_limits_example_fails_the_hung_job_at_its_limit_and_finishes_the_other(
    launch_broker: Callable[..., BrokerProcess],
    tmp_path: Path,
    workers: Callable[[list[str], Path], Popen],
) -> None:
    broker = launch_broker()
    script = tmp_path / "reports.py"
    script.write_text(placed(example(TIME_LIMITS), broker.port))
    worker = workers([sys.executable, str(script)], tmp_path)
    with Client("127.0.0.1", broker.port) as client:
        heartbeat_ms = client.welcome.heartbeat_ms
        # The worker is a fresh process: a loaded machine takes a while to start it.
        assert wait_until(lambda: admin_totals(broker)["dead"] == 1, RUN_TIMEOUT_S)
        with AdminClient.for_data_dir(broker.data_dir) as admin:
            (hung,) = admin.jobs("dead")
        assert hung.type == "fetch_feed"
        assert hung.last_error is not None and hung.last_error.type == "TimeLimitExceeded"
        (attempt,) = client.get_job(hung.id).attempts
        assert attempt.ended_ms - attempt.leased_ms <= 2_000 + heartbeat_ms
        assert wait_until(lambda: admin_totals(broker)["acked"] == 1, RUN_TIMEOUT_S)
    assert admin_totals(broker)["time_limited"] == 1
    stop_script(worker)


def admin_totals(broker: BrokerProcess) -> dict[str, int]:
    with AdminClient.for_data_dir(broker.data_dir) as admin:
        return dict(admin.stats().totals)


def test_the_limits_examples_set_the_limits_and_serve_one_job_a_customer_at_a_time(
    launch_broker: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    """The TOML block (docs/configuration.md's queue limits, which the
    README's section links to) gives the queue its limits at start-up, the
    ``leash limit`` command sets the same (nothing changes), the Python
    example sees one job a customer at a time."""
    limits_section = section("Concurrency and rate limits")
    assert "(docs/configuration.md#queue-limits)" in limits_section
    (toml,) = blocks("toml", section("Queue limits", CONFIGURATION, "###"))
    config = tmp_path / "leash.toml"
    config.write_text(toml)
    broker = launch_broker("--config", str(config))
    with AdminClient.for_data_dir(broker.data_dir) as admin:
        (view,) = [q for q in admin.queues() if q.name == "sync"]
    limits = (view.concurrency_limit, view.per_key_limit, view.rate_limit, view.rate_interval_ms)
    assert limits == (20, 1, 600, 60_000)
    (commands,) = blocks("sh", limits_section)
    words = shlex.split(commands.strip())
    assert words[0] == "leash", words
    done = run_cli(*words[1:], "--data-dir", broker.data_dir)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "sync: 20 at once, 1 per key, 600 per 60.0 s\n"
    run(example(LIMITS), tmp_path, broker.port)  # its asserts check one job a customer
    with AdminClient.for_data_dir(broker.data_dir) as admin:
        (view,) = [q for q in admin.queues() if q.name == "sync"]
        assert admin.stats().totals["acked"] == 3
    assert (view.in_flight, view.rate_used) == (0, 3)


def test_the_schedules_example_registers_both_and_runs_a_heartbeat_named_for_its_tick(
    tmp_path: Path,
) -> None:
    broker = BrokerProcess(str(tmp_path / "leash-data")).start()  # where the example looks
    try:
        run(example(SCHEDULES), tmp_path, broker.port)  # its asserts check the tick's job
        with AdminClient.for_data_dir(broker.data_dir) as admin:
            heartbeat, nightly = admin.schedules()
        assert (heartbeat.name, heartbeat.every_ms, heartbeat.fires > 0) == (
            "heartbeat",
            1000,
            True,
        )
        assert (nightly.cron, nightly.tz, nightly.missed) == ("30 2 * * *", "Europe/Berlin", "last")
    finally:
        broker.kill()


def test_the_results_example_reads_a_result_and_an_acked_job_from_the_history(
    launch_broker: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    broker = launch_broker()
    run(example(FINISHED), tmp_path, broker.port)  # its asserts read the result and history
    with AdminClient.for_data_dir(broker.data_dir) as admin:
        stats = admin.stats()
    assert (stats.totals["acked"], stats.finished_jobs, stats.results_kept) == (1, 1, 1)


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


@pytest.mark.parametrize(
    ("marker", "command_index"),
    [(HANDLER_MODULE, 0), (WORKER_MODULE, 1)],
    ids=["handler functions", "a Worker object"],
)
def test_each_quick_start_worker_module_runs_with_its_readme_command(
    launch_broker: Callable[..., BrokerProcess],
    workers: Callable[[list[str], Path], Popen],
    tmp_path: Path,
    marker: str,
    command_index: int,
) -> None:
    broker = launch_broker()
    module = example(marker)
    assert module in quick_start()
    (tmp_path / "tasks.py").write_text(placed(module, broker.port))
    command = worker_commands()[command_index]
    assert command[0] == ".venv/bin/leash" and command[1:3] == ["worker", "tasks"], command
    worker = workers(leash_command(command, broker.port), tmp_path)
    with Client("127.0.0.1", broker.port) as client:
        job_id = client.push("send_email", {"to": "ada@example.com"}, queue="mail")
        assert wait_until(lambda: gone(client, job_id), DONE_TIMEOUT_S), "the worker did not ack it"
    stop(worker)


def test_the_workers_example_steers_its_jobs_and_runs_every_kind_of_handler(
    launch_broker: Callable[..., BrokerProcess],
    workers: Callable[[list[str], Path], Popen],
    tmp_path: Path,
) -> None:
    broker = launch_broker()
    module = example(WORKERS)
    assert module in section("Workers")
    (tmp_path / "pages.py").write_text(placed(module, broker.port))
    command = worker_commands()[2]
    assert command[1:3] == ["worker", "pages"], command
    worker = workers(leash_command(command, broker.port), tmp_path)
    urls = {
        "ftp://files.example/a": "dead",
        "https://busy.example/b": "scheduled",
        "https://site.slow/c": "retrying",
        "https://site.example/d": "acked",
    }
    with Client("127.0.0.1", broker.port) as client:
        pages = {
            client.push("fetch_page", [url], queue="pages"): state for url, state in urls.items()
        }
        others = [
            client.push(t, [a], queue="pages") for t, a in (("count_words", "a b"), ("notify", 1))
        ]

        def reached(job_id: str, state: str) -> bool:
            return (
                gone(client, job_id) if state == "acked" else client.get_job(job_id).state == state
            )

        for job_id, state in pages.items():
            assert wait_until(lambda: reached(job_id, state), DONE_TIMEOUT_S), (job_id, state)  # noqa: B023
        assert wait_until(lambda: all(gone(client, j) for j in others), DONE_TIMEOUT_S)
        for job_id, state in pages.items():
            if state != "acked":
                assert client.get_job(job_id).attempt == (0 if state == "scheduled" else 1)
    worker.send_signal(signal.SIGTERM)
    _, stderr = worker.communicate(timeout=RUN_TIMEOUT_S)
    assert worker.returncode == 0, stderr.decode()
    (acked,) = [job_id for job_id, state in pages.items() if state == "acked"]
    assert f"WARNING [{acked} fetch_page] fetched https://site.example/d" in stderr.decode()


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
    workers: Callable[[list[str], Path], Popen],
    tmp_path: Path,
) -> None:
    broker = launch_broker()
    (tmp_path / "split_tasks.py").write_text(placed(example(ADD_TO_BATCH), broker.port))
    command = ["leash", "worker", "split_tasks"]
    worker = workers(leash_command(command, broker.port), tmp_path)
    with Client("127.0.0.1", broker.port) as client:
        created = client.create_batch([{"type": "split", "args": [3]}], commit=True)
        assert wait_until(lambda: client.batch_status(created.id).total == 4, DONE_TIMEOUT_S)
        pages = client.fetch_many("pages", 10)
        assert sorted(job.args for job in pages) == [[0], [1], [2]]
        assert {job.type for job in pages} == {"render"}
    stop(worker)


def test_the_key_examples_authenticate(
    launch_broker: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    keys = key_file(tmp_path / "keys.toml", new_key("key-2028"), new_key("key-now"))
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
