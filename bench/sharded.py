"""``python -m bench.sharded``: one broker against several, each owning some queues.

The measurement behind docs/scaling.md. It starts N independent Leash
brokers on 127.0.0.1 (each its own process, data directory and journal)
and drives them with one client library that routes by queue: a job's
queue names its broker (``QueueRouter``: a stable hash of the queue name,
the same in every process), and every request for that queue goes to that
broker's connection. The same clients are run against one broker and
against N: producer processes push batches to every queue, worker
processes fetch and ack batches from every queue, for a fixed time; the
rate is the jobs acked per second over the window, and the brokers' CPU
time (user + system, all of them) per job is printed beside it.

    python -m bench.sharded --brokers 1,2 --seconds 5 --fsync interval:50

Batches keep the clients cheap, so the brokers are what is measured: this
is the ceiling of the brokers, not of one-at-a-time clients.
"""

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import zlib
from multiprocessing.connection import Connection
from typing import Any

from bench.drivers import payload
from bench.servers import HOST, Server, System, cpu_s

QUEUES = [f"shard-q{i}" for i in range(8)]
BATCH = 500  # jobs a request: the clients' cost per job stays small beside the brokers'
BACKLOG_MAX = 20 * BATCH  # producers wait while more jobs than this are pushed and not acked


class QueueRouter:
    """Which broker owns a queue: a stable hash of its name (crc32, not
    Python's per-process ``hash``), the same answer in every process."""

    def __init__(self, ports: list[int]) -> None:
        from leash.client import Client

        self.clients = [Client(HOST, port) for port in ports]

    def client_for(self, queue: str) -> Any:
        return self.clients[zlib.crc32(queue.encode()) % len(self.clients)]

    def close(self) -> None:
        for client in self.clients:
            client.close()


def _producer(ports: list[int], seconds: float, conn: Connection, totals: Any) -> None:
    import msgspec

    from leash.protocol.messages import JobSpec

    router = QueueRouter(ports)
    body = msgspec.Raw(msgspec.msgpack.encode(payload(0)))
    batches = {q: [JobSpec(type="t", args=body, queue=q) for _ in range(BATCH)] for q in QUEUES}
    conn.send("ready")
    conn.recv()
    started = time.process_time()
    pushed, end, turn = 0, time.monotonic() + seconds, 0
    while time.monotonic() < end:
        if totals[0] - totals[1] > BACKLOG_MAX:  # end to end: no backlog piles up
            time.sleep(0.001)
            continue
        queue = QUEUES[turn % len(QUEUES)]
        turn += 1
        router.client_for(queue).push_many(batches[queue])  # each gets an id of its own
        pushed += BATCH
        with totals.get_lock():
            totals[0] += BATCH
    router.close()
    conn.send((pushed, time.process_time() - started))


def _worker(ports: list[int], seconds: float, conn: Connection, totals: Any) -> None:
    router = QueueRouter(ports)
    conn.send("ready")
    conn.recv()
    started = time.process_time()
    acked, end, turn = 0, time.monotonic() + seconds, 0
    while time.monotonic() < end:
        queue = QUEUES[turn % len(QUEUES)]
        turn += 1
        client = router.client_for(queue)
        jobs = client.fetch_many(queue, BATCH, wait_ms=10)
        if jobs:
            done = sum(result is None for result in client.ack_many(jobs))
            acked += done
            with totals.get_lock():
                totals[1] += done
    router.close()
    conn.send((acked, time.process_time() - started))


def run(brokers: int, fsync: str, seconds: float, producers: int, workers: int) -> dict[str, float]:
    root = tempfile.mkdtemp(prefix="leash-sharded-")
    system = System("leash", "Leash", "leash", "interval", ("--fsync", fsync))
    servers = [Server(system, os.path.join(root, str(i))).start() for i in range(brokers)]
    context = multiprocessing.get_context("spawn")
    ports = [server.port for server in servers]
    pipes, processes = [], []
    totals = context.Array("q", 2)  # pushed, acked: over every process
    try:
        for target in [_producer] * producers + [_worker] * workers:
            parent, child = context.Pipe()
            process = context.Process(
                target=target, args=(ports, seconds, child, totals), daemon=True
            )
            process.start()
            pipes.append(parent)
            processes.append(process)
        for parent in pipes:
            assert parent.recv() == "ready"
        cpu_before = sum(cpu_s(server.pid) for server in servers)
        for parent in pipes:
            parent.send("go")
        counts = [parent.recv() for parent in pipes]
        cpu_used = sum(cpu_s(server.pid) for server in servers) - cpu_before
    finally:
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()  # by its own pid
        for server in servers:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
    acked = sum(count for count, _ in counts[producers:])
    pushed = sum(count for count, _ in counts[:producers])
    clients_s = sum(spent for _, spent in counts)
    return {
        "pushed_per_s": pushed / seconds,
        "acked_per_s": acked / seconds,
        "server_us_per_job": cpu_used / max(acked, 1) * 1e6,
        "clients_us_per_job": clients_s / max(acked, 1) * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sharded", description=__doc__.splitlines()[0])
    p.add_argument("--brokers", default="1,2", help="broker counts to run, in turn")
    p.add_argument("--fsync", default="interval:50")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--producers", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--runs", type=int, default=3, help="runs of each count, interleaved")
    args = p.parse_args(argv)
    counts = [int(n) for n in args.brokers.split(",")]
    print(f"load average at the start: {os.getloadavg()}", flush=True)
    for run_index in range(args.runs):
        for brokers in counts:
            result = run(brokers, args.fsync, args.seconds, args.producers, args.workers)
            print(
                f"run {run_index + 1}: {brokers} broker(s), --fsync {args.fsync}: "
                f"{result['acked_per_s']:,.0f} jobs/s acked "
                f"({result['pushed_per_s']:,.0f} pushed/s); CPU per job acked: brokers "
                f"{result['server_us_per_job']:.1f} µs, clients "
                f"{result['clients_us_per_job']:.1f} µs",
                flush=True,
            )
    print(f"load average at the end: {os.getloadavg()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
