"""What schedules cost the core: the timer's path with none, and a fire.

    .venv/bin/python bench/schedule_cost.py [--mode none] [--rounds 200000]
    .venv/bin/python bench/schedule_cost.py --mode every|cron [--schedules 100] [--seconds 600]

``none``: a core holding ``--jobs`` ready jobs and no schedule; each round
moves the clock a millisecond and runs what the shell's timer runs,
``tick`` then ``next_due_ms``: the path every broker takes whether or not it
has schedules (run it on an older checkout too, side by side; pushes,
fetches and acks are bench/job_options_cost.py --mode plain's). ``every``
and ``cron``: ``--schedules`` schedules (every second, or the cron
expression ``* * * * * *`` in Europe/Berlin), the clock moved a second at a
time for ``--seconds``, each tick run until quiet: the CPU microseconds a
fire costs, deciding it (the next tick computed) and applying it (the job
pushed). A measurement, not a test.
"""

import argparse
import gc
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.core_driver import CoreDriver
from leash.broker.core import apply, next_due_ms, tick
from leash.protocol import messages as M


def idle_timer(jobs: int, rounds: int) -> None:
    driver = CoreDriver()
    for start in range(0, jobs, 1000):
        driver.send(M.PushMany(driver.next(), [M.JobSpec(type="t")] * min(1000, jobs - start)))
    state, now_ms = driver.state, driver.now_ms
    gc.collect()
    started = time.process_time()
    for _ in range(rounds):
        now_ms += 1
        for record in tick(state, now_ms):
            apply(state, record)
        next_due_ms(state)
    took = time.process_time() - started
    print(f"none: {took / rounds * 1e6:.3f} us a timer run (tick + next_due_ms), {jobs} jobs")


def fires(mode: str, schedules: int, seconds: int) -> None:
    from leash.broker.core import decide_admin
    from leash.protocol import admin as A

    driver = CoreDriver()
    job = M.JobSpec(type="t", queue="cron")
    every: dict[str, object] = {"every_ms": 1000}
    cron: dict[str, object] = {"cron": "* * * * * *", "tz": "Europe/Berlin"}
    for n in range(schedules):
        when = every if mode == "every" else cron
        request = A.AddSchedule(driver.next(), f"s{n}", job, **when)  # type: ignore[arg-type]
        for record in decide_admin(driver.state, request, driver.now_ms).records:
            apply(driver.state, record)
    state, now_ms, fired = driver.state, driver.now_ms, 0
    gc.collect()
    started = time.process_time()
    for _ in range(seconds):
        now_ms += 1000
        while records := tick(state, now_ms):
            for record in records:
                apply(state, record)
            fired += len(records)
    took = time.process_time() - started
    print(f"{mode}: {took / fired * 1e6:.1f} us a fire, {fired} fires of {schedules} schedules")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["none", "every", "cron"], default="none")
    parser.add_argument("--rounds", type=int, default=200_000)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--schedules", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=600)
    options = parser.parse_args()
    if options.mode == "none":
        idle_timer(options.jobs, options.rounds)
    else:
        fires(options.mode, options.schedules, options.seconds)


if __name__ == "__main__":
    main()
