"""What time limits and progress cost the core's lease paths: CPU per operation.

    .venv/bin/python bench/lease_ops_cost.py [--jobs 50000] [--batch 100] [--mode plain]

Drives the pure core as the broker does (bench/core_driver.py: a sign of
life, ``decide``, ``apply``): ``--jobs`` jobs pushed in requests of
``--batch``, then, batch by batch, a fetch of ``--batch`` leases, an
``extend`` of each lease, a ``beat`` and an ``ack_many``; prints the CPU
microseconds a job of each step. ``--mode``: ``plain`` (no job option:
the path every lease takes whether or not the features are used; run it
on an older checkout too, side by side), ``limit`` (each job has a time
limit longer than its ttl: the cap is computed at every grant and
extend), ``progress`` (a ``progress`` report instead of each ``extend``).
A measurement, not a test.
"""

import argparse
import gc
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import msgspec

from bench.core_driver import CoreDriver
from leash.protocol import messages as M

ARGS = msgspec.Raw(msgspec.msgpack.encode({"user": 12345, "report": "daily"}))
HOUR_MS = 3_600_000


def spec(mode: str) -> M.JobSpec:
    if mode == "limit":
        return M.JobSpec(type="t", args=ARGS, time_limit_ms=2 * HOUR_MS)  # type: ignore[call-arg]
    return M.JobSpec(type="t", args=ARGS)


def renew(mode: str, rid: int, job: M.Delivery) -> M.Request:
    if mode == "progress":
        return M.Progress(rid, job.id, job.token, 50, "half way")  # type: ignore[attr-defined,no-any-return]
    return M.Extend(rid, job.id, job.token)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--mode", choices=("plain", "limit", "progress"), default="plain")
    options = parser.parse_args()
    driver = CoreDriver()
    gc.disable()
    batches = [
        [spec(options.mode) for _ in range(options.batch)]
        for _ in range(0, options.jobs, options.batch)
    ]
    spent = dict.fromkeys(("push", "fetch", "extend", "beat", "ack"), 0.0)
    started = time.process_time()
    for specs in batches:
        driver.send(M.PushMany(driver.next(), specs))
    spent["push"] = time.process_time() - started
    while True:
        started = time.process_time()
        reply = driver.send(M.Fetch(driver.next(), ["default"], options.batch, 0))
        spent["fetch"] += time.process_time() - started
        assert isinstance(reply, M.Jobs)
        if not reply.jobs:
            break
        driver.now_ms += 1
        requests = [renew(options.mode, driver.next(), job) for job in reply.jobs]
        started = time.process_time()
        for request in requests:
            assert isinstance(driver.send(request), M.Extended)
        spent["extend"] += time.process_time() - started
        started = time.process_time()
        driver.send(M.Beat(driver.next()))
        spent["beat"] += time.process_time() - started
        refs = [M.LeaseRef(job.id, job.token) for job in reply.jobs]
        started = time.process_time()
        driver.send(M.AckMany(driver.next(), refs))
        spent["ack"] += time.process_time() - started
    per_job_us = 1e6 / options.jobs
    figures = ", ".join(f"{step} {s * per_job_us:.2f}" for step, s in spent.items())
    print(f"{options.mode}: us/job: {figures}")


if __name__ == "__main__":
    main()
