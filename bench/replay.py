"""Replay speed: how long recovery takes per million journal records.

    .venv/bin/python bench/replay.py [--records 1000000] [--journal mixed|pushes|both]
                                     [--per-frame N] [--keep DIR]

Writes a journal of about ``--records`` records, one job a record, of one
of two kinds: ``mixed``, a broker's ordinary life (push, lease, ack; a
quarter of the jobs left ready), and ``pushes``, a backlog (every record a
push, every job left ready: each one built), framed ``--per-frame``
records a frame (default: as many as fit, a busy broker's journal; 1: an
idle broker's, one request a loop turn). Then recovers it the way
start-up does (``leash.broker.journal.recovery.recover``, garbage collector off)
and reports seconds per million records, and starts the real broker on it
and prints its own start-up log line, which reports the same figure. The
goal (issue: journal) is at most 2 s per million records on a 2-core
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

from bench.journal_gen import WRITE_RECORDS, write_backlog, write_lifecycles
from leash.broker.core import CoreConfig
from leash.broker.journal.disk import OsDisk
from leash.broker.journal.format import FRAME_TARGET_BYTES
from leash.broker.journal.recovery import recover


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
        [sys.executable, "-m", "leash.broker", "serve", "--port", "0", "--data-dir", directory],
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


def run(kind: str, records: int, directory: str, per_frame: int) -> None:
    started = time.perf_counter()
    if kind == "mixed":
        live = write_lifecycles(directory, records, per_frame=per_frame)
    else:
        write_backlog(directory, records - 1, per_record=1, per_frame=per_frame)
        live = records - 1
    size = sum(os.path.getsize(os.path.join(directory, n)) for n in os.listdir(directory))
    print(
        f"{kind}: wrote {records} records ({size / 2**20:.0f} MiB, {live} live jobs, "
        f"{per_frame} a write, framed together up to {FRAME_TARGET_BYTES // 1024} KiB) "
        f"in {time.perf_counter() - started:.1f} s"
    )
    for attempt in range(3):
        replayed, elapsed_s, jobs = measure(directory)
        print(
            f"{kind}: replay {attempt + 1}: {replayed} records in {elapsed_s:.3f} s = "
            f"{elapsed_s / replayed * 1e6:.2f} s per million records ({jobs} jobs)"
        )
    line = broker_line(directory)
    print(f"{kind}: broker start-up:", re.sub(r"^\S+ \S+ ", "", line))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--journal", choices=("mixed", "pushes", "both"), default="both")
    parser.add_argument("--per-frame", type=int, default=WRITE_RECORDS)
    parser.add_argument("--keep", default=None, help="write the journal here and keep it")
    args = parser.parse_args()
    kinds = ("mixed", "pushes") if args.journal == "both" else (args.journal,)
    for kind in kinds:
        if args.keep is not None:
            directory = os.path.join(args.keep, kind)
            os.makedirs(directory, exist_ok=True)
        else:
            directory = tempfile.mkdtemp(prefix=f"leash-replay-{kind}-")
        run(kind, args.records, directory, args.per_frame)
        if args.keep is None:
            for name in os.listdir(directory):
                os.remove(os.path.join(directory, name))
            os.rmdir(directory)


if __name__ == "__main__":
    main()
