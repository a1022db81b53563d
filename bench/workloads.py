"""What each row of the table measures, for any broker.

Every run of a cell gets a fresh server with an empty data directory.
Throughput cells time only the measured phase (never the prefill, never the
connect), stop at ``Sizes.jobs`` jobs or after ``Sizes.cap_s`` seconds,
whichever comes first, and report jobs per second. Every cell checks that
the broker did what was asked (each job pushed was fetched and acked once):
a count that does not add up is an error, not a number.

Worker tasks (``TASKS``) run in ``bench.pool`` processes: a generator that
connects, yields (ready), then works until its stop condition and returns
what it counted. Times are ``time.monotonic`` (one clock for every process
on the machine).
"""

import itertools
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

from bench import drivers
from bench.pool import Pool
from bench.servers import HOST, BenchError, Server, System, cpu_s

FILL_BATCH = 1000  # prefill requests carry this many jobs
SAFETY_S = 300.0  # a worker waiting for jobs gives up after this long
RUNNER_CONCURRENCY = 8  # jobs at once in each worker process of the runner cells


@dataclass(frozen=True)
class Sizes:
    jobs: int = 50_000
    batch: int = 100
    cap_s: float = 5.0
    workers: int = 4
    producer_threads: int = 16  # the threaded producer: one push at a time each
    runners: int = 2  # worker processes of the runner cells, RUNNER_CONCURRENCY jobs at once each
    latency_rate: int = 2_000  # jobs per second
    latency_producers: int = 4  # connections sharing that rate, each pushing one at a time
    latency_s: float = 3.0
    memory_jobs: int = 1_000_000
    leash_fill_in_flight: int = 500  # pushes in flight while filling Leash one per request


QUICK = Sizes(jobs=1_000, cap_s=3.0, latency_s=1.0, memory_jobs=20_000)


class Context:
    """What a cell needs: sizes, a fresh server, the worker pool."""

    def __init__(self, sizes: Sizes, pool: Pool, new_dir: Callable[[], str]) -> None:
        self.sizes = sizes
        self.pool = pool
        self.new_dir = new_dir

    def server(self, system: System) -> Server:
        return Server(system, self.new_dir()).start()


Result = dict[str, float]


def bodies(count: int, first: int = 0) -> list[bytes]:
    return [drivers.payload(first + i) for i in range(count)]


def chunks(items: list[bytes], size: int) -> Iterator[list[bytes]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _fill(session: drivers.Session, count: int) -> None:
    for chunk in chunks(bodies(count), FILL_BATCH):
        session.push_batch(chunk)


def _with_server(ctx: Context, system: System, run: Callable[[Server], Result]) -> Result:
    server = ctx.server(system)
    try:
        return run(server)
    finally:
        server.stop()


class ServerCpu:
    """The server's CPU time (user + system) from now on, per job."""

    def __init__(self, server: Server) -> None:
        self.pid = server.pid
        self.start_s = cpu_s(self.pid)

    def per_job_us(self, jobs: int) -> float:
        return (cpu_s(self.pid) - self.start_s) / max(jobs, 1) * 1e6


# --- one connection in this process --------------------------------------------


def push_one(ctx: Context, system: System) -> Result:
    sizes = ctx.sizes

    def run(server: Server) -> Result:
        session = drivers.connect(system.kind, HOST, server.port)
        all_bodies = bodies(sizes.jobs)
        meter, started = ServerCpu(server), time.monotonic()
        done = push_until(session, all_bodies, started + sizes.cap_s)
        elapsed = time.monotonic() - started
        session.close()
        return {"rate": done / elapsed, "server_us": meter.per_job_us(done)}

    return _with_server(ctx, system, run)


def push_until(session: drivers.Session, all_bodies: list[bytes], deadline: float) -> int:
    """Push one at a time until every body is pushed or the deadline (monotonic) passes."""
    done = 0
    for body in all_bodies:
        session.push(body)
        done += 1
        if done % 128 == 0 and time.monotonic() > deadline:
            break
    return done


def push_batch(ctx: Context, system: System) -> Result:
    sizes = ctx.sizes

    def run(server: Server) -> Result:
        session = drivers.connect(system.kind, HOST, server.port)
        batches, done = list(chunks(bodies(sizes.jobs), sizes.batch)), 0
        meter, started = ServerCpu(server), time.perf_counter()
        for chunk in batches:
            session.push_batch(chunk)
            done += len(chunk)
            if time.perf_counter() - started > sizes.cap_s:
                break
        elapsed = time.perf_counter() - started
        session.close()
        return {"rate": done / elapsed, "server_us": meter.per_job_us(done)}

    return _with_server(ctx, system, run)


def drain_one(ctx: Context, system: System) -> Result:
    return _drain_here(ctx, system, batched=False)


def drain_batch(ctx: Context, system: System) -> Result:
    return _drain_here(ctx, system, batched=True)


def _drain_here(ctx: Context, system: System, *, batched: bool) -> Result:
    sizes = ctx.sizes

    def run(server: Server) -> Result:
        session = drivers.connect(system.kind, HOST, server.port)
        _fill(session, sizes.jobs)
        done, capped = 0, False
        meter, started = ServerCpu(server), time.perf_counter()
        while True:
            if batched:
                jobs = session.fetch_batch(sizes.batch)
                if not jobs:
                    break
                session.ack_batch(jobs)
                done += len(jobs)
            else:
                job = session.fetch(0)
                if job is None:
                    break
                session.ack(job)
                done += 1
            if done % 128 == 0 and time.perf_counter() - started > sizes.cap_s:
                capped = True
                break
        elapsed = time.perf_counter() - started
        session.close()
        _expect(done, sizes.jobs, capped, "drained")
        return {"rate": done / elapsed, "server_us": meter.per_job_us(done)}

    return _with_server(ctx, system, run)


def _expect(done: int, wanted: int, capped: bool, what: str) -> None:
    if done != wanted and not (capped and done < wanted):
        raise BenchError(f"{what} {done} jobs, expected {wanted}")


# --- worker processes ----------------------------------------------------------


def drain_task(kind: str, port: int, cap_s: float) -> Generator[None, None, tuple[int, float]]:
    """Fetch and ack one at a time until the queue is empty (or the cap)."""
    session = drivers.connect(kind, HOST, port)
    yield
    done, started = 0, time.monotonic()
    while True:
        job = session.fetch(0)
        if job is None:
            break
        session.ack(job)
        done += 1
        if done % 128 == 0 and time.monotonic() - started > cap_s:
            break
    ended = time.monotonic()
    session.close()
    return done, ended


def consume_task(kind: str, port: int, latency: bool) -> Generator[None, None, dict[str, Any]]:
    """Fetch (waiting) and ack one at a time until a stop job; with ``latency``,
    the delay from each job's stamp to the moment this worker holds it."""
    session = drivers.connect(kind, HOST, port)
    yield
    done, last_ack, samples_ns = 0, 0.0, []
    give_up = time.monotonic() + SAFETY_S
    while time.monotonic() < give_up:
        job = session.fetch(1.0)
        if job is None:
            continue
        held_ns = time.monotonic_ns()
        body = session.body(job)
        session.ack(job)
        if drivers.is_stop(body):
            break
        if latency:
            samples_ns.append(held_ns - drivers.stamp_ns(body))
        done += 1
        last_ack = time.monotonic()
    session.close()
    return {"done": done, "last_ack": last_ack, "samples_ns": samples_ns}


def runner_task(
    kind: str, port: int, index: int, work_ms: float, concurrency: int, plain: bool = False
) -> Generator[None, None, dict[str, Any]]:
    """A worker process running ``concurrency`` jobs at once, each taking
    ``work_ms``, until its stop jobs; its broker's usual way: Leash's
    ``client.Worker``, a thread and a connection per job slot for the peers
    (and for Leash too with ``plain``: the loops the Worker is compared with)."""
    if kind == "leash" and not plain:
        return (yield from _leash_runner(port, index, work_ms, concurrency))
    return (yield from _thread_runner(kind, port, work_ms, concurrency))


def _leash_runner(
    port: int, index: int, work_ms: float, concurrency: int
) -> Generator[None, None, dict[str, Any]]:
    """``client.Worker`` with a handler that counts, until its stop job: one
    in a queue of its own, listed after the jobs' queue, so it is fetched
    after every job of the jobs' queue that fetch could take."""
    from leash.client import Worker

    count = itertools.count()  # next() is atomic: the handlers run in threads

    def bench(body: bytes) -> None:
        if work_ms:
            time.sleep(work_ms / 1000)
        next(count)

    worker = Worker(
        [drivers.QUEUE, f"stop-{index}"], concurrency, HOST, port,
        wait_ms=1000, handlers={"bench": bench, "stop": lambda: worker.stop()},
    )  # fmt: skip
    yield
    worker.run()
    return {"done": next(count), "last_ack": time.monotonic()}


def _thread_runner(
    kind: str, port: int, work_ms: float, concurrency: int
) -> Generator[None, None, dict[str, Any]]:
    """``concurrency`` threads, each with a connection: fetch, work, ack, one
    job at a time, until a stop job (one a thread follows the jobs)."""
    sessions = [drivers.connect(kind, HOST, port) for _ in range(concurrency)]
    yield
    done, last = [0] * concurrency, [0.0] * concurrency

    def work(slot: int) -> None:
        session, give_up = sessions[slot], time.monotonic() + SAFETY_S
        while time.monotonic() < give_up:
            job = session.fetch(1.0)
            if job is None:
                continue
            if drivers.is_stop(session.body(job)):
                session.ack(job)
                return
            if work_ms:
                time.sleep(work_ms / 1000)
            session.ack(job)
            done[slot] += 1
            last[slot] = time.monotonic()

    _in_threads(work, concurrency)
    for session in sessions:
        session.close()
    return {"done": sum(done), "last_ack": max(last)}


def _in_threads(work: Callable[[int], None], count: int) -> None:
    """Run ``work(0)`` ... ``work(count - 1)`` in threads; raise the first failure."""
    failures: list[BaseException] = []

    def run(index: int) -> None:
        try:
            work(index)
        except BaseException as failure:  # re-raised on the calling thread
            failures.append(failure)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


TASKS: dict[str, Callable[..., Generator[None, None, Any]]] = {
    "drain": drain_task,
    "consume": consume_task,
    "runner": runner_task,
}


def drain_workers(ctx: Context, system: System) -> Result:
    sizes = ctx.sizes

    def run(server: Server) -> Result:
        session = drivers.connect(system.kind, HOST, server.port)
        _fill(session, sizes.jobs)
        session.close()
        task = {"kind": system.kind, "port": server.port, "cap_s": sizes.cap_s}
        ctx.pool.start("drain", [task] * sizes.workers)
        meter, started = ServerCpu(server), time.monotonic()
        ctx.pool.go()
        results = ctx.pool.results()
        done = sum(count for count, _ in results)
        elapsed = max(ended for _, ended in results) - started
        _expect(done, sizes.jobs, elapsed > sizes.cap_s, "drained")
        return {"rate": done / elapsed, "server_us": meter.per_job_us(done)}

    return _with_server(ctx, system, run)


def end_to_end(ctx: Context, system: System) -> Result:
    sizes = ctx.sizes

    def run(server: Server) -> Result:
        session = drivers.connect(system.kind, HOST, server.port)
        all_bodies = bodies(sizes.jobs)
        task = {"kind": system.kind, "port": server.port, "latency": False}
        ctx.pool.start("consume", [task] * sizes.workers)
        meter, started = ServerCpu(server), time.monotonic()
        ctx.pool.go()
        pushed = push_until(session, all_bodies, started + sizes.cap_s)
        stop_workers(session, sizes.workers)
        results = ctx.pool.results()
        session.close()
        return _end_to_end_rate(results, pushed, started, meter)

    return _with_server(ctx, system, run)


# --- concurrent callers: a threaded producer, workers running jobs at once -----


def threaded_sessions(kind: str, port: int, threads: int) -> list[drivers.Session]:
    """One session a producer thread, as each broker's users share them: one
    Leash ``Client`` for all the threads (it pipelines them), one redis-py
    client (its pool gives each thread a connection), a greenstalk
    connection a thread (greenstalk is not thread-safe)."""
    if kind == "beanstalkd":
        return [drivers.connect(kind, HOST, port) for _ in range(threads)]
    return [drivers.connect(kind, HOST, port)] * threads


def push_from_threads(
    sessions: list[drivers.Session], all_bodies: list[bytes], deadline: float
) -> int:
    """Thread i pushes bodies i, i + n, ... one at a time until done or the deadline."""
    counts = [0] * len(sessions)

    def push(index: int) -> None:
        counts[index] = push_until(sessions[index], all_bodies[index :: len(sessions)], deadline)

    _in_threads(push, len(sessions))
    return sum(counts)


def _close_all(sessions: list[drivers.Session]) -> None:
    for session in {id(s): s for s in sessions}.values():
        session.close()


def push_threads(ctx: Context, system: System) -> Result:
    sizes = ctx.sizes

    def run(server: Server) -> Result:
        sessions = threaded_sessions(system.kind, server.port, sizes.producer_threads)
        all_bodies = bodies(sizes.jobs)
        meter, started = ServerCpu(server), time.monotonic()
        done = push_from_threads(sessions, all_bodies, started + sizes.cap_s)
        elapsed = time.monotonic() - started
        _close_all(sessions)
        return {"rate": done / elapsed, "server_us": meter.per_job_us(done)}

    return _with_server(ctx, system, run)


def end_to_end_runners_0ms(ctx: Context, system: System) -> Result:
    return _end_to_end_runners(ctx, system, 0.0)


def end_to_end_runners_1ms(ctx: Context, system: System) -> Result:
    return _end_to_end_runners(ctx, system, 1.0)


def end_to_end_loops_0ms(ctx: Context, system: System) -> Result:
    return _end_to_end_runners(ctx, system, 0.0, plain=True)


def end_to_end_loops_1ms(ctx: Context, system: System) -> Result:
    return _end_to_end_runners(ctx, system, 1.0, plain=True)


def _end_to_end_runners(
    ctx: Context, system: System, work_ms: float, *, plain: bool = False
) -> Result:
    """The threaded producer and ``runners`` worker processes running
    RUNNER_CONCURRENCY jobs of ``work_ms`` at once each (``plain``: in
    fetch/ack loops, a thread and a connection a slot, whatever the broker)."""
    sizes = ctx.sizes

    def run(server: Server) -> Result:
        sessions = threaded_sessions(system.kind, server.port, sizes.producer_threads)
        all_bodies = bodies(sizes.jobs)
        tasks = [
            {"kind": system.kind, "port": server.port, "index": index, "work_ms": work_ms,
             "concurrency": RUNNER_CONCURRENCY, "plain": plain}
            for index in range(sizes.runners)
        ]  # fmt: skip
        ctx.pool.start("runner", tasks)
        meter, started = ServerCpu(server), time.monotonic()
        ctx.pool.go()
        pushed = push_from_threads(sessions, all_bodies, started + sizes.cap_s)
        if system.kind == "leash" and not plain:  # each Worker stops on its own queue's job
            client = sessions[0].client  # type: ignore[attr-defined]
            for index in range(sizes.runners):
                client.push("stop", queue=f"stop-{index}")
        else:  # a stop job for each thread of each runner
            stop_workers(sessions[0], sizes.runners * RUNNER_CONCURRENCY)
        results = ctx.pool.results()
        _close_all(sessions)
        return _end_to_end_rate(results, pushed, started, meter)

    return _with_server(ctx, system, run)


def _end_to_end_rate(
    results: list[dict[str, Any]], pushed: int, started: float, meter: ServerCpu
) -> Result:
    """Jobs per second from the start to the last ack; every pushed job must be worked."""
    done = sum(r["done"] for r in results)
    _expect(done, pushed, False, "worked")
    rate = done / (max(r["last_ack"] for r in results) - started)
    return {"rate": rate, "server_us": meter.per_job_us(done)}


def stop_workers(session: drivers.Session, workers: int) -> None:
    for i in range(workers):
        session.push(drivers.payload(2**63 + i, stop=True))


def latency(ctx: Context, system: System) -> Result:
    """Push at a steady rate from a few producers (a thread and a connection
    each, taking turns), one push at a time each: as web processes push, so a
    push waiting for its fsync does not hold up the next one. Each job is
    stamped with the time it was due to be pushed (so a producer held up by a
    slow push does not hide the delay)."""
    sizes = ctx.sizes

    def run(server: Server) -> Result:
        producers = sizes.latency_producers
        sessions = [drivers.connect(system.kind, HOST, server.port) for _ in range(producers)]
        task = {"kind": system.kind, "port": server.port, "latency": True}
        ctx.pool.start("consume", [task] * sizes.workers)
        ctx.pool.go()
        count = int(sizes.latency_rate * sizes.latency_s)
        period_ns = 1_000_000_000 // sizes.latency_rate
        first_ns = time.monotonic_ns() + 50_000_000

        def produce(turn: int) -> None:
            session = sessions[turn]
            for i in range(turn, count, producers):
                due_ns = first_ns + i * period_ns
                wait_ns = due_ns - time.monotonic_ns()
                if wait_ns > 0:
                    time.sleep(wait_ns / 1e9)
                session.push(drivers.payload(i, due_ns))

        _in_threads(produce, producers)
        stop_workers(sessions[0], sizes.workers)
        results = ctx.pool.results()
        for session in sessions:
            session.close()
        samples = sorted(s for r in results for s in r["samples_ns"])
        _expect(len(samples), count, False, "worked")
        return {
            "p50_ms": _quantile(samples, 0.50) / 1e6,
            "p99_ms": _quantile(samples, 0.99) / 1e6,
            "p999_ms": _quantile(samples, 0.999) / 1e6,
        }

    return _with_server(ctx, system, run)


def _quantile(ordered: list[int], q: float) -> float:
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])
