"""Memory per queued job, and the restart after a kill on the data those jobs left.

One cell per broker: start it empty, read its RSS (``/proc/PID/status``
VmRSS), queue ``Sizes.memory_jobs`` jobs of 100 bytes, read the RSS again:
(after - before) / jobs. Every job is its own journal record: Leash gets one
push per request (many requests in flight on one ``AsyncClient``), so its
journal holds a million ``pushed`` records; beanstalkd's binlog and Redis's
AOF get one ``put`` / ``LPUSH`` per job (pipelined). Then the broker is
stopped and started again on the same data: the wall time from spawn to the
first answered request is its restart time (Leash also logs its own
recovery time), reported per million records written. Leash is stopped with
SIGKILL, as a crash: a clean stop would write a snapshot of everything. It
restarts from the snapshot its snapshotter took during the fill (when the
journal passed 64 MiB) and the records after it, as a broker restarted
after a crash does; the peers replay their logs. Replay speed alone, with no
snapshot, is bench/replay.py's.
"""

import asyncio
import time

from bench import drivers
from bench.servers import HOST, Server, System
from bench.workloads import FILL_BATCH, Context, Result, bodies, chunks

SETTLE_S = 1.0  # let a broker finish flushing (Redis everysec) before reading its RSS


def memory_and_replay(ctx: Context, system: System) -> Result:
    count = ctx.sizes.memory_jobs
    data_dir = ctx.new_dir()
    server = Server(system, data_dir).start()
    try:
        time.sleep(SETTLE_S)
        before = server.rss_bytes()
        if system.kind == "leash":
            asyncio.run(_fill_leash(server.port, count, ctx.sizes.leash_fill_in_flight))
        else:
            session = drivers.connect(system.kind, HOST, server.port)
            for chunk in chunks(bodies(count), FILL_BATCH):
                session.push_batch(chunk)
            session.close()
        time.sleep(SETTLE_S)
        after = server.rss_bytes()
    finally:
        server.stop(crash=system.kind == "leash")
    restarted = Server(system, data_dir).start()
    try:
        recovered_s = restarted.recovery_s()
        replayed_rss = restarted.rss_bytes()
    finally:
        restarted.stop()
    per_million = 1_000_000 / count
    result = {
        "bytes_per_job": (after - before) / count,
        "replay_s_per_million": restarted.ready_s * per_million,
        "rss_after_replay_bytes_per_job": replayed_rss / count,
    }
    if recovered_s is not None:
        result["recovered_s_per_million"] = recovered_s * per_million
    return result


async def _fill_leash(port: int, count: int, in_flight: int) -> None:
    from leash.client import AsyncClient

    client = await AsyncClient.connect(HOST, port)
    try:
        for chunk in chunks(bodies(count), in_flight):
            await asyncio.gather(
                *(client.push("bench", body, queue=drivers.QUEUE) for body in chunk)
            )
    finally:
        await client.close()
