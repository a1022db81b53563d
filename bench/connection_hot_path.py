"""One request at a time through one connection: the broker's per-frame cost.

Starts a broker (``--fsync never``, so the disk is not what is measured) on
127.0.0.1, then with one blocking client: N pushes one after the other, then
N fetch + ack pairs. Prints requests per second for each phase, best of
``--rounds`` runs (a shared machine is noisy; the best run is the least
disturbed). ``--broker-root DIR`` runs the broker from another source tree,
to compare a change with the code before it. The broker's CPU time per
request (from /proc) is printed too: it is much less disturbed by other load
than the rate.

    .venv/bin/python bench/connection_hot_path.py --n 5000 --rounds 5
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from leash.client import Client  # noqa: E402

LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


def start_broker(root: Path, data_dir: str) -> tuple[subprocess.Popen[str], int]:
    command = [sys.executable, "-m", "leash.broker", "serve", "--port", "0", "--data-dir", data_dir]
    process = subprocess.Popen(
        [*command, "--fsync", "never"],
        cwd=root,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert process.stderr is not None
    for line in process.stderr:
        match = LISTENING.search(line)
        if match:
            # Keep reading its log, so the broker never blocks on a full pipe.
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process, int(match.group(1))
    process.kill()
    raise RuntimeError("the broker did not start")


def cpu_s(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pushes(client: Client, n: int) -> None:
    for index in range(n):
        client.push("bench", [index], queue="hot")


def fetch_acks(client: Client, n: int) -> None:
    for _ in range(n):
        job = client.fetch("hot")
        assert job is not None
        client.ack(job)


def timed(pid: int, requests: int, body: Callable[[], None]) -> tuple[float, float]:
    """Run ``body`` (``requests`` requests): requests per second, and the
    broker's (``pid``) CPU time per request in microseconds."""
    cpu_before_s, started_s = cpu_s(pid), time.perf_counter()
    body()
    elapsed_s, cpu_used_s = time.perf_counter() - started_s, cpu_s(pid) - cpu_before_s
    return requests / elapsed_s, cpu_used_s / requests * 1e6


class Round:
    def __init__(self, port: int, pid: int, n: int) -> None:
        self.port, self.pid, self.n = port, pid, n
        self.rates: dict[str, float] = {}  # requests per second
        self.cpu_us: dict[str, float] = {}  # broker CPU per request

    def run(self) -> "Round":
        with Client("127.0.0.1", self.port) as client:
            self._phase("push", self.n, lambda: pushes(client, self.n))
            self._phase("fetch+ack", 2 * self.n, lambda: fetch_acks(client, self.n))
        return self

    def _phase(self, name: str, requests: int, body: Callable[[], None]) -> None:
        self.rates[name], self.cpu_us[name] = timed(self.pid, requests, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5_000, help="pushes (and fetch+acks) per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--broker-root", type=Path, default=ROOT, help="source tree of the broker")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        process, port = start_broker(options.broker_root, os.path.join(tmp, "data"))
        try:
            rounds = [Round(port, process.pid, options.n).run() for _ in range(options.rounds)]
        finally:
            process.terminate()
            process.wait(10)
    print(f"broker {options.broker_root}: best of {options.rounds} rounds of {options.n}")
    for phase in ("push", "fetch+ack"):
        rate = max(r.rates[phase] for r in rounds)
        cpu_us = min(r.cpu_us[phase] for r in rounds)
        print(f"  {phase:10} one at a time: {rate:7.0f} requests/s, broker CPU {cpu_us:5.1f} us")


if __name__ == "__main__":
    main()
