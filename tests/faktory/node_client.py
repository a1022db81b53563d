"""The Node client (faktory-worker of npm) driven from a test, through
tests/faktory/driver.js: one JSON request a line, one answer a line.

``make test`` installs faktory-worker into tests/faktory/node_modules
(tests/faktory/package.json pins it). Where Node or that install is
missing the tests that need it are skipped, saying why, unless
``LEASH_REQUIRE_FAKTORY_CLIENTS`` is set (CI sets it: there they must run).
"""

import json
import os
import select
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
PACKAGE = HERE / "node_modules" / "faktory-worker" / "package.json"
ANSWER_S = 30.0


def node_or_skip() -> str:
    """The node binary, or skip the test (fail it where the clients are required)."""
    node = shutil.which("node")
    missing = None
    if node is None:
        missing = "node is not on PATH"
    elif not PACKAGE.exists():
        missing = (
            "faktory-worker is not installed in tests/faktory/node_modules "
            "(make test installs it with npm; npm could not reach its registry)"
        )
    if missing is not None:
        if os.environ.get("LEASH_REQUIRE_FAKTORY_CLIENTS"):
            pytest.fail(f"the Node client is required here: {missing}")
        pytest.skip(missing)
    assert node is not None
    return node


class NodeClient:
    """One driver.js process: a faktory-worker Client with this wid."""

    def __init__(self, port: int, wid: str = "", password: str = "") -> None:
        command = [node_or_skip(), str(HERE / "driver.js"), "127.0.0.1", str(port), wid]
        self.process = subprocess.Popen(
            [*command, password] if password else command,
            cwd=HERE,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def __enter__(self) -> "NodeClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, op: str, **fields: Any) -> Any:
        """The answer's result; AssertionError with the library's message if it failed."""
        answer = self.answer(op, **fields)
        assert "ok" in answer, answer
        return answer["ok"]

    def answer(self, op: str, **fields: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], ANSWER_S)
        assert ready, f"no answer to {op} within {ANSWER_S} s"
        line = self.process.stdout.readline()
        assert line, f"the driver exited: {self.stop()}"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stop(self) -> str:
        """Kill it (by its pid) if it still runs; what it wrote on stderr."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        errors = ""
        if self.process.stderr is not None and not self.process.stderr.closed:
            errors = self.process.stderr.read()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        return errors
