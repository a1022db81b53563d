"""A Worker run in a thread of the test (its own event loop), stopped at the end."""

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from leash.client import Client, Worker
from leash.protocol.messages import JobView
from tests.integration.test_processes import gone
from tests.waiting import wait_until

__all__ = ["gone", "running", "settled"]

WAIT_S = 15.0


@contextlib.contextmanager
def running(worker: Worker, *, now: bool = False) -> Iterator[threading.Thread]:
    """Run ``worker`` until the block ends, then stop it (``now``: without a
    grace) and wait for ``run_async`` to return; raise what it raised."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(worker.run_async())
        except BaseException as exc:  # the test reports it
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        worker.stop(now=now)
        thread.join(WAIT_S)
    assert not thread.is_alive(), "the worker did not stop"
    assert not errors, errors


def settled(client: Client, job_id: str, state: str) -> JobView:
    """The job once the broker has it in ``state``."""
    if not wait_until(lambda: client.get_job(job_id).state == state):
        raise AssertionError(f"job {job_id} is {client.get_job(job_id).state}, not {state}")
    return client.get_job(job_id)
