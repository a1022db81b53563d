"""``python -m bench.cpu``: the CPU time each process spends per job.

Runs a workload of ``bench.workloads`` against each system named, while
reading the CPU time (user + system, from ``/proc/PID/stat``) of the server,
of this process (the producer, or the single-connection client) and of the
worker processes, before and after the measured run. On a shared machine a
rate moves with the load; the CPU time a process spends per job moves much
less, so this is how a change to the hot path is compared with the code
before it, and how Leash's cost per job is compared with a peer's.

    python -m bench.cpu --systems leash-interval,beanstalkd --workloads end_to_end --runs 3
"""

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

from bench.plan import MEASUREMENTS_BY_KEY
from bench.pool import Pool
from bench.servers import SYSTEMS_BY_KEY, System, cpu_s
from bench.workloads import Context, Sizes

CAP_S = 120.0  # every job is done: the CPU time is divided by the jobs asked for


class Meter:
    """CPU time of the server, this process and the pool's workers over a run."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.server_pid = 0
        self.start: dict[str, float] = {}
        self.spent: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        each = {f"worker {i}": cpu_s(pid) for i, pid in enumerate(self.pool.pids)}
        return {
            "server": cpu_s(self.server_pid) if self.server_pid else 0.0,
            "client": time.process_time(),
            "workers": sum(each.values()),
            **each,
        }

    def begin(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.start = self._now()

    def end(self) -> None:
        now = self._now()
        # A worker process started during the run (the pool starts on first use) counts from 0.
        self.spent = {role: now[role] - self.start.get(role, 0.0) for role in now}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__.splitlines()[0])
    p.add_argument("--systems", default="leash-interval,beanstalkd")
    p.add_argument("--workloads", default="end_to_end")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--jobs", type=int, default=20_000)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    sizes = Sizes(jobs=args.jobs, cap_s=CAP_S)
    pool = Pool(sizes.workers)
    root = tempfile.mkdtemp(prefix="leash-cpu-")
    counter = iter(range(1_000_000))
    try:
        for key in args.workloads.split(","):
            for system_key in args.systems.split(","):
                system = SYSTEMS_BY_KEY[system_key]
                # The first run is a warm-up: it imports the clients in every process.
                rows = [
                    _one(key, system, sizes, pool, lambda: f"{root}/{next(counter)}")
                    for _ in range(args.runs + 1)
                ][1:]
                print(_line(key, system, rows), flush=True)
    finally:
        pool.close()
        shutil.rmtree(root, ignore_errors=True)
    return 0


def _one(
    key: str, system: System, sizes: Sizes, pool: Pool, new_dir: Callable[[], str]
) -> dict[str, float]:
    meter = Meter(pool)
    context = _MeteredContext(sizes, pool, new_dir, meter)
    result = MEASUREMENTS_BY_KEY[key].measure(context, system)
    spent = {role: s / sizes.jobs * 1e6 for role, s in meter.spent.items()}
    return {"rate": result.get("rate", 0.0), **spent}


class _MeteredContext(Context):
    """A Context whose server is metered from start to stop (the prefill and
    the connects are in it too: small next to the measured phase)."""

    def __init__(self, sizes: Sizes, pool: Pool, new_dir: Callable[[], str], meter: Meter) -> None:
        super().__init__(sizes, pool, new_dir)
        self.meter = meter

    def server(self, system: System):  # type: ignore[no-untyped-def]
        server = super().server(system)
        stop = server.stop
        self.meter.begin(server.pid)

        def metered_stop() -> None:
            self.meter.end()
            stop()

        server.stop = metered_stop  # type: ignore[method-assign]
        return server


def _line(key: str, system: System, rows: list[dict[str, float]]) -> str:
    def median(role: str) -> float:
        return statistics.median(row[role] for row in rows)

    # Each worker process on its own, those that did any work (0.5 µs a job or more).
    each = [role for role in rows[0] if role.startswith("worker ") and median(role) >= 0.5]
    return (
        f"{key:14} {system.label:28} {median('rate'):9,.0f} jobs/s   CPU µs per job: "
        f"server {median('server'):6.1f}  client {median('client'):6.1f}  "
        f"workers {median('workers'):6.1f}" + "".join(f" ({median(role):.1f})" for role in each)
    )


if __name__ == "__main__":
    sys.exit(main())
