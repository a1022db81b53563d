"""The broker's cost per frame on one connection, in process: no sockets, no client.

A real Broker (journal in a temporary directory, ``fsync never``) and one
Connection on a fake transport that counts the bytes written. After the
hello and one push, it feeds N ``get_job`` frames (decode, decide, reply,
nothing journalled): one frame per ``data_received`` call, then all of them
in one call (a pipelining client), each until every reply is written (a
reply may wait for a group commit). Prints microseconds per frame, best of
``--rounds``. ``--root DIR`` measures another source tree, to compare a
change with the code before it:

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
parser.add_argument("--n", type=int, default=50_000)
parser.add_argument("--rounds", type=int, default=5)
parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
OPTIONS = parser.parse_args()
sys.path.insert(0, str(OPTIONS.root))

import uvloop  # noqa: E402

from broker.journal.disk import OsDisk  # noqa: E402
from broker.journal.group_commit import FsyncPolicy, GroupCommitter  # noqa: E402
from broker.journal.log import Journal  # noqa: E402
from broker.server.broker import Broker  # noqa: E402
from broker.server.config import ServerConfig  # noqa: E402
from broker.server.connection import Connection  # noqa: E402
from broker.server.main import open_epoch, recover  # noqa: E402
from protocol import messages as M  # noqa: E402
from protocol.frames import encode_frame  # noqa: E402


class Transport:
    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

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


async def main() -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        config = ServerConfig(data_dir=data_dir, fsync=FsyncPolicy("never"))
        journal = Journal(data_dir, OsDisk())
        state = recover(config, journal)
        open_epoch(state, journal)
        loop = asyncio.get_running_loop()
        committer = GroupCommitter(loop, journal, config.fsync, lambda error: None)
        broker = Broker(config, state, journal, committer)
        connection = Connection(broker)
        transport = Transport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        connection.data_received(frame(M.Hello(rid=1, version=1, worker_id="bench")))
        connection.data_received(frame(M.Push(rid=2, job=M.JobSpec(type="t", id="j"))))
        await asyncio.sleep(0.2)  # the push's commit
        frames = [frame(M.GetJob(rid=10 + i, id="j")) for i in range(OPTIONS.n)]
        pipelined = b"".join(frames)
        one_s, all_s = [], []

        async def replied(started_s: float, writes: int) -> float:
            while transport.writes < writes:
                await asyncio.sleep(0)
            return time.perf_counter() - started_s

        for _ in range(OPTIONS.rounds):
            writes, started_s = transport.writes + OPTIONS.n, time.perf_counter()
            for data in frames:
                connection.data_received(data)
            one_s.append(await replied(started_s, writes))
            writes, started_s = transport.writes + OPTIONS.n, time.perf_counter()
            connection.data_received(pipelined)
            all_s.append(await replied(started_s, writes))
        await committer.close()
        journal.close()
    per_frame = [s / OPTIONS.n * 1e6 for s in (min(one_s), min(all_s))]
    print(f"tree {OPTIONS.root}: best of {OPTIONS.rounds} x {OPTIONS.n} get_job frames")
    print(f"  one frame per read: {per_frame[0]:6.2f} us/frame")
    print(f"  all in one read:    {per_frame[1]:6.2f} us/frame")


if __name__ == "__main__":
    uvloop.run(main())
