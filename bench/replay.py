"""Replay speed: how long recovery takes per million journal records.

    .venv/bin/python bench/replay.py [--records 1000000] [--keep DIR]

Writes a journal of about ``--records`` records (a broker's ordinary mix:
push, lease, ack; a quarter of the jobs left ready), then recovers it the
way start-up does (``broker.journal.recovery.recover``, garbage collector
off) and reports seconds per million records. Then starts the real broker
on it and prints its own start-up log line, which reports the same figure.
The goal (issue: journal) is at most 2 s per million records on a 2-core
machine. A measurement, not a test.
"""

import argparse
import gc
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.journal_gen import write_lifecycles
from broker.core import CoreConfig
from broker.journal.disk import OsDisk
from broker.journal.recovery import recover


def measure(directory: str) -> tuple[int, float, int]:
    gc.collect()
    gc.disable()
    started = time.perf_counter()
    try:
        recovered = recover(directory, OsDisk(), CoreConfig(), read_only=True)
    finally:
        gc.enable()
    return recovered.records, time.perf_counter() - started, len(recovered.state.jobs)


def broker_line(directory: str) -> str:
    process = subprocess.Popen(
        [sys.executable, "-m", "broker", "serve", "--port", "0", "--data-dir", directory],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    found = ""
    for line in process.stderr:
        if "recovered" in line:
            found = line.strip()
        if "listening on" in line:
            break
    process.kill()  # no shutdown snapshot: the journal stays as it was
    process.wait()
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--keep", default=None, help="write the journal here and keep it")
    args = parser.parse_args()
    directory = args.keep or tempfile.mkdtemp(prefix="leash-replay-")
    started = time.perf_counter()
    live = write_lifecycles(directory, args.records)
    size = sum(os.path.getsize(os.path.join(directory, n)) for n in os.listdir(directory))
    print(
        f"wrote {args.records} records ({size / 2**20:.0f} MiB, {live} live jobs) "
        f"in {time.perf_counter() - started:.1f} s"
    )
    for attempt in range(3):
        records, elapsed_s, jobs = measure(directory)
        print(
            f"replay {attempt + 1}: {records} records in {elapsed_s:.3f} s = "
            f"{elapsed_s / records * 1e6:.2f} s per million records ({jobs} jobs)"
        )
    line = broker_line(directory)
    print("broker start-up:", re.sub(r"^\S+ \S+ ", "", line))
    if args.keep is None:
        for name in os.listdir(directory):
            os.remove(os.path.join(directory, name))
        os.rmdir(directory)


if __name__ == "__main__":
    main()
