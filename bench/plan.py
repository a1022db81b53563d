"""What a bench run measures: the measurements, the rows they fill, the targets.

A *measurement* is one function run against one system (a *cell*), some
number of times; it returns one or more metrics. A *row* of the table shows
one metric of one measurement across the systems. Rows are grouped by
durability: each Leash column sits next to the peers that promise the same
(``servers.System.durability``). Targets are the issue's goals, checked
against the medians of one run.
"""

from collections.abc import Callable
from dataclasses import dataclass

from bench import memory, workloads
from bench.servers import System
from bench.workloads import Context, Result

X = "\u00d7"  # the multiplication sign of a ratio
ALL_DURABILITIES = ("interval", "always", "never")
COMPARED = ("interval", "always")


@dataclass(frozen=True)
class Measurement:
    key: str
    measure: Callable[[Context, System], Result]
    durabilities: tuple[str, ...] = COMPARED
    single_run: bool = False  # slow and steady (memory, replay): one run per cell
    leash_only: bool = False  # measures a Leash client feature the peers have no match for

    def applies_to(self, system: System) -> bool:
        leash = system.kind == "leash" or not self.leash_only
        return leash and system.durability in self.durabilities


MEASUREMENTS = (
    Measurement("push_one", workloads.push_one, ALL_DURABILITIES),
    Measurement("push_batch", workloads.push_batch),
    Measurement("drain_one", workloads.drain_one),
    Measurement("drain_batch", workloads.drain_batch),
    Measurement("drain_workers", workloads.drain_workers),
    Measurement("end_to_end", workloads.end_to_end, ALL_DURABILITIES),
    Measurement("push_threads", workloads.push_threads),
    Measurement("end_to_end_runners_0ms", workloads.end_to_end_runners_0ms),
    Measurement("end_to_end_runners_1ms", workloads.end_to_end_runners_1ms),
    # Leash's plain fetch/ack loops at the runners' concurrency: the Worker's yardstick
    Measurement("end_to_end_loops_0ms", workloads.end_to_end_loops_0ms, leash_only=True),
    Measurement("end_to_end_loops_1ms", workloads.end_to_end_loops_1ms, leash_only=True),
    Measurement("latency", workloads.latency),
    Measurement("memory", memory.memory_and_replay, ("interval",), single_run=True),
)
MEASUREMENTS_BY_KEY = {m.key: m for m in MEASUREMENTS}


@dataclass(frozen=True)
class Row:
    measurement: str
    metric: str
    title: str
    unit: str
    higher_is_better: bool = True


def throughput_rows(sizes: workloads.Sizes) -> tuple[Row, ...]:
    jobs, batch, workers = sizes.jobs, sizes.batch, sizes.workers
    k = f"{jobs // 1000}k" if jobs >= 1000 else str(jobs)
    threads, runners = sizes.producer_threads, sizes.runners
    concurrent = (
        f"end to end, {threads}-thread producer + {runners} workers running "
        f"{workloads.RUNNER_CONCURRENCY} jobs at once"
    )
    loops = "plain fetch/ack loops (a thread and a connection a slot)"
    return (
        Row("push_one", "rate", f"push {k}, one at a time", "jobs/s"),
        Row("push_batch", "rate", f"push {k}, batches of {batch} (pipelined)", "jobs/s"),
        Row("drain_one", "rate", f"drain {k}, 1 worker, one at a time", "jobs/s"),
        Row("drain_batch", "rate", f"drain {k}, 1 worker, batches of {batch}", "jobs/s"),
        Row("drain_workers", "rate", f"drain {k}, {workers} worker processes", "jobs/s"),
        Row("end_to_end", "rate", f"end to end, 1 producer + {workers} workers", "jobs/s"),
        Row(
            "push_threads", "rate", f"push {k} from {threads} threads, one at a time each", "jobs/s"
        ),
        Row("end_to_end_runners_0ms", "rate", f"{concurrent}, 0 ms jobs", "jobs/s"),
        Row("end_to_end_runners_1ms", "rate", f"{concurrent}, 1 ms jobs", "jobs/s"),
        Row("end_to_end_loops_0ms", "rate", f"{concurrent}, 0 ms jobs, {loops}", "jobs/s"),
        Row("end_to_end_loops_1ms", "rate", f"{concurrent}, 1 ms jobs, {loops}", "jobs/s"),
    )


def cpu_rows(sizes: workloads.Sizes) -> tuple[Row, ...]:
    """The server's CPU time per job in each throughput cell."""
    return tuple(
        Row(row.measurement, "server_us", row.title, "µs/job", higher_is_better=False)
        for row in throughput_rows(sizes)
    )


def latency_rows(rate: int) -> tuple[Row, ...]:
    at = f"at {rate:,} jobs/s"
    return tuple(
        Row("latency", metric, f"latency push → held, {name} {at}", "ms", higher_is_better=False)
        for metric, name in (("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9"))
    )


MEMORY_ROWS = (
    Row("memory", "bytes_per_job", "memory per queued job (RSS)", "B", higher_is_better=False),
    Row(
        "memory",
        "replay_s_per_million",
        "restart after a kill: start to first answer, per million records written",
        "s",
        higher_is_better=False,
    ),
    Row(
        "memory",
        "recovered_s_per_million",
        "restart after a kill: the broker's own recovery time, per million records written",
        "s",
        higher_is_better=False,
    ),
    Row(
        "memory",
        "rss_after_replay_bytes_per_job",
        "RSS after the restart, per job",
        "B",
        higher_is_better=False,
    ),
)


@dataclass(frozen=True)
class Target:
    text: str
    measurement: str
    metric: str
    leash: str  # system key
    peer: str | None  # None: an absolute bound on Leash's own number
    bound: float
    at_least: bool = True  # ratio (or value) >= bound; else <= bound
    unit: str = ""  # of an absolute bound


RUNNER_CELLS = (("end_to_end_runners_0ms", "0 ms jobs"), ("end_to_end_runners_1ms", "1 ms jobs"))
CONCURRENT = "end to end, threaded producer + `Worker` runners"
# One-at-a-time cells of the run before the client pipelined and the Worker
# prefetched (bench/RESULTS.md of 2026-12-01): this code must be no slower.
BEFORE = (
    ("push_one", "push one at a time", "leash-interval", 5_245.0),
    ("push_one", "push one at a time", "leash-always", 2_209.0),
    ("drain_one", "drain one at a time", "leash-interval", 2_730.0),
    ("drain_one", "drain one at a time", "leash-always", 1_113.0),
    ("end_to_end", "end to end, 1 producer + 4 workers", "leash-interval", 4_419.0),
    ("end_to_end", "end to end, 1 producer + 4 workers", "leash-always", 1_527.0),
)
POLICY = {"leash-interval": "50 ms", "leash-always": "always"}

TARGETS = (
    *(
        Target(
            f"50 ms: {CONCURRENT}, {jobs} ≥ 1.5{X} beanstalkd",
            cell,
            "rate",
            "leash-interval",
            "beanstalkd",
            1.5,
        )
        for cell, jobs in RUNNER_CELLS
    ),
    *(
        Target(
            f"always: {CONCURRENT}, {jobs} ≥ 3{X} {label}", cell, "rate", "leash-always", peer, 3.0
        )
        for cell, jobs in RUNNER_CELLS
        for peer, label in (("beanstalkd-f0", "beanstalkd -f 0"), ("redis-always", "Redis always"))
    ),
    *(
        Target(
            f"{POLICY[leash]}: {CONCURRENT}, {jobs}: server CPU ≤ 50 µs per job",
            cell,
            "server_us",
            leash,
            None,
            50.0,
            at_least=False,
            unit="µs",
        )
        for leash in ("leash-interval", "leash-always")
        for cell, jobs in RUNNER_CELLS
    ),
    *(
        Target(
            f"{POLICY[leash]}: {what} no slower than before ({before:,.0f} jobs/s)",
            cell,
            "rate",
            leash,
            None,
            before,
            unit="jobs/s",
        )
        for cell, what, leash, before in BEFORE
    ),
    Target(
        f"equal durability (50 ms): end to end ≥ 1.0{X} beanstalkd",
        "end_to_end",
        "rate",
        "leash-interval",
        "beanstalkd",
        1.0,
    ),
    *(
        Target(
            f"always: {what} ≥ 3{X} {peer_label}",
            measurement,
            "rate",
            "leash-always",
            peer,
            3.0,
        )
        for measurement, what in (
            ("drain_workers", "drain with worker processes"),
            ("end_to_end", "end to end"),
        )
        for peer, peer_label in (
            ("beanstalkd-f0", "beanstalkd -f 0"),
            ("redis-always", "Redis always"),
        )
    ),
    Target(
        f"batched push ≥ 1.5{X} beanstalkd pipelined (50 ms)",
        "push_batch",
        "rate",
        "leash-interval",
        "beanstalkd",
        1.5,
    ),
    Target(
        f"batched push ≥ 1.5{X} beanstalkd pipelined (always / -f 0)",
        "push_batch",
        "rate",
        "leash-always",
        "beanstalkd-f0",
        1.5,
    ),
    Target(
        f"batched drain ≥ 1.0{X} beanstalkd pipelined (50 ms)",
        "drain_batch",
        "rate",
        "leash-interval",
        "beanstalkd",
        1.0,
    ),
    Target(
        f"batched drain ≥ 1.0{X} beanstalkd pipelined (always / -f 0)",
        "drain_batch",
        "rate",
        "leash-always",
        "beanstalkd-f0",
        1.0,
    ),
    Target(
        "latency p99 ≤ 2 ms at 2,000 jobs/s with always",
        "latency",
        "p99_ms",
        "leash-always",
        None,
        2.0,
        at_least=False,
        unit="ms",
    ),
    Target(
        "memory ≤ 300 B per queued job",
        "memory",
        "bytes_per_job",
        "leash-interval",
        None,
        300.0,
        at_least=False,
        unit="B",
    ),
)
