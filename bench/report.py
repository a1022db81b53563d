"""Statistics and the Markdown report: medians, min-max, Leash/peer ratios, targets.

A cell shows the median of its runs and, when there was more than one run,
the range ``(min-max)``. A ratio is Leash's median over the peer's median in
the same row: above 1x Leash is faster, except in rows marked "lower is
better" (latency, memory, replay), where below 1x Leash is better.
"""

import json
import os
import platform
import statistics
from dataclasses import dataclass, field
from typing import Any

from bench.plan import MEMORY_ROWS, TARGETS, Row, X, cpu_rows, latency_rows, throughput_rows
from bench.servers import SYSTEMS_BY_KEY
from bench.workloads import RUNNER_CONCURRENCY, Result, Sizes

GROUPS = (
    (
        "At equal durability: fsync at most every 50 ms",
        "Leash `--fsync interval:50` · beanstalkd `-b DIR` (its default, fsync every 50 ms) · "
        "Redis `appendfsync everysec`. A crash of the machine can lose the last 50 ms "
        "(Redis: 1 s); a crash of the process loses nothing acknowledged.",
        ("leash-interval", "beanstalkd", "redis-everysec"),
    ),
    (
        "At equal durability: fsync before the reply",
        "Leash `--fsync always` (group commit) · beanstalkd `-b DIR -f 0` · Redis "
        "`appendfsync always`. Nothing acknowledged is lost, even by a power loss.",
        ("leash-always", "beanstalkd-f0", "redis-always"),
    ),
)
DASH = "\u2013"  # the en dash of a range
METHOD = (
    "- Every run of a cell gets a fresh server on 127.0.0.1 with an empty data directory; "
    "runs are interleaved across systems. Only the measured phase is timed (not the "
    "prefill, not the connect); it ends after the jobs or the time cap, whichever first.",
    "- Clients: Leash `client.Client` (push, push_many, fetch, fetch_many, ack, ack_many); "
    "beanstalkd greenstalk one command at a time, and a pipelined raw-socket driver for "
    "batches (`bench/beanstalk_raw.py`); Redis redis-py: LPUSH; fetch = LMOVE into a "
    "per-worker processing list + ZADD of the lease deadline in one Lua script; ack = "
    "LREM + ZREM in one pipeline; batches pipelined.",
    "- Jobs carry 100-byte payloads. Drains count every job fetched and acked; end to end "
    "runs until every pushed job is acked (a stop job per worker follows them).",
    "- Concurrent callers: the threaded producer is 16 threads each pushing one job at a "
    "time, as a web app's request threads do: Leash shares one `Client` among them (it "
    "sends what the threads ask for while a write is in flight in the next write), Redis "
    "one redis-py client (its pool gives each thread a connection), beanstalkd a greenstalk "
    "connection a thread (greenstalk is not thread-safe). The runner cells add worker "
    "processes running 8 jobs at once each until every job is acked: Leash's `Worker` "
    "(jobs leased ahead of a free slot, acks in the same write as the next fetch); for the "
    "peers 8 threads with a connection each, one job at a time each (reserve or the fetch "
    "script, the work, delete or the ack pipeline). A job's work is nothing, or a 1 ms sleep.",
    "- Server CPU: the user + system time of the server's process (/proc/PID/stat) over "
    "the measured phase, divided by the jobs of the cell.",
    "- Latency: the producer pushes at a fixed rate and stamps each job with the monotonic "
    "time it was due (a producer held up by a slow push does not hide the delay); the "
    "worker that fetches it subtracts that from the time it holds it.",
    "- Memory: VmRSS of the server pid before and after queueing the jobs, one request "
    "(Leash) or one pipelined command (peers) per job, so the journal has one record per "
    "job; restart: the server stopped (Leash with SIGKILL, so that no shutdown snapshot is "
    "written: it loads the snapshot its snapshotter took during the fill, if any, and "
    "replays the journal after it; the peers replay their logs), the same data directory "
    "started again, spawn to first answered request. Replay speed alone (records "
    "replayed, no snapshot): bench/replay.py.",
)
FSYNC_COLUMNS = ("leash-always", "leash-interval", "leash-never")


@dataclass
class Results:
    cells: dict[str, list[Result]] = field(default_factory=dict)  # "measurement/system"
    errors: dict[str, str] = field(default_factory=dict)

    def add(self, measurement: str, system: str, result: Result) -> None:
        self.cells.setdefault(f"{measurement}/{system}", []).append(result)

    def fail(self, measurement: str, system: str, error: str) -> None:
        self.errors[f"{measurement}/{system}"] = error

    def values(self, measurement: str, system: str, metric: str) -> list[float]:
        runs = self.cells.get(f"{measurement}/{system}", [])
        return [run[metric] for run in runs if metric in run]

    def median(self, measurement: str, system: str, metric: str) -> float | None:
        values = self.values(measurement, system, metric)
        return statistics.median(values) if values else None

    def to_json(self, meta: dict[str, Any]) -> str:
        return json.dumps({"meta": meta, "cells": self.cells, "errors": self.errors}, indent=1)


def number(value: float, unit: str) -> str:
    if unit == "jobs/s" or unit == "B":
        return f"{value:,.0f}"
    if unit == "ms":
        return f"{value:.3f}" if value < 10 else f"{value:,.1f}"
    if unit in ("µs", "µs/job"):
        return f"{value:,.1f}"
    return f"{value:.2f}"


def cell(results: Results, row: Row, system: str) -> str:
    values = results.values(row.measurement, system, row.metric)
    if not values:
        return "failed" if f"{row.measurement}/{system}" in results.errors else "—"
    middle = number(statistics.median(values), row.unit)
    if len(values) == 1:
        return middle
    return f"{middle} ({number(min(values), row.unit)}{DASH}{number(max(values), row.unit)})"


def ratio(results: Results, row: Row, leash: str, peer: str) -> str:
    mine = results.median(row.measurement, leash, row.metric)
    theirs = results.median(row.measurement, peer, row.metric)
    if mine is None or theirs is None or theirs == 0:
        return "—"
    return f"{mine / theirs:.2f}{X}"


def _title(row: Row) -> str:
    return row.title if row.higher_is_better else f"{row.title} (lower is better)"


def _table(results: Results, rows: tuple[Row, ...], columns: tuple[str, ...]) -> list[str]:
    leash, peers = columns[0], columns[1:]
    head = ["workload", "unit", SYSTEMS_BY_KEY[leash].label]
    for peer in peers:
        head += [SYSTEMS_BY_KEY[peer].label, f"Leash/{SYSTEMS_BY_KEY[peer].kind}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [_title(row), row.unit, cell(results, row, leash)]
        for peer in peers:
            cells += [cell(results, row, peer), ratio(results, row, leash, peer)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _fsync_table(results: Results, rows: tuple[Row, ...]) -> list[str]:
    head = ["workload", "unit", *(SYSTEMS_BY_KEY[k].label for k in FSYNC_COLUMNS)]
    head += ["always/never", "interval:50/never"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [_title(row), row.unit, *(cell(results, row, k) for k in FSYNC_COLUMNS)]
        cells += [ratio(results, row, k, "leash-never") for k in FSYNC_COLUMNS[:2]]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def target_lines(results: Results) -> list[str]:
    lines = ["| target | measured | verdict |", "|---|---|---|"]
    for target in TARGETS:
        mine = results.median(target.measurement, target.leash, target.metric)
        theirs = (
            results.median(target.measurement, target.peer, target.metric) if target.peer else 1.0
        )
        if mine is None or not theirs:
            lines.append(f"| {target.text} | not measured | — |")
            continue
        value = mine / theirs
        met = value >= target.bound if target.at_least else value <= target.bound
        shown = f"{value:.2f}{X}" if target.peer else f"{number(value, target.unit)} {target.unit}"
        lines.append(f"| {target.text} | {shown} | {'met' if met else 'not met'} |")
    return lines


def machine() -> dict[str, str]:
    model = "?"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            names = (line.split(":", 1)[1] for line in cpuinfo if line.startswith("model name"))
            model = next(names, "?").strip()
        with open("/proc/meminfo") as meminfo:
            memory_kb = int(meminfo.readline().split()[1])
    except OSError:
        memory_kb = 0
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "memory": f"{memory_kb / 2**20:.0f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
    }


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def render(results: Results, meta: dict[str, Any], sizes: Sizes) -> str:
    rows = throughput_rows(sizes)
    lat = latency_rows(sizes.latency_rate)
    out = ["# Leash benchmark results", ""]
    if meta.get("note"):
        out += [f"> {meta['note']}", ""]
    out += [f"- date: {meta['date']}", f"- command: `{meta['command']}`"]
    out += [f"- {k}: {v}" for k, v in meta["machine"].items()]
    out += [
        f"- load average (1, 5, 15 min): {meta['load_start']} at the start, "
        f"{meta['load_end']} at the end"
    ]
    out += ["- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())]
    out += [
        f"- sizes: {sizes.jobs:,} jobs per cell or {sizes.cap_s:g} s, whichever first; "
        f"batches of {sizes.batch}; {sizes.workers} worker processes; "
        f"{sizes.producer_threads} producer threads and {sizes.runners} worker processes "
        f"running {RUNNER_CONCURRENCY} jobs at once in the runner cells; latency at "
        f"{sizes.latency_rate:,} jobs/s from {sizes.latency_producers} producers for "
        f"{sizes.latency_s:g} s; memory with "
        f"{sizes.memory_jobs:,} jobs; {meta['runs']} run(s) per cell (memory and replay: 1)",
        "",
    ]
    for title, text, columns in GROUPS:
        out += [f"## {title}", "", text, ""]
        out += [*_table(results, rows + lat, columns), ""]
        out += ["The server's CPU time (user + system) per job in the same cells:", ""]
        out += [*_table(results, cpu_rows(sizes), columns), ""]
    out += ["## The cost of each fsync policy (Leash)", ""]
    by_key = {row.measurement: row for row in rows}
    out += [*_fsync_table(results, (by_key["push_one"], by_key["end_to_end"])), ""]
    out += [f"## Memory and restart after a kill ({sizes.memory_jobs:,} queued jobs)", ""]
    out += _table(results, MEMORY_ROWS, ("leash-interval", "beanstalkd", "redis-everysec"))
    out += ["", "## Targets", "", *target_lines(results), ""]
    if meta["skipped"] or results.errors:
        out += ["## Not measured", ""]
        out += [f"- {name}: {why}" for name, why in meta["skipped"].items()]
        out += [f"- {key}: failed: {_first_line(error)}" for key, error in results.errors.items()]
        out += [""]
    out += ["## How each cell is measured", "", *METHOD, ""]
    out += ["## Servers", "", "Each cell starts its own server with an empty data directory:", ""]
    out += [f"- {label}: `{command}`" for label, command in meta["servers"].items()]
    return "\n".join(out) + "\n"


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "?"
