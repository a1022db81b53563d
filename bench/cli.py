"""``python -m bench``: run the cells, print progress, write the report.

Cells run measurement by measurement; within one, the runs are interleaved
across systems (run 1 of every system, then run 2 ...), so a change in the
machine's background load touches every column alike. A cell that fails is
reported in the table as "failed" and makes the exit status 1. The report
goes to ``bench/out/results.md`` (and ``results.json``, every run's numbers);
a full run (not ``--quick``, nothing filtered) also writes ``bench/RESULTS.md``.
"""

import argparse
import dataclasses
import datetime
import itertools
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from typing import TypeVar

from bench import report
from bench.plan import MEASUREMENTS_BY_KEY, Measurement
from bench.pool import Pool
from bench.servers import SYSTEMS_BY_KEY, Server, System, missing, versions
from bench.workloads import QUICK, Context, Sizes

T = TypeVar("T")
HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "out")
COMMITTED = os.path.join(HERE, "RESULTS.md")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a ~1-minute smoke run, 1 run per cell")
    p.add_argument("--runs", type=int, help="runs per cell (default 3; --quick: 1)")
    p.add_argument("--systems", help=f"comma-separated, from: {', '.join(SYSTEMS_BY_KEY)}")
    p.add_argument("--workloads", help=f"comma-separated, from: {', '.join(MEASUREMENTS_BY_KEY)}")
    p.add_argument("--jobs", type=int, help="jobs per throughput cell")
    p.add_argument("--cap-s", type=float, help="a throughput cell stops after this long")
    p.add_argument("--memory-jobs", type=int, help="jobs queued for the memory cell")
    p.add_argument("--out", default=OUT_DIR, help="where results.md and results.json go")
    p.add_argument("--note", default="", help="a line quoted at the top of the report")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    overrides = {"jobs": args.jobs, "cap_s": args.cap_s, "memory_jobs": args.memory_jobs}
    sizes = dataclasses.replace(sizes, **{k: v for k, v in overrides.items() if v is not None})
    runs = args.runs or (1 if args.quick else 3)
    wanted = _pick(args.systems, SYSTEMS_BY_KEY, "system")
    systems, skipped = [], {}
    for system in wanted:
        why = missing(system.kind)
        if why:
            skipped[system.label] = why
        else:
            systems.append(system)
    measurements = _pick(args.workloads, MEASUREMENTS_BY_KEY, "workload")
    meta = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": _command_line(argv if argv is not None else sys.argv[1:]),
        "machine": report.machine(),
        "load_start": report.load_average(),
        "versions": versions(),
        "runs": runs,
        "skipped": skipped,
        "note": args.note,
        "servers": {s.label: _command_text(s) for s in systems},
    }
    for name, why in skipped.items():
        print(f"skipping {name}: {why}", flush=True)
    started = time.monotonic()
    results = _run(systems, measurements, sizes, runs)
    meta["load_end"] = report.load_average()
    text = report.render(results, meta, sizes)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.md"), "w") as out:
        out.write(text)
    with open(os.path.join(args.out, "results.json"), "w") as out:
        out.write(results.to_json(meta))
    full = not args.quick and not args.systems and not args.workloads
    if full and not results.errors:
        shutil.copyfile(os.path.join(args.out, "results.md"), COMMITTED)
    print(text)
    print(f"wrote {args.out}/results.md in {time.monotonic() - started:.0f} s", flush=True)
    return 1 if results.errors else 0


def _command_line(argv: list[str]) -> str:
    """The command as typed, with the note (quoted at the top) shown as NOTE."""
    shown, skip = [], False
    for arg in argv:
        if skip:
            shown.append("NOTE")
        elif arg.startswith("--note="):
            shown.append("--note=NOTE")
        else:
            shown.append(arg)
        skip = arg == "--note"
    return shlex.join(["python", "-m", "bench", *shown])


def _pick(names: str | None, known: dict[str, T], what: str) -> list[T]:
    if not names:
        return list(known.values())
    chosen = []
    for name in names.split(","):
        if name not in known:
            raise SystemExit(f"unknown {what} {name!r}; known: {', '.join(known)}")
        chosen.append(known[name])
    return chosen


def _command_text(system: System) -> str:
    server = Server(system, "DIR")
    server.port = 0 if system.kind == "leash" else 11300 if system.kind == "beanstalkd" else 6379
    command = server.command()
    if system.kind == "leash":
        command[0] = "python"
    else:
        command = [("PORT" if arg == str(server.port) else arg) for arg in command]
    return shlex.join(command)


def _run(
    systems: list[System], measurements: list[Measurement], sizes: Sizes, runs: int
) -> report.Results:
    results = report.Results()
    root = tempfile.mkdtemp(prefix="leash-bench-")
    numbers = itertools.count()
    pool = Pool(sizes.workers)
    ctx = Context(sizes, pool, lambda: os.path.join(root, str(next(numbers))))
    try:
        for measurement in measurements:
            cells = [s for s in systems if measurement.applies_to(s)]
            for run in range(1 if measurement.single_run else runs):
                for system in cells:
                    if f"{measurement.key}/{system.key}" in results.errors:
                        continue
                    _cell(ctx, results, measurement, system, run)
                    _empty(root)
    finally:
        pool.close()
        shutil.rmtree(root, ignore_errors=True)
    return results


def _cell(
    ctx: Context, results: report.Results, measurement: Measurement, system: System, run: int
) -> None:
    began = time.monotonic()
    try:
        result = measurement.measure(ctx, system)
    except Exception:  # a BenchError or a client error: the cell failed, the run goes on
        error = traceback.format_exc()
        results.fail(measurement.key, system.key, error)
        print(f"{measurement.key:14} {system.key:15} run {run + 1}: FAILED\n{error}", flush=True)
        return
    results.add(measurement.key, system.key, result)
    shown = ", ".join(f"{k} {v:,.3f}" for k, v in result.items())
    took = time.monotonic() - began
    print(f"{measurement.key:14} {system.key:15} run {run + 1}: {shown} ({took:.1f} s)", flush=True)


def _empty(root: str) -> None:
    for name in os.listdir(root):
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
