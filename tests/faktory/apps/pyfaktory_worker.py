"""A worker of Faktory's ``pyfaktory`` package (PyPI) for the tests: it runs
the jobs of QUEUES as process WID until it is killed.

    python -m tests.faktory.apps.pyfaktory_worker PORT WID QUEUE[,QUEUE...]

Its jobs: ``square(n)`` returns n * n, ``explode()`` raises.
"""

import logging
import sys

from pyfaktory import Client, Consumer


def square(n: int) -> int:
    return n * n


def explode() -> None:
    raise ValueError("exploded on purpose")


def main() -> None:
    port, wid, queues = sys.argv[1:]
    logging.basicConfig(level=logging.WARNING)
    client = Client(
        faktory_url=f"tcp://127.0.0.1:{port}", role="consumer", worker_id=wid, beat_period=5
    )
    client.connect()
    consumer = Consumer(client=client, queues=queues.split(","), priority="strict", concurrency=3)
    consumer.register("square", square)
    consumer.register("explode", explode)
    print("started", flush=True)
    consumer.run()


if __name__ == "__main__":
    main()
