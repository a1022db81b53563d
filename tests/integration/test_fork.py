"""A client used on both sides of ``os.fork()``, against a real broker.

The parent connects a ``Client`` (or an ``AsyncClient``, on an event loop in
a thread of its own), forks, and both processes push at once through that
one client object. The child must open a connection of its own instead of
sharing the parent's socket: every push lands exactly once, every reply
reaches the process that sent the request (each push names its own id and
args, and gets that id back), the child is a process of its own to the
broker (another worker id), and the parent's connection goes on.
"""

import asyncio
import json
import os
import select
import signal
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from leash.client import AsyncClient, Client
from tests.integration.broker_proc import BrokerProcess

PUSHES = 200  # by each process, at the same time
CHILD_TIMEOUT_S = 30  # the child is killed by its own alarm then, and the parent stops waiting


@pytest.fixture
def broker(tmp_path: "os.PathLike[str]") -> Iterator[BrokerProcess]:
    process = BrokerProcess(os.path.join(tmp_path, "data")).start()
    yield process
    process.kill()


def in_child(work: Callable[[], dict[str, Any]]) -> tuple[int, int]:
    """Fork; the child runs ``work``, writes its result as JSON to a pipe and
    exits at once (no cleanup of the parent's objects). The child's pid and
    the read end of the pipe."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_fd)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)  # not the test runner's timeout handler
        signal.alarm(CHILD_TIMEOUT_S)
        try:
            result = work()
        except BaseException as exc:  # reported to the parent, which fails the test
            result = {"error": repr(exc)}
        with os.fdopen(write_fd, "w") as out:
            out.write(json.dumps(result))
        os._exit(0)
    os.close(write_fd)
    return pid, read_fd


def child_result(pid: int, read_fd: int) -> dict[str, Any]:
    with os.fdopen(read_fd) as pipe:
        if not select.select([pipe], [], [], CHILD_TIMEOUT_S + 5)[0]:
            os.kill(pid, signal.SIGKILL)
        text = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    result: dict[str, Any] = json.loads(text)
    assert "error" not in result, result["error"]
    return result


def check_every_push_landed_once(
    broker: BrokerProcess, parent: list[str], child: list[str]
) -> None:
    assert parent == [f"parent-{n}" for n in range(PUSHES)], "a reply reached the wrong caller"
    assert child == [f"child-{n}" for n in range(PUSHES)], "a reply reached the wrong caller"
    with Client("127.0.0.1", broker.port) as reader:
        jobs = []
        while batch := reader.fetch_many("forked", 1000):
            jobs += batch
    assert sorted(job.id for job in jobs) == sorted(parent + child), "a push was lost or doubled"
    assert all(job.args == {"from": job.id.split("-")[0]} for job in jobs)


def test_a_client_used_in_a_forked_child_opens_its_own_connection(broker: BrokerProcess) -> None:
    client = Client("127.0.0.1", broker.port, timeout_s=10.0)
    parent_worker_id = client.worker_id

    def child() -> dict[str, Any]:
        ids = [
            client.push("t", {"from": "child"}, queue="forked", id=f"child-{n}")
            for n in range(PUSHES)
        ]
        return {"ids": ids, "worker_id": client.worker_id}

    started = threading.Event()
    parent_ids: list[str] = []

    def push_from_parent() -> None:
        started.set()
        for n in range(PUSHES):
            parent_ids.append(
                client.push("t", {"from": "parent"}, queue="forked", id=f"parent-{n}")
            )

    pusher = threading.Thread(target=push_from_parent)
    pusher.start()
    started.wait(5)
    pid, read_fd = in_child(child)  # while the parent's thread pushes on the same client
    result = child_result(pid, read_fd)
    pusher.join(CHILD_TIMEOUT_S)
    assert result["worker_id"] != parent_worker_id, "the child is a process of its own"
    assert client.worker_id == parent_worker_id
    check_every_push_landed_once(broker, parent_ids, result["ids"])
    assert client.get_job("parent-0").id == "parent-0", "the parent's connection goes on"
    client.close()


def test_an_async_client_used_in_a_forked_child_opens_its_own_connection(
    broker: BrokerProcess,
) -> None:
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()

    def on_loop(coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(CHILD_TIMEOUT_S)

    client: AsyncClient = on_loop(AsyncClient.connect("127.0.0.1", broker.port, timeout_s=10.0))

    def child() -> dict[str, Any]:
        async def pushes() -> list[str]:
            calls = [
                client.push("t", {"from": "child"}, queue="forked", id=f"child-{n}")
                for n in range(PUSHES)
            ]
            return list(await asyncio.gather(*calls))

        return {"ids": asyncio.run(pushes()), "worker_id": client.worker_id}

    async def parent_pushes() -> list[str]:
        calls = [
            client.push("t", {"from": "parent"}, queue="forked", id=f"parent-{n}")
            for n in range(PUSHES)
        ]
        return list(await asyncio.gather(*calls))

    parent_call = asyncio.run_coroutine_threadsafe(parent_pushes(), loop)
    pid, read_fd = in_child(child)
    result = child_result(pid, read_fd)
    parent_ids = parent_call.result(CHILD_TIMEOUT_S)
    try:
        assert result["worker_id"] != client.worker_id
        check_every_push_landed_once(broker, parent_ids, result["ids"])
        assert on_loop(client.get_job("parent-0")).id == "parent-0"
    finally:
        on_loop(client.close())
        loop.call_soon_threadsafe(loop.stop)
        runner.join(10)
        loop.close()
