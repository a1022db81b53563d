"""OpenTelemetry for a ``Worker``: one span per job run (needs ``opentelemetry-api``).

    from leash.middleware.otel import OpenTelemetry

    worker = Worker(middleware=[OpenTelemetry()])

Install it with the ``otel`` extra (``pip install 'leash-broker[otel]'``),
and set up the SDK and an exporter as for any OpenTelemetry program; with
the API alone every span is a no-op. Each job's handler runs inside a span
``leash TYPE`` of kind ``CONSUMER``, current while it runs (so the spans the
handler makes are its children), with the attributes ``messaging.system``
(``leash``), ``messaging.message.id`` (the job id),
``messaging.destination.name`` (its queue), ``leash.job.type`` and
``leash.job.attempt``. A handler that raises records the exception on the
span and sets its status to error (a ``Snooze`` too: the span says what the
handler did, and the job's attempt is not counted).
"""

from contextvars import ContextVar
from typing import Any

try:
    from opentelemetry import context, trace
except ImportError as missing:  # pragma: no cover - the extra is installed for the tests
    raise ImportError(
        "leash.middleware.otel needs opentelemetry-api: pip install 'leash-broker[otel]'"
    ) from missing

from leash.client._middleware import Middleware
from leash.client._types import Job

__all__ = ["OpenTelemetry"]

TRACER_NAME = "leash.worker"


class OpenTelemetry(Middleware):
    """A span per job run; ``tracer_provider``: None for the global one."""

    def __init__(self, tracer_provider: Any = None) -> None:
        self._tracer = trace.get_tracer(TRACER_NAME, tracer_provider=tracer_provider)
        self._span: ContextVar[tuple[Any, object] | None] = ContextVar("leash_span", default=None)

    def before(self, job: Job) -> None:
        span = self._tracer.start_span(
            f"leash {job.type}",
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "leash",
                "messaging.message.id": job.id,
                "messaging.destination.name": job.queue,
                "leash.job.type": job.type,
                "leash.job.attempt": job.attempt,
            },
        )
        token = context.attach(trace.set_span_in_context(span))
        self._span.set((span, token))

    def after(self, job: Job, result: object) -> None:
        self._end(None)

    def on_failure(self, job: Job, exc: BaseException) -> None:
        self._end(exc)

    def _end(self, exc: BaseException | None) -> None:
        held = self._span.get()
        if held is None:
            return
        span, token = held
        self._span.set(None)
        if exc is not None:
            span.record_exception(exc)
            span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        span.end()
        context.detach(token)  # type: ignore[arg-type]
