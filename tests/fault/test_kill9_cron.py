"""kill -9 during schedule ticks: no tick fires twice, none is lost while up.

A broker runs two schedules: ``beat``, every second (missed ticks
skipped), and ``clock``, a cron expression ticking at every whole second
(``* * * * * *``, missed ticks: the last one runs). A worker acks their
jobs and notes, per job id (``_sch:NAME:TICK_MS``, the tick it runs for),
each ack the broker confirmed. The broker is killed with SIGKILL at a
random moment, stays down a random while, and is started again. At the
end every job left is drained too. Then:

- no job id is acked twice: no tick pushed two jobs (a confirmed ack is
  journalled, so a job acked once and pushed again would be acked again);
- every tick of either schedule that came while the broker was up (from
  when it listened to a margin before its kill, for a loaded machine) ran;
- no ``beat`` tick that came while the broker was down ran (skip), and at
  most one ``clock`` tick of each down time ran (the last missed one);
- ``fsck`` finds nothing after every restart.

``LEASH_KILL9_CRON_CYCLES`` sets the cycles (4 by default);
``LEASH_KILL9_SEED`` repeats a run (the seed is printed).
"""

import contextlib
import os
import random
import threading
import time
from collections import Counter

from leash.client import Client, LeashError
from tests.integration.broker_proc import BrokerProcess

CYCLES = int(os.environ.get("LEASH_KILL9_CRON_CYCLES", "4"))
FLAGS = ["--fsync", "always", "--segment-bytes", "8192", "--snapshot-min-bytes", "16384"]
UP_S = (2.5, 4.5)  # how long the broker runs before the kill
DOWN_S = (0.2, 2.5)  # how long it stays down
# A tick this close before the kill may not have fired yet on a loaded machine
# (the timer runs late): it counts neither way.
MARGIN_MS = 1500
SECOND_MS = 1000
QUEUE = "cron"


class Acks:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()  # job id -> acks the broker confirmed

    def ticks(self, name: str) -> list[int]:
        prefix = f"_sch:{name}:"
        with self.lock:
            return sorted(int(i[len(prefix) :]) for i in self.counts if i.startswith(prefix))


def _work(port: int, acks: Acks, stop: threading.Event) -> None:
    with contextlib.suppress(LeashError, OSError), Client("127.0.0.1", port, timeout_s=5.0) as c:
        while not stop.is_set():
            for job in c.fetch_many(QUEUE, 16, wait_ms=100):
                c.ack(job)
                with acks.lock:
                    acks.counts[job.id] += 1


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _check_windows(
    acks: Acks, up: list[tuple[int, int]], down: list[tuple[int, int]], where: str
) -> None:
    beat, clock = acks.ticks("beat"), acks.ticks("clock")
    assert beat and clock, f"{where}: no tick ran"
    phase_ms = beat[0] % SECOND_MS
    for start_ms, end_ms in up:  # the broker listened from start to end (its kill)
        for ticks, offset in ((beat, phase_ms), (clock, 0)):
            first = (start_ms - offset) // SECOND_MS * SECOND_MS + offset + SECOND_MS
            expected = range(first, end_ms - MARGIN_MS, SECOND_MS)
            lost = sorted(set(expected) - set(ticks))
            assert not lost, f"{where}: ticks {lost} lost while up {start_ms}..{end_ms}"
    for killed_ms, started_ms in down:  # no tick came between these on a running broker
        ran = [t for t in beat if killed_ms < t < started_ms]
        assert not ran, f"{where}: beat ran {ran}, missed while down {killed_ms}..{started_ms}"
        ran = [t for t in clock if killed_ms < t < started_ms]
        assert len(ran) <= 1, f"{where}: clock ran {ran} while down {killed_ms}..{started_ms}"


def _start(data: str) -> BrokerProcess:
    broker = BrokerProcess(data, FLAGS).start()
    with broker.admin() as admin:
        report = admin.fsck()
    assert report.problems == [], report.problems
    return broker


def test_kill_9_during_ticks_fires_each_tick_once_and_loses_none_while_up(
    tmp_path: os.PathLike[str],
) -> None:
    seed = int(os.environ.get("LEASH_KILL9_SEED", random.randrange(2**32)))
    print(f"kill -9 cron seed={seed} cycles={CYCLES} (rerun: LEASH_KILL9_SEED={seed})")
    rng = random.Random(seed)
    data = os.path.join(tmp_path, "data")
    acks = Acks()
    up: list[tuple[int, int]] = []
    down: list[tuple[int, int]] = []
    for cycle in range(CYCLES):
        started_ms = _now_ms()  # the broker boots after this: ticks before it were missed
        if down:
            down[-1] = (down[-1][0], started_ms)
        broker = _start(data)
        listening_ms = _now_ms()
        stop = threading.Event()
        worker = threading.Thread(target=_work, args=(broker.port, acks, stop), daemon=True)
        try:
            if cycle == 0:
                with broker.admin() as admin:
                    job = {"type": "tick", "queue": QUEUE}
                    admin.add_schedule("beat", job, every_ms=SECOND_MS)
                    admin.add_schedule("clock", job, cron="* * * * * *", missed="last")
                listening_ms = _now_ms()  # their ticks start after this
            worker.start()
            time.sleep(rng.uniform(*UP_S))
        finally:
            killed_ms = _now_ms()
            broker.kill()
        stop.set()
        worker.join(10)
        assert not worker.is_alive(), f"seed={seed} cycle={cycle}: the worker hangs"
        up.append((listening_ms, killed_ms))
        down.append((killed_ms, 0))
        time.sleep(rng.uniform(*DOWN_S))
    down[-1] = (down[-1][0], _now_ms())
    final = _start(data)
    try:
        with Client("127.0.0.1", final.port, timeout_s=10.0) as client:
            while jobs := client.fetch_many(QUEUE, 100, wait_ms=0):
                for job in jobs:
                    client.ack(job)
                    acks.counts[job.id] += 1
    finally:
        final.kill()
    where = f"seed={seed}"
    twice = [job_id for job_id, count in acks.counts.items() if count > 1]
    assert not twice, f"{where}: ticks fired twice: {twice}"
    _check_windows(acks, up, down, where)
    print(f"{len(acks.counts)} ticks ran once each over {CYCLES} kills, none lost while up")
