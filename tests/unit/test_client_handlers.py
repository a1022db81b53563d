"""Handlers (registering, calling), broker URLs and the ``leash`` command, without a broker."""

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from leash.client import Worker, _handlers, _worker_cli, cli
from leash.client._control import Failure
from leash.client._handlers import Registered, add_handler, invoke
from leash.client._types import Job
from leash.client._url import parse_url
from leash.client.worker import PREFETCH_MAX
from leash.protocol.messages import Delivery


def job_with(args: Any, type: str = "t") -> Job:
    return Job(
        Delivery(
            id="j",
            queue="default",
            type=type,
            args=msgspec.Raw(msgspec.msgpack.encode(args)),
            token=1,
            deadline_ms=1,
            attempt=1,
            max_attempts=25,
            lease_ttl_ms=30_000,
            priority=5,
            created_ms=1,
        )
    )


@pytest.fixture
def empty_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    registry: dict[str, Any] = {}
    monkeypatch.setattr(_handlers, "registry", registry)
    monkeypatch.setattr(_worker_cli, "registry", registry)
    yield registry


# --- calling convention ----------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([1, 2], ((1, 2), {})),
        ({"a": 1, "b": 2}, ((), {"a": 1, "b": 2})),
        ("one", (("one",), {})),
        (None, ((None,), {})),
        ([], ((), {})),
    ],
)
def test_a_list_is_spread_a_dict_is_keywords_anything_else_is_one_argument(
    args: Any, expected: tuple[tuple[Any, ...], dict[str, Any]]
) -> None:
    calls = []
    assert invoke(lambda *a, **k: calls.append((a, k)), job_with(args)) is None
    assert calls == [expected]


def test_a_raising_handler_reports_its_own_frame_first() -> None:
    def broken_handler(x: int) -> None:
        raise KeyError(x)

    failure = invoke(broken_handler, job_with([5]))
    assert isinstance(failure, Failure)
    error = failure.error
    assert (error.type, error.message) == ("KeyError", "5")
    first_frame = error.backtrace.splitlines()[1]
    assert "broken_handler" in first_frame


def test_wrong_arguments_fail_the_job_instead_of_the_worker() -> None:
    failure = invoke(lambda a: None, job_with([1, 2, 3]))
    assert isinstance(failure, Failure) and failure.error.type == "TypeError"


def test_coroutine_handlers_are_registered_to_run_on_the_loop() -> None:
    async def handler() -> None:
        pass

    handlers: dict[str, Registered] = {}
    add_handler(handlers, "t", handler)
    add_handler(handlers, "plain", print)
    assert handlers["t"].is_async and not handlers["plain"].is_async


def test_a_type_gets_one_handler() -> None:
    handlers: dict[str, Registered] = {}
    add_handler(handlers, "t", print)
    add_handler(handlers, "t", print)  # the same one again is harmless
    with pytest.raises(ValueError, match="already has a handler"):
        add_handler(handlers, "t", repr)


def test_worker_decorator_defaults_to_the_function_name() -> None:
    worker = Worker()

    @worker.handler()
    def resize_image() -> None:
        pass

    @worker.handler("named")
    def other() -> None:
        pass

    assert set(worker.handlers) == {"resize_image", "named"}


def test_worker_checks_its_settings() -> None:
    with pytest.raises(ValueError, match="wait_ms"):
        Worker(wait_ms=60_000)
    with pytest.raises(ValueError, match="concurrency"):
        Worker(concurrency=0)
    assert (Worker(url="leash://example:9").host, Worker(url="leash://example:9").port) == (
        "example",
        9,
    )


# --- URLs ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("leash://broker:7000", ("broker", 7000)),
        ("leash://broker", ("broker", 7420)),
        ("leash://10.0.0.1:1/", ("10.0.0.1", 1)),
        ("leash://[::1]:7420", ("::1", 7420)),
    ],
)
def test_broker_urls(url: str, address: tuple[str, int]) -> None:
    assert parse_url(url) == (*address, None, None)


@pytest.mark.parametrize(
    "url",
    ["http://x:1", "broker:7420", "leash://x:99999", "leash://u@x", "leash://x/db", "leash://x?a"],
)
def test_bad_broker_urls_say_so(url: str) -> None:
    with pytest.raises(ValueError, match="bad broker URL"):
        parse_url(url)


# --- the command line ------------------------------------------------------


def test_serve_hands_every_argument_to_the_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_execv(path: str, argv: list[str]) -> None:
        calls.append((path, argv))
        raise SystemExit(0)

    monkeypatch.setattr(os, "execv", fake_execv)
    with pytest.raises(SystemExit):
        cli.main(["serve", "--port", "9", "--fsync", "always"])
    assert calls == [
        (
            sys.executable,
            [sys.executable, "-m", "leash.broker", "serve", "--port", "9", "--fsync", "always"],
        )
    ]


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("serve", "worker", "push"):
        assert command in out


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["nonsense"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_url_and_host_together_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["push", "t", "--url", "leash://x:1", "--host", "y"]) == 1
    assert capsys.readouterr().err == "leash: error: give --url or --host/--port, not both\n"


def test_bad_args_json_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["push", "t", "{not json"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("leash: error: ARGS_JSON is not JSON") and err.count("\n") == 1


def test_a_module_without_handlers_is_an_error(
    tmp_path: Path, empty_registry: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    module = tmp_path / "no_handlers_here.py"
    module.write_text("X = 1\n")
    assert cli.main(["worker", str(module)]) == 1
    assert "registered no handlers" in capsys.readouterr().err


def test_a_module_that_fails_to_import_is_one_line(
    tmp_path: Path, empty_registry: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    module = tmp_path / "broken_tasks.py"
    module.write_text("import nowhere_to_be_found_xyz\n")
    assert cli.main(["worker", str(module)]) == 1
    err = capsys.readouterr().err
    assert "cannot import" in err and "nowhere_to_be_found_xyz" in err and err.count("\n") == 1


def test_handlers_registered_by_a_file_are_collected(
    tmp_path: Path, empty_registry: dict[str, Any]
) -> None:
    module = tmp_path / "my_tasks_file.py"
    module.write_text(
        "from leash.client import handler\n\n@handler('greet')\ndef greet(name):\n    return name\n"
    )
    _worker_cli.import_target(str(module))
    assert set(empty_registry) == {"greet"}


# --- leash worker MODULE[:NAME]: a module's Worker object -----------------------

WORKER_MODULE = """
from leash import Worker, handler

worker = Worker(queues=["mail"], concurrency=8, port=7999, wait_ms=1234)


@worker.handler("send_email")
def send_email(to): ...


@handler("loose")
def loose(): ...
"""


def test_leash_worker_runs_the_worker_object_a_module_defines_with_its_settings(
    tmp_path: Path, empty_registry: dict[str, Any]
) -> None:
    module = tmp_path / "mail_tasks.py"
    module.write_text(WORKER_MODULE)
    worker = _worker_cli._module_worker(str(module))
    assert set(worker.handlers) == {"send_email", "loose"}, "module-level handlers join it"
    assert (worker.queues, worker.concurrency, worker.port, worker.wait_ms) == (
        ["mail"],
        8,
        7999,
        1234,
    )
    again = worker.with_options(queues="urgent", concurrency=2)  # what the flags do
    assert (again.queues, again.concurrency, again.port) == (["urgent"], 2, 7999)
    assert again.handlers == worker.handlers


def test_a_worker_prefetches_a_job_a_slot_unless_told_otherwise() -> None:
    assert Worker(concurrency=8).prefetch == 8
    assert Worker(concurrency=1).prefetch == 1
    assert Worker(concurrency=5000).prefetch == PREFETCH_MAX
    assert Worker(concurrency=8, prefetch=0).prefetch == 0
    # A new concurrency moves a prefetch that was not given, never one that was.
    assert Worker(concurrency=2).with_options(concurrency=6).prefetch == 6
    assert Worker(concurrency=2, prefetch=3).with_options(concurrency=6).prefetch == 3
    with pytest.raises(ValueError, match="prefetch must be from 0 to 1000"):
        Worker(concurrency=2, prefetch=PREFETCH_MAX + 1)


def test_leash_worker_connects_where_the_flags_or_leash_url_say_else_where_its_worker_does(
    tmp_path: Path, empty_registry: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "mail_tasks.py"
    module.write_text(WORKER_MODULE)
    worker = _worker_cli._module_worker(str(module))

    def address(*flags: str) -> tuple[str, int]:
        options = cli._parser().parse_args(["worker", str(module), *flags])
        found = _worker_cli._worker_endpoint(options, worker)
        return found.host, found.port

    monkeypatch.delenv("LEASH_URL", raising=False)
    assert address() == (worker.host, 7999)
    assert address("--port", "7501") == ("127.0.0.1", 7501)
    monkeypatch.setenv("LEASH_URL", "leash://broker.internal:7502")
    assert address() == ("broker.internal", 7502)
    assert address("--url", "leash://other.internal:7503") == ("other.internal", 7503)


def test_a_module_with_two_workers_needs_a_name_and_a_wrong_name_is_one_line(
    tmp_path: Path, empty_registry: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    module = tmp_path / "two_workers.py"
    module.write_text(
        "from leash import Worker\n"
        "a = Worker(queues=['x'])\nb = Worker(queues=['y'])\n"
        "a.register('t', print)\nb.register('t', print)\n"
    )
    assert cli.main(["worker", str(module)]) == 1
    err = capsys.readouterr().err
    assert "defines 2 Worker objects (a, b)" in err and err.count("\n") == 1
    assert _worker_cli._module_worker(f"{module}:b").queues == ["y"]
    assert cli.main(["worker", f"{module}:c"]) == 1
    assert "has no Worker named 'c'" in capsys.readouterr().err


def test_a_worker_object_without_handlers_is_an_error(
    tmp_path: Path, empty_registry: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    module = tmp_path / "idle_worker.py"
    module.write_text("from leash import Worker\nworker = Worker()\n")
    assert cli.main(["worker", str(module)]) == 1
    assert "its Worker has no handlers" in capsys.readouterr().err
