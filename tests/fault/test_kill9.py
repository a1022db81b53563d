"""kill -9 under load, again and again, under each fsync policy.

Producers push jobs with ids of their own and workers fetch and ack them
(a ``Client`` one request at a time, and a ``Worker`` runner, which
prefetches and sends its acks in the same write as its next fetch), keeping
a ledger of every operation the broker acknowledged. The broker —
with small segments and snapshot thresholds, so segments rotate and
snapshots are taken all the time — is killed with SIGKILL at a random
moment (sometimes while it is still starting) and started again. After
every restart, and at the end for the whole ledger:

- every acknowledged push exists, unless an ack of it was sent (the ack
  may have been applied though its reply was lost to the kill);
- every acknowledged ack stays applied (the job is gone);
- no fencing token was ever handed out twice, across all restarts;
- every restart starts (a crash never leaves damage that stops it), and
  anything it cut is a torn tail: a write the kill interrupted, in the last
  segment, logged as such, kept in a ``.broken`` file. Such a tail holds
  only what no reply acknowledged — the ledger check right after that
  restart shows nothing acknowledged is missing — so it may appear (rarely:
  the kill must land inside a write).

``LEASH_KILL9_CYCLES`` sets the cycles per policy (20 in ``make test``;
``make fault-heavy`` runs more); ``LEASH_KILL9_SEED`` repeats a run (the
seed is printed).
"""

import asyncio
import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable

import pytest

from leash.client import Client, LeashError, NotFound, Worker, current_job
from tests.integration.broker_proc import BrokerProcess

CYCLES = int(os.environ.get("LEASH_KILL9_CYCLES", "20"))
POLICIES = ["always", "interval:50", "never"]
FLAGS = ["--segment-bytes", "8192", "--snapshot-min-bytes", "16384"]
LOAD_S = (0.05, 0.5)  # how long the load runs before the kill
KILL_WHILE_STARTING = 0.15  # the share of cycles killed before the broker listens
PRODUCERS = 2


class Ledger:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pushed: set[str] = set()  # acknowledged pushes
        self.acked: set[str] = set()  # acknowledged acks
        self.acking: set[str] = set()  # acks sent: their jobs may be gone, acknowledged or not
        self.acked_by_runner: set[str] = set()  # of acked: by the Worker
        self.tokens: set[int] = set()
        self.repeated: list[int] = []  # tokens handed out twice
        self.checked_pushed: set[str] = set()
        self.checked_acked: set[str] = set()

    def token(self, token: int) -> None:
        with self.lock:
            if token in self.tokens:
                self.repeated.append(token)
            self.tokens.add(token)


class Load:
    """What a cycle's load threads share: the stop flag, and the producers'
    clients, closed when the broker is killed (a push would be sent again
    until its timeout; what counts here is what was acknowledged before)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.clients: list[Client] = []

    def halt(self) -> None:
        self.stop.set()
        for client in list(self.clients):
            client.close()


def _produce(port: int, ledger: Ledger, prefix: str, load: Load) -> None:
    with Client("127.0.0.1", port, timeout_s=5.0) as client:
        load.clients.append(client)
        for number in range(1_000_000):
            if load.stop.is_set():
                return
            job_id = f"{prefix}-{number}"
            client.push("t", {"n": number}, id=job_id)
            with ledger.lock:
                ledger.pushed.add(job_id)


def _work(port: int, ledger: Ledger, stop: threading.Event) -> None:
    with Client("127.0.0.1", port, timeout_s=5.0) as client:
        while not stop.is_set():
            for job in client.fetch_many("default", 8, wait_ms=20):
                ledger.token(job.token)
                with ledger.lock:
                    ledger.acking.add(job.id)
                client.ack(job)
                with ledger.lock:
                    ledger.acked.add(job.id)


class AckedByRunner(logging.Handler):
    """The Worker logs each ack the broker answered: into the ledger."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__(logging.DEBUG)
        self.ledger = ledger

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "job %s acked" and isinstance(record.args, tuple):
            with self.ledger.lock:
                self.ledger.acked.add(str(record.args[0]))
                self.ledger.acked_by_runner.add(str(record.args[0]))


def _runner(port: int, ledger: Ledger) -> tuple[Worker, threading.Thread]:
    """A Worker on the same queue, in a thread of its own; stopped at the kill."""

    def run_job(n: int) -> None:
        job = current_job()
        assert job is not None
        ledger.token(job.token)
        with ledger.lock:
            ledger.acking.add(job.id)

    worker = Worker("default", 4, "127.0.0.1", port, wait_ms=20, timeout_s=5.0, grace_s=1.0)
    worker.register("t", run_job)
    thread = threading.Thread(target=asyncio.run, args=(worker.run_async(),), daemon=True)
    thread.start()
    return worker, thread


def _quietly(target: Callable[..., None], *args: object) -> threading.Thread:
    def run() -> None:
        with contextlib.suppress(LeashError, OSError):  # the broker was killed under us
            target(*args)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _check(broker: BrokerProcess, ledger: Ledger, *, everything: bool) -> None:
    with ledger.lock:
        acked = set(ledger.acked) - (set() if everything else ledger.checked_acked)
        pushed = set(ledger.pushed) - set(ledger.acking)
        if not everything:
            pushed -= ledger.checked_pushed
    with Client("127.0.0.1", broker.port, timeout_s=10.0) as client:
        for job_id in sorted(pushed):
            client.get_job(job_id)  # raises NotFound if an acknowledged push was lost
        for job_id in sorted(acked):
            with contextlib.suppress(NotFound):  # (or trimmed from the finished-job history)
                assert client.get_job(job_id).state == "succeeded"
    ledger.checked_pushed |= pushed
    ledger.checked_acked |= acked


def _broken_files(data_dir: str) -> set[str]:
    if not os.path.isdir(data_dir):  # killed before it made the directory
        return set()
    return {name for name in os.listdir(data_dir) if ".broken" in name}


def _torn_tails(broker: BrokerProcess, data_dir: str, known: set[str]) -> set[str]:
    """The .broken files this start made: each a torn tail it logged (a
    repair is impossible here: no start has the flag that allows one)."""
    made = _broken_files(data_dir) - known
    notes = [line for line in broker.log if "torn tail in" in line]
    kept = {note.split(" kept in ")[-1].strip() for note in notes}
    assert {os.path.join(data_dir, name) for name in made} == kept, (made, broker.log)
    return made


@pytest.mark.parametrize("policy", POLICIES)
def test_kill_9_under_load_loses_nothing_acknowledged(
    tmp_path: os.PathLike[str], policy: str
) -> None:
    seed = int(os.environ.get("LEASH_KILL9_SEED", random.randrange(2**32)))
    print(f"kill -9 seed={seed} policy={policy} cycles={CYCLES} (rerun: LEASH_KILL9_SEED={seed})")
    rng = random.Random(seed)
    data = os.path.join(tmp_path, "data")
    ledger = Ledger()
    started = time.monotonic()
    worker_log = logging.getLogger("leash.worker")
    acked_by_runner = AckedByRunner(ledger)
    worker_log.addHandler(acked_by_runner)
    level = worker_log.level
    worker_log.setLevel(logging.DEBUG)  # not .level =: that keeps a cached "not enabled"
    try:
        killed_starting, torn = _cycles(policy, seed, rng, data, ledger)
    finally:
        worker_log.removeHandler(acked_by_runner)
        worker_log.setLevel(level)
    final = BrokerProcess(data, ["--fsync", policy, *FLAGS]).start()
    try:
        torn |= _torn_tails(final, data, torn)
        _check(final, ledger, everything=True)
    finally:
        final.kill()
    assert ledger.repeated == [], f"seed={seed}: tokens handed out twice"
    assert len(ledger.pushed) > CYCLES and ledger.acked, "the load did too little to prove much"
    assert ledger.acked_by_runner, "the Worker acked nothing: the test proves nothing of it"
    print(
        f"policy={policy}: {CYCLES} cycles ({killed_starting} killed while starting) in "
        f"{time.monotonic() - started:.1f} s; {len(ledger.pushed)} pushes and "
        f"{len(ledger.acked)} acks acknowledged ({len(ledger.acked_by_runner)} by the Worker), "
        f"{len(ledger.tokens)} tokens, none lost; {len(torn)} torn tails cut"
    )


def _cycles(
    policy: str, seed: int, rng: random.Random, data: str, ledger: Ledger
) -> tuple[int, set[str]]:
    """Run the kill cycles; how many were killed while starting, and the
    torn tails the restarts cut."""
    killed_starting = 0
    torn: set[str] = set()
    cycle = -1
    # CYCLES cycles; more (up to twice as many) while the Worker has acked
    # nothing yet: on a loaded machine its first cycles may end before it runs
    while (cycle := cycle + 1) < CYCLES or (not ledger.acked_by_runner and cycle < 2 * CYCLES):
        broker = BrokerProcess(data, ["--fsync", policy, *FLAGS])
        if rng.random() < KILL_WHILE_STARTING:
            broker.start(wait=False)
            time.sleep(rng.uniform(0.0, 0.4))
            broker.kill()
            killed_starting += 1
            torn |= _broken_files(data) - torn  # its log may end before the note: see next start

            continue
        load = Load()
        threads: list[threading.Thread] = []
        runner: Worker | None = None
        try:
            broker.start()
            torn |= _torn_tails(broker, data, torn)
            _check(broker, ledger, everything=False)  # nothing acknowledged was in a cut
            for p in range(PRODUCERS):
                threads.append(_quietly(_produce, broker.port, ledger, f"c{cycle}p{p}", load))
            threads.append(_quietly(_work, broker.port, ledger, load.stop))
            runner, runner_thread = _runner(broker.port, ledger)
            threads.append(runner_thread)
            time.sleep(rng.uniform(*LOAD_S))
        finally:
            broker.kill()
        load.halt()
        if runner is not None:
            runner.stop(now=True)
        for thread in threads:
            thread.join(10)
            assert not thread.is_alive(), f"seed={seed} cycle={cycle}: a load thread hangs"
    return killed_starting, torn
