"""Worker processes of the Faktory client libraries (tests/faktory/apps),
started for a test and killed by their pid; and waiting for what they do."""

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 30.0


class WorkerProcess:
    def __init__(self, module: str, *args: str) -> None:
        command = [sys.executable, "-m", f"tests.faktory.apps.{module}", *args]
        # A file, not a pipe: a pipe that fills would block the worker.
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed by kill)
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        assert line == "started", (line, self.kill())

    def __enter__(self) -> "WorkerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> str:
        """kill -9, as a crash (and to end it: these workers run until killed);
        what it wrote on stderr."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        if self.log.closed:
            return ""
        self.log.seek(0)
        errors = self.log.read()
        self.log.close()
        if self.process.stdout is not None:
            self.process.stdout.close()
        return errors
