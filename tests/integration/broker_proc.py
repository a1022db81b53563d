"""A real ``leash serve`` subprocess for integration tests.

Binds 127.0.0.1 on a port the OS picks (``--port 0``) and reads the port
from the "listening on" log line (and the Faktory port, when asked for with
``--faktory-port 0``, from its own line). Stopped by its pid only; start and stop
are bounded in time.
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

from leash.client.admin import AdminClient

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
_FAKTORY = re.compile(r"faktory protocol on 127\.0\.0\.1:(\d+)")


class BrokerProcess:
    listening = _LISTENING  # the log line that says the port

    def __init__(
        self,
        data_dir: str,
        extra_args: Sequence[str] = (),
        preexec_fn: Callable[[], None] | None = None,
        *,
        python: str = sys.executable,
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.python, self.env = python, env  # another install's interpreter; its environment
        self.extra_args = list(extra_args)
        self.preexec_fn = preexec_fn  # runs in the child before exec (e.g. resource limits)
        self.process: subprocess.Popen[str] | None = None
        self.port = 0
        self.faktory_port = 0  # with --faktory-port (logged before "listening on")
        self.log: list[str] = []
        self._listening = threading.Event()

    def command(self) -> list[str]:
        return [
            self.python, "-m", "leash.broker", "serve",
            "--host", "127.0.0.1", "--port", "0", "--data-dir", self.data_dir,
            *self.extra_args,
        ]  # fmt: skip

    def start(self, *, wait: bool = True) -> "BrokerProcess":
        """Start it; with ``wait``, until it listens (or raise if it exits)."""
        command = self.command()
        self._listening.clear()
        self.port = 0
        self.process = subprocess.Popen(
            command,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            preexec_fn=self.preexec_fn,
            env=self.env,
        )
        self._reader = threading.Thread(target=self._read_log, args=(self.process,), daemon=True)
        self._reader.start()
        if wait and (not self._listening.wait(START_TIMEOUT_S) or not self.port):
            self.kill()
            raise RuntimeError(f"{command[2]} did not start:\n" + "".join(self.log))
        return self

    def _read_log(self, process: "subprocess.Popen[str]") -> None:
        assert process.stderr is not None
        for line in process.stderr:
            self.log.append(line)
            faktory = _FAKTORY.search(line)
            if faktory:
                self.faktory_port = int(faktory.group(1))
            match = self.listening.search(line)
            if match:
                self.port = int(match.group(1))
                self._listening.set()
        self._listening.set()  # it exited: start() need not wait any longer

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> int:
        """SIGTERM and wait: the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
        status = self.process.wait(STOP_TIMEOUT_S)
        self._close_log()
        return status

    def kill(self) -> None:
        """kill -9, as a crash."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(STOP_TIMEOUT_S)
        self._close_log()

    def _close_log(self) -> None:
        if self.process is not None and self.process.stderr is not None:
            self._reader.join(STOP_TIMEOUT_S)
            self.process.stderr.close()

    def admin(self) -> AdminClient:
        """A connection to this broker's admin socket."""
        return AdminClient.for_data_dir(self.data_dir, timeout_s=10.0)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_for_log(self, text: str, timeout_s: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(text in line for line in self.log):
                return True
            time.sleep(0.02)
        return False
