"""The dashboard's way to the broker: admin requests over the admin socket.

Every view and every change is an admin request (``AdminClient``), decided
by the broker's core like the ``leash`` command's, so the journal records
each change and nothing is special for the web. The calls block, so they
run in worker threads (anyio's pool), each thread keeping its own open
connection (one retry on a fresh one if the broker restarted meanwhile);
the dashboard's event loop never waits on the socket.

Work that could hold the broker's loop is cut small: listings are read a
page at a time (at most ``PAGE_MAX`` jobs, fewer than the admin socket
allows), bulk changes go ``BULK_CHUNK`` jobs a request, and the calls go
one at a time, each followed by a pause (``call``), so the broker's loop
serves its other clients most of the time.
"""

import threading
import time
from collections.abc import Callable
from typing import Final, TypeVar

import anyio
from anyio import to_thread

from leash.client._exceptions import ConnectionLost
from leash.client.admin import AdminClient

T = TypeVar("T")
PAGE_DEFAULT: Final = 50
PAGE_MAX: Final = 50  # a page costs the broker about 0.4 ms (bench/dashboard_load.py)
BULK_CHUNK: Final = 25  # jobs a bulk request changes: about 0.6 ms
CALL_TIMEOUT_S: Final = 30.0
PACE_FACTOR: Final = 3  # the dashboard's admin calls take at most a quarter of the time
PACE_MAX_S: Final = 0.1


class Gateway:
    def __init__(self, socket_path: str, timeout_s: float = CALL_TIMEOUT_S) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._turn = anyio.Lock()

    async def call(self, work: Callable[[AdminClient], T]) -> T:
        """``work`` with an admin connection, in a worker thread; one call at
        a time, each followed by a pause ``PACE_FACTOR`` times as long as it
        took (at most ``PACE_MAX_S``), so the dashboard keeps the broker busy
        a small part of the time, however many browsers and scripts use it."""
        async with self._turn:
            started = time.monotonic()
            try:
                return await to_thread.run_sync(self._run, work)
            finally:
                took_s = time.monotonic() - started
                await anyio.sleep(min(took_s * PACE_FACTOR, PACE_MAX_S))

    def _run(self, work: Callable[[AdminClient], T]) -> T:
        admin: AdminClient | None = getattr(self._local, "admin", None)
        if admin is not None:
            try:
                return work(admin)
            except ConnectionLost:  # the broker restarted: once more, on a new connection
                self._local.admin = None
        admin = AdminClient(self.socket_path, timeout_s=self.timeout_s)
        self._local.admin = admin
        try:
            return work(admin)
        except ConnectionLost:
            self._local.admin = None
            raise
