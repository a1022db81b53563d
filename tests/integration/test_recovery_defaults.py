"""The recovery promise with every option at its default, against real
processes and real signals: a broker with no flags but its address and data
directory, jobs pushed with no options, ``leash worker`` and ``Client``
processes that are killed with SIGKILL.

- A job whose worker kills itself every time ends dead after three lost
  leases (``--lost-leases-max``), its error saying so.
- The broker is killed around a worker's kill -9, in both orders, again and
  again (``LEASH_RESTART_CYCLES`` a order, ``make recovery-heavy`` for
  many): the dead worker's jobs are runnable at most 5 s after the broker
  is back (the restart grace is 3 s), and a live ``leash worker`` running
  long jobs reconnects in time and keeps its leases all along (no other
  process is handed its jobs, its acks count).

The kill -9 and SIGSTOP cases with the defaults are in test_processes.py.
Every wait is bounded; every process is stopped by its pid. Each test
prints what it measured.
"""

import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from leash.client import Client, ConnectionLost, Job
from tests.integration.broker_proc import BrokerProcess
from tests.integration.test_processes import HOLD_LEASES, ROOT, Script, gone
from tests.waiting import wait_until

RESTART_CYCLES = int(os.environ.get("LEASH_RESTART_CYCLES", "10"))  # a order: 20 in all
RESTART_GRACE_S = 3.0  # --restart-grace-ms by default
RUNNABLE_WITHIN_S = 5.0  # the goal: a dead worker's jobs runnable this soon after a restart
DOOMED_LEASES = 3
LIVE_JOBS = 2
APP = "tests.integration.apps.recovery_tasks"


@dataclass
class Started:
    """Every process a test started, each killed by its pid at the end."""

    processes: list["subprocess.Popen[bytes]"] = field(default_factory=list)
    scripts: list[Script] = field(default_factory=list)
    brokers: list[BrokerProcess] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def broker(self, data_dir: str, *args: str) -> BrokerProcess:
        broker = BrokerProcess(data_dir, args).start()
        with self.lock:
            self.brokers.append(broker)
        return broker

    def worker(self, port: int, queue: str, stderr_path: str) -> "subprocess.Popen[bytes]":
        command = [
            sys.executable, "-c", "from leash.client.cli import main; main()", "worker", APP,
            "--port", str(port), "--queues", queue, "--concurrency", str(LIVE_JOBS),
        ]  # fmt: skip
        with open(stderr_path, "ab") as stderr:
            process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
        with self.lock:
            self.processes.append(process)
        return process

    def script(self, source: str, args: list[object], stderr_path: str) -> Script:
        script = Script(source, args, stderr_path)
        with self.lock:
            self.scripts.append(script)
        return script


@pytest.fixture
def started() -> Iterator[Started]:
    found = Started()
    yield found
    for process in found.processes:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
    for script in found.scripts:
        script.close()
    for broker in found.brokers:
        broker.kill()


# --- a job that kills its worker every time ---------------------------------------------


def test_a_job_that_kills_its_worker_every_time_is_dead_after_three_lost_leases(
    tmp_path: "os.PathLike[str]", started: Started
) -> None:
    broker = started.broker(os.path.join(tmp_path, "data"))
    with Client("127.0.0.1", broker.port, timeout_s=10.0) as client:
        job_id = client.push("kill_my_worker", queue="poison")
        deaths: list[float] = []
        began_s = time.monotonic()
        for _ in range(6):  # a supervisor restarting the worker; three are enough
            worker = started.worker(broker.port, "poison", os.path.join(tmp_path, "poison.err"))
            status = worker.wait(30)
            if status != -signal.SIGKILL:
                break
            deaths.append(time.monotonic() - began_s)
            # The broker declares the process dead after the reconnect grace (2 s).
            assert wait_until(lambda: client.get_job(job_id).state != "leased", 5)
            view = client.get_job(job_id)
            if view.state == "dead":
                break
    print(f"a job that kills its worker: dead after {len(deaths)} workers died, {deaths[-1]:.1f} s")
    assert len(deaths) == 3
    assert (view.state, view.attempt) == ("dead", 3)
    assert view.last_error is not None and view.last_error.type == "WorkerLost"
    message = "worker lost: disconnected; its lease was lost 3 times in a row, so it is dead"
    assert view.last_error.message == message


# --- the broker killed around a worker's kill -9 ------------------------------------------


@dataclass
class Lane:
    """One broker, one live ``leash worker``, an observer that fetches what
    is runnable, and a doomed worker per cycle, killed with the broker."""

    order: str  # "worker first" or "broker first"
    tmp_path: str
    started: Started
    runnable_s: list[float] = field(default_factory=list)  # after the broker was back, a cycle

    def run(self, cycles: int) -> None:
        data_dir = os.path.join(self.tmp_path, "data")
        broker = self.started.broker(data_dir)
        port = broker.port
        done = os.path.join(self.tmp_path, "live-done")
        live_log = os.path.join(self.tmp_path, "live.err")
        live = self.started.worker(port, "live", live_log)
        with Client("127.0.0.1", port, worker_id=f"observer-{port}", timeout_s=10.0) as observer:
            held = [
                observer.push("hold_until", {"path": done, "limit_s": 600.0}, queue="live")
                for _ in range(LIVE_JOBS)
            ]
            assert wait_until(lambda: self._running(observer, held), 20), "the live worker"
            for cycle in range(cycles):
                broker = self._cycle(observer, broker, data_dir, port, cycle)
            with open(done, "w"):
                pass  # the live jobs end now, and their worker acks them
            assert wait_until(lambda: all(gone(observer, job_id) for job_id in held), 20)
        assert live.poll() is None, "the live worker died"
        os.kill(live.pid, signal.SIGTERM)
        assert live.wait(30) == 0
        with open(live_log) as log:
            text = log.read()
        assert "lease lost" not in text and "could not ack" not in text, text

    @staticmethod
    def _running(observer: Client, held: list[str]) -> bool:
        return all(observer.get_job(job_id).state == "leased" for job_id in held)

    def _cycle(
        self, observer: Client, broker: BrokerProcess, data_dir: str, port: int, cycle: int
    ) -> BrokerProcess:
        ids = [r.id for r in observer.push_many([{"type": "t", "queue": "doomed"}] * DOOMED_LEASES)]
        err = os.path.join(self.tmp_path, f"doomed-{cycle}.err")
        doomed = self.started.script(HOLD_LEASES, [port, "doomed", DOOMED_LEASES, "none", 0], err)
        assert sorted(doomed.expect("held")[1:]) == sorted(ids)
        if self.order == "worker first":  # the broker has seen the close, not yet the death
            doomed.signal(signal.SIGKILL)
            doomed.process.wait(10)
            broker.kill()
        else:
            broker.kill()
            doomed.signal(signal.SIGKILL)
            doomed.process.wait(10)
        broker = self.started.broker(data_dir, "--port", str(port))
        back_s = time.monotonic()
        fetched = self._fetch_doomed(observer, ids, back_s + RUNNABLE_WITHIN_S + 5)
        self.runnable_s.append(time.monotonic() - back_s)
        assert sorted(job.id for job in fetched) == sorted(ids), (self.order, cycle)
        assert all(job.attempt == 2 for job in fetched)
        assert observer.ack_many(fetched) == [None] * DOOMED_LEASES
        return broker

    @staticmethod
    def _fetch_doomed(observer: Client, ids: list[str], deadline_s: float) -> list[Job]:
        """Fetch from the doomed queue and the live one until the doomed jobs
        are all here: a live job handed out would mean its worker lost it."""
        got: list[Job] = []
        while len(got) < len(ids) and time.monotonic() < deadline_s:
            try:
                jobs = observer.fetch_many(["doomed", "live"], DOOMED_LEASES, wait_ms=250)
            except ConnectionLost:
                time.sleep(0.05)
                continue
            assert all(job.queue == "doomed" for job in jobs), "a live worker's job was handed out"
            got += jobs
        return got


@pytest.mark.timeout(600)  # 20 restarts: about 40 s here, more on a loaded machine
def test_the_broker_killed_around_a_worker_kill_frees_the_dead_workers_jobs_in_time(
    tmp_path: "os.PathLike[str]", started: Started
) -> None:
    lanes = [
        Lane(order, os.path.join(tmp_path, order.split()[0]), started)
        for order in ("worker first", "broker first")
    ]
    for lane in lanes:
        os.makedirs(lane.tmp_path)
    with ThreadPoolExecutor(len(lanes)) as pool:  # the two orders side by side
        for outcome in [pool.submit(lane.run, RESTART_CYCLES) for lane in lanes]:
            outcome.result()
    for lane in lanes:
        times = lane.runnable_s
        print(
            f"kill -9 {lane.order}, {len(times)} cycles: the dead worker's jobs runnable "
            f"{min(times):.2f}-{max(times):.2f} s (median {statistics.median(times):.2f}) after "
            f"the broker was back; the live worker kept its leases"
        )
        assert len(times) == RESTART_CYCLES
        assert max(times) <= RUNNABLE_WITHIN_S
        assert min(times) >= RESTART_GRACE_S - 0.5, "freed before the restart grace"
