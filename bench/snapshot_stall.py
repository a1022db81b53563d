"""Event-loop stall while the broker snapshots 1,000,000 jobs.

    .venv/bin/python bench/snapshot_stall.py [--jobs 1000000]

1. Writes a journal holding ``--jobs`` ready jobs (pushes of 1000 jobs).
2. Runs the broker in this process on uvloop (``leash.broker.server.main.serve``,
   as ``leash serve`` does) with 1 MiB segments, so the next write seals the
   journal and a snapshot of the whole state is due.
3. A probe schedules a callback every 10 ms on the broker's event loop and
   records how late each one runs; a client keeps pushing, fetching and
   acking, recording each request's latency.
4. One push triggers the snapshot (the broker seals the segment and starts
   the snapshotter process); the run ends when the snapshot is durable and
   the files it covers are removed.

Reports the worst and 99th-percentile loop delay and request latency during
the snapshot (the goal: no stall over 100 ms), the snapshot's duration,
and then the clean-shutdown snapshot, which the broker writes from its live
state in the loop (nothing is served then). A measurement, not a test.
"""

import argparse
import asyncio
import logging
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import uvloop

from bench.journal_gen import write_backlog
from leash.broker.server.config import ServerConfig
from leash.broker.server.main import serve
from leash.client import AsyncClient

PROBE_MS = 10


class Probe:
    """Every PROBE_MS, how late the loop ran the callback."""

    def __init__(self) -> None:
        self.delays_ms: list[float] = []
        self.at: list[float] = []  # time.monotonic() of each probe
        self.recording = False
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + PROBE_MS / 1000

        def tick() -> None:
            nonlocal due
            now = loop.time()
            if self.recording:
                self.delays_ms.append((now - due) * 1000)
                self.at.append(time.monotonic())
            due = now + PROBE_MS / 1000
            self._handle = loop.call_at(due, tick)

        self._handle = loop.call_at(due, tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


class Marks(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((time.monotonic(), record.getMessage()))

    def seen(self, text: str) -> float | None:
        return next((at for at, line in self.lines if text in line), None)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] if ordered else 0.0


async def load(port: int, latencies_ms: list[float], stop: asyncio.Event) -> None:
    async with await AsyncClient.connect("127.0.0.1", port) as client:
        number = 0
        while not stop.is_set():
            started = time.perf_counter()
            await client.push("t", {"n": number}, queue="probe")
            job = await client.fetch("probe")
            if job is not None:
                await client.ack(job)
            latencies_ms.append((time.perf_counter() - started) * 1000 / 3)
            number += 1


async def run(directory: str, marks: Marks) -> None:
    settings = ServerConfig(
        port=0, data_dir=directory, segment_bytes=1 << 20, snapshot_min_bytes=1 << 20
    )
    loop = asyncio.get_running_loop()
    port: asyncio.Future[int] = loop.create_future()
    stop_broker = asyncio.Event()
    broker = loop.create_task(serve(settings, None, port.set_result, stop_broker))
    await port
    probe, latencies_ms, stop_load = Probe(), [], asyncio.Event()
    probe.start()
    async with await AsyncClient.connect("127.0.0.1", port.result()) as client:
        await client.push("warm-up", queue="other")
    loader = loop.create_task(load(port.result(), latencies_ms, stop_load))
    await asyncio.sleep(0.5)
    latencies_ms.clear()
    probe.recording = True
    started = time.monotonic()
    async with await AsyncClient.connect("127.0.0.1", port.result()) as client:
        await client.push("trigger", {"pad": "x" * 1024}, queue="other")
    while marks.seen("covered files removed") is None:
        await asyncio.sleep(0.05)
    snapshot_s = time.monotonic() - started
    probe.recording = False
    stop_load.set()
    await loader
    probe.stop()
    stop_at = time.monotonic()
    stop_broker.set()
    assert await broker == 0
    done = marks.seen("shutdown snapshot in")
    print(f"snapshot of the state by the snapshotter process: {snapshot_s:.1f} s")
    print(
        f"event-loop delay during it ({len(probe.delays_ms)} probes every {PROBE_MS} ms): "
        f"max {max(probe.delays_ms):.1f} ms, p99 {percentile(probe.delays_ms, 0.99):.1f} ms"
    )
    print(
        f"request latency during it ({len(latencies_ms)} push+fetch+ack rounds): max "
        f"{max(latencies_ms):.1f} ms, p99 {percentile(latencies_ms, 0.99):.1f} ms per request"
    )
    worst = sorted(zip(probe.delays_ms, probe.at, strict=True), reverse=True)[:3]
    for delay_ms, at in worst:
        print(f"  a delay of {delay_ms:.1f} ms at +{at - started:.2f} s")
    for at, line in marks.lines:
        if at >= started:
            print(f"  +{at - started:.2f} s {line[:90]}")
    if done is not None:
        print(f"clean shutdown incl. the snapshot from the live state: {done - stop_at:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1_000_000)
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="leash-stall-")
    try:
        started = time.perf_counter()
        write_backlog(directory, args.jobs)
        print(f"journal of {args.jobs} jobs written in {time.perf_counter() - started:.1f} s")
        marks = Marks()
        logging.basicConfig(level="INFO", format="%(asctime)s %(name)s: %(message)s")
        logging.getLogger("leash").addHandler(marks)
        uvloop.run(run(directory, marks))
        for _at, line in marks.lines:
            if "recovered" in line:
                print("broker start-up:", line)
    finally:
        shutil.rmtree(directory)


if __name__ == "__main__":
    main()
