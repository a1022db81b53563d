"""Prometheus metrics on an optional HTTP port (off unless --metrics-port).

The prometheus-client library serves the exposition format from its own
thread. That thread never reads broker state: at each scrape it asks the
event loop for a snapshot (``Broker.metrics_snapshot``, built between two
requests, so every figure is from the same moment) and renders it. The
fsync-time histogram is the exception: the journal's writer thread
observes it directly, as the library's histograms are thread-safe.
"""

import asyncio
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import msgspec
from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from leash.broker.core.tally import TOTALS

if TYPE_CHECKING:
    from leash.broker.server.broker import Broker
    from leash.broker.server.config import ServerConfig

log = logging.getLogger("leash.metrics")
SNAPSHOT_TIMEOUT_S = 5.0
FSYNC_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class QueueFigures(msgspec.Struct):
    totals: dict[str, int]
    ready: int
    leased: int
    scheduled: int
    dead: int
    latency_ms: int
    paused: bool
    concurrency_limit: int = 0  # 0: none (core/limits.py)
    rate_used: int = 0  # leases in the rate window that ends now
    keys_saturated: int = 0  # concurrency keys at the per-key limit
    held_fetches: int = 0  # long-poll fetches held for a job of the queue


class ScheduleFigures(msgspec.Struct):
    fires: int
    skips: int
    next_ms: int  # 0: paused, or no tick left
    last_tick_ms: int  # 0: none yet


class Snapshot(msgspec.Struct):
    queues: dict[str, QueueFigures]
    jobs: dict[str, int]
    processes: int
    connections: int
    commits: int
    records: int
    journal_bytes: int
    uptime_ms: int
    schedules: dict[str, ScheduleFigures] = {}
    held_fetches: int = 0
    finished_jobs: int = 0
    results_kept: int = 0
    result_bytes: int = 0


class BrokerCollector(Collector):
    def __init__(self, broker: "Broker", loop: asyncio.AbstractEventLoop) -> None:
        self._broker = broker
        self._loop = loop

    def collect(self) -> Iterator[Metric]:
        snapshot = self._snapshot()
        if snapshot is None:
            return
        yield from _queue_metrics(snapshot)
        yield from _schedule_metrics(snapshot)
        jobs = GaugeMetricFamily("leash_jobs", "Jobs by state", labels=["state"])
        for state, count in sorted(snapshot.jobs.items()):
            jobs.add_metric([state], count)
        yield jobs
        yield GaugeMetricFamily("leash_processes", "Live worker processes", snapshot.processes)
        yield GaugeMetricFamily("leash_connections", "Open TCP connections", snapshot.connections)
        yield GaugeMetricFamily(
            "leash_held_fetches",
            "Long-poll fetches held for a job now: idle consumers",
            snapshot.held_fetches,
        )
        yield CounterMetricFamily(
            "leash_journal_commits", "Group commits (one write each)", snapshot.commits
        )
        yield CounterMetricFamily(
            "leash_journal_records", "Records written to the journal", snapshot.records
        )
        yield GaugeMetricFamily(
            "leash_journal_bytes", "Bytes of journal on disk", snapshot.journal_bytes
        )
        yield GaugeMetricFamily("leash_uptime_seconds", "Since start", snapshot.uptime_ms / 1000)
        yield GaugeMetricFamily(
            "leash_finished_jobs", "Jobs in the finished-job history", snapshot.finished_jobs
        )
        yield GaugeMetricFamily("leash_results", "Job results kept", snapshot.results_kept)
        yield GaugeMetricFamily(
            "leash_result_bytes", "Bytes of the job results kept", snapshot.result_bytes
        )

    def _snapshot(self) -> Snapshot | None:
        async def take() -> Snapshot:
            return self._broker.metrics_snapshot()

        future = asyncio.run_coroutine_threadsafe(take(), self._loop)
        try:
            return future.result(SNAPSHOT_TIMEOUT_S)
        except Exception:  # the loop is stopping or stuck: serve what we can
            future.cancel()
            log.warning("no metrics snapshot from the event loop", exc_info=True)
            return None


def _queue_metrics(snapshot: Snapshot) -> Iterator[Metric]:
    labels = ["queue"]
    for total in TOTALS:
        family = CounterMetricFamily(
            f"leash_queue_{total}", f"Jobs {total} since start", labels=labels
        )
        for name, figures in sorted(snapshot.queues.items()):
            family.add_metric([name], figures.totals.get(total, 0))
        yield family
    gauges: list[tuple[str, str, Any]] = [
        ("ready", "Ready jobs", lambda f: f.ready),
        ("leased", "Jobs in flight", lambda f: f.leased),
        ("scheduled", "Scheduled and retrying jobs", lambda f: f.scheduled),
        ("dead_jobs", "Jobs in the dead set", lambda f: f.dead),
        ("latency_seconds", "Age of the oldest ready job", lambda f: f.latency_ms / 1000),
        ("paused", "1 if the queue is paused", lambda f: int(f.paused)),
        (
            "concurrency_limit",
            "Jobs it may lease at once (0: no limit)",
            lambda f: f.concurrency_limit,
        ),
        (
            "rate_used",
            "Leases in its rate window now (0 without a rate limit)",
            lambda f: f.rate_used,
        ),
        ("keys_saturated", "Concurrency keys at the per-key limit", lambda f: f.keys_saturated),
        (
            "held_fetches",
            "Long-poll fetches held for a job of it: idle consumers",
            lambda f: f.held_fetches,
        ),
    ]
    for name, help_text, value in gauges:
        gauge = GaugeMetricFamily(f"leash_queue_{name}", help_text, labels=labels)
        for queue, figures in sorted(snapshot.queues.items()):
            gauge.add_metric([queue], value(figures))
        yield gauge


def _schedule_metrics(snapshot: Snapshot) -> Iterator[Metric]:
    families: list[tuple[type[Any], str, str, Any]] = [
        (CounterMetricFamily, "fires", "Ticks that pushed their job", lambda f: f.fires),
        (CounterMetricFamily, "skips", "Times missed ticks were skipped", lambda f: f.skips),
        (GaugeMetricFamily, "next_tick_seconds", "The next tick, unix seconds (0: none)",
         lambda f: f.next_ms / 1000),
        (GaugeMetricFamily, "last_tick_seconds", "The last tick that fired, unix seconds",
         lambda f: f.last_tick_ms / 1000),
    ]  # fmt: skip
    for kind, name, help_text, value in families:
        family = kind(f"leash_schedule_{name}", help_text, labels=["schedule"])
        for schedule, figures in sorted(snapshot.schedules.items()):
            family.add_metric([schedule], value(figures))
        yield family


class Metrics:
    def __init__(self, server: Any, thread: Any) -> None:
        self._server, self._thread = server, thread

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(SNAPSHOT_TIMEOUT_S)


class MetricsRegistry:
    """The metrics registry, made before the broker: its fsync histogram's
    ``observe`` is the committer's ``on_fsync``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.fsync = Histogram(
            "leash_journal_fsync_seconds",
            "Time of one journal fsync",
            registry=self.registry,
            buckets=FSYNC_BUCKETS_S,
        )


def start_metrics(broker: "Broker", config: "ServerConfig", metrics: MetricsRegistry) -> Metrics:
    assert config.metrics_port is not None
    registry = metrics.registry
    registry.register(BrokerCollector(broker, asyncio.get_running_loop()))
    server, thread = start_http_server(config.metrics_port, config.metrics_host, registry)
    host, port = server.server_address[:2]
    log.info("metrics on http://%s:%d/metrics", host, port)
    return Metrics(server, thread)
