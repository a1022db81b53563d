"""A worker of Faktory's ``faktory`` package (PyPI) for the tests: it runs
the jobs of QUEUES as process WID until it is killed.

    python -m tests.faktory.apps.py_worker PORT WID QUEUE[,QUEUE...] [PASSWORD]

Its jobs: ``square(n)`` returns n * n, ``explode()`` raises, ``hang()``
sleeps for a minute (a job that a kill -9 interrupts).
"""

import logging
import sys
import time

from faktory import Worker


def square(n: int) -> int:
    return n * n


def explode() -> None:
    raise ValueError("exploded on purpose")


def hang() -> None:
    time.sleep(60)


def main() -> None:
    port, wid, queues, *password = sys.argv[1:]
    auth = f":{password[0]}@" if password else ""
    logging.basicConfig(level=logging.WARNING)
    worker = Worker(
        faktory=f"tcp://{auth}127.0.0.1:{port}",
        queues=queues.split(","),
        concurrency=4,
        use_threads=True,
        worker_id=wid,
    )
    for name, task in (("square", square), ("explode", explode), ("hang", hang)):
        worker.register(name, task)
    print("started", flush=True)
    worker.run()


if __name__ == "__main__":
    main()
