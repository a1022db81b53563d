"""The stop signals' handlers of ``Worker.run`` (leash.client._signals): put
in place and taken off again while another process floods this one with
SIGTERM, the process is never killed by one: a stop signal's disposition
is never the default, not for an instant, whatever thread the kernel hands
a signal to. Run in a child process, which a lapse would kill."""

import os
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)
ROUNDS = 3_000

CHILD = """
import asyncio, signal, sys, threading
from leash.client import _signals
from leash.client.worker import _loop_factory

seen = []
signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
idle = threading.Event()
threading.Thread(target=idle.wait, daemon=True).start()  # a thread the kernel may pick

async def main(rounds):
    print("ready", flush=True)
    for _ in range(rounds):
        previous = _signals.install(lambda signum: None)
        await asyncio.sleep(0)
        _signals.remove(previous)

with asyncio.Runner(loop_factory=_loop_factory()) as runner:
    runner.run(main(int(sys.argv[1])))
assert signal.getsignal(signal.SIGTERM).__name__ == "<lambda>", "not put back"
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # Python's exit resets a handler to the default
print("alive", len(seen), flush=True)
"""

FLOOD = """
import os, signal, sys
pid = int(sys.argv[1])
while True:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        break
"""


def test_a_flood_of_sigterm_while_the_handlers_come_and_go_never_kills() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(ROUNDS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    flood = None
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        flood = subprocess.Popen([sys.executable, "-c", FLOOD, str(child.pid)])
        out, err = child.communicate(timeout=100)
    finally:
        for process in (child, flood):
            if process is not None and process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
    assert child.returncode == 0, (child.returncode, err[-2000:])
    assert out.startswith("alive ") and int(out.split()[1]) > 0, out
