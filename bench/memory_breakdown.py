"""``python -m bench.memory_breakdown``: what one queued Leash job costs, object by object.

Builds a broker state the way the broker does on a push (the records go
through ``core.decide`` and ``core.apply``, from requests decoded off the
wire), for jobs like the benchmark's (a 32-hex client id, a 100-byte
payload), and reports:
- the objects one ready job owns — ``sys.getsizeof`` and the block the
  allocator gives it (CPython's small-object allocator rounds up to 16 B) —
  and its share of the containers (the jobs dict, the ready deque), per job;
- the RSS this process grew by, per job (or, with ``--traced``, what
  tracemalloc saw allocated per job instead: its own bookkeeping inflates
  the RSS, so one run measures one of the two);
which, set beside the RSS per job that ``python -m bench`` measures, shows
how much is the objects and how much the allocator around them.
"""

import argparse
import sys
import tracemalloc
import uuid

from leash.broker import core
from leash.client import job_spec
from leash.protocol import messages as M

WORKER = "bench-worker"
BLOCK_BYTES = 16  # pymalloc's rounding on 64-bit CPython 3.11
BLOCK_MAX_BYTES = 512  # larger objects come from malloc


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


def block(size: int) -> int:
    """The bytes the allocator hands out for an object of ``size`` bytes."""
    return -(-size // BLOCK_BYTES) * BLOCK_BYTES if size <= BLOCK_MAX_BYTES else size


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory_breakdown")
    p.add_argument("--jobs", type=int, default=200_000)
    p.add_argument("--traced", action="store_true", help="tracemalloc's count, not the RSS")
    args = p.parse_args(argv)
    if args.traced:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0] if args.traced else rss_bytes()
    state = build(args.jobs)
    after = tracemalloc.get_traced_memory()[0] if args.traced else rss_bytes()
    count = len(state.jobs)
    job_id = next(iter(state.jobs))
    stored = state.jobs.stored(job_id)
    bucket = state.queues["bench"].buckets[state.jobs[job_id].priority]
    objects = [
        ("id: a str of 32 hex chars", sys.getsizeof(job_id)),
        (f"the packed job: one {type(stored).__name__} (its args inline)", sys.getsizeof(stored)),
    ]
    shares = [
        ("the jobs dict: its share per entry", sys.getsizeof(state.jobs) / count),
        ("the ready deque: its share per entry", sys.getsizeof(bucket.ids) / count),
    ]
    print(f"{count:,} queued jobs\n")
    print("| what one queued job holds | bytes | allocated |\n|---|---|---|")
    for name, size in objects:
        print(f"| {name} | {size:,} | {block(size):,} |")
    for name, share in shares:
        print(f"| {name} | {share:,.0f} | {share:,.0f} |")
    total = sum(block(size) for _, size in objects) + sum(share for _, share in shares)
    print(f"| **sum** | | **{total:,.0f}** |")
    per_job = (after - before) / count
    if args.traced:
        print(f"| tracemalloc: allocated per job (as asked for) | {per_job:,.0f} | |")
    else:
        print(f"| RSS of this process, per job | | {per_job:,.0f} |")
    names = list(filter(None, state.jobs.names.names))
    print(f"\nthe names the packed jobs use, numbered once: {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
