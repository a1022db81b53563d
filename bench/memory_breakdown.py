"""``python -m bench.memory_breakdown``: what one queued Leash job costs, object by object.

Builds a broker state the way the broker does on a push (the records go
through ``core.decide`` and ``core.apply``, from requests decoded off the
wire), for jobs like the benchmark's (a 32-hex client id, a 100-byte
payload), and reports:
- ``sys.getsizeof`` of each object one job owns, and its share of the
  containers (the jobs dict, the ready bucket), per job;
- what tracemalloc saw allocated per job, in total;
which, set beside the RSS per job that ``python -m bench`` measures, shows
how much is the objects and how much the allocator around them.
"""

import argparse
import sys
import tracemalloc
import uuid
from collections import OrderedDict

from broker import core
from broker.core.state import Job
from client import job_spec
from protocol import messages as M

WORKER = "bench-worker"


def build(count: int) -> core.State:
    state = core.State()
    state.epoch, state.counter = 1, 1
    info = core.records.ProcessInfo("host", 1, [], 0, "bench")
    for record in core.touch(state, WORKER, info, 0, hello=True):
        core.apply(state, record)
    body = b"x" * 100
    for i in range(count):
        spec = job_spec("bench", body, queue="bench", id=uuid.uuid4().hex)
        wire = M.encoder.encode(M.Push(rid=i + 1, job=spec))
        request = M.decode_request(wire)
        outcome = core.decide(state, request, WORKER, 1_700_000_000_000 + i)
        for record in outcome.records:
            core.apply(state, record)
    return state


def objects_of(job: Job) -> list[tuple[str, float]]:
    return [
        ("Job struct (18 fields, gc=False)", sys.getsizeof(job)),
        ("id: str of 32 hex chars", sys.getsizeof(job.id)),
        ("args: msgspec.Raw", sys.getsizeof(job.args)),
        ("args: the bytes it holds (102 of msgpack)", sys.getsizeof(bytes(job.args))),
        ("queue: str (one per job, not shared)", sys.getsizeof(job.queue)),
        ("type: str (one per job, not shared)", sys.getsizeof(job.type)),
        ("created_ms: int", sys.getsizeof(job.created_ms)),
    ]  # priority, max_attempts, lease_ttl_ms: small ints or the default's one int, shared


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory_breakdown")
    p.add_argument("--jobs", type=int, default=200_000)
    args = p.parse_args(argv)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    state = build(args.jobs)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    count = len(state.jobs)
    job = next(iter(state.jobs.values()))
    bucket: OrderedDict[str, Job] = state.queues["bench"].buckets[job.priority]
    rows = objects_of(job)
    rows.append(("jobs dict: its share per entry", sys.getsizeof(state.jobs) / count))
    rows.append(("ready bucket (OrderedDict): share per entry", sys.getsizeof(bucket) / count))
    shared = {
        "queue": job.queue is state.jobs[list(state.jobs)[-1]].queue,
        "type": job.type is state.jobs[list(state.jobs)[-1]].type,
        "lease_ttl_ms": job.lease_ttl_ms is state.jobs[list(state.jobs)[-1]].lease_ttl_ms,
    }
    print(f"{count:,} queued jobs\n")
    print("| what one queued job holds | bytes |\n|---|---|")
    for name, size in rows:
        print(f"| {name} | {size:,.0f} |")
    print(f"| **sum of the objects** | **{sum(size for _, size in rows):,.0f}** |")
    print(f"| tracemalloc: allocated per job | {(after - before) / count:,.0f} |")
    print(f"\nshared between jobs (one object, not one per job): {shared}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
