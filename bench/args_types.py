"""What keeping args' types costs a producer and a worker: ``argtypes.pack``
(the walk that converts datetimes, dates, Decimals and UUIDs and refuses
any other type) beside a bare ``msgspec.msgpack.encode``, and
``argtypes.unpack`` beside a bare decode, by the shape of the args.

In CPU microseconds per call (process time, best of ``--rounds``); the
bare msgspec columns are what the client did before args kept their types
(silently turning a Decimal into a string, a set into a list):

    .venv/bin/python bench/args_types.py
"""

import argparse
import datetime
import sys
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--rounds", type=int, default=5)
OPTIONS = parser.parse_args()
sys.path[0] = str(Path(__file__).resolve().parent.parent)  # not bench/ (its profile.py)

import msgspec  # noqa: E402

from leash.protocol.argtypes import pack, unpack  # noqa: E402

MOMENT = datetime.datetime(2026, 1, 1, 9, 30, tzinfo=datetime.UTC)
SHAPES: dict[str, tuple[Any, int]] = {  # args, and calls timed a round
    "two scalars": (["ada@example.com", 1001], 100_000),
    "small map": ({"to": "ada@example.com", "n": [1, 2.5, None]}, 100_000),
    "map of 4 typed values": (
        {"at": MOMENT, "amount": Decimal("12.50"), "id": uuid.UUID(int=7), "day": MOMENT.date()},
        50_000,
    ),
    "1,000 ints": (list(range(1000)), 2_000),
    "100 records": ([{"id": n, "name": "x" * 10, "tags": ["a", "b"]} for n in range(100)], 2_000),
    "10k records (517 KiB)": (
        [{"id": n, "name": "x" * 30, "tags": ["a", "b"]} for n in range(10_000)],
        5,
    ),
}


def cost_us(call: Callable[[], object], count: int) -> float:
    best = float("inf")
    for _ in range(OPTIONS.rounds):
        started = time.process_time()
        for _ in range(count):
            call()
        best = min(best, (time.process_time() - started) / count)
    return best * 1e6


def main() -> None:
    print(f"CPU us a call, best of {OPTIONS.rounds}")
    print(f"  {'args':24s} {'encode':>10s} {'pack':>10s} {'decode':>10s} {'unpack':>10s}")
    for name, (args, count) in SHAPES.items():
        encoded, packed = msgspec.msgpack.encode(args), pack(args)
        columns = [
            cost_us(lambda: msgspec.msgpack.encode(args), count),  # noqa: B023
            cost_us(lambda: pack(args), count),  # noqa: B023
            cost_us(lambda: msgspec.msgpack.decode(encoded), count),  # noqa: B023
            cost_us(lambda: unpack(packed), count),  # noqa: B023
        ]
        print(f"  {name:24s}" + "".join(f" {value:10.2f}" for value in columns))


if __name__ == "__main__":
    main()
