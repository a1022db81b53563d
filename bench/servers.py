"""The brokers under test: what each system is, and its server process.

Every server binds 127.0.0.1 on a free port, keeps its data in a temporary
directory, and is stopped by its own pid (SIGTERM, then SIGKILL after a
bounded wait) — never by name. Leash is started with ``--port 0`` and its
port is read from the "listening on 127.0.0.1:PORT" log line; beanstalkd and
Redis get a port picked here. A server is *ready* when it answers a request
(a Leash "listening" line, a beanstalkd ``stats``, a Redis ``PING`` that is
not ``-LOADING``): that is also how replay time is measured.
"""

import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

START_TIMEOUT_S = 120.0  # a replay of a million records fits in it with room to spare
STOP_TIMEOUT_S = 30.0
_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
_RECOVERED = re.compile(r"recovered (\d+) jobs in ([0-9.]+) s")
HOST = "127.0.0.1"

INSTALL_HINT = {
    "beanstalkd": "apt-get install beanstalkd; pip install -e '.[bench]' (greenstalk)",
    "redis": "apt-get install redis-server; pip install -e '.[bench]' (redis-py)",
}


class BenchError(Exception):
    """The harness could not run a cell as specified (a server did not start, counts differ)."""


@dataclass(frozen=True)
class System:
    """One broker in one configuration: a column of the table."""

    key: str
    label: str
    kind: str  # "leash", "beanstalkd" or "redis"
    durability: str  # "interval", "always" or "never": which peers it is compared with
    args: tuple[str, ...] = ()


SYSTEMS = (
    System("leash-interval", "Leash interval:50", "leash", "interval", ("--fsync", "interval:50")),
    System("beanstalkd", "beanstalkd -b (fsync 50 ms)", "beanstalkd", "interval"),
    System("redis-everysec", "Redis everysec", "redis", "interval", ("--appendfsync", "everysec")),
    System("leash-always", "Leash always", "leash", "always", ("--fsync", "always")),
    System("beanstalkd-f0", "beanstalkd -b -f 0", "beanstalkd", "always", ("-f", "0")),
    System("redis-always", "Redis always", "redis", "always", ("--appendfsync", "always")),
    System("leash-never", "Leash never", "leash", "never", ("--fsync", "never")),
)
SYSTEMS_BY_KEY = {s.key: s for s in SYSTEMS}


def missing(kind: str) -> str:
    """Why a kind of broker cannot run here ("" when it can)."""
    if kind == "beanstalkd":
        needs = [("beanstalkd", shutil.which("beanstalkd")), ("greenstalk", _module("greenstalk"))]
    elif kind == "redis":
        needs = [("redis-server", shutil.which("redis-server")), ("redis-py", _module("redis"))]
    else:
        return ""
    absent = [name for name, found in needs if not found]
    return f"{', '.join(absent)} not installed: {INSTALL_HINT[kind]}" if absent else ""


def _module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (its threads included)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def rss_bytes(pid: int) -> int:
    """Resident set size from /proc/PID/status (VmRSS)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


class Server:
    """One running broker process. ``start`` returns once it answers."""

    def __init__(self, system: System, data_dir: str, leash_prefix: tuple[str, ...] = ()) -> None:
        self.system = system
        self.data_dir = data_dir
        self.leash_prefix = leash_prefix  # e.g. ("-m", "cProfile", "-o", FILE) for profiling
        self.process: subprocess.Popen[str] | None = None
        self.port = 0
        self.log: list[str] = []
        self.ready_s = 0.0  # wall time from spawn to the first answered request
        self._listening = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def command(self) -> list[str]:
        system, data = self.system, self.data_dir
        if system.kind == "leash":
            return [
                sys.executable, *self.leash_prefix, "-m", "leash.broker", "serve",
                "--host", HOST, "--port", "0", "--data-dir", data, *system.args,
            ]  # fmt: skip
        if system.kind == "beanstalkd":
            return ["beanstalkd", "-l", HOST, "-p", str(self.port), "-b", data, *system.args]
        return [
            "redis-server", "--bind", HOST, "--port", str(self.port), "--dir", data,
            "--appendonly", "yes", "--save", "", "--auto-aof-rewrite-percentage", "0",
            "--daemonize", "no", "--logfile", "", *system.args,
        ]  # fmt: skip

    def start(self) -> "Server":
        os.makedirs(self.data_dir, exist_ok=True)
        if self.system.kind != "leash":
            self.port = free_port()
        started = time.perf_counter()
        self.process = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE if self.system.kind == "leash" else subprocess.DEVNULL,
            text=True,
        )
        try:
            if self.system.kind == "leash":
                self._wait_listening()
            else:
                self._wait_answering()
        except BaseException:
            self.stop()
            raise
        self.ready_s = time.perf_counter() - started
        return self

    def _wait_listening(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        self._listening.clear()
        self._reader = threading.Thread(target=self._read_log, args=(self.process,), daemon=True)
        self._reader.start()
        if not self._listening.wait(START_TIMEOUT_S):
            raise BenchError("leash did not start:\n" + "".join(self.log[-20:]))

    def _read_log(self, process: "subprocess.Popen[str]") -> None:
        assert process.stderr is not None
        for line in process.stderr:
            self.log.append(line)
            match = _LISTENING.search(line)
            if match:
                self.port = int(match.group(1))
                self._listening.set()

    def recovery_s(self) -> float | None:
        """Leash's own report of its replay time (the "recovered" log line)."""
        for line in self.log:
            match = _RECOVERED.search(line)
            if match:
                return float(match.group(2))
        return None

    def _wait_answering(self) -> None:
        probe, good = (
            (b"stats\r\n", b"OK ") if self.system.kind == "beanstalkd" else (b"PING\r\n", b"+PONG")
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise BenchError(f"{self.system.kind} exited with {self.process.returncode}")
            try:
                with socket.create_connection((HOST, self.port), timeout=1.0) as sock:
                    sock.sendall(probe)
                    if sock.recv(64).startswith(good):
                        return
            except OSError:
                pass
            time.sleep(0.005)
        raise BenchError(f"{self.system.kind} did not answer on port {self.port}")

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)

    def stop(self, *, crash: bool = False) -> None:
        """SIGTERM by pid, wait, SIGKILL if it will not go; with ``crash``,
        SIGKILL at once (a restart then replays the log: no clean stop)."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL if crash else signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(STOP_TIMEOUT_S)
        if self._reader is not None:
            self._reader.join(STOP_TIMEOUT_S)  # the log reaches its end when the process exits
            self._reader = None
        if process.stderr is not None:
            process.stderr.close()
        self.process = None


def versions() -> dict[str, str]:
    """The versions the results depend on."""
    found = {"python": sys.version.split()[0]}
    for module in ("msgspec", "uvloop", "greenstalk", "redis"):
        found[module if module != "redis" else "redis-py"] = _dist_version(module)
    found["beanstalkd"] = _tool_version(["beanstalkd", "-v"], r"beanstalkd (\S+)")
    found["redis-server"] = _tool_version(["redis-server", "--version"], r"v=(\S+)")
    return found


def _dist_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _tool_version(command: list[str], pattern: str) -> str:
    if shutil.which(command[0]) is None:
        return "not installed"
    result = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    match = re.search(pattern, result.stdout + result.stderr)
    return match.group(1) if match else "?"
