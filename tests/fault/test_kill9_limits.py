"""kill -9 of workers under a concurrency limit: the limit holds, slots come back.

A queue limited to ``CONCURRENCY`` jobs leased at once and one per
concurrency key holds jobs of a few keys; real worker processes (a
``python -c`` script with the real ``Client``) fetch them, hold each a
moment and ack it. Now and then one of them is killed with SIGKILL while
it holds leases, and a new one started. Throughout, an observer reads the
busy view (one consistent snapshot of the leases) every few milliseconds:

- the queue never has more than ``CONCURRENCY`` jobs leased, nor any key
  more than one;
- the dead worker's jobs are leased to it no more within the reconnect
  grace and a bound, so they run again and its slots serve the others;
- in the end (after up to ``KILLS`` kills: as many as the work lasts
  for, at least one) every job was acked, none is lost or dead: each job the
  broker no longer knows was being acked by a worker.

Default broker flags (a dead worker's leases end after the 2 s reconnect
grace). ``LEASH_KILL9_SEED`` repeats a run (the seed is printed).
"""

import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable

from leash.client import Client
from tests.integration import test_processes
from tests.integration.broker_proc import BrokerProcess
from tests.integration.test_processes import Script
from tests.waiting import wait_until

QUEUE = "lim"
CONCURRENCY = 3
KEYS = [f"customer-{n}" for n in range(5)]
JOBS_PER_KEY = 30  # work for a few kills (as many as it lasts for, up to KILLS)
WORKERS = 4
KILLS = 3
OBSERVE_S = 0.01
start_script = test_processes.start_script  # its fixture: worker scripts killed by pid at the end
GONE_BOUND_S = 8.0  # the 2 s reconnect grace, and room for a loaded machine
DONE_BOUND_S = 90.0

# Fetches from the queue, holds each job a moment, acks it: "acking ID"
# before the ack is sent, "acked ID" after.
WORKER = """
import random, sys, time
from leash.client import Client, NotFound, StaleLease

port, queue, seed = sys.argv[1:4]
rng = random.Random(int(seed))
client = Client("127.0.0.1", int(port), timeout_s=10.0)
print("ready", client.worker_id, flush=True)
while True:
    for job in client.fetch_many(queue, 2, wait_ms=200):
        time.sleep(rng.uniform(0.02, 0.2))
        print("acking", job.id, flush=True)
        try:
            client.ack(job)
            print("acked", job.id, flush=True)
        except (StaleLease, NotFound):
            print("stale", job.id, flush=True)
"""


class Observer:
    """Reads the busy view until stopped; counts what it saw over the limits."""

    def __init__(self, broker: BrokerProcess, key_of: dict[str, str]) -> None:
        self.broker, self.key_of = broker, key_of
        self.stop = threading.Event()
        self.observations = 0
        self.most = 0
        self.over: list[str] = []
        self.holding: dict[str, list[str]] = {}  # worker id -> job ids, at the last look
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with self.broker.admin() as admin:
            while not self.stop.is_set():
                busy = admin.busy()
                held = {p.worker_id: [j.id for j in p.jobs if j.queue == QUEUE] for p in busy}
                ids = [job_id for jobs in held.values() for job_id in jobs]
                per_key = Counter(self.key_of[job_id] for job_id in ids)
                with self.lock:
                    self.observations += 1
                    self.most = max(self.most, len(ids))
                    self.holding = held
                    if len(ids) > CONCURRENCY or any(n > 1 for n in per_key.values()):
                        self.over.append(f"{len(ids)} leased, by key {dict(per_key)}")
                time.sleep(OBSERVE_S)

    def held_by(self, worker_id: str) -> list[str]:
        with self.lock:
            return list(self.holding.get(worker_id, []))


def _left(broker: BrokerProcess) -> int:
    """The queue's jobs not done yet (dead ones too: none should be)."""
    with broker.admin() as admin:
        (view,) = [q for q in admin.queues() if q.name == QUEUE]
    return view.ready + view.in_flight + view.scheduled + view.dead


def _lines(started: list[Script]) -> list[list[str]]:
    found = []
    for script in started:
        while not script.lines.empty():
            found.append(script.lines.get_nowait().split())
    return found


def test_workers_killed_9_under_a_concurrency_limit_never_break_it_and_lose_nothing(
    tmp_path: "os.PathLike[str]", start_script: Callable[..., Script]
) -> None:
    seed = int(os.environ.get("LEASH_KILL9_SEED", random.randrange(2**32)))
    print(f"kill -9 workers under a limit seed={seed} (rerun: LEASH_KILL9_SEED={seed})")
    rng = random.Random(seed)
    broker = BrokerProcess(os.path.join(tmp_path, "data")).start()
    observer = None
    try:
        with broker.admin() as admin:
            admin.set_queue_limits(QUEUE, concurrency=CONCURRENCY, per_key=1)
        with Client("127.0.0.1", broker.port, timeout_s=10.0) as client:
            specs = [
                {"type": "t", "queue": QUEUE, "concurrency_key": key}
                for _ in range(JOBS_PER_KEY)
                for key in KEYS
            ]
            key_of = {
                result.id: str(spec["concurrency_key"])
                for spec, result in zip(specs, client.push_many(specs), strict=True)
            }
        observer = Observer(broker, key_of)
        seeds = [rng.randrange(2**32) for _ in range(WORKERS)]
        started = [start_script(WORKER, broker.port, QUEUE, seed_of) for seed_of in seeds]
        worker_of = {script.expect("ready")[0]: script for script in started}
        killed = 0
        kills_end = time.monotonic() + DONE_BOUND_S
        while killed < KILLS and time.monotonic() < kills_end:
            time.sleep(rng.uniform(0.2, 0.6))
            holders = [w for w in worker_of if observer.held_by(w)]
            if not holders:
                if _left(broker) == 0:
                    break  # the work ran out first
                continue
            victim = rng.choice(sorted(holders))
            held = observer.held_by(victim)
            worker_of.pop(victim).signal(signal.SIGKILL)
            began = time.monotonic()
            killed += 1
            fresh = start_script(WORKER, broker.port, QUEUE, rng.randrange(2**32))
            started.append(fresh)
            worker_of[fresh.expect("ready")[0]] = fresh
            assert wait_until(lambda v=victim: not observer.held_by(v), GONE_BOUND_S), (
                f"seed={seed}: {victim}'s leases {held} outlived it"
            )
            print(f"kill {killed}: {held} free again {time.monotonic() - began:.2f} s after it")

        assert killed >= 1, f"seed={seed}: no worker held a lease to kill"
        assert wait_until(lambda: _left(broker) == 0, DONE_BOUND_S), f"seed={seed}: jobs left"
        observer.stop.set()
        observer.thread.join(10)
        acking = {fields[1] for fields in _lines(started) if fields[0] == "acking"}
        with Client("127.0.0.1", broker.port, timeout_s=10.0) as client:
            for job_id in key_of:  # each in the finished-job history, acked
                finished = client.get_job(job_id)
                assert finished.state == "succeeded", f"seed={seed}: {finished}"
        assert set(key_of) <= acking, f"seed={seed}: lost {sorted(set(key_of) - acking)}"
        assert observer.over == [], f"seed={seed}: over the limit: {observer.over[:5]}"
        assert observer.most == CONCURRENCY, "the limit was never reached: too little load"
        print(f"{observer.observations} observations, at most {observer.most} leased")
    finally:
        if observer is not None:
            observer.stop.set()
        broker.kill()
