"""Handler control against a real broker: what Retry, Discard, Snooze and a
handler's retry_on / give_up_on do to the job, read back from the broker
(its state, its failed attempts, when it runs again)."""

from collections.abc import Iterator

import pytest

from leash import Client, Discard, Retry, Snooze, Worker
from leash.protocol.messages import JobView
from tests.integration.broker_proc import BrokerProcess
from tests.integration.worker_thread import running, settled

pytestmark = pytest.mark.timeout(60)


class Flaky(Exception):
    pass


def make_worker(port: int) -> Worker:
    worker = Worker(["control"], concurrency=4, port=port, wait_ms=200, grace_s=2)

    @worker.handler("retry_in")
    def retry_in(delay_s: float) -> None:
        raise Retry(delay_s)

    @worker.handler("retry_from")
    def retry_from() -> None:
        try:
            {}["missing"]
        except KeyError as exc:
            raise Retry(45, "rate limited") from exc

    @worker.handler("discard")
    def discard(reason: str) -> None:
        raise Discard(reason)

    @worker.handler("snooze")
    def snooze(delay_s: float) -> None:
        raise Snooze(delay_s)

    @worker.handler("classified", give_up_on=(ValueError,))
    def classified(kind: str) -> None:
        raise ValueError(kind) if kind == "value" else Flaky(kind)

    @worker.handler("only_io", retry_on=(OSError,))
    def only_io(kind: str) -> None:
        raise OSError(kind) if kind == "io" else KeyError(kind)

    return worker


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """One broker and one Worker for the module's tests (each pushes its own jobs)."""
    broker = BrokerProcess(str(tmp_path_factory.mktemp("control") / "data")).start()
    try:
        yield from _with_worker(broker)
    finally:
        broker.kill()


def _with_worker(broker: BrokerProcess) -> Iterator[Client]:
    with running(make_worker(broker.port)), Client("127.0.0.1", broker.port) as producer:
        yield producer


def waits_after_its_attempt(view: JobView) -> int:
    """How long after its last attempt ended the job runs again (ms, the broker's clock)."""
    assert view.run_at_ms is not None and view.attempts
    return view.run_at_ms - view.attempts[-1].ended_ms


def push(client: Client, type: str, args: object, **options: object) -> str:
    return client.push(type, args, queue="control", **options)  # type: ignore[arg-type]


def test_retry_fails_the_attempt_and_runs_again_after_its_own_delay(client: Client) -> None:
    view = settled(client, push(client, "retry_in", [30]), "retrying")
    assert view.attempt == 1
    assert waits_after_its_attempt(view) == 30_000  # not the backoff (16 s and jitter)
    assert view.last_error is not None and view.last_error.type == "leash.Retry"


def test_retry_raised_from_an_error_reports_that_error(client: Client) -> None:
    view = settled(client, push(client, "retry_from", []), "retrying")
    assert waits_after_its_attempt(view) == 45_000
    error = view.last_error
    assert error is not None and error.type == "KeyError"
    assert error.message == "rate limited: 'missing'"
    assert '{}["missing"]' in error.backtrace


def test_retry_out_of_attempts_is_dead_as_any_failure(client: Client) -> None:
    view = settled(client, push(client, "retry_in", [30], max_attempts=1), "dead")
    assert view.attempt == 1


def test_discard_sends_the_job_to_the_dead_set_at_its_first_attempt(client: Client) -> None:
    view = settled(client, push(client, "discard", ["cannot parse"]), "dead")
    assert (view.attempt, view.max_attempts) == (1, 25)
    assert view.last_error is not None
    assert (view.last_error.type, view.last_error.message) == ("leash.Discard", "cannot parse")


def test_snooze_puts_the_job_back_for_later_without_counting_an_attempt(client: Client) -> None:
    view = settled(client, push(client, "snooze", [60]), "scheduled")
    assert view.attempt == 0 and view.last_error is None
    assert waits_after_its_attempt(view) == 60_000
    assert [a.outcome for a in view.attempts] == ["released"]


@pytest.mark.parametrize(
    ("type", "kind", "state"),
    [
        ("classified", "value", "dead"),  # give_up_on
        ("classified", "other", "retrying"),  # anything else: the backoff
        ("only_io", "io", "retrying"),  # retry_on
        ("only_io", "key", "dead"),  # not in retry_on: gives up
    ],
)
def test_a_handler_classifies_its_exceptions(
    client: Client, type: str, kind: str, state: str
) -> None:
    view = settled(client, push(client, type, [kind]), state)
    assert view.attempt == 1


def test_bad_control_values_are_refused_where_they_are_made() -> None:
    with pytest.raises(ValueError, match="Retry delay_s"):
        Retry(-1)
    with pytest.raises(ValueError, match="Snooze delay_s"):
        Snooze(10**12)
    worker = Worker()
    with pytest.raises(TypeError, match="exception classes"):
        worker.register("t", print, retry_on=("OSError",))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Retry"):
        worker.register("t", print, give_up_on=Retry)
