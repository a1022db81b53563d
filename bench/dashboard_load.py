"""The broker's request latency while the dashboard pages through 100,000
dead jobs and retries 10,000 of them.

    .venv/bin/python bench/dashboard_load.py [--dead 100000] [--retry 10000]
        [--page 50] [--fsync interval:50] [--rounds 5] [--window-s 2] [--pin]

1. Starts a broker (``leash serve``, --port 0, the dead set bounded above
   ``--dead``) and ``leash web`` beside it, each a process of its own, both
   on 127.0.0.1.
2. Makes ``--dead`` dead jobs (pushes of 1000, then kill_jobs over the
   admin socket), not measured.
3. A probe, in a process of its own, sends one request at a time to the
   broker's TCP port, a request every 2 ms (push, fetch, ack in turn on a
   queue of its own) and records each one's latency, through three phases
   that take turns, ``--rounds`` times (so that whatever else the machine
   does weighs on each alike): idle for ``--window-s``; an HTTP client
   paging on through the dead jobs with ``GET /api/jobs?state=dead&limit=
   --page`` for ``--window-s``; one ``POST /api/jobs/retry`` of ``--retry``
   dead jobs (the dashboard sends them to the broker 100 a request, paced),
   after which they are killed again, not measured.
4. Prints, per phase, the probe's p50, p99 and worst latency, and p99 over
   the idle p99 (the goal: at most 2x), how fast paging and retrying went,
   and what one admin request of each costs measured alone (the most the
   broker's loop spends on the dashboard at a time).

The probe's latency includes the operating system's scheduling: on a small
machine that runs other work too, the idle p99 and the ratios move from
run to run; compare several runs.

A measurement, not a test: run it on a quiet machine, side by side with
the code it compares against.
"""

import argparse
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from multiprocessing.synchronize import Event

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import httpx
import msgspec

from leash import Client
from leash.protocol import limits as L
from leash.web.gateway import BULK_CHUNK, PAGE_DEFAULT
from tests.integration.broker_proc import BrokerProcess
from tests.web.conftest import WebProcess

PROBE_EVERY_S = 0.002
TURNS_MEASURED = 500
SETTLE_S = 0.3  # between the kill that resets a round and the windows measured
PROBE_QUEUE = "probe"


def probe(
    port: int, stop: Event, results: "multiprocessing.Queue[list[tuple[float, float]]]"
) -> None:
    """One request at a time, every PROBE_EVERY_S: (when it was sent, its latency in ms)."""
    samples: list[tuple[float, float]] = []
    with Client("127.0.0.1", port, timeout_s=30.0) as client:
        held = None
        step = 0
        next_at = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if now < next_at:
                time.sleep(next_at - now)
            next_at += PROBE_EVERY_S
            started = time.monotonic()
            if step % 3 == 0:
                client.push("probe", [step], queue=PROBE_QUEUE)
            elif step % 3 == 1:
                held = client.fetch(PROBE_QUEUE)
            elif held is not None:
                client.ack(held)
            samples.append((started, (time.monotonic() - started) * 1000))
            step += 1
    results.put(samples)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def turn_costs(broker: BrokerProcess, page: int) -> str:
    """What one admin request of the dashboard costs, measured alone over the
    admin socket (round trip, so the broker's turn is at most this): a page
    of dead jobs, and a retry of BULK_CHUNK of them (then killed again)."""
    paging, retrying = [], []
    with broker.admin() as admin:
        cursor = ""
        for _ in range(TURNS_MEASURED):
            started = time.perf_counter()
            cursor = admin.jobs_page("dead", cursor, page).next
            paging.append((time.perf_counter() - started) * 1000)
        for _ in range(TURNS_MEASURED // 10):
            started = time.perf_counter()
            admin.requeue_jobs("dead", most=BULK_CHUNK, chunk=BULK_CHUNK)
            retrying.append((time.perf_counter() - started) * 1000)
        admin.kill_jobs("ready", chunk=1_000, pace=True, queue="bulk")
    return (
        f"one admin request alone: a page of {page} dead jobs {statistics.median(paging):.2f} ms "
        f"(p99 {percentile(paging, 0.99):.2f}), a retry of {BULK_CHUNK} "
        f"{statistics.median(retrying):.2f} ms (p99 {percentile(retrying, 0.99):.2f})"
    )


def make_dead(broker: BrokerProcess, count: int) -> None:
    with Client("127.0.0.1", broker.port, timeout_s=60.0) as client:
        for start in range(0, count, L.PUSH_MANY_MAX):
            size = min(L.PUSH_MANY_MAX, count - start)
            client.push_many(
                [{"type": "report", "args": {"n": start + n, "pad": "x" * 64}, "queue": "bulk"}
                 for n in range(size)]
            )  # fmt: skip
    with broker.admin() as admin:
        killed = admin.kill_jobs("ready", chunk=5_000, queue="bulk")
    assert len(killed) == count, len(killed)


class Pager:
    """Pages through the dead jobs with the API, from where it stopped."""

    def __init__(self, url: str, page: int) -> None:
        self.http = httpx.Client(base_url=url, timeout=60.0)
        self.page, self.cursor, self.seen, self.busy_s = page, "", 0, 0.0

    def run_for(self, seconds: float) -> None:
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            params = {"state": "dead", "limit": self.page, "cursor": self.cursor}
            found = msgspec.json.decode(self.http.get("/api/jobs", params=params).content)
            self.seen += len(found["jobs"])
            self.cursor = found["next"]
        self.busy_s += time.monotonic() - started


def retry(url: str, count: int) -> tuple[int, float]:
    started = time.monotonic()
    with httpx.Client(base_url=url, timeout=600.0) as http:
        token = http.get("/api/session").json()["csrf"]
        done = http.post(
            "/api/jobs/retry",
            json={"state": "dead", "most": count},
            headers={"X-CSRF-Token": token},
        ).json()
    return done["count"], time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dead", type=int, default=100_000)
    parser.add_argument("--retry", type=int, default=10_000)
    parser.add_argument("--page", type=int, default=PAGE_DEFAULT, help="jobs a page (at most 50)")
    parser.add_argument("--fsync", default="interval:50")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--idle-class",
        action="store_true",
        help="leash web and the HTTP client in the SCHED_IDLE class (they run only when "
        "nothing else wants the CPU)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the broker and the probe on CPU 0, leash web and the HTTP client on CPU 1 "
        "(to tell the broker's work from the machine's)",
    )
    parser.add_argument("--window-s", type=float, default=2.0, help="idle and paging, each round")
    options = parser.parse_args()
    data = tempfile.mkdtemp(prefix="leash-dashboard-bench-")
    broker_args = ["--dead-max-jobs", str(options.dead * 2), "--fsync", options.fsync]
    broker = BrokerProcess(os.path.join(data, "data"), broker_args).start()
    web = WebProcess(broker.data_dir).start()
    url = f"http://127.0.0.1:{web.port}"
    try:
        started = time.monotonic()
        make_dead(broker, options.dead)
        print(f"{options.dead} dead jobs made in {time.monotonic() - started:.1f} s")
        costs = turn_costs(broker, options.page)
        stop, results = multiprocessing.Event(), multiprocessing.Queue()
        prober = multiprocessing.Process(target=probe, args=(broker.port, stop, results))
        prober.start()
        # The HTTP client would be on another machine: here it yields the CPU
        # to the broker and to the probe (leash web does so by itself).
        os.nice(10)
        if options.idle_class:
            for pid in (web.pid, 0):
                os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
        if options.pin:
            assert prober.pid is not None
            for pid, cpu in ((broker.pid, 0), (prober.pid, 0), (web.pid, 1), (0, 1)):
                os.sched_setaffinity(pid, {cpu})
        time.sleep(1.0)  # the probe connects and settles
        # The phases take turns, round after round, so that whatever else the
        # machine does weighs on each of them alike.
        windows: dict[str, list[tuple[float, float]]] = {"idle": [], "paging": [], "retry": []}
        pager, retried, retry_s = Pager(url, options.page), 0, 0.0
        for _ in range(options.rounds):
            at = time.monotonic()
            time.sleep(options.window_s)
            windows["idle"].append((at, time.monotonic()))
            at = time.monotonic()
            pager.run_for(options.window_s)
            windows["paging"].append((at, time.monotonic()))
            at = time.monotonic()
            count, took_s = retry(url, options.retry)
            windows["retry"].append((at, time.monotonic()))
            retried, retry_s = retried + count, retry_s + took_s
            time.sleep(SETTLE_S)  # the last requests of the window are answered
            with broker.admin() as admin:  # back to the dead set, for the next round
                admin.kill_jobs("ready", chunk=1_000, pace=True, queue="bulk")
            time.sleep(SETTLE_S)
        stop.set()
        samples = results.get(timeout=60)
        prober.join(30)
    finally:
        web.kill()
        broker.kill()
        shutil.rmtree(data, ignore_errors=True)
    print(f"fsync {options.fsync}; the probe: one request every {PROBE_EVERY_S * 1000:.0f} ms; "
          f"{options.rounds} rounds of each phase in turn")  # fmt: skip
    print(
        f"{'phase':<44} {'requests':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'p99/idle':>8}"
    )
    names = {
        "idle": "idle",
        "paging": f"paging dead jobs, {options.page} a page",
        "retry": f"retrying {options.retry} dead jobs at once",
    }
    idle_p99 = 0.0
    for phase, spans in windows.items():
        latencies = [ms for sent, ms in samples if any(a <= sent < b for a, b in spans)]
        p99 = percentile(latencies, 0.99)
        idle_p99 = idle_p99 or p99
        print(
            f"{names[phase]:<44} {len(latencies):>8} {statistics.median(latencies):>7.2f} "
            f"{p99:>7.2f} {max(latencies):>7.2f} {p99 / idle_p99:>7.2f}x"
        )
    print(costs)
    print(
        f"paged {pager.seen} jobs in {pager.busy_s:.1f} s "
        f"({pager.seen / pager.busy_s:,.0f} a second); retried {retried} in {retry_s:.1f} s "
        f"({retried / retry_s:,.0f} a second)"
    )


if __name__ == "__main__":
    main()
