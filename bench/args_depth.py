"""What decoding a push costs for args of different shapes: the nesting
check's share of the push path.

Times ``decode_request`` of one ``push`` body, in CPU microseconds per
push (process time, best of ``--rounds``), for args shaped as jobs have
them and as an attacker would send them. ``--root DIR`` measures another
source tree, to compare with the code before the check:

    .venv/bin/python bench/args_depth.py --root /path/to/old/tree
    .venv/bin/python bench/args_depth.py
"""

import argparse
import sys
import time
from pathlib import Path
from typing import Any

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--rounds", type=int, default=5)
parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
OPTIONS = parser.parse_args()
sys.path[0] = str(OPTIONS.root)  # not bench/: its profile.py would hide the stdlib's

import msgspec  # noqa: E402

from leash.protocol import messages as M  # noqa: E402


def tree(levels: int) -> Any:
    return [tree(levels - 1), tree(levels - 1)] if levels else 1


SHAPES: dict[str, tuple[Any, int]] = {  # args, and pushes timed a round
    "100 bytes (one bin)": (b"x" * 100, 50_000),
    "small map": ({"to": "ada@example.com", "n": [1, 2.5, None]}, 50_000),
    "40 records (883 B)": (
        [{"id": n, "tags": ["a", "b"], "at": {"x": n}} for n in range(40)],
        5_000,
    ),
    "10k records (517 KiB)": (
        [{"id": n, "name": "x" * 30, "tags": ["a", "b"]} for n in range(10_000)],
        5,
    ),
    "64 levels deep (limit)": (msgspec.Raw(b"\x91" * 64 + b"\xc0"), 20_000),
    "1 MiB of empty arrays": (
        msgspec.Raw(b"\xdd" + (1 << 20).to_bytes(4, "big") + b"\x90" * (1 << 20)),
        3,
    ),
    "binary tree, 2^17 leaves": (tree(17), 3),
}


def body(args: Any) -> bytes:
    raw = args if isinstance(args, msgspec.Raw) else msgspec.Raw(msgspec.msgpack.encode(args))
    return M.encoder.encode(M.Push(rid=7, job=M.JobSpec(type="t", args=raw)))


def cost_us(data: bytes, count: int) -> float:
    best = float("inf")
    for _ in range(OPTIONS.rounds):
        started = time.process_time()
        for _ in range(count):
            M.decode_request(data)
        best = min(best, (time.process_time() - started) / count)
    return best * 1e6


def main() -> None:
    print(f"tree {OPTIONS.root}: decode_request of one push, CPU us, best of {OPTIONS.rounds}")
    for name, (args, count) in SHAPES.items():
        data = body(args)
        print(f"  {name:26s} {len(data):>9,d} B {cost_us(data, count):12.1f} us")


if __name__ == "__main__":
    main()
