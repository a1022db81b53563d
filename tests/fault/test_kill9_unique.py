"""kill -9 during unique pushes: no uniqueness key outlives its job.

A producer pushes jobs whose keys come from a small pool (half of them
kept for ten minutes after success, half freed at once), so most pushes
are duplicates; a worker leases them and acks, fails for good or fails
to retry. The broker (small segments and snapshot thresholds, so
snapshots carry keys too) is killed with SIGKILL at a random moment and
started again. After every restart:

- ``fsck`` finds nothing: every key is held by exactly the live job that
  carries it, or by the window after its job's success (check_invariants);
- every acknowledged push that created a job, whose job no ack or fail was
  sent for, still holds its key;
- a probe push of every key is a duplicate naming a job that holds the key
  (a live one carrying it, or one of ours in its window) or, when nothing
  acknowledged holds it, creates the job that holds it from then on.

``LEASH_KILL9_UNIQUE_CYCLES`` sets the cycles (6 by default);
``LEASH_KILL9_SEED`` repeats a run (the seed is printed).
"""

import contextlib
import os
import random
import threading
import time

from leash.client import Client, LeashError
from tests.fault.test_kill9 import Load
from tests.integration.broker_proc import BrokerProcess

CYCLES = int(os.environ.get("LEASH_KILL9_UNIQUE_CYCLES", "6"))
FLAGS = ["--fsync", "always", "--segment-bytes", "8192", "--snapshot-min-bytes", "16384"]
LOAD_S = (0.1, 0.6)  # how long the load runs before the kill
KEYS = [f"key-{n}" for n in range(12)]
WINDOW_MS = 600_000  # the first half of KEYS: kept this long after success (past the test)
PUSH_BATCH = 4


def _window_ms(key: str) -> int:
    return WINDOW_MS if KEYS.index(key) < len(KEYS) // 2 else 0


class Ledger:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.created: dict[str, str] = {}  # acknowledged job-creating pushes: job id -> key
        self.ending: set[str] = set()  # jobs an ack or a fail was sent for
        self.duplicates = 0
        self.counter = 0

    def next_id(self, prefix: str) -> str:
        with self.lock:
            self.counter += 1
            return f"{prefix}-{self.counter}"


def _client(port: int, load: Load) -> Client:
    """A client the kill closes (it would send its request again until its timeout)."""
    client = Client("127.0.0.1", port, timeout_s=5.0)
    load.clients.append(client)
    return client


def _produce(port: int, ledger: Ledger, rng: random.Random, load: Load) -> None:
    with _client(port, load) as client:
        while not load.stop.is_set():
            keys = [rng.choice(KEYS) for _ in range(PUSH_BATCH)]
            specs = [
                {
                    "type": "t",
                    "id": ledger.next_id("p"),
                    "unique_key": k,
                    "unique_for_ms": _window_ms(k),
                }
                for k in keys
            ]
            results = client.push_many(specs)
            with ledger.lock:
                for spec, result in zip(specs, results, strict=True):
                    if result.created:
                        ledger.created[result.id] = str(spec["unique_key"])
                    ledger.duplicates += result.duplicate


def _work(port: int, ledger: Ledger, rng: random.Random, load: Load) -> None:
    with _client(port, load) as client:
        while not load.stop.is_set():
            for job in client.fetch_many("default", 4, wait_ms=20):
                roll = rng.random()
                if roll < 0.2:
                    client.fail(job, "again", retry_in_ms=1)  # still holds its key
                    continue
                with ledger.lock:
                    ledger.ending.add(job.id)
                if roll < 0.85:
                    client.ack(job)
                else:
                    client.fail(job, "for good", dead=True)


def _quietly(target: object, *args: object) -> threading.Thread:
    def run() -> None:
        with contextlib.suppress(LeashError, OSError):  # the broker was killed under us
            target(*args)  # type: ignore[operator]

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _check(broker: BrokerProcess, ledger: Ledger, seed: int, cycle: int) -> None:
    where = f"seed={seed} cycle={cycle}"
    with broker.admin() as admin:
        report = admin.fsck()
    assert report.problems == [], f"{where}: {report.problems}"
    with ledger.lock:
        holding = {
            job_id: key for job_id, key in ledger.created.items() if job_id not in ledger.ending
        }
    with Client("127.0.0.1", broker.port, timeout_s=10.0) as client:
        for job_id, key in sorted(holding.items()):
            view = client.get_job(job_id)  # NotFound: an acknowledged push was lost
            assert (view.unique_key, view.state) != (None, "dead"), f"{where}: {view}"
            assert view.unique_key == key, f"{where}: {job_id} lost its key {key}: {view}"
        for key in KEYS:
            probe = ledger.next_id("probe")
            (result,) = client.push_many(
                [{"type": "t", "id": probe, "unique_key": key, "unique_for_ms": _window_ms(key)}]
            )
            held = [job_id for job_id, k in holding.items() if k == key]
            if result.created:
                assert held == [], f"{where}: {key} was free though {held} hold it"
                with ledger.lock:
                    ledger.created[probe] = key
            elif result.state == "succeeded":
                assert _window_ms(key) and result.id in ledger.created, f"{where}: {result}"
            else:
                view = client.get_job(result.id)
                assert view.unique_key == key, f"{where}: {key} names {view}"
                assert held in ([], [result.id]), f"{where}: {key} is {result.id}'s, not {held}"


def test_kill_9_during_unique_pushes_leaves_no_key_without_its_job(
    tmp_path: os.PathLike[str],
) -> None:
    seed = int(os.environ.get("LEASH_KILL9_SEED", random.randrange(2**32)))
    print(f"kill -9 unique seed={seed} cycles={CYCLES} (rerun: LEASH_KILL9_SEED={seed})")
    rng = random.Random(seed)
    data = os.path.join(tmp_path, "data")
    ledger = Ledger()
    for cycle in range(CYCLES):
        broker = BrokerProcess(data, FLAGS)
        load = Load()
        threads: list[threading.Thread] = []
        try:
            broker.start()
            _check(broker, ledger, seed, cycle)
            for target in (_produce, _work):
                rng_of = random.Random(rng.random())
                threads.append(_quietly(target, broker.port, ledger, rng_of, load))
            time.sleep(rng.uniform(*LOAD_S))
        finally:
            broker.kill()
        load.halt()
        for thread in threads:
            thread.join(10)
            assert not thread.is_alive(), f"seed={seed} cycle={cycle}: a load thread hangs"
    final = BrokerProcess(data, FLAGS).start()
    try:
        _check(final, ledger, seed, CYCLES)
    finally:
        final.kill()
    assert len(ledger.created) > len(KEYS) and ledger.duplicates, "the load did too little"
    print(f"{len(ledger.created)} jobs created, {ledger.duplicates} duplicates, none lost")
