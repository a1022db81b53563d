"""Middleware against a real broker: the order of the hooks, what an error in
one does (the job is neither lost nor acked twice), the logging context and
a span per job with OpenTelemetry's SDK (its in-memory exporter)."""

import logging
import threading
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from leash import Client, Discard, Retry, Snooze, Worker
from leash.client._types import Job
from leash.middleware import LoggingContext, Middleware
from leash.middleware.otel import OpenTelemetry
from tests.integration.broker_proc import BrokerProcess
from tests.integration.worker_thread import gone, running, settled
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)
app_log = logging.getLogger("tests.app")


class MiddlewareFailed(Exception):
    pass


class Recorder(Middleware):
    """Writes each hook it sees, per job, to a shared journal."""

    def __init__(self, name: str, journal: "Journal") -> None:
        self.name, self.journal = name, journal

    def _note(self, key: str, hook: str) -> None:
        with self.journal.lock:
            self.journal.events[key].append(f"{self.name}.{hook}")

    def on_start(self, worker: object) -> None:
        self._note("worker", "on_start")

    def on_stop(self, worker: object) -> None:
        self._note("worker", "on_stop")

    def before(self, job: Job) -> None:
        self._note(job.id, "before")

    def after(self, job: Job, result: Any) -> None:
        self._note(job.id, f"after({result})")

    def on_failure(self, job: Job, exc: BaseException) -> None:
        self._note(job.id, f"on_failure({type(exc).__name__})")

    def on_retry(self, job: Job, exc: BaseException) -> None:
        self._note(job.id, "on_retry")

    def on_death(self, job: Job, exc: BaseException) -> None:
        self._note(job.id, "on_death")


class Raising(Middleware):
    """Raises in ``before`` or ``after`` for the job types that ask for it."""

    def before(self, job: Job) -> None:
        if job.type == "before_fails":
            raise MiddlewareFailed("before")

    def after(self, job: Job, result: Any) -> None:
        if job.type == "after_fails":
            raise MiddlewareFailed("after")


class Journal:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: defaultdict[str, list[str]] = defaultdict(list)
        self.runs: defaultdict[str, int] = defaultdict(int)
        self.logged: list[logging.LogRecord] = []


class Keep(logging.Handler):
    def __init__(self, journal: Journal) -> None:
        super().__init__()
        self.journal = journal

    def emit(self, record: logging.LogRecord) -> None:
        self.journal.logged.append(record)


class World:
    def __init__(self, client: Client, journal: Journal, spans: InMemorySpanExporter) -> None:
        self.client, self.journal, self.spans = client, journal, spans


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    broker = BrokerProcess(str(tmp_path_factory.mktemp("middleware") / "data")).start()
    journal = Journal()
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    middleware = [
        Recorder("a", journal),
        Recorder("b", journal),
        Raising(),
        LoggingContext(),
        OpenTelemetry(provider),
    ]
    worker = Worker(["mw"], concurrency=2, port=broker.port, wait_ms=200, middleware=middleware)
    tracer = provider.get_tracer("tests")

    def note_run(job_type: str) -> None:
        with journal.lock:
            journal.runs[job_type] += 1

    @worker.handler("ok")
    def ok(n: int) -> int:
        note_run("ok")
        with tracer.start_as_current_span("inner"):
            app_log.warning("handling %d", n)
        return n + 1

    @worker.handler("retry")
    def retry() -> None:
        raise Retry(60)

    @worker.handler("discard")
    def discard() -> None:
        raise Discard("no")

    @worker.handler("snooze")
    def snooze() -> None:
        raise Snooze(60)

    @worker.handler("before_fails")
    def before_fails() -> None:
        note_run("before_fails")

    @worker.handler("after_fails")
    def after_fails() -> None:
        note_run("after_fails")

    keep = Keep(journal)
    app_log.addHandler(keep)
    try:
        with running(worker), Client("127.0.0.1", broker.port) as client:
            yield World(client, journal, spans)
    finally:
        app_log.removeHandler(keep)
        broker.kill()
    assert journal.events["worker"] == ["a.on_start", "b.on_start", "b.on_stop", "a.on_stop"]


def push(world: World, type: str, args: object = ()) -> str:
    return world.client.push(type, list(args) if args == () else args, queue="mw")  # type: ignore[arg-type]


def events_of(world: World, job_id: str, count: int) -> list[str]:
    assert wait_until(lambda: len(world.journal.events[job_id]) >= count)
    return world.journal.events[job_id]


@pytest.mark.parametrize(
    ("type", "state", "hooks"),
    [
        ("ok", None, ["after(42)"]),
        ("retry", "retrying", ["on_failure(Retry)", "on_retry"]),
        ("discard", "dead", ["on_failure(Discard)", "on_death"]),
        ("snooze", "scheduled", ["on_failure(Snooze)"]),
    ],
)
def test_before_runs_in_order_and_the_hooks_after_it_in_reverse(
    world: World, type: str, state: str | None, hooks: list[str]
) -> None:
    job_id = push(world, type, [41] if type == "ok" else ())
    if state is None:
        assert wait_until(lambda: gone(world.client, job_id))
    else:
        settled(world.client, job_id, state)
    expected = ["a.before", "b.before", *(f"b.{h}" for h in hooks), *(f"a.{h}" for h in hooks)]
    assert events_of(world, job_id, len(expected)) == expected


def test_a_middleware_raising_before_the_handler_fails_the_attempt(world: World) -> None:
    job_id = push(world, "before_fails")
    view = settled(world.client, job_id, "retrying")
    assert view.attempt == 1 and view.last_error is not None
    assert view.last_error.type.endswith("MiddlewareFailed")
    assert view.last_error.message == "before"
    assert world.journal.runs["before_fails"] == 0  # the handler never ran
    expected = ["a.before", "b.before", "b.on_failure(MiddlewareFailed)", "b.on_retry"]
    assert events_of(world, job_id, 6) == [
        *expected,
        "a.on_failure(MiddlewareFailed)",
        "a.on_retry",
    ]


def test_a_middleware_raising_after_the_handler_changes_nothing_the_job_is_acked_once(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="leash.worker"):
        job_id = push(world, "after_fails")
        assert wait_until(lambda: gone(world.client, job_id))
        assert wait_until(lambda: "raised in after" in caplog.text)
    assert world.journal.runs["after_fails"] == 1
    assert "MiddlewareFailed: after" in caplog.text  # with its traceback
    # every other middleware's after ran, in reverse order, once
    assert events_of(world, job_id, 4) == ["a.before", "b.before", "b.after(None)", "a.after(None)"]


def test_the_logging_context_names_the_job_on_the_handlers_records(world: World) -> None:
    job_id = push(world, "ok", [1])
    assert wait_until(lambda: gone(world.client, job_id))
    assert wait_until(lambda: any(r.getMessage() == "handling 1" for r in world.journal.logged))
    (record,) = [r for r in world.journal.logged if r.getMessage() == "handling 1"]
    assert (record.job_id, record.job_type, record.job_attempt) == (job_id, "ok", 1)  # type: ignore[attr-defined]
    outside = logging.getLogRecordFactory()("x", logging.INFO, "f", 1, "m", (), None)
    assert outside.job_id == "-"  # type: ignore[attr-defined]


def test_each_job_runs_in_a_span_of_its_own_with_the_handlers_spans_inside(world: World) -> None:
    ok, failing = push(world, "ok", [7]), push(world, "discard")
    assert wait_until(lambda: gone(world.client, ok))
    settled(world.client, failing, "dead")

    def job_span(job_id: str) -> Any:
        found = [
            s
            for s in world.spans.get_finished_spans()
            if (s.attributes or {}).get("messaging.message.id") == job_id
        ]
        return found[0] if found else None

    assert wait_until(lambda: job_span(ok) is not None and job_span(failing) is not None)
    span = job_span(ok)
    assert span.name == "leash ok" and span.status.status_code == StatusCode.UNSET
    expected = {"messaging.system": "leash", "leash.job.type": "ok", "leash.job.attempt": 1}
    assert dict(span.attributes or {}).items() >= expected.items()
    inner = [
        s
        for s in world.spans.get_finished_spans()
        if s.name == "inner" and s.parent is not None and s.parent.span_id == span.context.span_id
    ]
    assert len(inner) == 1
    dead = job_span(failing)
    assert dead.status.status_code == StatusCode.ERROR
    assert [e.name for e in dead.events] == ["exception"]
