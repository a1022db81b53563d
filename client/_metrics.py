"""The worker's own figures, and its optional Prometheus endpoint.

``JobFigures`` counts, per job type, the runs a worker watched
(``leash.client._joblog.Watch``) by outcome (``done``, ``retrying``,
``dead``, ``snoozed``, ``unknown``: a type with no handler here) and their
durations in histogram buckets. It is cheap (one lock, a few additions per
job), so every worker keeps it; the endpoint only reads it.

``MetricsEndpoint`` serves ``GET /metrics`` in the Prometheus text format,
from a small HTTP server on the worker's own event loop (``Worker(
metrics_port=...)``, off by default, 127.0.0.1 unless told). It reads one
request head of at most ``REQUEST_HEAD_MAX_BYTES`` within
``REQUEST_TIMEOUT_S``, answers it and closes the connection; anything but
``GET /metrics`` gets a 4xx. The exposition text is rendered by
prometheus-client (already the broker's), from a collector over the
figures::

    leash_worker_job_duration_seconds_bucket{type="resize",le="0.005"} 3.0
    leash_worker_job_duration_seconds_count{type="resize"} 12.0
    leash_worker_job_duration_seconds_sum{type="resize"} 0.41
    leash_worker_jobs_total{type="resize",outcome="done"} 11.0
    leash_worker_jobs_running 2.0
    leash_worker_slots 4.0
"""

import asyncio
import bisect
import ipaddress
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import msgspec
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from leash.protocol.messages import JobsRun

from ._joblog import JobOutcome

log = logging.getLogger("leash.worker")

# Prometheus's default buckets, and longer ones: jobs often run for minutes.
DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TYPES_MAX = 1_000  # job types with figures of their own; the others are counted as OTHER_TYPE
OTHER_TYPE = "(other)"
REQUEST_HEAD_MAX_BYTES = 8_192  # a scrape's request line and headers
REQUEST_TIMEOUT_S = 10.0  # to send them
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(slots=True)
class TypeFigures:
    """The runs of one job type: by outcome, and their durations."""

    outcomes: dict[str, int] = field(default_factory=dict)
    buckets: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS_S) + 1))
    timed: int = 0  # runs with a duration (all but unknown types)
    sum_s: float = 0.0

    def copy(self) -> "TypeFigures":
        return TypeFigures(dict(self.outcomes), list(self.buckets), self.timed, self.sum_s)


class JobFigures:
    """What a worker's runs came to, per job type; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._types: dict[str, TypeFigures] = {}

    def observe(self, job_type: str, outcome: JobOutcome, duration_s: float | None) -> None:
        with self._lock:
            figures = self._types.get(job_type)
            if figures is None:
                if len(self._types) >= TYPES_MAX:
                    job_type = OTHER_TYPE
                figures = self._types.setdefault(job_type, TypeFigures())
            figures.outcomes[outcome] = figures.outcomes.get(outcome, 0) + 1
            if duration_s is not None:
                figures.buckets[bisect.bisect_left(DURATION_BUCKETS_S, duration_s)] += 1
                figures.timed += 1
                figures.sum_s += duration_s

    def snapshot(self) -> dict[str, TypeFigures]:
        """A copy of every type's figures, from one moment."""
        with self._lock:
            return {name: figures.copy() for name, figures in self._types.items()}

    def counts(self) -> dict[str, dict[str, int]]:
        """Runs per job type and outcome."""
        return {name: figures.outcomes for name, figures in self.snapshot().items()}

    def report(self, types_max: int) -> dict[str, JobsRun] | None:
        """Runs per job type, for a beat: the ``types_max`` types that ran
        most (None before the first run)."""
        counts = self.counts()
        if not counts:
            return None
        most = sorted(counts.items(), key=lambda item: -sum(item[1].values()))[:types_max]
        return {name: msgspec.convert(outcomes, JobsRun) for name, outcomes in most}


class WorkerCollector(Collector):
    """The figures, and the worker's running jobs and slots, as Prometheus metrics."""

    def __init__(
        self,
        figures: JobFigures,
        running: Callable[[], int],
        slots: int,
        stuck: Callable[[], int] = lambda: 0,
    ) -> None:
        self._figures, self._running, self._slots = figures, running, slots
        self._stuck = stuck  # threads abandoned past their job's time limit, still running

    def collect(self) -> Iterator[Metric]:
        snapshot = sorted(self._figures.snapshot().items())
        durations = HistogramMetricFamily(
            "leash_worker_job_duration_seconds",
            "How long this worker's handlers ran, per job type",
            labels=["type"],
        )
        runs = CounterMetricFamily(
            "leash_worker_jobs",
            "Jobs this worker ran, per type and outcome",
            labels=["type", "outcome"],
        )
        for name, figures in snapshot:
            if figures.timed:
                durations.add_metric([name], _cumulative(figures.buckets), figures.sum_s)
            for outcome, count in sorted(figures.outcomes.items()):
                runs.add_metric([name, outcome], count)
        yield durations
        yield runs
        yield GaugeMetricFamily(
            "leash_worker_jobs_running", "Handlers running now", value=self._running()
        )
        yield GaugeMetricFamily(
            "leash_worker_slots", "Jobs this worker runs at once (concurrency)", value=self._slots
        )
        yield GaugeMetricFamily(
            "leash_worker_stuck_threads",
            "Handler threads still running past their job's time limit (their slots freed)",
            value=self._stuck(),
        )


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _cumulative(buckets: list[int]) -> list[tuple[str, float]]:
    bounds = [repr(bound) for bound in DURATION_BUCKETS_S] + ["+Inf"]  # "0.005", "1.0"
    total, cumulative = 0, []
    for bound, count in zip(bounds, buckets, strict=True):
        total += count
        cumulative.append((bound, float(total)))
    return cumulative


class MetricsEndpoint:
    """``GET /metrics`` over HTTP/1.x, on the running loop."""

    def __init__(self, collector: Collector) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(collector)
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on ``host:port`` (0: any free port); the address bound.
        Raises ``OSError`` naming the address if it cannot."""
        try:
            self._server = await asyncio.start_server(
                self._answer, host, port, limit=REQUEST_HEAD_MAX_BYTES
            )
        except OSError as exc:
            message = f"cannot serve metrics on {host}:{port}: {exc.strerror}"
            raise OSError(exc.errno, message) from exc
        bound: tuple[str, int] = self._server.sockets[0].getsockname()[:2]
        log.info("metrics on http://%s:%d/metrics", *bound)
        if not _loopback(bound[0]):
            log.warning("the metrics port has no authentication: anyone who reaches it reads it")
        return bound

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
            except asyncio.LimitOverrunError:
                status, body = "431 Request Header Fields Too Large", b"request head too large\n"
            except (asyncio.IncompleteReadError, TimeoutError):
                return  # closed or silent: no answer
            else:
                status, body = self._respond(head)
            content_type = CONTENT_TYPE if status.startswith("200") else "text/plain"
            allow = "Allow: GET\r\n" if status.startswith("405") else ""
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n{allow}Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except ConnectionError:
            pass  # the scraper went away
        finally:
            writer.close()

    def _respond(self, head: bytes) -> tuple[str, bytes]:
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return "400 Bad Request", b"not an HTTP/1.x request line\n"
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method != b"GET":
            return "405 Method Not Allowed", b"only GET /metrics\n"
        if target != b"/metrics":
            return "404 Not Found", b"only GET /metrics\n"
        return "200 OK", generate_latest(self._registry)
