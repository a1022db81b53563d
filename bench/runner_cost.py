"""``python -m bench.runner_cost``: the runner cell's cost per job, process by process.

Runs the runner cell (the 16-thread producer sharing one ``Client`` in this
process, two ``Worker`` processes running 8 jobs at once) against a Leash
server, and prints for each process its user and system CPU time per job
(``/proc/PID/stat``), and, where ``perf`` may count this machine's events,
its context switches and system calls per job (futex, the socket writes
and reads) over the measured phase: the wake-ups between threads and the
writes that a job costs. Every figure is per job of the cell (a worker
process runs about half of them). Counting system calls costs the
processes counted about a microsecond of system time a call: compare CPU
times from runs with ``--no-perf``.

To compare a change with the code before it, run the same command from a
checkout of each, alternately (the machine's load moves both alike):

    python -m bench.runner_cost --fsync interval:50 --work-ms 0 --runs 3
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from bench.pool import Pool
from bench.servers import Server, System
from bench.workloads import RUNNER_CONCURRENCY, bodies, push_from_threads, threaded_sessions

RUNNERS = 2  # worker processes, as in the bench's runner cells
PRODUCER_THREADS = 16
PERF_ATTACH_S = 0.4  # after the start: the Worker's threads exist by then
EVENTS = {  # perf's name: the column
    "context-switches": "switches",
    "raw_syscalls:sys_enter": "syscalls",
    "syscalls:sys_enter_futex": "futex",
    "syscalls:sys_enter_sendto": "sendto",
    "syscalls:sys_enter_write": "write",
    "syscalls:sys_enter_recvfrom": "recvfrom",
    "syscalls:sys_enter_read": "read",
}
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.runner_cost", description=__doc__.splitlines()[0]
    )
    p.add_argument("--fsync", default="interval:50", help="always | interval:MS | never")
    p.add_argument("--work-ms", type=float, default=0.0, help="each job's work (a sleep)")
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--runs", type=int, default=3, help="medians of this many runs")
    p.add_argument(
        "--no-perf", action="store_true", help="no counts (perf's counting adds to system time)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    perf = not args.no_perf and shutil.which("perf") is not None and _perf_works()
    rows = [_one(args.fsync, args.work_ms, args.jobs, perf) for _ in range(args.runs)]
    rate = statistics.median(row["rate"] for row in rows)
    print(f"runner cell, fsync {args.fsync}, {args.work_ms:g} ms jobs: {rate:,.0f} jobs/s")
    print("per job of the cell, medians of", len(rows), "runs")
    columns = ["user µs", "sys µs", *(EVENTS.values() if perf else ())]
    print(f"{'process':10}" + "".join(f"{c:>10}" for c in columns))
    for role in ("server", *(f"worker {i}" for i in range(RUNNERS)), "producer"):
        cells = [statistics.median(row[role].get(c, 0.0) for row in rows) for c in columns]
        print(f"{role:10}" + "".join(f"{v:10.2f}" for v in cells))
    return 0


def _perf_works() -> bool:
    try:
        probe = ["perf", "stat", "-e", "syscalls:sys_enter_futex", "--", "true"]
        return subprocess.run(probe, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _one(fsync: str, work_ms: float, jobs: int, perf: bool) -> dict[str, Any]:
    system = System("leash", "Leash", "leash", "?", ("--fsync", fsync))
    data = tempfile.mkdtemp(prefix="leash-runner-cost-")
    server = Server(system, data).start()
    pool = Pool(RUNNERS)
    try:
        return _measure(server, pool, work_ms, jobs, perf, data)
    finally:
        pool.close()
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


def _measure(
    server: Server, pool: Pool, work_ms: float, jobs: int, perf: bool, data: str
) -> dict[str, Any]:
    tasks = [
        {"kind": "leash", "port": server.port, "index": index, "work_ms": work_ms,
         "concurrency": RUNNER_CONCURRENCY, "plain": False}
        for index in range(RUNNERS)
    ]  # fmt: skip
    pool.start("runner", tasks)
    pids = {"server": server.pid, "producer": os.getpid()}
    pids.update({f"worker {i}": pid for i, pid in enumerate(pool.pids)})
    sessions = threaded_sessions("leash", server.port, PRODUCER_THREADS)
    all_bodies = bodies(jobs)
    before = {role: _cpu(pid) for role, pid in pids.items()}
    counters: dict[str, subprocess.Popen[bytes]] = {}

    def attach() -> None:
        time.sleep(PERF_ATTACH_S)
        for role, pid in pids.items():
            out = os.path.join(data, f"perf-{role}.txt")
            command = ["perf", "stat", "-x,", "-e", ",".join(EVENTS), "-p", str(pid), "-o", out]
            counters[role] = subprocess.Popen(command, stderr=subprocess.DEVNULL)

    attaching = threading.Thread(target=attach)
    started = time.monotonic()
    pool.go()
    if perf:
        attaching.start()
    pushed = push_from_threads(sessions, all_bodies, started + 120.0)
    client = sessions[0].client  # type: ignore[attr-defined]
    for index in range(RUNNERS):  # each Worker stops on its own queue's job
        client.push("stop", queue=f"stop-{index}")
    results = pool.results()
    ended = time.monotonic()
    after = {role: _cpu(pid) for role, pid in pids.items()}
    if perf:
        attaching.join()
        for counter in counters.values():
            counter.send_signal(signal.SIGINT)  # perf writes its counts on SIGINT
        for counter in counters.values():
            counter.wait(30)
    sessions[0].close()
    done = sum(r["done"] for r in results)
    assert done == pushed, f"{done} jobs worked of {pushed} pushed"
    row: dict[str, Any] = {"rate": done / (max(r["last_ack"] for r in results) - started)}
    # The counters ran from PERF_ATTACH_S after the start: the jobs of that window.
    window_jobs = done * max(0.0, ended - started - PERF_ATTACH_S) / (ended - started)
    for role in pids:
        user = (after[role][0] - before[role][0]) / done * 1e6
        system = (after[role][1] - before[role][1]) / done * 1e6
        row[role] = {"user µs": user, "sys µs": system}
        if perf and window_jobs:
            counts = _perf_counts(os.path.join(data, f"perf-{role}.txt"))
            row[role].update({name: n / window_jobs for name, n in counts.items()})
    return row


def _cpu(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of ``pid`` so far (its threads included)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return int(fields[11]) / _TICKS_PER_S, int(fields[12]) / _TICKS_PER_S


def _perf_counts(path: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    with open(path) as lines:
        for line in lines:
            parts = line.strip().split(",")
            if len(parts) > 2 and parts[2] in EVENTS and parts[0].replace(".", "").isdigit():
                counts[EVENTS[parts[2]]] = float(parts[0])
    return counts


if __name__ == "__main__":
    sys.exit(main())
