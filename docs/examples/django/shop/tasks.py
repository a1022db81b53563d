"""The project's jobs: a ``Worker`` with its handlers, which the
``leashworker`` command runs. Views push jobs with a ``leash.Client``
(one for the process: ``shop.tasks.client()``).

Handlers run in the worker's threads, outside any request, so each closes
database connections that are too old or broken before and after its job,
as Django does around a request.
"""

import functools
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import close_old_connections

from leash import Client, Worker

log = logging.getLogger("shop.tasks")

worker = Worker(
    url=settings.LEASH_URL,
    queues=settings.LEASH_QUEUES,
    concurrency=settings.LEASH_CONCURRENCY,
)


def with_fresh_connections(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        try:
            return fn(*args, **kwargs)
        finally:
            close_old_connections()

    return run


@worker.handler("send_receipt")
@with_fresh_connections
def send_receipt(order: int, total: Any, placed_at: Any) -> None:
    # total is a Decimal and placed_at a datetime, as the view pushed them
    log.info(
        "receipt for order %d: %s %s, placed %s", order, type(total).__name__, total, placed_at
    )


@functools.cache
def client() -> Client:
    """The process's client, for views (threads share it): made on first
    use, and a process forked after that opens a connection of its own."""
    return Client.from_url(settings.LEASH_URL)
