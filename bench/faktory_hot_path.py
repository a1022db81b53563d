"""Faktory's protocol beside Leash's: one request at a time through one connection, in one run.

Starts one broker (``--fsync never``, so the disk is not what is measured;
``--faktory-port 0``) on 127.0.0.1. Each round then runs, for each
protocol in turn, N pushes one after the other and N fetch + ack pairs:
through Leash's blocking ``Client`` on the Leash port, and through a
minimal Faktory client (one socket: a command line out, a RESP reply in;
no client library, so that the broker is what is measured) on the Faktory
port. It prints requests per second for each phase and protocol, best of
``--rounds`` runs, and the broker's CPU time per request (from /proc), which
is what compares the two front ends: the rate also holds each client's own
cost.

    .venv/bin/python bench/faktory_hot_path.py --n 5000 --rounds 5
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.connection_hot_path import fetch_acks, pushes, timed  # noqa: E402
from leash.client import Client  # noqa: E402

LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
FAKTORY = re.compile(r"faktory protocol on 127\.0\.0\.1:(\d+)")
PHASES = ("push", "fetch+ack")


def start_broker(data_dir: str) -> tuple["subprocess.Popen[str]", int, int]:
    """A broker with a Faktory port: the process, its Leash port and its Faktory port."""
    command = [sys.executable, "-m", "leash.broker", "serve", "--port", "0", "--data-dir", data_dir]
    command += ["--fsync", "never", "--faktory-port", "0"]
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    faktory_port = 0
    for line in process.stderr:
        if match := FAKTORY.search(line):
            faktory_port = int(match.group(1))
        if match := LISTENING.search(line):
            threading.Thread(target=process.stderr.read, daemon=True).start()  # never a full pipe
            return process, int(match.group(1)), faktory_port
    process.kill()
    raise RuntimeError("the broker did not start")


class FaktoryLine:
    """The least Faktory client: a command line out, its RESP reply in."""

    def __init__(self, port: int, wid: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        assert self.file.readline().startswith(b"+HI ")
        hello = {"v": 2, "wid": wid, "hostname": "bench", "pid": os.getpid(), "labels": []}
        assert self.command(b"HELLO " + json.dumps(hello).encode()) == b"+OK"

    def command(self, line: bytes) -> bytes:
        """Send one command; its reply (a bulk string's data, or the line)."""
        self.sock.sendall(line + b"\r\n")
        reply = self.file.readline()[:-2]
        if reply[:1] != b"$" or reply == b"$-1":
            return reply
        return self.file.read(int(reply[1:]) + 2)[:-2]

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class Round:
    def __init__(self, ports: dict[str, int], pid: int, n: int, number: int) -> None:
        self.ports, self.pid, self.n, self.number = ports, pid, n, number
        self.rates: dict[tuple[str, str], float] = {}  # (protocol, phase): requests per second
        self.cpu_us: dict[tuple[str, str], float] = {}  # broker CPU per request

    def run(self) -> "Round":
        with Client("127.0.0.1", self.ports["leash"]) as client:
            self._phase("leash", "push", self.n, lambda: pushes(client, self.n))
            self._phase("leash", "fetch+ack", 2 * self.n, lambda: fetch_acks(client, self.n))
        faktory = FaktoryLine(self.ports["faktory"], f"bench-{self.number}")
        try:
            self._phase("faktory", "push", self.n, lambda: self._faktory_pushes(faktory))
            work = lambda: self._faktory_fetch_acks(faktory)  # noqa: E731
            self._phase("faktory", "fetch+ack", 2 * self.n, work)
        finally:
            faktory.close()
        return self

    def _phase(self, protocol: str, phase: str, requests: int, body: Callable[[], None]) -> None:
        key = protocol, phase
        self.rates[key], self.cpu_us[key] = timed(self.pid, requests, body)

    def _faktory_pushes(self, faktory: FaktoryLine) -> None:
        for index in range(self.n):
            unit = {"jid": f"bench-{self.number}-{index:08}", "jobtype": "bench", "args": [index]}
            unit["queue"] = "hot-fk"
            assert faktory.command(b"PUSH " + json.dumps(unit).encode()) == b"+OK"

    def _faktory_fetch_acks(self, faktory: FaktoryLine) -> None:
        for _ in range(self.n):
            unit = json.loads(faktory.command(b"FETCH hot-fk"))
            ack = b'ACK {"jid":"%s"}' % unit["jid"].encode()
            assert faktory.command(ack) == b"+OK"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5_000, help="pushes (and fetch+acks) per round")
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        process, port, faktory_port = start_broker(os.path.join(tmp, "data"))
        ports = {"leash": port, "faktory": faktory_port}
        try:
            rounds = [Round(ports, process.pid, options.n, r).run() for r in range(options.rounds)]
        finally:
            process.terminate()
            process.wait(10)
    print(f"one broker, best of {options.rounds} rounds of {options.n}, one request at a time")
    for phase in PHASES:
        for protocol in ("leash", "faktory"):
            rate = max(r.rates[protocol, phase] for r in rounds)
            cpu_us = min(r.cpu_us[protocol, phase] for r in rounds)
            print(f"  {phase:10} {protocol:8} {rate:7.0f} requests/s, broker CPU {cpu_us:5.1f} us")


if __name__ == "__main__":
    main()
