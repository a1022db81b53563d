"""Worker processes against a real broker: kill -9, SIGSTOP, reconnects,
broker crashes, the process views and terminate.

Workers here are real OS processes (a ``python -c`` script with the real
``Client``, or ``leash worker``) or clients with an explicit worker id.
Jobs are pushed with their default options: a job whose worker died is
ready again at once, no retry backoff. The kill -9 and SIGSTOP cases run
with the broker's default flags too. Every wait is a long-poll or a bounded
poll with a deadline; each test prints what it measured and asserts an
upper bound.
"""

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import pytest

from leash.client import Client, Job
from leash.client._exceptions import LeashError, NotFound, StaleLease
from tests.integration.broker_proc import BrokerProcess
from tests.waiting import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
POLL_S = 0.02
FETCH_SLICE_MS = 250  # below every --heartbeat-ms used here
SCRIPT_TIMEOUT_S = 15.0

# Holds leases until SIGCONT, then acks them ("acked ID" / "stale ID"), then
# fetches and acks FRESH_COUNT new jobs from FRESH_QUEUE ("new ID"), "done".
# SIGCONT is blocked before the leases are taken, so sigwait cannot miss it.
HOLD_LEASES = """
import signal, sys
from leash.client import Client, NotFound, StaleLease

port, queue, count, fresh_queue, fresh_count = sys.argv[1:6]
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCONT})
client = Client("127.0.0.1", int(port), timeout_s=10.0)
jobs = client.fetch_many(queue, int(count))
print("held", client.worker_id, *[job.id for job in jobs], flush=True)
signal.sigwait({signal.SIGCONT})
for job in jobs:
    try:
        client.ack(job)
        print("acked", job.id, flush=True)
    except (StaleLease, NotFound) as exc:
        print("stale" if isinstance(exc, StaleLease) else "notfound", job.id, flush=True)
done = 0
while done < int(fresh_count):
    for job in client.fetch_many(fresh_queue, int(fresh_count) - done, wait_ms=5000):
        client.ack(job)
        print("new", job.id, flush=True)
        done += 1
print("done", flush=True)
"""


# --- helpers -----------------------------------------------------------------


class Script:
    """A ``python -c`` child whose stdout lines are read with a deadline."""

    def __init__(self, source: str, args: Sequence[object], stderr_path: str) -> None:
        self._stderr = open(stderr_path, "w+b")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            [sys.executable, "-c", source, *map(str, args)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, word: str, timeout_s: float = SCRIPT_TIMEOUT_S) -> list[str]:
        """The next output line, which must start with ``word``: its fields."""
        try:
            line = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"no {word!r} line in {timeout_s} s:\n{self.stderr()}") from None
        fields = line.split()
        assert fields[:1] == [word], f"expected {word!r}, got {line!r}\n{self.stderr()}"
        return fields[1:]

    def signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    def stderr(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(SCRIPT_TIMEOUT_S)
        self._reader.join(SCRIPT_TIMEOUT_S)
        assert self.process.stdout is not None
        self.process.stdout.close()
        self._stderr.close()


@pytest.fixture
def start_broker(tmp_path: "os.PathLike[str]") -> Iterator[Callable[..., BrokerProcess]]:
    """Start real brokers with extra flags; every one is killed by pid at the end."""
    started: list[BrokerProcess] = []

    def start(*args: str, data_dir: str | None = None) -> BrokerProcess:
        process = BrokerProcess(data_dir or os.path.join(tmp_path, "data"), args).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


@pytest.fixture
def start_script(tmp_path: "os.PathLike[str]") -> Iterator[Callable[..., Script]]:
    """Start ``python -c`` children; every one is killed by pid at the end."""
    started: list[Script] = []

    def start(source: str, *args: object) -> Script:
        script = Script(source, args, os.path.join(tmp_path, f"script-{len(started)}.err"))
        started.append(script)
        return script

    yield start
    for script in started:
        script.close()


def connect(broker: BrokerProcess, **options: object) -> Client:
    return Client("127.0.0.1", broker.port, timeout_s=10.0, **options)  # type: ignore[arg-type]


def push_jobs(client: Client, queue_name: str, count: int) -> list[str]:
    specs = [{"type": "t", "queue": queue_name} for _ in range(count)]  # default options
    return [result.id for result in client.push_many(specs)]


def fetch_ids(client: Client, queue_name: str, ids: Sequence[str], timeout_s: float) -> list[Job]:
    """Long-poll ``queue_name`` until every job of ``ids`` was fetched, or the time is up.

    Each wait is shorter than the shortest heartbeat used here: a fetch held
    by the broker is not a sign of life, and the waiting client must not be
    declared dead by the TTL it is measuring.
    """
    wanted, got = set(ids), list[Job]()
    deadline = time.monotonic() + timeout_s
    while len(got) < len(wanted):
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            break
        wait_ms = min(left_ms, FETCH_SLICE_MS)
        jobs = client.fetch_many(queue_name, len(wanted) - len(got), wait_ms=wait_ms)
        assert {job.id for job in jobs} <= wanted, "a job that was not pushed here"
        got.extend(jobs)
    return got


# --- 1. kill -9 a worker -------------------------------------------------------


def test_the_leases_of_a_killed_worker_are_fetched_again_after_the_reconnect_grace(
    broker: BrokerProcess, start_script: Callable[..., Script]
) -> None:
    """Default flags, default job options: within 3 s, no retry backoff."""
    with connect(broker) as client:
        ids = push_jobs(client, "q", 10)
        worker = start_script(HOLD_LEASES, broker.port, "q", 10, "none", 0)
        held = worker.expect("held")[1:]
        assert sorted(held) == sorted(ids)
        assert client.fetch_many("q", 10) == []
        killed_s = time.monotonic()
        worker.signal(signal.SIGKILL)
        jobs = fetch_ids(client, "q", ids, timeout_s=5.0)
        elapsed_s = time.monotonic() - killed_s
        print(f"kill -9 -> all {len(jobs)} jobs fetched again in {elapsed_s:.3f} s (grace 2 s)")
        assert sorted(job.id for job in jobs) == sorted(ids)
        assert elapsed_s < 3.0
        assert all(job.attempt == 2 for job in jobs)
        error = client.get_job(ids[0]).last_error
        assert error is not None and error.message == "worker lost: disconnected"
        assert client.ack_many(jobs) == [None] * 10


# --- 2. SIGSTOP a worker ---------------------------------------------------------


def test_a_stopped_worker_loses_its_leases_after_the_ttl_and_works_again_after_sigcont(
    broker: BrokerProcess, start_script: Callable[..., Script]
) -> None:
    """Default flags: the process TTL is 15 s."""
    ttl_s = 15.0
    with connect(broker) as client:
        assert client.welcome.process_ttl_ms == ttl_s * 1000
        ids = push_jobs(client, "q", 5)
        worker = start_script(HOLD_LEASES, broker.port, "q", 5, "fresh", 3)
        worker_id, *held = worker.expect("held")
        assert sorted(held) == sorted(ids)
        stopped_s = time.monotonic()
        worker.signal(signal.SIGSTOP)
        jobs = fetch_ids(client, "q", ids, timeout_s=ttl_s + 3)
        elapsed_s = time.monotonic() - stopped_s
        print(f"SIGSTOP -> {len(jobs)} leases fetched by another worker in {elapsed_s:.3f} s")
        assert sorted(job.id for job in jobs) == sorted(ids)
        assert elapsed_s < ttl_s + 1
        error = client.get_job(ids[0]).last_error
        assert error is not None and error.type == "WorkerLost"
        assert error.message == "worker lost: heartbeat timeout"
        with broker.admin() as admin:
            assert worker_id not in {p.worker_id for p in admin.processes()}

        fresh = push_jobs(client, "fresh", 3)
        worker.signal(signal.SIGCONT)
        outcomes = sorted(tuple(worker.lines.get(timeout=SCRIPT_TIMEOUT_S).split()) for _ in ids)
        assert outcomes == sorted(("stale", job_id) for job_id in ids), worker.stderr()
        new = [worker.expect("new")[0] for _ in fresh]
        worker.expect("done")
        assert sorted(new) == sorted(fresh)
        assert worker.process.wait(SCRIPT_TIMEOUT_S) == 0, worker.stderr()
        assert all(gone(client, job_id) for job_id in fresh)
        assert client.ack_many(jobs) == [None] * len(jobs)  # the new holder's leases stand


# --- 3. a network blip ---------------------------------------------------------------


def test_a_worker_that_reconnects_within_the_grace_keeps_its_leases(
    broker: BrokerProcess,
) -> None:
    grace_s = 2.0
    with connect(broker) as other:
        ids = push_jobs(other, "q", 3)
        with connect(broker, worker_id="blip") as first:
            jobs = first.fetch_many("q", 3)
        closed_s = time.monotonic()
        with connect(broker, worker_id="blip") as second:
            gap_s = time.monotonic() - closed_s
            # Held past the grace: had the process died, these jobs would come back.
            assert other.fetch_many("q", 3, wait_ms=int((grace_s + 0.5) * 1000)) == []
            for job_id in ids:
                view = other.get_job(job_id)
                assert (view.state, view.owner) == ("leased", "blip")
            assert second.ack_many(jobs) == [None, None, None]
    print(f"reconnected in {gap_s * 1000:.1f} ms; leases kept past the {grace_s} s grace")
    assert gap_s < grace_s


def test_a_worker_that_stays_away_longer_than_the_grace_loses_its_leases(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    grace_s = 0.3
    broker = start_broker("--reconnect-grace-ms", "300")
    with connect(broker) as other:
        ids = push_jobs(other, "q", 3)
        with connect(broker, worker_id="blip") as first:
            old = first.fetch_many("q", 3)
        closed_s = time.monotonic()
        jobs = fetch_ids(other, "q", ids, timeout_s=grace_s + 3)
        elapsed_s = time.monotonic() - closed_s
        print(f"closed -> {len(jobs)} leases fetched by another worker in {elapsed_s:.3f} s")
        assert sorted(job.id for job in jobs) == sorted(ids)
        assert elapsed_s < grace_s + 1
        error = other.get_job(ids[0]).last_error
        assert error is not None and error.message == "worker lost: disconnected"
        with connect(broker, worker_id="blip") as late:
            for result in late.ack_many(old):
                assert isinstance(result, StaleLease)
        assert other.ack_many(jobs) == [None, None, None]


# --- 4. kill -9 the broker ------------------------------------------------------------


def test_after_a_broker_crash_acknowledged_pushes_stay_and_a_returning_owner_keeps_its_leases(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    flags = ("--fsync", "always", "--process-ttl-ms", "2000", "--heartbeat-ms", "500")
    broker = start_broker(*flags)
    with connect(broker, worker_id="setup") as setup:
        push_jobs(setup, "held", 20)
    holder = connect(broker, worker_id="holder")  # connected until the crash
    pushed: list[str] = []  # acknowledged pushes
    ack_sent: set[str] = set()  # acks sent, answered or not
    acked: list[str] = []

    # Closed once the broker is killed: a push would be sent again until its
    # timeout, and this test is about what was acknowledged before the kill.
    producers = [connect(broker, worker_id=f"producer-{index}") for index in range(3)]

    def produce(index: int) -> None:
        client = producers[index]
        while True:
            try:
                pushed.append(client.push("p", queue="work"))
            except LeashError:
                return

    def consume(index: int) -> None:
        with connect(broker, worker_id=f"acker-{index}") as client:
            while True:
                try:
                    for job in client.fetch_many("work", 5, wait_ms=100):
                        ack_sent.add(job.id)
                        client.ack(job)
                        acked.append(job.id)
                except LeashError:
                    return

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(3)]
    threads += [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    try:
        assert holder.welcome.process_ttl_ms == 2000, "--process-ttl-ms is not applied"
        held = holder.fetch_many("held", 20)
        assert len(held) == 20
        for thread in threads:
            thread.start()
        assert wait_until(lambda: len(pushed) >= 300 and len(acked) >= 50, 15)
    finally:
        broker.kill()
        holder.close()
        for producer in producers:
            producer.close()
        for thread in threads:
            if thread.ident is not None:
                thread.join(15)
    assert not any(thread.is_alive() for thread in threads)

    restarted = start_broker(*flags, data_dir=broker.data_dir)
    restarted_s = time.monotonic()
    with connect(restarted, worker_id="holder") as holder, connect(restarted) as other:
        reconnected_s = time.monotonic() - restarted_s
        held_ids = {job.id for job in held}
        taken: list[str] = []
        while time.monotonic() - restarted_s < 3.5:  # longer than the 2 s TTL
            assert holder.beat() == "ok"
            taken += [job.id for job in other.fetch_many(["held", "work"], 100, wait_ms=200)]
        assert not held_ids & set(taken), "a lease of a returning owner was handed out"
        assert holder.ack_many(held) == [None] * 20
        missing = [job_id for job_id in pushed if gone(other, job_id)]
        assert set(missing) <= ack_sent, "an acknowledged push was lost"
    print(
        f"{len(pushed)} acknowledged pushes, {len(acked)} acks before kill -9; "
        f"owner back {reconnected_s * 1000:.0f} ms after the restart; "
        f"{len(taken)} other jobs fetched in 3.5 s, none of its 20 leases"
    )


# --- 5. the process views ---------------------------------------------------------------


def test_a_killed_worker_disappears_from_processes_and_busy_after_the_grace(
    start_broker: Callable[..., BrokerProcess], start_script: Callable[..., Script]
) -> None:
    grace_s = 0.3
    broker = start_broker("--reconnect-grace-ms", "300")
    with connect(broker) as client, broker.admin() as admin:
        ids = push_jobs(client, "q", 3)
        worker = start_script(HOLD_LEASES, broker.port, "q", 3, "none", 0)
        worker_id = worker.expect("held")[0]
        views = {p.worker_id: p for p in admin.processes()}
        assert views[worker_id].pid == worker.process.pid
        assert views[worker_id].in_flight == 3
        busy = {b.worker_id: b for b in admin.busy()}
        assert sorted(job.id for job in busy[worker_id].jobs) == sorted(ids)

        killed_s = time.monotonic()
        worker.signal(signal.SIGKILL)

        def forgotten() -> bool:
            return worker_id not in {p.worker_id for p in admin.processes()} and (
                worker_id not in {b.worker_id for b in admin.busy()}
            )

        assert wait_until(forgotten, grace_s + 2)
        elapsed_s = time.monotonic() - killed_s
        print(f"kill -9 -> gone from processes() and busy() in {elapsed_s:.3f} s (grace 0.3 s)")
        assert elapsed_s < grace_s + 1
        assert all(job_id not in {j.id for b in admin.busy() for j in b.jobs} for job_id in ids)


# --- 6. terminate ---------------------------------------------------------------------


def test_terminate_makes_a_leash_worker_exit_0_within_the_grace_leaving_no_job_leased(
    start_broker: Callable[..., BrokerProcess], tmp_path: "os.PathLike[str]"
) -> None:
    terminate_grace_s = 5.0
    broker = start_broker("--heartbeat-ms", "200", "--terminate-grace-ms", "5000")
    with connect(broker) as client:
        assert client.welcome.heartbeat_ms == 200, "--heartbeat-ms is not applied"
    command = [
        sys.executable, "-c", "from leash.client.cli import main; main()", "worker",
        "tests.integration.apps.tasks", "--port", str(broker.port),
        "--concurrency", "4", "--grace-s", "2", "--wait-ms", "500",
    ]  # fmt: skip
    with open(os.path.join(tmp_path, "worker.err"), "w+b") as stderr:
        worker = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            with connect(broker) as client, broker.admin() as admin:
                quick = [client.push("slow", [1.0]) for _ in range(2)]
                stuck = [client.push("slow", [60]) for _ in range(2)]
                worker_id = ""

                def all_running() -> bool:
                    nonlocal worker_id
                    for busy in admin.busy():
                        if len(busy.jobs) == 4:
                            worker_id = busy.worker_id
                            return True
                    return False

                assert wait_until(all_running, 15)
                view = {p.worker_id: p for p in admin.processes()}[worker_id]
                assert view.pid == worker.pid
                asked_s = time.monotonic()
                admin.control(worker_id, "terminate")
                try:
                    status: int | None = worker.wait(terminate_grace_s + 5)
                except subprocess.TimeoutExpired:
                    status = None
                elapsed_s = time.monotonic() - asked_s
                states = {j: "acked" if gone(client, j) else client.get_job(j).state for j in quick}
                states |= {j: client.get_job(j).state for j in stuck}
        finally:
            if worker.poll() is None:
                os.kill(worker.pid, signal.SIGKILL)
                worker.wait(10)
            stderr.seek(0)
            log = stderr.read().decode(errors="replace")
    print(f"terminate -> worker exited {status} in {elapsed_s:.3f} s; jobs {states}")
    assert status == 0, log
    assert elapsed_s < terminate_grace_s
    assert "leased" not in states.values(), states
    assert [states[j] for j in quick] == ["acked", "acked"], states
    assert [states[j] for j in stuck] == ["ready", "ready"], states


def gone(client: Client, job_id: str) -> bool:
    """Whether the job is forgotten (acked)."""
    try:
        view = client.get_job(job_id)
    except NotFound:
        return True
    return view.finished_ms is not None  # in the history of finished jobs
