"""The broker's cost per request in process: no sockets, no client.

A real Broker (journal in a temporary directory, ``--fsync never`` unless
``--fsync`` says otherwise) and Connections on fake transports that count
what is written. Two phases, each timed, best of ``--rounds``:

- one at a time: a producer connection pushes a job, a worker connection
  fetches it and acks it, one frame per ``data_received`` and one loop turn
  after each (what a one-at-a-time client causes);
- pipelined: N pushes in one ``data_received`` call, then N fetches, then
  N acks (what a pipelining client causes).

Prints CPU microseconds per request (process time: a busy machine disturbs
it less than wall time). ``--args`` picks the jobs' args: ``bin`` (100
bytes in one value, the default), ``map`` (a small map, as a typical job
has) or ``records`` (a list of 40 small maps: enough arrays and maps that
the nesting check walks them, its slow path). ``--profile FILE`` writes a cProfile of the
one-at-a-time phase. ``--root DIR`` measures another source tree, to
compare a change with the code before it:

    .venv/bin/python bench/connection_micro.py --root /path/to/old/tree
"""

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--n", type=int, default=20_000)
parser.add_argument("--rounds", type=int, default=3)
parser.add_argument("--fsync", default="never")
parser.add_argument("--profile", default="")
parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
parser.add_argument("--args", choices=["bin", "map", "records"], default="bin")
OPTIONS = parser.parse_args()
sys.path[0] = str(OPTIONS.root)  # not bench/: its profile.py would hide the stdlib's

import cProfile  # noqa: E402
import inspect  # noqa: E402

import uvloop  # noqa: E402

from leash.broker.core import CoreConfig  # noqa: E402
from leash.broker.journal.disk import OsDisk  # noqa: E402
from leash.broker.journal.group_commit import FsyncPolicy  # noqa: E402
from leash.broker.journal.log import Journal  # noqa: E402
from leash.broker.journal.recovery import recover  # noqa: E402
from leash.broker.server.broker import Broker  # noqa: E402
from leash.broker.server.config import ServerConfig  # noqa: E402
from leash.broker.server.connection import Connection  # noqa: E402
from leash.broker.server.main import open_epoch  # noqa: E402
from leash.protocol import messages as M  # noqa: E402
from leash.protocol.frames import FrameDecoder, encode_frame  # noqa: E402

ARGS = {
    "bin": b"x" * 100,
    "map": {"to": "ada@example.com", "n": [1, 2.5, None]},
    "records": [{"id": n, "tags": ["a", "b"], "at": {"x": n}} for n in range(40)],
}
PAYLOAD = M.encoder.encode(ARGS[OPTIONS.args])


class Transport:
    """Keeps the frames written, so the bench can read the leases."""

    def __init__(self) -> None:
        self.decoder = FrameDecoder(1 << 30)
        self.replies = 0

    def write(self, data: bytes) -> None:
        self.decoder.feed(data)

    def take(self) -> list[Any]:
        replies = []
        while (body := self.decoder.next_frame()) is not None:
            replies.append(M.reply_decoder.decode(body))
        self.replies += len(replies)
        return replies

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 5555) if name == "peername" else None

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


def frame(message: Any) -> bytes:
    return encode_frame(M.encoder.encode(message))


def push(rid: int, job_id: str) -> bytes:
    spec = M.JobSpec(type="bench", id=job_id, queue="bench", args=M.msgspec.Raw(PAYLOAD))
    return frame(M.Push(rid=rid, job=spec))


async def connect(broker: Broker, worker_id: str) -> tuple[Connection, Transport]:
    connection, transport = Connection(broker), Transport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    connection.data_received(frame(M.Hello(rid=1, version=1, worker_id=worker_id)))
    await replies(transport)
    return connection, transport


async def turns(count: int = 1) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def replies(transport: Transport) -> list[Any]:
    """The replies written once at least one is (a reply may wait for a commit)."""
    while True:
        await asyncio.sleep(0)
        if got := transport.take():
            return got


async def one_at_a_time(producer: Any, worker: Any, n: int, base: int) -> float:
    """The end-to-end pattern: the worker's fetch is held until the push."""
    (p, pt), (w, wt) = producer, worker
    pushes = [push(base + i, f"j{base + i}") for i in range(n)]
    fetch = frame(M.Fetch(rid=2, queues=["bench"], count=1, wait_ms=10_000))
    started = time.process_time()
    for data in pushes:
        w.data_received(fetch)
        await turns(1)
        p.data_received(data)
        await replies(pt)
        delivery = (await replies(wt))[0].jobs[0]
        w.data_received(frame(M.Ack(rid=3, id=delivery.id, token=delivery.token)))
        await replies(wt)
    return (time.process_time() - started) / (3 * n) * 1e6


async def pipelined(producer: Any, worker: Any, n: int, base: int) -> float:
    (p, pt), (w, wt) = producer, worker
    pushes = b"".join(push(base + i, f"j{base + i}") for i in range(n))
    fetches = b"".join(frame(M.Fetch(rid=10 + i, queues=["bench"], count=1)) for i in range(n))
    started = time.process_time()
    p.data_received(pushes)
    while pt.replies < n:
        await turns(1)
        pt.take()
    pt.replies = 0
    w.data_received(fetches)
    leases: list[Any] = []
    while len(leases) < n:
        await turns(1)
        leases += [job for reply in wt.take() for job in reply.jobs]
    wt.replies = 0
    w.data_received(b"".join(frame(M.Ack(rid=3, id=j.id, token=j.token)) for j in leases))
    while wt.replies < n:
        await turns(1)
        wt.take()
    wt.replies = 0
    return (time.process_time() - started) / (3 * n) * 1e6


def make_broker(config: ServerConfig, state: Any, journal: Journal) -> Broker:
    """The broker as the tree measured builds it (--root: a tree from before
    the broker made its own group committer takes one made here)."""
    if "committer" not in inspect.signature(Broker).parameters:
        return Broker(config, state, journal, on_journal_failed=lambda error: None)
    from leash.broker.journal.group_commit import GroupCommitter

    loop = asyncio.get_running_loop()
    committer = GroupCommitter(loop, journal, config.fsync, lambda error: None)  # type: ignore
    return Broker(config, state, journal, committer)  # type: ignore[call-arg,misc]


async def main() -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        policy = FsyncPolicy.parse(OPTIONS.fsync)
        config = ServerConfig(data_dir=data_dir, fsync=policy)
        disk = OsDisk()
        recovered = recover(data_dir, disk, CoreConfig())
        journal = Journal(data_dir, disk)
        open_epoch(recovered, journal)
        broker = make_broker(config, recovered.state, journal)
        committer = broker.committer
        producer = await connect(broker, "bench-producer")
        worker = await connect(broker, "bench-worker")
        n, one, many = OPTIONS.n, [], []
        for round_number in range(OPTIONS.rounds):
            base = 2 * n * round_number + 100
            profile = cProfile.Profile() if OPTIONS.profile and round_number == 0 else None
            if profile is not None:
                profile.enable()
            one.append(await one_at_a_time(producer, worker, n, base))
            if profile is not None:
                profile.disable()
                profile.dump_stats(OPTIONS.profile)
            many.append(await pipelined(producer, worker, n, base + n))
        await committer.close()
        journal.close()
    print(
        f"tree {OPTIONS.root}, fsync {OPTIONS.fsync}, args {OPTIONS.args} "
        f"({len(PAYLOAD)} bytes): best of {OPTIONS.rounds} x {n} jobs"
    )
    print(f"  one at a time: {min(one):6.2f} us per request (push, fetch, ack)")
    print(f"  pipelined:     {min(many):6.2f} us per request")


if __name__ == "__main__":
    uvloop.run(main())
