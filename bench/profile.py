"""``python -m bench.profile``: where the end-to-end workload spends its CPU.

Runs the end-to-end workload (one producer in this process, worker processes
fetching and acking one job at a time) against a Leash server with the given
fsync policy, while py-spy samples the server, one worker and the producer.
py-spy is run with ``--gil``: only samples in which a thread holds the GIL
count, so time blocked in epoll, recv or fsync is left out and what remains
is the Python CPU cost. Each sample is charged to the innermost frame that
names a step of the request path (``SERVER_STEPS``, ``CLIENT_STEPS``); the
rest is "other". Raw stacks (py-spy's collapsed format) are kept in the
output directory for flame graphs.

    python -m bench.profile --fsync always --seconds 8
"""

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from bench import drivers
from bench.pool import Pool
from bench.servers import HOST, Server, System
from bench.workloads import bodies, push_until, stop_workers

SERVER_STEPS = (
    ("frame split (FrameDecoder)", ("FrameDecoder.",)),
    ("request decode (msgspec)", ("decode_request",)),
    ("sign of life (core.touch)", ("touch (broker/core/processes",)),
    ("decide (core.decide)", ("decide (broker/core/decide", "_decide (")),
    ("apply (core.apply)", ("apply (broker/core/apply",)),
    ("journal encode (records + crc)", ("Journal.encode",)),
    ("timer re-arm (next_due_ms)", ("_arm_timer", "next_due_ms")),
    ("long-poll waiters", ("_wake_waiters", "_hold", "_expire", "Waiters.", "_drop")),
    (
        "group commit hand-off (executor, futures, callbacks)",
        ("GroupCommitter.", "ThreadPoolExecutor", "futures.py", "thread.py", "threading.py"),
    ),
    ("journal write + fsync call (writer thread)", ("Journal.append", "OsDisk.", "Journal.sync")),
    ("reply encode + transport write", ("Connection.send",)),
    ("connection + loop callbacks", ("data_received", "Broker.handle", "Broker._reply")),
)
CLIENT_STEPS = (  # the first step whose needle a frame contains names it
    ("job spec + id (job_spec, uuid4)", ("job_spec", "uuid")),
    ("request encode", ("ClientCore._encode", "encode_frame")),
    ("reply frame split", ("FrameDecoder.",)),
    ("reply decode + match", ("_complete", "next_completion")),
    ("Job object", ("Job.__init__", "_delivered_jobs", "Job.args")),
    ("request build (ClientCore ops)", ("ClientCore.",)),
    ("socket send", ("Client._send",)),
    ("socket recv + wait loop", ("Client._wait",)),
    ("call bookkeeping", ("Client._call",)),
    ("bench harness", ("bench/workloads", "bench/drivers", "bench/profile")),
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    p.add_argument("--fsync", default="always", help="always | interval:MS | never")
    p.add_argument("--seconds", type=float, default=8.0, help="how long the producer pushes")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out", "profile"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(spy):
        raise SystemExit("py-spy is not installed: pip install -e '.[bench]'")
    os.makedirs(args.out, exist_ok=True)
    tag = args.fsync.replace(":", "")
    system = System(f"leash-{tag}", f"Leash {args.fsync}", "leash", "?", ("--fsync", args.fsync))
    data = tempfile.mkdtemp(prefix="leash-profile-")
    server = Server(system, data).start()
    pool = Pool(args.workers)
    try:
        rate, jobs = _profiled_run(args, spy, server, pool, tag)
    finally:
        pool.close()
        server.stop()
        shutil.rmtree(data, ignore_errors=True)
    print(f"end to end under py-spy, fsync {args.fsync}: {jobs:,} jobs, {rate:,.0f} jobs/s\n")
    for role, share in (("server", 1), ("worker", args.workers), ("producer", 1)):
        steps = SERVER_STEPS if role == "server" else CLIENT_STEPS
        # A worker handles 1/workers of the jobs; the server and the producer all of them.
        per_job_us = 1e6 / args.rate / (jobs / share)
        print(summary(_raw(args.out, role, tag), role, steps, per_job_us))
    return 0


def _profiled_run(
    args: argparse.Namespace, spy: str, server: Server, pool: Pool, tag: str
) -> tuple[float, int]:
    task = {"kind": "leash", "port": server.port, "latency": False}
    pool.start("consume", [task] * args.workers)
    targets = {"server": server.pid, "worker": pool.pids[0], "producer": os.getpid()}
    options = ["--gil", "--rate", str(args.rate), "--format", "raw", "--nonblocking"]
    spies = [
        subprocess.Popen(
            [spy, "record", "--pid", str(pid), *options, "--output", _raw(args.out, role, tag)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for role, pid in targets.items()
    ]
    time.sleep(1.0)  # let py-spy attach
    session = drivers.connect("leash", HOST, server.port)
    all_bodies = bodies(int(args.seconds * 50_000))
    started = time.monotonic()
    pool.go()
    push_until(session, all_bodies, started + args.seconds)
    stop_workers(session, args.workers)
    results = pool.results()
    session.close()
    elapsed = max(r["last_ack"] for r in results) - started
    for spy_process in spies:
        os.kill(spy_process.pid, signal.SIGINT)  # py-spy writes its file on SIGINT
    for spy_process in spies:
        spy_process.wait(60)
    done = sum(r["done"] for r in results)
    return done / elapsed, done


def _raw(out: str, role: str, tag: str) -> str:
    return os.path.join(out, f"{role}-{tag}.txt")


def summary(
    path: str, role: str, steps: tuple[tuple[str, tuple[str, ...]], ...], per_job_us: float
) -> str:
    """Samples per step of the request path, and the CPU time they stand for
    per job (``per_job_us``: the time one sample stands for, per job)."""
    if not os.path.exists(path):
        return f"{role}: no samples ({path} missing)\n"
    by_step: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path) as stacks:
        for line in stacks:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            count = int(count_text)
            frames = stack.split(";")
            total += count
            leaves[frames[-1]] += count
            by_step[_step_of(frames, steps)] += count
    lines = [
        f"## {role}: {total} samples with the GIL held, {total * per_job_us:.1f} µs per job",
        "",
    ]
    lines += ["| step | share | µs per job |", "|---|---|---|"]
    lines += [
        f"| {step} | {100 * n / total:.1f} % | {n * per_job_us:.1f} |"
        for step, n in by_step.most_common()
    ]
    lines += ["", "top frames by own time:", ""]
    lines += [f"    {100 * n / total:5.1f} %  {frame}" for frame, n in leaves.most_common(15)]
    return "\n".join(lines) + "\n"


def _step_of(frames: list[str], steps: tuple[tuple[str, tuple[str, ...]], ...]) -> str:
    for frame in reversed(frames):
        for step, needles in steps:
            if any(needle in frame for needle in needles):
                return step
    return "other (event loop, interpreter)"


if __name__ == "__main__":
    sys.exit(main())
