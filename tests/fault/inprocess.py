"""A broker served in the test's own event loop, on a disk the test chose
(broker/server/main.py ``serve`` with its seam), bound to 127.0.0.1 on a free
port. Tests that need the fault inside the process use this; tests of the
real program use tests/integration/broker_proc.py."""

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from leash.broker.journal.disk import Disk
from leash.broker.server.config import ServerConfig
from leash.broker.server.main import serve

START_TIMEOUT_S = 10.0


class Served:
    def __init__(self, task: "asyncio.Task[int]", port: int, stop: asyncio.Event) -> None:
        self.task = task
        self.port = port
        self.stop = stop
        self.ended_s: float | None = None  # time.monotonic() when serve returned
        task.add_done_callback(lambda _: setattr(self, "ended_s", time.monotonic()))

    async def exit_code(self, timeout_s: float = 10.0) -> int:
        return await asyncio.wait_for(asyncio.shield(self.task), timeout_s)


def config(data_dir: str, **overrides: Any) -> ServerConfig:
    return ServerConfig(**{"host": "127.0.0.1", "port": 0, "data_dir": data_dir, **overrides})


@asynccontextmanager
async def served(settings: ServerConfig, disk: Disk) -> AsyncIterator[Served | int]:
    """The running broker, or its exit status if it stopped before listening."""
    loop = asyncio.get_running_loop()
    port: asyncio.Future[int] = loop.create_future()
    stop = asyncio.Event()
    task = loop.create_task(serve(settings, disk, port.set_result, stop))
    await asyncio.wait({task, port}, timeout=START_TIMEOUT_S, return_when="FIRST_COMPLETED")
    if not port.done():
        assert task.done(), "the broker neither listened nor stopped"
        yield task.result()
        return
    running = Served(task, port.result(), stop)
    try:
        yield running
    finally:
        stop.set()
        await asyncio.wait({task}, timeout=START_TIMEOUT_S)


def journal_files(data_dir: str) -> list[str]:
    return sorted(
        os.path.join(data_dir, name)
        for name in os.listdir(data_dir)
        if name.endswith((".log", ".snap"))
    )
