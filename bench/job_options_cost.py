"""What unique jobs, expiry and limits cost the core's push and fetch paths: CPU per job.

    .venv/bin/python bench/job_options_cost.py [--jobs 100000] [--batch 100] [--mode plain]

Drives the pure core as the broker does (bench/core_driver.py: a sign of
life, ``decide``, ``apply``) through ``--jobs`` jobs in requests of
``--batch``: push_many, then fetch and ack_many until the queue is empty,
and prints the CPU microseconds a job for the pushes and for the fetches
and acks apart. ``--mode``: ``plain`` (no key: the path every push takes
whether or not the feature is used; run it on an older checkout too, side
by side), ``key`` (each job its own ``unique_key``), ``derived``
(``unique: true``: the key hashed from the args), ``duplicate`` (every
push after the first ``--batch`` names a key already held: nothing is
added), ``ttl`` (each job expires in a day: the expiry heap, the check at
fetch), ``concurrency`` (the queue may lease ``--batch`` at once: each fetch
checks its room), ``per_key`` (each job has one of 1,000 concurrency keys,
at most 1 leased a key: the lanes and their tokens), ``rate`` (the queue
starts at most 100,000 jobs a second: the window of lease times; the clock
moves 1 ms a fetch), ``saturated`` (as ``per_key``, but the first half of
the jobs share one key whose slot a lease holds all along: a fetch must
not scan past them), ``result`` (each job keeps its result: every ack
carries one). ``--tick``: after each ack_many the core's timer runs, as the
broker's does (it trims the finished-job history, on by default). A
measurement, not a test.
"""

import argparse
import gc
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import msgspec

from bench.core_driver import CoreDriver
from leash.broker.core import apply, tick
from leash.protocol import messages as M

RESULT = msgspec.msgpack.encode({"rows": 17, "status": "ok"})
ARGS = msgspec.Raw(msgspec.msgpack.encode({"user": 12345, "report": "daily", "day": "2026-03-02"}))


def spec(mode: str, number: int, batch: int) -> M.JobSpec:
    if mode == "key":
        return M.JobSpec(type="t", args=ARGS, unique_key=f"key-{number}")
    if mode == "derived":
        args = msgspec.Raw(msgspec.msgpack.encode({"user": number, "report": "daily"}))
        return M.JobSpec(type="t", args=args, unique=True)
    if mode == "duplicate":
        return M.JobSpec(type="t", args=ARGS, unique_key=f"key-{number % batch}")
    if mode == "ttl":
        return M.JobSpec(type="t", args=ARGS, ttl_ms=86_400_000)
    if mode in ("per_key", "saturated"):
        key = "big" if mode == "saturated" and number < 0 else f"customer-{number % 1000}"
        return M.JobSpec(type="t", args=ARGS, concurrency_key=key)
    if mode == "result":
        return M.JobSpec(type="t", args=ARGS, keep_result_ms=3_600_000)
    return M.JobSpec(type="t", args=ARGS)


def limit(driver: CoreDriver, mode: str, batch: int) -> None:
    """The queue's limits for the mode (none for the modes without)."""
    from leash.broker.core import apply
    from leash.broker.core.records import QueueLimitsSet

    limits = {
        "concurrency": QueueLimitsSet("default", concurrency=batch),
        "per_key": QueueLimitsSet("default", per_key=1),
        "saturated": QueueLimitsSet("default", per_key=1),
        "rate": QueueLimitsSet("default", rate=100_000, rate_interval_ms=1000),
    }.get(mode)
    if limits is not None:
        apply(driver.state, limits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument(
        "--mode",
        choices=(
            "plain", "key", "derived", "duplicate", "ttl", "concurrency", "per_key", "rate",
            "saturated", "result",
        ),
        default="plain",
    )  # fmt: skip
    parser.add_argument("--tick", action="store_true", help="tick after each ack_many")
    options = parser.parse_args()
    driver = CoreDriver()
    gc.disable()
    batches = [  # made before the clock starts: what a push costs the core, not its spec
        [spec(options.mode, n, options.batch) for n in range(first, first + options.batch)]
        for first in range(0, options.jobs, options.batch)
    ]
    if options.mode == "saturated":  # half the jobs wait behind one key, held all along
        half = options.jobs // 2
        saturated = [spec(options.mode, -1, options.batch) for _ in range(half)]
        batches = [saturated[i : i + options.batch] for i in range(0, half, options.batch)]
        batches += [
            [spec(options.mode, n, options.batch) for n in range(first, first + options.batch)]
            for first in range(0, options.jobs - half, options.batch)
        ]
    if options.mode != "plain":
        limit(driver, options.mode, options.batch)
    started = time.process_time()
    for specs in batches:
        driver.send(M.PushMany(driver.next(), specs))
    pushed_s = time.process_time() - started
    held = 0
    if options.mode == "saturated":  # the one key's slot, held while the rest are fetched
        reply = driver.send(M.Fetch(driver.next(), ["default"], 1, 0))
        assert isinstance(reply, M.Jobs) and reply.jobs[0].id
        held = options.jobs // 2
    started = time.process_time()
    fetched = 0
    while True:
        reply = driver.send(M.Fetch(driver.next(), ["default"], options.batch, 0))
        assert isinstance(reply, M.Jobs)
        if not reply.jobs:
            break
        fetched += len(reply.jobs)
        refs = [M.LeaseRef(job.id, job.token) for job in reply.jobs]
        values = [RESULT] * len(refs) if options.mode == "result" else None
        driver.send(M.AckMany(driver.next(), refs, values))
        driver.now_ms += 1
        if options.tick:
            for record in tick(driver.state, driver.now_ms):
                apply(driver.state, record)
    fetched_s = time.process_time() - started
    assert fetched == options.jobs - held, (fetched, options.jobs, held)
    per_job_us = 1e6 / options.jobs
    print(
        f"{options.mode}: push {pushed_s * per_job_us:.2f} us/job, "
        f"fetch+ack {fetched_s * per_job_us:.2f} us/job"
    )


if __name__ == "__main__":
    main()
